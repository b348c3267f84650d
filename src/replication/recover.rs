//! Start-up: what the log holds for each origin is owed to it again, in
//! the original order; an origin that left the pool loses its backlog
//! (logged and counted), and an origin that joined, or is detached, gets no
//! history. Nothing is read into memory here: one pass over the log counts
//! what each origin is owed, and its backlog reads the writes back as it
//! drains ([`super::backlog`]'s spill), so a restart with an origin far
//! behind costs no more memory than the running pool did.

use super::key::Keying;
use super::log::Log;
use super::payload::StoredWrite;
use super::sequencer::Sequencer;
use super::version::VersionClock;
use super::write::Write;
use crate::journal::{EntryRecord, Recovered};
use crate::metrics::Metrics;
use crate::pool::Pool;
use std::collections::BTreeMap;

/// Entries read back at once.
const BATCH: usize = 4096;

/// How many of the newest entries the version clock learns from: versions
/// follow the wall clock, so the newest writes hold the highest.
const CLOCK_TAIL: u64 = 10_000;

/// The first sequence number after everything the log remembers: its
/// entries, and the cursors (which outlive the entries they settled, so a
/// log whose entries were all trimmed never hands out a number again).
pub fn next_seq(recovered: &Recovered) -> u64 {
    let cursors = recovered.cursors.values().copied();
    cursors.max().unwrap_or(0).max(recovered.last_seq) + 1
}

/// What one origin is owed.
struct Owed {
    from: u64,
    through: u64,
    count: usize,
    bytes: u64,
}

/// Owes each origin in `pool` what `log` holds for it past its cursor.
pub fn requeue(
    recovered: Recovered,
    log: &dyn Log,
    pool: &Pool,
    sequencer: &Sequencer,
    clock: &VersionClock,
    metrics: &Metrics,
) {
    let cursor = |name: &str| recovered.cursors.get(name).copied().unwrap_or(0);
    let last_seq = recovered.last_seq;
    let oldest_owed = recovered.cursors.values().map(|c| c + 1).min().unwrap_or(1);
    let from = oldest_owed.min(last_seq.saturating_sub(CLOCK_TAIL)).max(1);
    let mut owed: BTreeMap<String, Owed> = BTreeMap::new();
    let mut dropped: BTreeMap<String, u64> = BTreeMap::new();
    let mut reader = log.reader(from);
    loop {
        let batch = match reader.read(last_seq, BATCH) {
            Ok(batch) => batch,
            Err(e) => {
                log::error!("journal: cannot read the pending writes back: {e}");
                break;
            }
        };
        if batch.is_empty() {
            break;
        }
        for entry in &batch {
            if entry.seq + CLOCK_TAIL > last_seq {
                if let Some(stored) = StoredWrite::decode(&entry.payload) {
                    clock.observe(stored.version);
                }
            }
            for target in entry.targets.iter().filter(|t| entry.seq > cursor(t)) {
                match pool.find(target) {
                    Some(origin) if origin.backlog.is_taking() => {
                        let bytes = entry.payload.len() as u64;
                        let owed = owed.entry(target.clone()).or_insert(Owed {
                            from: entry.seq,
                            through: entry.seq,
                            count: 0,
                            bytes: 0,
                        });
                        owed.through = entry.seq;
                        owed.count += 1;
                        owed.bytes += bytes;
                    }
                    Some(_) => {}
                    None => *dropped.entry(target.clone()).or_default() += 1,
                }
            }
        }
    }
    for (name, owed) in &owed {
        if let Some(origin) = pool.find(name) {
            origin
                .backlog
                .owe(owed.from, owed.through, owed.count, owed.bytes);
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
    let summary: Vec<String> = pool
        .members()
        .map(|o| format!("{}: {}", o.name, owed.get(&o.name).map_or(0, |w| w.count)))
        .collect();
    log::info!(
        "journal: read {} writes in {:?}; pending per origin: {} (read back from the journal as each drains)",
        recovered.entries,
        recovered.elapsed,
        summary.join(", ")
    );
}

/// The write the log stored as `entry`, to deliver again; `None` (logged)
/// when this hothot cannot read it.
pub fn decode(entry: &EntryRecord, pool: &Pool, keying: &Keying) -> Option<Write> {
    let seq = entry.seq;
    let Some(stored) = StoredWrite::decode(&entry.payload) else {
        log::error!("journal: entry #{seq} is not a write this hothot can read; skipped");
        return None;
    };
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
