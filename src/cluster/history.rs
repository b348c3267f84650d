//! What etcd still holds of the shared order (#25): a range of it read
//! back (an origin whose deliveries this instance takes over resumes from
//! its recorded progress), counted, and trimmed below what every origin
//! has applied, with etcd's history compacted there too.

use super::follow::Ordered;
use super::member::{Connected, Member};
use super::order::{
    count_in_key, entries_of, last_position_of, revision_of, OrderError, SharedOrder,
};
use etcd_client::{DeleteOptions, GetOptions, KeyValue, SortOrder, SortTarget, Txn, TxnOp};

/// Between two trims of the order.
const TRIM_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Entries deleted in one transaction (etcd's default `max-txn-ops` is 128).
const DELETES_PER_TXN: usize = 128;
/// Batches one read of entries asks for (each holds up to about 2 MiB).
const BATCHES_PER_READ: i64 = 16;
/// Keys one count (or trim) asks for.
const KEYS_PER_READ: i64 = 10_000;

impl SharedOrder {
    /// Up to `max` entries at positions `from` through `through`, in order.
    pub async fn read(
        &self,
        from: u64,
        through: u64,
        max: usize,
    ) -> Result<Vec<Ordered>, OrderError> {
        let mut entries = Vec::new();
        let options = GetOptions::new().with_limit(BATCHES_PER_READ);
        self.each_batch(from, through, options, |kv| {
            let batch = entries_of(kv).unwrap_or_default();
            let wanted = batch
                .into_iter()
                .filter(|e| (from..=through).contains(&e.position));
            entries.extend(wanted);
            entries.len() < max
        })
        .await?;
        entries.truncate(max);
        Ok(entries)
    }

    /// How many entries sit at positions `from` through `through` (whole
    /// batches at either end), counted from their keys.
    pub async fn count(&self, from: u64, through: u64) -> Result<u64, OrderError> {
        let mut count = 0;
        let options = GetOptions::new().with_keys_only().with_limit(KEYS_PER_READ);
        self.each_batch(from, through, options, |kv| {
            count += count_in_key(kv.key());
            true
        })
        .await?;
        Ok(count)
    }

    /// Shows `visit` each batch that holds positions `from` through
    /// `through`, in order, as many per request as `options` allow, until
    /// it answers false.
    async fn each_batch(
        &self,
        from: u64,
        through: u64,
        options: GetOptions,
        mut visit: impl FnMut(&KeyValue) -> bool,
    ) -> Result<(), OrderError> {
        let mut revision = revision_of(from);
        if from > through {
            return Ok(());
        }
        loop {
            let options = (options.clone())
                .with_prefix()
                .with_min_create_revision(revision)
                .with_max_create_revision(revision_of(through))
                .with_sort(SortTarget::Create, SortOrder::Ascend);
            let answer = self
                .etcd()
                .get(self.prefix().as_bytes(), Some(options))
                .await?;
            for kv in answer.kvs() {
                revision = kv.create_revision() + 1;
                if !visit(kv) {
                    return Ok(());
                }
            }
            if !answer.more() {
                return Ok(());
            }
        }
    }

    /// The last position etcd holds now: every entry appended so far is at
    /// or below it.
    pub async fn head(&self) -> Result<u64, OrderError> {
        let options = GetOptions::new().with_prefix().with_count_only();
        let answer = self
            .etcd()
            .get(self.prefix().as_bytes(), Some(options))
            .await?;
        let header = answer.header().ok_or(OrderError::Malformed("header"))?;
        Ok(last_position_of(header.revision()))
    }

    /// Deletes every entry of a transaction wholly below `below` and
    /// compacts etcd's history there; returns how many entries it deleted.
    pub async fn trim(&self, below: u64) -> Result<u64, OrderError> {
        let revision = revision_of(below);
        if revision <= 1 {
            return Ok(0);
        }
        let (mut keys, mut entries) = (Vec::new(), 0);
        let options = GetOptions::new().with_keys_only().with_limit(KEYS_PER_READ);
        self.each_batch(0, last_position_of(revision - 1), options, |kv| {
            keys.push(kv.key().to_vec());
            entries += count_in_key(kv.key());
            true
        })
        .await?;
        for chunk in keys.chunks(DELETES_PER_TXN) {
            let deletes = chunk
                .iter()
                .map(|key| TxnOp::delete(key.clone(), None::<DeleteOptions>));
            let txn = Txn::new().and_then(deletes.collect::<Vec<_>>());
            self.etcd().txn(txn).await?;
        }
        match self.etcd().compact(revision).await {
            Ok(_) => {}
            // Compacted there (or past it) already, by us or by etcd's own
            // auto-compaction.
            Err(e) if e.to_string().contains("compacted") => {}
            Err(e) => return Err(e.into()),
        }
        Ok(entries)
    }
}

/// Every few seconds, on the first live instance only: deletes the
/// entries every origin but the detached ones has applied (a task of its
/// own: deleting a long backlog takes many requests, which must not delay
/// the holds' renewals).
pub(super) async fn trimming(member: &Member, connected: &Connected, origins: Vec<String>) {
    loop {
        tokio::time::sleep(TRIM_INTERVAL).await;
        let trimmed = async {
            let live = connected.registry.live().await?;
            if live.keys().next() != Some(&member.config().instance) {
                return Ok(0);
            }
            let holds = &connected.holds;
            let (detached, progress) = tokio::join!(holds.detached(), holds.all_progress());
            let (detached, progress) = (detached?, progress?);
            let mut lowest = u64::MAX;
            for origin in origins.iter().filter(|o| !detached.contains(*o)) {
                match progress.get(origin) {
                    Some(position) => lowest = lowest.min(*position),
                    // Never delivered to: it needs the whole order.
                    None => return Ok(0),
                }
            }
            match lowest {
                0 | u64::MAX => Ok(0),
                lowest => connected.order.trim(lowest + 1).await,
            }
        };
        match trimmed.await {
            Ok(0) => {}
            Ok(deleted) => log::debug!("cluster: trimmed {deleted} entries of the order"),
            Err(e) => log::debug!("cluster: cannot trim the order now: {e}"),
        }
    }
}
