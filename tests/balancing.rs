//! Load spreading over a real pool: capacity shares, smoothness, retries, 503s,
//! proxy headers, metrics. Real hyper origins on 127.0.0.1, hothot in-process.

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use std::time::Duration;

/// Long probe interval: the pool's state only changes when the test says so.
const STEADY_HEALTH: &str = "health: {interval: 1m, timeout: 500ms, passive: {failures: 0}}\n";

async fn three_origins() -> (TestOrigin, TestOrigin, TestOrigin) {
    (
        TestOrigin::start("a").await,
        TestOrigin::start("b").await,
        TestOrigin::start("c").await,
    )
}

/// Sends `n` sequential GETs and returns which origin answered each.
async fn sequence(proxy: &Proxy, n: usize) -> Vec<String> {
    let mut order = Vec::with_capacity(n);
    for _ in 0..n {
        let answer = get(&proxy.url("/item")).await;
        assert_eq!(answer.status, 200, "body: {}", answer.body);
        order.push(answer.body);
    }
    order
}

fn share(order: &[String], name: &str) -> f64 {
    order.iter().filter(|o| *o == name).count() as f64 / order.len() as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_is_shared_by_capacity_within_one_point() {
    let (a, b, c) = three_origins().await;
    let proxy = start_proxy(
        &[("a", a.addr, 1000), ("b", b.addr, 800), ("c", c.addr, 600)],
        STEADY_HEALTH,
    )
    .await;
    let order = sequence(&proxy, 2400).await;
    let (sa, sb, sc) = (share(&order, "a"), share(&order, "b"), share(&order, "c"));
    println!(
        "shares over 2400 requests: a {:.2}% b {:.2}% c {:.2}%",
        sa * 100.0,
        sb * 100.0,
        sc * 100.0
    );
    assert!((sa - 1000.0 / 2400.0).abs() < 0.01, "a got {sa}");
    assert!((sb - 800.0 / 2400.0).abs() < 0.01, "b got {sb}");
    assert!((sc - 600.0 / 2400.0).abs() < 0.01, "c got {sc}");
    // The origins agree with what the proxy answered.
    assert_eq!((a.served(), b.served(), c.served()), (1000, 800, 600));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selection_is_smooth_and_exact_in_every_window() {
    let (a, b, c) = three_origins().await;
    let proxy = start_proxy(
        &[("a", a.addr, 1000), ("b", b.addr, 800), ("c", c.addr, 600)],
        STEADY_HEALTH,
    )
    .await;
    let order = sequence(&proxy, 240).await;
    let longest_run = order
        .chunk_by(|x, y| x == y)
        .map(|run| run.len())
        .max()
        .unwrap();
    assert!(
        longest_run <= 2,
        "a burst of {longest_run} requests to one origin: {order:?}"
    );
    // Σ capacity / gcd = 2400 / 200 = 12 requests hold exactly 5, 4 and 3.
    for window in order.windows(12) {
        let count = |name: &str| window.iter().filter(|o| *o == name).count();
        assert_eq!(
            (count("a"), count("b"), count("c")),
            (5, 4, 3),
            "window {window:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_origin_gets_nothing_and_the_rest_stay_proportional() {
    let (a, b, c) = three_origins().await;
    let proxy = start_proxy(
        &[("a", a.addr, 1000), ("b", b.addr, 0), ("c", c.addr, 600)],
        STEADY_HEALTH,
    )
    .await;
    let order = sequence(&proxy, 800).await;
    assert_eq!(b.served(), 0);
    assert_eq!((a.served(), c.served()), (500, 300));
    drop(order);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_are_retried_elsewhere_and_lose_no_request() {
    let (a, mut b, c) = three_origins().await;
    // Adaptive weights off: they would lower b's factor as its connections
    // fail (tests/adaptive.rs), and this test counts b's first picks.
    let proxy = start_proxy(
        &[("a", a.addr, 1000), ("b", b.addr, 800), ("c", c.addr, 600)],
        &format!("{STEADY_HEALTH}balancing: {{adaptive: {{enabled: false}}}}\n"),
    )
    .await;
    // b dies; probes run once a minute and passive ejection is off, so only
    // retries stand between the clients and b's refused connections.
    b.stop();
    let order = sequence(&proxy, 800).await;
    assert!(order.iter().all(|o| o != "b"));
    // b's share went to a and c in proportion to their own capacities, 1000:600.
    let sa = share(&order, "a");
    println!(
        "with b refusing connections, a got {:.2}% (expected 62.50%)",
        sa * 100.0
    );
    assert!((sa - 0.625).abs() < 0.02, "a got {sa}");
    // Writes succeed too: each is answered by an origin that is up.
    for i in 0..20 {
        let post = http::Request::post(proxy.url("/write"))
            .body(Full::new(Bytes::from(format!("v{i}"))))
            .unwrap();
        assert_eq!(send(post).await.status, 200);
    }
    let metrics = proxy.metrics().await;
    let retries = metric_value(&metrics, "hothot_retries_total{origin=\"b\"}").unwrap();
    // b is the first pick of 800/2400 of the 800 reads: every one was
    // retried. (Writes go to every origin in one order, and b is no longer
    // picked as a primary once its deliveries fail; a write whose primary b
    // was is answered by another origin, which counts as a retry too.)
    assert!(
        (265.0..=275.0).contains(&retries),
        "b's failed attempts were retried: {retries}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_serving_origin_answers_503_and_counts_it() {
    let (a, b, c) = three_origins().await;
    for origin in [&a, &b, &c] {
        origin.set_health(503);
    }
    let proxy = start_proxy(
        &[("a", a.addr, 1000), ("b", b.addr, 800), ("c", c.addr, 600)],
        STEADY_HEALTH,
    )
    .await;
    for _ in 0..3 {
        let answer = get(&proxy.url("/")).await;
        assert_eq!(answer.status, 503);
        assert!(
            answer.body.contains("no healthy origin"),
            "body: {}",
            answer.body
        );
    }
    assert_eq!(a.served() + b.served() + c.served(), 0);
    let metrics = proxy.metrics().await;
    assert_eq!(metric_value(&metrics, "hothot_no_origin_total"), Some(3.0));
}

/// An origin that answers probes but drops every other request without a word.
async fn dropping_origin() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    raw_server(|mut stream| async move {
        let mut buf = vec![0u8; 4096];
        let n = stream.read(&mut buf).await.unwrap_or(0);
        if buf[..n].starts_with(b"GET /health") {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_failing_mid_request_gives_502() {
    let broken = dropping_origin().await;
    let proxy = start_proxy(&[("broken", broken, 100)], STEADY_HEALTH).await;
    let post = http::Request::post(proxy.url("/write"))
        .body(Full::new(Bytes::from_static(b"x")))
        .unwrap();
    let answer = send(post).await;
    assert_eq!(answer.status, 502, "body: {}", answer.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_are_added_and_hop_by_hop_headers_dropped() {
    let a = TestOrigin::start("a").await;
    let proxy = start_proxy(&[("a", a.addr, 1)], STEADY_HEALTH).await;
    let request = http::Request::get(proxy.url("/page?q=1"))
        .header("host", "shop.example")
        .header("x-forwarded-for", "203.0.113.9")
        .header("connection", "x-private")
        .header("x-private", "secret")
        .body(Full::default())
        .unwrap();
    let answer = send(request).await;
    assert_eq!(answer.status, 200);
    // The origin sent `keep-alive: timeout=30`: a hop-by-hop header the client must not see.
    assert!(answer.headers.get("keep-alive").is_none());
    let seen = a.seen().pop().unwrap();
    assert_eq!(seen.path_and_query, "/page?q=1");
    assert_eq!(seen.headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["x-forwarded-host"], "shop.example");
    assert!(
        seen.headers.get("x-private").is_none(),
        "a header nominated by Connection leaked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_kept_alive_and_reused() {
    let a = TestOrigin::start("a").await;
    let proxy = start_proxy(&[("a", a.addr, 1)], STEADY_HEALTH).await;
    sequence(&proxy, 200).await;
    let connections = a
        .shared
        .connections
        .load(std::sync::atomic::Ordering::SeqCst);
    // One probe connection plus a handful for traffic, not one per request.
    assert!(
        connections <= 10,
        "{connections} connections for 200 requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_expose_every_documented_series() {
    let (a, b, c) = three_origins().await;
    let proxy = start_proxy(
        &[("a", a.addr, 1000), ("b", b.addr, 800), ("c", c.addr, 600)],
        STEADY_HEALTH,
    )
    .await;
    sequence(&proxy, 24).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let metrics = proxy.metrics().await;
    for name in [
        "hothot_requests_total",
        "hothot_request_duration_seconds",
        "hothot_origin_up",
        "hothot_origin_capacity",
        "hothot_origin_weight",
        "hothot_health_checks_total",
        "hothot_retries_total",
        "hothot_requests_in_flight",
        "hothot_no_origin_total",
        "hothot_replication_divergence_total",
        "hothot_replication_verified_total",
    ] {
        assert!(
            metrics.contains(&format!("# TYPE {name} ")),
            "{name} missing from:\n{metrics}"
        );
    }
    // The metrics listener is read-only.
    let post = http::Request::post(format!("http://127.0.0.1:{}/metrics", proxy.metrics_port))
        .body(Full::new(Bytes::from_static(b"x")))
        .unwrap();
    let refused = send(post).await;
    assert_eq!(refused.status, 405);
    assert_eq!(refused.headers["allow"], "GET, HEAD");
    assert_eq!(
        metric_value(
            &metrics,
            "hothot_requests_total{code=\"200\",method=\"GET\",origin=\"a\"}"
        ),
        Some(10.0)
    );
    assert_eq!(
        metric_value(
            &metrics,
            "hothot_request_duration_seconds_count{kind=\"read\",origin=\"c\"}"
        ),
        Some(6.0)
    );
    // Series known in advance exist from start-up, at 0: the first 5xx or
    // the first dropped write is an increase Prometheus sees.
    for (series, value) in [
        (
            "hothot_responses_total{class=\"2xx\",kind=\"read\",origin=\"c\"}",
            6.0,
        ),
        (
            "hothot_responses_total{class=\"5xx\",kind=\"read\",origin=\"c\"}",
            0.0,
        ),
        (
            "hothot_responses_total{class=\"none\",kind=\"write\",origin=\"a\"}",
            0.0,
        ),
        (
            "hothot_responses_total{class=\"5xx\",kind=\"read\",origin=\"\"}",
            0.0,
        ),
        ("hothot_replication_dropped_total{peer=\"b\"}", 0.0),
        ("hothot_passive_ejections_total{origin=\"b\"}", 0.0),
        ("hothot_build_info{version=\"0.1.0\"}", 1.0),
    ] {
        assert_eq!(metric_value(&metrics, series), Some(value), "{series}");
    }
    assert!(
        metrics.contains("\nprocess_resident_memory_bytes "),
        "{metrics}"
    );
    assert!(metrics.contains("\nprocess_open_fds "), "{metrics}");
    assert_eq!(
        metric_value(&metrics, "hothot_origin_up{origin=\"b\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric_value(&metrics, "hothot_origin_capacity{origin=\"a\"}"),
        Some(1000.0)
    );
    let weight = metric_value(&metrics, "hothot_origin_weight{origin=\"a\"}").unwrap();
    assert!((weight - 1000.0 / 2400.0).abs() < 1e-9, "weight {weight}");
    assert!(
        metric_value(
            &metrics,
            "hothot_health_checks_total{origin=\"a\",result=\"success\"}"
        )
        .unwrap()
            >= 1.0
    );
    assert_eq!(
        metric_value(&metrics, "hothot_requests_in_flight"),
        Some(0.0)
    );
}
