//! Start-up: the log's pending writes go back into each origin's backlog,
//! in their original order; an origin that left the pool loses its backlog
//! (logged and counted), and an origin that joined, or is detached, gets no
//! history.

use super::key::Keying;
use super::payload::StoredWrite;
use super::sequencer::Sequencer;
use super::version::VersionClock;
use super::write::Write;
use crate::journal::{EntryRecord, Recovered};
use crate::metrics::Metrics;
use crate::pool::Pool;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The first sequence number after everything the log remembers: its
/// entries, and the cursors (which outlive the entries they settled, so a
/// log whose entries were all trimmed never hands out a number again).
pub fn next_seq(recovered: &Recovered) -> u64 {
    let entries = recovered.entries.iter().map(|e| e.seq);
    let cursors = recovered.cursors.values().copied();
    entries.chain(cursors).max().unwrap_or(0) + 1
}

/// Queues the log's pending writes for the origins in `pool`.
pub fn requeue(
    recovered: Recovered,
    pool: &Pool,
    sequencer: &Sequencer,
    clock: &VersionClock,
    metrics: &Metrics,
    keying: &Keying,
) {
    let mut queued: BTreeMap<&str, u64> = pool.members().map(|o| (o.name.as_str(), 0)).collect();
    let mut dropped: BTreeMap<String, u64> = BTreeMap::new();
    let total = recovered.entries.len();
    let mut last_seq = 0;
    for entry in recovered.entries {
        let seq = entry.seq;
        last_seq = last_seq.max(seq);
        let pending: Vec<&String> = entry
            .targets
            .iter()
            .filter(|t| {
                recovered
                    .cursors
                    .get(*t)
                    .is_none_or(|settled| seq > *settled)
            })
            // A detached origin gets nothing until its resync.
            .filter(|t| pool.find(t).is_none_or(|o| o.backlog.is_taking()))
            .collect();
        if pending.is_empty() {
            continue;
        }
        let Some(write) = decode(&entry, pool, keying, Some(clock)) else {
            continue;
        };
        let write = Arc::new(write);
        for target in pending {
            match pool.find(target) {
                Some(origin) => {
                    sequencer.requeue(origin, write.clone());
                    *queued.entry(origin.name.as_str()).or_default() += 1;
                }
                None => *dropped.entry(target.clone()).or_default() += 1,
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
    let summary: Vec<String> = queued.iter().map(|(n, q)| format!("{n}: {q}")).collect();
    log::info!(
        "journal: read {total} writes in {:?}; pending per origin: {}",
        recovered.elapsed,
        summary.join(", ")
    );
}

/// The write the log stored as `entry`, to deliver again; `None` (logged)
/// when this hothot cannot read it. At start-up the version clock learns
/// its version.
pub fn decode(
    entry: &EntryRecord,
    pool: &Pool,
    keying: &Keying,
    clock: Option<&VersionClock>,
) -> Option<Write> {
    let seq = entry.seq;
    let Some(stored) = StoredWrite::decode(&entry.payload) else {
        log::error!("journal: entry #{seq} is not a write this hothot can read; skipped");
        return None;
    };
    if let Some(clock) = clock {
        clock.observe(stored.version);
    }
    let primary = pool.find(&stored.primary).map(|o| o.id);
    let write = Write::from_stored(seq, &stored, primary, key_of(keying, &stored));
    if write.is_none() {
        log::error!("journal: write #{seq} no longer parses as a request; skipped");
    }
    write
}

/// The order key of a stored write, as the proxy computed it for the live one.
fn key_of(keying: &Keying, stored: &StoredWrite) -> u64 {
    let path = stored.uri.split('?').next().unwrap_or("");
    // An absolute-form target (`http://host/path`) keys by its path.
    let path = match path.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |at| &rest[at..]),
        None => path,
    };
    keying.key(path, |name| {
        stored
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    })
}
