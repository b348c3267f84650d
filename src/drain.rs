//! When a graceful shutdown is done: as soon as the last client connection
//! has closed, not when `server.grace_period_seconds` has run out.
//!
//! Pingora waits the whole grace period after a graceful shutdown
//! (`SIGTERM`, or `SIGQUIT` once an upgrade's new process has the
//! listening sockets) before it stops, even with nothing left to do; in an
//! upgrade the new process waits for the old one's journal lock all that
//! time, and new connections wait in the listen queue. Connections close
//! fast once shutdown starts ([`crate::connections`]: the next answer
//! carries `Connection: close`, an idle connection waits at most a second),
//! so this service ends the grace period (Pingora patched with
//! `GracePeriodEnd`, see `vendor/README.md`) once none is left and the
//! proxy service has stopped: its replication workers' last steps (the
//! journal's cursors, a cluster's hand-over of its leases) run on its
//! runtime, which the end of the grace period stops. The grace period stays
//! the upper bound.

use crate::connections::Book;
use async_trait::async_trait;
use pingora_core::server::{GracePeriodEnd, ShutdownWatch};
use pingora_core::services::background::BackgroundService;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often the count of open connections is looked at during a shutdown.
const POLL: Duration = Duration::from_millis(10);

pub struct DrainService {
    pub connections: Arc<Book>,
    /// Set by the proxy service once it has stopped.
    pub proxy_stopped: Arc<AtomicBool>,
    pub grace_period_end: GracePeriodEnd,
}

#[async_trait]
impl BackgroundService for DrainService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        while !*shutdown.borrow_and_update() {
            if shutdown.changed().await.is_err() {
                return;
            }
        }
        loop {
            let stopped = self.proxy_stopped.load(Ordering::Acquire);
            if stopped && self.connections.open() == 0 {
                log::info!("graceful shutdown: every client connection is closed");
                self.grace_period_end.end();
                return;
            }
            tokio::time::sleep(POLL).await;
        }
    }
}
