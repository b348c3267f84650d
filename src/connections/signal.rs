//! How a connection's own task learns that it must stop waiting: it was
//! evicted to make room, or hothot is shutting down gracefully. Flags and
//! that one task's waker.
//!
//! Tokio's `Notify` (and the shutdown `watch` channel built on it) does
//! this for any number of waiters, at the price of a lock and a list entry
//! per wait, and a connection waits twice per request (for its first byte,
//! then beside the proxy). A connection has exactly one waiter, its own
//! task, so one `AtomicWaker` is enough; the shutdown reaches it through
//! its [`Book`](super::Book), which signals every waiting connection once.

use futures::task::AtomicWaker;
use std::future::poll_fn;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::Poll;

/// Why a connection's wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Closed to make room for a new connection.
    Evicted = 1,
    /// hothot is shutting down gracefully.
    Draining = 2,
}

/// Set once each, by whoever evicts the connection or drains hothot; never
/// cleared (an evicted connection closes, a draining process exits).
#[derive(Debug, Default)]
pub struct Signals {
    raised: AtomicU8,
    waker: AtomicWaker,
}

impl Signals {
    /// Raises `wake`: the task waiting in [`Signals::wait`] for it wakes,
    /// or its next wait for it ends at once.
    pub fn raise(&self, wake: Wake) {
        self.raised.fetch_or(wake as u8, Ordering::AcqRel);
        self.waker.wake();
    }

    /// Completes once one of `wakes` is raised, with the one raised
    /// (eviction first). One task at a time: a second waiter would take
    /// the first one's place.
    pub async fn wait(&self, wakes: &[Wake]) -> Wake {
        let raised = || {
            let raised = self.raised.load(Ordering::Acquire);
            [Wake::Evicted, Wake::Draining]
                .into_iter()
                .find(|wake| raised & *wake as u8 != 0 && wakes.contains(wake))
        };
        poll_fn(|cx| {
            if let Some(wake) = raised() {
                return Poll::Ready(wake);
            }
            self.waker.register(cx.waker());
            // A signal between the load and the registration woke nobody.
            match raised() {
                Some(wake) => Poll::Ready(wake),
                None => Poll::Pending,
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn a_waiting_task_wakes_for_what_it_waits_for_and_a_later_wait_ends_at_once() {
        let signals = Arc::new(Signals::default());
        let waiting = tokio::spawn({
            let signals = signals.clone();
            async move { signals.wait(&[Wake::Evicted]).await }
        });
        signals.raise(Wake::Draining);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !waiting.is_finished(),
            "woke for a signal it does not wait for"
        );
        signals.raise(Wake::Evicted);
        let woke = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the signal woke the waiting task")
            .unwrap();
        assert_eq!(woke, Wake::Evicted);
        let again = tokio::time::timeout(Duration::from_secs(5), signals.wait(&[Wake::Draining]))
            .await
            .expect("a wait after the signal ends at once");
        assert_eq!(again, Wake::Draining);
    }
}
