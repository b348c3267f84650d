//! Start-up: the journal's pending writes go back into each origin's
//! backlog, in their original order; an origin that left the pool loses its
//! backlog (logged and counted), and an origin that joined gets no history.

use super::key::Keying;
use super::sequencer::Sequencer;
use super::version::VersionClock;
use super::write::Write;
use crate::journal::record::WriteRecord;
use crate::journal::Recovered;
use crate::metrics::Metrics;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The first sequence number after everything the journal remembers: its
/// writes, and the cursors (which outlive the writes they settled, so a
/// journal whose writes were all trimmed never hands out a number again).
pub fn next_seq(recovered: &Recovered) -> u64 {
    let writes = recovered.writes.iter().map(|w| w.seq);
    let cursors = recovered.cursors.values().copied();
    writes.chain(cursors).max().unwrap_or(0) + 1
}

/// Queues the journal's pending writes.
pub fn requeue(
    recovered: Recovered,
    names: &[String],
    sequencer: &Sequencer,
    clock: &VersionClock,
    metrics: &Metrics,
    keying: &Keying,
) {
    let mut queued = vec![0u64; names.len()];
    let mut dropped: BTreeMap<String, u64> = BTreeMap::new();
    let total = recovered.writes.len();
    let mut last_seq = 0;
    for record in recovered.writes {
        last_seq = last_seq.max(record.seq);
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
        let primary = names.iter().position(|n| *n == record.primary);
        let Some(write) = Write::from_record(record, primary, |r| key_of(keying, r)).map(Arc::new)
        else {
            log::error!("journal: write #{seq} no longer parses as a request; skipped");
            continue;
        };
        for target in pending {
            match names.iter().position(|n| *n == target) {
                Some(index) => {
                    sequencer.requeue(index, write.clone());
                    queued[index] += 1;
                }
                None => *dropped.entry(target).or_default() += 1,
            }
        }
    }
    sequencer.recovered_through(last_seq);
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
        "journal: read {total} writes in {:?}; pending per origin: {}",
        recovered.elapsed,
        summary.join(", ")
    );
}

/// The order key of a journaled write, as the proxy computed it for the live one.
fn key_of(keying: &Keying, record: &WriteRecord) -> u64 {
    let path = record.uri.split('?').next().unwrap_or("");
    // An absolute-form target (`http://host/path`) keys by its path.
    let path = match path.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |at| &rest[at..]),
        None => path,
    };
    keying.key(path, |name| {
        record
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    })
}
