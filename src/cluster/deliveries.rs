//! The loops that keep this instance's part of the cluster going (#25):
//! connecting to etcd, following the shared order into the backlogs
//! ([`super::follow::hand_off`]), and
//! holding the origins the spread gives this instance (taking them over
//! from their recorded progress, renewing, recording progress, letting go
//! when the spread moves them or a hold is lost); trimming the order is
//! [`super::history`]'s.

use super::hold::Hold;
use super::instances::{spread, Registration};
use super::member::{Connected, Deliveries, Gate, Member};
use super::order::{OrderError, SharedOrder};
use super::{hold::Holds, instances::Registry};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Between two attempts at reaching etcd.
pub(super) const RETRY: Duration = Duration::from_millis(250);

/// Connects, then follows the order and holds origins, for as long as the
/// process runs.
pub async fn run(member: Arc<Member>, deliveries: Arc<dyn Deliveries>) {
    let connected = Arc::new(until_ok(&member, || connect(&member)).await);
    // The order starts now: what came before is read back from etcd by
    // whichever instance takes an origin over.
    let head = until_ok(&member, || connected.order.head()).await;
    deliveries.start_after(head);
    member.connected.store(Some(connected.clone()));
    member.set_reachable(true, "");
    let follow = super::follow::hand_off(&member, &connected.order, deliveries.as_ref());
    let hold = Holding::new(&member, &connected, deliveries.as_ref()).run();
    let trim = super::history::trimming(&member, &connected, deliveries.origins());
    tokio::join!(follow, hold, trim);
}

/// `attempt`'s value, once it succeeds; etcd is unreachable meanwhile.
async fn until_ok<T, Fut>(member: &Member, mut attempt: impl FnMut() -> Fut) -> T
where
    Fut: std::future::Future<Output = Result<T, OrderError>>,
{
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(e) => {
                member.set_reachable(false, &e.to_string());
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

async fn connect(member: &Member) -> Result<Connected, OrderError> {
    let config = member.config();
    let timeout = member.append_timeout;
    let order = SharedOrder::connect(config, timeout).await?;
    let client = order.client().clone();
    Ok(Connected {
        holds: Holds::new(client.clone(), &config.name, &config.instance, config.lease),
        pins: super::pins::Pins::new(client.clone(), &config.name),
        registry: Registry::new(client, &config.name),
        order,
    })
}

/// This instance's holds, kept by one loop.
struct Holding<'a> {
    member: &'a Member,
    connected: &'a Connected,
    deliveries: &'a dyn Deliveries,
    origins: Vec<String>,
    registration: Option<Registration>,
    holds: HashMap<String, Hold>,
    /// The progress last recorded for each held origin.
    recorded: HashMap<String, u64>,
}

impl<'a> Holding<'a> {
    fn new(member: &'a Member, connected: &'a Connected, deliveries: &'a dyn Deliveries) -> Self {
        Holding {
            member,
            connected,
            deliveries,
            origins: deliveries.origins(),
            registration: None,
            holds: HashMap::new(),
            recorded: HashMap::new(),
        }
    }

    async fn run(mut self) {
        // Every origin's `hothot_cluster_leases` from the start: summed
        // over the instances, 0 says nobody delivers to it.
        for origin in &self.origins {
            self.member.set_gate(origin, None);
        }
        // A resync of an earlier run ended with it.
        let instance = &self.member.config().instance;
        if let Err(e) = self.connected.pins.clear(instance).await {
            log::warn!("cluster: this instance's earlier pins were not removed ({e})");
        }
        let lease = self.member.config().lease;
        let tick = (lease / 5).clamp(Duration::from_millis(100), Duration::from_secs(1));
        loop {
            match self.turn().await {
                Ok(()) => self.member.set_reachable(true, ""),
                Err(e) => self.member.set_reachable(false, &e.to_string()),
            }
            self.expire();
            tokio::select! {
                () = tokio::time::sleep(tick) => {}
                () = self.member.leaving.notified() => return self.leave().await,
            }
        }
    }

    /// A clean stop: every origin handed over, the registry left.
    async fn leave(&mut self) {
        let held: Vec<String> = self.holds.keys().cloned().collect();
        for origin in &held {
            if let Err(e) = self.hand_over(origin, "the other instances").await {
                log::warn!("cluster: origin {origin} not handed over ({e}): its hold runs out with its lease");
            }
        }
        if let Some(registration) = self.registration.take() {
            let _ = self.connected.registry.leave(registration).await;
        }
        log::info!(
            "cluster: left the pool ({} origins handed over)",
            held.len()
        );
        let done = self
            .member
            .left
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(done) = done {
            let _ = done.send(());
        }
    }

    /// One round: stay registered, learn the live instances, renew and
    /// record, take what the spread gives this instance, let go of the rest.
    async fn turn(&mut self) -> Result<(), OrderError> {
        // Renewals first, all at once: under a loaded etcd a round of
        // one request after another could outlast the lease.
        self.renew_all().await?;
        let config = self.member.config();
        let registry = &self.connected.registry;
        let renewed = match &self.registration {
            Some(registration) => registry.renew(registration).await?,
            None => false,
        };
        if !renewed {
            let address = config.listen.to_string();
            self.registration = Some(
                registry
                    .join(&config.instance, &address, config.lease)
                    .await?,
            );
        }
        let holds = &self.connected.holds;
        let (live, detached, progress, holders, pins) = tokio::join!(
            registry.live(),
            holds.detached(),
            holds.all_progress(),
            holds.holders(),
            self.connected.pins.all()
        );
        let (live, detached, progress, holders) = (live?, detached?, progress?, holders?);
        if let Some(started) = self.member.started.get() {
            started.forwarder.set_addresses(live.clone());
        }
        let instances: Vec<String> = live.keys().cloned().collect();
        let mut spread: HashMap<String, String> = spread(&self.origins, &instances)
            .into_iter()
            .map(|(origin, holder)| (origin.to_owned(), holder))
            .collect();
        // A resync's pins win over the spread while their instance lives.
        for (origin, instance) in pins? {
            if live.contains_key(&instance) && spread.contains_key(&origin) {
                spread.insert(origin, instance);
            }
        }
        let held: Vec<String> = self.holds.keys().cloned().collect();
        for origin in held {
            self.keep(&origin, spread.get(&origin)).await?;
        }
        for origin in self.origins.clone() {
            let mine = spread.get(&origin) == Some(&config.instance);
            if mine && !self.holds.contains_key(&origin) {
                self.take(&origin).await?;
            }
        }
        // An origin another instance detached is detached here too, and
        // current again once no instance marks it (a resync ended there).
        for origin in self.origins.clone() {
            if detached.contains(&origin) {
                self.deliveries.detached_elsewhere(&origin);
            } else if self.deliveries.reattached(&origin) && self.holds.contains_key(&origin) {
                let owed = self.owed(&origin).await?;
                self.resume(&origin, owed);
            }
        }
        // Every origin's progress, for reads that respect replication here.
        for (origin, position) in progress {
            self.deliveries.progress(&origin, position);
        }
        *self
            .member
            .holders
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = holders;
        Ok(())
    }

    /// Renews every hold at once; a hold etcd no longer has is lost.
    async fn renew_all(&mut self) -> Result<(), OrderError> {
        let holds = &self.connected.holds;
        let renewals = self
            .holds
            .iter_mut()
            .map(|(origin, hold)| async move { (origin.clone(), holds.renew(hold).await) });
        let mut failed = None;
        for (origin, renewed) in futures::future::join_all(renewals).await {
            match renewed {
                Ok(true) => self.set_gate(&origin),
                Ok(false) => {
                    log::warn!(
                        "cluster: lost the hold on origin {origin}'s deliveries (its lease expired)"
                    );
                    self.lose(&origin);
                }
                Err(e) => failed = Some(e),
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Records the progress of `origin` (renewed this turn), or lets it go
    /// when the spread gives it to another live instance.
    async fn keep(&mut self, origin: &str, holder: Option<&String>) -> Result<(), OrderError> {
        if !self.holds.contains_key(origin) {
            return Ok(());
        }
        self.record(origin).await?;
        let moved = holder.is_some_and(|h| *h != self.member.config().instance);
        if moved {
            let holder = format!("instance {}", holder.map_or("", |h| h));
            self.hand_over(origin, &holder).await?;
        }
        Ok(())
    }

    /// Lets `origin` go to `holder`: stops sending, waits (a little) for
    /// what is in flight, records the progress and releases the hold, so
    /// that the next holder may send at once. If the origin does not
    /// answer in time, the hold is left to expire: the next holder then
    /// waits a whole lease.
    async fn hand_over(&mut self, origin: &str, holder: &str) -> Result<(), OrderError> {
        // The gate first: a lane that took writes before the let-go sends
        // none of them once it is closed.
        self.member.set_gate(origin, None);
        self.deliveries.let_go(origin);
        let patience = self.member.config().lease / 2;
        let idle = tokio::time::timeout(patience, async {
            while !self.deliveries.is_idle(origin) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let idle = idle.await.is_ok();
        self.record(origin).await?;
        self.recorded.remove(origin);
        if let Some(hold) = self.holds.remove(origin) {
            match idle {
                true => self.connected.holds.release(hold).await?,
                // Dropped unrenewed: it runs out with its lease.
                false => drop(hold),
            }
        }
        log::info!("cluster: origin {origin}'s deliveries move to {holder}");
        Ok(())
    }

    /// Records how far `origin` applied the order, if it moved.
    async fn record(&mut self, origin: &str) -> Result<(), OrderError> {
        let applied = self.deliveries.applied(origin);
        if self.recorded.get(origin).is_some_and(|r| *r >= applied) {
            return Ok(());
        }
        let Some(hold) = self.holds.get(origin) else {
            return Ok(());
        };
        if self.connected.holds.record_progress(hold, applied).await? {
            self.recorded.insert(origin.to_owned(), applied);
        } else {
            log::warn!("cluster: origin {origin}'s hold was taken by another instance");
            self.lose(origin);
        }
        Ok(())
    }

    /// Takes `origin`'s deliveries if nobody holds them: resumes from its
    /// recorded progress.
    async fn take(&mut self, origin: &str) -> Result<(), OrderError> {
        let Some(hold) = self.connected.holds.try_take(origin).await? else {
            return Ok(());
        };
        let owed = self.owed(origin).await?;
        let wait = hold.ready_at().saturating_duration_since(Instant::now());
        self.holds.insert(origin.to_owned(), hold);
        self.set_gate(origin);
        self.resume(origin, owed);
        log::info!(
            "cluster: this instance delivers to origin {origin} from position {} ({} writes owed{})",
            owed.0 + 1,
            owed.2,
            match wait.is_zero() {
                true => String::new(),
                false => format!(", first send in {wait:.1?}: the previous holder's lease runs out"),
            }
        );
        Ok(())
    }

    /// What held `origin` is owed: its recorded progress, the last position
    /// handed off (its backlog records what follows without sending it)
    /// and how many writes lie between.
    async fn owed(&mut self, origin: &str) -> Result<(u64, u64, u64), OrderError> {
        let progress = self.connected.holds.progress(origin).await?.unwrap_or(0);
        let through = self.deliveries.park(origin);
        let owed = self.connected.order.count(progress + 1, through).await?;
        Ok((progress, through, owed))
    }

    /// `origin`'s backlog starts again from its recorded progress.
    fn resume(&mut self, origin: &str, (progress, through, owed): (u64, u64, u64)) {
        self.recorded.insert(origin.to_owned(), progress);
        self.deliveries.take_over(origin, progress, through, owed);
    }

    fn set_gate(&self, origin: &str) {
        if let Some(hold) = self.holds.get(origin) {
            let gate = Gate {
                ready_at: hold.ready_at(),
                valid_until: hold.valid_until(),
            };
            self.member.set_gate(origin, Some(gate));
        }
    }

    /// The hold on `origin` is gone: stop delivering.
    fn lose(&mut self, origin: &str) {
        self.deliveries.let_go(origin);
        self.holds.remove(origin);
        self.recorded.remove(origin);
        self.member.set_gate(origin, None);
    }

    /// Holds whose validity ran out by this instance's clock (etcd did not
    /// answer the renewals) are lost.
    fn expire(&mut self) {
        let now = Instant::now();
        let expired: Vec<String> = (self.holds.iter())
            .filter(|(_, hold)| hold.valid_until() <= now)
            .map(|(origin, _)| origin.clone())
            .collect();
        for origin in expired {
            log::warn!("cluster: the hold on origin {origin} ran out before etcd renewed it: stopped delivering to it");
            self.lose(&origin);
        }
    }
}
