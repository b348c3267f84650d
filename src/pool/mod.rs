//! The origin registry: every origin this process has had, each with all of
//! its per-origin state, and which of them may take new traffic.
//!
//! An origin is added (at start-up or by a reload) with every part the rest
//! of hothot keeps for it ([`Origin`]): its serving state (here), its token
//! bucket ([`crate::limit`]), its live-traffic samples ([`crate::adaptive`]),
//! its probe streak ([`crate::health`]), its metric handles
//! ([`crate::metrics`]), its Pingora peer and its replication backlog
//! ([`crate::replication`]); a retired origin has them all retired at once.
//! Per-origin state is reached through the origin's [`OriginId`]: nothing
//! else keeps a table indexed by origin. An id names one origin for the life
//! of the process; a retired origin's id is never reused, so a request, a
//! write or a cookie still holding it never reaches another origin.
//!
//! Origins are added and retired only between two writes
//! ([`crate::replication::Cut`], which the sequencer hands out under its
//! lock), so that every write is addressed to exactly the origins in the
//! pool when it was numbered.
//!
//! An origin serves when its active probes say it is up, its capacity is above
//! zero and live traffic has not ejected it. Origins start *down*: the health
//! service runs a first probe round before the proxy starts listening, so an
//! origin that is dead at start-up never receives a request.

mod origin;
mod standing;

use crate::config::{PassiveConfig, Timeouts};
use crate::metrics::Metrics;
use crate::replication::Cut;
pub use origin::{NewOrigin, Origin};
pub use standing::{Detached, Standing};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A factor of 1, in the thousandths [`Pool::set_factor`] takes.
pub const FULL_FACTOR: u32 = 1000;

/// One origin of this process, for as long as the process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OriginId(u32);

impl OriginId {
    /// Its slot in the registry (ids are handed out 0, 1, 2, ...): selection
    /// keeps its scores by slot.
    pub fn slot(self) -> usize {
        self.0 as usize
    }

    /// The id of slot `slot` (selection's picks, keys read back).
    pub(crate) fn from_slot(slot: usize) -> Self {
        OriginId(u32::try_from(slot).unwrap_or(u32::MAX))
    }
}

/// What a live-traffic failure did to its origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureVerdict {
    Counted,
    /// This failure crossed `passive.failures`: the origin is now ejected.
    Ejected,
    /// It crossed `passive.failures`, but `max_ejection_percent` of the
    /// pool is ejected already: the origin stays in service.
    Floor,
}

pub struct Pool {
    /// Every origin this process has had, by id (retired ones included).
    origins: boxcar::Vec<Arc<Origin>>,
    /// Adds happen one at a time (start-up, then reloads), so that an id
    /// is known before its origin's parts are made.
    adding: Mutex<()>,
    /// `health.passive`, which a reload may change.
    passive_failures: AtomicU32,
    passive_eject_ms: AtomicU64,
    passive_max_ejection_percent: AtomicU32,
    /// The timeouts every origin's Pingora peer carries (a reload may change them).
    timeouts: Mutex<Timeouts>,
    epoch: Instant,
    /// Bumped whenever an origin may have started or stopped serving (see
    /// [`Pool::generation`]).
    changes: AtomicU64,
    /// The earliest end of a running ejection (ms since `epoch`), `u64::MAX`
    /// when none runs: an ejection ends by time, not by an event.
    next_ejection_end_ms: AtomicU64,
    /// Where each origin's series come from, and go back to when it retires.
    metrics: Arc<Metrics>,
}

impl Pool {
    /// An empty pool; origins join through [`Pool::add`].
    pub fn new(passive: PassiveConfig, timeouts: Timeouts, metrics: Arc<Metrics>) -> Self {
        Pool {
            origins: boxcar::Vec::new(),
            adding: Mutex::new(()),
            passive_failures: AtomicU32::new(passive.failures),
            passive_eject_ms: AtomicU64::new(duration_ms(passive.eject)),
            passive_max_ejection_percent: AtomicU32::new(passive.max_ejection_percent),
            timeouts: Mutex::new(timeouts),
            epoch: Instant::now(),
            changes: AtomicU64::new(0),
            next_ejection_end_ms: AtomicU64::new(u64::MAX),
            metrics,
        }
    }

    /// Adds an origin with every part it needs, its replication backlog
    /// joining at `cut`; it starts down, until its first probe.
    pub fn add(&self, new: NewOrigin, cut: &Cut<'_>) -> OriginId {
        let _adding = self.adding.lock().unwrap_or_else(|e| e.into_inner());
        let id = OriginId::from_slot(self.origins.count());
        let timeouts = *self.timeouts.lock().unwrap_or_else(|e| e.into_inner());
        let metrics = self.metrics.resolve_origin(&new.config.name);
        let backlog = cut.backlog(id, &new.config.name, metrics.replication.pending.clone());
        let origin = Origin::new(id, new, self.epoch, timeouts, metrics, backlog);
        self.origins.push(Arc::new(origin));
        self.changed();
        id
    }

    /// Takes an origin out of the pool for good (a reload removed it): it
    /// serves nothing more (whatever a probe still on its way says), is no
    /// longer probed, its backlog is dropped at `cut` and its gauges leave
    /// `/metrics`; its id stays taken. Returns how many writes it dropped.
    pub fn retire(&self, id: OriginId, cut: &Cut<'_>) -> usize {
        let Some(origin) = self.get(id) else {
            return 0;
        };
        if origin.state.retire() {
            return 0;
        }
        let dropped = cut.retire(origin);
        self.metrics.forget_origin(&origin.name);
        self.changed();
        dropped
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
            .all()
            .map(|o| o.state.ejected_until_ms())
            .filter(|until| *until > now)
            .min()
            .unwrap_or(u64::MAX);
        self.next_ejection_end_ms.store(next, Ordering::Release);
        self.changed();
    }

    fn changed(&self) {
        self.changes.fetch_add(1, Ordering::AcqRel);
    }

    /// The origin `id`, retired or not.
    pub fn get(&self, id: OriginId) -> Option<&Arc<Origin>> {
        self.origins.get(id.slot())
    }

    /// Every origin this process has had, retired ones included.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Origin>> {
        self.origins.iter().map(|(_, origin)| origin)
    }

    /// The origins in the pool now.
    pub fn members(&self) -> impl Iterator<Item = &Arc<Origin>> {
        self.all().filter(|o| !o.is_retired())
    }

    /// The origin in the pool named `name`.
    pub fn find(&self, name: &str) -> Option<&Arc<Origin>> {
        self.members().find(|o| o.name == name)
    }

    /// Name of the origin `id` (empty if there is none).
    pub fn name(&self, id: OriginId) -> &str {
        self.get(id).map_or("", |o| o.name.as_str())
    }

    /// May this origin take new traffic right now?
    pub fn is_serving(&self, id: OriginId) -> bool {
        self.get(id).is_some_and(|o| o.is_serving())
    }

    /// May this origin take new reads? Serving, and not lagging behind on writes.
    pub fn is_serving_reads(&self, id: OriginId) -> bool {
        self.get(id).is_some_and(|o| o.is_serving_reads())
    }

    /// Is any origin serving (hothot is ready for traffic)?
    pub fn any_serving(&self) -> bool {
        self.members().any(|o| o.is_serving())
    }

    /// Drains the origin (or enables it again); true when that changed it.
    pub fn set_drained(&self, id: OriginId, drained: bool) -> bool {
        self.update(id, |o| o.state.set_drained(drained))
    }

    /// Sets where the origin stands in the sequence; true when that
    /// changed whether it serves.
    pub fn set_standing(&self, id: OriginId, standing: Standing) -> bool {
        self.update(id, |o| o.state.standing.set(standing))
    }

    /// Moves the origin from the standing `from` (compared by kind) to
    /// `to`; false, and nothing changed, when it was not in `from`.
    pub fn replace_standing(&self, id: OriginId, from: &Standing, to: Standing) -> bool {
        let replaced = self
            .get(id)
            .is_some_and(|o| o.state.standing.replace(from, to));
        if replaced {
            self.changed();
        }
        replaced
    }

    /// Holds the origin as a resync's donor, or releases it.
    pub fn set_donor(&self, id: OriginId, donor: bool) -> bool {
        self.update(id, |o| o.state.standing.set_donor(donor))
    }

    /// Marks an origin as lagging (or caught up); true when that changed it.
    pub fn set_lagging(&self, id: OriginId, lagging: bool) -> bool {
        self.update(id, |o| o.state.set_lagging(lagging))
    }

    /// Records the active probes' verdict (after rise/fall were applied).
    pub fn set_probe_up(&self, id: OriginId, up: bool) {
        self.update(id, |o| o.state.set_probe_up(up));
    }

    /// A reload's new capacity; true when it changed. Its token bucket
    /// follows.
    pub fn set_capacity(&self, id: OriginId, capacity: u32) -> bool {
        self.update(id, |o| {
            o.limit.set_capacity(capacity);
            o.state.set_capacity(capacity)
        })
    }

    /// Moves the origin to `address` (its name resolves elsewhere now, at a
    /// reload or a background resolution), and logs it; whether it moved.
    pub fn set_address(&self, id: OriginId, address: SocketAddr) -> bool {
        let Some(origin) = self.get(id) else {
            return false;
        };
        let Some(before) = origin.set_address(address) else {
            return false;
        };
        log::info!(
            "origin {}: {} resolves to {address} now (was {before})",
            origin.name,
            origin.written_address
        );
        true
    }

    /// How often the origin's name is resolved again (a reload's `resolve`).
    pub fn set_resolve_every(&self, id: OriginId, every: Option<std::time::Duration>) {
        if let Some(origin) = self.get(id) {
            origin.set_resolve_every(every);
        }
    }

    /// Sets the origin's factor (thousandths, at least 1); true when that
    /// changed its weight.
    pub fn set_factor(&self, id: OriginId, milli: u32) -> bool {
        self.update(id, |o| o.state.set_factor(milli.clamp(1, FULL_FACTOR)))
    }

    /// Runs a change of the origin's state; counts a change when it says so.
    fn update(&self, id: OriginId, change: impl FnOnce(&Origin) -> bool) -> bool {
        let changed = self.get(id).is_some_and(|o| change(o));
        if changed {
            self.changed();
        }
        changed
    }

    /// A live request to this origin succeeded: its failure streak ends.
    pub fn record_success(&self, id: OriginId) {
        if let Some(origin) = self.get(id) {
            origin.state.reset_failures();
        }
    }

    /// A live request to this origin failed (connect error, upstream error or 5xx).
    pub fn record_failure(&self, id: OriginId) -> FailureVerdict {
        let failures = self.passive_failures.load(Ordering::Relaxed);
        let Some(origin) = self.get(id).filter(|_| failures > 0) else {
            return FailureVerdict::Counted;
        };
        if origin.state.count_failure() < failures || origin.is_ejected() {
            return FailureVerdict::Counted;
        }
        if !self.may_eject_another() {
            return FailureVerdict::Floor;
        }
        let until = (self.now_ms() + self.passive_eject_ms.load(Ordering::Relaxed)).max(1);
        origin.state.eject_until(until);
        self.next_ejection_end_ms.fetch_min(until, Ordering::AcqRel);
        self.changed();
        FailureVerdict::Ejected
    }

    /// Would one more ejection stay within `max_ejection_percent` of the
    /// members (rounded down, but at least one of two or more unless it is
    /// 0; a lone origin is never ejected: there is nowhere else to send its
    /// traffic)?
    fn may_eject_another(&self) -> bool {
        let percent = self.passive_max_ejection_percent.load(Ordering::Relaxed) as usize;
        let (members, ejected) = self
            .members()
            .fold((0, 0), |(m, e), o| (m + 1, e + usize::from(o.is_ejected())));
        let allowed = match (members, percent) {
            (0 | 1, _) | (_, 0) => 0,
            _ => (members * percent / 100).max(1),
        };
        ejected < allowed
    }

    /// A reload's new `health.passive`.
    pub fn set_passive(&self, passive: PassiveConfig) {
        self.passive_failures
            .store(passive.failures, Ordering::Relaxed);
        self.passive_eject_ms
            .store(duration_ms(passive.eject), Ordering::Relaxed);
        self.passive_max_ejection_percent
            .store(passive.max_ejection_percent, Ordering::Relaxed);
    }

    /// The `timeouts` in force.
    pub fn timeouts(&self) -> Timeouts {
        *self.timeouts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A reload's new `timeouts`: every origin's peer carries them from the
    /// next attempt on.
    pub fn set_timeouts(&self, timeouts: Timeouts) {
        *self.timeouts.lock().unwrap_or_else(|e| e.into_inner()) = timeouts;
        for origin in self.members() {
            origin.set_timeouts(timeouts);
        }
    }

    /// Each member's share (0..1) of new traffic: its effective weight over
    /// the total of the origins serving now; 0 for an origin not serving.
    pub fn shares(&self) -> Vec<(OriginId, f64)> {
        let weights: Vec<(OriginId, i64)> = self
            .members()
            .map(|o| match o.is_serving() {
                true => (o.id, o.effective_weight()),
                false => (o.id, 0),
            })
            .collect();
        let total: i64 = weights.iter().map(|(_, w)| w).sum();
        weights
            .into_iter()
            .map(|(id, w)| match total {
                0 => (id, 0.0),
                _ => (id, w as f64 / total as f64),
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
