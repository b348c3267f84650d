//! The series of each origin: requests and answers, latency, probes,
//! ejections and the pool gauges, resolved once per origin.

use super::requests::{Kind, ResponseCounters};
use super::{PeerMetrics, RequestCounters};
use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

/// Request latency buckets, in seconds: from half a millisecond to two
/// minutes (past the default 30 s read timeout, and past writes that wait
/// for a sync quorum).
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0,
];

/// The labelled families behind [`OriginMetrics`].
pub(super) struct OriginFamilies {
    requests: IntCounterVec,
    responses: IntCounterVec,
    duration: HistogramVec,
    retries: IntCounterVec,
    checks: IntCounterVec,
    ejections: IntCounterVec,
    up: IntGaugeVec,
    drained: IntGaugeVec,
    out_of_sync: IntGaugeVec,
    detached: IntGaugeVec,
    serving_reads: IntGaugeVec,
    capacity: IntGaugeVec,
    weight: GaugeVec,
    factor: GaugeVec,
}

impl OriginFamilies {
    /// The handles of the origin `name` (an origin a reload adds back
    /// under an old name continues its counters), with its replication
    /// series.
    pub(super) fn resolve(&self, name: &str, replication: PeerMetrics) -> OriginMetrics {
        let metrics = OriginMetrics {
            replication,
            requests: RequestCounters::new(&self.requests, name),
            responses: ResponseCounters::new(&self.responses, name),
            duration: Kind::ALL.map(|kind| self.duration.with_label_values(&[name, kind.label()])),
            retries: self.retries.with_label_values(&[name]),
            probe_success: self.checks.with_label_values(&[name, "success"]),
            probe_failure: self.checks.with_label_values(&[name, "failure"]),
            ejections: self.ejections.with_label_values(&[name]),
            up: self.up.with_label_values(&[name]),
            drained: self.drained.with_label_values(&[name]),
            out_of_sync: self.out_of_sync.with_label_values(&[name]),
            detached: self.detached.with_label_values(&[name]),
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
    pub(super) fn forget(&self, name: &str) {
        let gauges = [&self.up, &self.drained, &self.out_of_sync, &self.detached];
        for family in gauges
            .into_iter()
            .chain([&self.serving_reads, &self.capacity])
        {
            let _ = family.remove_label_values(&[name]);
        }
        for family in [&self.weight, &self.factor] {
            let _ = family.remove_label_values(&[name]);
        }
    }
}

/// The series of one origin, labels already resolved (a part of its
/// [`crate::pool::Origin`]).
pub struct OriginMetrics {
    /// `hothot_replication_*{peer}`: its copies of the writes.
    pub replication: PeerMetrics,
    /// `hothot_requests_total{origin,method,code}`.
    pub requests: RequestCounters,
    /// `hothot_responses_total{origin,kind,class}`.
    pub responses: ResponseCounters,
    /// `hothot_request_duration_seconds{origin,kind}`, by [`Kind`]: from
    /// request start to the last byte sent.
    pub duration: [Histogram; Kind::ALL.len()],
    /// `hothot_retries_total{origin}`: attempts on this origin that failed and were retried elsewhere.
    pub retries: IntCounter,
    /// `hothot_health_checks_total{origin,result="success"}`.
    pub probe_success: IntCounter,
    /// `hothot_health_checks_total{origin,result="failure"}`.
    pub probe_failure: IntCounter,
    /// `hothot_passive_ejections_total{origin}`.
    pub ejections: IntCounter,
    pub(super) up: IntGauge,
    pub(super) drained: IntGauge,
    pub(super) out_of_sync: IntGauge,
    pub(super) detached: IntGauge,
    pub(super) serving_reads: IntGauge,
    pub(super) capacity: IntGauge,
    pub(super) weight: Gauge,
    /// `hothot_origin_factor{origin}`: the fraction of its capacity the origin is given now.
    pub factor: Gauge,
}

impl OriginFamilies {
    /// Creates and registers the families.
    pub(super) fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "hothot_requests_total",
                "Client requests answered, by the origin of the last attempt (empty when hothot answered before picking one: no origin serving, shed, refused), method (OTHER for unlisted ones) and status sent to the client (499: the client left first)",
            ),
            &["origin", "method", "code"],
        )?;
        let responses = IntCounterVec::new(
            Opts::new(
                "hothot_responses_total",
                "Client requests answered, by the origin of the last attempt (empty when hothot answered before picking one), kind (read: GET, HEAD, OPTIONS, TRACE and any method not in replication.methods; write: a method in replication.methods, replicated or not) and class of the status sent to the client (none: the client left before any answer); every series exists from start-up",
            ),
            &["origin", "kind", "class"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "hothot_request_duration_seconds",
                "Time from a client request's arrival to the end of its answer, by the origin of the last attempt and kind (read, write: writes include replication's journal and quorum waits)",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["origin", "kind"],
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
        let out_of_sync = IntGaugeVec::new(
            Opts::new(
                "hothot_origin_out_of_sync",
                "1 when the origin was detached for failing a write its peers applied (replication.detach_after): out of service until a resync",
            ),
            &["origin"],
        )?;
        let detached = IntGaugeVec::new(
            Opts::new(
                "hothot_origin_detached",
                "1 when the origin is detached (too far behind for replication.retain, failing a write its peers applied, or joined without history): out of service until a resync",
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
        for collector in [&requests, &responses, &checks, &retries, &ejections] {
            registry.register(Box::new(collector.clone()))?;
        }
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(up.clone()))?;
        registry.register(Box::new(drained.clone()))?;
        registry.register(Box::new(out_of_sync.clone()))?;
        registry.register(Box::new(detached.clone()))?;
        registry.register(Box::new(serving_reads.clone()))?;
        registry.register(Box::new(capacity.clone()))?;
        registry.register(Box::new(weight.clone()))?;
        registry.register(Box::new(factor.clone()))?;

        Ok(OriginFamilies {
            requests,
            responses,
            duration,
            retries,
            checks,
            ejections,
            up,
            drained,
            out_of_sync,
            detached,
            serving_reads,
            capacity,
            weight,
            factor,
        })
    }
}

/// Answers hothot gave before picking an origin (no origin serving, shed,
/// a refused request): counted with an empty `origin`.
pub struct Unrouted {
    pub requests: RequestCounters,
    pub responses: ResponseCounters,
}

impl OriginFamilies {
    pub(super) fn unrouted(&self) -> Unrouted {
        Unrouted {
            requests: RequestCounters::new(&self.requests, ""),
            responses: ResponseCounters::new(&self.responses, ""),
        }
    }
}
