//! Live reload under load: origins added and removed, capacities and
//! replication keys change without a closed connection or a lost write;
//! bad or restart-only configurations are refused. (Certificates renewed
//! by a reload: `tests/tls.rs`.) hothot as a real process, signalled for real.
//! The operator's commands (`hothot -s`, an upgrade with `-u`): `signals.rs`.

#[path = "../common/mod.rs"]
mod common;
mod signals;

use common::process::ProxyProcess;
use common::reload::{hup_until, refused_reload, reloads, rewriter, SteadyClients};
use common::workload::{pending_within, settled_within};
use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_changes_shares_refuses_bad_configs_and_closes_nothing() {
    let (a, b, c) = (
        TestOrigin::start("a").await,
        TestOrigin::start("b").await,
        TestOrigin::start("c").await,
    );
    let dir = temp_dir("reload");
    let origins = |capacity_a: u32, extra: &str| {
        format!(
            "origins:\n  - {{name: a, address: \"{}\", capacity: {capacity_a}}}\n  - {{name: b, address: \"{}\", capacity: 100}}\n{extra}\
             {STEADY}replication: {{mode: off}}\n",
            a.addr, b.addr,
        )
    };
    let pid_file = format!(", pid_file: \"{}\"", dir.join("hothot.pid").display());
    let mut hothot =
        ProxyProcess::start_with_server(&dir, &pid_file, &origins(100, ""), None).await;
    let config_path = dir.join("hothot.yaml");
    let rewrite = rewriter(&config_path);
    let steady = SteadyClients::start(hothot.port, 4);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(reloads(&hothot, "success").await, 0.0);

    // 1. Capacities change, through `hothot -s reload`.
    rewrite(origins(300, ""));
    let signalled = std::process::Command::new(env!("CARGO_BIN_EXE_hothot"))
        .args(["-s", "reload", "-c"])
        .arg(&config_path)
        .output()
        .unwrap();
    assert!(
        signalled.status.success(),
        "{}",
        String::from_utf8_lossy(&signalled.stderr)
    );
    let applied = wait_until(Duration::from_secs(5), || async {
        reloads(&hothot, "success").await == 1.0
    })
    .await;
    assert!(applied, "{}", hothot.log());
    let before = a.served() + b.served();
    let a_before = a.served();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let share_a = (a.served() - a_before) as f64 / (a.served() + b.served() - before) as f64;
    assert!(
        (share_a - 0.75).abs() < 0.05,
        "a got {share_a} after 300:100"
    );

    // 2. An invalid file is refused whole; the key is named in the log.
    rewrite(origins(
        50,
        "  - {name: c, address: \"nowhere\", capacity: 100}\n",
    ));
    refused_reload(&hothot, 1.0, "origins[2].address").await;
    let (a_before, b_before) = (a.served(), b.served());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let share_a =
        (a.served() - a_before) as f64 / (a.served() - a_before + b.served() - b_before) as f64;
    assert!(
        (share_a - 0.75).abs() < 0.05,
        "the refused config changed shares: a got {share_a}"
    );

    // 3. One reload adds c, removes b and changes a's capacity: c is probed
    // at once and the shares follow (a 100, c 300); b gets nothing new.
    let a_and_c = |replication: &str| {
        format!(
            "origins:\n  - {{name: a, address: \"{}\", capacity: 100}}\n  - {{name: c, address: \"{}\", capacity: 300}}\n\
             {STEADY}replication: {replication}\n",
            a.addr, c.addr,
        )
    };
    rewrite(a_and_c("{mode: off}"));
    hup_until(&hothot, "success", 2.0).await;
    let c_serves = wait_until(Duration::from_secs(5), || async { c.served() > 0 }).await;
    assert!(
        c_serves,
        "the added origin got no traffic: {}",
        hothot.log()
    );
    // Requests already on their way to b finish there.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (a_before, b_before, c_before) = (a.served(), b.served(), c.served());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (a_now, c_now) = (a.served() - a_before, c.served() - c_before);
    let share_c = c_now as f64 / (a_now + c_now) as f64;
    assert!(
        (share_c - 0.75).abs() < 0.05,
        "c got {share_c} after a 100, c 300"
    );
    assert_eq!(
        b.served(),
        b_before,
        "the removed origin still got requests"
    );
    let metrics = hothot.metrics().await;
    assert_eq!(
        metric_value(&metrics, "hothot_origin_capacity{origin=\"c\"}"),
        Some(300.0)
    );
    assert!(
        !metrics.contains("hothot_origin_up{origin=\"b\"}"),
        "the removed origin is still exported as an origin: {metrics}"
    );

    // 4. Replication tunables change live; the keys that decide how the
    // journal is read are refused by name.
    rewrite(a_and_c("{mode: off, max_lag: 2s, linger: 5ms}"));
    hup_until(&hothot, "success", 3.0).await;
    rewrite(a_and_c("{mode: off, order: version}"));
    refused_reload(
        &hothot,
        2.0,
        "replication.order cannot change while hothot runs",
    )
    .await;

    // 5. b comes back under its old name, as a new origin: it serves again,
    // and the descriptors kept for a third origin lower the connection limit.
    let limit = |metrics: &str| metric_value(metrics, "hothot_client_connections_max").unwrap();
    let limit_for_two = limit(&hothot.metrics().await);
    rewrite(a_and_c("{mode: off}").replace(
        "capacity: 300}\n",
        &format!(
            "capacity: 300}}\n  - {{name: b, address: \"{}\", capacity: 100}}\n",
            b.addr
        ),
    ));
    hup_until(&hothot, "success", 4.0).await;
    let b_before = b.served();
    let b_serves = wait_until(Duration::from_secs(5), || async { b.served() > b_before }).await;
    assert!(b_serves, "b did not come back: {}", hothot.log());
    let metrics = hothot.metrics().await;
    assert_eq!(
        metric_value(&metrics, "hothot_origin_up{origin=\"b\"}"),
        Some(1.0)
    );
    assert!(limit(&metrics) < limit_for_two, "{metrics}");

    let (origins_seen, errors) = steady.stop().await;
    println!(
        "4 keep-alive clients through 6 reloads (4 applied, 2 refused): {} requests, {} errors or closed connections",
        origins_seen.len(),
        errors.len()
    );
    assert!(errors.is_empty(), "errors during reloads: {errors:?}");
    assert!(
        origins_seen.len() > 200,
        "only {} requests",
        origins_seen.len()
    );
    hothot.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_origins_backlog_is_dropped_and_an_added_one_starts_from_now() {
    let (a, b, c) = (
        TestOrigin::start("a").await,
        TestOrigin::start("b").await,
        TestOrigin::start("c").await,
    );
    // d never answers: every write waits in its backlog.
    let dead = format!("127.0.0.1:{}", free_port());
    let dir = temp_dir("reload-members");
    let pool = |third: (&str, &str), journal: &str| {
        format!(
            "origins:\n  - {{name: a, address: \"{}\", capacity: 100}}\n  - {{name: b, address: \"{}\", capacity: 100}}\n  - {{name: {}, address: \"{}\", capacity: 100, join: now}}\n{}",
            a.addr,
            b.addr,
            third.0,
            third.1,
            replication_settings(&format!("  journal: {{dir: journal{journal}}}\n")),
        )
    };
    let mut hothot = ProxyProcess::start(&dir, &pool(("d", &dead), "")).await;
    let rewrite = rewriter(&dir.join("hothot.yaml"));
    for i in 0..5 {
        let answer = put(&hothot.url(&format!("/kv/k{i}")), &i.to_string()).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    let pending = "hothot_replication_pending{peer=\"d\"}";
    let queued = pending_within(Duration::from_secs(5), hothot.metrics_port, &["d"], 5);
    assert!(queued.await, "{}", hothot.metrics().await);

    // d leaves, c joins, in one reload.
    let c_addr = c.addr.to_string();
    rewrite(pool(("c", &c_addr), ", max_bytes: 64MiB"));
    hup_until(&hothot, "success", 1.0).await;
    let metrics = hothot.metrics().await;
    assert_eq!(
        metric_value(&metrics, "hothot_replication_dropped_total{peer=\"d\"}"),
        Some(5.0),
        "{metrics}"
    );
    assert!(!metrics.contains(pending), "d's backlog is still exported");
    // A replication tunable changed in the same reload.
    assert_eq!(
        metric_value(&metrics, "hothot_journal_max_bytes"),
        Some(64.0 * 1024.0 * 1024.0)
    );
    assert!(
        hothot
            .log()
            .contains("5 writes it had not received are dropped"),
        "{}",
        hothot.log()
    );
    for i in 5..8 {
        let answer = put(&hothot.url(&format!("/kv/k{i}")), &i.to_string()).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    let delivered = wait_until(Duration::from_secs(5), || async {
        c.applied().len() == 3 && a.applied().len() == 8 && b.applied().len() == 8
    })
    .await;
    assert!(delivered, "a {:?}\nc {:?}", a.applied(), c.applied());
    // c starts from now: the writes after it joined, in the pool's order.
    let paths = |o: &TestOrigin| o.applied().into_iter().map(|w| w.1).collect::<Vec<_>>();
    assert_eq!(paths(&c), paths(&a)[5..].to_vec());
    assert_eq!(paths(&a), paths(&b));
    // Settled in hothot too: an origin applies a write before hothot reads
    // its answer, and a write whose answer was not read is owed again.
    let settled = settled_within(
        Duration::from_secs(5),
        hothot.metrics_port,
        &["a", "b", "c"],
    )
    .await;
    assert!(settled, "{}", hothot.metrics().await);

    // A restart owes nobody anything: no write is dropped or sent again.
    hothot.terminate().await;
    hothot.spawn().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = std::fs::read_to_string(dir.join("hothot-2.log")).unwrap();
    assert!(
        log.contains("pending per origin: a: 0, b: 0, c: 0"),
        "{log}"
    );
    assert!(!log.contains("dropped"), "{log}");
    assert_eq!((a.applied().len(), c.applied().len()), (8, 3));
    hothot.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origins_change_while_writes_stream_and_every_origin_keeps_the_one_order() {
    let (a, b, c) = (
        TestOrigin::start("a").await,
        TestOrigin::start("b").await,
        TestOrigin::start("c").await,
    );
    let dir = temp_dir("reload-writes");
    let pool = |second: (&str, std::net::SocketAddr)| {
        format!(
            "origins:\n  - {{name: a, address: \"{}\", capacity: 100}}\n  - {{name: {}, address: \"{}\", capacity: 100, join: now}}\n{}",
            a.addr,
            second.0,
            second.1,
            replication_settings("  journal: {dir: journal}\n"),
        )
    };
    let mut hothot = ProxyProcess::start(&dir, &pool(("b", b.addr))).await;
    let rewrite = rewriter(&dir.join("hothot.yaml"));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let (url, stop) = (hothot.url(&format!("/kv/w{w}")), stop.clone());
            tokio::spawn(async move {
                let (mut last, mut refused) = (0, Vec::new());
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    last += 1;
                    let answer = put(&url, &last.to_string()).await;
                    if answer.status != 200 {
                        refused.push(answer.status);
                    }
                }
                (last, refused)
            })
        })
        .collect();
    // b leaves and c joins while the writes stream.
    tokio::time::sleep(Duration::from_millis(400)).await;
    rewrite(pool(("c", c.addr)));
    hup_until(&hothot, "success", 1.0).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut written = Vec::new();
    for writer in writers {
        let (last, refused) = writer.await.unwrap();
        assert!(
            refused.is_empty(),
            "writes refused during the reload: {refused:?}"
        );
        written.push(last);
    }
    let settled = wait_until(Duration::from_secs(10), || async {
        (0..3).all(|w| a.value(&format!("w{w}")) == Some(written[w].to_string()))
            && metric_value(
                &hothot.metrics().await,
                "hothot_replication_pending{peer=\"c\"}",
            ) == Some(0.0)
    })
    .await;
    assert!(settled, "a holds {:?} of {written:?}", a.state());
    let writes = |o: &TestOrigin| {
        o.applied()
            .into_iter()
            .map(|(_, path, body)| format!("{path}={}", String::from_utf8_lossy(&body)))
            .collect::<Vec<_>>()
    };
    let (at_a, at_b, at_c) = (writes(&a), writes(&b), writes(&c));
    println!(
        "writes: {} in all; b applied {} before it left, c {} after it joined",
        at_a.len(),
        at_b.len(),
        at_c.len()
    );
    assert_eq!(
        at_a.len(),
        written.iter().sum::<usize>(),
        "a lost or doubled writes"
    );
    assert!(
        !at_b.is_empty() && !at_c.is_empty(),
        "b {at_b:?} c {at_c:?}"
    );
    // Every write b missed when it left was counted as dropped for it.
    let dropped = metric_value(
        &hothot.metrics().await,
        "hothot_replication_dropped_total{peer=\"b\"}",
    )
    .unwrap_or(0.0);
    let missed = at_a.len() - at_b.len() - at_c.len();
    assert!(
        dropped >= missed as f64,
        "b missed {missed} writes, {dropped} counted dropped"
    );
    // One order: b holds a beginning of a's sequence, c its end.
    assert_eq!(at_b[..], at_a[..at_b.len()], "b's order differs from a's");
    assert_eq!(
        at_c[..],
        at_a[at_a.len() - at_c.len()..],
        "c's order differs from a's"
    );
    hothot.terminate().await;
}
