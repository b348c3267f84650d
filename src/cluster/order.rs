//! A write's one position among every instance's writes: the etcd revision
//! at which its entry was created, under `{name}/log/{id}`.
//!
//! The entry is created in a transaction that only creates it if no entry
//! with that id exists yet, and otherwise reads the existing one back: an
//! append whose reply was lost (a timeout, a leader change, a broken
//! connection) is retried under the same id and gets the same position,
//! never a second one. Revisions only grow, and etcd hands out each once, so
//! two instances appending at once get distinct positions in one order.

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// etcd answered, but not as its API says it does.
    #[error("etcd's answer to an append had no {0}")]
    Malformed(&'static str),
    /// etcd no longer holds the entries asked for: compacted through here.
    #[error("etcd compacted the order through position {0}: the entries asked for are gone")]
    Compacted(u64),
    /// Not connected to etcd (yet, or any more).
    #[error("not connected to etcd")]
    Unavailable,
}

/// Between two attempts at an append whose outcome is unknown.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// The shared order of the pool `name`, on the etcd cluster at `servers`.
pub struct SharedOrder {
    client: Client,
    /// The same client, its requests repeated on another server on failure.
    etcd: super::etcd::Etcd,
    /// `{name}/log/`: every instance of one pool uses the same.
    prefix: String,
    /// How long an append may take, its retries included.
    timeout: Duration,
}

impl SharedOrder {
    /// Connects to `servers` (client URLs). An append takes at most
    /// `timeout`, its retries included; each attempt a quarter of it, so
    /// that one sent to a member that just lost its leader leaves time to
    /// try again once another is elected.
    pub async fn connect(
        servers: &[String],
        name: &str,
        timeout: Duration,
    ) -> Result<Self, OrderError> {
        let client = super::connect(servers, timeout / 4).await?;
        Ok(SharedOrder {
            etcd: super::etcd::Etcd::new(client.clone()),
            client,
            prefix: format!("{name}/log/"),
            timeout,
        })
    }

    /// Stores `payload` as the write `id` (unique per write, chosen by the
    /// instance that took it) and returns its position; appending the same
    /// id again returns the position it got the first time, and stores
    /// nothing. An attempt that fails (a member down, no leader yet, a
    /// reply lost) is retried under the same id until `timeout` has passed;
    /// then the last error is returned, and the write's outcome is unknown
    /// until an append of that id succeeds.
    pub async fn append(&self, id: &str, payload: &[u8]) -> Result<u64, OrderError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            match self.try_append(id, payload).await {
                Err(OrderError::Etcd(_))
                    if tokio::time::Instant::now() + RETRY_PAUSE < deadline =>
                {
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                outcome => return outcome,
            }
        }
    }

    pub(super) fn client(&self) -> &Client {
        &self.client
    }

    pub(super) fn etcd(&self) -> &super::etcd::Etcd {
        &self.etcd
    }

    /// `{name}/log/`.
    pub(super) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// One attempt at [`SharedOrder::append`].
    async fn try_append(&self, id: &str, payload: &[u8]) -> Result<u64, OrderError> {
        let key = format!("{}{id}", self.prefix).into_bytes();
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), payload, None)])
            .or_else([TxnOp::get(key, None)]);
        let response = self.client.kv_client().txn(txn).await?;
        let position = if response.succeeded() {
            // The transaction's revision is the one the entry was created at.
            let header = response.header().ok_or(OrderError::Malformed("header"))?;
            header.revision()
        } else {
            let existing = response.op_responses().into_iter().find_map(|r| match r {
                TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.create_revision()),
                _ => None,
            });
            existing.ok_or(OrderError::Malformed("existing entry"))?
        };
        u64::try_from(position).map_err(|_| OrderError::Malformed("positive revision"))
    }
}
