//! Which origins are alive: active probes with rise/fall thresholds.
//!
//! Every origin is probed once per `interval`, the probes spread evenly over
//! it (all at once in the first round). An up origin goes down
//! after `fall` consecutive failed probes; a down origin comes up after `rise`
//! consecutive successes. The very first round decides each origin's state on
//! its own (one probe), and the service reports ready only after it, so the
//! proxy starts listening knowing which origins answer. Each transition is
//! logged once, with the failure that caused it.
//!
//! Passive ejection (live traffic failures) lives in [`crate::pool`]; ejection
//! expiry is reflected in the metrics at the next probe round.

mod probe;

use crate::config::HealthConfig;
use crate::metrics::Metrics;
use crate::pool::Pool;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_core::services::ServiceReadyNotifier;
pub use probe::{probe, ProbeError};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinSet;

/// Runs the active probes as a Pingora background service.
pub struct HealthService {
    pool: Arc<Pool>,
    metrics: Arc<Metrics>,
    /// Swapped by a reload; each round reads it afresh.
    config: Arc<ArcSwap<HealthConfig>>,
    /// Per origin: (currently up, streak of results disagreeing with that).
    trackers: Mutex<Vec<Tracker>>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Tracker {
    up: bool,
    streak: u32,
}

impl HealthService {
    pub fn new(pool: Arc<Pool>, metrics: Arc<Metrics>, config: Arc<ArcSwap<HealthConfig>>) -> Self {
        let trackers = Mutex::new(vec![Tracker::default(); pool.len()]);
        HealthService {
            pool,
            metrics,
            config,
            trackers,
        }
    }

    /// Probes every origin once and applies each result as it comes. The
    /// first round probes all at once (the proxy waits for it); later
    /// rounds spread the probes evenly over `interval`, as HAProxy's
    /// `spread-checks`, so that 1,000 origins cost a steady trickle of
    /// connections instead of 1,000 in one burst every interval (which
    /// stalled live requests for milliseconds on a small machine).
    async fn round(&self, first: bool) {
        let mut probes = JoinSet::new();
        let origins = self.pool.origins();
        let config = self.config.load_full();
        let spacing = match first {
            true => Duration::ZERO,
            false => config.interval / u32::try_from(origins.len().max(1)).unwrap_or(u32::MAX),
        };
        for (index, origin) in origins.iter().enumerate() {
            let config = config.clone();
            let address = origin.address;
            let tls = origin.tls.clone();
            let delay = spacing * u32::try_from(index).unwrap_or(u32::MAX);
            probes.spawn(async move {
                tokio::time::sleep(delay).await;
                (
                    index,
                    probe(&config.kind, address, tls.as_deref(), config.timeout).await,
                )
            });
        }
        while let Some(joined) = probes.join_next().await {
            match joined {
                Ok((index, result)) => self.apply(index, result, first),
                Err(e) => log::error!("health: probe task failed: {e}"),
            }
        }
        self.metrics.publish_pool(&self.pool);
    }

    fn apply(&self, index: usize, result: Result<(), ProbeError>, first: bool) {
        let origin = &self.pool.origins()[index];
        let metrics = &self.metrics.origins[index];
        match &result {
            Ok(()) => metrics.probe_success.inc(),
            Err(_) => metrics.probe_failure.inc(),
        }
        let mut trackers = self.trackers.lock().unwrap_or_else(|e| e.into_inner());
        let tracker = &mut trackers[index];
        let ok = result.is_ok();
        let config = self.config.load();
        let threshold = if tracker.up { config.fall } else { config.rise };
        if first {
            tracker.up = ok;
            tracker.streak = 0;
        } else if ok == tracker.up {
            tracker.streak = 0;
            return;
        } else {
            tracker.streak += 1;
            if tracker.streak < threshold {
                return;
            }
            tracker.up = ok;
            tracker.streak = 0;
        }
        self.pool.set_probe_up(index, ok);
        if !first {
            self.metrics.publish_pool(&self.pool);
        }
        match (result, first) {
            (Ok(()), true) => log::info!("origin {} ({}) is up", origin.name, origin.address),
            (Ok(()), false) => log::warn!(
                "origin {} ({}) is up again after {threshold} good probes",
                origin.name,
                origin.address
            ),
            (Err(e), true) => log::warn!(
                "origin {} ({}) is down at start: {e}",
                origin.name,
                origin.address
            ),
            (Err(e), false) => log::warn!(
                "origin {} ({}) is down after {threshold} failed probes: {e}",
                origin.name,
                origin.address
            ),
        }
    }
}

#[async_trait]
impl BackgroundService for HealthService {
    async fn start_with_ready_notifier(
        &self,
        mut shutdown: ShutdownWatch,
        ready: ServiceReadyNotifier,
    ) {
        self.round(true).await;
        ready.notify_ready();
        loop {
            // Read each time: a reload may change the interval.
            let interval = self.config.load().interval;
            tokio::select! {
                _ = tokio::time::sleep(interval) => self.round(false).await,
                _ = shutdown.changed() => return,
            }
        }
    }
}
