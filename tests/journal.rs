//! The replication journal across real crashes: hothot runs as its own
//! process and is killed with SIGKILL, stopped with SIGTERM, or has its
//! journal torn; no write a client saw succeed may be lost or reordered.

mod common;

use common::process::ProxyProcess;
use common::workload::pending_within;
use common::*;
use std::time::Duration;

const DRAIN: Duration = Duration::from_secs(30);

/// a serves every write; b is drained (capacity 0), so it only receives copies.
/// `journal` is the flow mapping of `replication.journal`.
fn pool(a: &TestOrigin, b: &TestOrigin, journal: &str) -> String {
    pool_in_order(a, b, journal, "total")
}

/// The same, with `replication.order: order`.
fn pool_in_order(a: &TestOrigin, b: &TestOrigin, journal: &str, order: &str) -> String {
    format!(
        "origins:\n  - {{name: a, address: \"{}\", capacity: 1}}\n  - {{name: b, address: \"{}\", capacity: 0}}\n\
         health: {{interval: 100ms, timeout: 500ms, passive: {{failures: 0}}}}\n\
         replication:\n  order: {order}\n  retry: {{initial: 20ms, max: 200ms}}\n  journal: {{dir: journal{journal}}}\n",
        a.addr, b.addr
    )
}

/// `clients` concurrent writers, each PUTting 0..per_client to its own key
/// `c{n}`; panics unless every write is answered 200.
async fn write_concurrently(url: String, clients: usize, per_client: usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let url = url.clone();
        tasks.spawn(async move {
            for i in 0..per_client {
                let answer = put(&format!("{url}/kv/c{c}"), &i.to_string()).await;
                assert_eq!(answer.status, 200, "write c{c}={i}: {}", answer.body);
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

/// Every key's copies at `origin`, in arrival order.
fn copies_by_key(origin: &TestOrigin) -> std::collections::BTreeMap<String, Vec<usize>> {
    let mut by_key: std::collections::BTreeMap<String, Vec<usize>> = Default::default();
    for copy in origin.copies() {
        let value = String::from_utf8_lossy(&copy.body).parse().unwrap();
        by_key
            .entry(copy.path_and_query.clone())
            .or_default()
            .push(value);
    }
    by_key
}

fn assert_complete_and_in_order(origin: &TestOrigin, clients: usize, per_client: usize) {
    let by_key = copies_by_key(origin);
    assert_eq!(
        by_key.len(),
        clients,
        "keys: {:?}",
        by_key.keys().collect::<Vec<_>>()
    );
    let expected: Vec<usize> = (0..per_client).collect();
    for (key, values) in by_key {
        assert_eq!(
            values, expected,
            "copies of {key} lost, doubled or out of order"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_with_a_backlog_of_thousands_loses_nothing() {
    let (a, mut b) = (TestOrigin::start("a").await, TestOrigin::start("b").await);
    // 100 writes in memory for b, the other 3,100 left in the journal.
    let settings = format!("{}  max_pending: 100\n", pool(&a, &b, ""));
    let mut proxy = ProxyProcess::start(&temp_dir("sigkill"), &settings).await;
    b.stop();
    let (clients, per_client) = (8, 400);
    write_concurrently(proxy.url(""), clients, per_client).await;
    let writes = clients * per_client;
    let all_pending = pending_within(Duration::from_secs(5), proxy.metrics_port, &["b"], writes);
    assert!(all_pending.await, "{}", proxy.metrics().await);

    proxy.kill();
    proxy.spawn().await;
    b.restart().await;
    let drained = wait_until(DRAIN, || async { b.copies().len() >= clients * per_client }).await;
    assert!(
        drained,
        "b got {} of {} after the crash",
        b.copies().len(),
        clients * per_client
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_complete_and_in_order(&b, clients, per_client);
    assert!(
        proxy.log().contains("journal: read 3200 writes"),
        "{}",
        proxy.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_graceful_restart_keeps_the_backlog() {
    let (a, mut b) = (TestOrigin::start("a").await, TestOrigin::start("b").await);
    let settings = format!("{}  max_pending: 50\n", pool(&a, &b, ", fsync: interval"));
    let mut proxy = ProxyProcess::start(&temp_dir("sigterm"), &settings).await;
    b.stop();
    write_concurrently(proxy.url(""), 4, 250).await;
    proxy.terminate().await;
    proxy.spawn().await;
    b.restart().await;
    assert!(
        wait_until(DRAIN, || async { b.copies().len() >= 1000 }).await,
        "b got {}",
        b.copies().len()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_complete_and_in_order(&b, 4, 250);
    // Once delivered, the backlog is gone for good: another restart sends nothing again.
    assert!(
        wait_until(DRAIN, || async {
            metric_value(
                &proxy.metrics().await,
                "hothot_replication_pending{peer=\"b\"}",
            ) == Some(0.0)
        })
        .await
    );
    proxy.terminate().await;
    proxy.spawn().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        b.copies().len(),
        1000,
        "settled writes were delivered again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_torn_tail_is_reported_and_the_rest_delivered() {
    let (a, mut b) = (TestOrigin::start("a").await, TestOrigin::start("b").await);
    // Under total order a write is delivered only once durable, so a torn
    // record was never delivered to anyone; version order shows a tear that
    // the primary had already applied, the harder case.
    let pool = pool_in_order(&a, &b, "", "version");
    let mut proxy = ProxyProcess::start(&temp_dir("torn"), &pool).await;
    b.stop();
    for i in 0..50 {
        assert_eq!(put(&proxy.url("/kv/t"), &i.to_string()).await.status, 200);
    }
    proxy.kill();
    // A power loss in the middle of the last write: its record is cut short.
    let newest = std::fs::read_dir(proxy.journal_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "journal"))
        .max()
        .unwrap();
    // Segments are allocated ahead: the data ends at the last non-zero byte,
    // and the space after it reads as zeros. Unwrite the record's last 7 bytes.
    let mut bytes = std::fs::read(&newest).unwrap();
    let end = bytes.iter().rposition(|b| *b != 0).unwrap() + 1;
    bytes[end - 7..end].fill(0);
    std::fs::write(&newest, &bytes).unwrap();

    proxy.spawn().await;
    b.restart().await;
    assert!(wait_until(DRAIN, || async { b.copies().len() >= 49 }).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let values: Vec<usize> = copies_by_key(&b)["/kv/t"].clone();
    assert_eq!(values, (0..49).collect::<Vec<_>>());
    let log = proxy.log();
    assert!(log.contains("torn tail"), "{log}");
    assert!(log.contains("the last intact write is #49"), "{log}");
    // The proxy carries on.
    assert_eq!(put(&proxy.url("/kv/t"), "after").await.status, 200);
    assert!(wait_until(DRAIN, || async { b.value("t").as_deref() == Some("after") }).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_journal_detaches_the_origin_behind_instead_of_refusing_writes() {
    let (a, mut b) = (TestOrigin::start("a").await, TestOrigin::start("b").await);
    let proxy = ProxyProcess::start(&temp_dir("full"), &pool(&a, &b, ", max_bytes: 1MiB")).await;
    b.stop();
    let body = "x".repeat(16 << 10);
    // 3 MiB of writes through a 1 MiB journal, b down all along.
    for i in 0..200 {
        let answer = put(&proxy.url(&format!("/kv/f{i}")), &body).await;
        assert_eq!(
            answer.status,
            200,
            "write {i}: {}\n{}",
            answer.body,
            proxy.log()
        );
    }
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric_value(&metrics, "hothot_origin_detached{origin=\"b\"}"),
        Some(1.0)
    );
    let rejected = "hothot_replication_total{outcome=\"rejected\",peer=\"b\"}";
    assert_eq!(metric_value(&metrics, rejected), Some(0.0));
    assert!(metric_value(&metrics, "hothot_journal_bytes").unwrap() < 1024.0 * 1024.0);
    let log = proxy.log();
    assert!(
        log.contains("origin b detached: the journal reached"),
        "{log}"
    );
    // Back, it gets nothing until a resync: its data is too old.
    b.restart().await;
    assert_eq!(put(&proxy.url("/kv/after"), "ok").await.status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(b.copies().is_empty(), "a detached origin was sent writes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removed_peer_backlog_is_dropped_and_a_new_peer_starts_from_now() {
    let (a, mut b, c) = (
        TestOrigin::start("a").await,
        TestOrigin::start("b").await,
        TestOrigin::start("c").await,
    );
    let mut proxy = ProxyProcess::start(&temp_dir("reconfig"), &pool(&a, &b, "")).await;
    b.stop();
    for i in 0..20 {
        assert_eq!(put(&proxy.url("/kv/r"), &i.to_string()).await.status, 200);
    }
    proxy.kill();
    // b leaves the pool, c joins it.
    let config = std::fs::read_to_string(proxy.dir.join("hothot.yaml")).unwrap();
    let config = config.replace(
        &format!("name: b, address: \"{}\"", b.addr),
        &format!("name: c, join: now, address: \"{}\"", c.addr),
    );
    std::fs::write(proxy.dir.join("hothot.yaml"), config).unwrap();
    proxy.spawn().await;
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric_value(&metrics, "hothot_replication_dropped_total{peer=\"b\"}"),
        Some(20.0)
    );
    assert!(proxy.log().contains("peer b is no longer in the pool"));
    assert_eq!(put(&proxy.url("/kv/r"), "new").await.status, 200);
    assert!(wait_until(DRAIN, || async { c.copies().len() == 1 }).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(c.copies().len(), 1, "the new peer was sent history");
    assert_eq!(c.value("r").as_deref(), Some("new"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_journal_directory_is_a_start_up_error() {
    let dir = temp_dir("unusable");
    std::fs::create_dir_all(&dir).unwrap();
    let blocker = dir.join("not-a-directory");
    std::fs::write(&blocker, "x").unwrap();
    let config = dir.join("hothot.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: [\"127.0.0.1:{}\"]\norigins: [{{name: a, address: \"127.0.0.1:1\", capacity: 1}}]\n\
             replication: {{journal: {{dir: \"{}\"}}}}\n",
            free_port(),
            blocker.join("journal").display()
        ),
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hothot"))
        .arg("-c")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("journal directory"), "{stderr}");
    assert!(stderr.contains("not-a-directory"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}
