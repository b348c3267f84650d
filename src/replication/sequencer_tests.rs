//! Unit tests of the sequencer over a log in memory: write-ahead staging
//! against retirement, recovery, and what each origin is acknowledged for.

use super::super::log::memory::MemoryLog;
use super::super::testing;
use super::super::write::{CapturedRequest, NewWrite};
use super::super::Replicator;
use super::*;
use crate::journal::Recovered;
use bytes::Bytes;
use std::collections::BTreeMap;

/// Three origins, `o0` to `o2`, replication under `yaml`, over `log`.
fn replicator(
    yaml: &str,
    log: &Arc<MemoryLog>,
    recovered: Recovered,
) -> (Arc<Pool>, Arc<Replicator>) {
    let config = testing::config(&[10, 10, 10], yaml);
    testing::with_log(&config, Some(log.clone()), recovered)
}

const WRITE_AHEAD: &str = "replication: {verify: {sample: 0}}\n";
const SAMPLE_ALL: &str = "replication: {verify: {sample: 1}}\n";
const NO_WRITE_AHEAD: &str = "replication: {verify: {sample: 1}, journal: {fsync: interval}}\n";

fn new_write(pool: &Pool, path: &str, body: &'static str) -> NewWrite {
    let mut header = pingora_http::RequestHeader::build("PUT", path.as_bytes(), None).unwrap();
    header.insert_header("host", "example.test").unwrap();
    NewWrite {
        version: 1,
        idempotency_key: "k".into(),
        primary: pool.find("o0").unwrap().id,
        key: 0,
        request: CapturedRequest::of(&header),
        body: Bytes::from_static(body.as_bytes()),
    }
}

/// Sequences a write of `body` to `path`, its client waiting on nobody.
fn sequence(replicator: &Replicator, pool: &Pool, path: &str, body: &'static str) {
    let sequenced = replicator.sequence(&new_write(pool, path, body), false, None);
    assert!(sequenced.is_ok(), "the log refused {path}");
}

/// The sequences in `name`'s backlog (writes only), oldest first.
fn backlog(pool: &Pool, name: &str) -> Vec<u64> {
    let origin = pool.find(name).unwrap();
    match origin.backlog.take(0, 100, false) {
        super::super::backlog::Work::Send(taken) => taken
            .iter()
            .filter(|t| t.entry.write().is_some())
            .map(|t| t.entry.seq())
            .collect(),
        _ => Vec::new(),
    }
}

/// `name` answers `status` to every verify read in its backlog.
fn answer_reads(pool: &Pool, name: &str, status: u16) {
    let origin = pool.find(name).unwrap();
    let super::super::backlog::Work::Send(taken) = origin.backlog.take(0, 100, false) else {
        panic!("{name} has nothing to send");
    };
    for t in taken {
        if let Entry::VerifyRead(read) = &t.entry {
            read.sample.record(origin.id, status, None);
        }
    }
}

fn pending(pool: &Pool, name: &str) -> i64 {
    pool.find(name).unwrap().metrics.replication.pending.get()
}

#[test]
fn a_write_joins_the_backlogs_only_once_the_log_has_made_it_durable() {
    let log = Arc::new(MemoryLog::default());
    let (pool, replicator) = replicator(WRITE_AHEAD, &log, Recovered::default());
    for _ in 1..=3 {
        sequence(&replicator, &pool, "/kv/a", "x");
    }
    let appended: Vec<u64> = log.entries.lock().unwrap().iter().map(|e| e.0).collect();
    assert_eq!(appended, [1, 2, 3], "stored in order, at once");
    assert_eq!(
        pending(&pool, "o1"),
        0,
        "nothing handed off before it is durable"
    );
    replicator.sequencer.release(2);
    assert_eq!(pending(&pool, "o1"), 2);
    replicator.sequencer.release(3);
    for name in ["o0", "o1", "o2"] {
        assert_eq!(backlog(&pool, name), [1, 2, 3], "{name}");
    }
}

#[test]
fn an_origin_retired_while_writes_wait_to_be_durable_drops_them_and_its_samples_complete() {
    let log = Arc::new(MemoryLog::default());
    let (pool, replicator) = replicator(SAMPLE_ALL, &log, Recovered::default());
    for _ in 0..2 {
        sequence(&replicator, &pool, "/kv/a", "x");
    }
    let o2 = pool.find("o2").unwrap().clone();
    replicator.change_members(&[o2.id], Vec::new());
    assert_eq!(
        o2.metrics.replication.dropped.get(),
        2,
        "the staged writes were its too"
    );
    assert_eq!(
        log.cursor("o2"),
        Some(2),
        "the log counts them as settled for it"
    );
    replicator.sequencer.release(2);
    assert!(o2.backlog.is_empty(), "nothing joins a retired backlog");
    // The other two origins answer every sampled write's read alike: each
    // sample is complete without the origin that left, and matches.
    answer_reads(&pool, "o0", 200);
    answer_reads(&pool, "o1", 200);
    let verified = &replicator.metrics.replication.verified_match;
    assert_eq!(
        verified.get(),
        2,
        "a sample waited for an origin that had left"
    );
}

#[test]
fn a_queued_verify_read_of_an_origin_that_leaves_is_withdrawn() {
    let log = Arc::new(MemoryLog::default());
    let (pool, replicator) = replicator(NO_WRITE_AHEAD, &log, Recovered::default());
    sequence(&replicator, &pool, "/kv/a", "x");
    answer_reads(&pool, "o0", 200);
    answer_reads(&pool, "o1", 404);
    let o2 = pool.find("o2").unwrap().id;
    replicator.change_members(&[o2], Vec::new());
    let replication = &replicator.metrics.replication;
    assert_eq!(
        (
            replication.verified_match.get(),
            replication.verified_mismatch.get()
        ),
        (0, 1),
        "compared without o2, which left: o0 and o1 differ"
    );
}

#[test]
fn an_origin_that_joins_takes_the_writes_numbered_after_it() {
    let log = Arc::new(MemoryLog::default());
    let (pool, replicator) = replicator(NO_WRITE_AHEAD, &log, Recovered::default());
    sequence(&replicator, &pool, "/kv/a", "1");
    let mut config = testing::config(&[10, 10, 10, 10], "");
    config.origins[3].join = crate::config::Join::Now;
    let joined = replicator.change_members(&[], vec![testing::new_origin(&config.origins[3])]);
    assert_eq!(log.cursor("o3"), Some(1), "everything so far is behind it");
    sequence(&replicator, &pool, "/kv/a", "2");
    assert_eq!(backlog(&pool, "o3"), [2]);
    assert_eq!(backlog(&pool, "o0"), [1, 2]);
    let names: Vec<String> = log.entries.lock().unwrap()[1].1.clone();
    assert_eq!(
        names,
        ["o0", "o1", "o2", "o3"],
        "the second write names the newcomer"
    );
    assert_eq!(joined[0].slot(), 3);
}

#[test]
fn an_origin_that_joins_a_pool_with_history_waits_for_a_resync() {
    let log = Arc::new(MemoryLog::default());
    let (pool, replicator) = replicator(NO_WRITE_AHEAD, &log, Recovered::default());
    sequence(&replicator, &pool, "/kv/a", "1");
    let config = testing::config(&[10, 10, 10, 10], "");
    replicator.change_members(&[], vec![testing::new_origin(&config.origins[3])]);
    sequence(&replicator, &pool, "/kv/a", "2");
    let o3 = pool.find("o3").unwrap();
    assert!(matches!(o3.standing(), crate::pool::Standing::Detached(_)));
    assert_eq!(
        backlog(&pool, "o3"),
        Vec::<u64>::new(),
        "it receives nothing"
    );
    let marks = log.members().unwrap();
    assert_eq!(
        marks["o3"],
        crate::replication::log::Mark::Detached,
        "the log remembers it"
    );
    assert_eq!(marks["o0"], crate::replication::log::Mark::Current(None));
}

#[test]
fn an_origin_is_acknowledged_through_what_it_settled() {
    let log = Arc::new(MemoryLog::default());
    let (pool, replicator) = replicator(
        NO_WRITE_AHEAD.replace("sample: 1", "sample: 0").as_str(),
        &log,
        Recovered::default(),
    );
    for _ in 0..3 {
        sequence(&replicator, &pool, "/kv/a", "x");
    }
    let origin = pool.find("o1").unwrap();
    let super::super::backlog::Work::Send(taken) = origin.backlog.take(0, 100, false) else {
        panic!("nothing to send");
    };
    // The second settles first (a lane on another key, say): the first still holds it back.
    replicator
        .sequencer
        .settled(origin, taken[1].id, &taken[1].entry);
    assert_eq!(log.cursor("o1"), Some(0));
    replicator
        .sequencer
        .settled(origin, taken[0].id, &taken[0].entry);
    assert_eq!(log.cursor("o1"), Some(2));
    replicator
        .sequencer
        .settled(origin, taken[2].id, &taken[2].entry);
    assert_eq!(log.cursor("o1"), Some(3));
    assert_eq!(pending(&pool, "o1"), 0);
}

#[test]
fn recovery_requeues_what_each_origin_has_not_settled_and_drops_the_departed() {
    // What an earlier run stored: three writes for o0, o1 and an origin
    // the configuration no longer has; o0 had settled the first.
    let (scratch, _) = testing::pool(&[10]);
    let log = Arc::new(MemoryLog::default());
    for seq in 1..=3 {
        let new = new_write(&scratch, &format!("/kv/{seq}"), "v");
        let head = new.payload_head("o0");
        let prefix = super::super::payload::body_prefix(&new.body);
        log.append(seq, &["o0", "o1", "gone"], &new.payload(&head, &prefix));
    }
    let recovered = Recovered {
        entries: 3,
        last_seq: 3,
        cursors: BTreeMap::from([("o0".to_owned(), 1), ("gone".to_owned(), 0)]),
        elapsed: std::time::Duration::ZERO,
    };
    let (pool, replicator) = replicator(WRITE_AHEAD, &log, recovered);
    // Owed, not read: each backlog reads its writes back as it drains.
    assert_eq!(pool.find("o1").unwrap().backlog.len(), 3);
    assert_eq!(backlog(&pool, "o1"), Vec::<u64>::new());
    for origin in pool.members() {
        replicator.refill(origin);
    }
    assert_eq!(backlog(&pool, "o0"), [2, 3]);
    assert_eq!(backlog(&pool, "o1"), [1, 2, 3]);
    assert_eq!(
        backlog(&pool, "o2"),
        Vec::<u64>::new(),
        "a newcomer gets no history"
    );
    let dropped = replicator
        .metrics
        .replication
        .dropped
        .with_label_values(&["gone"]);
    assert_eq!(dropped.get(), 3);
    // Numbering goes on after what the log remembers.
    assert_eq!(replicator.sequencer.next().seq, 4);
}
