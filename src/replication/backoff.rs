//! How long a failed delivery waits before it goes again: exponential
//! backoff with jitter, from `retry.initial` to `retry.max`.

use std::time::Duration;

/// Exponential backoff with jitter: each delay is drawn from [d/2, d], d doubling up to `max`.
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
    seed: u64,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration, seed: u64) -> Self {
        Backoff {
            initial,
            max,
            current: initial,
            seed: seed | 1,
        }
    }

    pub fn reset(&mut self) {
        self.current = self.initial;
    }

    /// A reload's `retry.initial` and `retry.max`, from the next delay.
    pub fn set_bounds(&mut self, initial: Duration, max: Duration) {
        if (initial, max) != (self.initial, self.max) {
            self.initial = initial;
            self.max = max;
            self.current = self.current.clamp(initial, max);
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        // xorshift64: jitter only needs to spread retries apart.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let full = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = full / 2;
        half + Duration::from_nanos(self.seed % (half.as_nanos() as u64).max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_stops_at_max() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1), 7);
        let delays: Vec<Duration> = (0..8).map(|_| backoff.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(100));
        assert!(delays[1] >= Duration::from_millis(100) && delays[1] <= Duration::from_millis(200));
        assert!(delays[7] >= Duration::from_millis(500) && delays[7] <= Duration::from_secs(1));
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }
}
