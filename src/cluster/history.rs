//! What etcd still holds of the shared order (#25): a range of it read
//! back (an origin whose deliveries this instance takes over resumes from
//! its recorded progress), counted, and trimmed below what every origin
//! has applied, with etcd's history compacted there too.

use super::follow::Ordered;
use super::order::{OrderError, SharedOrder};
use etcd_client::{DeleteOptions, GetOptions, SortOrder, SortTarget, Txn, TxnOp};

/// Entries deleted in one transaction (etcd's default `max-txn-ops` is 128).
const DELETES_PER_TXN: usize = 128;

impl SharedOrder {
    /// Up to `max` entries at positions `from` through `through`, in order.
    pub async fn read(
        &self,
        from: u64,
        through: u64,
        max: usize,
    ) -> Result<Vec<Ordered>, OrderError> {
        if from > through || max == 0 {
            return Ok(Vec::new());
        }
        let options = GetOptions::new()
            .with_prefix()
            .with_min_create_revision(revision(from))
            .with_max_create_revision(revision(through))
            .with_sort(SortTarget::Create, SortOrder::Ascend)
            .with_limit(i64::try_from(max).unwrap_or(i64::MAX));
        let answer = self
            .etcd()
            .get(self.prefix().as_bytes(), Some(options))
            .await?;
        let prefix_len = self.prefix().len();
        let entries = answer.kvs().iter().filter_map(|kv| {
            Some(Ordered {
                position: u64::try_from(kv.create_revision()).ok()?,
                id: String::from_utf8_lossy(kv.key().get(prefix_len..)?).into_owned(),
                payload: kv.value().to_vec(),
            })
        });
        Ok(entries.collect())
    }

    /// How many entries sit at positions `from` through `through`.
    pub async fn count(&self, from: u64, through: u64) -> Result<u64, OrderError> {
        if from > through {
            return Ok(0);
        }
        let options = GetOptions::new()
            .with_prefix()
            .with_count_only()
            .with_min_create_revision(revision(from))
            .with_max_create_revision(revision(through));
        let answer = self
            .etcd()
            .get(self.prefix().as_bytes(), Some(options))
            .await?;
        Ok(u64::try_from(answer.count()).unwrap_or(0))
    }

    /// etcd's revision now: every entry appended so far is at or below it.
    pub async fn head(&self) -> Result<u64, OrderError> {
        let options = GetOptions::new().with_prefix().with_count_only();
        let answer = self
            .etcd()
            .get(self.prefix().as_bytes(), Some(options))
            .await?;
        let header = answer.header().ok_or(OrderError::Malformed("header"))?;
        u64::try_from(header.revision()).map_err(|_| OrderError::Malformed("revision"))
    }

    /// Deletes every entry below `below` and compacts etcd's history there;
    /// returns how many entries it deleted.
    pub async fn trim(&self, below: u64) -> Result<usize, OrderError> {
        if below <= 1 {
            return Ok(0);
        }
        let options = GetOptions::new()
            .with_prefix()
            .with_keys_only()
            .with_max_create_revision(revision(below - 1));
        let answer = self
            .etcd()
            .get(self.prefix().as_bytes(), Some(options))
            .await?;
        let keys: Vec<Vec<u8>> = answer.kvs().iter().map(|kv| kv.key().to_vec()).collect();
        for chunk in keys.chunks(DELETES_PER_TXN) {
            let deletes = chunk
                .iter()
                .map(|key| TxnOp::delete(key.clone(), None::<DeleteOptions>));
            let txn = Txn::new().and_then(deletes.collect::<Vec<_>>());
            self.etcd().txn(txn).await?;
        }
        let compacted = self.etcd().compact(revision(below)).await;
        match compacted {
            Ok(_) => {}
            // Compacted there (or past it) already, by us or by etcd's own
            // auto-compaction.
            Err(e) if e.to_string().contains("compacted") => {}
            Err(e) => return Err(e.into()),
        }
        Ok(keys.len())
    }
}

fn revision(position: u64) -> i64 {
    i64::try_from(position).unwrap_or(i64::MAX)
}
