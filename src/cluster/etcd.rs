//! etcd's requests as the cluster makes them: each sent again, to the next
//! server, when one fails. The client spreads requests over the servers
//! listed and does not skip one that is down (etcd-client #39: "it's your
//! responsibility to handle the etcd cluster problem"), so without this a
//! third of the requests fail while one member of three is dead.
//!
//! Every request here is safe to repeat: reads, renewals, transactions
//! guarded by their comparisons, puts of the same value. A lease granted
//! twice leaves one unused, which etcd lets expire.

use etcd_client::{
    Client, CompactionOptions, Error, GetOptions, GetResponse, PutOptions, Txn, TxnResponse,
};
use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

/// The largest answer taken from etcd: a read of the order holds up to 16
/// batches of up to about 2 MiB each, a watch message up to 1,000
/// revisions' (gRPC's default of 4 MiB would refuse them).
pub const MAX_ANSWER: usize = 256 << 20;
/// Attempts per request: one per server of a three-member cluster.
const ATTEMPTS: u32 = 3;
/// Between two attempts.
const PAUSE: Duration = Duration::from_millis(20);

#[derive(Clone)]
pub struct Etcd {
    client: Client,
}

async fn retried<T, Fut>(mut request: impl FnMut() -> Fut) -> Result<T, Error>
where
    Fut: Future<Output = Result<T, Error>>,
{
    let mut attempt = 1;
    loop {
        match request().await {
            Err(_) if attempt < ATTEMPTS => {
                attempt += 1;
                tokio::time::sleep(PAUSE).await;
            }
            outcome => return outcome,
        }
    }
}

impl Etcd {
    pub fn new(client: Client) -> Self {
        Etcd { client }
    }

    /// The client itself, for what cannot be repeated this way (watches).
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub async fn txn(&self, txn: Txn) -> Result<TxnResponse, Error> {
        retried(|| {
            let (mut kv, txn) = (self.client.kv_client(), txn.clone());
            async move { kv.txn(txn).await }
        })
        .await
    }

    pub async fn get(&self, key: &[u8], options: Option<GetOptions>) -> Result<GetResponse, Error> {
        retried(|| {
            let kv = self
                .client
                .kv_client()
                .max_decoding_message_size(MAX_ANSWER);
            let (mut kv, options) = (kv, options.clone());
            async move { kv.get(key, options).await }
        })
        .await
    }

    /// Every key under `prefix`, the prefix cut off, with its value as text.
    pub async fn under(&self, prefix: &str) -> Result<BTreeMap<String, String>, Error> {
        let options = GetOptions::new().with_prefix();
        let answer = self.get(prefix.as_bytes(), Some(options)).await?;
        let entries = answer.kvs().iter().filter_map(|kv| {
            let name = kv.key().get(prefix.len()..)?;
            Some((
                String::from_utf8_lossy(name).into_owned(),
                String::from_utf8_lossy(kv.value()).into_owned(),
            ))
        });
        Ok(entries.collect())
    }

    pub async fn put(
        &self,
        key: &[u8],
        value: &[u8],
        options: Option<PutOptions>,
    ) -> Result<(), Error> {
        retried(|| {
            let (mut kv, options) = (self.client.kv_client(), options.clone());
            async move { kv.put(key, value, options).await.map(|_| ()) }
        })
        .await
    }

    /// A new lease of `ttl` seconds; its id.
    pub async fn grant(&self, ttl: i64) -> Result<i64, Error> {
        retried(|| {
            let mut leases = self.client.lease_client();
            async move { leases.grant(ttl, None).await.map(|l| l.id()) }
        })
        .await
    }

    pub async fn revoke(&self, lease: i64) -> Result<(), Error> {
        retried(|| {
            let mut leases = self.client.lease_client();
            async move { leases.revoke(lease).await.map(|_| ()) }
        })
        .await
    }

    /// Renews `lease` once; false when etcd no longer has it.
    pub async fn keep_alive(&self, lease: i64) -> Result<bool, Error> {
        let renewed = retried(|| {
            let mut leases = self.client.lease_client();
            async move {
                let (mut keeper, mut answers) = leases.keep_alive(lease).await?;
                keeper.keep_alive().await?;
                Ok(answers.message().await?.is_some_and(|a| a.ttl() > 0))
            }
        })
        .await;
        match renewed {
            // etcd's answer to a renewal of an expired lease.
            Err(e) if e.to_string().contains("lease not found") => Ok(false),
            other => other,
        }
    }

    pub async fn compact(&self, revision: i64) -> Result<(), Error> {
        retried(|| {
            let mut kv = self.client.kv_client();
            async move {
                let options = Some(CompactionOptions::new());
                kv.compact(revision, options).await.map(|_| ())
            }
        })
        .await
    }
}
