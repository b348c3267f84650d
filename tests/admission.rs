//! What gets replicated and what is refused at the door: oversize and
//! chunked bodies, loop prevention, reads, backlogs past memory, failed primaries.

mod common;

use common::*;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_bodies_are_rejected_or_passed_unreplicated() {
    let (a, b) = (TestOrigin::start("a").await, TestOrigin::start("b").await);
    let reject = start_proxy(
        &[("a", a.addr, 1), ("b", b.addr, 0)],
        &replication_settings("  max_body: 1KiB\n"),
    )
    .await;
    let big = "x".repeat(2048);
    let answer = put(&reject.url("/kv/big"), &big).await;
    assert_eq!(answer.status, 413);
    assert_eq!(
        a.seen().len() + b.seen().len(),
        0,
        "an oversize write reached an origin"
    );
    // A write that fits, headers included, is fine.
    assert_eq!(
        put(&reject.url("/kv/edge"), &"y".repeat(800)).await.status,
        200
    );
    assert!(wait_until(WAIT, || async { b.value("edge").is_some() }).await);
    // max_body bounds the whole write: a 1-byte body under 2 KB of headers is too large.
    let padded = http::Request::put(reject.url("/kv/padded"))
        .header("x-padding", "p".repeat(2048))
        .body(http_body_util::Full::new(bytes::Bytes::from_static(b"1")))
        .unwrap();
    assert_eq!(send(padded).await.status, 413);
    assert_eq!(b.value("padded"), None);

    let pass = start_proxy(
        &[("a", a.addr, 1), ("b", b.addr, 0)],
        &replication_settings("  max_body: 1KiB\n  oversize: pass\n"),
    )
    .await;
    assert_eq!(put(&pass.url("/kv/big"), &big).await.status, 200);
    assert_eq!(a.value("big").map(|v| v.len()), Some(2048));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(b.value("big"), None);
    let metrics = pass.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            "hothot_replication_total{outcome=\"skipped\",peer=\"b\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_bodies_are_replicated_and_capped_at_max_body() {
    let (a, b) = (TestOrigin::start("a").await, TestOrigin::start("b").await);
    let proxy = start_proxy(
        &[("a", a.addr, 1), ("b", b.addr, 0)],
        &replication_settings("  max_body: 1KiB\n"),
    )
    .await;
    assert_eq!(
        chunked_put(proxy.port, "/kv/ch", &[b"hello ", b"chunked ", b"world"]).await,
        200
    );
    assert!(wait_until(WAIT, || async { b.value("ch").is_some() }).await);
    assert_eq!(b.value("ch").as_deref(), Some("hello chunked world"));
    assert_eq!(a.value("ch").as_deref(), Some("hello chunked world"));

    let part = [b'z'; 400];
    let status = chunked_put(proxy.port, "/kv/huge", &[&part, &part, &part, &part]).await;
    assert_eq!(status, 413);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        a.value("huge"),
        None,
        "the primary stored a truncated write"
    );
    assert_eq!(b.value("huge"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_copies_are_not_replicated_again_and_untrusted_markers_are_stripped() {
    let (a, b) = (TestOrigin::start("a").await, TestOrigin::start("b").await);
    let origins = [("a", a.addr, 1), ("b", b.addr, 0)];
    let untrusted = start_proxy(&origins, &replication_settings("")).await;
    let marked = |url: String| {
        http::Request::put(url)
            .header("x-hothot-replicated-from", "someone")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(b"m")))
            .unwrap()
    };
    assert_eq!(send(marked(untrusted.url("/kv/m1"))).await.status, 200);
    assert!(
        wait_until(WAIT, || async { b.value("m1").is_some() }).await,
        "an untrusted marker skipped replication"
    );
    let primary_copy = a.seen().pop().unwrap();
    assert!(
        primary_copy
            .headers
            .get("x-hothot-replicated-from")
            .is_none(),
        "untrusted marker reached the origin"
    );
    assert_eq!(
        b.copies().last().unwrap().headers["x-hothot-replicated-from"],
        "a"
    );

    let trusted = start_proxy(
        &origins,
        &replication_settings("  trusted_sources: [\"127.0.0.0/8\"]\n"),
    )
    .await;
    assert_eq!(send(marked(trusted.url("/kv/m2"))).await.status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(a.value("m2").as_deref(), Some("m"));
    assert_eq!(b.value("m2"), None, "a copy was replicated again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_never_replicated() {
    let (a, b) = (TestOrigin::start("a").await, TestOrigin::start("b").await);
    let proxy = start_proxy(
        &[("a", a.addr, 1), ("b", b.addr, 0)],
        &replication_settings(""),
    )
    .await;
    for method in ["GET", "HEAD", "OPTIONS"] {
        let request = http::Request::builder()
            .method(method)
            .uri(proxy.url("/kv/r"))
            .body(Default::default())
            .unwrap();
        send(request).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(a.seen().len(), 3);
    assert_eq!(b.seen().len(), 0);
    let refused = hothot::config::parse(&config_yaml(
        1,
        2,
        &[("a", a.addr, 1)],
        "replication: {methods: [POST, GET]}\n",
    ));
    assert!(refused
        .unwrap_err()
        .to_string()
        .contains("replication.methods[1]"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_past_max_pending_waits_in_the_journal_and_nothing_is_refused() {
    let (a, mut b) = (
        TestOrigin::start_plain("a").await,
        TestOrigin::start_plain("b").await,
    );
    let proxy = start_proxy(
        &[("a", a.addr, 1), ("b", b.addr, 0)],
        &replication_settings("  max_pending: 5\n"),
    )
    .await;
    b.stop();
    // 40 times the window, with verify reads and overwrites of one key.
    for i in 0..200 {
        let key = if i % 10 == 0 {
            "same".to_owned()
        } else {
            format!("k{i}")
        };
        assert_eq!(
            put(&proxy.url(&format!("/kv/{key}")), &i.to_string())
                .await
                .status,
            200
        );
    }
    let metrics = proxy.metrics().await;
    let rejected = "hothot_replication_total{outcome=\"rejected\",peer=\"b\"}";
    assert_eq!(metric_value(&metrics, rejected), Some(0.0));
    assert_eq!(
        metric_value(&metrics, "hothot_replication_pending{peer=\"b\"}"),
        Some(200.0)
    );
    b.restart().await;
    let caught_up = wait_until(WAIT, || async { b.applied().len() == 200 }).await;
    assert!(caught_up, "b applied {} of 200", b.applied().len());
    assert_eq!(
        b.applied(),
        a.applied(),
        "b applied the writes in a's order"
    );
    assert_eq!(b.state(), a.state());
    assert_eq!(put(&proxy.url("/kv/after"), "after").await.status, 200);
    assert!(wait_until(WAIT, || async { b.value("after").is_some() }).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_primary_writes_are_not_replicated_by_default_under_version_order() {
    let (a, b) = (TestOrigin::start("a").await, TestOrigin::start("b").await);
    let proxy = start_proxy(
        &[("a", a.addr, 1), ("b", b.addr, 0)],
        &replication_settings("  order: version\n"),
    )
    .await;
    a.set_status(422);
    assert_eq!(put(&proxy.url("/kv/bad"), "v").await.status, 422);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(b.seen().len(), 0);
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            "hothot_replication_total{outcome=\"skipped\",peer=\"b\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicate_on_always_and_custom_methods_under_version_order() {
    let (a, b) = (TestOrigin::start("a").await, TestOrigin::start("b").await);
    let proxy = start_proxy(
        &[("a", a.addr, 1), ("b", b.addr, 0)],
        &replication_settings("  order: version\n  replicate_on: always\n  methods: [PUT]\n"),
    )
    .await;
    a.set_status(422);
    assert_eq!(put(&proxy.url("/kv/refused"), "v").await.status, 422);
    assert!(
        wait_until(WAIT, || async { b.seen().len() == 1 }).await,
        "a failed write was not replicated"
    );
    a.set_status(200);
    let post = http::Request::post(proxy.url("/kv/posted"))
        .body(http_body_util::Full::new(bytes::Bytes::from_static(b"p")))
        .unwrap();
    assert_eq!(send(post).await.status, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(b.seen().len(), 1, "POST is not in replication.methods here");
}
