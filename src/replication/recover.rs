//! Start-up: the journal's pending writes go back into each peer's backlog,
//! in their original order; a peer that left the pool loses its backlog
//! (logged and counted), and a peer that joined gets no history.

use super::queue::PeerQueue;
use super::version::VersionClock;
use super::write::Write;
use crate::journal::Recovered;
use crate::metrics::Metrics;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Queues the journal's pending writes; returns the next sequence number.
pub fn requeue(
    recovered: Recovered,
    names: &[String],
    queues: &[PeerQueue],
    clock: &VersionClock,
    metrics: &Metrics,
) -> u64 {
    let mut next_seq = 1;
    let mut queued = vec![0u64; names.len()];
    let mut dropped: BTreeMap<String, u64> = BTreeMap::new();
    let total = recovered.writes.len();
    for record in recovered.writes {
        next_seq = next_seq.max(record.seq + 1);
        clock.observe(record.version);
        let pending: Vec<String> = record
            .targets
            .iter()
            .filter(|t| {
                recovered
                    .cursors
                    .get(*t)
                    .is_none_or(|settled| record.seq > *settled)
            })
            .cloned()
            .collect();
        if pending.is_empty() {
            continue;
        }
        let seq = record.seq;
        let Some(write) = Write::from_record(record).map(Arc::new) else {
            log::error!("journal: write #{seq} no longer parses as a request; skipped");
            continue;
        };
        for target in pending {
            match names.iter().position(|n| *n == target) {
                Some(index) => {
                    queues[index].push(write.clone());
                    metrics.replication.peers[index].pending.inc();
                    queued[index] += 1;
                }
                None => *dropped.entry(target).or_default() += 1,
            }
        }
    }
    for (peer, count) in &dropped {
        log::warn!(
            "journal: peer {peer} is no longer in the pool: dropping its backlog of {count} writes"
        );
        metrics
            .replication
            .dropped
            .with_label_values(&[peer])
            .inc_by(*count);
    }
    let summary: Vec<String> = names
        .iter()
        .zip(&queued)
        .map(|(n, q)| format!("{n}: {q}"))
        .collect();
    log::info!(
        "journal: read {total} writes in {:?}; pending per peer: {}",
        recovered.elapsed,
        summary.join(", ")
    );
    next_seq
}
