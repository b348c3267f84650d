//! Several hothot instances, one order (#25, in progress): the shared order
//! on a real three-member etcd cluster (Debian's `etcd-server`, started
//! here): one position per write, whatever is retried and whoever appends.

mod common;

use common::etcd::EtcdCluster;
use common::*;
use hothot::cluster::order::SharedOrder;
use std::collections::BTreeSet;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(4);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retried_append_keeps_its_one_position_and_two_instances_share_one_order() {
    let etcd = EtcdCluster::start(&temp_dir("etcd-order"), 3).await;
    let order = SharedOrder::connect(&etcd.endpoints(), "shop", TIMEOUT)
        .await
        .unwrap();
    let first = order.append("hh1-1", b"PUT /a").await.unwrap();
    // The reply was lost: the same id again gets the same position, once.
    assert_eq!(order.append("hh1-1", b"PUT /a").await.unwrap(), first);
    let second = order.append("hh1-2", b"PUT /b").await.unwrap();
    assert!(second > first, "{second} after {first}");
    // Two instances appending at once: every write gets its own position.
    let mut tasks = tokio::task::JoinSet::new();
    for instance in ["hh1", "hh2"] {
        let endpoints = etcd.endpoints();
        tasks.spawn(async move {
            let order = SharedOrder::connect(&endpoints, "shop", TIMEOUT)
                .await
                .unwrap();
            let mut positions = Vec::new();
            for i in 10..60 {
                positions.push(
                    order
                        .append(&format!("{instance}-{i}"), b"x")
                        .await
                        .unwrap(),
                );
            }
            positions
        });
    }
    let mut all = BTreeSet::new();
    while let Some(positions) = tasks.join_next().await {
        let positions = positions.unwrap();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
        all.extend(positions);
    }
    assert_eq!(all.len(), 100, "two writes shared a position");
    assert!(*all.first().unwrap() > second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_go_on_when_the_etcd_leader_is_killed() {
    let etcd = EtcdCluster::start(&temp_dir("etcd-leader"), 3).await;
    let order = SharedOrder::connect(&etcd.endpoints(), "shop", TIMEOUT)
        .await
        .unwrap();
    let before = order.append("w-before", b"x").await.unwrap();
    let leader = etcd.leader().expect("a leader");
    etcd.kill(leader);
    // Retried under the same id (within the timeout) until the two members
    // left elect a leader: however many attempts, one position.
    let after = order.append("w-after", b"y").await.unwrap();
    assert!(after > before);
    assert_eq!(order.append("w-after", b"y").await.unwrap(), after);
    etcd.restart(leader);
    assert!(etcd.healthy().await);
    assert_eq!(order.append("w-after", b"y").await.unwrap(), after);
}
