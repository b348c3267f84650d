//! The `balancing` section: how declared capacities turn into traffic.
//! Adaptive factors (on by default), slow start (30s) and capacity as a
//! limit (off by default); see [`crate::adaptive`] and [`crate::limit`].

use super::units::HumanDuration;
use super::ConfigError;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalancingSection {
    #[serde(default)]
    pub adaptive: AdaptiveSection,
    pub slow_start: Option<HumanDuration>,
    #[serde(default)]
    pub limit: LimitSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveSection {
    pub enabled: Option<bool>,
    pub window: Option<HumanDuration>,
    pub min_factor: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSection {
    pub mode: Option<LimitMode>,
    pub queue_timeout: Option<HumanDuration>,
}

/// What happens to a request whose origins are all at their capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitMode {
    /// Capacity only sets shares; an origin takes whatever comes.
    #[default]
    Off,
    /// Answered 503 with `Retry-After: 1` at once.
    Shed,
    /// Waits up to `queue_timeout` for room, then is shed.
    Queue,
}

/// Validated balancing settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Balancing {
    /// Weights follow the origins' latency and errors. Default true.
    pub adaptive: bool,
    /// Time constant of the latency and error averages. Default 10s.
    pub window: Duration,
    /// The lowest fraction of its capacity an up origin is given. Default 0.1.
    pub min_factor: f64,
    /// How long an origin that (re)joins takes to ramp from `min_factor` to
    /// its full weight; zero turns slow start off. Default 30s (nginx
    /// Plus's and HAProxy's `slowstart` are off by default; a cold replica
    /// of a web backend is the common case here).
    pub slow_start: Duration,
    pub limit: LimitMode,
    /// How long a request may wait for room under `limit: queue`. Default 100ms.
    pub queue_timeout: Duration,
}

impl Default for Balancing {
    fn default() -> Self {
        Balancing {
            adaptive: true,
            window: Duration::from_secs(10),
            min_factor: 0.1,
            slow_start: Duration::from_secs(30),
            limit: LimitMode::Off,
            queue_timeout: Duration::from_millis(100),
        }
    }
}

/// The shortest window: the factors are recomputed every 100 ms at most,
/// and a shorter average would follow single slow requests.
const MIN_WINDOW: Duration = Duration::from_millis(500);
/// Anything longer is a mistake in units, and would take hours to react.
const MAX_WINDOW: Duration = Duration::from_secs(3600);

pub fn validate(
    section: BalancingSection,
    warnings: &mut Vec<String>,
) -> Result<Balancing, ConfigError> {
    let defaults = Balancing::default();
    let window = section.adaptive.window.map_or(defaults.window, |d| d.0);
    if !(MIN_WINDOW..=MAX_WINDOW).contains(&window) {
        return Err(ConfigError::invalid(
            "balancing.adaptive.window",
            "must be between 500ms and 1h",
        ));
    }
    let min_factor = section.adaptive.min_factor.unwrap_or(defaults.min_factor);
    // NaN is outside every range, so it is refused too.
    if !(0.01..=1.0).contains(&min_factor) {
        return Err(ConfigError::invalid(
            "balancing.adaptive.min_factor",
            "must be between 0.01 and 1 (a fraction of the declared capacity)",
        ));
    }
    let slow_start = section.slow_start.map_or(defaults.slow_start, |d| d.0);
    if slow_start > MAX_WINDOW {
        return Err(ConfigError::invalid(
            "balancing.slow_start",
            "must be at most 1h (0s turns it off)",
        ));
    }
    let queue_timeout = section
        .limit
        .queue_timeout
        .map_or(defaults.queue_timeout, |d| d.0);
    if queue_timeout.is_zero() || queue_timeout > Duration::from_secs(60) {
        return Err(ConfigError::invalid(
            "balancing.limit.queue_timeout",
            "must be longer than 0 and at most 60s",
        ));
    }
    let limit = section.limit.mode.unwrap_or_default();
    if section.limit.queue_timeout.is_some() && limit != LimitMode::Queue {
        warnings.push(
            "balancing.limit.queue_timeout has no effect unless balancing.limit.mode is queue"
                .into(),
        );
    }
    let adaptive = section.adaptive.enabled.unwrap_or(defaults.adaptive);
    if section.adaptive.window.is_some() && !adaptive {
        warnings.push(
            "balancing.adaptive.window has no effect with balancing.adaptive.enabled: false".into(),
        );
    }
    Ok(Balancing {
        adaptive,
        window,
        min_factor,
        slow_start,
        limit,
        queue_timeout,
    })
}
