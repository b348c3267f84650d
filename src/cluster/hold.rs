//! Which instance delivers to an origin (#25): one at a time, through an
//! etcd lease, so that an origin never receives the order from two senders.
//!
//! An instance holds an origin's deliveries while `{name}/hold/{origin}`,
//! attached to its lease, names it. The origin's progress (the last
//! position it applied) is `{name}/progress/{origin}`, written only in a
//! transaction that checks the hold key is still the one this holder
//! created (its create revision: a fencing token), so a holder that lost
//! its hold can no longer move it.
//!
//! Time is the other half. A holder counts its hold as valid until `lease`
//! after it *sent* the last renewal etcd granted, less a margin: etcd
//! renewed it later than that, so the holder stops before etcd can have
//! let the lease expire. A taker waits out a whole `lease` after taking an
//! origin that had a holder before (its progress exists), so that a
//! holder paused mid-send (SIGSTOP, a long GC-like stall) has, by its own
//! clock, given up before the taker's first send.

use super::etcd::Etcd;
use super::order::OrderError;
use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};
use std::time::Duration;
use tokio::time::Instant;

/// Taken off a hold's validity: scheduling and clock-rate slack.
const MARGIN: Duration = Duration::from_millis(250);

/// One instance's hand on origins' deliveries.
pub struct Holds {
    client: Etcd,
    /// `{name}/`.
    prefix: String,
    instance: String,
    lease: Duration,
}

/// This instance's hold on one origin's deliveries.
pub struct Hold {
    origin: String,
    lease_id: i64,
    /// The hold key's create revision: the fencing token.
    token: i64,
    /// No send before this (a taker waits out the previous holder's lease).
    ready_at: Instant,
    /// No send from this on unless renewed.
    valid_until: Instant,
}

impl Hold {
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// May this instance send to the origin now?
    pub fn may_send(&self) -> bool {
        let now = Instant::now();
        now >= self.ready_at && now < self.valid_until
    }

    /// When it may first send.
    pub fn ready_at(&self) -> Instant {
        self.ready_at
    }

    /// When it must stop sending unless renewed.
    pub fn valid_until(&self) -> Instant {
        self.valid_until
    }
}

impl Holds {
    /// `instance`'s holds in the pool `name`, each lasting `lease` without
    /// renewal (whole seconds, as etcd counts them; at least 1 s).
    pub fn new(client: Client, name: &str, instance: &str, lease: Duration) -> Self {
        Holds {
            client: Etcd::new(client),
            prefix: format!("{name}/"),
            instance: instance.to_owned(),
            lease: Duration::from_secs(lease.as_secs().max(1)),
        }
    }

    fn hold_key(&self, origin: &str) -> Vec<u8> {
        format!("{}hold/{origin}", self.prefix).into_bytes()
    }

    fn progress_key(&self, origin: &str) -> Vec<u8> {
        format!("{}progress/{origin}", self.prefix).into_bytes()
    }

    /// Present once any instance has held `origin`: a taker that finds it
    /// (and no clean release) waits out the previous holder's lease, even
    /// when that holder never recorded progress.
    fn held_key(&self, origin: &str) -> Vec<u8> {
        format!("{}held/{origin}", self.prefix).into_bytes()
    }

    /// Present between a holder's clean release and the next take.
    fn released_key(&self, origin: &str) -> Vec<u8> {
        format!("{}released/{origin}", self.prefix).into_bytes()
    }

    /// Takes `origin`'s deliveries if nobody holds them; `None` when
    /// another instance (or this one, under another lease) does.
    pub async fn try_take(&self, origin: &str) -> Result<Option<Hold>, OrderError> {
        let ttl = i64::try_from(self.lease.as_secs()).unwrap_or(i64::MAX);
        let asked = Instant::now();
        let lease_id = self.client.grant(ttl).await?;
        let key = self.hold_key(origin);
        let released = self.released_key(origin);
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([
                TxnOp::put(
                    key,
                    self.instance.as_bytes(),
                    Some(PutOptions::new().with_lease(lease_id)),
                ),
                TxnOp::get(released.clone(), None),
                TxnOp::delete(released, None),
                TxnOp::get(self.held_key(origin), None),
                TxnOp::put(self.held_key(origin), self.instance.as_bytes(), None),
            ])
            .or_else([]);
        let taken = self.client.txn(txn).await?;
        if !taken.succeeded() {
            self.client.revoke(lease_id).await?;
            return Ok(None);
        }
        let token = taken.header().map_or(0, |h| h.revision());
        let found: Vec<bool> = (taken.op_responses().into_iter())
            .filter_map(|r| match r {
                TxnOpResponse::Get(get) => Some(!get.kvs().is_empty()),
                _ => None,
            })
            .collect();
        let (was_released, was_held) = (found.first() == Some(&true), found.get(1) == Some(&true));
        // Someone held it before and did not release it cleanly (it died,
        // or was cut off, perhaps before it recorded any progress): wait
        // out their lease.
        let held_before = was_held && !was_released;
        let ready_at = match held_before {
            true => Instant::now() + self.lease,
            false => Instant::now(),
        };
        Ok(Some(Hold {
            origin: origin.to_owned(),
            lease_id,
            token,
            ready_at,
            valid_until: asked + self.lease.saturating_sub(MARGIN),
        }))
    }

    /// Renews `hold`; false when etcd no longer has its lease (the hold is
    /// lost: stop sending).
    pub async fn renew(&self, hold: &mut Hold) -> Result<bool, OrderError> {
        let sent = Instant::now();
        let renewed = self.client.keep_alive(hold.lease_id).await?;
        if renewed {
            hold.valid_until = sent + self.lease.saturating_sub(MARGIN);
        }
        Ok(renewed)
    }

    /// Records that `hold`'s origin applied every write through `position`;
    /// false (nothing written) when this instance no longer holds it.
    pub async fn record_progress(&self, hold: &Hold, position: u64) -> Result<bool, OrderError> {
        let txn = Txn::new()
            .when([Compare::create_revision(
                self.hold_key(&hold.origin),
                CompareOp::Equal,
                hold.token,
            )])
            .and_then([TxnOp::put(
                self.progress_key(&hold.origin),
                position.to_string(),
                None,
            )]);
        Ok(self.client.txn(txn).await?.succeeded())
    }

    /// `{name}/detached/{origin}`: present while the origin is detached.
    fn detached_key(&self, origin: &str) -> Vec<u8> {
        format!("{}detached/{origin}", self.prefix).into_bytes()
    }

    /// Records that `origin` is detached (`true`) or current again.
    pub async fn mark_detached(&self, origin: &str, detached: bool) -> Result<(), OrderError> {
        let key = self.detached_key(origin);
        let op = match detached {
            true => TxnOp::put(key, "1", None),
            false => TxnOp::delete(key, None),
        };
        self.client.txn(Txn::new().and_then([op])).await?;
        Ok(())
    }

    /// The origins some instance detached.
    pub async fn detached(&self) -> Result<std::collections::BTreeSet<String>, OrderError> {
        let detached = self
            .client
            .under(&format!("{}detached/", self.prefix))
            .await?;
        Ok(detached.into_keys().collect())
    }

    /// Every origin's progress, as its holders recorded it.
    pub async fn all_progress(
        &self,
    ) -> Result<std::collections::BTreeMap<String, u64>, OrderError> {
        let progress = self
            .client
            .under(&format!("{}progress/", self.prefix))
            .await?;
        let progress = progress
            .into_iter()
            .filter_map(|(origin, position)| Some((origin, position.parse().ok()?)));
        Ok(progress.collect())
    }

    /// Which instance holds each held origin.
    pub async fn holders(&self) -> Result<std::collections::BTreeMap<String, String>, OrderError> {
        Ok(self.client.under(&format!("{}hold/", self.prefix)).await?)
    }

    /// The last position `origin` applied, as its holders recorded it.
    pub async fn progress(&self, origin: &str) -> Result<Option<u64>, OrderError> {
        let txn = Txn::new().and_then([TxnOp::get(self.progress_key(origin), None)]);
        let answer = self.client.txn(txn).await?;
        let value = answer.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.value().to_vec()),
            _ => None,
        });
        Ok(value.and_then(|v| String::from_utf8_lossy(&v).parse().ok()))
    }

    /// Gives `hold` up at once (a clean stop, once nothing is in flight):
    /// the next holder may send at once, without waiting out the lease.
    pub async fn release(&self, hold: Hold) -> Result<(), OrderError> {
        let txn = Txn::new()
            .when([Compare::create_revision(
                self.hold_key(&hold.origin),
                CompareOp::Equal,
                hold.token,
            )])
            .and_then([
                TxnOp::put(
                    self.released_key(&hold.origin),
                    self.instance.as_bytes(),
                    None,
                ),
                TxnOp::delete(self.hold_key(&hold.origin), None),
            ]);
        self.client.txn(txn).await?;
        self.client.revoke(hold.lease_id).await?;
        Ok(())
    }
}
