//! What a reload changes in the proxy itself: each origin's peer (its
//! timeouts, and peers for origins it adds) and the number of retries. Requests read them per attempt.

use crate::config::Timeouts;
use crate::pool::Pool;
use arc_swap::ArcSwap;
use pingora_core::upstreams::peer::HttpPeer;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

pub struct LiveSettings {
    /// Each origin's peer, with the configured timeouts, built once per
    /// configuration.
    peers: ArcSwap<Vec<HttpPeer>>,
    /// Extra attempts on another origin.
    retries: AtomicU32,
}

impl LiveSettings {
    pub fn new(pool: &Pool, timeouts: Timeouts, retries: u32) -> Self {
        LiveSettings {
            peers: ArcSwap::from_pointee(peers(pool, timeouts)),
            retries: AtomicU32::new(retries),
        }
    }

    /// A reload's timeouts and retries (or new origins: the peers cover
    /// every index of the pool).
    pub fn set(&self, pool: &Pool, timeouts: Timeouts, retries: u32) {
        self.peers.store(Arc::new(peers(pool, timeouts)));
        self.retries.store(retries, Ordering::Release);
    }

    pub fn peer(&self, index: usize) -> Option<HttpPeer> {
        self.peers.load().get(index).cloned()
    }

    pub fn retries(&self) -> u32 {
        self.retries.load(Ordering::Acquire)
    }
}

fn peers(pool: &Pool, timeouts: Timeouts) -> Vec<HttpPeer> {
    (0..pool.len())
        .filter_map(|index| pool.origin(index))
        .map(|origin| {
            let mut peer = HttpPeer::new(origin.address, false, String::new());
            if let Some(tls) = &origin.tls {
                tls.apply_to(&mut peer);
            }
            let options = &mut peer.options;
            options.connection_timeout = Some(timeouts.connect);
            options.read_timeout = Some(timeouts.read);
            options.write_timeout = Some(timeouts.write);
            options.idle_timeout = Some(timeouts.idle);
            peer
        })
        .collect()
}
