//! The signals hothot handles beside Pingora's own (SIGTERM graceful
//! shutdown, SIGINT fast exit, SIGQUIT socket hand-over): `SIGHUP` reloads
//! the configuration ([`crate::reload`]), `SIGUSR1` reopens the access log
//! for log rotation (nginx's `HUP` and `USR1`).

use crate::access_log::AccessLog;
use crate::reload::Reloader;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};

pub struct SignalService {
    pub access_log: Option<Arc<AccessLog>>,
    pub reloader: Arc<Reloader>,
}

#[async_trait]
impl BackgroundService for SignalService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let (Some(mut reopen), Some(mut reload)) = (
            handle(
                SignalKind::user_defined1(),
                "SIGUSR1 (access log reopening)",
            ),
            handle(SignalKind::hangup(), "SIGHUP (configuration reload)"),
        ) else {
            return;
        };
        loop {
            tokio::select! {
                _ = reload.recv() => {
                    log::info!("SIGHUP: reloading the configuration");
                    crate::notify::reloading();
                    let reloader = self.reloader.clone();
                    // File reading and validation stay off this runtime's thread.
                    if let Err(e) = tokio::task::spawn_blocking(move || reloader.reload()).await {
                        log::error!("reload: {e}");
                    }
                    crate::notify::ready();
                }
                _ = reopen.recv() => match &self.access_log {
                    Some(access_log) => {
                        log::info!("SIGUSR1: reopening the access log");
                        access_log.reopen();
                    }
                    None => log::info!("SIGUSR1: no access log to reopen"),
                },
                _ = shutdown.changed() => {
                    crate::notify::stopping();
                    // What the access log still buffers is written before the exit.
                    if let Some(access_log) = &self.access_log {
                        access_log.flush();
                    }
                    return;
                }
            }
        }
    }
}

/// The stream of `kind` signals; `None` (logged) when it cannot be had.
fn handle(kind: SignalKind, what: &str) -> Option<tokio::signal::unix::Signal> {
    signal(kind)
        .map_err(|e| log::error!("cannot handle {what}: {e}"))
        .ok()
}
