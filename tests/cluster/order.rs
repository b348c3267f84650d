//! The shared order's pieces against real etcd: one position per write,
//! whatever is retried and whoever appends; followers; holds; the registry.

use crate::common::etcd::EtcdCluster;
use crate::common::*;
use hothot::cluster::follow::Ordered;
use hothot::cluster::hold::Holds;
use hothot::cluster::instances::{spread, Registry};
use hothot::cluster::order::{revision_of, SharedOrder};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(4);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retried_append_keeps_its_one_position_and_two_instances_share_one_order() {
    let etcd = EtcdCluster::start(&temp_dir("etcd-order"), 3).await;
    let order = SharedOrder::connect(&etcd.cluster(), TIMEOUT)
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
        let cluster = etcd.cluster();
        tasks.spawn(async move {
            let order = SharedOrder::connect(&cluster, TIMEOUT).await.unwrap();
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
    let order = SharedOrder::connect(&etcd.cluster(), TIMEOUT)
        .await
        .unwrap();
    let before = order.append("w-before", b"x").await.unwrap();
    let leader = etcd.leader().await.expect("a leader");
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

/// `cluster.linger`: writes that arrive within it of one that found etcd
/// idle share its transaction (one revision); without it, a write that
/// finds etcd idle leaves alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_within_the_linger_share_one_transaction() {
    let etcd = EtcdCluster::start(&temp_dir("etcd-linger"), 1).await;
    let mut cluster = etcd.cluster();
    for linger in [Duration::from_millis(500), Duration::ZERO] {
        cluster.linger = linger;
        let order = Arc::new(SharedOrder::connect(&cluster, TIMEOUT).await.unwrap());
        let mut tasks = tokio::task::JoinSet::new();
        // Within 200 ms: far below the linger, far above an append's time.
        for i in 0..5 {
            let order = order.clone();
            tasks.spawn(async move {
                tokio::time::sleep(Duration::from_millis(50 * i)).await;
                let id = format!("linger-{}-{i}", linger.as_millis());
                order.append(&id, b"x").await.unwrap()
            });
        }
        let mut revisions = BTreeSet::new();
        while let Some(position) = tasks.join_next().await {
            revisions.insert(revision_of(position.unwrap()));
        }
        if linger.is_zero() {
            assert!(revisions.len() > 1, "no linger, yet {revisions:?}");
        } else {
            assert_eq!(revisions.len(), 1, "linger {linger:?}: {revisions:?}");
        }
    }
}

/// The first `count` entries a follower from `from` reads.
async fn read(order: &SharedOrder, from: u64, count: usize) -> Vec<Ordered> {
    let mut follower = order.follow(from).await.unwrap();
    let mut read = Vec::new();
    while read.len() < count {
        let next = tokio::time::timeout(Duration::from_secs(10), follower.next()).await;
        read.push(
            next.expect("an entry within 10 s")
                .unwrap()
                .expect("the watch ended"),
        );
    }
    read
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_follower_reads_both_instances_writes_in_the_one_order() {
    let etcd = EtcdCluster::start(&temp_dir("etcd-follow"), 3).await;
    let order = SharedOrder::connect(&etcd.cluster(), TIMEOUT)
        .await
        .unwrap();
    let start = order.append("first", b"0").await.unwrap();
    // Two followers from the first entry, reading while two instances append.
    let cluster = etcd.cluster();
    let followers: Vec<_> = (0..2)
        .map(|_| {
            let cluster = cluster.clone();
            tokio::spawn(async move {
                let order = SharedOrder::connect(&cluster, TIMEOUT).await.unwrap();
                read(&order, start, 101).await
            })
        })
        .collect();
    let mut writers = tokio::task::JoinSet::new();
    for instance in ["hh1", "hh2"] {
        let cluster = cluster.clone();
        writers.spawn(async move {
            let order = SharedOrder::connect(&cluster, TIMEOUT).await.unwrap();
            for i in 0..50 {
                let payload = format!("PUT /k{i} from {instance}");
                order
                    .append(&format!("{instance}-{i}"), payload.as_bytes())
                    .await
                    .unwrap();
            }
        });
    }
    while writers.join_next().await.is_some() {}
    let mut seen = Vec::new();
    for follower in followers {
        seen.push(follower.await.unwrap());
    }
    assert_eq!(seen[0], seen[1], "two followers read different orders");
    let positions: Vec<u64> = seen[0].iter().map(|e| e.position).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    assert_eq!(seen[0][0].id, "first");
    assert_eq!(
        seen[0][1..]
            .iter()
            .filter(|e| e.id.starts_with("hh1-"))
            .count(),
        50
    );
    let hh2: Vec<&str> = (seen[0].iter())
        .filter(|e| e.id.starts_with("hh2-"))
        .map(|e| e.id.as_str())
        .collect();
    let in_order: Vec<String> = (0..50).map(|i| format!("hh2-{i}")).collect();
    assert_eq!(hh2, in_order, "one instance's writes out of its order");
    // A follower that starts late reads the same history.
    assert_eq!(read(&order, start, 101).await, seen[0]);
    let entry = &seen[0][1];
    assert!(String::from_utf8_lossy(&entry.payload).starts_with("PUT /k0 from hh"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_instance_holds_an_origin_and_a_taker_waits_out_the_lease() {
    let etcd = EtcdCluster::start(&temp_dir("etcd-hold"), 1).await;
    let client = hothot::cluster::connect(&etcd.cluster(), TIMEOUT)
        .await
        .unwrap();
    let lease = Duration::from_secs(2);
    let (hh1, hh2) = (
        Holds::new(client.clone(), "shop", "hh1", lease),
        Holds::new(client.clone(), "shop", "hh2", lease),
    );
    let mut hold = hh1.try_take("a").await.unwrap().expect("nobody holds a");
    assert!(hold.may_send(), "nobody delivered to a before: no wait");
    assert!(hh2.try_take("a").await.unwrap().is_none(), "two holders");
    assert!(hh1.record_progress(&hold, 7).await.unwrap());
    assert!(hh1.renew(&mut hold).await.unwrap());
    // hh1 stops renewing (paused, say): by its own clock it stops sending
    // before etcd lets the lease go.
    tokio::time::sleep(lease).await;
    assert!(!hold.may_send());
    let mut taken = None;
    for _ in 0..60 {
        if let Some(new) = hh2.try_take("a").await.unwrap() {
            taken = Some(new);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let new = taken.expect("hh2 never took a over");
    let took_at = tokio::time::Instant::now();
    // a had a holder: hh2 waits out a whole lease before its first send.
    assert!(!new.may_send());
    assert!(new.ready_at() >= took_at + lease - Duration::from_millis(100));
    assert_eq!(
        hh2.progress("a").await.unwrap(),
        Some(7),
        "resumes from a's progress"
    );
    // hh1 lost it: its progress no longer moves, its renewal fails.
    assert!(!hh1.record_progress(&hold, 9).await.unwrap());
    assert!(!hh1.renew(&mut hold).await.unwrap_or(false));
    assert!(hh2.record_progress(&new, 8).await.unwrap());
    assert_eq!(hh1.progress("a").await.unwrap(), Some(8));
    // A clean release lets the other take it at once (waiting out the lease).
    hh2.release(new).await.unwrap();
    assert!(hh1.try_take("a").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_that_die_leave_the_registry_and_their_origins_spread_over_the_rest() {
    let etcd = EtcdCluster::start(&temp_dir("etcd-instances"), 1).await;
    let client = hothot::cluster::connect(&etcd.cluster(), TIMEOUT)
        .await
        .unwrap();
    let registry = Registry::new(client.clone(), "shop");
    let lease = Duration::from_secs(1);
    let _hh1 = registry
        .join("hh1", "127.0.0.1:9201", Duration::from_secs(30))
        .await
        .unwrap();
    registry.join("hh2", "127.0.0.1:9202", lease).await.unwrap();
    let live = registry.live().await.unwrap();
    assert_eq!(live.get("hh2").map(String::as_str), Some("127.0.0.1:9202"));
    let origins: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
    let instances: Vec<String> = live.keys().cloned().collect();
    let both = spread(&origins, &instances);
    for instance in ["hh1", "hh2"] {
        let held = both.values().filter(|i| *i == instance).count();
        assert!((1..=2).contains(&held), "{instance} holds {held}: {both:?}");
    }
    // hh2 stops renewing (it died): after its lease, hh1 holds everything.
    let gone = wait_until(Duration::from_secs(10), || async {
        !registry.live().await.unwrap().contains_key("hh2")
    })
    .await;
    assert!(gone, "a dead instance stayed registered");
    let instances: Vec<String> = registry.live().await.unwrap().into_keys().collect();
    let alone = spread(&origins, &instances);
    assert!(alone.values().all(|i| i == "hh1"), "{alone:?}");
}
