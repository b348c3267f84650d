//! Whether a write may be taken: room for it in the log
//! (`journal.max_bytes`); and the counts of writes refused or not
//! replicated, per peer.

use super::{Full, Replicator};
use crate::pool::OriginId;
use std::sync::atomic::Ordering;

impl Replicator {
    /// Room for one more write in the log? A refusal is counted. (An
    /// origin's backlog is never a reason: past `max_pending` its writes
    /// wait in the log, [`super::spill`].)
    pub fn admit(&self) -> Result<(), Full> {
        let log_full = self.sequencer.log().is_some_and(|l| !l.has_room());
        if self.journal_full.swap(log_full, Ordering::Relaxed) != log_full {
            match log_full {
                true => log::error!(
                    "journal full (max_bytes): refusing new writes until peers catch up"
                ),
                false => log::info!("journal has room again: accepting writes"),
            }
        }
        if log_full {
            self.count_rejected();
            return Err(Full::Journal);
        }
        Ok(())
    }

    /// Counts a write refused before reaching any origin, on every peer.
    pub fn count_rejected(&self) {
        for origin in self.pool.members() {
            origin.metrics.replication.rejected.inc();
        }
    }

    /// Counts a write deliberately not replicated, on the peers of `primary`.
    pub fn count_skipped(&self, primary: Option<OriginId>) {
        for origin in self.pool.members() {
            if Some(origin.id) != primary {
                origin.metrics.replication.skipped.inc();
            }
        }
    }
}
