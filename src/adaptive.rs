//! How much of its declared capacity each origin gets now: a factor in
//! `[min_factor, 1]` from its live latency and errors, capped by slow start.
//!
//! Requests record one outcome each ([`Adaptive::record`], a few atomic
//! adds); a background tick (every `window / 20`, at most 100 ms) folds
//! them into two time-weighted averages per origin and sets its factor in
//! the [`Pool`], where selection reads `capacity × factor` as its weight.
//!
//! - **Latency**: the average is of `ln(latency)`, a time-weighted geometric
//!   mean: a slowdown and a recovery by the same ratio take the same time,
//!   and one stray slow request moves it by its logarithm, not its size.
//!   The reference is the lower median of the serving origins' averages
//!   (the peers', when one origin is the slow one). An origin within
//!   `1.25 × reference + 1 ms` keeps factor 1; beyond, its factor is that
//!   bound over its latency: 20 ms behind peers answering in 0.3 ms gives
//!   `1.4 / 20.3`, under the default floor of 0.1.
//! - **Errors** (connect errors, timeouts, 5xx): the average error ratio
//!   `e` gives `1 − 3 e`: 10% errors cost 30% of the weight, a third or
//!   more put it at the floor. Passive ejection still handles an origin
//!   that fails outright.
//! - Both averages have time constant `window` and weigh by time, not by
//!   request count, so an origin starved to its floor still recovers at the
//!   same pace. The factor is the product of the two, never below
//!   `min_factor`, and only moves with the averages, so a steady load holds
//!   it still. Healthy, equally fast origins keep factor exactly 1.
//! - **Slow start**: an origin that rejoins (probes, end of an ejection)
//!   starts at `min_factor` and ramps linearly to 1 over `slow_start`; its
//!   averages start afresh. Origins serving when hothot starts do not ramp.

use crate::config::Balancing;
use crate::metrics::Metrics;
use crate::pool::{Origin, Pool, FULL_FACTOR};
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Latency within `TOLERANCE_RATIO × reference + TOLERANCE_FLOOR` is normal.
const TOLERANCE_RATIO: f64 = 1.25;
const TOLERANCE_FLOOR: Duration = Duration::from_millis(1);
/// Weight lost per unit of error ratio.
const ERROR_PENALTY: f64 = 3.0;
/// `ln(latency in µs)` is summed in millionths, as an integer.
const LOG_SCALE: f64 = 1e6;

/// One origin's part (see [`crate::pool::Origin`]): what requests recorded
/// since the last tick, and the averages the tick keeps.
#[derive(Debug, Default)]
pub struct Load {
    samples: Samples,
    /// `None` until the tick first sees the origin.
    averages: Mutex<Option<Averages>>,
}

/// Outcomes recorded since the last tick, written by requests.
#[derive(Debug, Default)]
struct Samples {
    outcomes: AtomicU64,
    errors: AtomicU64,
    timed: AtomicU64,
    log_micros: AtomicI64,
}

/// Samples taken out of [`Samples`] by one tick.
struct Tally {
    outcomes: u64,
    errors: u64,
    timed: u64,
    log_micros: i64,
}

impl From<&Samples> for Tally {
    fn from(samples: &Samples) -> Self {
        Tally {
            outcomes: samples.outcomes.swap(0, Ordering::Relaxed),
            errors: samples.errors.swap(0, Ordering::Relaxed),
            timed: samples.timed.swap(0, Ordering::Relaxed),
            log_micros: samples.log_micros.swap(0, Ordering::Relaxed),
        }
    }
}

/// One origin's averages and ramp, touched only by the tick.
#[derive(Debug, Clone)]
struct Averages {
    /// Time-weighted mean of `ln(latency in µs)`; `None` before the first
    /// measurement.
    log_latency: Option<f64>,
    /// When the latency was last measured (or measuring began).
    latency_at: Instant,
    /// Time-weighted error ratio; it starts from a clean record.
    error_ratio: f64,
    errors_at: Instant,
    serving: bool,
    /// When the origin rejoined, while it ramps.
    ramp_from: Option<Instant>,
}

impl Averages {
    fn starting(serving: bool, now: Instant, ramp_from: Option<Instant>) -> Self {
        Averages {
            log_latency: None,
            latency_at: now,
            error_ratio: 0.0,
            errors_at: now,
            serving,
            ramp_from,
        }
    }
}

fn serving_latencies(averages: &[Averages]) -> impl Iterator<Item = f64> + '_ {
    averages
        .iter()
        .filter(|a| a.serving)
        .filter_map(|a| a.log_latency)
}

/// Live factors of the pool's origins.
pub struct Adaptive {
    pool: Arc<Pool>,
    metrics: Arc<Metrics>,
    /// Swapped by a reload.
    settings: Mutex<Balancing>,
    /// `settings.adaptive`, read by every request.
    enabled: AtomicBool,
    /// Held by the tick; true once the first tick (after the first probe
    /// round) has run.
    ticked: Mutex<bool>,
}

impl Adaptive {
    pub fn new(pool: Arc<Pool>, metrics: Arc<Metrics>, settings: Balancing) -> Self {
        Adaptive {
            pool,
            metrics,
            enabled: AtomicBool::new(settings.adaptive),
            settings: Mutex::new(settings),
            ticked: Mutex::new(false),
        }
    }

    fn settings(&self) -> Balancing {
        *self.settings.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A reload's new `balancing` settings; they apply from the next tick.
    pub fn set_settings(&self, settings: Balancing) {
        self.enabled.store(settings.adaptive, Ordering::Release);
        *self.settings.lock().unwrap_or_else(|e| e.into_inner()) = settings;
    }

    /// One attempt on `origin` ended: with a response header after
    /// `latency` (a timeout too), or without one (`None`: refused, reset);
    /// `error` for connect errors, timeouts and 5xx.
    pub fn record(&self, origin: &Origin, latency: Option<Duration>, error: bool) {
        if !self.enabled.load(Ordering::Acquire) {
            return;
        }
        let samples = &origin.load.samples;
        samples.outcomes.fetch_add(1, Ordering::Relaxed);
        if error {
            samples.errors.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(latency) = latency {
            let micros = latency.as_secs_f64() * 1e6;
            samples.timed.fetch_add(1, Ordering::Relaxed);
            samples
                .log_micros
                .fetch_add((micros.max(1.0).ln() * LOG_SCALE) as i64, Ordering::Relaxed);
        }
    }

    /// How often the factors are recomputed.
    pub fn tick_every(&self) -> Duration {
        (self.settings().window / 20).clamp(Duration::from_millis(10), Duration::from_millis(100))
    }

    /// Folds the samples into the averages and sets every origin's factor.
    pub fn tick(&self, now: Instant) {
        let settings = self.settings();
        let mut ticked = self.ticked.lock().unwrap_or_else(|e| e.into_inner());
        let first = !std::mem::replace(&mut *ticked, true);
        let members: Vec<&Arc<Origin>> = self.pool.members().collect();
        // Origins serving at start-up (after the first probe round) do not
        // ramp; their measurements start now. Origins a reload added start
        // unmeasured and not serving: they ramp like a rejoining origin
        // once their probes pass. Only this tick touches the averages: they
        // are taken out for it and put back at the end.
        let mut averages: Vec<Averages> = members
            .iter()
            .map(|o| {
                let kept = o
                    .load
                    .averages
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take();
                kept.unwrap_or_else(|| Averages::starting(first && o.is_serving(), now, None))
            })
            .collect();
        let taken: Vec<Tally> = members
            .iter()
            .map(|o| Tally::from(&o.load.samples))
            .collect();
        // What an origin is assumed to answer in before it has been
        // measured: like its peers (or, at start-up, like the whole pool),
        // so that its first few requests, which open connections, do not
        // decide its weight.
        let prior = lower_median(serving_latencies(&averages)).or_else(|| {
            let timed: u64 = taken.iter().map(|t| t.timed).sum();
            let sum: i64 = taken.iter().map(|t| t.log_micros).sum();
            (timed > 0).then(|| sum as f64 / LOG_SCALE / timed as f64)
        });
        for ((origin, average), taken) in members.iter().zip(averages.iter_mut()).zip(&taken) {
            let serving = origin.is_serving();
            if serving != average.serving {
                // Rejoining or leaving: what was measured before says little now.
                let ramp = !settings.slow_start.is_zero();
                *average = Averages::starting(serving, now, (serving && ramp).then_some(now));
            } else {
                fold(&settings, average, taken, prior, now);
            }
        }
        let reference = lower_median(serving_latencies(&averages));
        let mut changed = false;
        for (origin, mut average) in members.iter().zip(averages) {
            let factor = factor(&settings, &mut average, reference, now);
            origin.metrics.factor.set(factor);
            changed |= self
                .pool
                .set_factor(origin.id, (factor * f64::from(FULL_FACTOR)).round() as u32);
            *origin
                .load
                .averages
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(average);
        }
        if changed {
            self.metrics.publish_pool(&self.pool);
        }
    }
}

/// Moves an origin's averages towards what `taken` measured, each by the
/// weight of the time since its last measurement.
fn fold(
    settings: &Balancing,
    average: &mut Averages,
    taken: &Tally,
    prior: Option<f64>,
    now: Instant,
) {
    let window = settings.window.as_secs_f64();
    let weight = |since: Instant| 1.0 - (-(now - since).as_secs_f64() / window).exp();
    if taken.timed > 0 {
        let mean = taken.log_micros as f64 / LOG_SCALE / taken.timed as f64;
        let old = average.log_latency.or(prior).unwrap_or(mean);
        average.log_latency = Some(old + weight(average.latency_at) * (mean - old));
        average.latency_at = now;
    }
    if taken.outcomes > 0 {
        let ratio = taken.errors as f64 / taken.outcomes as f64;
        average.error_ratio += weight(average.errors_at) * (ratio - average.error_ratio);
        average.errors_at = now;
    }
}

/// An origin's factor now: adaptive, capped by its slow-start ramp.
fn factor(
    settings: &Balancing,
    average: &mut Averages,
    reference: Option<f64>,
    now: Instant,
) -> f64 {
    let min = settings.min_factor;
    if !average.serving {
        // The factor it will rejoin with.
        return match settings.slow_start.is_zero() {
            true => 1.0,
            false => min,
        };
    }
    let adaptive = match settings.adaptive {
        true => target_factor(average.log_latency, reference, average.error_ratio, min),
        false => 1.0,
    };
    let ramp = match average.ramp_from {
        Some(from) => {
            let progress = (now - from).as_secs_f64() / settings.slow_start.as_secs_f64();
            if progress >= 1.0 {
                average.ramp_from = None;
            }
            min + (1.0 - min) * progress.min(1.0)
        }
        None => 1.0,
    };
    adaptive.min(ramp)
}

/// The factor for an origin whose mean log-latency (µs) is `log_latency`,
/// against the pool's `reference`, with error ratio `error_ratio`.
fn target_factor(
    log_latency: Option<f64>,
    reference: Option<f64>,
    error_ratio: f64,
    min_factor: f64,
) -> f64 {
    let latency = match (log_latency, reference) {
        (Some(own), Some(reference)) => {
            let bound = TOLERANCE_RATIO * reference.exp() + TOLERANCE_FLOOR.as_secs_f64() * 1e6;
            (bound / own.exp()).min(1.0)
        }
        _ => 1.0,
    };
    let errors = (1.0 - ERROR_PENALTY * error_ratio).clamp(0.0, 1.0);
    (latency * errors).clamp(min_factor, 1.0)
}

/// The lower median: the middle value, or the lower of the two middle ones.
fn lower_median(values: impl Iterator<Item = f64>) -> Option<f64> {
    let mut values: Vec<f64> = values.collect();
    let middle = values.len().checked_sub(1)? / 2;
    // A selection, not a sort: this runs twice per tick over every origin.
    let (_, median, _) = values.select_nth_unstable_by(middle, f64::total_cmp);
    Some(*median)
}

/// Runs [`Adaptive::tick`] as a Pingora background service.
pub struct AdaptiveService(pub Arc<Adaptive>);

#[async_trait]
impl BackgroundService for AdaptiveService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            // Read each time: a reload may change the window.
            let every = self.0.tick_every();
            tokio::select! {
                _ = tokio::time::sleep(every) => self.0.tick(Instant::now()),
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_ms(ms: f64) -> Option<f64> {
        Some((ms * 1000.0).ln())
    }

    #[test]
    fn healthy_equal_origins_keep_factor_one() {
        assert_eq!(target_factor(log_ms(0.3), log_ms(0.25), 0.0, 0.1), 1.0);
        assert_eq!(target_factor(log_ms(1.2), log_ms(0.3), 0.0, 0.1), 1.0);
        assert_eq!(target_factor(None, log_ms(0.3), 0.0, 0.1), 1.0);
    }

    #[test]
    fn a_slow_origin_falls_to_the_floor_and_a_little_slow_one_a_little() {
        assert_eq!(target_factor(log_ms(20.3), log_ms(0.3), 0.0, 0.1), 0.1);
        let some = target_factor(log_ms(80.0), log_ms(60.0), 0.0, 0.1);
        assert!((0.9..1.0).contains(&some), "{some}");
    }

    #[test]
    fn errors_cost_weight_in_proportion() {
        let f = target_factor(log_ms(1.0), log_ms(1.0), 0.1, 0.1);
        assert!((f - 0.7).abs() < 1e-9, "{f}");
        assert_eq!(target_factor(log_ms(1.0), log_ms(1.0), 0.5, 0.1), 0.1);
    }

    #[test]
    fn the_reference_is_the_lower_median() {
        assert_eq!(lower_median([3.0, 1.0, 2.0].into_iter()), Some(2.0));
        assert_eq!(lower_median([5.0, 1.0].into_iter()), Some(1.0));
        assert_eq!(
            lower_median([4.0, 1.0, 3.0, 2.0, 9.0, 0.5].into_iter()),
            Some(2.0)
        );
        assert_eq!(lower_median(std::iter::empty()), None);
    }
}
