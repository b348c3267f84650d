//! Whether deliveries to an origin are failing: the streak its lanes keep
//! together, logged once per streak, and read when a write's primary is
//! chosen.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Whether deliveries to an origin are failing, across its lanes: a
/// primary is not chosen among origins whose last attempt failed.
#[derive(Default)]
pub struct FailureStreak {
    /// The origin's last attempt failed (a 5xx or a broken connection).
    failing: AtomicBool,
    /// Failed attempts since the last success.
    failures: AtomicU64,
}

impl FailureStreak {
    /// An attempt failed; true if it is the first since the last success.
    pub fn failed(&self) -> bool {
        self.failures.fetch_add(1, Ordering::Relaxed);
        !self.failing.swap(true, Ordering::Relaxed)
    }

    /// An attempt succeeded; after a streak of failures, how many there were.
    pub fn recovered(&self) -> Option<u64> {
        // A load first: the common case (no streak) writes nothing.
        if !self.failing.load(Ordering::Relaxed) || !self.failing.swap(false, Ordering::Relaxed) {
            return None;
        }
        Some(self.failures.swap(0, Ordering::Relaxed))
    }

    /// Did the origin's last attempt fail?
    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }
}
