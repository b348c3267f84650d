//! What a reload changes in replication: origins joining and leaving the
//! pool, and the settings that apply to the next write or delivery.
//!
//! An origin a reload adds starts from now: it receives every write
//! numbered after it joined, and nothing from before (it is expected to
//! hold the pool's data already, as a replica brought up from a copy does).
//! An origin a reload removes has its backlog dropped, with a log line and
//! `hothot_replication_dropped_total{peer}`, as at a restart that no longer
//! lists it; the journal counts those writes as settled for it. A reload's
//! departures and arrivals happen together under the sequence lock, between
//! two writes: every write's journal record names exactly the origins whose
//! backlogs it joined, and no write falls between an origin leaving and its
//! replacement joining.

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

    /// A reload's change of origins, in one step between two writes: the
    /// origins at `leaving` (retired from the pool) drop their backlogs,
    /// counted and logged, and their lanes stop; the origins the pool
    /// gained get backlogs that take every write from now on.
    pub fn change_origins(&self, leaving: &[usize]) {
        let mut joining = Vec::new();
        for index in self.sequencer.queues().count()..self.pool.len() {
            let name = self.origin_name(index).to_owned();
            let Some(peer) = self.metrics.replication.peers.get(index) else {
                log::error!("replication: no metrics for origin {name}; not replicating to it");
                break;
            };
            joining.push((name, peer.pending.clone()));
        }
        let max_pending = self.config().max_pending;
        let dropped = self.sequencer.change(leaving, &joining, max_pending);
        for (&index, dropped) in leaving.iter().zip(dropped) {
            let name = self.origin_name(index);
            if dropped > 0 {
                let counter = &self.metrics.replication.dropped;
                counter.with_label_values(&[name]).inc_by(dropped as u64);
                log::warn!(
                    "replication: origin {name} left the pool; {dropped} writes it had not \
                     received are dropped for it"
                );
            }
        }
        for (name, _) in &joining {
            log::info!("replication: origin {name} joined; it receives writes from now on");
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
