//! Hot-hot on any origin: origins that apply writes in arrival order, with
//! no version logic and no deduplication, end identical under `order: total`
//! and `key`, through concurrent writers, paused, failing and refusing
//! origins and a proxy crash; under `order: version` they can diverge.

mod common;

use bytes::Bytes;
use common::nginx::Nginx;
use common::process::ProxyProcess;
use common::workload::{differing, mixed_burst, settled, SETTLE};
use common::*;
use http_body_util::Full;
use std::time::Duration;

/// Test health settings and the `replication` section's `keys` (indented),
/// with fast retries unless `keys` sets `retry`.
fn settings(keys: &str) -> String {
    if keys.contains("retry:") {
        format!(
            "health: {{interval: 100ms, timeout: 100ms, passive: {{failures: 0}}}}\nreplication:\n{keys}"
        )
    } else {
        replication_settings(keys)
    }
}

fn plain_pool(
    a: &TestOrigin,
    b: &TestOrigin,
    c: &TestOrigin,
) -> [(&'static str, std::net::SocketAddr, u32); 3] {
    [("a", a.addr, 1000), ("b", b.addr, 800), ("c", c.addr, 600)]
}

async fn three_plain() -> (TestOrigin, TestOrigin, TestOrigin) {
    (
        TestOrigin::start_plain("a").await,
        TestOrigin::start_plain("b").await,
        TestOrigin::start_plain("c").await,
    )
}

/// Runs the workload (8 writers, 1,200 PUT/DELETE over 30 keys) under
/// `order`; returns the keys that differ between the three plain origins.
async fn burst_under(order: &str) -> Vec<String> {
    let (a, b, c) = three_plain().await;
    let proxy = start_proxy(
        &plain_pool(&a, &b, &c),
        &settings(&format!("  order: {order}\n")),
    )
    .await;
    let acknowledged = mixed_burst(&proxy.url(""), 8, 150, 30).await;
    assert_eq!(acknowledged.len(), 1200);
    assert!(settled(proxy.metrics_port, &["a", "b", "c"]).await);
    let differing = differing(&[a.state(), b.state(), c.state()]);
    println!("order: {order}: {} keys differ", differing.len());
    if order == "total" {
        // Every origin applied exactly the same writes in the same order.
        assert_eq!(a.applied(), b.applied());
        assert_eq!(b.applied(), c.applied());
    }
    differing
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn total_order_leaves_arrival_order_origins_identical() {
    assert_eq!(burst_under("total").await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn key_order_leaves_arrival_order_origins_identical() {
    assert_eq!(burst_under("key").await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn version_order_lets_arrival_order_origins_diverge() {
    // What the README warns about. Divergence needs concurrent writes to
    // one key to meet in opposite orders, so allow it a few rounds.
    for _ in 0..5 {
        if !burst_under("version").await.is_empty() {
            return;
        }
    }
    panic!("five rounds of 1,200 concurrent writes never diverged under version order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_origin_refusing_writes_with_503_for_a_while_catches_up_in_order() {
    for order in ["total", "key"] {
        refusing_for_a_while(order).await;
    }
}

async fn refusing_for_a_while(order: &str) {
    let (a, b, c) = three_plain().await;
    let proxy = start_proxy(
        &plain_pool(&a, &b, &c),
        &settings(&format!(
            "  order: {order}\n  retry: {{initial: 20ms, max: 100ms, max_attempts: 1000}}\n"
        )),
    )
    .await;
    let url = proxy.url("");
    let burst = tokio::spawn(async move { mixed_burst(&url, 8, 100, 20).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    b.fail_path(Some(("/kv/", 503)));
    tokio::time::sleep(Duration::from_millis(700)).await;
    b.fail_path(None);
    assert_eq!(
        burst.await.unwrap().len(),
        800,
        "every client got an answer"
    );
    assert!(settled(proxy.metrics_port, &["a", "b", "c"]).await);
    assert_eq!(
        differing(&[a.state(), b.state(), c.state()]),
        Vec::<String>::new(),
        "order: {order}"
    );
    let metrics = proxy.metrics().await;
    let retried = metric_value(
        &metrics,
        "hothot_replication_total{outcome=\"retried\",peer=\"b\"}",
    );
    assert!(retried.unwrap_or(0.0) > 0.0, "b never refused anything");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_primary_refusing_connections_is_answered_for_and_gets_every_write_in_order() {
    let (mut a, b, c) = three_plain().await;
    let proxy = start_proxy(&plain_pool(&a, &b, &c), &settings("")).await;
    // a, the biggest origin, refuses connections; probes have not noticed yet.
    a.stop();
    for i in 0..30 {
        let answer = put(&proxy.url(&format!("/kv/k{}", i % 7)), &format!("v{i}")).await;
        assert_eq!(answer.status, 200, "write {i}: {}", answer.body);
        assert_ne!(answer.body, "a");
        assert!(answer.headers.get("set-cookie").is_some());
    }
    a.restart().await;
    assert!(settled(proxy.metrics_port, &["a", "b", "c"]).await);
    assert_eq!(a.applied().len(), 30, "a got each write once");
    assert_eq!(a.applied(), b.applied(), "a got them in the same order");
    assert_eq!(b.applied(), c.applied());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_4xx_from_the_primary_is_the_answer_everywhere() {
    let (a, b, c) = three_plain().await;
    let proxy = start_proxy(&plain_pool(&a, &b, &c), &settings("")).await;
    let delete = http::Request::delete(proxy.url("/kv/missing"))
        .body(Full::default())
        .unwrap();
    assert_eq!(send(delete).await.status, 404);
    assert!(settled(proxy.metrics_port, &["a", "b", "c"]).await);
    let metrics = proxy.metrics().await;
    for origin in ["a", "b", "c"] {
        let seen = [&a, &b, &c][(origin.as_bytes()[0] - b'a') as usize].seen();
        assert_eq!(seen.len(), 1, "{origin} got the DELETE once");
        let series = format!("hothot_replication_total{{outcome=\"retried\",peer=\"{origin}\"}}");
        assert_eq!(
            metric_value(&metrics, &series),
            Some(0.0),
            "{origin} was retried"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_one_origin_keeps_failing_while_its_peers_applied_it_detaches_that_origin() {
    let (a, b, c) = three_plain().await;
    // b never answers as a primary (capacity 0), so the clients see a and c.
    let pool = [("a", a.addr, 1), ("b", b.addr, 0), ("c", c.addr, 1)];
    let proxy = start_proxy(
        &pool,
        &settings("  retry: {initial: 10ms, max: 20ms, max_attempts: 3}\n  detach_after: 300ms\n"),
    )
    .await;
    b.fail_path(Some(("/kv/poison", 500)));
    assert_eq!(put(&proxy.url("/kv/poison"), "x").await.status, 200);
    for i in 0..5 {
        assert_eq!(
            put(&proxy.url(&format!("/kv/ok{i}")), "v").await.status,
            200
        );
    }
    assert!(settled(proxy.metrics_port, &["a", "c"]).await);
    let detached = wait_until(Duration::from_secs(10), || async {
        let metrics = proxy.metrics().await;
        metric_value(&metrics, "hothot_origin_detached{origin=\"b\"}") == Some(1.0)
    })
    .await;
    assert!(detached, "b was not detached");
    assert!(
        b.state().is_empty(),
        "b applied writes after the one it missed"
    );
    assert_eq!(a.state(), c.state());
    let refused = b
        .seen()
        .iter()
        .filter(|s| s.path_and_query == "/kv/poison")
        .count();
    assert!(refused >= 3, "retry.max_attempts: {refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_key_order_a_failing_key_holds_only_its_own_writes() {
    for order in ["key", "total"] {
        let (a, b, c) = three_plain().await;
        let pool = [("a", a.addr, 1), ("b", b.addr, 0), ("c", c.addr, 1)];
        let proxy = start_proxy(
            &pool,
            &settings(&format!(
                "  order: {order}\n  retry: {{initial: 50ms, max: 50ms, max_attempts: 1000}}\n"
            )),
        )
        .await;
        b.fail_path(Some(("/kv/slow", 503)));
        assert_eq!(put(&proxy.url("/kv/slow"), "s1").await.status, 200);
        for i in 0..5 {
            assert_eq!(put(&proxy.url(&format!("/kv/k{i}")), "v").await.status, 200);
        }
        assert_eq!(put(&proxy.url("/kv/slow"), "s2").await.status, 200);
        let others_arrived =
            wait_until(Duration::from_secs(2), || async { b.state().len() == 5 }).await;
        match order {
            "key" => assert!(others_arrived, "key order: b got {:?}", b.state().keys()),
            _ => assert!(
                !others_arrived,
                "total order: nothing may overtake the failing write"
            ),
        }
        b.fail_path(None);
        assert!(settled(proxy.metrics_port, &["a", "b", "c"]).await);
        assert_eq!(
            b.value("slow").as_deref(),
            Some("s2"),
            "{order}: same-key writes in order"
        );
        assert_eq!(
            differing(&[a.state(), b.state(), c.state()]),
            Vec::<String>::new()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verify_reports_the_origin_whose_answers_differ_and_never_identical_ones() {
    let (a, b, c) = three_plain().await;
    let proxy = start_proxy(
        &plain_pool(&a, &b, &c),
        &settings("  verify: {sample: 1.0}\n"),
    )
    .await;
    for i in 0..20 {
        assert_eq!(
            put(&proxy.url(&format!("/kv/k{}", i % 3)), &format!("v{i}"))
                .await
                .status,
            200
        );
    }
    assert!(settled(proxy.metrics_port, &["a", "b", "c"]).await);
    let verified = |metrics: &str, result: &str| {
        metric_value(
            metrics,
            &format!("hothot_replication_verified_total{{result=\"{result}\"}}"),
        )
    };
    let divergence = |metrics: &str, origin: &str| {
        metric_value(
            metrics,
            &format!("hothot_replication_divergence_total{{origin=\"{origin}\"}}"),
        )
    };
    let metrics = proxy.metrics().await;
    assert_eq!(verified(&metrics, "match"), Some(20.0));
    for origin in ["a", "b", "c"] {
        assert_eq!(divergence(&metrics, origin), Some(0.0), "{origin}");
    }
    // c starts adding its name to its answers.
    c.shared
        .name_in_reads
        .store(true, std::sync::atomic::Ordering::SeqCst);
    for i in 0..10 {
        assert_eq!(put(&proxy.url("/kv/x"), &format!("w{i}")).await.status, 200);
    }
    let reported = wait_until(SETTLE, || async {
        divergence(&proxy.metrics().await, "c") == Some(10.0)
    })
    .await;
    assert!(reported, "{}", proxy.metrics().await);
    let metrics = proxy.metrics().await;
    assert_eq!(divergence(&metrics, "a"), Some(0.0));
    assert_eq!(divergence(&metrics, "b"), Some(0.0));
    assert_eq!(verified(&metrics, "mismatch"), Some(10.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_in_the_middle_of_a_burst_loses_and_reorders_nothing() {
    for order in ["total", "key"] {
        sigkill_during_a_burst(order).await;
    }
}

async fn sigkill_during_a_burst(order: &str) {
    let (a, b, c) = three_plain().await;
    let pool = format!(
        "origins:\n  - {{name: a, address: \"{}\", capacity: 1000}}\n  \
         - {{name: b, address: \"{}\", capacity: 800}}\n  - {{name: c, address: \"{}\", capacity: 600}}\n{}",
        a.addr,
        b.addr,
        c.addr,
        settings(&format!("  order: {order}\n  journal: {{dir: journal}}\n"))
    );
    let mut proxy = ProxyProcess::start(&temp_dir("ordering-sigkill"), &pool).await;
    let url = proxy.url("");
    let burst = tokio::spawn(async move { mixed_burst(&url, 8, 400, 30).await });
    // Kill once a few hundred writes are through.
    assert!(wait_until(SETTLE, || async { a.applied().len() > 300 }).await);
    proxy.kill();
    let acknowledged = burst.await.unwrap();
    println!(
        "{} writes acknowledged before the crash",
        acknowledged.len()
    );
    assert!(acknowledged.len() < 3200, "the crash cut the burst short");
    proxy.spawn().await;
    assert!(settled(proxy.metrics_port, &["a", "b", "c"]).await);
    assert_eq!(
        differing(&[a.state(), b.state(), c.state()]),
        Vec::<String>::new(),
        "order: {order}"
    );
    // Nothing a client saw succeed is lost: every origin applied every
    // acknowledged PUT (a replay after the crash may repeat a few, in order).
    for origin in [&a, &b, &c] {
        let applied: std::collections::HashSet<Bytes> = origin
            .applied()
            .into_iter()
            .map(|(_, _, body)| body)
            .collect();
        for (method, path, body) in &acknowledged {
            if method == "PUT" {
                assert!(
                    applied.contains(body.as_bytes()),
                    "order: {order}: {} lost {method} {path} {body}",
                    origin.shared.name
                );
            }
        }
    }
    // Writes keep going after the restart.
    assert_eq!(put(&proxy.url("/kv/after"), "ok").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nginx_origins_end_identical_through_a_pause() {
    for order in ["total", "key"] {
        nginx_through_a_pause(order).await;
    }
}

async fn nginx_through_a_pause(order: &str) {
    let dirs: Vec<_> = (0..3).map(|i| temp_dir(&format!("nginx{i}"))).collect();
    let (x, y, z) = (
        Nginx::start(&dirs[0]).await,
        Nginx::start(&dirs[1]).await,
        Nginx::start(&dirs[2]).await,
    );
    let proxy = start_proxy(
        &[("x", x.addr, 1000), ("y", y.addr, 800), ("z", z.addr, 600)],
        &settings(&format!("  order: {order}\n")),
    )
    .await;
    let url = proxy.url("");
    let burst = tokio::spawn(async move { mixed_burst(&url, 8, 150, 30).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    // y freezes (SIGSTOP) for a second: its probes fail, clients whose
    // primary it was get another origin's answer, then it catches up.
    y.pause();
    tokio::time::sleep(Duration::from_secs(1)).await;
    y.resume();
    assert_eq!(burst.await.unwrap().len(), 1200);
    assert!(settled(proxy.metrics_port, &["x", "y", "z"]).await);
    let files = [x.files(), y.files(), z.files()];
    assert!(!files[0].is_empty());
    assert_eq!(differing(&files), Vec::<String>::new(), "order: {order}");
}
