//! A TCP relay in front of one etcd member that loses one reply: the
//! request carrying a marker reaches etcd (which commits it), its reply
//! and everything after it on that connection are swallowed, then the
//! connection is cut, as when a reply is lost to a broken link or a
//! leader's crash. The client cannot tell whether its request was taken.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long replies are swallowed before the cut: long enough for etcd to
/// commit the request on a busy machine, short of the client's timeout
/// per attempt.
const SWALLOW: Duration = Duration::from_millis(400);

#[derive(Clone, Default)]
struct Shared {
    /// The marker of the request whose reply is to be lost, once armed.
    armed: Arc<Mutex<Option<Vec<u8>>>>,
    /// Connections cut so far.
    cuts: Arc<AtomicUsize>,
}

pub struct LostReply {
    pub addr: SocketAddr,
    shared: Shared,
}

impl LostReply {
    /// Relays every connection to `target`, losing nothing until armed.
    pub async fn start(target: SocketAddr) -> LostReply {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Shared::default();
        let relaying = shared.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(target).await else {
                    continue;
                };
                tokio::spawn(relay(client, server, relaying.clone()));
            }
        });
        LostReply { addr, shared }
    }

    /// The next request that carries `marker` loses its reply.
    pub fn arm(&self, marker: &[u8]) {
        *self.shared.armed.lock().unwrap() = Some(marker.to_vec());
    }

    /// How many replies were lost so far.
    pub fn cuts(&self) -> usize {
        self.shared.cuts.load(Ordering::SeqCst)
    }
}

async fn relay(client: TcpStream, server: TcpStream, shared: Shared) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let swallowing = Arc::new(AtomicBool::new(false));
    let seen = swallowing.clone();
    let requests = tokio::spawn(async move {
        let mut buffer = vec![0u8; 64 * 1024];
        let mut window: Vec<u8> = Vec::new();
        loop {
            let n = match client_read.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let chunk = &buffer[..n];
            let armed = shared.armed.lock().unwrap().clone();
            if let Some(marker) = armed {
                // The marker may straddle two reads.
                window.extend_from_slice(chunk);
                if window.windows(marker.len()).any(|w| w == marker.as_slice()) {
                    *shared.armed.lock().unwrap() = None;
                    seen.store(true, Ordering::SeqCst);
                }
                let keep = window.len().saturating_sub(marker.len());
                window.drain(..keep);
            }
            if server_write.write_all(chunk).await.is_err() {
                return;
            }
        }
    });
    let swallow = swallowing.clone();
    let replies = tokio::spawn(async move {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = match server_read.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if !swallow.load(Ordering::SeqCst)
                && client_write.write_all(&buffer[..n]).await.is_err()
            {
                return;
            }
        }
    });
    while !swallowing.load(Ordering::SeqCst) {
        if requests.is_finished() || replies.is_finished() {
            requests.abort();
            replies.abort();
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(SWALLOW).await;
    // Both halves of both sockets drop with their tasks: the link is cut.
    requests.abort();
    replies.abort();
    shared.cuts.fetch_add(1, Ordering::SeqCst);
}
