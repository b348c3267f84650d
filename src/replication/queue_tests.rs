//! Unit tests of one origin's backlog.

use super::*;
use crate::replication::write::{CapturedRequest, NewWrite};
use bytes::Bytes;

fn write(seq: u64, key: u64) -> Arc<Write> {
    let header = pingora_http::RequestHeader::build("PUT", b"/k", None).unwrap();
    let new = NewWrite {
        version: seq,
        idempotency_key: String::new(),
        primary: 9,
        key,
        request: CapturedRequest::of(&header),
        body: Bytes::new(),
    };
    Arc::new(Write::new(seq, &new, "p", None))
}

fn sent(next: Next) -> Vec<(u64, u64)> {
    match next {
        Next::Send(taken) => taken.iter().map(|t| (t.id, t.write.seq)).collect(),
        _ => Vec::new(),
    }
}

#[test]
fn one_key_is_one_ordered_pipeline() {
    let queue = PeerQueue::new(0, 100, 0);
    for seq in 1..=4 {
        queue.push(write(seq, 0));
    }
    assert_eq!(sent(queue.take(0, 2, false)), vec![(0, 1), (1, 2)]);
    // Pipelined behind them on the same lane, never on another.
    assert!(matches!(queue.take(1, 8, false), Next::Wait));
    assert_eq!(sent(queue.take(0, 8, false)), vec![(2, 3), (3, 4)]);
    // #1 fails: it and everything after it wait out the backoff, in order.
    queue.release(0, Some(Duration::from_secs(60)));
    for id in 1..=3 {
        queue.release(id, None);
    }
    assert!(matches!(queue.take(0, 8, false), Next::Until(_)));
    assert_eq!(queue.settle(0), Some(2));
    assert_eq!(queue.len(), 3);
}

#[test]
fn other_keys_overtake_a_key_in_backoff() {
    let queue = PeerQueue::new(0, 100, 0);
    queue.push(write(1, 7));
    queue.push(write(2, 7));
    queue.push(write(3, 8));
    assert_eq!(sent(queue.take(0, 1, false)), vec![(0, 1)]);
    // Key 7 is in flight on lane 0: lane 1 may only take key 8.
    assert_eq!(sent(queue.take(1, 8, false)), vec![(2, 3)]);
    queue.release(0, Some(Duration::from_secs(60)));
    assert!(matches!(queue.take(1, 8, false), Next::Until(_)));
    assert_eq!(queue.settle(2), Some(1));
    assert!(queue.is_past(0) && !queue.is_past(1));
}

#[test]
fn a_patient_lane_holds_writes_nobody_waits_for() {
    let queue = PeerQueue::new(0, 100, 0);
    queue.push(write(1, 0));
    assert!(matches!(queue.take(0, 4, true), Next::Hold));
    assert_eq!(sent(queue.take(0, 1, true)), vec![(0, 1)]);
}
