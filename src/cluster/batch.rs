//! Appends that arrive together share one etcd transaction: etcd's cost is
//! per request (a raft proposal, a WAL `fdatasync` shared by what is in
//! flight, a bbolt commit), so a transaction of 60 writes costs little more
//! than one of a single write. Nothing waits for company: an append waits
//! only while [`IN_FLIGHT`] transactions are already on their way, and
//! whatever queued meanwhile leaves in the next one (group commit, as the
//! local journal does).
//!
//! A transaction creates every entry of its batch only if none exists, and
//! otherwise reads them back: a batch whose reply was lost is retried with
//! the same ids and gets the same positions (each entry stores its index in
//! the transaction, which with the revision makes its position).

use super::order::{entry_of, entry_value, position, OrderError};
use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Entries per transaction (etcd's default `--max-txn-ops` is 128).
const MAX_ENTRIES: usize = 128;
/// Bytes per transaction, the first entry aside (etcd refuses requests
/// above 1.5 MiB by default).
const MAX_BYTES: usize = 1 << 20;
/// Transactions on their way to etcd at once.
const IN_FLIGHT: usize = 4;
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

/// Starts batching appends to the order under `prefix`; each batch is
/// retried until `timeout` has passed.
pub fn start(client: Client, prefix: String, timeout: Duration) -> mpsc::Sender<Append> {
    let (appends, queue) = mpsc::channel(QUEUE);
    tokio::spawn(run(client, Arc::new(prefix), timeout, queue));
    appends
}

async fn run(
    client: Client,
    prefix: Arc<String>,
    timeout: Duration,
    mut queue: mpsc::Receiver<Append>,
) {
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = queue.recv().await {
        // Waiting for a free slot is when company gathers.
        let Ok(slot) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = first.payload.len();
        let mut batch = vec![first];
        while batch.len() < MAX_ENTRIES && bytes < MAX_BYTES {
            match queue.try_recv() {
                Ok(append) if bytes + append.payload.len() <= MAX_BYTES => {
                    bytes += append.payload.len();
                    batch.push(append);
                }
                Ok(append) => {
                    // Too large for this one: it leads the next.
                    let (client, prefix) = (client.clone(), prefix.clone());
                    tokio::spawn(commit(client, prefix, timeout, vec![append], None));
                    break;
                }
                Err(_) => break,
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
    let keys: Vec<Vec<u8>> = (batch.iter())
        .map(|append| format!("{prefix}{}", append.id).into_bytes())
        .collect();
    let absent = keys
        .iter()
        .map(|key| Compare::create_revision(key.clone(), CompareOp::Equal, 0));
    let puts = batch
        .iter()
        .zip(&keys)
        .enumerate()
        .map(|(index, (append, key))| {
            let index = u16::try_from(index).unwrap_or(u16::MAX);
            TxnOp::put(key.clone(), entry_value(index, &append.payload), None)
        });
    let gets = keys.iter().map(|key| TxnOp::get(key.clone(), None));
    let txn = Txn::new()
        .when(absent.collect::<Vec<_>>())
        .and_then(puts.collect::<Vec<_>>())
        .or_else(gets.collect::<Vec<_>>());
    let response = client.kv_client().txn(txn).await?;
    if response.succeeded() {
        // Every entry was created at the transaction's revision.
        let header = response.header().ok_or(OrderError::Malformed("header"))?;
        let revision = header.revision();
        let indexes = 0..u16::try_from(batch.len()).unwrap_or(u16::MAX);
        return Ok(indexes
            .map(|index| Some(position(revision, index)))
            .collect());
    }
    // Stored before (a lost reply): each entry's position, as it was.
    let stored = response.op_responses().into_iter().map(|r| match r {
        TxnOpResponse::Get(get) => get
            .kvs()
            .first()
            .and_then(|kv| entry_of(kv, 0))
            .map(|e| e.position),
        _ => None,
    });
    Ok(stored.collect())
}
