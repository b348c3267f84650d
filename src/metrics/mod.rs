//! Prometheus metrics: every series hothot exports, created once at start-up.
//!
//! Handles are resolved per origin when the proxy starts and passed to the
//! code that updates them, so the request path never hashes label values or
//! takes the label map's lock (`with_label_values` does both on every call).
//! The registry is our own, not the process-wide default one.

mod cluster;
mod connections;
mod endpoint;
mod origin;
mod process;
mod replication;
mod requests;

use crate::pool::Pool;
pub use cluster::ClusterMetrics;
pub use connections::{ConnectionMetrics, ListenerConnections};
pub use endpoint::MetricsApp;
use origin::OriginFamilies;
pub use origin::{OriginMetrics, Unrouted};
use prometheus::{Gauge, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
pub use replication::{PeerMetrics, ReplicationMetrics};
pub use requests::{Kind, RequestCounters};

/// A gauge family with `labels`, registered in `registry`.
fn registered_gauges(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntGaugeVec, prometheus::Error> {
    let gauges = IntGaugeVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(gauges.clone()))?;
    Ok(gauges)
}

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
    /// The families the per-origin handles come from.
    families: OriginFamilies,
    /// Answers given before an origin was picked.
    pub unrouted: Unrouted,
    pub replication: ReplicationMetrics,
    pub connections: ConnectionMetrics,
    /// The side listeners' connections (admin, metrics).
    pub listeners: ListenerConnections,
    /// Exported once [`Metrics::enable_cluster`] is called.
    pub cluster: ClusterMetrics,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
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

        let families = OriginFamilies::new(&registry)?;
        let build_info = IntGaugeVec::new(
            Opts::new(
                "hothot_build_info",
                "Always 1; the version of hothot running, as a label",
            ),
            &["version"],
        )?;
        registry.register(Box::new(build_info.clone()))?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        // process_cpu_seconds_total, process_resident_memory_bytes,
        // process_open_fds, process_max_fds, ... of this process.
        registry.register(Box::new(process::ProcessMetrics::for_self()))?;
        let replication = ReplicationMetrics::new(&registry)?;
        let connections = ConnectionMetrics::new(&registry)?;
        let listeners = ListenerConnections::new(&registry)?;
        Ok(Metrics {
            registry,
            in_flight,
            no_origin,
            shed,
            access_log_dropped,
            reloads_success: reloads.with_label_values(&["success"]),
            reloads_failure: reloads.with_label_values(&["failure"]),
            last_reload_success,
            unrouted: families.unrouted(),
            families,
            replication,
            connections,
            listeners,
            cluster: ClusterMetrics::new()?,
        })
    }

    /// This instance is part of a cluster: its series are exported.
    pub fn enable_cluster(&self) -> Result<(), prometheus::Error> {
        self.cluster.register(&self.registry)
    }

    /// The series of an origin joining the pool (an origin a reload adds
    /// back under an old name continues its counters).
    pub fn resolve_origin(&self, name: &str) -> OriginMetrics {
        self.families
            .resolve(name, self.replication.resolve_peer(name))
    }

    /// A reload removed the origin `name`: its gauges leave `/metrics`, so
    /// that it does not show as down for ever; its counters stay.
    pub fn forget_origin(&self, name: &str) {
        self.families.forget(name);
        self.replication.forget_peer(name);
    }

    /// Sets `hothot_origin_up`, `_drained`, `_out_of_sync`, `_detached`, `_serving_reads`, `_capacity`
    /// and `_weight` from the pool's current state.
    pub fn publish_pool(&self, pool: &Pool) {
        for (id, share) in pool.shares() {
            let Some(origin) = pool.get(id) else {
                continue;
            };
            let metrics = &origin.metrics;
            metrics.capacity.set(i64::from(origin.capacity()));
            metrics.up.set(i64::from(origin.is_serving()));
            metrics.drained.set(i64::from(origin.is_drained()));
            let missed = origin.missed_write().is_some();
            metrics.out_of_sync.set(i64::from(missed));
            let detached = matches!(origin.standing(), crate::pool::Standing::Detached(_));
            metrics.detached.set(i64::from(detached));
            metrics
                .serving_reads
                .set(i64::from(origin.is_serving_reads()));
            metrics.weight.set(share);
        }
    }

    /// `hothot_replication_max_lag_seconds`, `_retain_bytes`,
    /// `_retain_age_seconds` and `hothot_journal_max_bytes` (0 when
    /// replication is off).
    pub fn publish_replication_settings(&self, config: &crate::config::ReplicationConfig) {
        let replication = &self.replication;
        replication.max_lag.set(config.max_lag.as_secs_f64());
        let retention = &config.retention;
        (replication.retain_bytes).set(i64::try_from(retention.bytes).unwrap_or(i64::MAX));
        (replication.retain_age).set(retention.age.as_secs_f64());
        let max_bytes = match config.mode {
            crate::config::ReplicationMode::Off => 0,
            _ => i64::try_from(config.journal.max_bytes).unwrap_or(i64::MAX),
        };
        replication.journal_max_bytes.set(max_bytes);
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
