//! One origin of the pool and its live state.

use crate::config::OriginConfig;
use crate::origin_tls::TlsClient;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
use std::sync::Arc;

/// One origin and its live state. All state is atomics: it is read on every pick.
#[derive(Debug)]
pub struct Origin {
    pub name: String,
    pub address: SocketAddr,
    /// Declared requests/s; 0 means drained. Changes on reload.
    pub(super) capacity: AtomicU32,
    pub(super) probe_up: AtomicBool,
    /// Too far behind on replicated writes to serve reads (see `replication.max_lag`).
    pub(super) lagging: AtomicBool,
    /// Milliseconds since the pool's epoch until which the origin is ejected; 0 when not ejected.
    pub(super) ejected_until_ms: AtomicU64,
    pub(super) consecutive_failures: AtomicU32,
    /// How to reach it over TLS, when it speaks TLS.
    pub tls: Option<Arc<TlsClient>>,
    /// Taken out of rotation by an operator (admin API): no new traffic,
    /// while replicated writes still reach it.
    pub(super) drained: AtomicBool,
    /// Thousandths of its capacity the origin is given now (see
    /// [`crate::adaptive`]); 1000 until something says otherwise.
    pub(super) factor_milli: AtomicU32,
    /// Removed from the pool by a reload: nothing reaches it any more.
    pub(super) retired: AtomicBool,
}

impl Origin {
    /// A new origin, down until its first probe; the error is OpenSSL's
    /// refusal of its TLS settings.
    pub(super) fn new(config: &OriginConfig) -> Result<Self, String> {
        let tls = match &config.tls {
            None => None,
            Some(settings) => Some(Arc::new(TlsClient::new(settings)?)),
        };
        Ok(Origin {
            tls,
            name: config.name.clone(),
            address: config.address,
            capacity: AtomicU32::new(config.capacity),
            probe_up: AtomicBool::new(false),
            lagging: AtomicBool::new(false),
            ejected_until_ms: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            drained: AtomicBool::new(false),
            factor_milli: AtomicU32::new(super::FULL_FACTOR),
            retired: AtomicBool::new(false),
        })
    }
}
