//! The floor under hothot's per-request cost: a Pingora 0.9 proxy with no
//! hooks of its own beyond picking an origin (round robin over prebuilt
//! peers), built with the same crates, patches, allocator and release
//! profile. `scripts/bench.sh` runs it as `pingora`: what hothot costs above
//! it is hothot's; what it costs above nginx is Pingora's.
//!
//! `cargo run --release --example bare_pingora -- 127.0.0.1:8080 127.0.0.1:9001 127.0.0.2:9001`
//!
//! One worker thread on one current-thread runtime (hothot's default), idle
//! upstream pool of 128 connections or 2 per origin, and, like hothot, a 1 KiB
//! read buffer per client connection.

use async_trait::async_trait;
use pingora_core::listeners::ListenerConfig;
use pingora_core::protocols::l4::stream::L4BufferSettings;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::Result;
use pingora_proxy::{ProxyHttp, Session};
use std::sync::atomic::{AtomicUsize, Ordering};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: hothot::alloc::Allocator = hothot::alloc::Allocator;

// The allocator configured as hothot's (src/main.rs).
#[cfg(feature = "mimalloc")]
#[used]
#[link_section = ".init_array.00099"]
static CONFIGURE_ALLOCATOR: extern "C" fn() = hothot::alloc::configure_at_load;

struct RoundRobin {
    peers: Vec<HttpPeer>,
    next: AtomicUsize,
}

#[async_trait]
impl ProxyHttp for RoundRobin {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.peers.len();
        Ok(Box::new(self.peers[i].clone()))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!("usage: bare_pingora LISTEN ORIGIN...");
        std::process::exit(2);
    }
    let (listen, origins) = (&args[0], &args[1..]);
    let mut conf = ServerConf::default();
    conf.threads = 1;
    conf.work_stealing = false;
    conf.upstream_keepalive_pool_size = conf.upstream_keepalive_pool_size.max(2 * origins.len());
    conf.grace_period_seconds = Some(0);
    conf.graceful_shutdown_timeout_seconds = Some(0);
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let peers = origins
        .iter()
        .map(|address| HttpPeer::new(address.as_str(), false, String::new()))
        .collect();
    let proxy = RoundRobin {
        peers,
        next: AtomicUsize::new(0),
    };
    let mut service = pingora_proxy::http_proxy_service(&server.configuration, proxy);
    service.add_listener(ListenerConfig::tcp(listen).l4_buffer(L4BufferSettings::new(1024, 1460)));
    server.add_service(service);
    server.run_forever();
}
