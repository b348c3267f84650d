//! How a connection's own task learns that it was evicted to make room: a
//! flag and that one task's waker.
//!
//! Tokio's `Notify` does this for any number of waiters, at the price of a
//! lock and a list entry per wait, and a connection waits on it twice per
//! request (for its first byte, then beside the proxy). A connection has
//! exactly one waiter, its own task, so one `AtomicWaker` is enough.

use futures::task::AtomicWaker;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;

/// Set once, by whoever evicts the connection; never cleared (an evicted
/// connection closes).
#[derive(Debug, Default)]
pub struct Eviction {
    evicted: AtomicBool,
    waker: AtomicWaker,
}

impl Eviction {
    /// Evicts: the task waiting in [`Eviction::wait`] wakes, or its next
    /// wait ends at once.
    pub fn signal(&self) {
        self.evicted.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Completes once the connection is evicted. One task at a time: a
    /// second waiter would take the first one's place.
    pub async fn wait(&self) {
        poll_fn(|cx| {
            if self.evicted.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            // A signal between the load and the registration woke nobody.
            match self.evicted.load(Ordering::Acquire) {
                true => Poll::Ready(()),
                false => Poll::Pending,
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
    async fn a_waiting_task_wakes_and_a_later_wait_ends_at_once() {
        let eviction = Arc::new(Eviction::default());
        let waiting = tokio::spawn({
            let eviction = eviction.clone();
            async move { eviction.wait().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "woke before the signal");
        eviction.signal();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the signal woke the waiting task")
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), eviction.wait())
            .await
            .expect("a wait after the signal ends at once");
    }
}
