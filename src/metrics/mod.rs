//! Prometheus metrics: every series hothot exports, created once at start-up.
//!
//! Handles are resolved per origin when the proxy starts and passed to the
//! code that updates them, so the request path never hashes label values or
//! takes the label map's lock (`with_label_values` does both on every call).
//! The registry is our own, not the process-wide default one.

mod connections;
mod replication;
mod requests;
mod service;

use crate::pool::Pool;
pub use connections::ConnectionMetrics;
use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};
pub use replication::{PeerMetrics, ReplicationMetrics};
pub use requests::RequestCounters;
pub use service::MetricsApp;

/// Request latency buckets, in seconds: from half a millisecond to ten seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// All of hothot's metrics.
pub struct Metrics {
    registry: Registry,
    /// `hothot_requests_in_flight`: client requests being handled now.
    pub in_flight: IntGauge,
    /// `hothot_no_origin_total`: requests answered 503 because no origin was serving.
    pub no_origin: IntCounter,
    /// `hothot_shed_total`: requests answered 503 because every serving
    /// origin was at its capacity (`balancing.limit`).
    pub shed: IntCounter,
    /// `hothot_access_log_dropped_total`: lines the access log could not keep up with.
    pub access_log_dropped: IntCounter,
    /// `hothot_config_reloads_total{result="success"}` and `{result="failure"}`.
    reloads_success: IntCounter,
    reloads_failure: IntCounter,
    /// `hothot_config_last_reload_success_timestamp_seconds`.
    last_reload_success: Gauge,
    /// Indexed like the pool's origins; grows when a reload adds some.
    pub origins: boxcar::Vec<OriginMetrics>,
    /// The families the per-origin handles come from.
    families: OriginFamilies,
    pub replication: ReplicationMetrics,
    pub connections: ConnectionMetrics,
}

/// The labelled families behind [`OriginMetrics`].
struct OriginFamilies {
    requests: IntCounterVec,
    duration: HistogramVec,
    retries: IntCounterVec,
    checks: IntCounterVec,
    ejections: IntCounterVec,
    up: IntGaugeVec,
    drained: IntGaugeVec,
    serving_reads: IntGaugeVec,
    capacity: IntGaugeVec,
    weight: GaugeVec,
    factor: GaugeVec,
}

impl OriginFamilies {
    /// The handles of the origin `name` (an origin a reload adds back
    /// under an old name continues its counters).
    fn resolve(&self, name: &str) -> OriginMetrics {
        let metrics = OriginMetrics {
            requests: RequestCounters::new(&self.requests, name),
            duration: self.duration.with_label_values(&[name]),
            retries: self.retries.with_label_values(&[name]),
            probe_success: self.checks.with_label_values(&[name, "success"]),
            probe_failure: self.checks.with_label_values(&[name, "failure"]),
            ejections: self.ejections.with_label_values(&[name]),
            up: self.up.with_label_values(&[name]),
            drained: self.drained.with_label_values(&[name]),
            serving_reads: self.serving_reads.with_label_values(&[name]),
            capacity: self.capacity.with_label_values(&[name]),
            weight: self.weight.with_label_values(&[name]),
            factor: self.factor.with_label_values(&[name]),
        };
        // Capacity, like the other pool gauges, is set by publish_pool.
        metrics.factor.set(1.0);
        metrics
    }

    /// Drops the gauges of an origin a reload removed, so that it does
    /// not show as down for ever; its counters stay (their rates fall to 0).
    fn forget(&self, name: &str) {
        for family in [&self.up, &self.drained, &self.serving_reads, &self.capacity] {
            let _ = family.remove_label_values(&[name]);
        }
        for family in [&self.weight, &self.factor] {
            let _ = family.remove_label_values(&[name]);
        }
    }
}

/// The series of one origin, labels already resolved.
pub struct OriginMetrics {
    /// `hothot_requests_total{origin,method,code}`.
    pub requests: RequestCounters,
    /// `hothot_request_duration_seconds{origin}`: from request start to the last byte sent.
    pub duration: Histogram,
    /// `hothot_retries_total{origin}`: attempts on this origin that failed and were retried elsewhere.
    pub retries: IntCounter,
    /// `hothot_health_checks_total{origin,result="success"}`.
    pub probe_success: IntCounter,
    /// `hothot_health_checks_total{origin,result="failure"}`.
    pub probe_failure: IntCounter,
    /// `hothot_passive_ejections_total{origin}`.
    pub ejections: IntCounter,
    up: IntGauge,
    drained: IntGauge,
    serving_reads: IntGauge,
    capacity: IntGauge,
    weight: Gauge,
    /// `hothot_origin_factor{origin}`: the fraction of its capacity the origin is given now.
    pub factor: Gauge,
}

impl Metrics {
    pub fn new(pool: &Pool) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let in_flight = IntGauge::new(
            "hothot_requests_in_flight",
            "Client requests being handled now",
        )?;
        let no_origin = IntCounter::new(
            "hothot_no_origin_total",
            "Requests answered 503 because no origin was serving",
        )?;
        let shed = IntCounter::new(
            "hothot_shed_total",
            "Requests answered 503 with Retry-After because every serving origin was at its capacity (balancing.limit)",
        )?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(no_origin.clone()))?;
        registry.register(Box::new(shed.clone()))?;
        let access_log_dropped = IntCounter::new(
            "hothot_access_log_dropped_total",
            "Access log lines dropped because the log writer fell behind (16 MiB were waiting to be written)",
        )?;
        registry.register(Box::new(access_log_dropped.clone()))?;
        let reloads = IntCounterVec::new(
            Opts::new(
                "hothot_config_reloads_total",
                "Configuration reloads (SIGHUP), by result: success, or failure (refused, the running configuration stayed)",
            ),
            &["result"],
        )?;
        registry.register(Box::new(reloads.clone()))?;
        let last_reload_success = Gauge::new(
            "hothot_config_last_reload_success_timestamp_seconds",
            "Unix time the configuration in force was loaded (at start-up, then at each successful reload)",
        )?;
        registry.register(Box::new(last_reload_success.clone()))?;

        let requests = IntCounterVec::new(
            Opts::new(
                "hothot_requests_total",
                "Requests proxied, by origin, method and status",
            ),
            &["origin", "method", "code"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "hothot_request_duration_seconds",
                "Time to answer a request, by origin",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["origin"],
        )?;
        let up = IntGaugeVec::new(
            Opts::new(
                "hothot_origin_up",
                "1 when the origin takes new traffic (probed up, not ejected, not drained)",
            ),
            &["origin"],
        )?;
        let drained = IntGaugeVec::new(
            Opts::new(
                "hothot_origin_drained",
                "1 when an operator drained the origin through the admin API (no new traffic; writes still replicate to it)",
            ),
            &["origin"],
        )?;
        let serving_reads = IntGaugeVec::new(
            Opts::new(
                "hothot_origin_serving_reads",
                "1 when the origin takes reads: serving and not lagging more than replication.max_lag",
            ),
            &["origin"],
        )?;
        let capacity = IntGaugeVec::new(
            Opts::new(
                "hothot_origin_capacity",
                "Declared capacity of the origin, requests per second",
            ),
            &["origin"],
        )?;
        let weight = GaugeVec::new(
            Opts::new(
                "hothot_origin_weight",
                "Current share (0..1) of new traffic sent to the origin",
            ),
            &["origin"],
        )?;
        let factor = GaugeVec::new(
            Opts::new(
                "hothot_origin_factor",
                "Fraction (min_factor..1) of its declared capacity the origin is given now: adaptive weights and slow start",
            ),
            &["origin"],
        )?;
        let checks = IntCounterVec::new(
            Opts::new(
                "hothot_health_checks_total",
                "Active health probes, by origin and result",
            ),
            &["origin", "result"],
        )?;
        let retries = IntCounterVec::new(
            Opts::new(
                "hothot_retries_total",
                "Failed attempts on the origin that were retried on another",
            ),
            &["origin"],
        )?;
        let ejections = IntCounterVec::new(
            Opts::new(
                "hothot_passive_ejections_total",
                "Times live-traffic failures ejected the origin",
            ),
            &["origin"],
        )?;
        for collector in [&requests, &checks, &retries, &ejections] {
            registry.register(Box::new(collector.clone()))?;
        }
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(up.clone()))?;
        registry.register(Box::new(drained.clone()))?;
        registry.register(Box::new(serving_reads.clone()))?;
        registry.register(Box::new(capacity.clone()))?;
        registry.register(Box::new(weight.clone()))?;
        registry.register(Box::new(factor.clone()))?;

        let families = OriginFamilies {
            requests,
            duration,
            retries,
            checks,
            ejections,
            up,
            drained,
            serving_reads,
            capacity,
            weight,
            factor,
        };
        let replication = ReplicationMetrics::new(&registry)?;
        let connections = ConnectionMetrics::new(&registry)?;
        let metrics = Metrics {
            registry,
            in_flight,
            no_origin,
            shed,
            access_log_dropped,
            reloads_success: reloads.with_label_values(&["success"]),
            reloads_failure: reloads.with_label_values(&["failure"]),
            last_reload_success,
            origins: boxcar::Vec::with_capacity(pool.len()),
            families,
            replication,
            connections,
        };
        metrics.add_new_origins(pool);
        Ok(metrics)
    }

    /// Series for the origins the pool gained (at start-up, or a reload
    /// added them), indexed like the pool.
    pub fn add_new_origins(&self, pool: &Pool) {
        for index in self.origins.count()..pool.len() {
            let name = pool.origin(index).map_or("", |o| o.name.as_str());
            self.origins.push(self.families.resolve(name));
            self.replication.add_peer(name);
        }
        self.publish_pool(pool);
    }

    /// A reload removed the origin `name` (and kept no origin of that name).
    pub fn forget_origin(&self, name: &str) {
        self.families.forget(name);
        self.replication.forget_peer(name);
    }

    /// Sets `hothot_origin_up`, `_drained`, `_serving_reads`, `_capacity`
    /// and `_weight` from the pool's current state.
    pub fn publish_pool(&self, pool: &Pool) {
        let shares = pool.shares();
        for (i, metrics) in self.origins.iter() {
            let Some(share) = shares.get(i).copied().filter(|_| pool.is_member(i)) else {
                continue;
            };
            metrics.capacity.set(i64::from(pool.capacity(i)));
            metrics.up.set(i64::from(pool.is_serving(i)));
            metrics.drained.set(i64::from(pool.is_drained(i)));
            metrics
                .serving_reads
                .set(i64::from(pool.is_serving_reads(i)));
            metrics.weight.set(share);
        }
    }

    /// A configuration came into force at `at` (start-up or a reload).
    pub fn config_reloaded(&self, at: std::time::SystemTime) {
        let seconds = at
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        if self.last_reload_success.get() > 0.0 {
            self.reloads_success.inc();
        }
        self.last_reload_success.set(seconds);
    }

    /// A reload was refused.
    pub fn reload_failed(&self) {
        self.reloads_failure.inc();
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> Vec<u8> {
        use prometheus::Encoder;
        let mut out = Vec::new();
        if let Err(e) = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            log::error!("metrics: encoding failed: {e}");
        }
        out
    }
}

/// Keeps `hothot_requests_in_flight` right however a request ends.
pub struct InFlight(IntGauge);

impl InFlight {
    pub fn start(gauge: &IntGauge) -> Self {
        gauge.inc();
        InFlight(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}
