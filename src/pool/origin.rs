//! One origin and every part of its live state, made together when it joins
//! the pool.

use super::standing::{Standing, StandingState};
use super::{duration_ms, OriginId};
use crate::adaptive::Load;
use crate::config::{OriginConfig, Timeouts};
use crate::health::{ProbeStreak, ReadTimeouts};
use crate::limit::Bucket;
use crate::metrics::OriginMetrics;
use crate::origin_tls::{TlsClient, TlsError};
use crate::replication::Backlog;
use arc_swap::ArcSwap;
use pingora_core::upstreams::peer::HttpPeer;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// An origin about to join: its settings, and the TLS client built from
/// them (built once, before anything changes, so that a refusal leaves the
/// pool as it was).
pub struct NewOrigin {
    pub config: OriginConfig,
    pub tls: Option<Arc<TlsClient>>,
}

impl NewOrigin {
    /// Builds what `config` needs; the error is OpenSSL's refusal of its
    /// TLS settings.
    pub fn build(config: &OriginConfig) -> Result<Self, TlsError> {
        let tls = match &config.tls {
            None => None,
            Some(settings) => Some(Arc::new(TlsClient::new(settings)?)),
        };
        Ok(NewOrigin {
            config: config.clone(),
            tls,
        })
    }
}

/// One origin: what it is, and every part of its state.
pub struct Origin {
    pub id: OriginId,
    pub name: String,
    /// `address` as written in the file: an IP address or a DNS name, with
    /// its port. What identifies the origin's server across reloads.
    pub written_address: String,
    /// The DNS name in it, if it is one (resolved again by [`crate::resolve`]).
    pub host_name: Option<String>,
    /// Milliseconds between background resolutions of `host_name`
    /// (`origins[].resolve`); 0: none. A reload may change it.
    resolve_every_ms: AtomicU64,
    /// Where it is now (see [`Origin::address`]).
    address: ArcSwap<SocketAddr>,
    /// How to reach it over TLS, when it speaks TLS.
    pub tls: Option<Arc<TlsClient>>,
    /// How it joins a pool with history (`join`).
    pub join: crate::config::Join,
    /// Whether it may serve (see [`crate::pool`]).
    pub(super) state: ServingState,
    /// Its requests per second under `balancing.limit`.
    pub limit: Bucket,
    /// Its live latency and errors, for its adaptive factor.
    pub load: Load,
    /// Its active probes' streak.
    pub probes: ProbeStreak,
    /// Its recent read timeouts: one slow path is not the origin failing.
    pub read_timeouts: ReadTimeouts,
    /// Its series, labels resolved.
    pub metrics: OriginMetrics,
    /// The writes it has not settled yet, and how far it has settled the
    /// sequence.
    pub backlog: Backlog,
    /// Pingora's peer for it, with the timeouts in force.
    upstream: ArcSwap<HttpPeer>,
}

impl Origin {
    pub(super) fn new(
        id: OriginId,
        new: NewOrigin,
        epoch: Instant,
        timeouts: Timeouts,
        metrics: OriginMetrics,
        backlog: Backlog,
    ) -> Self {
        let NewOrigin { config, tls } = new;
        Origin {
            upstream: ArcSwap::from_pointee(peer(config.address, tls.as_deref(), timeouts)),
            id,
            name: config.name,
            written_address: config.written_address,
            host_name: config.host_name,
            resolve_every_ms: AtomicU64::new(resolve_ms(config.resolve)),
            address: ArcSwap::from_pointee(config.address),
            join: config.join,
            tls,
            state: ServingState::new(config.capacity, epoch),
            limit: Bucket::new(config.capacity),
            load: Load::default(),
            probes: ProbeStreak::default(),
            read_timeouts: ReadTimeouts::default(),
            metrics,
            backlog,
        }
    }

    /// Pingora's peer for a proxied request to this origin, boxed as
    /// Pingora takes it: cloned straight into its box, because a peer is
    /// large (several hundred bytes) and each move of it is a copy.
    pub fn peer(&self) -> Box<HttpPeer> {
        Box::new(HttpPeer::clone(&self.upstream.load()))
    }

    pub(super) fn set_timeouts(&self, timeouts: Timeouts) {
        let peer = peer(self.address(), self.tls.as_deref(), timeouts);
        self.upstream.store(Arc::new(peer));
    }

    /// Its address now: the IP address written in the file, or the one its
    /// name last resolved to.
    pub fn address(&self) -> SocketAddr {
        **self.address.load()
    }

    /// Moves it to `address` (its name resolved elsewhere); the address it
    /// had when that changed it. Connections already open finish where they are.
    pub(super) fn set_address(&self, address: SocketAddr) -> Option<SocketAddr> {
        let before = self.address();
        if before == address {
            return None;
        }
        self.address.store(Arc::new(address));
        let mut peer = HttpPeer::clone(&self.upstream.load());
        peer._address = pingora_core::protocols::l4::socket::SocketAddr::Inet(address);
        self.upstream.store(Arc::new(peer));
        Some(before)
    }

    /// How often its name is resolved again in the background, if at all.
    pub fn resolve_every(&self) -> Option<std::time::Duration> {
        match self.resolve_every_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(std::time::Duration::from_millis(ms)),
        }
    }

    pub(super) fn set_resolve_every(&self, every: Option<std::time::Duration>) {
        self.resolve_every_ms
            .store(resolve_ms(every), Ordering::Relaxed);
    }

    /// May it take new traffic right now?
    pub fn is_serving(&self) -> bool {
        let state = &self.state;
        state.capacity.load(Ordering::Acquire) > 0
            && !state.retired.load(Ordering::Acquire)
            && state.probe_up.load(Ordering::Acquire)
            && !state.drained.load(Ordering::Acquire)
            && state.standing.in_step()
            && !self.is_ejected()
    }

    /// May it take new reads? Serving, and not lagging behind on writes.
    pub fn is_serving_reads(&self) -> bool {
        self.is_serving() && !self.is_lagging()
    }

    /// Do the active probes say it is up (whatever else keeps it out)?
    pub fn is_probe_up(&self) -> bool {
        self.state.probe_up.load(Ordering::Acquire)
    }

    pub fn is_lagging(&self) -> bool {
        self.state.lagging.load(Ordering::Acquire)
    }

    /// Where it stands in the sequence (see [`super::standing`]).
    pub fn standing(&self) -> Standing {
        self.state.standing.get()
    }

    /// Is it current: every write sequenced for it applied or waiting in its
    /// backlog? (What [`Origin::standing`] says, read on every housekeeping
    /// tick without its lock.)
    pub fn is_current(&self) -> bool {
        self.state.standing.is_current()
    }

    /// Held at a resync's cut as its donor?
    pub fn is_donor(&self) -> bool {
        self.state.standing.is_donor()
    }

    /// The write it was detached for failing, if that was why.
    pub fn missed_write(&self) -> Option<String> {
        match self.standing() {
            Standing::Detached(detached) => detached.missed,
            _ => None,
        }
    }

    /// Has an operator drained it?
    pub fn is_drained(&self) -> bool {
        self.state.drained.load(Ordering::Acquire)
    }

    pub fn is_ejected(&self) -> bool {
        let until = self.state.ejected_until_ms();
        until != 0 && duration_ms(self.state.epoch.elapsed()) < until
    }

    /// Removed from the pool by a reload: nothing reaches it any more.
    pub fn is_retired(&self) -> bool {
        self.state.retired.load(Ordering::Acquire)
    }

    /// Its declared capacity (requests/s); 0: drained by config.
    pub fn capacity(&self) -> u32 {
        self.state.capacity.load(Ordering::Acquire)
    }

    /// Its factor, in thousandths of its capacity.
    pub fn factor_milli(&self) -> u32 {
        self.state.factor_milli.load(Ordering::Acquire)
    }

    /// The weight smooth weighted round robin gives it: its capacity
    /// times its factor (in thousandths, so that equal factors keep the
    /// declared ratios exactly).
    pub fn effective_weight(&self) -> i64 {
        i64::from(self.capacity()) * i64::from(self.factor_milli())
    }
}

fn resolve_ms(every: Option<std::time::Duration>) -> u64 {
    every.map_or(0, |d| (d.as_millis() as u64).max(1))
}

/// Pingora's peer for an origin: its address, TLS and the timeouts.
fn peer(address: SocketAddr, tls: Option<&TlsClient>, timeouts: Timeouts) -> HttpPeer {
    let mut peer = HttpPeer::new(address, false, String::new());
    if let Some(tls) = tls {
        tls.apply_to(&mut peer);
    }
    let options = &mut peer.options;
    options.connection_timeout = Some(timeouts.connect);
    options.read_timeout = Some(timeouts.read);
    options.write_timeout = Some(timeouts.write);
    options.idle_timeout = Some(timeouts.idle);
    // A tunnel's two ends may be quiet for long: `read` is for answers.
    options.upgraded_read_timeout = Some(timeouts.tunnel_idle);
    peer
}

/// Whether an origin may serve. All atomics: it is read on every pick;
/// changes go through the pool, which counts them (see
/// [`super::Pool::generation`]).
pub(super) struct ServingState {
    /// Declared requests/s; 0 means drained. Changes on reload.
    capacity: AtomicU32,
    probe_up: AtomicBool,
    /// Too far behind on replicated writes to serve reads (see `replication.max_lag`).
    lagging: AtomicBool,
    /// Milliseconds since `epoch` until which the origin is ejected; 0 when not ejected.
    ejected_until_ms: AtomicU64,
    consecutive_failures: AtomicU32,
    /// Taken out of rotation by an operator (admin API): no new traffic,
    /// while replicated writes still reach it.
    drained: AtomicBool,
    /// Whether it holds every write of the sequence: out of service when
    /// it does not (the invariant of [`super::standing`]).
    pub(super) standing: StandingState,
    /// Thousandths of its capacity the origin is given now (see
    /// [`crate::adaptive`]); 1000 until something says otherwise.
    factor_milli: AtomicU32,
    retired: AtomicBool,
    /// The pool's epoch, which ejection times count from.
    epoch: Instant,
}

impl ServingState {
    fn new(capacity: u32, epoch: Instant) -> Self {
        ServingState {
            capacity: AtomicU32::new(capacity),
            probe_up: AtomicBool::new(false),
            lagging: AtomicBool::new(false),
            ejected_until_ms: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            drained: AtomicBool::new(false),
            standing: StandingState::default(),
            factor_milli: AtomicU32::new(super::FULL_FACTOR),
            retired: AtomicBool::new(false),
            epoch,
        }
    }

    pub(super) fn ejected_until_ms(&self) -> u64 {
        self.ejected_until_ms.load(Ordering::Acquire)
    }

    /// Retires it; true if it was retired already.
    pub(super) fn retire(&self) -> bool {
        self.retired.swap(true, Ordering::AcqRel)
    }

    pub(super) fn set_drained(&self, drained: bool) -> bool {
        self.drained.swap(drained, Ordering::AcqRel) != drained
    }

    pub(super) fn set_lagging(&self, lagging: bool) -> bool {
        self.lagging.swap(lagging, Ordering::AcqRel) != lagging
    }

    pub(super) fn set_probe_up(&self, up: bool) -> bool {
        if up {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
        self.probe_up.swap(up, Ordering::AcqRel) != up
    }

    pub(super) fn set_capacity(&self, capacity: u32) -> bool {
        self.capacity.swap(capacity, Ordering::AcqRel) != capacity
    }

    pub(super) fn set_factor(&self, milli: u32) -> bool {
        self.factor_milli.swap(milli, Ordering::AcqRel) != milli
    }

    pub(super) fn reset_failures(&self) {
        // Avoid a write (and cache-line traffic) on the common path.
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
    }

    /// Counts a live failure; returns the streak.
    pub(super) fn count_failure(&self) -> u32 {
        self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Ejects it until `until_ms`; its streak starts over.
    pub(super) fn eject_until(&self, until_ms: u64) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.ejected_until_ms.store(until_ms, Ordering::Release);
    }
}
