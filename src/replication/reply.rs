//! Which answer the client of a sequenced write gets.
//!
//! Every origin receives the write, so every origin answers it. The client
//! gets its primary's answer. If the primary cannot answer (it failed this
//! write with a 5xx or a broken connection, it is down, or its deliveries are
//! failing), the client gets the first answer another origin gave to the
//! same write: the write keeps its one place in the sequence, and the
//! primary still receives it from its backlog later. Only when every origin
//! has failed the write (or is out of service) does the client get a 5xx:
//! the last 5xx answer an origin gave, if any.

use super::write::Write;
use super::{Ordered, Unanswered};
use crate::config::ReplicationMode;
use crate::pool::OriginId;
use crate::routes::Consistency;
use bytes::Bytes;
use std::sync::Arc;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
// Tokio's clock, so that deadlines follow a paused clock in tests.
use tokio::sync::Notify;
use tokio::time::Instant;

/// How often a waiting client looks again at whether its primary is out of
/// service (probes, ejection, failing deliveries): those change without an
/// answer arriving.
const RECHECK: Duration = Duration::from_millis(50);

pub struct Reply {
    primary: OriginId,
    /// The origins the write went to.
    targets: Vec<OriginId>,
    state: Mutex<Gathered>,
    changed: Notify,
}

struct Gathered {
    /// The primary's answer, when below 500.
    primary: Option<Bytes>,
    /// The first answer below 500 from another origin.
    fallback: Option<(OriginId, Bytes)>,
    /// The latest 5xx answer, for when no origin does better.
    server_error: Option<(OriginId, Bytes)>,
    /// Origins that failed this write (5xx, or the connection failed).
    failed: Vec<OriginId>,
    /// The client has its answer (or stopped waiting): keep nothing more.
    done: bool,
}

/// What the client gets.
#[derive(Debug)]
pub enum Outcome {
    /// This origin's answer, as it sent it.
    Answer { origin: OriginId, raw: Bytes },
    /// Every origin failed the write or is out of service; the latest 5xx
    /// answer, if there was one.
    Failed(Option<(OriginId, Bytes)>),
    /// No origin answered before the deadline.
    TimedOut,
}

impl Reply {
    /// A reply for a write whose primary is `primary`, sent to `targets`.
    pub fn new(primary: OriginId, targets: Vec<OriginId>) -> Self {
        Reply {
            primary,
            targets,
            state: Mutex::new(Gathered {
                primary: None,
                fallback: None,
                server_error: None,
                failed: Vec::new(),
                done: false,
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Gathered> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Would the answer of `origin` still be used? (Its bytes are kept only then.)
    pub fn wants(&self, origin: OriginId) -> bool {
        let state = self.lock();
        !state.done && (origin == self.primary || state.fallback.is_none())
    }

    /// `origin` answered below 500 (`raw` is the answer, if it was kept).
    pub fn answered(&self, origin: OriginId, raw: Option<Bytes>) {
        let Some(raw) = raw else { return };
        let mut state = self.lock();
        if origin == self.primary {
            state.primary = Some(raw);
        } else if state.fallback.is_none() {
            state.fallback = Some((origin, raw));
        } else {
            return;
        }
        drop(state);
        self.changed.notify_waiters();
    }

    /// `origin` failed the write: a 5xx answer (`raw`), or a broken connection.
    pub fn failed(&self, origin: OriginId, raw: Option<Bytes>) {
        let mut state = self.lock();
        if !state.failed.contains(&origin) {
            state.failed.push(origin);
        }
        if let Some(raw) = raw {
            state.server_error = Some((origin, raw));
        }
        drop(state);
        self.changed.notify_waiters();
    }

    /// The client's outcome if it is decided, given which origins are out of
    /// service now.
    fn decide(&self, out_of_service: &(dyn Fn(OriginId) -> bool + Sync)) -> Option<Outcome> {
        let mut state = self.lock();
        if let Some(raw) = state.primary.take() {
            return Some(Outcome::Answer {
                origin: self.primary,
                raw,
            });
        }
        let failed = &state.failed;
        let cannot = |origin: OriginId| failed.contains(&origin) || out_of_service(origin);
        if !cannot(self.primary) {
            return None;
        }
        let everyone_failed = self.targets.iter().all(|t| cannot(*t));
        if let Some((origin, raw)) = state.fallback.take() {
            return Some(Outcome::Answer { origin, raw });
        }
        everyone_failed.then(|| Outcome::Failed(state.server_error.take()))
    }

    /// Waits for the client's outcome until `deadline`, when the primary
    /// counts as timed out.
    pub async fn wait(
        &self,
        deadline: Instant,
        out_of_service: &(dyn Fn(OriginId) -> bool + Sync),
    ) -> Outcome {
        let outcome = loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            // Past the deadline the primary has timed out: another origin's
            // answer, if there is one, is better than none.
            let now = Instant::now();
            let timed_out = now >= deadline;
            let cannot = |o: OriginId| (timed_out && o == self.primary) || out_of_service(o);
            if let Some(outcome) = self.decide(&cannot) {
                break outcome;
            }
            if timed_out {
                break Outcome::TimedOut;
            }
            let _ = tokio::time::timeout(RECHECK.min(deadline - now), changed).await;
        };
        self.lock().done = true;
        outcome
    }
}

impl super::Replicator {
    /// The answer the client of `write` gets, by `deadline`, with its
    /// `consistency`.
    pub(super) async fn answer(
        &self,
        write: &Arc<Write>,
        deadline: tokio::time::Instant,
        consistency: &Consistency,
    ) -> Ordered {
        let Some(reply) = write.reply.clone() else {
            return Ordered::Unanswered(Unanswered::NoAnswer);
        };
        let out_of_service = |id: OriginId| {
            let origin = self.pool.get(id);
            // A spilled origin is far behind: its answer would come too
            // late. (Deliveries that are another instance's are judged
            // there: only the pool's verdict counts here.)
            origin.is_none_or(|o| {
                let backlog = &o.backlog;
                let delivering = backlog.is_open();
                !o.is_serving()
                    || (delivering && (backlog.streak.is_failing() || backlog.is_spilled()))
            })
        };
        match reply.wait(deadline, &out_of_service).await {
            Outcome::Answer { origin, raw } => {
                let quorum = consistency.mode != ReplicationMode::Sync
                    || self.wait_for_quorum(write, consistency).await;
                Ordered::Answer {
                    origin,
                    raw,
                    quorum,
                    position: write.seq,
                }
            }
            Outcome::Failed(Some((origin, raw))) => Ordered::Answer {
                origin,
                raw,
                quorum: true,
                position: write.seq,
            },
            Outcome::Failed(None) => Ordered::Unanswered(Unanswered::NoAnswer),
            Outcome::TimedOut => Ordered::Unanswered(Unanswered::TimedOut),
        }
    }

    /// Waits until `quorum` origins other than the primary acknowledged
    /// `write`, at most `timeout`. False (and counted) on timeout; the write
    /// stays queued either way.
    pub async fn wait_for_quorum(&self, write: &Write, consistency: &Consistency) -> bool {
        let quorum = u32::try_from(consistency.quorum).unwrap_or(u32::MAX);
        let acknowledged =
            tokio::time::timeout(consistency.timeout, write.acknowledged_by(quorum)).await;
        if acknowledged.is_err() {
            self.metrics.replication.quorum_timeouts.inc();
        }
        acknowledged.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn id(slot: usize) -> OriginId {
        OriginId::from_slot(slot)
    }

    fn reply(primary: usize, origins: usize) -> Reply {
        Reply::new(id(primary), (0..origins).map(id).collect())
    }

    fn origin_of(outcome: Outcome) -> Option<OriginId> {
        match outcome {
            Outcome::Answer { origin, .. } => Some(origin),
            Outcome::Failed(_) | Outcome::TimedOut => None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_primary_answers_unless_it_cannot() {
        let soon = || Instant::now() + Duration::from_millis(200);
        let all_up = |_: OriginId| false;
        // The primary's answer wins even when another origin answered first.
        let r = reply(1, 3);
        r.answered(id(0), Some(Bytes::from_static(b"a")));
        assert!(r.wants(id(1)) && !r.wants(id(2)));
        r.answered(id(1), Some(Bytes::from_static(b"b")));
        assert_eq!(origin_of(r.wait(soon(), &all_up).await), Some(id(1)));
        assert!(
            !r.wants(id(1)),
            "nothing is kept once the client is answered"
        );

        // A failed primary: the first other answer.
        let r = reply(1, 3);
        r.failed(id(1), Some(Bytes::from_static(b"503")));
        r.answered(id(2), Some(Bytes::from_static(b"c")));
        assert_eq!(origin_of(r.wait(soon(), &all_up).await), Some(id(2)));

        // A primary out of service: the same, without it failing this write.
        let r = reply(0, 2);
        r.answered(id(1), Some(Bytes::from_static(b"b")));
        assert_eq!(
            origin_of(r.wait(soon(), &|o| o == id(0)).await),
            Some(id(1))
        );

        // Everyone failed: the 5xx.
        let r = reply(0, 2);
        r.failed(id(0), Some(Bytes::from_static(b"500")));
        r.failed(id(1), None);
        match r.wait(soon(), &all_up).await {
            Outcome::Failed(Some((origin, raw))) => {
                assert_eq!((origin, &raw[..]), (id(0), &b"500"[..]))
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_deadline_another_answer_or_none() {
        let deadline = Duration::from_secs(30);
        let all_up = |_: OriginId| false;
        // The primary does not answer in time: another origin's answer,
        // given at once, is relayed only at the deadline.
        let r = reply(0, 2);
        r.answered(id(1), Some(Bytes::from_static(b"b")));
        let started = tokio::time::Instant::now();
        let outcome = r.wait(Instant::now() + deadline, &all_up).await;
        assert_eq!(origin_of(outcome), Some(id(1)));
        assert!(started.elapsed() >= deadline, "{:?}", started.elapsed());

        // Nobody answers: timed out at the deadline, not before.
        let r = reply(0, 2);
        let started = tokio::time::Instant::now();
        let outcome = r.wait(Instant::now() + deadline, &all_up).await;
        assert!(matches!(outcome, Outcome::TimedOut));
        assert!(started.elapsed() >= deadline, "{:?}", started.elapsed());

        // The primary leaves service while its client waits: the other
        // answer within the recheck, long before the deadline.
        let r = Arc::new(reply(0, 2));
        r.answered(id(1), Some(Bytes::from_static(b"b")));
        let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let waiting = tokio::spawn({
            let (r, down) = (r.clone(), down.clone());
            async move {
                let out = move |o: OriginId| {
                    o == id(0) && down.load(std::sync::atomic::Ordering::Acquire)
                };
                r.wait(Instant::now() + deadline, &out).await
            }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        down.store(true, std::sync::atomic::Ordering::Release);
        let started = tokio::time::Instant::now();
        assert_eq!(origin_of(waiting.await.unwrap()), Some(id(1)));
        assert!(started.elapsed() <= RECHECK, "{:?}", started.elapsed());
    }
}
