//! This instance in the cluster (#25): its connection to etcd, the writes
//! it appends, the order it follows back into its backlogs, and which
//! origins it may send to now.
//!
//! The loops of [`super::deliveries`], the etcd client they and the
//! appends use, and the answers' listener run on the proxy's runtime, as
//! the replication workers do: a write crosses no thread on its way to
//! etcd and back into the backlogs (on a runtime of their own, every write
//! cost several thread wake-ups, a quarter of an instance's CPU in a
//! profile). Only the reads a backlog's refill makes while it waits run on
//! a small runtime of their own, with their own client, so that a proxy
//! thread blocked on one never waits for itself. Everything starts after
//! Pingora has daemonized (a fork keeps no threads).

use super::answers::{Forwarded, Forwarder};
use super::follow::Ordered;
use super::hold::Holds;
use super::instances::Registry;
use super::order::{OrderError, SharedOrder};
use crate::config::Cluster;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// What the cluster asks of this instance's replication
/// ([`crate::replication::Replicator`] implements it).
pub trait Deliveries: Send + Sync {
    /// The pool's origins, by name.
    fn origins(&self) -> Vec<String>;
    /// Starts the order after `position` (nothing at or below it is handed off).
    fn start_after(&self, position: u64);
    /// The last position handed to the backlogs.
    fn last_position(&self) -> u64;
    /// Hands one entry of the order to the backlogs, in position order.
    fn ordered(&self, entry: Ordered);
    /// `origin`'s backlog records what follows without sending it; returns
    /// the last position handed off before.
    fn park(&self, origin: &str) -> u64;
    /// This instance delivers to `origin` again, from `progress` on: the
    /// `owed` entries after it through `through` are read back from etcd.
    fn take_over(&self, origin: &str, progress: u64, through: u64, owed: u64);
    /// Another instance delivers to `origin` now: its backlog takes nothing.
    fn let_go(&self, origin: &str);
    /// The last position `origin` applied, as this instance knows it.
    fn applied(&self, origin: &str) -> u64;
    /// Another instance (or this one) recorded that `origin` applied the
    /// order through `position`.
    fn progress(&self, origin: &str, position: u64);
    /// Another instance detached `origin`: it is detached here too.
    fn detached_elsewhere(&self, origin: &str);
    /// No instance marks `origin` detached any more: current again here if
    /// it was detached only for another's mark (`true` then).
    fn reattached(&self, origin: &str) -> bool;
    /// Has `origin` answered everything this instance sent it?
    fn is_idle(&self, origin: &str) -> bool;
    /// Another instance's answer to a write this instance's client waits for.
    fn forwarded(&self, answer: Forwarded);
}

/// When this instance may send to an origin it holds.
#[derive(Debug, Clone, Copy)]
pub(super) struct Gate {
    pub ready_at: Instant,
    pub valid_until: Instant,
}

/// The pieces that talk to etcd, once connected.
pub(super) struct Connected {
    pub order: SharedOrder,
    pub holds: Holds,
    pub registry: Registry,
    pub pins: super::pins::Pins,
}

/// Set once the member has started.
pub(super) struct Started {
    /// The proxy's runtime, where the loops run.
    pub handle: tokio::runtime::Handle,
    /// For refills' reads only, with their own client ([`Started::reader`]).
    pub runtime: &'static tokio::runtime::Runtime,
    pub reader: Arc<OnceLock<SharedOrder>>,
    pub forwarder: Forwarder,
}

pub struct Member {
    pub(super) config: Cluster,
    /// How long an append may take (`timeouts.connect`).
    pub(super) append_timeout: Duration,
    /// Distinguishes this run's write ids from a previous run's.
    boot: u64,
    next_id: AtomicU64,
    pub(super) started: OnceLock<Started>,
    pub(super) connected: arc_swap::ArcSwapOption<Connected>,
    /// Is etcd reachable (the last request to it succeeded)?
    pub(super) reachable: AtomicBool,
    pub(super) gates: Mutex<HashMap<String, Gate>>,
    /// Which instance holds each origin, as etcd said last.
    pub(super) holders: Mutex<std::collections::BTreeMap<String, String>>,
    /// Asks the hold loop to hand every hold over and leave (a clean stop);
    /// it answers on the sender inside once done.
    pub(super) leaving: tokio::sync::Notify,
    pub(super) left: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    /// `hothot_cluster_connected` and `hothot_cluster_leases`.
    connected_gauge: prometheus::IntGauge,
    leases: prometheus::IntGaugeVec,
}

impl Member {
    pub fn new(
        config: Cluster,
        append_timeout: Duration,
        metrics: &crate::metrics::ClusterMetrics,
    ) -> Self {
        let boot = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Member {
            config,
            append_timeout,
            boot,
            next_id: AtomicU64::new(0),
            started: OnceLock::new(),
            connected: Default::default(),
            reachable: AtomicBool::new(false),
            gates: Mutex::default(),
            holders: Mutex::default(),
            leaving: tokio::sync::Notify::new(),
            left: Mutex::default(),
            connected_gauge: metrics.connected.clone(),
            leases: metrics.leases.clone(),
        }
    }

    pub fn config(&self) -> &Cluster {
        &self.config
    }

    /// A fresh write id: `{instance}:{boot}:{n}`, unique across restarts.
    pub fn next_id(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{}:{:x}:{n}", self.config.instance, self.boot)
    }

    /// The instance a write id names (the instance whose client waits).
    pub fn instance_of(id: &str) -> &str {
        id.split(':').next().unwrap_or_default()
    }

    /// Can writes be taken (etcd reachable)?
    pub fn is_reachable(&self) -> bool {
        self.reachable.load(Ordering::Acquire)
    }

    /// Appends a write under `id`; its position. Fails within the append
    /// timeout when etcd cannot take it.
    pub async fn append(&self, id: &str, payload: Vec<u8>) -> Result<u64, OrderError> {
        let Some(connected) = self.connected.load_full() else {
            return Err(OrderError::Unavailable);
        };
        connected.order.append(id, &payload).await
    }

    /// May this instance send to `origin` now (it holds its deliveries,
    /// its hold is valid by its own clock, the previous holder's has run out)?
    pub fn may_send(&self, origin: &str) -> bool {
        let gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        gates
            .get(origin)
            .is_some_and(|g| now >= g.ready_at && now < g.valid_until)
    }

    /// Does this instance hold `origin`'s deliveries?
    pub fn holds(&self, origin: &str) -> bool {
        let gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        gates.contains_key(origin)
    }

    /// The origins this instance holds.
    pub fn held(&self) -> Vec<String> {
        let gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        gates.keys().cloned().collect()
    }

    /// Which instance holds each origin's deliveries (as etcd said last).
    pub fn holders(&self) -> std::collections::BTreeMap<String, String> {
        self.holders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sends `answer` to the instance whose client waits for it.
    pub fn forward(&self, instance: &str, answer: Forwarded) {
        if let Some(started) = self.started.get() {
            started.forwarder.send(instance, answer);
        }
    }

    /// Records in etcd which origins are detached (`true`) or current again,
    /// for the other instances (in the background: logged if it fails).
    pub fn record_detached(&self, changes: Vec<(String, bool)>) {
        let (Some(started), Some(connected)) = (self.started.get(), self.connected.load_full())
        else {
            return;
        };
        started.handle.spawn(async move {
            for (origin, detached) in changes {
                if let Err(e) = connected.holds.mark_detached(&origin, detached).await {
                    log::error!("cluster: cannot record in etcd that origin {origin} is detached={detached}: {e}");
                }
            }
        });
    }

    /// Reads entries `from` through `through` back from etcd (at most
    /// `max`), waiting on this thread: for a backlog's refill.
    pub fn read_blocking(
        &self,
        from: u64,
        through: u64,
        max: usize,
    ) -> Result<Vec<Ordered>, OrderError> {
        let Some(started) = self.started.get() else {
            return Err(OrderError::Unavailable);
        };
        let reader = started.reader.clone();
        let read = started.runtime.spawn(async move {
            match reader.get() {
                Some(order) => order.read(from, through, max).await,
                None => Err(OrderError::Unavailable),
            }
        });
        futures::executor::block_on(read).unwrap_or(Err(OrderError::Unavailable))
    }

    /// Starts the runtime and its loops: connecting, following the order,
    /// holding origins, receiving answers. Once; after daemonizing.
    pub fn start(self: &Arc<Self>, deliveries: Arc<dyn Deliveries>) -> std::io::Result<()> {
        if self.started.get().is_some() {
            return Ok(());
        }
        let handle = tokio::runtime::Handle::current();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("hothot-cluster-reads")
            .enable_all()
            .build()?;
        // It lives as long as the process: dropping a runtime from within
        // another one's shutdown would panic.
        let runtime: &'static tokio::runtime::Runtime = Box::leak(Box::new(runtime));
        let listener = std::net::TcpListener::bind(self.config.listen)?;
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let forwarder = Forwarder::new(self.config.token.clone(), handle.clone());
        let reader = Arc::new(OnceLock::new());
        let config = self.config.clone();
        let timeout = self.append_timeout;
        let reading = reader.clone();
        runtime.spawn(async move {
            loop {
                match SharedOrder::connect(&config, timeout).await {
                    Ok(order) => break drop(reading.set(order)),
                    Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
                }
            }
        });
        let started = Started {
            handle: handle.clone(),
            runtime,
            reader,
            forwarder,
        };
        let _ = self.started.set(started);
        let receiver = deliveries.clone();
        handle.spawn(super::answers::serve(
            listener,
            self.config.token.clone(),
            Arc::new(move |answer| receiver.forwarded(answer)),
        ));
        handle.spawn(super::deliveries::run(self.clone(), deliveries));
        Ok(())
    }

    /// This instance may send to `origin` from `gate.ready_at` until
    /// `gate.valid_until` (`None`: it no longer holds it).
    pub(super) fn set_gate(&self, origin: &str, gate: Option<Gate>) {
        let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        let held = gate.is_some();
        match gate {
            Some(gate) => gates.insert(origin.to_owned(), gate),
            None => gates.remove(origin),
        };
        self.leases
            .with_label_values(&[origin])
            .set(i64::from(held));
    }

    /// A clean stop: hands this instance's origins over (once what is in
    /// flight to them is answered) and leaves the registry, so that the
    /// other instances take them at once instead of after two leases.
    /// Waits at most `lease`.
    pub async fn leave(&self) {
        if self.started.get().is_none() || self.connected.load().is_none() {
            return;
        }
        let (done, left) = tokio::sync::oneshot::channel();
        *self.left.lock().unwrap_or_else(|e| e.into_inner()) = Some(done);
        self.leaving.notify_one();
        if tokio::time::timeout(self.config.lease, left).await.is_err() {
            log::warn!(
                "cluster: could not hand every origin over within {:?}",
                self.config.lease
            );
        }
    }

    /// Records whether etcd answered; logs each change once.
    pub(super) fn set_reachable(&self, reachable: bool, why: &str) {
        self.connected_gauge.set(i64::from(reachable));
        if self.reachable.swap(reachable, Ordering::AcqRel) != reachable {
            match reachable {
                true => log::info!(
                    "cluster: connected to etcd ({})",
                    self.config.servers.join(", ")
                ),
                false => log::error!(
                    "cluster: etcd unreachable ({why}): writes are refused with 503, reads go on"
                ),
            }
        }
    }
}
