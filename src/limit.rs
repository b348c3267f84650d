//! May this origin take one more request now? Capacity as a limit
//! (`balancing.limit`): a token bucket per origin, refilled at its declared
//! capacity per second and holding a tenth of a second's worth (at least
//! one request), so that no one-second window sees more than the capacity
//! plus that burst.
//!
//! The bucket is kept as the generic cell rate algorithm (GCRA): one atomic
//! "theoretical arrival time" per origin, advanced by `1 / capacity` per
//! request admitted; a request is refused while that time is more than the
//! burst ahead of now. Lock-free, and the time until room is one subtraction.

use crate::config::LimitMode;
use crate::pool::Origin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

/// The burst an origin may take at once, as time at its capacity.
const BURST: Duration = Duration::from_millis(100);

/// One origin's bucket (a part of its [`crate::pool::Origin`]).
#[derive(Debug)]
pub struct Bucket {
    /// Nanoseconds between two requests at the origin's capacity; 0: no
    /// limit. A reload may change it.
    interval_ns: AtomicU64,
    /// Theoretical arrival time of the next request, ns since the
    /// limiter's epoch.
    arrival_ns: AtomicU64,
}

impl Bucket {
    /// The bucket of an origin of `capacity` requests/s.
    pub fn new(capacity: u32) -> Self {
        Bucket {
            interval_ns: AtomicU64::new(interval_ns(capacity)),
            arrival_ns: AtomicU64::new(0),
        }
    }

    /// A reload's new capacity.
    pub fn set_capacity(&self, capacity: u32) {
        self.interval_ns
            .store(interval_ns(capacity), Ordering::Release);
    }
}

fn interval_ns(capacity: u32) -> u64 {
    match capacity {
        0 => 0,
        capacity => 1_000_000_000 / u64::from(capacity),
    }
}

/// What a full pool does, and the clock the buckets run on; a reload may
/// change the mode.
#[derive(Debug)]
pub struct Limiter {
    /// [`LimitMode`] as 0 (off), 1 (shed), 2 (queue).
    mode: AtomicU8,
    queue_timeout_ns: AtomicU64,
    epoch: Instant,
}

impl Limiter {
    pub fn new(mode: LimitMode, queue_timeout: Duration) -> Self {
        let limiter = Limiter {
            mode: AtomicU8::new(0),
            queue_timeout_ns: AtomicU64::new(0),
            epoch: Instant::now(),
        };
        limiter.set_mode(mode, queue_timeout);
        limiter
    }

    /// A reload's `balancing.limit`.
    pub fn set_mode(&self, mode: LimitMode, queue_timeout: Duration) {
        let code = match mode {
            LimitMode::Off => 0,
            LimitMode::Shed => 1,
            LimitMode::Queue => 2,
        };
        self.mode.store(code, Ordering::Release);
        let timeout = u64::try_from(queue_timeout.as_nanos()).unwrap_or(u64::MAX);
        self.queue_timeout_ns.store(timeout, Ordering::Release);
    }

    pub fn mode(&self) -> LimitMode {
        match self.mode.load(Ordering::Acquire) {
            1 => LimitMode::Shed,
            2 => LimitMode::Queue,
            _ => LimitMode::Off,
        }
    }

    pub fn queue_timeout(&self) -> Duration {
        Duration::from_nanos(self.queue_timeout_ns.load(Ordering::Acquire))
    }

    pub fn is_on(&self) -> bool {
        self.mode.load(Ordering::Acquire) != 0
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The tolerance of a bucket with this interval: the burst, and at
    /// least one request.
    fn tolerance_ns(interval: u64) -> u64 {
        let burst = u64::try_from(BURST.as_nanos()).unwrap_or(u64::MAX);
        burst.max(interval).saturating_sub(interval)
    }

    /// Takes room for one request on `origin`; false when it is full (and
    /// always true with the limit off).
    pub fn try_take(&self, origin: &Origin) -> bool {
        !self.is_on() || self.take_from(&origin.limit)
    }

    /// Takes room for one request from `bucket`; false when it is full.
    fn take_from(&self, bucket: &Bucket) -> bool {
        let interval = bucket.interval_ns.load(Ordering::Acquire);
        if interval == 0 {
            return true;
        }
        let now = self.now_ns();
        let tolerance = Self::tolerance_ns(interval);
        let mut arrival = bucket.arrival_ns.load(Ordering::Acquire);
        loop {
            if arrival > now.saturating_add(tolerance) {
                return false;
            }
            let next = arrival.max(now).saturating_add(interval);
            match bucket.arrival_ns.compare_exchange_weak(
                arrival,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(current) => arrival = current,
            }
        }
    }

    /// Would `origin` take a request now (without taking its room)?
    pub fn has_room(&self, origin: &Origin) -> bool {
        self.time_to_room(std::iter::once(origin)).is_zero()
    }

    /// How long until one of `origins` has room again.
    pub fn time_to_room<'a>(&self, origins: impl Iterator<Item = &'a Origin>) -> Duration {
        self.wait_for(origins.map(|o| &o.limit))
    }

    /// How long until one of `buckets` has room again.
    fn wait_for<'a>(&self, buckets: impl Iterator<Item = &'a Bucket>) -> Duration {
        let now = self.now_ns();
        let wait = buckets
            .map(|b| {
                let arrival = b.arrival_ns.load(Ordering::Acquire);
                let tolerance = Self::tolerance_ns(b.interval_ns.load(Ordering::Acquire));
                arrival.saturating_sub(now.saturating_add(tolerance))
            })
            .min()
            .unwrap_or(0);
        Duration::from_nanos(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes from `bucket` as the limiter does for an origin.
    fn take(limiter: &Limiter, bucket: &Bucket) -> bool {
        limiter.take_from(bucket)
    }

    #[test]
    fn a_burst_of_a_tenth_of_a_second_then_refusals() {
        let limiter = Limiter::new(LimitMode::Shed, Duration::from_millis(100));
        let bucket = Bucket::new(100);
        let admitted = (0..50).filter(|_| take(&limiter, &bucket)).count();
        // A tenth of a second at 100/s, plus the request that starts it.
        assert!((10..=11).contains(&admitted), "{admitted}");
        let wait = limiter.wait_for(std::iter::once(&bucket));
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(10),
            "{wait:?}"
        );
    }

    #[test]
    fn a_slow_origin_still_takes_one_request() {
        let limiter = Limiter::new(LimitMode::Shed, Duration::from_millis(100));
        let bucket = Bucket::new(1);
        assert!(take(&limiter, &bucket));
        assert!(!take(&limiter, &bucket));
    }
}
