//! A write's one position among every instance's writes: the etcd revision
//! of the transaction that created its entry `{name}/log/{id}`, and its
//! place in that transaction (appends that arrive together share one,
//! [`super::batch`]): `revision << 16 | index`, the index stored with the
//! entry.
//!
//! The entry is created in a transaction that only creates it if no entry
//! with that id exists yet, and otherwise reads the existing one back: an
//! append whose reply was lost (a timeout, a leader change, a broken
//! connection) is retried under the same id and gets the same position,
//! never a second one. Revisions only grow, and etcd hands out each once, so
//! two instances appending at once get distinct positions in one order.

use super::follow::Ordered;
use etcd_client::{Client, KeyValue};
use std::time::Duration;

/// Bits of a position that hold the entry's index in its transaction.
const INDEX_BITS: u32 = 16;

/// The position of the entry `index` of the transaction at `revision`.
pub fn position(revision: i64, index: u16) -> u64 {
    (u64::try_from(revision).unwrap_or(0) << INDEX_BITS) | u64::from(index)
}

/// The etcd revision that holds `position`.
pub fn revision_of(position: u64) -> i64 {
    i64::try_from(position >> INDEX_BITS).unwrap_or(i64::MAX)
}

/// The last position etcd's `revision` can hold.
pub fn last_position_of(revision: i64) -> u64 {
    position(revision, u16::MAX)
}

/// What an entry's value holds: its index, then the write.
pub fn entry_value(index: u16, payload: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(2 + payload.len());
    value.extend_from_slice(&index.to_le_bytes());
    value.extend_from_slice(payload);
    value
}

/// The entry `kv` of the order (under a prefix of `prefix_len` bytes).
pub fn entry_of(kv: &KeyValue, prefix_len: usize) -> Option<Ordered> {
    let value = kv.value();
    let index = u16::from_le_bytes([*value.first()?, *value.get(1)?]);
    Some(Ordered {
        position: position(kv.create_revision(), index),
        id: String::from_utf8_lossy(kv.key().get(prefix_len..)?).into_owned(),
        payload: value[2..].to_vec(),
    })
}

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
    /// The batch this append was part of failed (why, as etcd said).
    #[error("{0}")]
    Failed(String),
}

/// The shared order of the pool `name`, on the etcd cluster at `servers`.
pub struct SharedOrder {
    client: Client,
    /// The same client, its requests repeated on another server on failure.
    etcd: super::etcd::Etcd,
    /// `{name}/log/`: every instance of one pool uses the same.
    prefix: String,
    /// Appends on their way into a transaction ([`super::batch`]).
    appends: tokio::sync::mpsc::Sender<super::batch::Append>,
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
        let prefix = format!("{name}/log/");
        let appends = super::batch::start(client.clone(), prefix.clone(), timeout);
        Ok(SharedOrder {
            etcd: super::etcd::Etcd::new(client.clone()),
            client,
            prefix,
            appends,
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
        let (append, position) = super::batch::Append::new(id, payload);
        self.appends
            .send(append)
            .await
            .map_err(|_| OrderError::Unavailable)?;
        position.await.unwrap_or(Err(OrderError::Unavailable))
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
}
