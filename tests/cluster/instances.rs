//! hothot instances in a cluster, as users run them: clients writing
//! through every instance while origins pause, instances die or stall.

use crate::cluster_harness::*;
use crate::common::etcd::etcdctl;
use crate::common::process::ProxyProcess;
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
    let ok = succeeded(&answers);
    assert_eq!(
        ok.len(),
        answers.len(),
        "writes failed: {:?}",
        &answers[..3]
    );
    assert_converged(&origins, &ok).await;
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
    let endpoints = setup.etcd.endpoints();
    // etcdctl 3.4 has no --count-only: one key per line, blank lines between.
    let keys = etcdctl(&endpoints, &["get", "--prefix", "shop/log/", "--keys-only"])?;
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
async fn a_resync_asked_of_an_instance_that_does_not_hold_the_origin_names_its_holder() {
    let (dir, etcd, origins) = etcd_and_origins("cluster-resync-elsewhere").await;
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
    let metrics = instances[0].metrics().await;
    let elsewhere = ["a", "b", "c"].into_iter().find(|o| {
        metric_value(
            &metrics,
            &format!("hothot_cluster_leases{{origin=\"{o}\"}}"),
        ) == Some(0.0)
    });
    let elsewhere = elsewhere.expect("an origin hh1 holds");
    let donor = if elsewhere == "a" { "b" } else { "a" };
    let url = format!(
        "http://127.0.0.1:{}/origins/{elsewhere}/resync?from={donor}",
        admins[0]
    );
    let ask = || async {
        let request = http::Request::post(url.as_str())
            .body(http_body_util::Full::<bytes::Bytes>::default())
            .unwrap();
        try_send(request).await.expect("the admin API answers")
    };
    // Who holds what is learnt at each renewal: it may lag a hand-over.
    let named = wait_until(CONVERGE, || async {
        ask().await.body.contains("instance hh1")
    })
    .await;
    let answer = ask().await;
    assert_eq!(answer.status, 409, "{}", answer.body);
    assert!(
        named,
        "the refusal does not name the holder: {}",
        answer.body
    );
}
