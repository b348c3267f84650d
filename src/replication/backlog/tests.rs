//! Unit tests of one origin's backlog.

use super::*;
use crate::replication::write::{CapturedRequest, NewWrite, Write};
use bytes::Bytes;

fn backlog() -> Backlog {
    Backlog::new(OriginId::from_slot(0), 100, 0, Arc::default(), gauge())
}

fn gauge() -> IntGauge {
    IntGauge::new("pending", "unsettled writes").unwrap()
}

fn write(seq: u64, key: u64) -> Entry {
    let header = pingora_http::RequestHeader::build("PUT", b"/k", None).unwrap();
    let new = NewWrite {
        version: seq,
        idempotency_key: String::new(),
        primary: OriginId::from_slot(9),
        key,
        request: CapturedRequest::of(&header),
        body: Bytes::new(),
    };
    Entry::Write(Arc::new(Write::new(seq, &new, "p", None)))
}

fn sent(work: Work) -> Vec<(u64, u64)> {
    match work {
        Work::Send(taken) => taken.iter().map(|t| (t.id, t.entry.seq())).collect(),
        _ => Vec::new(),
    }
}

#[test]
fn one_key_is_one_ordered_pipeline() {
    let queue = backlog();
    for seq in 1..=4 {
        queue.push(write(seq, 0));
    }
    assert_eq!(sent(queue.take(0, 2, false)), vec![(0, 1), (1, 2)]);
    // Pipelined behind them on the same lane, never on another.
    assert!(matches!(queue.take(1, 8, false), Work::Wait));
    assert_eq!(sent(queue.take(0, 8, false)), vec![(2, 3), (3, 4)]);
    // #1 fails: it and everything after it wait out the backoff, in order.
    queue.release(0, Some(Duration::from_secs(60)));
    for id in 1..=3 {
        queue.release(id, None);
    }
    assert!(matches!(queue.take(0, 8, false), Work::Until(_)));
    assert_eq!(queue.settle(0), Ok(Some(2)));
    assert_eq!(queue.len(), 3);
}

#[test]
fn other_keys_overtake_a_key_in_backoff() {
    let queue = backlog();
    queue.push(write(1, 7));
    queue.push(write(2, 7));
    queue.push(write(3, 8));
    assert_eq!(sent(queue.take(0, 1, false)), vec![(0, 1)]);
    // Key 7 is in flight on lane 0: lane 1 may only take key 8.
    assert_eq!(sent(queue.take(1, 8, false)), vec![(2, 3)]);
    queue.release(0, Some(Duration::from_secs(60)));
    assert!(matches!(queue.take(1, 8, false), Work::Until(_)));
    assert_eq!(queue.settle(2), Ok(Some(1)));
    assert!(queue.is_past(0) && !queue.is_past(1));
}

#[test]
fn a_patient_lane_holds_writes_nobody_waits_for() {
    let queue = backlog();
    queue.push(write(1, 0));
    assert!(matches!(queue.take(0, 4, true), Work::Hold));
    assert_eq!(sent(queue.take(0, 1, true)), vec![(0, 1)]);
}

#[tokio::test(start_paused = true)]
async fn a_short_batch_lingers_for_company_and_a_full_one_leaves_at_once() {
    let queue = backlog();
    let linger = Duration::from_millis(5);
    queue.push(write(1, 0));
    let started = tokio::time::Instant::now();
    let batch = queue.next_batch(0, 4, linger).await;
    assert_eq!(batch.len(), 1);
    assert_eq!(started.elapsed(), linger, "it waited out the linger");
    queue.settle(batch[0].id).unwrap();
    // A window's worth leaves without waiting.
    for seq in 2..=5 {
        queue.push(write(seq, 0));
    }
    let started = tokio::time::Instant::now();
    assert_eq!(queue.next_batch(0, 4, linger).await.len(), 4);
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn company_arriving_while_a_batch_lingers_joins_it() {
    let queue = Arc::new(backlog());
    let linger = Duration::from_millis(5);
    queue.push(write(1, 0));
    let waiting = tokio::spawn({
        let queue = queue.clone();
        async move { queue.next_batch(0, 8, linger).await.len() }
    });
    tokio::time::sleep(Duration::from_millis(2)).await;
    queue.push(write(2, 0));
    assert_eq!(waiting.await.unwrap(), 2, "both leave together");
}

#[tokio::test(start_paused = true)]
async fn a_key_in_backoff_waits_until_its_backoff_ends() {
    let queue = backlog();
    queue.push(write(1, 0));
    assert_eq!(sent(queue.take(0, 1, false)), vec![(0, 1)]);
    queue.release(0, Some(Duration::from_millis(300)));
    let started = tokio::time::Instant::now();
    let batch = queue.next_batch(0, 1, Duration::ZERO).await;
    assert_eq!(batch.len(), 1);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn retiring_drops_the_writes_and_settles_the_cursor() {
    let cursor = Arc::new(AtomicU64::new(0));
    let queue = Backlog::new(OriginId::from_slot(0), 100, 0, cursor.clone(), gauge());
    queue.push(write(1, 0));
    queue.push(write(2, 0));
    assert_eq!(queue.retire(7), 2);
    assert_eq!(cursor.load(Ordering::Acquire), 7);
    assert!(!queue.push(write(8, 0)), "a retired backlog takes nothing");
    assert!(queue.is_empty());
}

#[test]
fn an_entry_dropped_while_in_flight_is_not_settled_twice() {
    let queue = backlog();
    queue.push(write(1, 0));
    queue.push(write(2, 0));
    assert_eq!(sent(queue.take(0, 1, false)), vec![(0, 1)]);
    // A resync drops the backlog with #1 on the wire, then reopens it.
    queue.drop_all(super::Intake::Parked);
    queue.open();
    queue.push(write(3, 0));
    // #1's late answer settles nothing: it was counted out with the rest.
    assert_eq!(queue.settle(0), Err(super::Closed));
    assert_eq!(queue.len(), 1);
}

#[test]
fn the_pending_gauge_counts_what_the_backlog_holds_through_a_park() {
    let pending = gauge();
    let queue = Backlog::new(
        OriginId::from_slot(0),
        2,
        0,
        Arc::default(),
        pending.clone(),
    );
    for seq in 1..=3 {
        queue.push(write(seq, 0));
    }
    // Two in memory, one spilled past the window of 2.
    assert_eq!(pending.get(), 3);
    assert_eq!(sent(queue.take(0, 1, false)), vec![(0, 1)]);
    // A resync parks the backlog: what it held is counted out with it, a
    // write recorded while parked is counted in, once.
    queue.drop_all(super::Intake::Parked);
    assert_eq!(pending.get(), 0);
    queue.push(write(4, 0));
    assert_eq!(pending.get(), 1);
    assert_eq!(queue.settle(0), Err(super::Closed));
    assert_eq!(
        pending.get(),
        1,
        "a late answer of a dropped write counts nothing"
    );
    queue.open();
    assert_eq!(pending.get(), 1);
    queue.drop_all(super::Intake::Refused);
    assert_eq!(pending.get(), 0);
}
