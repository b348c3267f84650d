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
//! expiry is reflected in the metrics at the next probe round. Whether a
//! read timeout is a failure of the origin is [`read_timeouts`]' question.

mod probe;
mod read_timeouts;
mod response;

use crate::config::HealthConfig;
use crate::metrics::Metrics;
use crate::pool::{Origin, OriginId, Pool};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_core::services::ServiceReadyNotifier;
pub use probe::{describe, probe, KeptConnection, ProbeError, Target};
pub use read_timeouts::ReadTimeouts;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinSet;

/// Runs the active probes as a Pingora background service.
pub struct HealthService {
    pool: Arc<Pool>,
    metrics: Arc<Metrics>,
    /// Swapped by a reload; each round reads it afresh.
    config: Arc<ArcSwap<HealthConfig>>,
    /// Told when a reload added origins: they are probed at once.
    added: Arc<Notify>,
    /// Each origin's probe connection between probes (HTTP probes only).
    kept: Mutex<HashMap<OriginId, KeptConnection>>,
}

/// One origin's part (see [`crate::pool::Origin`]): its probes' verdict and
/// the streak of results disagreeing with it.
#[derive(Debug, Default)]
pub struct ProbeStreak(Mutex<Tracker>);

#[derive(Debug, Clone, Copy, Default)]
struct Tracker {
    up: bool,
    streak: u32,
    /// Has a probe decided this origin's state yet? An origin's first probe
    /// decides on its own (at start-up, or once a reload added it).
    decided: bool,
}

impl HealthService {
    pub fn new(pool: Arc<Pool>, metrics: Arc<Metrics>, config: Arc<ArcSwap<HealthConfig>>) -> Self {
        HealthService {
            pool,
            metrics,
            config,
            added: Arc::new(Notify::new()),
            kept: Mutex::default(),
        }
    }

    /// What a reload notifies when it added origins, so that they are
    /// probed at once instead of at the next round.
    pub fn on_added(&self) -> Arc<Notify> {
        self.added.clone()
    }

    /// Origins no probe has decided yet (a reload just added them).
    fn undecided(&self) -> Vec<OriginId> {
        self.pool
            .members()
            .filter(|o| !o.probes.lock().decided)
            .map(|o| o.id)
            .collect()
    }

    /// Probes every origin once and applies each result as it comes. The
    /// first round probes all at once (the proxy waits for it); later
    /// rounds spread the probes evenly over `interval`, as HAProxy's
    /// `spread-checks`, so that 1,000 origins cost a steady trickle of
    /// connections instead of 1,000 in one burst every interval (which
    /// stalled live requests for milliseconds on a small machine).
    async fn round(&self, first: bool) {
        // Origins a reload removed are no longer probed; added ones are.
        let origins: Vec<OriginId> = self.pool.members().map(|o| o.id).collect();
        self.kept_connections().retain(|id, _| origins.contains(id));
        let spacing = match first {
            true => Duration::ZERO,
            false => {
                let interval = self.config.load().interval;
                interval / u32::try_from(origins.len().max(1)).unwrap_or(u32::MAX)
            }
        };
        self.probe(&origins, spacing, first).await;
    }

    /// Probes `origins`, `spacing` apart, and applies each result as it comes.
    async fn probe(&self, origins: &[OriginId], spacing: Duration, first: bool) {
        let mut probes = JoinSet::new();
        let config = self.config.load_full();
        for (position, origin) in origins
            .iter()
            .filter_map(|id| self.pool.get(*id))
            .enumerate()
        {
            let id = origin.id;
            let config = config.clone();
            let address = origin.address();
            let tls = origin.tls.clone();
            let kept = self.kept_connections().remove(&id);
            let delay = slot(spacing * u32::try_from(position).unwrap_or(u32::MAX));
            probes.spawn(async move {
                tokio::time::sleep(delay).await;
                let target = Target {
                    kind: &config.kind,
                    address,
                    tls: tls.as_ref(),
                    timeout: config.timeout,
                    connect_every: config.connect_every,
                };
                let (result, kept) = probe(&target, kept).await;
                (id, result, kept)
            });
        }
        while let Some(joined) = probes.join_next().await {
            match joined {
                Ok((id, result, kept)) => {
                    if let Some(kept) = kept {
                        self.kept_connections().insert(id, kept);
                    }
                    self.apply(id, result, first)
                }
                Err(e) => log::error!("health: probe task failed: {e}"),
            }
        }
        self.metrics.publish_pool(&self.pool);
    }

    fn kept_connections(&self) -> std::sync::MutexGuard<'_, HashMap<OriginId, KeptConnection>> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn apply(&self, id: OriginId, result: Result<(), ProbeError>, first: bool) {
        let Some(origin) = self.pool.get(id).filter(|o| !o.is_retired()) else {
            return; // removed by a reload while its probe was out
        };
        match &result {
            Ok(()) => origin.metrics.probe_success.inc(),
            Err(_) => origin.metrics.probe_failure.inc(),
        }
        let mut tracker = origin.probes.lock();
        let ok = result.is_ok();
        let config = self.config.load();
        let threshold = if tracker.up { config.fall } else { config.rise };
        let first = first || !tracker.decided;
        if first {
            tracker.up = ok;
            tracker.streak = 0;
            tracker.decided = true;
        } else if ok == tracker.up {
            tracker.streak = 0;
            return;
        } else {
            tracker.streak += 1;
            if tracker.streak < threshold {
                let first_failure = !ok && tracker.streak == 1;
                drop(tracker);
                // An up origin's first failed probe (when `fall` needs more
                // than one): plain in the log before the origin goes down.
                if let (true, Err(e)) = (first_failure, &result) {
                    log::warn!(
                        "origin {} ({}): probe failed: {}",
                        origin.name,
                        origin.address(),
                        failure(&config, origin, e)
                    );
                }
                return;
            }
            tracker.up = ok;
            tracker.streak = 0;
        }
        drop(tracker);
        self.pool.set_probe_up(id, ok);
        if !first {
            self.metrics.publish_pool(&self.pool);
        }
        match (result, first) {
            (Ok(()), true) => log::info!("origin {} ({}) is up", origin.name, origin.address()),
            (Ok(()), false) => log::warn!(
                "origin {} ({}) is up again after {threshold} good probes",
                origin.name,
                origin.address()
            ),
            (Err(e), true) => log::warn!(
                "origin {} ({}) is down at its first probe: {}",
                origin.name,
                origin.address(),
                failure(&config, origin, &e)
            ),
            (Err(e), false) => log::warn!(
                "origin {} ({}) is down after {threshold} failed probes: {}",
                origin.name,
                origin.address(),
                failure(&config, origin, &e)
            ),
        }
    }
}

/// A failed probe for a log line: what the probe asked, why it failed and,
/// where the failure says, what to change.
fn failure(config: &HealthConfig, origin: &Origin, e: &ProbeError) -> String {
    let probe = describe(&config.kind, origin.address(), origin.tls.is_some());
    match e.hint() {
        Some(hint) => format!("{probe}: {e} ({hint})"),
        None => format!("{probe}: {e}"),
    }
}

/// How far apart the probes of a round are at the least: probes due within
/// one slot start together, so that 1,000 origins probed over a second wake
/// the thread 100 times rather than 1,000 (each wake costs more than a
/// probe on a kept connection).
const SLOT: Duration = Duration::from_millis(10);

/// `delay` rounded down to a whole number of [`SLOT`]s.
fn slot(delay: Duration) -> Duration {
    let slots = delay.as_nanos() / SLOT.as_nanos();
    SLOT * u32::try_from(slots).unwrap_or(u32::MAX)
}

impl ProbeStreak {
    /// Did the origin's last probe fail?
    pub fn last_failed(&self) -> bool {
        let tracker = self.lock();
        // Up, a streak counts failures; down, only failures keep it so.
        (tracker.up && tracker.streak > 0)
            || (tracker.decided && !tracker.up && tracker.streak == 0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tracker> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
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
        // Read after each round: a reload may change the interval.
        let mut next_round = tokio::time::Instant::now() + self.config.load().interval;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next_round) => {
                    self.round(false).await;
                    next_round = tokio::time::Instant::now() + self.config.load().interval;
                }
                () = self.added.notified() => {
                    self.probe(&self.undecided(), Duration::ZERO, false).await;
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
