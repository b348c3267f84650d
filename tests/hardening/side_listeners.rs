//! The admin and metrics listeners under a slowloris flood: each holds at
//! most its own cap, closes stalled headers in time and logs no line per
//! connection, while the proxy serves and its origins stay up; failed admin
//! logins are logged a few at a time.

use super::connections::{closed_within, raise_own_descriptor_limit, rss_kib, well_behaved_client};
use super::*;

/// Half a request header, never finished.
const HALF_HEADER: &[u8] = b"GET /status HTTP/1.1\r\nHost: flood\r\n";

/// `/metrics`, as a scraper under a flood gets it: its connection may be
/// refused while the flood's own arrive faster than they are admitted, and
/// the next scrape gets through.
async fn scrape(port: u16) -> String {
    let url = format!("http://127.0.0.1:{port}/metrics");
    for _ in 0..50 {
        if let Ok(answer) = try_send(http::Request::get(&url).body(Full::default()).unwrap()).await
        {
            return answer.body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no scrape got through in 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_on_the_side_listeners_leaves_the_proxy_serving_and_the_origins_up() {
    raise_own_descriptor_limit();
    let a = TestOrigin::start("a").await;
    let admin_port = free_port();
    // Metrics with its defaults (64 connections, 10s per header); admin
    // with a shorter header timeout, to see stalled ones closed.
    let proxy = ProxyProcess::start_with_nofile(
        &temp_dir("side-flood"),
        &format!(
            "origins:\n  - {{name: a, address: \"{}\", capacity: 1}}\n\
             health: {{interval: 100ms, timeout: 200ms}}\nreplication: {{mode: off}}\n\
             admin: {{listen: \"127.0.0.1:{admin_port}\", limits: {{header_timeout: 2s}}}}\n",
            a.addr
        ),
        Some(1024),
    )
    .await;
    wait_for_port(admin_port).await;
    let pid = proxy.pid().unwrap();
    let before = rss_kib(pid);
    let client = well_behaved_client(proxy.url("/"));
    // 2 × 1,500 connections, each half a header, held.
    let (mut admin_flood, mut metrics_flood) = (Vec::new(), Vec::new());
    let mut held = [0.0f64; 2];
    for i in 0..1500 {
        for (port, flood) in [
            (admin_port, &mut admin_flood),
            (proxy.metrics_port, &mut metrics_flood),
        ] {
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)).await {
                let _ = stream.write_all(HALF_HEADER).await;
                flood.push(stream);
            }
        }
        if i % 250 == 249 {
            let metrics = scrape(proxy.metrics_port).await;
            for (held, listener) in held.iter_mut().zip(["admin", "metrics"]) {
                let series = format!("hothot_listener_connections{{listener=\"{listener}\"}}");
                *held = held.max(metric_value(&metrics, &series).unwrap_or(0.0));
            }
            let up = metric_value(&metrics, "hothot_origin_up{origin=\"a\"}");
            assert_eq!(up, Some(1.0), "the flood marked the origin down");
        }
    }
    let during = rss_kib(pid);
    let mut latencies = client.await.unwrap();
    latencies.sort();
    println!(
        "side flood: {} + {} connections opened, at most {} (admin) and {} (metrics) held; \
         RSS {before} KiB -> {during} KiB; well-behaved client: {} requests, all 200, \
         p50 {:?}, p99 {:?}, max {:?}",
        admin_flood.len(),
        metrics_flood.len(),
        held[0],
        held[1],
        latencies.len(),
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 99 / 100],
        latencies[latencies.len() - 1]
    );
    // 64 admitted, and for a moment those evicted for newcomers and not
    // closed yet.
    assert!(held[0] <= 72.0 && held[1] <= 72.0, "held {held:?}");
    assert!(
        during < before + 64 * 1024,
        "RSS {before} KiB -> {during} KiB"
    );
    // A newcomer is admitted (the longest-waiting flood connection makes
    // room), and its stalled header is closed after admin's 2s.
    let mut stalled = TcpStream::connect(("127.0.0.1", admin_port)).await.unwrap();
    stalled.write_all(HALF_HEADER).await.unwrap();
    let started = Instant::now();
    assert!(closed_within(&mut stalled, Duration::from_secs(6)).await);
    assert!(
        started.elapsed() > Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    // The metrics port still answers a scraper.
    assert!(proxy
        .metrics()
        .await
        .contains("hothot_listener_connections_max"));
    let log = proxy.log();
    assert!(!log.contains("ERROR"), "{log}");
    assert!(!log.contains("Too many open files"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_admin_logins_are_logged_a_few_at_a_time() {
    let a = TestOrigin::start("a").await;
    let admin_port = free_port();
    let dir = temp_dir("admin-logins");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("token"), "s3cret\n").unwrap();
    let proxy = ProxyProcess::start(
        &dir,
        &format!(
            "origins: [{{name: a, address: \"{}\", capacity: 1}}]\nreplication: {{mode: off}}\n\
             admin: {{listen: \"127.0.0.1:{admin_port}\", token_file: token}}\n",
            a.addr
        ),
    )
    .await;
    wait_for_port(admin_port).await;
    for _ in 0..200 {
        let request = http::Request::post(format!("http://127.0.0.1:{admin_port}/origins/a/drain"))
            .header("authorization", "Bearer guess")
            .body(Full::default())
            .unwrap();
        assert_eq!(send(request).await.status, 401);
    }
    let log = proxy.log();
    let lines = log.matches("refused: unauthorized").count();
    assert!(
        (1..=5).contains(&lines),
        "{lines} lines for 200 refusals:\n{log}"
    );
}
