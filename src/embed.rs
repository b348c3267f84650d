//! Running hothot on a thread of this process, as tests and embedders do:
//! [`spawn`] builds the server ([`crate::server::build`]) and runs it until
//! the returned handle is stopped or dropped.

use crate::config::Config;
use crate::server::{build, StartError};
use async_trait::async_trait;
use pingora_core::server::{RunArgs, ShutdownSignal, ShutdownSignalWatch};
use std::sync::Mutex;
use std::thread::JoinHandle;

/// A proxy running on a thread of this process, as tests and embedders use it.
pub struct RunningProxy {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl RunningProxy {
    /// Stops the proxy (fast shutdown) and waits for it to finish.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for RunningProxy {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct StopSignal(Mutex<Option<tokio::sync::oneshot::Receiver<()>>>);

#[async_trait]
impl ShutdownSignalWatch for StopSignal {
    async fn recv(&self) -> ShutdownSignal {
        let receiver = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(receiver) = receiver {
            // A dropped sender means the handle is gone: stop as well.
            let _ = receiver.await;
        }
        ShutdownSignal::FastShutdown
    }
}

/// Starts the proxy on a background thread of this process.
pub fn spawn(config: &Config) -> Result<RunningProxy, StartError> {
    let server = build(config, None, None)?;
    let (stop, receiver) = tokio::sync::oneshot::channel();
    let signal = StopSignal(Mutex::new(Some(receiver)));
    let thread = std::thread::Builder::new()
        .name("hothot-server".to_owned())
        .spawn(move || {
            server.run(RunArgs {
                shutdown_signal: Box::new(signal),
            })
        })
        .map_err(StartError::Thread)?;
    Ok(RunningProxy {
        stop: Some(stop),
        thread: Some(thread),
    })
}
