//! Which selection is in force: the [`CapacityWeighted`] over the pool's
//! origins, rebuilt when a reload adds or removes origins.
//!
//! This is the part of Pingora's `LoadBalancer` hothot needs (the selection
//! behind an `ArcSwap`, asked with an accept function), keyed by the pool's
//! origin ids instead of by address: a reload may give a new origin the
//! address of a removed one, and a pick needs no address lookup.

use super::CapacityWeighted;
use crate::pool::{OriginId, Pool};
use arc_swap::ArcSwap;
use pingora_load_balancing::selection::BackendSelection;
use std::sync::Arc;

pub struct Balancer {
    pool: Arc<Pool>,
    selection: ArcSwap<CapacityWeighted>,
}

impl Balancer {
    pub fn new(pool: Arc<Pool>) -> Self {
        let selection = ArcSwap::from_pointee(CapacityWeighted::from_pool(&pool));
        Balancer { pool, selection }
    }

    /// The pool has origins it did not have (or lost some): pick among
    /// them from now on. Round-robin scores start afresh, as they do
    /// whenever the serving set changes.
    pub fn rebuild(&self) {
        self.selection
            .store(Arc::new(CapacityWeighted::from_pool(&self.pool)));
    }

    /// The first origin, in the order the selection offers them for `key`
    /// (see [`super::selection_key`]), that `accept` takes.
    pub fn select_with(&self, key: &[u8], accept: impl Fn(OriginId) -> bool) -> Option<OriginId> {
        let selection = self.selection.load();
        let mut picks = selection.iter(key);
        while let Some(slot) = picks.next_index() {
            let origin = OriginId::from_slot(slot);
            if accept(origin) {
                return Some(origin);
            }
        }
        None
    }
}
