//! The signals hothot handles beside Pingora's own (SIGTERM graceful
//! shutdown, SIGINT fast exit, SIGQUIT socket hand-over): `SIGHUP` reloads
//! the configuration ([`crate::reload`]), `SIGUSR1` reopens the access log
//! for log rotation (nginx's `HUP` and `USR1`).

use crate::access_log::AccessLog;
use crate::reload::Reloader;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Notify;

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
        HANDLERS_INSTALLED.store(true, Ordering::Release);
        HANDLERS_WAKE.notify_waiters();
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

/// Whether the handlers of SIGHUP and SIGUSR1 are in place: before that,
/// those signals are ignored ([`ignore_until_handled`]).
static HANDLERS_INSTALLED: AtomicBool = AtomicBool::new(false);
static HANDLERS_WAKE: Notify = Notify::const_new();

/// Until the signal service runs, SIGHUP and SIGUSR1 would end the process
/// (their default action): a reload asked for during start-up is ignored
/// instead. Called first thing at start-up.
pub fn ignore_until_handled() {
    // SAFETY: setting a disposition to SIG_IGN has no preconditions; tokio
    // replaces it with its handler when the service registers.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        libc::signal(libc::SIGUSR1, libc::SIG_IGN);
    }
}

/// Completes once the handlers of SIGHUP and SIGUSR1 are in place: hothot
/// tells systemd it is ready only then, since systemd may send a reload
/// right after.
pub async fn handlers_installed() {
    loop {
        let woken = HANDLERS_WAKE.notified();
        let mut woken = std::pin::pin!(woken);
        woken.as_mut().enable();
        if HANDLERS_INSTALLED.load(Ordering::Acquire) {
            return;
        }
        woken.await;
    }
}

/// The stream of `kind` signals; `None` (logged) when it cannot be had.
fn handle(kind: SignalKind, what: &str) -> Option<tokio::signal::unix::Signal> {
    signal(kind)
        .map_err(|e| log::error!("cannot handle {what}: {e}"))
        .ok()
}
