//! Whether a write may be taken: room for it in every origin's backlog
//! (`max_pending`) and in the journal (`journal.max_bytes`); and the counts
//! of writes refused or not replicated, per peer.

use super::{Full, Replicator};
use std::sync::atomic::Ordering;

impl Replicator {
    /// Room for one more write in every peer's backlog and in the journal?
    /// A refusal is counted and says which is full.
    pub fn admit(&self) -> Result<(), Full> {
        let mut admitted = true;
        for (index, queue) in self.sequencer.members() {
            if !queue.has_room() {
                self.peer_metrics(index, |peer| peer.rejected.inc());
                admitted = false;
            }
        }
        let journal_full = self.sequencer.journal().is_some_and(|j| !j.has_room());
        if self.journal_full.swap(journal_full, Ordering::Relaxed) != journal_full {
            match journal_full {
                true => log::error!(
                    "journal full (max_bytes): refusing new writes until peers catch up"
                ),
                false => log::info!("journal has room again: accepting writes"),
            }
        }
        if journal_full && admitted {
            self.count_rejected();
        }
        match (admitted, journal_full) {
            (true, false) => Ok(()),
            (_, true) => Err(Full::Journal),
            (false, false) => Err(Full::Backlog),
        }
    }

    /// Counts a write refused before reaching any origin, on every peer.
    pub fn count_rejected(&self) {
        for (index, _) in self.sequencer.members() {
            self.peer_metrics(index, |peer| peer.rejected.inc());
        }
    }

    /// Counts a write deliberately not replicated, on the peers of `primary`.
    pub fn count_skipped(&self, primary: Option<usize>) {
        for (index, _) in self.sequencer.members() {
            if Some(index) != primary {
                self.peer_metrics(index, |peer| peer.skipped.inc());
            }
        }
    }
}
