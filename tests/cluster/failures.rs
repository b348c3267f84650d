//! What etcd's failures cost a cluster of instances, and an instance's
//! death between an origin's answer and its client.

use crate::cluster_harness::*;
use crate::common::etcd::EtcdCluster;
use crate::common::process::ProxyProcess;
use crate::common::*;
use crate::relay::LostReply;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_etcd_leader_killed_mid_burst_loses_no_acknowledged_write() {
    let setup = Setup::start("cluster-leader", 2, "  mode: async\n").await;
    let (origins, etcd) = (setup.origins(), &setup.etcd);
    let writers = Writers::start(&setup.urls(), 4, 150);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let leader = etcd.leader().await.expect("a leader");
    etcd.kill(leader);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let answers = writers.finish().await;
    let ok = succeeded(&answers);
    assert!(
        ok.len() > answers.len() / 2,
        "most writes should succeed: {} of {}",
        ok.len(),
        answers.len()
    );
    assert_converged(&origins, &ok).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_etcd_stopped_writes_get_503_reads_go_on_and_writes_come_back_in_order() {
    let setup = Setup::start("cluster-etcd-down", 2, "  mode: async\n").await;
    let (origins, etcd, instances) = (setup.origins(), &setup.etcd, &setup.instances);
    let [a, b, c] = origins;
    let urls = setup.urls();
    let before = Writers::start(&urls, 2, 20).complete().await;
    for member in 0..3 {
        etcd.kill(member);
    }
    let asked = Instant::now();
    let status = try_put(&instances[0].url("/kv/down"), "during").await;
    assert_eq!(status, Some(503), "a write while etcd is down");
    let waited = asked.elapsed();
    let read = get(&instances[1].url("/kv/k1")).await;
    let values = [a.value("k1"), b.value("k1"), c.value("k1")];
    assert_eq!(
        read.status,
        200,
        "reads go on without etcd: {values:?}, {:?}",
        before.len()
    );
    let metrics = instances[0].metrics().await;
    let connected = wait_until(Duration::from_secs(10), || async {
        metric_value(&instances[0].metrics().await, "hothot_cluster_connected") == Some(0.0)
    })
    .await;
    assert!(connected, "hothot_cluster_connected stays 1: {metrics}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    for member in 0..3 {
        etcd.restart(member);
    }
    assert!(etcd.healthy().await, "etcd came back");
    let back = wait_until(CONVERGE, || async {
        try_put(&instances[0].url("/kv/back"), "again").await == Some(200)
    })
    .await;
    assert!(
        back,
        "writes are taken again once etcd is back: {}",
        instances[0].log()
    );
    let after = Writers::start(&urls, 2, 20).complete().await;
    let mut ok = succeeded(&before);
    ok.extend(succeeded(&after));
    assert_eq!(
        ok.len(),
        before.len() + after.len(),
        "writes with etcd up failed"
    );
    assert!(
        a.value("down").is_none(),
        "the refused write reached an origin"
    );
    assert_converged(&origins, &ok).await;
    assert!(
        instances[0].log().contains("etcd unreachable"),
        "the outage is logged"
    );
    eprintln!("503 after {waited:?} with etcd down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sync_write_gets_its_quorum_from_origins_another_instance_holds() {
    let sync = "  mode: sync\n  quorum: 2\n  timeout: 3s\n";
    let setup = Setup::start("cluster-sync", 2, sync).await;
    let (origins, instances) = (setup.origins(), &setup.instances);
    // hh0 holds one or two origins: a quorum of 2 peers needs one that hh1 holds.
    let answers = Writers::start(&[instances[0].url("")], 4, 30)
        .complete()
        .await;
    assert_eq!(answers.len(), 120);
    let ok = succeeded(&answers);
    assert_eq!(ok.len(), answers.len());
    let metrics = instances[0].metrics().await;
    let timeouts = metric_value(&metrics, "hothot_replication_quorum_timeouts_total");
    assert_eq!(timeouts, Some(0.0), "quorums timed out");
    assert_converged(&origins, &ok).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_primarys_deliverer_killed_before_its_answer_arrives_costs_no_write() {
    let dir = temp_dir("cluster-primary");
    let etcd = EtcdCluster::start(&dir.join("etcd"), 3).await;
    let [a, b, _] = three_origins().await;
    let origins = [&a, &b];
    // Three instances, two origins: hh2... one instance holds none, and
    // every write through it has its primary held elsewhere.
    let mut instances = start_instances(&dir, &etcd, &origins, 3, "  mode: async\n").await;
    let mut idle = None;
    for (i, instance) in instances.iter().enumerate() {
        if leases_held(instance).await == 0 {
            idle = Some(i);
        }
    }
    let idle = idle.expect("an instance without origins");
    // Both origins answer slowly: the answers are pending when a holder dies.
    a.set_delay(Duration::from_millis(800));
    b.set_delay(Duration::from_millis(800));
    let writers = Writers::start(&[instances[idle].url("")], 4, 6);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let holder = (0..3).find(|i| *i != idle).unwrap();
    instances[holder].kill();
    a.set_delay(Duration::ZERO);
    b.set_delay(Duration::ZERO);
    let answers = writers.finish().await;
    // Each client got an origin's answer (2xx) or 504: never another error.
    for (status, body) in &answers {
        assert!([200, 201, 204, 504].contains(status), "{body}: {status}");
    }
    // Every write the order took reaches both origins, answered or not.
    let written: Vec<String> = answers
        .iter()
        .filter(|(status, _)| *status != 0)
        .map(|(_, body)| body.clone())
        .collect();
    assert_converged(&origins, &written).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_append_whose_reply_was_lost_gets_one_position_and_reaches_each_origin_once() {
    let (dir, etcd, origins) = etcd_and_origins("cluster-lost-reply").await;
    let [a, b, c] = &origins;
    let endpoint = etcd.endpoints()[0].clone();
    let member = endpoint.trim_start_matches("http://").parse().unwrap();
    let relay = LostReply::start(member).await;
    // The instance reaches etcd only through the relay.
    let config = instance_config(&etcd, &[a, b, c], "hh0", "  mode: async\n");
    let servers = etcd
        .endpoints()
        .iter()
        .map(|e| format!("\"{e}\""))
        .collect::<Vec<_>>();
    let config = config.replace(&servers.join(", "), &format!("\"http://{}\"", relay.addr));
    // An append's attempts (a quarter of `timeouts.connect` each) outlast
    // the relay's swallowing, so the one whose reply is lost fails by the
    // cut, not by its own timeout.
    let config = config.replace("connect: 1s", "connect: 4s");
    let instance = ProxyProcess::start(&dir.join("hh0"), &config).await;
    assert_takes_every_origin(&instance).await;
    let marker = format!("lost-reply-{}-{}", std::process::id(), "x".repeat(64));
    relay.arm(marker.as_bytes());
    let status = try_put(&instance.url("/kv/lost"), &marker).await;
    assert_eq!(
        relay.cuts(),
        1,
        "no reply was lost: the test proved nothing"
    );
    assert_eq!(
        status,
        Some(200),
        "the write whose reply was lost was refused"
    );
    let after = format!("after-{}", std::process::id());
    assert_eq!(try_put(&instance.url("/kv/after"), &after).await, Some(200));
    assert_converged(&[a, b, c], &[marker.clone(), after]).await;
    for origin in [a, b, c] {
        let copies = (origin.applied().iter())
            .filter(|(_, _, body)| body.as_ref() == marker.as_bytes())
            .count();
        assert_eq!(
            copies, 1,
            "{} applied the write {copies} times",
            origin.shared.name
        );
    }
    assert!(
        instance
            .log()
            .contains("whose reply was lost was in etcd already"),
        "the retry did not find the first attempt's entry: {}",
        instance.log()
    );
}
