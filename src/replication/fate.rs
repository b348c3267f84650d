//! What became of one write across the pool, for the origins that fail it
//! (#24): did a peer apply it (then an origin that keeps failing it is
//! detached), or has every origin given it up (then they all move on, and
//! the pool stays the same everywhere)?

use crate::pool::OriginId;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;

#[derive(Default)]
pub struct Fate {
    /// Origins that answered it below 500.
    applied: AtomicU32,
    /// Origins that failed it for `detach_after` and `retry.max_attempts`.
    given_up: Mutex<Vec<OriginId>>,
    /// Logged as failed everywhere (once).
    abandoned: AtomicBool,
}

impl Fate {
    pub fn applied_by_one(&self) {
        self.applied.fetch_add(1, Ordering::AcqRel);
    }

    /// Has any origin applied it?
    pub fn is_applied(&self) -> bool {
        self.applied.load(Ordering::Acquire) > 0
    }

    /// `origin` gives the write up; true when every origin in `live` has
    /// (the write is then failed everywhere).
    pub fn give_up(&self, origin: OriginId, live: &[OriginId]) -> bool {
        let mut given_up = self.given_up.lock().unwrap_or_else(|e| e.into_inner());
        if !given_up.contains(&origin) {
            given_up.push(origin);
        }
        live.iter().all(|o| given_up.contains(o))
    }

    /// True the first time only: whoever sees it logs the write as failed.
    pub fn abandon(&self) -> bool {
        !self.abandoned.swap(true, Ordering::AcqRel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_is_abandoned_once_every_live_origin_gave_it_up() {
        let fate = Fate::default();
        let (a, b) = (OriginId::from_slot(0), OriginId::from_slot(1));
        assert!(!fate.give_up(a, &[a, b]));
        assert!(fate.give_up(b, &[a, b]));
        assert!(fate.give_up(a, &[a, b]));
        assert!(fate.abandon());
        assert!(!fate.abandon());
        assert!(!fate.is_applied());
    }
}
