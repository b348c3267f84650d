//! What a reload changes in replication: origins joining and leaving the
//! pool, and the settings that apply to the next write or delivery.
//!
//! An origin a reload adds to a pool that has history starts detached and
//! waits for a resync (see [`super::resync`]), unless its entry says
//! `join: now`: then it receives every write numbered after it joined, and
//! nothing from before (a cache, a stateless backend).
//! An origin a reload removes has its backlog dropped, with a log line and
//! `hothot_replication_dropped_total{peer}`, as at a restart that no longer
//! lists it; the log counts those writes as settled for it. A reload's
//! departures and arrivals happen together at one [`super::Cut`], between
//! two writes: every write's log entry names exactly the origins whose
//! backlogs it joined, and no write falls between an origin leaving and its
//! replacement joining.

use super::log::Mark;
use super::Replicator;
use crate::config::ReplicationConfig;
use crate::pool::{NewOrigin, OriginId};
use std::sync::Arc;

impl Replicator {
    /// A reload's settings (only keys that may change live differ): the
    /// next write, delivery and verify sample read them.
    pub fn set_config(&self, config: ReplicationConfig) {
        for origin in self.pool.members() {
            origin.backlog.set_max_pending(config.max_pending);
        }
        self.metrics.publish_replication_settings(&config);
        if let Some(log) = self.sequencer.log() {
            log.set_max_bytes(config.journal.max_bytes);
        }
        self.verifier.set_sample(match config.mode {
            crate::config::ReplicationMode::Off => 0.0,
            _ => config.verify_sample,
        });
        self.config.store(Arc::new(config));
    }

    /// A reload's change of origins, in one step between two writes: the
    /// origins `leaving` retire, their backlogs dropped (counted and
    /// logged) and their lanes stopped; the `joining` ones are added, with
    /// backlogs that take every write from now on. Returns the new ids.
    pub fn change_members(&self, leaving: &[OriginId], joining: Vec<NewOrigin>) -> Vec<OriginId> {
        let cut = self.sequencer.cut(self.config().max_pending);
        let mut marks = Vec::new();
        for &id in leaving {
            let dropped = self.pool.retire(id, &cut);
            let Some(origin) = self.pool.get(id) else {
                continue;
            };
            marks.push((origin.name.clone(), None));
            if dropped > 0 {
                origin.metrics.replication.dropped.inc_by(dropped as u64);
                log::warn!(
                    "replication: origin {} left the pool; {dropped} writes it had not \
                     received are dropped for it",
                    origin.name
                );
            }
        }
        let history = cut.last_numbered() > 0;
        let joined: Vec<OriginId> = joining
            .into_iter()
            .map(|origin| self.pool.add(origin, &cut))
            .collect();
        drop(cut);
        for &id in leaving {
            self.resync_left(id);
        }
        // Those leaving first: a name may leave and join again (a new address).
        self.remember(&std::mem::take(&mut marks));
        for &id in &joined {
            let Some(origin) = self.pool.get(id) else {
                continue;
            };
            let waits = history && self.is_on() && origin.join != crate::config::Join::Now;
            match waits {
                true => {
                    let why =
                        "it joined a pool that has history (join: resync): it waits for a resync";
                    self.detach(origin, why, None);
                }
                false => {
                    marks.push((origin.name.clone(), Some(Mark::Current(None))));
                    log::info!(
                        "replication: origin {} joined; it receives writes from now on",
                        origin.name
                    );
                }
            }
        }
        self.remember(&marks);
        self.membership.notify_one();
        joined
    }

    /// Woken when origins joined or left.
    pub(super) async fn membership_changed(&self) {
        self.membership.notified().await;
    }
}
