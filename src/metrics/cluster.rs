//! The cluster's series (#25), exported only by an instance with a
//! `cluster` section (an alert on `hothot_cluster_connected == 0` must not
//! fire for a single instance).

use prometheus::{Histogram, HistogramOpts, IntGauge, IntGaugeVec, Opts, Registry};

pub struct ClusterMetrics {
    /// `hothot_cluster_append_seconds`: how long etcd took to take a write.
    pub append_seconds: Histogram,
    /// `hothot_cluster_connected`: 1 while etcd answers this instance.
    pub connected: IntGauge,
    /// `hothot_cluster_leases{origin}`: 1 for each origin whose deliveries
    /// this instance holds.
    pub leases: IntGaugeVec,
}

impl ClusterMetrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let buckets = vec![
            0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        ];
        Ok(ClusterMetrics {
            append_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "hothot_cluster_append_seconds",
                    "Time for etcd to take one write into the shared order (its retries included)",
                )
                .buckets(buckets),
            )?,
            connected: IntGauge::new(
                "hothot_cluster_connected",
                "1 while this instance reaches etcd (its last request succeeded), else 0",
            )?,
            leases: IntGaugeVec::new(
                Opts::new(
                    "hothot_cluster_leases",
                    "1 for each origin whose deliveries this instance holds (its etcd lease), else 0",
                ),
                &["origin"],
            )?,
        })
    }

    /// Exports the series (once, at start-up of an instance in a cluster).
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.append_seconds.clone()))?;
        registry.register(Box::new(self.connected.clone()))?;
        registry.register(Box::new(self.leases.clone()))
    }
}
