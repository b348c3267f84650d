//! Ending a graceful shutdown's grace period early.
//!
//! After a graceful shutdown (`SIGTERM`, or `SIGQUIT` once the listening
//! sockets are handed over) the server waits `grace_period_seconds` before it
//! stops its runtimes, so that connections still open can finish. A service
//! that knows its connections are all done (every client gone) can end that
//! wait through a [`GracePeriodEnd`] taken from the server before it runs:
//! the process then exits as soon as its work is finished instead of after
//! the whole period, and an upgrade's new process, waiting for a resource the
//! old one holds (a file lock, say), starts serving sooner.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Ends the grace period of the server it was taken from
/// ([`super::Server::grace_period_end`]). Clones end the same period.
#[derive(Clone, Default)]
pub struct GracePeriodEnd(Arc<(Mutex<bool>, Condvar)>);

impl GracePeriodEnd {
    /// Ends the grace period now (or at its start, if it has not begun).
    pub fn end(&self) {
        let (ended, changed) = &*self.0;
        *ended.lock().unwrap_or_else(|e| e.into_inner()) = true;
        changed.notify_all();
    }

    /// Waits up to `period`, or until [`GracePeriodEnd::end`]; whether it
    /// was ended early.
    pub(crate) fn wait(&self, period: Duration) -> bool {
        let (ended, changed) = &*self.0;
        let ended = ended.lock().unwrap_or_else(|e| e.into_inner());
        let (ended, _) = changed
            .wait_timeout_while(ended, period, |ended| !*ended)
            .unwrap_or_else(|e| e.into_inner());
        *ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn grace_period_end_cuts_the_wait_short() {
        let end = GracePeriodEnd::default();
        let started = Instant::now();
        assert!(!end.wait(Duration::from_millis(20)), "nobody ended it");
        assert!(started.elapsed() >= Duration::from_millis(20));

        let ender = end.clone();
        let thread = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            ender.end();
        });
        let started = Instant::now();
        assert!(end.wait(Duration::from_secs(60)), "ended early");
        assert!(started.elapsed() < Duration::from_secs(30));
        thread.join().unwrap();
        // Ended before the wait starts: no wait at all.
        assert!(end.wait(Duration::from_secs(60)));
    }
}
