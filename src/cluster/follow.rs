//! Reading the shared order back, as every instance must (#25): each
//! instance delivers to the origins it holds every write of the pool, its
//! own and the other instances', in the one order. A [`Follower`] yields
//! the entries from a position on, first those etcd still holds, then each
//! as it is appended, in position order (an etcd watch from that revision);
//! [`hand_off`] hands them to the backlogs for as long as the process runs.

use super::member::{Deliveries, Member};
use super::order::{OrderError, SharedOrder};
use etcd_client::{EventType, WatchFilterType, WatchOptions, WatchStream};
use std::collections::VecDeque;

/// Entries handed off between two yields to the runtime.
const FOLLOW_BURST: u32 = 256;

/// An entry of the shared order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ordered {
    pub position: u64,
    /// The id its instance appended it under.
    pub id: String,
    pub payload: Vec<u8>,
}

/// The entries of the shared order from a position on.
pub struct Follower {
    stream: WatchStream,
    /// Entries of the last answer not handed out yet.
    ready: VecDeque<Ordered>,
}

impl SharedOrder {
    /// Every entry at or after `from`, in order. Fails with
    /// [`OrderError::Compacted`] when etcd no longer holds `from`.
    pub async fn follow(&self, from: u64) -> Result<Follower, OrderError> {
        let start = super::order::revision_of(from).max(1);
        // A trim deletes every entry later: etcd need not send those events.
        let options = (WatchOptions::new().with_prefix().with_start_revision(start))
            .with_filters([WatchFilterType::NoDelete]);
        let watch = self.client().watch_client();
        let mut watch = watch.max_decoding_message_size(super::etcd::MAX_ANSWER);
        let stream = watch.watch(self.prefix(), Some(options)).await?;
        Ok(Follower {
            stream,
            ready: VecDeque::new(),
        })
    }
}

impl Follower {
    /// The next entry, waiting for it to be appended; `None` once etcd
    /// closed the watch.
    pub async fn next(&mut self) -> Result<Option<Ordered>, OrderError> {
        loop {
            if let Some(entry) = self.ready.pop_front() {
                return Ok(Some(entry));
            }
            let Some(answer) = self.stream.message().await? else {
                return Ok(None);
            };
            if answer.compact_revision() > 0 {
                let compacted = super::order::position(answer.compact_revision(), 0);
                return Err(OrderError::Compacted(compacted));
            }
            for event in answer.events() {
                // An entry is created once and never changed; only its
                // creation counts (a trim deletes it later).
                let Some(kv) = event.kv().filter(|_| event.event_type() == EventType::Put) else {
                    continue;
                };
                if let Some(entries) = super::order::entries_of(kv) {
                    self.ready.extend(entries);
                }
            }
        }
    }
}

/// Hands every entry of the order to the backlogs, in order, resuming
/// after the last one whenever the watch breaks.
pub(super) async fn hand_off(member: &Member, order: &SharedOrder, deliveries: &dyn Deliveries) {
    loop {
        let from = deliveries.last_position() + 1;
        let outcome = async {
            let mut follower = order.follow(from).await?;
            let mut handed = 0u32;
            while let Some(entry) = follower.next().await? {
                deliveries.ordered(entry);
                handed = handed.wrapping_add(1);
                if handed.is_multiple_of(FOLLOW_BURST) {
                    // A long watch answer must not hold a worker thread.
                    tokio::task::yield_now().await;
                }
            }
            Ok::<(), OrderError>(())
        };
        match outcome.await {
            Ok(()) => {}
            Err(OrderError::Compacted(through)) => {
                log::error!(
                    "cluster: the order was trimmed past position {from} before this instance read it \
                     (through {through}): its origins' holders have those writes; following on"
                );
                deliveries.start_after(through.saturating_sub(1));
            }
            Err(e) => member.set_reachable(false, &e.to_string()),
        }
        tokio::time::sleep(super::deliveries::RETRY).await;
    }
}
