//! What a reload changes in replication: origins joining and leaving the
//! pool, and the settings that apply to the next write or delivery.
//!
//! An origin a reload adds starts from now: it receives every write
//! numbered after it joined, and nothing from before (it is expected to
//! hold the pool's data already, as a replica brought up from a copy does).
//! An origin a reload removes has its backlog dropped, with a log line and
//! `hothot_replication_dropped_total{peer}`, as at a restart that no longer
//! lists it; the journal counts those writes as settled for it. Both happen
//! under the sequence lock, between two writes, so that every write's
//! journal record names exactly the origins whose backlogs it joined.

use super::Replicator;
use crate::config::ReplicationConfig;
use crate::metrics::PeerMetrics;
use std::sync::Arc;

impl Replicator {
    /// A reload's settings (only keys that may change live differ): the
    /// next write, delivery and verify sample read them.
    pub fn set_config(&self, config: ReplicationConfig) {
        for (_, queue) in self.sequencer.queues().iter() {
            queue.set_max_pending(config.max_pending);
        }
        self.metrics.publish_replication_settings(&config);
        if let Some(journal) = self.sequencer.journal() {
            journal.set_max_bytes(config.journal.max_bytes);
        }
        self.verifier.set_sample(match config.mode {
            crate::config::ReplicationMode::Off => 0.0,
            _ => config.verify_sample,
        });
        self.config.store(Arc::new(config));
    }

    /// Backlogs for the origins the pool gained (a reload added them).
    pub fn add_new_origins(&self) {
        let mut added = false;
        for index in self.sequencer.queues().count()..self.pool.len() {
            let name = self.origin_name(index).to_owned();
            let Some(peer) = self.metrics.replication.peers.get(index) else {
                log::error!("replication: no metrics for origin {name}; not replicating to it");
                return;
            };
            let max_pending = self.config().max_pending;
            let joined = self
                .sequencer
                .join(&name, max_pending, peer.pending.clone());
            debug_assert_eq!(joined, index, "backlogs are indexed like the pool");
            log::info!("replication: origin {name} joined; it receives writes from now on");
            added = true;
        }
        if added {
            self.membership.notify_one();
        }
    }

    /// The origin at `index` left the pool (a reload removed it): its
    /// backlog is dropped and counted, and its lanes stop.
    pub fn retire_origin(&self, index: usize) {
        let name = self.origin_name(index).to_owned();
        let dropped = self.sequencer.retire(index);
        if dropped > 0 {
            self.metrics
                .replication
                .dropped
                .with_label_values(&[&name])
                .inc_by(dropped as u64);
            log::warn!(
                "replication: origin {name} left the pool; {dropped} writes it had not \
                 received are dropped for it"
            );
        }
        self.membership.notify_one();
    }

    /// Woken when origins joined or left.
    pub(super) async fn membership_changed(&self) {
        self.membership.notified().await;
    }

    /// Runs `update` on the series of the peer at `index`.
    pub(super) fn peer_metrics(&self, index: usize, update: impl FnOnce(&PeerMetrics)) {
        if let Some(peer) = self.metrics.replication.peers.get(index) {
            update(peer);
        }
    }
}
