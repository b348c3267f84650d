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

use bytes::Bytes;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// How often a waiting client looks again at whether its primary is out of
/// service (probes, ejection, failing deliveries): those change without an
/// answer arriving.
const RECHECK: Duration = Duration::from_millis(50);

pub struct Reply {
    primary: usize,
    state: Mutex<State>,
    changed: Notify,
}

struct State {
    /// The primary's answer, when below 500.
    primary: Option<Bytes>,
    /// The first answer below 500 from another origin.
    fallback: Option<(usize, Bytes)>,
    /// The latest 5xx answer, for when no origin does better.
    server_error: Option<(usize, Bytes)>,
    /// Origins that failed this write (5xx, or the connection failed).
    failed: Vec<bool>,
    /// The client has its answer (or stopped waiting): keep nothing more.
    done: bool,
}

/// What the client gets.
#[derive(Debug)]
pub enum Outcome {
    /// This origin's answer, as it sent it.
    Answer { origin: usize, raw: Bytes },
    /// Every origin failed the write or is out of service; the latest 5xx
    /// answer, if there was one.
    Failed(Option<(usize, Bytes)>),
    /// No origin answered before the deadline.
    TimedOut,
}

impl Reply {
    /// A reply for a write whose primary is `primary`, in a pool of `origins`.
    pub fn new(primary: usize, origins: usize) -> Self {
        Reply {
            primary,
            state: Mutex::new(State {
                primary: None,
                fallback: None,
                server_error: None,
                failed: vec![false; origins],
                done: false,
            }),
            changed: Notify::new(),
        }
    }

    pub fn primary(&self) -> usize {
        self.primary
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Would the answer of `origin` still be used? (Its bytes are kept only then.)
    pub fn wants(&self, origin: usize) -> bool {
        let state = self.lock();
        !state.done && (origin == self.primary || state.fallback.is_none())
    }

    /// `origin` answered below 500 (`raw` is the answer, if it was kept).
    pub fn answered(&self, origin: usize, raw: Option<Bytes>) {
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
    pub fn failed(&self, origin: usize, raw: Option<Bytes>) {
        let mut state = self.lock();
        if let Some(failed) = state.failed.get_mut(origin) {
            *failed = true;
        }
        if let Some(raw) = raw {
            state.server_error = Some((origin, raw));
        }
        drop(state);
        self.changed.notify_waiters();
    }

    /// The client's outcome if it is decided, given which origins are out of
    /// service now.
    fn decide(&self, out_of_service: &(dyn Fn(usize) -> bool + Sync)) -> Option<Outcome> {
        let mut state = self.lock();
        if let Some(raw) = state.primary.take() {
            return Some(Outcome::Answer {
                origin: self.primary,
                raw,
            });
        }
        let failed = &state.failed;
        let cannot = |i: usize| failed[i] || out_of_service(i);
        if !cannot(self.primary) {
            return None;
        }
        let everyone_failed = (0..failed.len()).all(cannot);
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
        out_of_service: &(dyn Fn(usize) -> bool + Sync),
    ) -> Outcome {
        let outcome = loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            // Past the deadline the primary has timed out: another origin's
            // answer, if there is one, is better than none.
            let now = Instant::now();
            let timed_out = now >= deadline;
            let cannot = |i: usize| (timed_out && i == self.primary) || out_of_service(i);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn origin_of(outcome: Outcome) -> Option<usize> {
        match outcome {
            Outcome::Answer { origin, .. } => Some(origin),
            Outcome::Failed(_) | Outcome::TimedOut => None,
        }
    }

    #[tokio::test]
    async fn the_primary_answers_unless_it_cannot() {
        let soon = || Instant::now() + Duration::from_millis(200);
        let all_up = |_: usize| false;
        // The primary's answer wins even when another origin answered first.
        let reply = Reply::new(1, 3);
        reply.answered(0, Some(Bytes::from_static(b"a")));
        assert!(reply.wants(1) && !reply.wants(2));
        reply.answered(1, Some(Bytes::from_static(b"b")));
        assert_eq!(origin_of(reply.wait(soon(), &all_up).await), Some(1));
        assert!(
            !reply.wants(1),
            "nothing is kept once the client is answered"
        );

        // A failed primary: the first other answer.
        let reply = Reply::new(1, 3);
        reply.failed(1, Some(Bytes::from_static(b"503")));
        reply.answered(2, Some(Bytes::from_static(b"c")));
        assert_eq!(origin_of(reply.wait(soon(), &all_up).await), Some(2));

        // A primary out of service: the same, without it failing this write.
        let reply = Reply::new(0, 2);
        reply.answered(1, Some(Bytes::from_static(b"b")));
        assert_eq!(origin_of(reply.wait(soon(), &|i| i == 0).await), Some(1));

        // Everyone failed: the 5xx.
        let reply = Reply::new(0, 2);
        reply.failed(0, Some(Bytes::from_static(b"500")));
        reply.failed(1, None);
        match reply.wait(soon(), &all_up).await {
            Outcome::Failed(Some((0, raw))) => assert_eq!(&raw[..], b"500"),
            other => panic!("{other:?}"),
        }

        // The primary does not answer in time: another origin's answer.
        let reply = Reply::new(0, 2);
        reply.answered(1, Some(Bytes::from_static(b"b")));
        assert_eq!(origin_of(reply.wait(soon(), &all_up).await), Some(1));

        // Nobody answers.
        let reply = Reply::new(0, 2);
        assert!(matches!(
            reply.wait(soon(), &all_up).await,
            Outcome::TimedOut
        ));
    }
}
