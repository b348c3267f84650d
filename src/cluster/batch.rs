//! Appends that arrive together share one etcd transaction and one key:
//! etcd's cost is per request (a raft proposal, a WAL `fdatasync` shared by
//! what is in flight, a bbolt commit) and per key (its index, its watch
//! event), so a batch of 60 writes costs little more than a single write.
//! An append waits while [`IN_FLIGHT`] transactions are already on their
//! way, and whatever queued meanwhile leaves in the next one (group commit,
//! as the local journal does). One that finds none on its way waits up to
//! `cluster.linger` for company (Kafka's `linger.ms`): at a moderate rate
//! writes otherwise come one per transaction, and etcd's cost is per
//! transaction.
//!
//! A transaction creates its batch's one key only if it does not exist,
//! and otherwise reads it back: a batch whose reply was lost is retried
//! under the same key and its writes get the same positions (an entry's
//! place in the batch, with the revision, makes its position).

use super::follow::Ordered;
use super::order::{batch_key, batch_value, entries_of, position, OrderError};
use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;

/// Entries per batch (a position leaves 16 bits for the index).
const MAX_ENTRIES: usize = 128;
/// Bytes per transaction, the first entry aside (etcd refuses requests
/// above 1.5 MiB by default).
const MAX_BYTES: usize = 1 << 20;
/// Transactions on their way to etcd at once: one, so that whatever
/// arrives meanwhile gathers into the next. etcd's cost per transaction
/// (its scheduling, its `fdatasync`) outweighs a wait of one round trip:
/// two instances on a one-member etcd took 10.0k writes/s with one, 8.9k
/// with two, 7.7k with four (`scripts/bench-writes.sh`, cluster1).
const IN_FLIGHT: usize = 1;
/// Between two attempts at a batch whose outcome is unknown.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Appends waiting for a transaction.
const QUEUE: usize = 65_536;

/// One write on its way into the order.
pub struct Append {
    id: String,
    payload: Vec<u8>,
    position: oneshot::Sender<Result<u64, OrderError>>,
}

impl Append {
    /// The append of `payload` as `id`, and where its position arrives.
    pub fn new(id: &str, payload: &[u8]) -> (Self, oneshot::Receiver<Result<u64, OrderError>>) {
        let (position, answer) = oneshot::channel();
        let append = Append {
            id: id.to_owned(),
            payload: payload.to_vec(),
            position,
        };
        (append, answer)
    }
}

/// How batches are made and sent.
#[derive(Clone, Copy)]
pub struct Batching {
    /// A batch is retried until this has passed.
    pub timeout: Duration,
    /// How long an append that finds no transaction on its way waits for
    /// others to join it.
    pub linger: Duration,
}

/// Starts batching appends to the order under `prefix`.
pub fn start(client: Client, prefix: String, batching: Batching) -> mpsc::Sender<Append> {
    let (appends, queue) = mpsc::channel(QUEUE);
    tokio::spawn(run(client, Arc::new(prefix), batching, queue));
    appends
}

async fn run(
    client: Client,
    prefix: Arc<String>,
    batching: Batching,
    mut queue: mpsc::Receiver<Append>,
) {
    let timeout = batching.timeout;
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = queue.recv().await {
        let gather_until = Instant::now() + batching.linger;
        // Waiting for a free slot is when company gathers.
        let Ok(slot) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = first.payload.len();
        let mut batch = vec![first];
        while batch.len() < MAX_ENTRIES && bytes < MAX_BYTES {
            let next = match queue.try_recv() {
                Ok(append) => Some(append),
                // Nothing queued: linger, unless the wait for the slot did.
                Err(mpsc::error::TryRecvError::Empty) if Instant::now() < gather_until => {
                    tokio::time::timeout_at(gather_until, queue.recv())
                        .await
                        .ok()
                        .flatten()
                }
                Err(_) => None,
            };
            match next {
                Some(append) if bytes + append.payload.len() <= MAX_BYTES => {
                    bytes += append.payload.len();
                    batch.push(append);
                }
                Some(append) => {
                    // Too large for this one: it leads the next.
                    let (client, prefix) = (client.clone(), prefix.clone());
                    tokio::spawn(commit(client, prefix, timeout, vec![append], None));
                    break;
                }
                None => break,
            }
        }
        tokio::spawn(commit(
            client.clone(),
            prefix.clone(),
            timeout,
            batch,
            Some(slot),
        ));
    }
}

/// Stores `batch` and answers each append with its position, retrying
/// under the same ids until `timeout` has passed.
async fn commit(
    client: Client,
    prefix: Arc<String>,
    timeout: Duration,
    batch: Vec<Append>,
    _slot: Option<tokio::sync::OwnedSemaphorePermit>,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    let outcome = loop {
        match attempt(&client, &prefix, &batch).await {
            Err(OrderError::Etcd(_)) if tokio::time::Instant::now() + RETRY_PAUSE < deadline => {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            outcome => break outcome,
        }
    };
    match outcome {
        Ok(positions) => {
            for (append, position) in batch.into_iter().zip(positions) {
                let answer = position.ok_or(OrderError::Malformed("entry of a retried batch"));
                let _ = append.position.send(answer);
            }
        }
        Err(error) => {
            let why = error.to_string();
            for append in batch {
                let _ = append.position.send(Err(OrderError::Failed(why.clone())));
            }
        }
    }
}

/// One transaction for `batch`: each entry's position (`None` for one a
/// retried batch lacks, which only a reused id could cause).
async fn attempt(
    client: &Client,
    prefix: &str,
    batch: &[Append],
) -> Result<Vec<Option<u64>>, OrderError> {
    let first = batch.first().ok_or(OrderError::Malformed("entry"))?;
    let key = batch_key(prefix, &first.id, batch.len());
    let entries: Vec<(&str, &[u8])> = (batch.iter())
        .map(|append| (append.id.as_str(), append.payload.as_slice()))
        .collect();
    let txn = Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(key.clone(), batch_value(&entries), None)])
        .or_else([TxnOp::get(key, None)]);
    let response = client.kv_client().txn(txn).await?;
    if response.succeeded() {
        // Created at the transaction's revision, in the batch's order.
        let header = response.header().ok_or(OrderError::Malformed("header"))?;
        let revision = header.revision();
        let indexes = 0..u16::try_from(batch.len()).unwrap_or(u16::MAX);
        return Ok(indexes
            .map(|index| Some(position(revision, index)))
            .collect());
    }
    // Stored before (a lost reply): each entry's position, as it was.
    log::info!(
        "cluster: a batch of {} writes whose reply was lost was in etcd already: they keep their positions",
        batch.len()
    );
    let stored: Vec<Ordered> = (response.op_responses().into_iter())
        .filter_map(|r| match r {
            TxnOpResponse::Get(get) => get.kvs().first().and_then(entries_of),
            _ => None,
        })
        .flatten()
        .collect();
    Ok(batch
        .iter()
        .map(|append| {
            let entry = stored.iter().find(|entry| entry.id == append.id);
            entry.map(|entry| entry.position)
        })
        .collect())
}
