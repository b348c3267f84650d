//! Which instance must hold an origin's deliveries for a while, whatever
//! the spread says (#25): a resync cuts an origin and its donor at one
//! point of the order, which only an instance holding both can do, so the
//! instance asked for one pins both to itself until it ends, and the
//! holders hand them over as when the spread moves.
//!
//! A pin (`{name}/pins/{origin}` = instance) counts only while its
//! instance is live: one left by an instance that died moves nothing, and
//! the instance clears its own when it starts again (a restart aborts a
//! resync, as in a single instance).

use super::etcd::Etcd;
use super::member::Member;
use super::order::OrderError;
use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
use std::collections::BTreeMap;
use std::time::Duration;

pub struct Pins {
    client: Etcd,
    prefix: String,
}

impl Pins {
    pub fn new(client: Client, name: &str) -> Self {
        Pins {
            client: Etcd::new(client),
            prefix: format!("{name}/pins/"),
        }
    }

    fn key(&self, origin: &str) -> String {
        format!("{}{origin}", self.prefix)
    }

    /// Pins every one of `origins` to `instance`, or none: `Ok(Err(other))`
    /// names the instance that pinned one of them first.
    pub async fn pin(
        &self,
        origins: &[&str],
        instance: &str,
    ) -> Result<Result<(), String>, OrderError> {
        let unpinned = origins
            .iter()
            .map(|o| Compare::create_revision(self.key(o), CompareOp::Equal, 0));
        let pins = origins
            .iter()
            .map(|o| TxnOp::put(self.key(o), instance, None));
        let current = origins.iter().map(|o| TxnOp::get(self.key(o), None));
        let txn = Txn::new()
            .when(unpinned.collect::<Vec<_>>())
            .and_then(pins.collect::<Vec<_>>())
            .or_else(current.collect::<Vec<_>>());
        let answer = self.client.txn(txn).await?;
        if answer.succeeded() {
            return Ok(Ok(()));
        }
        let holders: Vec<String> = (answer.op_responses().into_iter())
            .filter_map(|r| match r {
                TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.value().to_vec()),
                _ => None,
            })
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .collect();
        if let Some(other) = holders.into_iter().find(|h| h != instance) {
            return Ok(Err(other));
        }
        // Pinned here already (a resync asked again): pin the rest too.
        for origin in origins {
            (self.client)
                .put(self.key(origin).as_bytes(), instance.as_bytes(), None)
                .await?;
        }
        Ok(Ok(()))
    }

    /// Removes `instance`'s pins on `origins` (another's stay).
    pub async fn unpin(&self, origins: &[String], instance: &str) -> Result<(), OrderError> {
        for origin in origins {
            let txn = Txn::new()
                .when([Compare::value(self.key(origin), CompareOp::Equal, instance)])
                .and_then([TxnOp::delete(self.key(origin), None)]);
            self.client.txn(txn).await?;
        }
        Ok(())
    }

    /// Every pin: origin → instance.
    pub async fn all(&self) -> Result<BTreeMap<String, String>, OrderError> {
        Ok(self.client.under(&self.prefix).await?)
    }

    /// Removes every pin of `instance` (it starts again: its resyncs ended).
    pub async fn clear(&self, instance: &str) -> Result<(), OrderError> {
        let pins = self.all().await?;
        let mine: Vec<String> = (pins.into_iter())
            .filter(|(_, holder)| holder == instance)
            .map(|(origin, _)| origin)
            .collect();
        self.unpin(&mine, instance).await
    }
}

impl Member {
    /// Pins `origins` to this instance and waits (at most two leases and a
    /// little) until it holds all of them. `Err` says why not: another
    /// instance's pin, etcd, or a holder that did not let go in time
    /// (whatever was pinned is unpinned then).
    pub async fn pin_here(&self, origins: &[&str]) -> Result<(), String> {
        let Some(connected) = self.connected.load_full() else {
            return Err("etcd is not reachable".into());
        };
        let instance = &self.config.instance;
        match connected.pins.pin(origins, instance).await {
            Ok(Ok(())) => {}
            Ok(Err(other)) => return Err(format!("instance {other} runs a resync of one of them")),
            Err(e) => return Err(format!("etcd did not take the pins ({e})")),
        }
        let patience = self.config.lease * 2 + Duration::from_secs(2);
        let held = tokio::time::timeout(patience, async {
            while !origins.iter().all(|o| self.holds(o)) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        if held.await.is_err() {
            let owned: Vec<String> = origins.iter().map(|o| o.to_string()).collect();
            self.unpin_here(owned);
            return Err(format!(
                "their holders did not hand them over within {patience:?}"
            ));
        }
        Ok(())
    }

    /// Removes this instance's pins on `origins`, in the background (the
    /// spread then moves them back).
    pub fn unpin_here(&self, origins: Vec<String>) {
        let (Some(started), Some(connected)) = (self.started.get(), self.connected.load_full())
        else {
            return;
        };
        let instance = self.config.instance.clone();
        started.handle.spawn(async move {
            if let Err(e) = connected.pins.unpin(&origins, &instance).await {
                log::warn!(
                    "cluster: the pins of {origins:?} were not removed ({e}): they stay with this instance until it restarts"
                );
            }
        });
    }
}
