//! Origins leaving and rejoining the pool: active probes (rise/fall), passive
//! ejection from live traffic, origins dead at start-up.

mod common;

use common::process::ProxyProcess;
use common::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Probes every 100ms, fall 2, rise 2; passive ejection off so that only the
/// active probes decide. Slow start off: these tests count a returning
/// origin's full share at once (tests/adaptive.rs covers the ramp).
const ACTIVE_ONLY: &str =
    "health: {interval: 100ms, timeout: 100ms, rise: 2, fall: 2, passive: {failures: 0}}\n\
     balancing: {slow_start: 0s}\n";

async fn origin_up(proxy: &Proxy, name: &str) -> Option<f64> {
    metric_value(
        &proxy.metrics().await,
        &format!("hothot_origin_up{{origin=\"{name}\"}}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_origin_is_taken_out_and_comes_back_after_rise() {
    let (a, mut b) = (TestOrigin::start("a").await, TestOrigin::start("b").await);
    let proxy = start_proxy(&[("a", a.addr, 1), ("b", b.addr, 1)], ACTIVE_ONLY).await;
    assert_eq!(origin_up(&proxy, "b").await, Some(1.0));

    b.stop();
    let stopped = Instant::now();
    // fall (2) x interval (100ms), plus one probe timeout and scheduling slack.
    let limit = Duration::from_millis(2 * 100 + 100) + Duration::from_secs(2);
    let ejected = wait_until(limit, || async {
        origin_up(&proxy, "b").await == Some(0.0)
    })
    .await;
    println!(
        "b ejected {:?} after it stopped (fall 2 x interval 100ms)",
        stopped.elapsed()
    );
    assert!(ejected, "b still up {:?} after it died", stopped.elapsed());
    let before = b.served();
    for _ in 0..50 {
        assert_eq!(get(&proxy.url("/")).await.body, "a");
    }
    assert_eq!(b.served(), before);

    b.restart().await;
    let restarted = Instant::now();
    let back = wait_until(Duration::from_secs(3), || async {
        origin_up(&proxy, "b").await == Some(1.0)
    })
    .await;
    println!(
        "b back {:?} after it restarted (rise 2 x interval 100ms)",
        restarted.elapsed()
    );
    assert!(back, "b did not come back");
    let answers: Vec<String> = futures_seq(&proxy, 20).await;
    assert_eq!(answers.iter().filter(|o| *o == "b").count(), 10);
}

async fn futures_seq(proxy: &Proxy, n: usize) -> Vec<String> {
    let mut answers = Vec::new();
    for _ in 0..n {
        answers.push(get(&proxy.url("/")).await.body);
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failed_probe_is_not_enough_to_fall() {
    let (a, b) = (TestOrigin::start("a").await, TestOrigin::start("b").await);
    let slow =
        "health: {interval: 300ms, timeout: 100ms, rise: 2, fall: 3, passive: {failures: 0}}\n";
    let proxy = start_proxy(&[("a", a.addr, 1), ("b", b.addr, 1)], slow).await;
    b.set_health(500);
    // About two failed probes: below fall = 3.
    tokio::time::sleep(Duration::from_millis(650)).await;
    b.set_health(200);
    let checks = proxy.metrics().await;
    let failures = metric_value(
        &checks,
        "hothot_health_checks_total{origin=\"b\",result=\"failure\"}",
    )
    .unwrap_or(0.0);
    assert!(failures >= 1.0, "no failed probe was counted");
    assert_eq!(origin_up(&proxy, "b").await, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_down_at_start_never_gets_a_request() {
    let (a, b) = (TestOrigin::start("a").await, TestOrigin::start("b").await);
    b.set_health(503);
    let proxy = start_proxy(&[("a", a.addr, 1), ("b", b.addr, 1000)], ACTIVE_ONLY).await;
    for _ in 0..100 {
        assert_eq!(get(&proxy.url("/")).await.status, 200);
    }
    assert_eq!(
        b.served(),
        0,
        "b was down at start-up and still got traffic"
    );
    assert_eq!(a.served(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_probes_see_a_closed_port() {
    let (a, mut b) = (TestOrigin::start("a").await, TestOrigin::start("b").await);
    let tcp = "health: {kind: tcp, interval: 100ms, timeout: 100ms, rise: 1, fall: 1, passive: {failures: 0}}\n";
    let proxy = start_proxy(&[("a", a.addr, 1), ("b", b.addr, 1)], tcp).await;
    b.set_health(500); // a TCP probe does not look at HTTP
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(origin_up(&proxy, "b").await, Some(1.0));
    b.stop();
    assert!(
        wait_until(Duration::from_secs(3), || async {
            origin_up(&proxy, "b").await == Some(0.0)
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_5xx_answers_eject_an_origin_then_probes_decide() {
    let (a, b) = (TestOrigin::start("a").await, TestOrigin::start("b").await);
    let passive =
        "health: {interval: 100ms, timeout: 100ms, passive: {failures: 3, eject: 500ms}}\n\
                   balancing: {slow_start: 0s}\n";
    let proxy = start_proxy(&[("a", a.addr, 1), ("b", b.addr, 1)], passive).await;
    b.set_status(500); // probes still pass: only live traffic sees the failures
    let answers = futures_seq(&proxy, 40).await;
    let from_b = answers.iter().filter(|o| *o == "b").count();
    assert_eq!(
        from_b, 3,
        "b should be ejected after its third 500: {answers:?}"
    );
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric_value(&metrics, "hothot_passive_ejections_total{origin=\"b\"}"),
        Some(1.0)
    );
    // After the ejection the probes (which pass) let b back in.
    b.set_status(200);
    assert!(
        wait_until(Duration::from_secs(3), || async {
            origin_up(&proxy, "b").await == Some(1.0)
        })
        .await
    );
    let answers = futures_seq(&proxy, 10).await;
    assert_eq!(answers.iter().filter(|o| *o == "b").count(), 5);
}

/// A keep-alive origin written for these tests: answers every request
/// `200` with a two-byte body, counts the connections it accepted and the
/// requests it answered, closes a connection after `close_after` requests
/// when set (a short keep-alive limit), and stops accepting (while still
/// serving the connections it has) once `accepting` is cleared.
struct CountingOrigin {
    addr: std::net::SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    accepting: Arc<std::sync::atomic::AtomicBool>,
}

impl CountingOrigin {
    async fn start(close_after: Option<usize>) -> CountingOrigin {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = CountingOrigin {
            addr: listener.local_addr().unwrap(),
            connections: Arc::default(),
            requests: Arc::default(),
            accepting: Arc::new(true.into()),
        };
        let (connections, requests, accepting) = (
            origin.connections.clone(),
            origin.requests.clone(),
            origin.accepting.clone(),
        );
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                if !accepting.load(Ordering::SeqCst) {
                    return; // the listener is closed with this task
                }
                connections.fetch_add(1, Ordering::SeqCst);
                let requests = requests.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut filled = 0;
                    let mut answered = 0;
                    loop {
                        let Ok(n) = stream.read(&mut buf[filled..]).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        filled += n;
                        while let Some(end) =
                            buf[..filled].windows(4).position(|w| w == b"\r\n\r\n")
                        {
                            buf.copy_within(end + 4..filled, 0);
                            filled -= end + 4;
                            requests.fetch_add(1, Ordering::SeqCst);
                            answered += 1;
                            let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                            if stream.write_all(answer).await.is_err() {
                                return;
                            }
                            if close_after.is_some_and(|limit| answered >= limit) {
                                return;
                            }
                        }
                    }
                });
            }
        });
        origin
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_probes_keep_their_connection_and_connect_afresh_every_connect_every() {
    let kept = CountingOrigin::start(None).await;
    let fresh = CountingOrigin::start(None).await;
    let config =
        "health: {interval: 50ms, timeout: 200ms, connect_every: 5, passive: {failures: 0}}\n";
    let proxy = start_proxy(&[("kept", kept.addr, 1)], config).await;
    let single =
        "health: {interval: 50ms, timeout: 200ms, connect_every: 1, passive: {failures: 0}}\n";
    let proxy_single = start_proxy(&[("fresh", fresh.addr, 1)], single).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (probes, connections) = (
        kept.requests.load(Ordering::SeqCst),
        kept.connections.load(Ordering::SeqCst),
    );
    println!("connect_every 5: {probes} probes on {connections} connections");
    assert!(probes >= 10, "only {probes} probes in 1.5 s at 50ms");
    assert!(
        connections <= probes.div_ceil(5) + 1,
        "{probes} probes took {connections} connections with connect_every: 5"
    );
    assert!(
        connections >= probes / 5,
        "{probes} probes on {connections} connections: never reconnected"
    );
    let (probes, connections) = (
        fresh.requests.load(Ordering::SeqCst),
        fresh.connections.load(Ordering::SeqCst),
    );
    assert!(
        probes >= 10 && connections >= probes,
        "connect_every 1: {probes} probes on {connections} connections"
    );
    assert_eq!(origin_up(&proxy, "kept").await, Some(1.0));
    assert_eq!(origin_up(&proxy_single, "fresh").await, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_origin_closed_while_idle_is_not_a_failed_probe() {
    // The origin closes each connection after one answer without saying
    // so (no `Connection: close`): every kept connection is found closed.
    let origin = CountingOrigin::start(Some(1)).await;
    let config =
        "health: {interval: 50ms, timeout: 200ms, rise: 1, fall: 1, passive: {failures: 0}}\n";
    let proxy = start_proxy(&[("o", origin.addr, 1)], config).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let metrics = proxy.metrics().await;
    let failed = metric_value(
        &metrics,
        "hothot_health_checks_total{origin=\"o\",result=\"failure\"}",
    );
    let passed = metric_value(
        &metrics,
        "hothot_health_checks_total{origin=\"o\",result=\"success\"}",
    );
    assert_eq!(
        failed.unwrap_or(0.0),
        0.0,
        "probes failed on connections closed while idle"
    );
    assert!(
        passed.unwrap_or(0.0) >= 10.0,
        "{passed:?} probes passed in 1 s at 50ms"
    );
    assert_eq!(origin_up(&proxy, "o").await, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_stopped_accepting_fails_its_probes_despite_a_kept_connection() {
    let origin = CountingOrigin::start(None).await;
    let config = "health: {interval: 50ms, timeout: 200ms, rise: 1, fall: 2, connect_every: 4, passive: {failures: 0}}\n";
    let proxy = start_proxy(&[("o", origin.addr, 1)], config).await;
    assert_eq!(origin_up(&proxy, "o").await, Some(1.0));
    // Kept connections still answer; new ones are closed at once.
    origin.accepting.store(false, Ordering::SeqCst);
    let down = wait_until(Duration::from_secs(3), || async {
        origin_up(&proxy, "o").await == Some(0.0)
    })
    .await;
    assert!(
        down,
        "an origin that accepts no connection stayed up on its kept one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_that_misses_says_what_it_asked_and_what_to_change() {
    // A backend with no /health (python3 -m http.server's 404): down at
    // start-up, and b's first failed probe, before b goes down, both say
    // which URL was probed and which keys fit the probe to the backend.
    let (a, b) = (TestOrigin::start("a").await, TestOrigin::start("b").await);
    a.set_health(404);
    let config = format!(
        "origins:\n  - {{name: a, address: \"{}\", capacity: 1}}\n  - {{name: b, address: \"{}\", capacity: 1}}\n\
         health: {{interval: 100ms, timeout: 200ms, fall: 3, passive: {{failures: 0}}}}\nreplication: {{mode: off}}\n",
        a.addr, b.addr
    );
    let proxy = ProxyProcess::start(&temp_dir("probe-hints"), &config).await;
    b.set_health(404);
    let b_failed = format!(
        "origin b ({}): probe failed: GET http://{}/health",
        b.addr, b.addr
    );
    let logged = wait_until(Duration::from_secs(5), || async {
        proxy.log().contains(&b_failed)
    })
    .await;
    let log = proxy.log();
    assert!(logged, "no first-failure line for b: {log}");
    let a_down = format!(
        "origin a ({}) is down at its first probe: GET http://{}/health: unexpected status 404",
        a.addr, a.addr
    );
    assert!(log.contains(&a_down), "{log}");
    for line in log.lines().filter(|l| l.contains("404")) {
        assert!(
            line.contains("set health.path") && line.contains("health.kind: tcp"),
            "a 404 without the remedy: {line}"
        );
    }
}
