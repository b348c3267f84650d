//! hothot instances in a cluster, as users run them: clients writing
//! through every instance while origins pause, instances die or stall.

use crate::cluster_harness::*;
use crate::common::nginx::Nginx;
use crate::common::process::ProxyProcess;
use crate::common::workload::{differing, mixed_burst, settled_within};
use crate::common::*;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_write_one_sequence_to_every_origin_even_with_one_paused() {
    let setup = Setup::start("cluster-two", 2, "  mode: async\n").await;
    let origins = setup.origins();
    let writers = Writers::start(&setup.urls(), 4, 60);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Origin c answers nothing for 1.5 s: its holder's writes wait for it.
    origins[2].set_delay(Duration::from_millis(1500));
    tokio::time::sleep(Duration::from_millis(100)).await;
    origins[2].set_delay(Duration::ZERO);
    let answers = writers.finish().await;
    let ok = all_succeeded(&answers);
    assert_converged(&origins, &ok).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_share_one_order_on_an_etcd_that_takes_only_tls_clients_with_certificates() {
    let dir = temp_dir("cluster-tls");
    let etcd = crate::common::etcd::EtcdCluster::start_tls(&dir.join("etcd"), 1).await;
    let origins = three_origins().await;
    let [a, b, c] = &origins;
    let instances = start_instances(&dir, &etcd, &[a, b, c], 2, "  mode: async\n").await;
    let urls: Vec<String> = instances.iter().map(|i| i.url("")).collect();
    let answers = Writers::start(&urls, 2, 30).complete().await;
    let ok = all_succeeded(&answers);
    assert_converged(&[a, b, c], &ok).await;
    // The order is in etcd, reached over TLS.
    let keys = etcd.ctl(&["get", "--prefix", "shop/log/", "--keys-only"]);
    assert!(
        keys.is_some_and(|k| !k.trim().is_empty()),
        "no batch in etcd"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nginx_webdav_origins_behind_two_instances_end_identical_through_a_pause() {
    // The story: two instances (each once its own order) in front
    // of three unmodified nginx WebDAV origins, clients writing the same
    // keys through both, one origin frozen for 1.5 s.
    let dir = temp_dir("cluster-nginx");
    let etcd = crate::common::etcd::EtcdCluster::start(&dir.join("etcd"), 3).await;
    let nginx = [
        Nginx::start(&dir.join("x")).await,
        Nginx::start(&dir.join("y")).await,
        Nginx::start(&dir.join("z")).await,
    ];
    let addresses: Vec<_> = nginx.iter().map(|n| n.addr).collect();
    let instances = start_instances_at(&dir, &etcd, &addresses, 2, "  mode: async\n").await;
    let mut bursts = tokio::task::JoinSet::new();
    for instance in &instances {
        let url = instance.url("");
        bursts.spawn(async move { mixed_burst(&url, 4, 100, 24).await.len() });
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    nginx[2].pause();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    nginx[2].resume();
    let mut acknowledged = 0;
    while let Some(count) = bursts.join_next().await {
        acknowledged += count.unwrap();
    }
    assert_eq!(acknowledged, 800, "every write acknowledged");
    for instance in &instances {
        let settled = settled_within(CONVERGE, instance.metrics_port, &["a", "b", "c"]).await;
        assert!(settled, "writes still pending: {}", instance.log());
    }
    let files = nginx.iter().map(|n| n.files()).collect::<Vec<_>>();
    assert!(!files[0].is_empty());
    assert_eq!(differing(&files), Vec::<String>::new(), "keys differ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_instance_killed_mid_burst_has_its_origins_taken_over() {
    let mut setup = Setup::start("cluster-kill", 2, "  mode: async\n").await;
    let writers = Writers::start(&setup.urls(), 4, 400);
    let Setup {
        origins, instances, ..
    } = &mut setup;
    let [a, b, c] = &*origins;
    let origins = [a, b, c];
    tokio::time::sleep(Duration::from_millis(500)).await;
    instances[0].kill();
    let killed = Instant::now();
    let survivor = &instances[1];
    assert_takes_every_origin(survivor).await;
    let taken_after = killed.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let answers = writers.finish().await;
    let ok = succeeded(&answers);
    let through_survivor = answers.iter().filter(|(_, body)| body.contains("-i1-"));
    assert!(
        through_survivor.clone().all(|(status, _)| *status == 200),
        "hh1 refused writes"
    );
    assert_converged(&origins, &ok).await;
    eprintln!("origins taken over {taken_after:?} after the SIGKILL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_instance_stopped_cleanly_hands_its_origins_over_at_once() {
    let mut setup = Setup::start("cluster-term", 2, "  mode: async\n").await;
    let writers = Writers::start(&[setup.instances[1].url("")], 4, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    setup.instances[0].terminate().await;
    let survivor = &setup.instances[1];
    assert_takes_every_origin(survivor).await;
    let answers = writers.finish().await;
    let ok = succeeded(&answers);
    assert_eq!(ok.len(), answers.len(), "writes through hh1 failed");
    // Released during the grace period (`server.grace_period_seconds`, 0
    // here: best effort), the taker need not wait out a lease; either way
    // nothing is lost.
    let log = survivor.log();
    let took_over = log.lines().rfind(|l| l.contains("delivers to origin"));
    eprintln!("after SIGTERM: {took_over:?}");
    assert_converged(&setup.origins(), &ok).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_instance_stopped_past_its_lease_never_replays_older_writes() {
    let setup = Setup::start("cluster-stop", 2, "  mode: async\n").await;
    let (origins, instances) = (setup.origins(), &setup.instances);
    // The paused instance's origins answer slowly, so that it has writes
    // queued and in flight when it stops.
    let writers = Writers::start(&[instances[1].url("")], 4, 300);
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(&instances[0], "STOP");
    let survivor = &instances[1];
    assert_takes_every_origin(survivor).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(&instances[0], "CONT");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let answers = writers.finish().await;
    let ok = succeeded(&answers);
    assert_converged(&origins, &ok).await;
    // Each origin hh1 took over was resent at most one run from its
    // recorded progress; hh0, awake, sent nothing more.
    let order = sequence(origins[0]);
    for origin in origins {
        let replays = replays(origin, &order);
        assert!(
            replays <= 1,
            "{} got {replays} runs of older writes",
            origin.shared.name
        );
    }
}

/// Entries etcd still holds in the pool's order (`shop/log/`): each key
/// is a batch, `shop/log/{first id}/{count}`.
fn entries_in_etcd(setup: &Setup) -> Option<u64> {
    // etcdctl 3.4 has no --count-only: one key per line, blank lines between.
    let keys = setup
        .etcd
        .ctl(&["get", "--prefix", "shop/log/", "--keys-only"])?;
    let counts = keys.lines().filter(|line| !line.is_empty());
    counts
        .map(|key| key.rsplit('/').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_origin_past_retention_is_detached_on_every_instance_and_the_order_is_trimmed() {
    let retain = "  mode: async\n  retain: {bytes: 64KiB}\n";
    let mut setup = Setup::start("cluster-retain", 2, retain).await;
    setup.origins[2].stop();
    let answers = Writers::start(&setup.urls(), 4, 150).complete().await;
    let ok = succeeded(&answers);
    assert_eq!(ok.len(), answers.len(), "writes were refused with c down");
    for instance in &setup.instances {
        let detached = wait_until(CONVERGE, || async {
            let metrics = instance.metrics().await;
            metric_value(&metrics, "hothot_origin_detached{origin=\"c\"}") == Some(1.0)
        })
        .await;
        assert!(
            detached,
            "c is not detached on every instance: {}",
            instance.log()
        );
    }
    // c no longer holds the order back: etcd keeps only the last batch
    // (trimming keeps whole batches), not c's backlog.
    let trimmed = wait_until(CONVERGE, || async {
        entries_in_etcd(&setup).is_some_and(|n| n <= 128)
    })
    .await;
    assert!(
        trimmed,
        "etcd still holds {:?} entries",
        entries_in_etcd(&setup)
    );
    let [a, b, _] = setup.origins();
    assert_converged(&[a, b], &ok).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resync_asked_of_any_instance_gathers_both_origins_there_while_writes_go_on() {
    let (dir, etcd, origins) = etcd_and_origins("cluster-resync").await;
    let [a, b, c] = &origins;
    let mut instances = Vec::new();
    let mut admins = Vec::new();
    for name in ["hh0", "hh1"] {
        let admin = free_port();
        let config = instance_config(&etcd, &[a, b, c], name, "  mode: async\n")
            + &format!("admin: {{listen: \"127.0.0.1:{admin}\"}}\n");
        instances.push(ProxyProcess::start(&dir.join(name), &config).await);
        admins.push(admin);
    }
    let spread = wait_until(CONVERGE, || async {
        leases_held(&instances[0]).await + leases_held(&instances[1]).await == 3
            && leases_held(&instances[1]).await > 0
    })
    .await;
    assert!(spread, "the origins were not spread over both instances");
    // The origin to rebuild is one hh1 holds; the resync is asked of hh0.
    let metrics = instances[0].metrics().await;
    let held = |o: &str| {
        metric_value(
            &metrics,
            &format!("hothot_cluster_leases{{origin=\"{o}\"}}"),
        )
    };
    let target = ["a", "b", "c"].into_iter().find(|o| held(o) == Some(0.0));
    let target = target.expect("an origin hh1 holds");
    let donor = if target == "a" { "b" } else { "a" };
    let by_name = |name: &str| &origins[(name.as_bytes()[0] - b'a') as usize];
    let urls: Vec<String> = instances.iter().map(|i| i.url("")).collect();
    let writers = Writers::start(&urls, 2, 150);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let admin = |i: usize, path: String| {
        let url = format!("http://127.0.0.1:{}{path}", admins[i]);
        async move {
            let request = http::Request::post(url)
                .body(http_body_util::Full::<bytes::Bytes>::default())
                .unwrap();
            try_send(request).await.expect("the admin API answers")
        }
    };
    let started = admin(0, format!("/origins/{target}/resync?from={donor}")).await;
    assert_eq!(started.status, 200, "{}", started.body);
    let metrics = instances[0].metrics().await;
    let held = |o: &str| {
        metric_value(
            &metrics,
            &format!("hothot_cluster_leases{{origin=\"{o}\"}}"),
        )
    };
    assert_eq!(
        (held(target), held(donor)),
        (Some(1.0), Some(1.0)),
        "hh0 holds both"
    );
    // While it runs, the other instance refuses one, naming where it runs.
    let refused = admin(1, format!("/origins/{donor}/resync?from={target}")).await;
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert!(refused.body.contains("hh0"), "{}", refused.body);
    // hh1 follows the detached mark in etcd; it must follow its end too.
    let status = format!("http://127.0.0.1:{}/status", admins[1]);
    let detached_there = wait_until(CONVERGE, || async {
        let body = get(&status).await.body;
        let status: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let origins = status["origins"].as_array().cloned().unwrap_or_default();
        origins
            .iter()
            .any(|o| o["name"] == target && o["state"] == "detached")
    })
    .await;
    assert!(detached_there, "hh1 never saw {target} detached");
    // The operator's copy of the donor, frozen at the cut; then done.
    by_name(target).copy_from(by_name(donor));
    let done = admin(0, format!("/origins/{target}/resync/done")).await;
    assert_eq!(done.status, 200, "{}", done.body);
    let answers = writers.complete().await;
    let ok = all_succeeded(&answers);
    assert_converged(&[a, b, c], &ok).await;
    // Unpinned: the spread gives hh1 its share again.
    let back = wait_until(CONVERGE, || async { leases_held(&instances[1]).await > 0 }).await;
    assert!(back, "hh1 never held an origin again after the resync");
}
