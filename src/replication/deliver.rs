//! Delivery to one origin, on one lane (connection): entries of its backlog,
//! in order, until every one is settled.
//!
//! Entries are pipelined on one keep-alive connection (up to `WINDOW` in
//! flight) and answers come back in request order, so the origin receives
//! them in order. Under `order: key` an origin has several lanes, and the
//! backlog gives each key to one lane at a time ([`super::queue`]). In async
//! mode, entries no client waits for here wait up to `linger` to leave as one
//! batch. An answer below 500 settles the entry (under `order: version` a 4xx
//! is counted `failed` and logged). A 5xx sends it back to the backlog, whose
//! key then waits out a backoff (exponential with jitter, from `retry.initial`
//! to `retry.max`). A broken connection or a timeout resends everything in
//! flight after a backoff; the window restarts at one entry and doubles with
//! each success, so a recovering origin is probed one write at a time.
//!
//! Every failed attempt at the entry whose answer was awaited (a 5xx, the
//! connection closed mid-answer, no answer within `timeouts.read`) counts
//! towards `retry.max_attempts` while the origin passes its probes; a
//! refused connection does not (nothing was sent: the origin is down, and
//! its backlog waits). A write is never given up silently: an origin moves
//! on past it only once every origin failed it `retry.max_attempts` times
//! (the pool stays the same everywhere; counted `failed` and logged once);
//! an origin that has failed it that often over `replication.detach_after`
//! while a peer applied it is detached (it no longer has what its peers
//! have).
//!
//! One caveat of pipelining: entries sent behind one that fails with a 5xx
//! may be applied by the origin before it; they are sent again after it, so
//! the origin ends in the state of the sequence applied in order (for writes
//! that can be repeated, as PUT and DELETE can; origins that deduplicate by
//! `Idempotency-Key` apply each write once).

use super::backlog::{Backlog, Taken, Work};
use super::backoff::Backoff;
use super::entry::Entry;
use super::pipeline::{Answer, PeerConnection, PipelineError};
use super::write::Write;
use super::Replicator;
use crate::config::Timeouts;
use crate::metrics::PeerMetrics;
use crate::pool::Origin;
use std::collections::VecDeque;
use std::sync::Arc;

/// Most entries in flight on a lane's connection.
const WINDOW: usize = 64;

/// Between two looks at a closed gate (a cluster's hold not valid).
const GATE_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

pub struct Lane {
    pub replicator: Arc<Replicator>,
    pub origin: Arc<Origin>,
    /// This lane's number among the origin's lanes.
    pub lane: usize,
    pub timeouts: Timeouts,
    pub backoff: Backoff,
}

/// An entry sent and not answered yet.
struct Sent {
    id: u64,
    entry: Entry,
    /// Sent behind an entry of the same key that failed: its answer is not
    /// kept, and it is sent again after that entry.
    void: bool,
}

/// What the answer at the head of the pipeline did.
enum Settled {
    /// Below 500: the entry is settled.
    Answered,
    /// The answer to a void entry, or to a write given up: nothing learnt.
    Void,
    /// A 5xx: the entry goes back to the backlog.
    ServerError(u16),
}

impl Lane {
    fn metrics(&self) -> &PeerMetrics {
        &self.origin.metrics.replication
    }

    fn queue(&self) -> &Backlog {
        &self.origin.backlog
    }

    fn name(&self) -> &str {
        &self.origin.name
    }

    /// Delivers forever; returns only when the caller drops the future.
    pub async fn run(mut self) {
        let mut connection: Option<PeerConnection> = None;
        let mut in_flight: VecDeque<Sent> = VecDeque::new();
        let mut window = 1;
        // This lane's share of the backlog's `in_flight`.
        let mut reported = 0;
        loop {
            // Spilled writes come back from the log as memory empties.
            self.replicator.refill(&self.origin);
            let config = self.replicator.config();
            self.backoff
                .set_bounds(config.retry_initial, config.retry_max);
            drop(config);
            let batch = if in_flight.is_empty() {
                let batch = self.wait_for_work(window).await;
                if batch.is_empty() {
                    // Writes wait in the log: read back at the top of the
                    // loop (paced, should the log not answer).
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                batch
            } else {
                self.top_up(connection.as_ref(), in_flight.len(), window)
            };
            if !batch.is_empty() && !self.replicator.may_send(&self.origin) {
                // In a cluster, this instance's hold on the origin is not
                // valid (yet, or any more): nothing leaves.
                for taken in batch {
                    self.queue().release(taken.id, None);
                }
                tokio::time::sleep(GATE_PAUSE).await;
                continue;
            }
            let stepped = (self.step(&mut connection, &mut in_flight, batch, &mut reported)).await;
            self.queue()
                .report_in_flight(&mut reported, in_flight.len());
            match stepped {
                Ok(None | Some(Settled::Void)) => {}
                Ok(Some(Settled::Answered)) => {
                    if let Some(failures) = self.queue().streak.recovered() {
                        log::info!(
                            "replication to {}: delivering again after {failures} failed attempts",
                            self.name()
                        );
                    }
                    self.backoff.reset();
                    window = (window * 2).min(WINDOW);
                }
                Ok(Some(Settled::ServerError(status))) => {
                    self.note_failure(&format!("origin answered {status}"));
                    window = 1;
                }
                Err(error) => {
                    self.note_failure(&error.to_string());
                    connection = None;
                    self.connection_failed(std::mem::take(&mut in_flight), &error);
                    self.queue().report_in_flight(&mut reported, 0);
                    window = 1;
                    tokio::time::sleep(self.backoff.next_delay()).await;
                }
            }
        }
    }

    /// The connection failed with `in_flight` on it: the entry whose answer
    /// was awaited failed an attempt (unless nothing was sent: a refused
    /// connection); those behind it only go again.
    fn connection_failed(&mut self, in_flight: VecDeque<Sent>, error: &PipelineError) {
        let sent_before = !matches!(error, PipelineError::Connect(_));
        for (i, sent) in in_flight.into_iter().enumerate() {
            let Some(write) = sent.entry.write().cloned() else {
                self.queue().release(sent.id, None);
                continue;
            };
            self.fail_reply(&write, None);
            if i == 0 && sent_before && !sent.void {
                // The lane waits out the backoff itself.
                self.failed_attempt(sent, &write, &error.to_string(), false);
            } else {
                if i == 0 {
                    self.metrics().retried.inc();
                }
                self.queue().release(sent.id, None);
            }
        }
    }

    /// Logs the first failure of a streak, once per origin (not per lane).
    fn note_failure(&self, why: &str) {
        if self.queue().streak.failed() {
            log::warn!(
                "replication to {}: {why}; retrying with backoff",
                self.name()
            );
        }
    }

    /// Waits until the backlog has entries this lane may send (see
    /// [`Backlog::next_batch`]).
    async fn wait_for_work(&self, window: usize) -> Vec<Taken> {
        // Read once per batch: a reload may change it.
        let linger = self.replicator.linger();
        self.queue().next_batch(self.lane, window, linger).await
    }

    /// More entries to send behind those in flight. Batching: entries that
    /// leave together cost one send here, one read and (with an origin that
    /// flushes pipelined answers together) one write there. So while a batch
    /// is out, newcomers nobody waits for here wait for it unless they fill
    /// the window; and answers already here are settled first, so what
    /// arrived meanwhile leaves in one send.
    fn top_up(
        &self,
        connection: Option<&PeerConnection>,
        in_flight: usize,
        window: usize,
    ) -> Vec<Taken> {
        let room = window.saturating_sub(in_flight);
        if room == 0 || connection.is_some_and(PeerConnection::answer_arrived) {
            return Vec::new();
        }
        let patient = !self.replicator.linger().is_zero();
        match self.queue().take(self.lane, room, patient) {
            Work::Send(batch) => batch,
            Work::Hold | Work::Until(_) | Work::Wait => Vec::new(),
        }
    }

    /// Sends `batch`, then settles the oldest entry in flight.
    async fn step(
        &mut self,
        connection: &mut Option<PeerConnection>,
        in_flight: &mut VecDeque<Sent>,
        batch: Vec<Taken>,
        reported: &mut usize,
    ) -> Result<Option<Settled>, PipelineError> {
        if !batch.is_empty() {
            let mut bytes = Vec::with_capacity(batch.iter().map(|t| t.entry.wire_len()).sum());
            for taken in &batch {
                let (head, rest) = taken.entry.wire_for(self.origin.id);
                bytes.extend_from_slice(head);
                bytes.extend_from_slice(rest);
            }
            in_flight.extend(batch.into_iter().map(|t| Sent {
                id: t.id,
                entry: t.entry,
                void: false,
            }));
            // Counted before they leave: a cluster's hand-over waits for
            // them to be answered (`Backlog::in_flight`).
            (self.origin.backlog).report_in_flight(reported, in_flight.len());
            if connection.is_none() {
                let origin = &self.origin;
                let tls = origin.tls.as_deref();
                *connection = Some(
                    PeerConnection::connect(origin.address(), tls, self.timeouts.connect).await?,
                );
            }
            if let Some(connection) = connection.as_mut() {
                connection.send(&bytes, self.timeouts.write).await?;
            }
        }
        let (Some(pipe), Some(front)) = (connection.as_mut(), in_flight.front()) else {
            return Ok(None);
        };
        let capture = match &front.entry {
            Entry::VerifyRead(_) => true,
            Entry::Write(write) => {
                write.asked_at.is_some()
                    || (write.reply.as_ref()).is_some_and(|r| r.wants(self.origin.id))
            }
        };
        let answer = pipe.read_answer(self.timeouts.read, capture).await?;
        let Some(sent) = in_flight.pop_front() else {
            return Ok(None);
        };
        let settled = self.settle(sent, &answer, in_flight);
        if !answer.keep_alive {
            // Entries sent after this answer are lost with the connection: resend them.
            *connection = None;
            for sent in in_flight.drain(..) {
                self.queue().release(sent.id, None);
            }
        }
        Ok(Some(settled))
    }

    /// Settles (or sends back) the entry the origin just answered.
    fn settle(&mut self, sent: Sent, answer: &Answer, in_flight: &mut VecDeque<Sent>) -> Settled {
        if sent.void {
            self.queue().release(sent.id, None);
            return Settled::Void;
        }
        let write = match &sent.entry {
            Entry::VerifyRead(read) => {
                let raw = answer.raw.as_ref();
                read.sample.record(self.origin.id, answer.status, raw);
                self.settled(&sent);
                return Settled::Answered;
            }
            Entry::Write(write) => write.clone(),
        };
        if answer.status >= 500 {
            return self.server_error(sent, &write, answer, in_flight);
        }
        let sequenced = self.replicator.config().order.is_sequenced();
        if answer.status < 300 || sequenced {
            // Under total or key order, a 4xx is an answer: in the same
            // state every origin gives it, and the sequence goes on.
            self.metrics().delivered.inc();
            self.metrics()
                .sync
                .observe(write.accepted_at.elapsed().as_secs_f64());
            if write.primary != Some(self.origin.id) {
                write.acknowledge();
            }
            write.fate.applied_by_one();
        } else {
            self.metrics().failed.inc();
            log::warn!(
                "replication to {}: write version {} ({}) refused with {}; not retried",
                self.name(),
                write.version,
                write.request_line(),
                answer.status
            );
        }
        if let Some(reply) = &write.reply {
            reply.answered(self.origin.id, answer.raw.clone());
        }
        (self.replicator).forward(&write, &self.origin, true, answer.raw.clone());
        self.settled(&sent);
        Settled::Answered
    }

    /// The origin is done with `sent`: it leaves the backlog.
    fn settled(&self, sent: &Sent) {
        let sequencer = &self.replicator.sequencer;
        sequencer.settled(&self.origin, sent.id, &sent.entry);
    }

    /// A 5xx: the entry is retried after a backoff (its key waits; entries
    /// of that key already sent behind it are sent again after it), or given
    /// up (see [`Self::failed_attempt`]).
    fn server_error(
        &mut self,
        sent: Sent,
        write: &Write,
        answer: &Answer,
        in_flight: &mut VecDeque<Sent>,
    ) -> Settled {
        self.fail_reply(write, answer.raw.clone());
        let why = format!("answered {}", answer.status);
        if !self.failed_attempt(sent, write, &why, true) {
            return Settled::Void; // given up: the lane goes on as before
        }
        // Later entries of its key were sent after it: they go again after it.
        for later in in_flight.iter_mut() {
            later.void |= later.entry.key() == write.key;
        }
        Settled::ServerError(answer.status)
    }

    /// An attempt at `sent` failed (`why`): it counts while the origin
    /// passes its probes. Past `retry.max_attempts` the origin gives the
    /// write up, and is detached if a peer applied it and it has failed it
    /// for `detach_after`, or moves on if every origin gave it up (see
    /// [`Replicator::give_up`]); otherwise it goes back to the backlog, its
    /// key waiting out a backoff when `key_waits` (else the lane waits).
    /// True when it will be retried.
    fn failed_attempt(&mut self, sent: Sent, write: &Write, why: &str, key_waits: bool) -> bool {
        let counts = self.origin.is_probe_up();
        let (failures, failing_for) = self.queue().record_failure(sent.id, counts);
        let exhausted = failures >= self.replicator.config().retry_max_attempts;
        if exhausted
            && self
                .replicator
                .give_up(&self.origin, write, failing_for, why)
        {
            self.settled(&sent);
            // Its failures were that write's: the next write's client may
            // wait for its answer again.
            self.queue().streak.recovered();
            return false;
        }
        if !self.queue().is_open() {
            return false; // detached meanwhile: its backlog is gone
        }
        self.metrics().retried.inc();
        let backoff = key_waits.then(|| self.backoff.next_delay());
        self.queue().release(sent.id, backoff);
        true
    }

    /// Tells a client waiting for `write` that this origin failed it.
    fn fail_reply(&self, write: &Write, raw: Option<bytes::Bytes>) {
        (self.replicator).forward(write, &self.origin, false, raw.clone());
        if let Some(reply) = &write.reply {
            reply.failed(self.origin.id, raw);
        }
    }
}
