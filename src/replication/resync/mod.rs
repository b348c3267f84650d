//! Rebuilding an origin from a peer at a consistent cut (#24), as
//! `pg_basebackup` rebuilds a replica: the admin API's
//! `POST /origins/{name}/resync?from={donor}`, `/resync/done` and
//! `/resync/abort`.
//!
//! At the cut `seq` (between two writes) the origin stops receiving writes
//! (those after the cut wait in the log for it) and the donor stops
//! receiving writes past the cut; once the donor has applied every write
//! through `seq`, its data is the pool's at `seq`, frozen while the
//! operator (or `replication.resync.command`) copies it. `done` gives the
//! origin every write after `seq`, in order, from the log; the donor
//! resumes. The donor is out of service while held (its data is behind the
//! pool's). One resync runs at a time. Nothing of a resync is kept across a
//! restart but the origin's detached mark: a restart aborts it, and the
//! donor's held writes are in the log.

mod cluster;
mod command;

use super::backlog::Intake;
use super::log::Mark;
use super::Replicator;
use crate::pool::{Origin, OriginId, Standing};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::task::AbortHandle;

/// How often the cut's wait looks at the donor's progress.
const POLL: Duration = Duration::from_millis(10);

/// The resync running, if any.
#[derive(Default)]
pub struct Resyncs {
    running: Mutex<Option<Running>>,
}

struct Running {
    origin: OriginId,
    donor: OriginId,
    seq: u64,
    /// The `resync.command` running for it.
    command: Option<AbortHandle>,
}

/// A resync that started: the donor is held at `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    pub origin: String,
    pub donor: String,
    pub seq: u64,
}

/// Why a resync request was refused; the admin API answers 409 (404 for
/// an unknown origin).
#[derive(Debug, thiserror::Error)]
pub enum ResyncError {
    #[error("no origin named {0:?}")]
    UnknownOrigin(String),
    #[error("cannot resync: no donor named {0:?} (give ?from=NAME, an origin serving now)")]
    UnknownDonor(String),
    #[error("cannot resync {0} from itself")]
    SameOrigin(String),
    #[error("cannot resync from {0}: it is not serving (only an origin that has every write can be copied)")]
    DonorNotServing(String),
    #[error("cannot resync: a resync of {origin} from {donor} is running (finish it with /resync/done or /resync/abort)")]
    Running { origin: String, donor: String },
    #[error(
        "cannot resync {origin} from {donor} on this instance: a resync runs on the instance that holds both \
         origins' deliveries, and they did not come here: {why}"
    )]
    NotGathered {
        origin: String,
        donor: String,
        why: String,
    },
    #[error("no resync of {0} is running")]
    NotRunning(String),
    #[error("cannot resync: replication is off, so there is no sequence to cut")]
    Off,
    #[error("resync aborted: {donor} did not apply every write through #{seq} within {waited:?}")]
    DonorBehind {
        donor: String,
        seq: u64,
        waited: Duration,
    },
}

impl ResyncError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, ResyncError::UnknownOrigin(_))
    }
}

impl Resyncs {
    fn lock(&self) -> MutexGuard<'_, Option<Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the running resync if `which` says it is the one, stopping its
    /// command if one still runs.
    fn take_if(&self, which: impl FnOnce(&Running) -> bool) -> Option<Running> {
        let mut running = self.lock();
        let taken = running.take_if(|r| which(r))?;
        if let Some(command) = &taken.command {
            command.abort();
        }
        Some(taken)
    }
}

impl Replicator {
    /// Is `id` the origin or the donor of the running resync?
    pub(super) fn in_resync(&self, id: OriginId) -> bool {
        let running = self.resyncs.lock();
        running
            .as_ref()
            .is_some_and(|r| r.origin == id || r.donor == id)
    }

    /// Starts resyncing `name` from `donor`: see the module's text. Returns
    /// once the donor holds the pool's data at the cut (and the command,
    /// if configured, runs).
    pub async fn resync(self: &Arc<Self>, name: &str, donor: &str) -> Result<Started, ResyncError> {
        if self.sequencer.log().is_none() {
            return Err(ResyncError::Off);
        }
        let origin = (self.pool.find(name).cloned())
            .ok_or_else(|| ResyncError::UnknownOrigin(name.to_owned()))?;
        let giver = (self.pool.find(donor).cloned())
            .ok_or_else(|| ResyncError::UnknownDonor(donor.to_owned()))?;
        if origin.id == giver.id {
            return Err(ResyncError::SameOrigin(name.to_owned()));
        }
        if let Some(r) = self.resyncs.lock().as_ref() {
            return Err(self.running_error(r));
        }
        self.gather_here(&origin, &giver).await?;
        let started = self.start_resync(&origin, &giver).await;
        if started.is_err() {
            self.unpin(&origin, &giver);
        }
        started
    }

    /// [`Replicator::resync`] once this instance may cut both origins.
    async fn start_resync(
        self: &Arc<Self>,
        origin: &Arc<Origin>,
        giver: &Arc<Origin>,
    ) -> Result<Started, ResyncError> {
        let (name, donor) = (origin.name.as_str(), giver.name.as_str());
        let seq = {
            let mut running = self.resyncs.lock();
            if let Some(r) = running.as_ref() {
                return Err(self.running_error(r));
            }
            if !giver.is_serving() {
                return Err(ResyncError::DonorNotServing(donor.to_owned()));
            }
            let seq = self.cut_for_resync(origin, giver);
            *running = Some(Running {
                origin: origin.id,
                donor: giver.id,
                seq,
                command: None,
            });
            seq
        };
        self.remember(&[(name.to_owned(), Some(Mark::Detached))]);
        log::warn!(
            "resync of {name} from {donor} at #{seq}: {name} is out of service and receives \
             nothing until done; {donor} is held at #{seq} (out of service, its later writes wait)"
        );
        self.metrics.publish_pool(&self.pool);
        let waited = self.timeouts.read.max(Duration::from_secs(10));
        if !self.donor_reached(giver, seq, waited).await {
            let _ = self.end_resync(origin, "failed", "its donor fell behind");
            return Err(ResyncError::DonorBehind {
                donor: donor.to_owned(),
                seq,
                waited,
            });
        }
        let started = Started {
            origin: name.to_owned(),
            donor: donor.to_owned(),
            seq,
        };
        if let Some(program) = self.config().retention.resync_command.clone() {
            let handle = self.run_command(program, origin, giver, seq);
            let mut running = self.resyncs.lock();
            match running.as_mut().filter(|r| r.origin == origin.id) {
                Some(r) => r.command = Some(handle),
                None => handle.abort(),
            }
        }
        Ok(started)
    }

    /// At a cut: `origin` records the writes after it without receiving
    /// them, `donor` is held at it. Returns the cut's sequence.
    fn cut_for_resync(&self, origin: &Origin, donor: &Origin) -> u64 {
        let cut = self.sequencer.cut(self.config().max_pending);
        let seq = cut.last_numbered();
        let dropped = origin.backlog.drop_all(Intake::Parked);
        let donor_name = donor.name.clone();
        self.pool.set_standing(
            origin.id,
            Standing::Resyncing {
                donor: donor_name,
                seq,
            },
        );
        donor.backlog.hold_after(seq);
        self.pool.set_donor(donor.id, true);
        drop(cut);
        origin.metrics.replication.dropped.inc_by(dropped as u64);
        seq
    }

    /// Waits until `donor` has applied every write through `seq`.
    async fn donor_reached(&self, donor: &Origin, seq: u64, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let published = self.sequencer.published() >= seq;
            if published && donor.backlog.head_seq().is_none_or(|head| head > seq) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// `POST /origins/{name}/resync/done`: `name` receives every write
    /// after the cut and serves once it has them; the donor resumes.
    pub fn resync_done(&self, name: &str) -> Result<Started, ResyncError> {
        let (origin, running) = self.take_running(name)?;
        let donor = self.pool.get(running.donor).cloned();
        let cut = self.sequencer.cut(self.config().max_pending);
        origin.backlog.settle_through(running.seq);
        origin.backlog.open();
        self.pool.set_standing(origin.id, Standing::CatchingUp);
        drop(cut);
        self.release_donor(&running);
        self.remember(&[(name.to_owned(), Some(Mark::Current(Some(running.seq))))]);
        self.metrics
            .replication
            .resyncs
            .with_label_values(&["done"])
            .inc();
        log::warn!(
            "resync of {name} done at #{}: it receives every later write, and serves once it \
             has them; its donor is released",
            running.seq
        );
        self.metrics.publish_pool(&self.pool);
        Ok(Started {
            origin: name.to_owned(),
            donor: donor.map(|d| d.name.clone()).unwrap_or_default(),
            seq: running.seq,
        })
    }

    /// `POST /origins/{name}/resync/abort`: the donor is released, `name`
    /// stays detached.
    pub fn resync_abort(&self, name: &str) -> Result<Started, ResyncError> {
        let origin = (self.pool.find(name).cloned())
            .ok_or_else(|| ResyncError::UnknownOrigin(name.to_owned()))?;
        let (seq, donor) = self.end_resync(&origin, "aborted", "an operator aborted it")?;
        Ok(Started {
            origin: name.to_owned(),
            donor,
            seq,
        })
    }

    /// Ends the running resync of `origin` without completing it (`result`
    /// for `hothot_resync_total`, `why` for the log): the donor is
    /// released, the origin is detached. Returns the cut and the donor.
    pub(super) fn end_resync(
        &self,
        origin: &Origin,
        result: &str,
        why: &str,
    ) -> Result<(u64, String), ResyncError> {
        let (_, running) = self.take_running(&origin.name)?;
        let donor = self.abandon(&running, result, why);
        Ok((running.seq, donor))
    }

    /// The running resync of `name`, which ends here (its command, if
    /// still running, is stopped).
    fn take_running(&self, name: &str) -> Result<(Arc<Origin>, Running), ResyncError> {
        let origin = (self.pool.find(name).cloned())
            .ok_or_else(|| ResyncError::UnknownOrigin(name.to_owned()))?;
        let running = (self.resyncs.take_if(|r| r.origin == origin.id))
            .ok_or_else(|| ResyncError::NotRunning(name.to_owned()))?;
        Ok((origin, running))
    }

    /// `id` left the pool (a reload): a resync it was part of ends, its
    /// donor released, its origin (if still in the pool) detached.
    pub(super) fn resync_left(&self, id: OriginId) {
        if let Some(running) = self.resyncs.take_if(|r| r.origin == id || r.donor == id) {
            self.abandon(&running, "aborted", "one of its origins left the pool");
        }
    }

    /// `running`, taken, ends without completing (`result` for
    /// `hothot_resync_total`, `why` for the log): its donor is released and
    /// its origin, if still in the pool, detached. Returns the donor's name.
    fn abandon(&self, running: &Running, result: &str, why: &str) -> String {
        let donor = self.pool.get(running.donor).cloned();
        self.release_donor(running);
        let origin = self.pool.get(running.origin).filter(|o| !o.is_retired());
        if let Some(origin) = origin {
            let why = format!("its resync was not completed: {why}");
            self.cut_loose(origin, &why, None);
        }
        self.metrics
            .replication
            .resyncs
            .with_label_values(&[result])
            .inc();
        log::error!(
            "resync of {} ended without completing ({why}): it stays detached; its donor is released",
            self.pool.name(running.origin)
        );
        self.metrics.publish_pool(&self.pool);
        donor.map(|d| d.name.clone()).unwrap_or_default()
    }

    /// The resync `running` ended: its donor takes writes again (and in a
    /// cluster, both origins may move back to the instances the spread
    /// gives them).
    fn release_donor(&self, running: &Running) {
        let (origin, donor) = (self.pool.get(running.origin), self.pool.get(running.donor));
        if let Some(donor) = donor {
            donor.backlog.unhold();
            self.pool.set_donor(donor.id, false);
        }
        if let (Some(origin), Some(donor)) = (origin, donor) {
            self.unpin(origin, donor);
        }
    }

    fn running_error(&self, running: &Running) -> ResyncError {
        ResyncError::Running {
            origin: self.pool.name(running.origin).to_owned(),
            donor: self.pool.name(running.donor).to_owned(),
        }
    }

    /// A resynced origin that has every write again serves: nothing of
    /// its backlog waits in the log, and what memory holds is younger than
    /// `max_lag` (a serving origin under load always has a few writes in
    /// flight).
    pub(super) fn caught_up(&self, origin: &Origin) -> bool {
        let backlog = &origin.backlog;
        let caught_up = !origin.is_current()
            && origin.standing() == Standing::CatchingUp
            && !backlog.is_spilled()
            && backlog.oldest_age() <= self.config().max_lag
            && self
                .pool
                .replace_standing(origin.id, &Standing::CatchingUp, Standing::Current);
        if caught_up {
            log::info!(
                "origin {} has every write after its resync: serving again",
                origin.name
            );
        }
        caught_up
    }
}
