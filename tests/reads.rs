//! Reads that respect replication: lagging peers leave read rotation, and a
//! client's reads after its own write only go to origins that have it.

mod common;

use common::*;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

async fn serving_reads(proxy: &Proxy, origin: &str) -> Option<f64> {
    metric_value(
        &proxy.metrics().await,
        &format!("hothot_origin_serving_reads{{origin=\"{origin}\"}}"),
    )
}

/// Which origin answered each of `n` GETs, sending `cookie` if given.
async fn reads(proxy: &Proxy, n: usize, cookie: Option<&str>) -> Vec<Answer> {
    let mut answers = Vec::new();
    for _ in 0..n {
        let mut request = http::Request::get(proxy.url("/kv/x"));
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        answers.push(send(request.body(Default::default()).unwrap()).await);
    }
    answers
}

fn origins_of(answers: &[Answer]) -> Vec<String> {
    answers
        .iter()
        .map(|a| {
            a.headers
                .get("x-origin")
                .map_or("-".into(), |v| v.to_str().unwrap().to_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_peer_leaves_read_rotation_and_rejoins_when_drained() {
    let (a, b) = (TestOrigin::start("a").await, TestOrigin::start("b").await);
    let proxy = start_proxy(
        &[("a", a.addr, 1), ("b", b.addr, 1)],
        &replication_settings("  max_lag: 300ms\n"),
    )
    .await;
    b.set_copy_status(503); // b serves clients but refuses copies: it falls behind
    for i in 0..4 {
        assert_eq!(put(&proxy.url(&format!("/kv/k{i}")), "v").await.status, 200);
    }
    let left = wait_until(WAIT, || async {
        serving_reads(&proxy, "b").await == Some(0.0)
    })
    .await;
    assert!(left, "b never left read rotation");
    assert_eq!(serving_reads(&proxy, "a").await, Some(1.0));
    let during = origins_of(&reads(&proxy, 20, None).await);
    assert!(
        during.iter().all(|o| o == "a"),
        "a lagging peer served reads: {during:?}"
    );
    // Writes still reach b as a primary, and its backlog is kept.
    assert!(metric_value(&proxy.metrics().await, "hothot_origin_up{origin=\"b\"}") == Some(1.0));

    b.set_copy_status(0);
    let back = wait_until(WAIT, || async {
        serving_reads(&proxy, "b").await == Some(1.0)
    })
    .await;
    assert!(back, "b never rejoined read rotation");
    let after = origins_of(&reads(&proxy, 20, None).await);
    assert_eq!(after.iter().filter(|o| *o == "b").count(), 10, "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_after_a_write_only_go_to_origins_that_have_it() {
    let (mut a, b) = (TestOrigin::start("a").await, TestOrigin::start("b").await);
    let proxy = start_proxy(
        &[("a", a.addr, 1), ("b", b.addr, 1)],
        &replication_settings("  max_lag: 1m\n"),
    )
    .await;
    b.set_copy_status(503); // b lags, but less than max_lag: still in read rotation
                            // Write until a is the primary, so that b lacks the write.
    let cookie = loop {
        let answer = put(&proxy.url("/kv/x"), "mine").await;
        assert_eq!(answer.status, 200);
        if answer.headers["x-origin"] == "a" {
            let set_cookie = answer.headers["set-cookie"].to_str().unwrap().to_owned();
            break set_cookie.split(';').next().unwrap().to_owned();
        }
    };
    assert!(cookie.starts_with("hothot_v="), "{cookie}");
    assert!(cookie.ends_with(".a"), "{cookie}");

    let mine = reads(&proxy, 20, Some(&cookie)).await;
    assert!(
        origins_of(&mine).iter().all(|o| o == "a"),
        "{:?}",
        origins_of(&mine)
    );
    assert!(mine.iter().all(|r| r.body == "mine"));
    let anyone = origins_of(&reads(&proxy, 20, None).await);
    assert_eq!(
        anyone.iter().filter(|o| *o == "b").count(),
        10,
        "{anyone:?}"
    );

    // The primary goes down while b still lacks the write: 503, never b's stale copy.
    a.stop();
    let down = wait_until(WAIT, || async {
        metric_value(&proxy.metrics().await, "hothot_origin_up{origin=\"a\"}") == Some(0.0)
    })
    .await;
    assert!(down);
    let answer = &reads(&proxy, 1, Some(&cookie)).await[0];
    assert_eq!(
        answer.status, 503,
        "a stale replica answered: {:?}",
        answer.body
    );

    // Once b has the write, it serves the client's reads.
    b.set_copy_status(0);
    assert!(wait_until(WAIT, || async { b.value("x").as_deref() == Some("mine") }).await);
    let answer = &reads(&proxy, 1, Some(&cookie)).await[0];
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "mine");
}
