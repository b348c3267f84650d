//! Whether a write may be taken: room for it in the log
//! (`journal.max_bytes`, made by detaching the origin furthest behind when
//! one is, [`super::detach`]); and the counts of writes refused or not
//! replicated, per peer.

use super::{Full, Replicator};
use crate::pool::OriginId;
use std::sync::atomic::Ordering;

impl Replicator {
    /// Room for one more write in the log? A refusal is counted. (An
    /// origin's backlog is never a reason: past `max_pending` its writes
    /// wait in the log, [`super::spill`].)
    pub fn admit(&self) -> Result<(), Full> {
        let full = || self.sequencer.log().is_some_and(|l| !l.has_room());
        // An origin far behind is detached rather than the write refused;
        // only a journal full of what serving origins still need refuses.
        let log_full = full() && !self.relieve_full_journal();
        if self.journal_full.swap(log_full, Ordering::Relaxed) != log_full {
            match log_full {
                true => log::error!(
                    "journal full (max_bytes) with every origin keeping up: refusing new \
                     writes until they settle what it holds (raise journal.max_bytes)"
                ),
                false => log::info!("journal has room again: accepting writes"),
            }
        }
        if log_full {
            self.count_rejected();
            return Err(Full::Journal);
        }
        Ok(())
    }

    /// Counts a write refused before reaching any origin, on every peer.
    pub fn count_rejected(&self) {
        for origin in self.pool.members() {
            origin.metrics.replication.rejected.inc();
        }
    }

    /// Counts a write deliberately not replicated, on the peers of `primary`.
    pub fn count_skipped(&self, primary: Option<OriginId>) {
        for origin in self.pool.members() {
            if Some(origin.id) != primary {
                origin.metrics.replication.skipped.inc();
            }
        }
    }
}
