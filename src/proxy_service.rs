//! The proxy's Pingora service, with the replication workers on its runtime.
//!
//! Pingora gives every service a runtime of its own. Run as a separate
//! background service, the peer workers sat on another thread that the proxy
//! had to wake (a futex and a context switch) for almost every write; on the
//! proxy's own runtime a new write usually finds its worker's thread awake.

use crate::replication::ReplicationService;
use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::server::{ListenFds, RuntimeOpts, ShutdownWatch};
use pingora_core::services::background::BackgroundService;
use pingora_core::services::listening::Service as ListeningService;
use pingora_core::services::Service;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub struct ProxyService<A> {
    inner: ListeningService<A>,
    replication: ReplicationService,
    /// Set once the listeners are closed and the replication workers have
    /// taken their last steps ([`crate::drain`] waits for it).
    stopped: Arc<AtomicBool>,
}

impl<A> ProxyService<A> {
    pub fn new(inner: ListeningService<A>, replication: ReplicationService) -> Self {
        ProxyService {
            inner,
            replication,
            stopped: Arc::default(),
        }
    }

    /// Becomes true once the listeners are closed and the replication
    /// workers have taken their last steps.
    pub fn stopped(&self) -> Arc<AtomicBool> {
        self.stopped.clone()
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> Service for ProxyService<A> {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        listeners_per_fd: usize,
    ) {
        let replication = self.replication.clone();
        let replication_shutdown = shutdown.clone();
        let workers = tokio::spawn(async move { replication.start(replication_shutdown).await });
        // A boxed future (async_trait's), polled by hand below.
        let mut serve = self.inner.start_service(fds, shutdown, listeners_per_fd);
        // Its first poll binds the listeners (Pingora's build has no
        // suspension point unless an address is busy, which start-up has
        // refused already) and spawns the accept loops: hothot is ready
        // once its SIGHUP handler is in place too (systemd may reload next).
        let mut told = false;
        std::future::poll_fn(|context| {
            let polled = std::future::Future::poll(serve.as_mut(), context);
            if !std::mem::replace(&mut told, true) {
                tokio::spawn(async {
                    crate::signals::handlers_installed().await;
                    crate::notify::ready();
                });
            }
            polled
        })
        .await;
        // The workers stop on the same signal: their last steps (the
        // journal's cursors, a cluster's hand-over) finish before the
        // runtime goes.
        let _ = workers.await;
        self.stopped.store(true, Ordering::Release);
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn threads(&self) -> Option<usize> {
        self.inner.threads()
    }

    fn runtime_opts_override(&self, global: &RuntimeOpts) -> Option<RuntimeOpts> {
        self.inner.runtime_opts_override(global)
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        self.inner.listen_addresses()
    }
}
