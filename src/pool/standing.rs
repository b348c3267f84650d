//! Whether an origin holds every write of the sequence: the invariant is
//! that every origin that serves does, so an origin that does not is out of
//! service, and says why (#24).
//!
//! An origin is *current* while every write sequenced for it is applied or
//! waits in its backlog. It is *detached* when it can no longer be: its
//! backlog outgrew `replication.retain`, it kept failing a write its peers
//! applied (`replication.detach_after`), or it joined a pool with history.
//! A detached origin receives nothing and serves nothing until a resync
//! ([`crate::replication`]'s `resync`) copies a peer's data to it at a cut:
//! it is then *resyncing*, and once the copy is done it is *catching up*
//! on the writes sequenced since the cut, serving again once it has them.
//! Separately, the peer it is copied from is held at the cut while the copy
//! runs (a *donor*): out of service too, its new writes waiting.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Where an origin stands in the sequence.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Standing {
    /// Every write sequenced for it is applied or waits in its backlog.
    #[default]
    Current,
    /// Cut loose: it receives no writes and serves nothing until a resync.
    Detached(Detached),
    /// Its data is being copied from `donor`, as of the sequence `seq`.
    Resyncing { donor: String, seq: u64 },
    /// Copied: it receives every write after the cut, and serves again once
    /// its backlog is drained.
    CatchingUp,
}

/// Why an origin was detached, and what it had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detached {
    /// Every write numbered at or below this was applied there.
    pub applied: u64,
    pub why: String,
    /// The write it failed for `detach_after`, when that was the reason.
    pub missed: Option<String>,
}

impl Standing {
    /// Its name in `/status`.
    pub fn name(&self) -> &'static str {
        match self {
            Standing::Current => "current",
            Standing::Detached(_) => "detached",
            Standing::Resyncing { .. } => "resyncing",
            Standing::CatchingUp => "catching up",
        }
    }
}

/// An origin's standing, with the flags read on every pick.
#[derive(Default)]
pub(super) struct StandingState {
    standing: Mutex<Standing>,
    /// Not current: out of service.
    out_of_step: AtomicBool,
    /// Held at a resync's cut as its donor: out of service.
    donor: AtomicBool,
}

impl StandingState {
    pub fn get(&self) -> Standing {
        self.standing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Does it hold every write and is it free to serve?
    pub fn in_step(&self) -> bool {
        !self.out_of_step.load(Ordering::Acquire) && !self.donor.load(Ordering::Acquire)
    }

    /// Is it current (without taking the lock)?
    pub fn is_current(&self) -> bool {
        !self.out_of_step.load(Ordering::Acquire)
    }

    pub fn is_donor(&self) -> bool {
        self.donor.load(Ordering::Acquire)
    }

    /// Sets its standing; true when that changed whether it may serve.
    pub fn set(&self, standing: Standing) -> bool {
        let out = standing != Standing::Current;
        *self.standing.lock().unwrap_or_else(|e| e.into_inner()) = standing;
        self.out_of_step.swap(out, Ordering::AcqRel) != out
    }

    /// Sets its standing to `to` only if it is `from` now (compared by
    /// name); true when it changed.
    pub fn replace(&self, from: &Standing, to: Standing) -> bool {
        let mut standing = self.standing.lock().unwrap_or_else(|e| e.into_inner());
        if std::mem::discriminant(&*standing) != std::mem::discriminant(from) {
            return false;
        }
        let out = to != Standing::Current;
        *standing = to;
        self.out_of_step.store(out, Ordering::Release);
        true
    }

    /// Holds it as a donor (or releases it); true when that changed.
    pub fn set_donor(&self, donor: bool) -> bool {
        self.donor.swap(donor, Ordering::AcqRel) != donor
    }
}
