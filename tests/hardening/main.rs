//! Hostile and careless clients, with real sockets (raw TCP where an HTTP
//! client would refuse to send the bad bytes): truncated chunked writes,
//! shared idempotency keys, missing `Host`, pipelining, slowloris, idle
//! keep-alive connections and a connection flood up to the descriptor limit.
//! The connection-level ones (slowloris, idle keep-alive, the flood) are in
//! `connections.rs`.

mod client_errors;
#[path = "../common/mod.rs"]
mod common;
mod connections;
mod side_listeners;
mod slow_paths_and_tunnels;
mod stuck_writes;

use bytes::Bytes;
use common::process::ProxyProcess;
use common::*;
use http_body_util::Full;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);

/// An origin that answers `status` to every write as soon as it has its
/// head, before reading any of the body, and 200 to `GET /health`.
async fn early_answering_origin(status: u16) -> std::net::SocketAddr {
    raw_server(move |mut stream| async move {
        let mut buffer = vec![0u8; 65536];
        let mut seen = Vec::new();
        loop {
            let Ok(n) = stream.read(&mut buffer).await else {
                return;
            };
            if n == 0 {
                return;
            }
            seen.extend_from_slice(&buffer[..n]);
            if seen.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        let answer = if seen.starts_with(b"GET /health") {
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_owned()
        } else {
            format!("HTTP/1.1 {status} Created\r\nContent-Length: 0\r\n\r\n")
        };
        let _ = stream.write_all(answer.as_bytes()).await;
        // Then read (and drop) whatever else comes.
        while matches!(stream.read(&mut buffer).await, Ok(n) if n > 0) {}
    })
    .await
}

/// Sends `request` raw and returns everything the proxy answers until it
/// closes or goes quiet for `quiet`.
async fn raw_exchange(port: u16, request: &[u8], quiet: Duration) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 8192];
    while let Ok(Ok(n)) = tokio::time::timeout(quiet, stream.read(&mut buffer)).await {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buffer[..n]);
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_write_answered_before_its_body_ended_is_neither_replicated_nor_acknowledged() {
    let primary = early_answering_origin(201).await;
    let peer = TestOrigin::start("b").await;
    let proxy = start_proxy(
        &[("a", primary, 1), ("b", peer.addr, 0)],
        &replication_settings("  order: version\n  max_body: 1MiB\n"),
    )
    .await;
    // 2 MiB, over max_body, and 40 KB, under it: the primary answers either
    // before the body ends.
    let big = [b'z'; 64 * 1024];
    let chunks: Vec<&[u8]> = std::iter::repeat_n(&big[..], 32).collect();
    let status = chunked_put(proxy.port, "/kv/big", &chunks).await;
    assert!(
        !(200..300).contains(&status),
        "the client was told {status}"
    );
    let small = [b'y'; 10_000];
    let status = chunked_put(proxy.port, "/kv/small", &[&small, &small, &small, &small]).await;
    assert!(
        !(200..300).contains(&status),
        "the client was told {status}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(peer.seen().len(), 0, "a peer stored a truncated write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_writes_sharing_an_idempotency_key_converge() {
    for order in ["total", "key", "version"] {
        for attempt in 0..5 {
            let origins = [TestOrigin::start("a").await, TestOrigin::start("b").await];
            for origin in &origins {
                origin
                    .shared
                    .dedupe
                    .store(true, std::sync::atomic::Ordering::SeqCst);
            }
            let proxy = start_proxy(
                &[("a", origins[0].addr, 1), ("b", origins[1].addr, 1)],
                &replication_settings(&format!("  order: {order}\n")),
            )
            .await;
            let write = |body: &'static str| {
                let request = http::Request::put(proxy.url("/kv/shared"))
                    .header("idempotency-key", "reused")
                    .body(Full::new(Bytes::from_static(body.as_bytes())))
                    .unwrap();
                send(request)
            };
            let (one, two) = tokio::join!(write("one"), write("two"));
            assert_eq!((one.status, two.status), (200, 200));
            let converged = wait_until(WAIT, || async {
                origins[0].value("shared").is_some()
                    && origins[0].value("shared") == origins[1].value("shared")
            })
            .await;
            assert!(
                converged,
                "order {order}, try {attempt}: a holds {:?}, b holds {:?}",
                origins[0].value("shared"),
                origins[1].value("shared")
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_host_get_400_and_pipelined_ones_are_answered_in_order() {
    let a = TestOrigin::start("a").await;
    let proxy = start_proxy(&[("a", a.addr, 1)], "replication: {mode: off}\n").await;
    let answer = raw_exchange(
        proxy.port,
        b"GET /x HTTP/1.1\r\n\r\n",
        Duration::from_millis(500),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let answer = raw_exchange(
        proxy.port,
        b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        Duration::from_millis(500),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(a.served(), 0, "a bad request reached the origin");
    // HTTP/1.0 needs no Host.
    let answer = raw_exchange(
        proxy.port,
        b"GET /x HTTP/1.0\r\n\r\n",
        Duration::from_millis(500),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let answer = raw_exchange(
        proxy.port,
        b"GET /first HTTP/1.1\r\nHost: a\r\n\r\nGET /second HTTP/1.1\r\nHost: a\r\n\r\n",
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(answer.matches("HTTP/1.1 200").count(), 2, "{answer}");
    let paths: Vec<String> = a.seen().iter().map(|s| s.path_and_query.clone()).collect();
    assert_eq!(&paths[paths.len() - 2..], ["/first", "/second"]);
}
