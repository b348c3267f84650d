//! Write versions: a hybrid logical clock, one per proxy.
//!
//! A version is `unix_milliseconds << 16 | counter`: it follows the wall clock
//! (so versions from different proxies order roughly by time, which is what
//! last-writer-wins wants), yet never repeats or goes backwards within a proxy,
//! even when the clock steps back or 65,536 writes share a millisecond.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

const COUNTER_BITS: u32 = 16;

pub struct VersionClock {
    last: AtomicU64,
    /// Distinguishes this proxy's generated idempotency keys from any other's.
    instance: u64,
}

impl Default for VersionClock {
    fn default() -> Self {
        Self::new()
    }
}

impl VersionClock {
    pub fn new() -> Self {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        hasher.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        VersionClock {
            last: AtomicU64::new(0),
            instance: hasher.finish(),
        }
    }

    /// The next version: above every version this clock issued or observed.
    pub fn next(&self) -> u64 {
        let wall = wall_millis() << COUNTER_BITS;
        let previous = self
            .last
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
                Some(wall.max(last + 1))
            })
            .unwrap_or_else(|last| last);
        wall.max(previous + 1)
    }

    /// Makes later versions exceed `version` (one found in a journal, say).
    pub fn observe(&self, version: u64) {
        self.last.fetch_max(version, Ordering::AcqRel);
    }

    /// An idempotency key for a write whose client sent none.
    pub fn idempotency_key(&self, version: u64) -> String {
        format!("hothot-{:016x}-{version}", self.instance)
    }
}

fn wall_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX >> COUNTER_BITS)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_strictly_increase_and_follow_the_clock() {
        let clock = VersionClock::new();
        let mut previous = 0;
        for _ in 0..100_000 {
            let v = clock.next();
            assert!(v > previous);
            previous = v;
        }
        assert!(previous >> COUNTER_BITS >= wall_millis() - 60_000);
    }

    #[test]
    fn observed_versions_are_exceeded() {
        let clock = VersionClock::new();
        let future = (wall_millis() + 3_600_000) << COUNTER_BITS;
        clock.observe(future);
        assert!(clock.next() > future);
    }

    #[test]
    fn idempotency_keys_differ_per_version() {
        let clock = VersionClock::new();
        assert_ne!(clock.idempotency_key(1), clock.idempotency_key(2));
    }
}
