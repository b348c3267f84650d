//! Whether a backlog takes and hands out writes (#24): a retired origin's
//! (a reload removed it) takes nothing for good; a detached origin's
//! backlog takes nothing; a resyncing origin's records the writes after
//! the cut without sending them (they wait in the log, as a spill, until
//! the copy is done); a donor's sends nothing past the cut while the copy
//! runs.

use super::spill::Spill;
use super::Backlog;
use std::sync::atomic::Ordering;

/// What a backlog does with new writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Intake {
    /// Queues them for delivery.
    #[default]
    Open,
    /// Refuses them: the origin is detached.
    Refused,
    /// Records them, in the log, without sending: the origin is being
    /// copied from a peer (or, in a cluster, is being taken over).
    Parked,
    /// Takes nothing and counts nothing: another instance of the cluster
    /// delivers to the origin (#25).
    Elsewhere,
}

impl Backlog {
    /// Was the origin in the pool when the write numbered `seq` was
    /// sequenced? (Once it is retired, [`Backlog::push`] refuses anyway.)
    pub fn accepts(&self, seq: u64) -> bool {
        seq > self.joined_after
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// The origin left the pool: drops its backlog (verify reads in it are
    /// withdrawn from their samples) and counts everything numbered through
    /// `settled` as settled here; returns how many writes were dropped.
    pub fn retire(&self, settled: u64) -> usize {
        let mut state = self.lock();
        let dropped = std::mem::take(&mut *state);
        let spilled = dropped.spill.as_ref().map_or(0, |s| s.count);
        self.spilled.store(false, Ordering::Relaxed);
        self.retired.store(true, Ordering::Release);
        self.publish(&state);
        drop(state);
        self.wake.notify_waiters();
        self.settle_through(settled);
        for slot in dropped.entries.values() {
            slot.entry.withdrawn(self.origin);
        }
        dropped.writes + spilled
    }

    /// Does it take writes for delivery (or record them for later)?
    pub fn is_taking(&self) -> bool {
        self.lock().intake != Intake::Refused
    }

    /// Is it delivering (not detached, not parked)?
    pub fn is_open(&self) -> bool {
        self.lock().intake == Intake::Open
    }

    /// Drops everything (verify reads in it are withdrawn from their
    /// samples) and takes nothing more, or records what follows when
    /// `then` is [`Intake::Parked`]. Returns how many writes it dropped.
    pub fn drop_all(&self, then: Intake) -> usize {
        let mut state = self.lock();
        let dropped = std::mem::take(&mut *state);
        state.next_id = dropped.next_id;
        state.intake = then;
        self.spilled.store(false, Ordering::Relaxed);
        self.publish(&state);
        drop(state);
        *self.refill_source() = None;
        self.wake.notify_waiters();
        for slot in dropped.entries.values() {
            slot.entry.withdrawn(self.origin);
        }
        dropped.writes + dropped.spill.as_ref().map_or(0, |s| s.count)
    }

    /// A parked backlog starts delivering what it recorded (read back
    /// from the log), then what follows.
    pub fn open(&self) {
        let mut state = self.lock();
        state.intake = Intake::Open;
        self.spilled.store(state.spill.is_some(), Ordering::Relaxed);
        drop(state);
        self.wake.notify_waiters();
    }

    /// A cluster's instance takes the origin's deliveries over: every write
    /// after `progress` (the last it applied) through `through` waits in
    /// the shared log (`owed` of them), and so does what was recorded
    /// since the backlog was parked; the cursor restarts at `progress`.
    pub fn take_over(&self, progress: u64, through: u64, owed: usize) {
        let mut state = self.lock();
        let recorded = state.spill.take();
        let (count, bytes) = recorded.as_ref().map_or((0, 0), |r| (r.count, r.bytes));
        let last = recorded
            .as_ref()
            .map_or(through, |r| r.through.max(through));
        if owed + count > 0 && last > progress {
            let mut spill = Spill::new(progress + 1, bytes);
            spill.through = last;
            spill.count = owed + count;
            state.spill = Some(spill);
        }
        state.intake = Intake::Open;
        self.spilled.store(state.spill.is_some(), Ordering::Relaxed);
        self.settled.store(progress, Ordering::Release);
        self.publish(&state);
        drop(state);
        self.wake.notify_waiters();
    }

    /// Hands out nothing numbered after `seq` until [`Backlog::unhold`].
    pub fn hold_after(&self, seq: u64) {
        self.lock().hold_after = Some(seq);
    }

    pub fn unhold(&self) {
        self.lock().hold_after = None;
        self.wake.notify_waiters();
    }

    /// Records a write of a parked backlog (in the log already).
    pub(super) fn record(spill: &mut Option<Spill>, seq: u64, bytes: u64) {
        match spill {
            Some(spill) => spill.add(seq, bytes),
            None => *spill = Some(Spill::new(seq, bytes)),
        }
    }
    /// `in_flight` (all lanes') follows a lane's count of entries sent and
    /// not answered, which went from `reported` to `now`.
    pub fn report_in_flight(&self, reported: &mut usize, now: usize) {
        match now.cmp(reported) {
            std::cmp::Ordering::Greater => {
                self.in_flight.fetch_add(now - *reported, Ordering::Relaxed)
            }
            std::cmp::Ordering::Less => {
                self.in_flight.fetch_sub(*reported - now, Ordering::Relaxed)
            }
            std::cmp::Ordering::Equal => return,
        };
        *reported = now;
    }

    /// In a cluster the read-your-writes cookie names a position: what
    /// [`Backlog::is_past`] compares from then on.
    pub fn set_clustered(&self) {
        self.clustered.store(true, Ordering::Relaxed);
    }

    /// Another instance recorded that the origin applied the order through
    /// `position`.
    pub fn set_remote_progress(&self, position: u64) {
        self.remote_progress.fetch_max(position, Ordering::Relaxed);
    }

    /// The origin's progress as another instance recorded it.
    pub fn remote_progress(&self) -> u64 {
        self.remote_progress.load(Ordering::Relaxed)
    }

    /// Has the origin applied the order through `position`, as this
    /// instance delivered it or another recorded it?
    pub fn has_position(&self, position: u64) -> bool {
        self.applied_seq().max(self.remote_progress()) >= position
    }
}
