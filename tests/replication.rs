//! Hot-hot write replication against real origins: identical copies, order,
//! backlogs of stopped and failing peers, sync quorum, metrics.

mod common;

use common::workload::pending_within;
use common::*;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

async fn three() -> (TestOrigin, TestOrigin, TestOrigin) {
    (
        TestOrigin::start("a").await,
        TestOrigin::start("b").await,
        TestOrigin::start("c").await,
    )
}

fn versions(copies: &[origin::Seen]) -> Vec<u64> {
    copies
        .iter()
        .map(|s| {
            s.headers["x-hothot-version"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect()
}

fn is_increasing(v: &[u64]) -> bool {
    v.windows(2).all(|w| w[0] < w[1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_reaches_every_origin_with_the_same_body_and_headers() {
    let (a, b, c) = three().await;
    let proxy = start_proxy(
        &[("a", a.addr, 1), ("b", b.addr, 1), ("c", c.addr, 1)],
        &replication_settings("  mode: async\n"),
    )
    .await;
    let request = http::Request::put(proxy.url("/kv/color?source=test"))
        .header("content-type", "text/plain")
        .header("x-request-tag", "t1")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"blue \x00\xff bytes",
        )))
        .unwrap();
    let answer = send(request).await;
    assert_eq!(answer.status, 200);
    let version = answer.headers["x-hothot-version"]
        .to_str()
        .unwrap()
        .to_owned();
    let origins = [&a, &b, &c];
    assert!(
        wait_until(WAIT, || async {
            origins.iter().all(|o| o.seen().len() == 1)
        })
        .await
    );
    let seen: Vec<origin::Seen> = origins.iter().map(|o| o.seen().pop().unwrap()).collect();
    let primary = seen
        .iter()
        .find(|s| !s.headers.contains_key("x-hothot-replicated-from"))
        .unwrap();
    let copies: Vec<&origin::Seen> = seen
        .iter()
        .filter(|s| s.headers.contains_key("x-hothot-replicated-from"))
        .collect();
    assert_eq!(copies.len(), 2, "one primary, two copies");
    for copy in copies {
        assert_eq!(copy.method, "PUT");
        assert_eq!(copy.path_and_query, "/kv/color?source=test");
        assert_eq!(copy.body, primary.body, "bodies differ");
        assert_eq!(&copy.body[..], b"blue \x00\xff bytes");
        for header in [
            "content-type",
            "x-request-tag",
            "x-hothot-version",
            "idempotency-key",
            "x-forwarded-for",
            "host",
        ] {
            assert_eq!(
                copy.headers.get(header),
                primary.headers.get(header),
                "{header} differs"
            );
        }
        assert_eq!(copy.headers["x-hothot-version"], version.as_str());
    }
    // The copies name the primary.
    let primary_origin = origins
        .iter()
        .find(|o| {
            o.seen()[0]
                .headers
                .get("x-hothot-replicated-from")
                .is_none()
        })
        .unwrap();
    for origin in origins {
        if let Some(from) = origin.seen()[0].headers.get("x-hothot-replicated-from") {
            assert_eq!(from, primary_origin.shared.name.as_str());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_idempotency_key_is_kept_on_every_copy() {
    let (a, b) = (TestOrigin::start("a").await, TestOrigin::start("b").await);
    let proxy = start_proxy(
        &[("a", a.addr, 1), ("b", b.addr, 1)],
        &replication_settings(""),
    )
    .await;
    let request = http::Request::post(proxy.url("/orders"))
        .header("idempotency-key", "order-42")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(b"{}")))
        .unwrap();
    assert_eq!(send(request).await.status, 200);
    assert!(
        wait_until(WAIT, || async {
            a.seen().len() == 1 && b.seen().len() == 1
        })
        .await
    );
    assert_eq!(a.seen()[0].headers["idempotency-key"], "order-42");
    assert_eq!(b.seen()[0].headers["idempotency-key"], "order-42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_ordered_updates_end_equal_everywhere_and_arrive_in_order() {
    let (a, b, c) = three().await;
    let proxy = start_proxy(
        &[("a", a.addr, 1000), ("b", b.addr, 800), ("c", c.addr, 600)],
        &replication_settings(""),
    )
    .await;
    for i in 1..=50 {
        assert_eq!(put(&proxy.url("/kv/k"), &i.to_string()).await.status, 200);
    }
    let origins = [&a, &b, &c];
    assert!(
        wait_until(WAIT, || async {
            origins.iter().all(|o| o.seen().len() == 50)
        })
        .await
    );
    for origin in origins {
        assert_eq!(
            origin.value("k").as_deref(),
            Some("50"),
            "origin {}",
            origin.shared.name
        );
        let copies = versions(&origin.copies());
        assert!(
            is_increasing(&copies),
            "copies to {} out of order",
            origin.shared.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_peer_gets_its_whole_backlog_in_order_after_restart() {
    let (a, mut b) = (TestOrigin::start("a").await, TestOrigin::start("b").await);
    // b is drained: every write has a as its primary, b is only a peer.
    let proxy = start_proxy(
        &[("a", a.addr, 1), ("b", b.addr, 0)],
        &replication_settings(""),
    )
    .await;
    b.stop();
    for i in 0..200 {
        assert_eq!(
            put(&proxy.url(&format!("/kv/key{}", i % 7)), &i.to_string())
                .await
                .status,
            200
        );
    }
    let metrics = proxy.metrics().await;
    assert!(metric_value(&metrics, "hothot_replication_pending{peer=\"b\"}").unwrap() > 0.0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lag = metric_value(
        &proxy.metrics().await,
        "hothot_replication_lag_seconds{peer=\"b\"}",
    )
    .unwrap();
    assert!(lag > 0.1, "lag {lag}");
    b.restart().await;
    assert!(
        wait_until(WAIT, || async { b.copies().len() == 200 }).await,
        "b got {}",
        b.copies().len()
    );
    let copies = b.copies();
    let bodies: Vec<String> = copies
        .iter()
        .map(|s| String::from_utf8_lossy(&s.body).into_owned())
        .collect();
    let expected: Vec<String> = (0..200).map(|i| i.to_string()).collect();
    assert_eq!(bodies, expected, "backlog not delivered in order");
    assert!(
        wait_until(WAIT, || async {
            metric_value(
                &proxy.metrics().await,
                "hothot_replication_pending{peer=\"b\"}",
            ) == Some(0.0)
        })
        .await
    );
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            "hothot_replication_total{outcome=\"delivered\",peer=\"b\"}"
        ),
        Some(200.0)
    );
    assert!(
        metric_value(
            &metrics,
            "hothot_replication_total{outcome=\"retried\",peer=\"b\"}"
        )
        .unwrap()
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_answering_503_gets_everything_once_it_recovers() {
    let (a, b) = (TestOrigin::start("a").await, TestOrigin::start("b").await);
    let proxy = start_proxy(
        &[("a", a.addr, 1), ("b", b.addr, 0)],
        &replication_settings(""),
    )
    .await;
    b.set_status(503);
    for i in 0..30 {
        assert_eq!(put(&proxy.url("/kv/x"), &i.to_string()).await.status, 200);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(b.value("x"), None);
    b.set_status(200);
    assert!(wait_until(WAIT, || async { b.value("x").as_deref() == Some("29") }).await);
    // Retries resend the head until it lands, so versions never go backwards.
    let received = versions(&b.copies());
    assert!(
        received.windows(2).all(|w| w[0] <= w[1]),
        "retries went out of order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_version_order_a_peer_refusing_with_4xx_is_counted_and_not_retried() {
    let (a, b) = (TestOrigin::start("a").await, TestOrigin::start("b").await);
    let proxy = start_proxy(
        &[("a", a.addr, 1), ("b", b.addr, 0)],
        &replication_settings("  order: version\n"),
    )
    .await;
    b.set_status(409);
    for i in 0..5 {
        assert_eq!(put(&proxy.url("/kv/x"), &i.to_string()).await.status, 200);
    }
    let counted = wait_until(WAIT, || async {
        metric_value(
            &proxy.metrics().await,
            "hothot_replication_total{outcome=\"failed\",peer=\"b\"}",
        ) == Some(5.0)
    })
    .await;
    assert!(counted);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(b.seen().len(), 5, "a refused copy was sent again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_writes_are_on_the_quorum_before_the_client_hears_back() {
    let (a, b, c) = three().await;
    let proxy = start_proxy(
        &[("a", a.addr, 1), ("b", b.addr, 0), ("c", c.addr, 0)],
        &replication_settings("  mode: sync\n  quorum: 2\n  timeout: 5s\n"),
    )
    .await;
    for i in 0..20 {
        let answer = put(&proxy.url("/kv/s"), &i.to_string()).await;
        assert_eq!(answer.status, 200);
        // Both peers already hold this write when the client sees the answer.
        assert_eq!(b.value("s"), Some(i.to_string()));
        assert_eq!(c.value("s"), Some(i.to_string()));
    }
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            "hothot_replication_sync_seconds_count{peer=\"b\"}"
        ),
        Some(20.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_timeout_fails_with_504_and_still_delivers_later() {
    let (a, mut b) = (TestOrigin::start("a").await, TestOrigin::start("b").await);
    let proxy = start_proxy(
        &[("a", a.addr, 1), ("b", b.addr, 0)],
        &replication_settings("  mode: sync\n  quorum: 1\n  timeout: 300ms\n  on_timeout: fail\n"),
    )
    .await;
    b.stop();
    let answer = put(&proxy.url("/kv/late"), "v1").await;
    assert_eq!(answer.status, 504);
    assert!(answer.body.contains("quorum"), "body: {}", answer.body);
    assert_eq!(a.value("late").as_deref(), Some("v1"), "the primary has it");
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric_value(&metrics, "hothot_replication_quorum_timeouts_total"),
        Some(1.0)
    );
    b.restart().await;
    assert!(wait_until(WAIT, || async { b.value("late").as_deref() == Some("v1") }).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_timeout_degrades_to_a_partial_answer() {
    let (a, mut b) = (TestOrigin::start("a").await, TestOrigin::start("b").await);
    let proxy = start_proxy(
        &[("a", a.addr, 1), ("b", b.addr, 0)],
        &replication_settings("  mode: sync\n  timeout: 200ms\n  on_timeout: degrade\n"),
    )
    .await;
    b.stop();
    let answer = put(&proxy.url("/kv/d"), "v").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.headers["x-hothot-replication"], "partial");
    b.restart().await;
    assert!(wait_until(WAIT, || async { b.value("d").as_deref() == Some("v") }).await);
}

/// A peer that accepts connections and requests but never answers them.
async fn hanging_peer() -> std::net::SocketAddr {
    use tokio::io::AsyncReadExt;
    raw_server(|mut stream| async move {
        let mut sink = vec![0u8; 4096];
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_peer_holds_no_client() {
    let a = TestOrigin::start("a").await;
    let hung = hanging_peer().await;
    let proxy = start_proxy(
        &[("a", a.addr, 1), ("hung", hung, 0)],
        &replication_settings(""),
    )
    .await;
    let url = proxy.url("/kv/h");
    for i in 0..20 {
        let value = i.to_string();
        // Not a speed check: a write held by the peer would wait for the 30s read timeout.
        let write = tokio::time::timeout(Duration::from_secs(5), put(&url, &value)).await;
        assert_eq!(
            write.expect("a write waited for the hanging peer").status,
            200
        );
    }
    let all_pending = pending_within(Duration::from_secs(5), proxy.metrics_port, &["hung"], 20);
    assert!(all_pending.await, "{}", proxy.metrics().await);
}
