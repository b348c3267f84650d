//! The origin pool: which origins exist and which of them may take new traffic.
//!
//! An origin serves when its active probes say it is up, its capacity is above
//! zero and live traffic has not ejected it. Origins start *down*: the health
//! service runs a first probe round before the proxy starts listening, so an
//! origin that is dead at start-up never receives a request.

mod origin;

use crate::config::{OriginConfig, PassiveConfig};
pub use origin::Origin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A factor of 1, in the thousandths [`Pool::set_factor`] takes.
pub const FULL_FACTOR: u32 = 1000;

/// What a live-traffic failure did to its origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureVerdict {
    Counted,
    /// This failure crossed `passive.failures`: the origin is now ejected.
    Ejected,
}

#[derive(Debug)]
pub struct Pool {
    /// Every origin this process has had, by index: an index names one
    /// origin for the life of the process (an origin a reload removes is
    /// retired, never reused), so per-origin state elsewhere is indexed alike.
    origins: boxcar::Vec<Origin>,
    /// `health.passive`, which a reload may change.
    passive_failures: AtomicU32,
    passive_eject_ms: AtomicU64,
    epoch: Instant,
    /// Bumped whenever an origin may have started or stopped serving (see
    /// [`Pool::generation`]).
    changes: AtomicU64,
    /// The earliest end of a running ejection (ms since `epoch`), `u64::MAX`
    /// when none runs: an ejection ends by time, not by an event.
    next_ejection_end_ms: AtomicU64,
}

impl Pool {
    /// The pool of `origins`; the error names an origin whose TLS settings
    /// OpenSSL refused. A reload may add more ([`Pool::add`]) and retire
    /// some ([`Pool::retire`]).
    pub fn new(origins: &[OriginConfig], passive: PassiveConfig) -> Result<Self, String> {
        let pool = Pool {
            origins: boxcar::Vec::with_capacity(origins.len()),
            passive_failures: AtomicU32::new(passive.failures),
            passive_eject_ms: AtomicU64::new(duration_ms(passive.eject)),
            epoch: Instant::now(),
            changes: AtomicU64::new(0),
            next_ejection_end_ms: AtomicU64::new(u64::MAX),
        };
        for (i, origin) in origins.iter().enumerate() {
            pool.add(origin)
                .map_err(|e| format!("origins[{i}].tls: {e}"))?;
        }
        Ok(pool)
    }
    /// A number that changes whenever the set of serving origins or their
    /// weights may have changed (a probe verdict, an ejection starting or
    /// ending, lag, a new factor), so
    /// that selection recomputes that set only then instead of on every
    /// pick: with 1,000 origins the scan cost more than the rest of a pick.
    pub fn generation(&self) -> u64 {
        let ends = self.next_ejection_end_ms.load(Ordering::Acquire);
        if ends != u64::MAX && self.now_ms() >= ends {
            self.ejections_ended();
        }
        self.changes.load(Ordering::Acquire)
    }

    /// Some ejection ran out: find the next one to end, and count a change.
    fn ejections_ended(&self) {
        let now = self.now_ms();
        let next = self
            .origins
            .iter()
            .map(|(_, o)| o.ejected_until_ms.load(Ordering::Acquire))
            .filter(|until| *until > now)
            .min()
            .unwrap_or(u64::MAX);
        self.next_ejection_end_ms.store(next, Ordering::Release);
        self.changed();
    }

    fn changed(&self) {
        self.changes.fetch_add(1, Ordering::AcqRel);
    }

    /// Adds an origin (at start-up, or by a reload) as the next index; it
    /// starts down, until its first probe. The error is OpenSSL's refusal
    /// of its TLS settings.
    pub fn add(&self, config: &OriginConfig) -> Result<usize, String> {
        let index = self.origins.push(Origin::new(config)?);
        self.changed();
        Ok(index)
    }

    /// Takes an origin out of the pool for good (a reload removed it): it
    /// serves nothing more (whatever a probe still on its way says) and is
    /// no longer probed; its index stays taken.
    pub fn retire(&self, index: usize) {
        if let Some(origin) = self.origins.get(index) {
            origin.retired.store(true, Ordering::Release);
            self.changed();
        }
    }

    /// Is the origin still in the pool (not removed by a reload)?
    pub fn is_member(&self, index: usize) -> bool {
        self.origins
            .get(index)
            .is_some_and(|o| !o.retired.load(Ordering::Acquire))
    }

    /// The origins in the pool now, with their indexes.
    pub fn members(&self) -> impl Iterator<Item = (usize, &Origin)> {
        self.origins
            .iter()
            .filter(|(_, o)| !o.retired.load(Ordering::Acquire))
    }

    /// The origin at `index`, retired or not.
    pub fn origin(&self, index: usize) -> Option<&Origin> {
        self.origins.get(index)
    }

    /// The index of the origin in the pool named `name`.
    pub fn find(&self, name: &str) -> Option<usize> {
        self.members().find(|(_, o)| o.name == name).map(|(i, _)| i)
    }

    /// How many indexes there are, retired origins' included: per-origin
    /// state elsewhere has this many entries.
    pub fn len(&self) -> usize {
        self.origins.count()
    }

    pub fn is_empty(&self) -> bool {
        self.origins.is_empty()
    }

    /// May this origin take new traffic right now?
    pub fn is_serving(&self, index: usize) -> bool {
        let origin = &self.origins[index];
        origin.capacity.load(Ordering::Acquire) > 0
            && !origin.retired.load(Ordering::Acquire)
            && origin.probe_up.load(Ordering::Acquire)
            && !origin.drained.load(Ordering::Acquire)
            && !self.is_ejected(index)
    }

    /// Is any origin serving (hothot is ready for traffic)?
    pub fn any_serving(&self) -> bool {
        (0..self.len()).any(|i| self.is_serving(i))
    }

    /// Has an operator drained this origin?
    pub fn is_drained(&self, index: usize) -> bool {
        self.origins[index].drained.load(Ordering::Acquire)
    }

    /// Drains the origin (or enables it again); true when that changed it.
    pub fn set_drained(&self, index: usize, drained: bool) -> bool {
        let changed = self.origins[index].drained.swap(drained, Ordering::AcqRel) != drained;
        if changed {
            self.changed();
        }
        changed
    }

    /// May this origin take new reads? Serving, and not lagging behind on writes.
    pub fn is_serving_reads(&self, index: usize) -> bool {
        self.is_serving(index) && !self.origins[index].lagging.load(Ordering::Acquire)
    }

    /// Do the active probes say the origin is up (whatever else keeps it out)?
    pub fn is_probe_up(&self, index: usize) -> bool {
        self.origins[index].probe_up.load(Ordering::Acquire)
    }

    pub fn is_lagging(&self, index: usize) -> bool {
        self.origins[index].lagging.load(Ordering::Acquire)
    }

    /// Marks an origin as lagging (or caught up); true when that changed it.
    pub fn set_lagging(&self, index: usize, lagging: bool) -> bool {
        let changed = self.origins[index].lagging.swap(lagging, Ordering::AcqRel) != lagging;
        if changed {
            self.changed();
        }
        changed
    }

    pub fn is_ejected(&self, index: usize) -> bool {
        let until = self.origins[index].ejected_until_ms.load(Ordering::Acquire);
        until != 0 && self.now_ms() < until
    }

    /// Records the active probes' verdict (after rise/fall were applied).
    pub fn set_probe_up(&self, index: usize, up: bool) {
        if self.origins[index].probe_up.swap(up, Ordering::AcqRel) != up {
            self.changed();
        }
        if up {
            self.origins[index]
                .consecutive_failures
                .store(0, Ordering::Relaxed);
        }
    }

    /// A live request to this origin succeeded: its failure streak ends.
    pub fn record_success(&self, index: usize) {
        let failures = &self.origins[index].consecutive_failures;
        // Avoid a write (and cache-line traffic) on the common path.
        if failures.load(Ordering::Relaxed) != 0 {
            failures.store(0, Ordering::Relaxed);
        }
    }

    /// A live request to this origin failed (connect error, upstream error or 5xx).
    pub fn record_failure(&self, index: usize) -> FailureVerdict {
        let failures = self.passive_failures.load(Ordering::Relaxed);
        if failures == 0 {
            return FailureVerdict::Counted;
        }
        let origin = &self.origins[index];
        let streak = origin.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        if streak < failures || self.is_ejected(index) {
            return FailureVerdict::Counted;
        }
        origin.consecutive_failures.store(0, Ordering::Relaxed);
        let until = self.now_ms() + self.passive_eject_ms.load(Ordering::Relaxed);
        origin
            .ejected_until_ms
            .store(until.max(1), Ordering::Release);
        self.next_ejection_end_ms
            .fetch_min(until.max(1), Ordering::AcqRel);
        self.changed();
        FailureVerdict::Ejected
    }

    /// The origin's declared capacity (requests/s); 0: drained by config.
    pub fn capacity(&self, index: usize) -> u32 {
        self.origins[index].capacity.load(Ordering::Acquire)
    }

    /// A reload's new capacity; true when it changed.
    pub fn set_capacity(&self, index: usize, capacity: u32) -> bool {
        let changed = self.origins[index]
            .capacity
            .swap(capacity, Ordering::AcqRel)
            != capacity;
        if changed {
            self.changed();
        }
        changed
    }

    /// A reload's new `health.passive`.
    pub fn set_passive(&self, passive: PassiveConfig) {
        self.passive_failures
            .store(passive.failures, Ordering::Relaxed);
        self.passive_eject_ms
            .store(duration_ms(passive.eject), Ordering::Relaxed);
    }

    /// The origin's factor, in thousandths of its capacity.
    pub fn factor_milli(&self, index: usize) -> u32 {
        self.origins[index].factor_milli.load(Ordering::Acquire)
    }

    /// Sets the origin's factor (thousandths, at least 1); true when that
    /// changed its weight.
    pub fn set_factor(&self, index: usize, milli: u32) -> bool {
        let milli = milli.clamp(1, FULL_FACTOR);
        let changed = self.origins[index]
            .factor_milli
            .swap(milli, Ordering::AcqRel)
            != milli;
        if changed {
            self.changed();
        }
        changed
    }

    /// The weight smooth weighted round robin gives the origin: its capacity
    /// times its factor (in thousandths, so that equal factors keep the
    /// declared ratios exactly).
    pub fn effective_weight(&self, index: usize) -> i64 {
        i64::from(self.capacity(index)) * i64::from(self.factor_milli(index))
    }

    /// Each origin's share (0..1) of new traffic: its effective weight over
    /// the total of the origins serving now; 0 for an origin not serving.
    pub fn shares(&self) -> Vec<f64> {
        let weights: Vec<i64> = (0..self.len())
            .map(|i| match self.is_serving(i) {
                true => self.effective_weight(i),
                false => 0,
            })
            .collect();
        let total: i64 = weights.iter().sum();
        weights
            .iter()
            .map(|w| match total {
                0 => 0.0,
                _ => *w as f64 / total as f64,
            })
            .collect()
    }

    fn now_ms(&self) -> u64 {
        duration_ms(self.epoch.elapsed())
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
