//! Replication series, resolved per peer once at start-up.

use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
};
use prometheus::{IntGauge, IntGaugeVec, Opts, Registry};

/// From a primary's answer to a peer's acknowledgement, in seconds.
const SYNC_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

pub struct ReplicationMetrics {
    families: PeerFamilies,
    /// `hothot_replication_quorum_timeouts_total`.
    pub quorum_timeouts: IntCounter,
    /// `hothot_replication_dropped_total{peer}`: backlog of a peer removed from the pool.
    pub dropped: IntCounterVec,
    /// `hothot_journal_bytes`: bytes of the records the journal holds.
    pub journal_bytes: IntGauge,
    /// `hothot_journal_disk_bytes`: bytes its segment files take on disk.
    pub journal_disk_bytes: IntGauge,
    /// `hothot_journal_max_bytes`: `journal.max_bytes`.
    pub journal_max_bytes: IntGauge,
    /// `hothot_replication_max_lag_seconds`: `replication.max_lag`.
    pub max_lag: Gauge,
    /// `hothot_replication_verified_total{result="match"}`: verify samples
    /// every origin answered alike.
    pub verified_match: IntCounter,
    /// `hothot_replication_verified_total{result="mismatch"}`.
    pub verified_mismatch: IntCounter,
    /// `hothot_replication_retain_bytes`: `replication.retain.bytes`.
    pub retain_bytes: IntGauge,
    /// `hothot_replication_retain_age_seconds`: `replication.retain.age`.
    pub retain_age: Gauge,
    /// `hothot_resync_total{result}`: resyncs that ended (`done`,
    /// `aborted`, `failed`, `timed_out`).
    pub resyncs: IntCounterVec,
}

/// The labelled families behind [`PeerMetrics`].
struct PeerFamilies {
    total: IntCounterVec,
    pending: IntGaugeVec,
    backlog_bytes: IntGaugeVec,
    applied_sequence: IntGaugeVec,
    lag: GaugeVec,
    sync: HistogramVec,
    divergence: IntCounterVec,
}

/// `hothot_replication_*{peer}` for one peer.
pub struct PeerMetrics {
    /// A copy the peer acknowledged with 2xx.
    pub delivered: IntCounter,
    /// An attempt that failed (connection, timeout, 5xx) and will be retried.
    pub retried: IntCounter,
    /// A copy the peer refused with 4xx: permanent, not retried.
    pub failed: IntCounter,
    /// A write refused before reaching any origin (backlog full, or oversize with `reject`).
    pub rejected: IntCounter,
    /// A write not replicated on purpose (oversize with `pass`, primary not 2xx with `success`).
    pub skipped: IntCounter,
    /// `hothot_replication_pending`: undelivered writes.
    pub pending: IntGauge,
    /// `hothot_replication_backlog_bytes`: bytes of its undelivered writes.
    pub backlog_bytes: IntGauge,
    /// `hothot_replication_applied_sequence`: every write numbered at or
    /// below it is settled at the peer.
    pub applied_sequence: IntGauge,
    /// `hothot_replication_lag_seconds`: age of the oldest undelivered write.
    pub lag: Gauge,
    /// `hothot_replication_sync_seconds`.
    pub sync: Histogram,
    /// `hothot_replication_divergence_total{origin}`: verify reads where the
    /// origin's answer differed from the others'.
    pub divergence: IntCounter,
    /// `hothot_replication_dropped_total{peer}`: its backlog, dropped when
    /// it left the pool.
    pub dropped: IntCounter,
}

impl ReplicationMetrics {
    /// The series, with no peer yet ([`ReplicationMetrics::resolve_peer`]).
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let total = IntCounterVec::new(
            Opts::new(
                "hothot_replication_total",
                "Replicated copies, by peer and outcome",
            ),
            &["peer", "outcome"],
        )?;
        let pending = IntGaugeVec::new(
            Opts::new(
                "hothot_replication_pending",
                "Writes not yet delivered to the peer",
            ),
            &["peer"],
        )?;
        let backlog_bytes = super::registered_gauges(
            registry,
            "hothot_replication_backlog_bytes",
            "Bytes of the writes not yet delivered to the peer, as sent (request heads and bodies)",
            &["peer"],
        )?;
        let applied_sequence = super::registered_gauges(
            registry,
            "hothot_replication_applied_sequence",
            "Every write numbered at or below this is settled at the peer (its place in the sequence)",
            &["peer"],
        )?;
        let lag = GaugeVec::new(
            Opts::new(
                "hothot_replication_lag_seconds",
                "Age of the oldest write not yet delivered to the peer (its delay window)",
            ),
            &["peer"],
        )?;
        let sync = HistogramVec::new(
            HistogramOpts::new(
                "hothot_replication_sync_seconds",
                "Time from a write's acceptance (its sequencing under total and key order, \
                 the primary's answer under version order) to the origin's answer",
            )
            .buckets(SYNC_BUCKETS.to_vec()),
            &["peer"],
        )?;
        let quorum_timeouts = IntCounter::new(
            "hothot_replication_quorum_timeouts_total",
            "Sync writes whose quorum did not acknowledge within replication.timeout",
        )?;
        registry.register(Box::new(total.clone()))?;
        registry.register(Box::new(pending.clone()))?;
        registry.register(Box::new(lag.clone()))?;
        registry.register(Box::new(sync.clone()))?;
        registry.register(Box::new(quorum_timeouts.clone()))?;
        let divergence = IntCounterVec::new(
            Opts::new(
                "hothot_replication_divergence_total",
                "Verify reads (replication.verify.sample) where the origin's answer (status, body hash) differed from the other origins'",
            ),
            &["origin"],
        )?;
        let verified = IntCounterVec::new(
            Opts::new(
                "hothot_replication_verified_total",
                "Sampled writes read back from every origin and compared, by result (match, mismatch)",
            ),
            &["result"],
        )?;
        registry.register(Box::new(divergence.clone()))?;
        registry.register(Box::new(verified.clone()))?;
        let dropped = IntCounterVec::new(
            Opts::new(
                "hothot_replication_dropped_total",
                "Pending writes dropped for a peer: it left the pool (removed by a reload, or missing from the configuration at start-up) or was detached (replication.retain, detach_after, a resync)",
            ),
            &["peer"],
        )?;
        let journal_bytes = IntGauge::new(
            "hothot_journal_bytes",
            "Bytes of the records (writes and acknowledgements) in the replication journal's segments; journal.max_bytes applies to this",
        )?;
        let journal_disk_bytes = IntGauge::new(
            "hothot_journal_disk_bytes",
            "Bytes the replication journal's segment files take on disk (each segment is allocated whole when created, so this exceeds hothot_journal_bytes)",
        )?;
        let journal_max_bytes = IntGauge::new(
            "hothot_journal_max_bytes",
            "replication.journal.max_bytes: at this hothot_journal_bytes new writes are refused with 503",
        )?;
        let max_lag = Gauge::new(
            "hothot_replication_max_lag_seconds",
            "replication.max_lag: a peer whose hothot_replication_lag_seconds exceeds it takes no reads",
        )?;
        registry.register(Box::new(dropped.clone()))?;
        for gauge in [&journal_bytes, &journal_disk_bytes, &journal_max_bytes] {
            registry.register(Box::new(gauge.clone()))?;
        }
        registry.register(Box::new(max_lag.clone()))?;
        let resyncs = IntCounterVec::new(
            Opts::new(
                "hothot_resync_total",
                "Resyncs of an origin from a donor that ended, by result (done, aborted, failed, timed_out)",
            ),
            &["result"],
        )?;
        registry.register(Box::new(resyncs.clone()))?;
        let retain_bytes = IntGauge::new(
            "hothot_replication_retain_bytes",
            "replication.retain.bytes: a peer whose hothot_replication_backlog_bytes exceeds it is detached",
        )?;
        let retain_age = Gauge::new(
            "hothot_replication_retain_age_seconds",
            "replication.retain.age: a peer whose hothot_replication_lag_seconds exceeds it is detached",
        )?;
        registry.register(Box::new(retain_bytes.clone()))?;
        registry.register(Box::new(retain_age.clone()))?;
        for result in ["done", "aborted", "failed", "timed_out"] {
            resyncs.with_label_values(&[result]);
        }
        Ok(ReplicationMetrics {
            resyncs,
            retain_bytes,
            retain_age,
            families: PeerFamilies {
                total,
                pending,
                backlog_bytes,
                applied_sequence,
                lag,
                sync,
                divergence,
            },
            quorum_timeouts,
            dropped,
            journal_bytes,
            journal_disk_bytes,
            journal_max_bytes,
            max_lag,
            verified_match: verified.with_label_values(&["match"]),
            verified_mismatch: verified.with_label_values(&["mismatch"]),
        })
    }

    /// The series of a peer joining the pool.
    pub fn resolve_peer(&self, peer: &str) -> PeerMetrics {
        let families = &self.families;
        PeerMetrics {
            // Exists at 0, so that an alert on its increase sees the first drop.
            dropped: self.dropped.with_label_values(&[peer]),
            delivered: families.total.with_label_values(&[peer, "delivered"]),
            retried: families.total.with_label_values(&[peer, "retried"]),
            failed: families.total.with_label_values(&[peer, "failed"]),
            rejected: families.total.with_label_values(&[peer, "rejected"]),
            skipped: families.total.with_label_values(&[peer, "skipped"]),
            pending: families.pending.with_label_values(&[peer]),
            backlog_bytes: families.backlog_bytes.with_label_values(&[peer]),
            applied_sequence: families.applied_sequence.with_label_values(&[peer]),
            lag: families.lag.with_label_values(&[peer]),
            sync: families.sync.with_label_values(&[peer]),
            divergence: families.divergence.with_label_values(&[peer]),
        }
    }

    /// Drops the gauges of a peer a reload removed; counters stay.
    pub fn forget_peer(&self, peer: &str) {
        let families = &self.families;
        for gauge in [
            &families.pending,
            &families.backlog_bytes,
            &families.applied_sequence,
        ] {
            let _ = gauge.remove_label_values(&[peer]);
        }
        let _ = self.families.lag.remove_label_values(&[peer]);
    }
}
