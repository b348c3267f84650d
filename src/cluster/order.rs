//! A write's one position among every instance's writes: the etcd revision
//! of the transaction that created its entry, and its place in that
//! transaction: `revision << 16 | index`. Appends that arrive together
//! share one transaction and one key, `{name}/log/{first id}/{count}`
//! ([`super::batch`]): etcd's cost is per key as much as per request.
//!
//! The batch is created in a transaction that only creates it if its key
//! does not exist yet, and otherwise reads the existing one back: a batch
//! whose reply was lost (a timeout, a leader change, a broken connection)
//! is retried under the same key and its writes get the same positions,
//! never second ones. Revisions only grow, and etcd hands out each once, so
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

/// The first byte of a batch's value: how the rest is laid out.
const FORMAT: u8 = 1;

/// The key of a batch of `count` entries whose first is `first_id`: the
/// count rides in the key, so that counting entries needs no values.
pub fn batch_key(prefix: &str, first_id: &str, count: usize) -> Vec<u8> {
    format!("{prefix}{first_id}/{count}").into_bytes()
}

/// How many entries the batch at `key` holds (0 for a key not a batch's).
pub fn count_in_key(key: &[u8]) -> u64 {
    let count = key.rsplit(|b| *b == b'/').next().unwrap_or_default();
    (std::str::from_utf8(count).ok())
        .and_then(|count| count.parse().ok())
        .unwrap_or(0)
}

/// What a batch's value holds: [`FORMAT`], then each entry's id and write,
/// each after its length, in position order.
pub fn batch_value(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let size: usize = entries.iter().map(|(id, p)| 6 + id.len() + p.len()).sum();
    let mut value = Vec::with_capacity(1 + size);
    value.push(FORMAT);
    for (id, payload) in entries {
        let id_len = u16::try_from(id.len()).unwrap_or(u16::MAX);
        value.extend_from_slice(&id_len.to_le_bytes());
        value.extend_from_slice(&id.as_bytes()[..usize::from(id_len)]);
        let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        value.extend_from_slice(&len.to_le_bytes());
        value.extend_from_slice(payload);
    }
    value
}

/// The entries of the batch `kv`, in position order (`None` if its value
/// is not a batch's).
pub fn entries_of(kv: &KeyValue) -> Option<Vec<Ordered>> {
    decode_batch(kv.value(), kv.create_revision())
}

/// The entries of a batch's `value`, created at `revision`.
fn decode_batch(value: &[u8], revision: i64) -> Option<Vec<Ordered>> {
    let mut rest = value.strip_prefix(&[FORMAT])?;
    let mut entries = Vec::new();
    while !rest.is_empty() {
        let (id, after) = split_field(rest, 2)?;
        let (payload, after) = split_field(after, 4)?;
        rest = after;
        let index = u16::try_from(entries.len()).ok()?;
        entries.push(Ordered {
            position: position(revision, index),
            id: String::from_utf8_lossy(id).into_owned(),
            payload: payload.to_vec(),
        });
    }
    Some(entries)
}

/// A field after its little-endian length of `width` bytes, and the rest.
fn split_field(bytes: &[u8], width: usize) -> Option<(&[u8], &[u8])> {
    let mut len = [0u8; 8];
    len[..width].copy_from_slice(bytes.get(..width)?);
    let len = usize::try_from(u64::from_le_bytes(len)).ok()?;
    let end = width.checked_add(len)?;
    Some((bytes.get(width..end)?, bytes.get(end..)?))
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
        cluster: &crate::config::Cluster,
        timeout: Duration,
    ) -> Result<Self, OrderError> {
        let client = super::connect(cluster, timeout / 4).await?;
        let prefix = format!("{}/log/", cluster.name);
        let batching = super::batch::Batching {
            timeout,
            linger: cluster.linger,
        };
        let appends = super::batch::start(client.clone(), prefix.clone(), batching);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_reads_back_as_its_entries_in_order() {
        let big = vec![7u8; 70_000];
        let entries: [(&str, &[u8]); 3] =
            [("hh1:1:0", b"PUT /a"), ("hh1:1:1", b""), ("hh2:9:5", &big)];
        let decoded = decode_batch(&batch_value(&entries), 42).expect("a batch");
        let read: Vec<(u64, &str, &[u8])> = (decoded.iter())
            .map(|e| (e.position, e.id.as_str(), e.payload.as_slice()))
            .collect();
        let expected: Vec<(u64, &str, &[u8])> = (entries.iter().enumerate())
            .map(|(i, (id, payload))| (position(42, i as u16), *id, *payload))
            .collect();
        assert_eq!(read, expected);
        assert_eq!(revision_of(decoded[2].position), 42);
    }

    #[test]
    fn a_cut_or_foreign_value_is_no_batch() {
        let value = batch_value(&[("hh1:1:0", b"PUT /a")]);
        assert!(decode_batch(&value[..value.len() - 1], 1).is_none());
        assert!(decode_batch(b"\x00\x01PUT", 1).is_none());
    }

    #[test]
    fn the_key_counts_the_entries() {
        let key = batch_key("shop/log/", "hh1:1:0", 17);
        assert_eq!(key, b"shop/log/hh1:1:0/17");
        assert_eq!(count_in_key(&key), 17);
        assert_eq!(count_in_key(b"shop/log/odd"), 0);
    }
}
