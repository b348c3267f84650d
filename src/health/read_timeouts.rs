//! Whether an origin's read timeouts say that the origin is failing, or
//! only that one path of it is slow.
//!
//! A request that gets no answer within `timeouts.read` may be the origin's
//! fault or its path's: a report that takes a minute, a long poll. Counted
//! as failures, 60 clients waiting on one such path ejected every healthy
//! origin of the pool. So a read timeout counts against the origin (towards
//! `health.passive.failures`) only when its probes agree (its last probe
//! failed) or when [`DISTINCT_PATHS`] different paths timed out on it within
//! [`WINDOW`]. The client still gets its 504 either way.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Different paths that must time out on an origin before its timeouts
/// count against it.
pub const DISTINCT_PATHS: usize = 3;
/// How long a timed-out path is remembered.
pub const WINDOW: Duration = Duration::from_secs(30);
/// Paths remembered at most (the oldest goes first).
const REMEMBERED: usize = 8;

/// One origin's recent read timeouts: a path's hash and when it timed out.
#[derive(Debug, Default)]
pub struct ReadTimeouts(Mutex<Vec<(u64, Instant)>>);

impl ReadTimeouts {
    /// A request for `path` timed out; does it count against the origin?
    pub fn counts(&self, path: &str, probes_failing: bool) -> bool {
        self.counts_at(path, probes_failing, Instant::now())
    }

    fn counts_at(&self, path: &str, probes_failing: bool, now: Instant) -> bool {
        let mut hasher = DefaultHasher::new();
        path.hash(&mut hasher);
        let path = hasher.finish();
        let mut recent = self.0.lock().unwrap_or_else(|e| e.into_inner());
        recent.retain(|(p, at)| *p != path && now.duration_since(*at) < WINDOW);
        if recent.len() >= REMEMBERED {
            recent.remove(0);
        }
        recent.push((path, now));
        probes_failing || recent.len() >= DISTINCT_PATHS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_slow_path_never_counts_several_do_and_failing_probes_always() {
        let timeouts = ReadTimeouts::default();
        let start = Instant::now();
        for i in 0..100 {
            let at = start + Duration::from_millis(i);
            assert!(!timeouts.counts_at("/never", false, at), "one path");
        }
        assert!(timeouts.counts_at("/never", true, start), "probes agree");
        assert!(!timeouts.counts_at("/slow", false, start));
        assert!(timeouts.counts_at("/other", false, start), "three paths");
        // Forgotten after the window.
        let later = start + WINDOW + Duration::from_secs(1);
        assert!(!timeouts.counts_at("/third", false, later));
    }
}
