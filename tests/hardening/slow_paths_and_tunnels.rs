//! Passive health against one slow path (it ejects nobody; several slow
//! paths eject no more than `max_ejection_percent`), and upgraded
//! connections as tunnels (idle beyond `timeouts.read`, never retried,
//! their end nobody's failure).

use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The origins' `hothot_origin_up`, a then b then c.
async fn up(proxy: &ProxyProcess) -> Vec<f64> {
    let metrics = proxy.metrics().await;
    ["a", "b", "c"]
        .iter()
        .map(|o| metric_value(&metrics, &format!("hothot_origin_up{{origin=\"{o}\"}}")).unwrap())
        .collect()
}

/// `concurrency` GETs of each of `paths` at once; every answer must be 504.
async fn timed_out_reads(proxy: &ProxyProcess, paths: &[&str], concurrency: usize) {
    let mut requests = tokio::task::JoinSet::new();
    for path in paths {
        for _ in 0..concurrency {
            let url = proxy.url(path);
            requests.spawn(async move { get(&url).await });
        }
    }
    while let Some(answer) = requests.join_next().await {
        assert_eq!(answer.unwrap().status, 504, "a timed-out read");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_slow_path_ejects_no_origin_and_several_eject_at_most_half() {
    let origins = [
        TestOrigin::start("a").await,
        TestOrigin::start("b").await,
        TestOrigin::start("c").await,
    ];
    for origin in &origins {
        origin.fail_path(Some(("/never", 1)));
    }
    let proxy = ProxyProcess::start(
        &temp_dir("slow-path"),
        &format!(
            "origins:\n  - {{name: a, address: \"{}\", capacity: 1}}\n  \
             - {{name: b, address: \"{}\", capacity: 1}}\n  - {{name: c, address: \"{}\", capacity: 1}}\n\
             health: {{interval: 200ms, timeout: 200ms, passive: {{failures: 3, eject: 30s}}}}\n\
             timeouts: {{read: 300ms}}\nretries: 0\nreplication: {{mode: off}}\n",
            origins[0].addr, origins[1].addr, origins[2].addr
        ),
    )
    .await;
    // 60 clients wait on the one path no origin answers: each gets 504,
    // and every origin stays in service.
    timed_out_reads(&proxy, &["/never"], 60).await;
    assert_eq!(
        up(&proxy).await,
        [1.0, 1.0, 1.0],
        "one slow path ejected origins"
    );
    assert_eq!(get(&proxy.url("/fine")).await.status, 200);
    // Three different paths time out: that is the origins failing, and they
    // are ejected, but never more than half of the pool (one of three).
    timed_out_reads(&proxy, &["/never/1", "/never/2", "/never/3"], 10).await;
    let up = up(&proxy).await;
    assert_eq!(up.iter().sum::<f64>(), 2.0, "{up:?}");
    for _ in 0..10 {
        assert_eq!(get(&proxy.url("/fine")).await.status, 200);
    }
    let log = proxy.log();
    assert!(log.contains("max_ejection_percent"), "{log}");
}

/// An origin that answers `101` to anything, then echoes what it receives;
/// `handshakes` counts the upgrade requests it received.
async fn echo_origin(handshakes: Arc<AtomicUsize>) -> std::net::SocketAddr {
    raw_server(move |mut stream| {
        let handshakes = handshakes.clone();
        async move {
            let mut buffer = vec![0u8; 4096];
            let Ok(n) = stream.read(&mut buffer).await else {
                return;
            };
            if buffer[..n].starts_with(b"GET /health") {
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
                return;
            }
            handshakes.fetch_add(1, Ordering::SeqCst);
            let _ = stream
                .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
                .await;
            while let Ok(n) = stream.read(&mut buffer).await {
                if n == 0 || stream.write_all(&buffer[..n]).await.is_err() {
                    return;
                }
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_upgraded_connection_outlives_the_read_timeout_and_is_never_retried() {
    let handshakes = Arc::new(AtomicUsize::new(0));
    let (a, b) = (
        echo_origin(handshakes.clone()).await,
        echo_origin(handshakes.clone()).await,
    );
    let proxy = ProxyProcess::start(
        &temp_dir("tunnel"),
        &format!(
            "origins:\n  - {{name: a, address: \"{a}\", capacity: 1}}\n  - {{name: b, address: \"{b}\", capacity: 1}}\n\
             health: {{interval: 200ms, timeout: 200ms, passive: {{failures: 1}}}}\n\
             timeouts: {{read: 300ms, tunnel_idle: 2s}}\nreplication: {{mode: off}}\n"
        ),
    )
    .await;
    let mut tunnel = TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap();
    tunnel
        .write_all(
            b"GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        )
        .await
        .unwrap();
    let mut buffer = [0u8; 1024];
    let n = tunnel.read(&mut buffer).await.unwrap();
    assert!(
        buffer[..n].starts_with(b"HTTP/1.1 101"),
        "{:?}",
        String::from_utf8_lossy(&buffer[..n])
    );
    // Quiet for three read timeouts, then still a tunnel.
    tokio::time::sleep(Duration::from_millis(900)).await;
    tunnel.write_all(b"ping").await.unwrap();
    let n = tokio::time::timeout(WAIT, tunnel.read(&mut buffer))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buffer[..n], b"ping");
    // Quiet beyond tunnel_idle: closed, and not sent again anywhere.
    let started = Instant::now();
    let end = tokio::time::timeout(WAIT, tunnel.read(&mut buffer))
        .await
        .unwrap();
    assert!(matches!(end, Ok(0) | Err(_)), "{end:?}");
    assert!(started.elapsed() > Duration::from_millis(1500));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        handshakes.load(Ordering::SeqCst),
        1,
        "the handshake was sent again"
    );
    let metrics = proxy.metrics().await;
    for origin in ["a", "b"] {
        let ejections = format!("hothot_passive_ejections_total{{origin=\"{origin}\"}}");
        assert_eq!(metric_value(&metrics, &ejections), Some(0.0), "{origin}");
    }
    let log = proxy.log();
    assert!(!log.contains("ERROR"), "{log}");
}
