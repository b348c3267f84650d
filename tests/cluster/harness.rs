//! What the cluster's stories share: instances over in-process origins
//! that apply writes in arrival order, clients writing through every
//! instance, and the checks that the origins ended the same.

use crate::common::etcd::EtcdCluster;
use crate::common::process::ProxyProcess;
use crate::common::*;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub const CONVERGE: Duration = Duration::from_secs(40);

/// The config of instance `name` over `origins`, in the cluster on
/// `etcd`; `replication` is the indented keys of that section.
pub fn instance_config(
    etcd: &EtcdCluster,
    origins: &[&TestOrigin],
    name: &str,
    replication: &str,
) -> String {
    let addresses: Vec<_> = origins.iter().map(|o| o.addr).collect();
    config_at(etcd, &addresses, name, replication)
}

/// [`instance_config`] over origins at `addresses` (named a, b, c).
pub fn config_at(
    etcd: &EtcdCluster,
    addresses: &[std::net::SocketAddr],
    name: &str,
    replication: &str,
) -> String {
    let mut config = String::from("origins:\n");
    for (address, letter) in addresses.iter().zip(["a", "b", "c"]) {
        config += &format!("  - {{name: {letter}, address: \"{address}\", capacity: 100}}\n");
    }
    let servers: Vec<String> = etcd
        .endpoints()
        .iter()
        .map(|e| format!("\"{e}\""))
        .collect();
    config += &replication_settings(replication);
    let tls = etcd.tls().map_or(String::new(), |tls| {
        let (cert, key) = &tls.client;
        format!(
            ", tls: {{ca: \"{}\", cert: \"{}\", key: \"{}\"}}",
            tls.ca.display(),
            cert.display(),
            key.display()
        )
    });
    config += &format!(
        "timeouts: {{connect: 1s, read: 5s}}\n\
         cluster: {{servers: [{}], name: shop, instance: {name}, listen: \"127.0.0.1:{}\", lease: 2s{tls}}}\n",
        servers.join(", "),
        free_port()
    );
    config
}

/// `count` instances (hh0, hh1, ...) over `origins`, each holding its
/// share of them before this returns.
pub async fn start_instances(
    dir: &std::path::Path,
    etcd: &EtcdCluster,
    origins: &[&TestOrigin],
    count: usize,
    replication: &str,
) -> Vec<ProxyProcess> {
    let addresses: Vec<_> = origins.iter().map(|o| o.addr).collect();
    start_instances_at(dir, etcd, &addresses, count, replication).await
}

/// [`start_instances`] over origins at `addresses`.
pub async fn start_instances_at(
    dir: &std::path::Path,
    etcd: &EtcdCluster,
    origins: &[std::net::SocketAddr],
    count: usize,
    replication: &str,
) -> Vec<ProxyProcess> {
    let mut instances = Vec::new();
    for i in 0..count {
        let name = format!("hh{i}");
        let config = config_at(etcd, origins, &name, replication);
        instances.push(ProxyProcess::start(&dir.join(&name), &config).await);
    }
    let spread = wait_until(CONVERGE, || async {
        let mut leases = Vec::new();
        for instance in &instances {
            leases.push(leases_held(instance).await);
        }
        let busy = leases.iter().filter(|l| **l > 0).count();
        leases.iter().sum::<usize>() == origins.len() && busy == count.min(origins.len())
    })
    .await;
    assert!(
        spread,
        "the origins were not spread over the instances: {}",
        instances[0].log()
    );
    instances
}

/// Waits until `survivor` holds all three origins (after another
/// instance died, stalled or stopped); panics with its log if it does not.
pub async fn assert_takes_every_origin(survivor: &ProxyProcess) {
    let took_all = wait_until(CONVERGE, || async { leases_held(survivor).await == 3 }).await;
    assert!(
        took_all,
        "the origins were not taken over: {}",
        survivor.log()
    );
}

/// How many origins `instance` holds (`hothot_cluster_leases`).
pub async fn leases_held(instance: &ProxyProcess) -> usize {
    let metrics = instance.metrics().await;
    ["a", "b", "c"]
        .iter()
        .filter(|o| {
            let series = format!("hothot_cluster_leases{{origin=\"{o}\"}}");
            metric_value(&metrics, &series) == Some(1.0)
        })
        .count()
}

/// Clients writing PUTs to ten shared keys through instances until
/// stopped (or `per_client` writes each).
pub struct Writers {
    stop: Arc<AtomicBool>,
    tasks: tokio::task::JoinSet<Vec<(u16, String)>>,
}

impl Writers {
    pub fn start(urls: &[String], clients: usize, per_client: usize) -> Writers {
        // Bodies are unique across runs too: the checks tell writes apart by them.
        static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let run = RUNS.fetch_add(1, Ordering::Relaxed);
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = tokio::task::JoinSet::new();
        for (i, url) in urls.iter().enumerate() {
            for c in 0..clients {
                let (url, stop) = (url.clone(), stop.clone());
                tasks.spawn(async move {
                    let mut answers = Vec::new();
                    for w in 0..per_client {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let body = format!("r{run}-i{i}-c{c}-w{w}");
                        let status = try_put(&format!("{url}/kv/k{}", w % 10), &body).await;
                        answers.push((status.unwrap_or(0), body));
                        if status.is_none() {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                    answers
                });
            }
        }
        Writers { stop, tasks }
    }

    /// Stops them; every write's status (0: no answer) and body.
    pub async fn finish(self) -> Vec<(u16, String)> {
        self.stop.store(true, Ordering::Relaxed);
        self.complete().await
    }

    /// Waits for every client to make all its writes.
    pub async fn complete(mut self) -> Vec<(u16, String)> {
        let mut all = Vec::new();
        while let Some(answers) = self.tasks.join_next().await {
            all.extend(answers.unwrap());
        }
        all
    }
}

/// The bodies of the writes, once every one got a 2xx (panics otherwise).
pub fn all_succeeded(answers: &[(u16, String)]) -> Vec<String> {
    let ok = succeeded(answers);
    let failed: Vec<_> = answers
        .iter()
        .filter(|(s, _)| !(200..300).contains(s))
        .collect();
    assert!(
        failed.is_empty(),
        "{} writes failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    ok
}

/// The bodies of the writes that got a 2xx.
pub fn succeeded(answers: &[(u16, String)]) -> Vec<String> {
    let ok = answers
        .iter()
        .filter(|(status, _)| (200..300).contains(status));
    ok.map(|(_, body)| body.clone()).collect()
}

pub async fn try_put(url: &str, body: &str) -> Option<u16> {
    let request = http::Request::put(url)
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_owned(),
        )))
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(15), try_send(request)).await;
    answer.ok()?.ok().map(|a| a.status)
}

/// An origin's writes in the order it applied them, each once (a write
/// delivered again after a takeover counts where it first arrived).
pub fn sequence(origin: &TestOrigin) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let bodies = (origin.applied().into_iter())
        .map(|(_, path, body)| format!("{path}={}", String::from_utf8_lossy(&body)));
    bodies.filter(|b| seen.insert(b.clone())).collect()
}

/// Waits until every origin applied every write in `succeeded`, then
/// checks that they applied one sequence and hold the same data.
pub async fn assert_converged(origins: &[&TestOrigin], succeeded: &[String]) {
    let complete = |origin: &TestOrigin| {
        let applied: BTreeSet<String> = (sequence(origin).into_iter())
            .filter_map(|w| w.split_once('=').map(|(_, body)| body.to_owned()))
            .collect();
        succeeded.iter().all(|body| applied.contains(body))
    };
    let converged = wait_until(CONVERGE, || async {
        origins.iter().all(|o| complete(o)) && {
            let first = sequence(origins[0]);
            origins.iter().all(|o| sequence(o) == first)
        }
    })
    .await;
    let sequences: Vec<Vec<String>> = origins.iter().map(|o| sequence(o)).collect();
    for (origin, sequence) in origins.iter().zip(&sequences) {
        let name = &origin.shared.name;
        assert!(
            complete(origin),
            "{name} lacks acknowledged writes ({} applied)",
            sequence.len()
        );
    }
    if !converged {
        let first_difference = (0..sequences[0].len())
            .find(|i| sequences.iter().any(|s| s.get(*i) != sequences[0].get(*i)));
        panic!("the origins applied different sequences; first difference at {first_difference:?}");
    }
    let states: Vec<_> = origins.iter().map(|o| o.state()).collect();
    assert!(
        states.iter().all(|s| *s == states[0]),
        "the origins' data differ"
    );
}

/// Three plain origins a, b, c.
pub async fn three_origins() -> [TestOrigin; 3] {
    [
        TestOrigin::start_plain("a").await,
        TestOrigin::start_plain("b").await,
        TestOrigin::start_plain("c").await,
    ]
}

/// Sends `signal` (`STOP`, `CONT`) to `process`.
pub fn signal(process: &ProxyProcess, signal: &str) {
    let pid = process.pid().expect("running").to_string();
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status()
        .unwrap();
    assert!(status.success());
}

/// How many times `origin` received a write older than one it had
/// received before (by `order`, the pool's one sequence): each takeover
/// may resend from the origin's recorded progress once; anything more is
/// an older write replayed after newer ones.
pub fn replays(origin: &TestOrigin, order: &[String]) -> usize {
    let index: std::collections::HashMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, w)| (w.as_str(), i))
        .collect();
    let arrivals = (origin.applied().into_iter())
        .map(|(_, path, body)| format!("{path}={}", String::from_utf8_lossy(&body)))
        .filter_map(|w| index.get(w.as_str()).copied());
    let mut last = None;
    let mut drops = 0;
    for i in arrivals {
        if last.is_some_and(|l| i < l) {
            drops += 1;
        }
        last = Some(i);
    }
    drops
}

/// A fresh directory named after `label`, a three-member etcd under it
/// and three plain origins.
pub async fn etcd_and_origins(label: &str) -> (std::path::PathBuf, EtcdCluster, [TestOrigin; 3]) {
    let dir = temp_dir(label);
    let etcd = EtcdCluster::start(&dir.join("etcd"), 3).await;
    (dir, etcd, three_origins().await)
}

/// A three-member etcd, three plain origins and `count` instances over
/// them, under a fresh directory named after `label`.
pub struct Setup {
    pub origins: [TestOrigin; 3],
    pub instances: Vec<ProxyProcess>,
    pub etcd: EtcdCluster,
}

impl Setup {
    pub async fn start(label: &str, count: usize, replication: &str) -> Setup {
        let (dir, etcd, origins) = etcd_and_origins(label).await;
        let [a, b, c] = &origins;
        let instances = start_instances(&dir, &etcd, &[a, b, c], count, replication).await;
        Setup {
            origins,
            instances,
            etcd,
        }
    }

    pub fn origins(&self) -> [&TestOrigin; 3] {
        let [a, b, c] = &self.origins;
        [a, b, c]
    }

    /// Every instance's proxy URL.
    pub fn urls(&self) -> Vec<String> {
        self.instances.iter().map(|i| i.url("")).collect()
    }
}
