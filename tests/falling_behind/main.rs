//! One origin down never stops the pool (#24), with real nginx WebDAV
//! origins (Debian's package, unmodified) and hothot as its own process:
//! a dead origin's backlog waits on disk and is read back when it returns;
//! past `replication.retain` it is detached, and a resync at a consistent
//! cut (by hand with `cp -a`, or by `replication.resync.command`) brings it
//! back; an origin that joins waits for its resync; an origin failing a
//! write its peers applied is detached, a write every origin fails moves
//! them all on; a crash during a resync loses nothing. Every test ends
//! with the origins' document roots identical.

mod behind;
#[path = "../common/mod.rs"]
mod common;
mod resync;

use common::nginx::Nginx;
use common::process::ProxyProcess;
use common::workload::{differing, pending_within};
use common::*;
use http_body_util::Full;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub const CONVERGE: Duration = Duration::from_secs(60);

/// Three nginx origins a, b, c under `dir`; `bad` adds location blocks to
/// each (`[a, b, c]`).
pub async fn three_nginx(dir: &std::path::Path, bad: [&str; 3]) -> [Nginx; 3] {
    let mut started = Vec::new();
    for (name, locations) in ["a", "b", "c"].into_iter().zip(bad) {
        started.push(Nginx::start_with_locations(&dir.join(name), locations).await);
    }
    started.try_into().ok().unwrap()
}

/// The config after `listen`/`metrics`: `origins` (name, address), the
/// admin listener, frequent probes (with a timeout that nginx, busy with
/// another test's fsyncs, still meets), fast retries unless `replication`
/// sets `retry`, and `replication` keys.
pub fn config(origins: &[(&str, &Nginx)], admin: u16, replication: &str) -> String {
    let listed: String = origins
        .iter()
        .map(|(name, n)| {
            format!(
                "  - {{name: {name}, address: \"{}\", capacity: 100}}\n",
                n.addr
            )
        })
        .collect();
    let retry = match replication.contains("retry:") {
        true => "",
        false => "  retry: {initial: 10ms, max: 100ms}\n",
    };
    format!(
        "origins:\n{listed}health: {{interval: 100ms, timeout: 1s, passive: {{failures: 0}}}}\n\
         balancing: {{slow_start: 0s}}\nadmin: {{listen: \"127.0.0.1:{admin}\"}}\n\
         replication:\n{retry}  journal: {{dir: journal}}\n{replication}"
    )
}

/// hothot in `dir` in front of `origins` with `replication` keys (see
/// [`config`]), started and its admin port listening; and that port.
pub async fn start_hothot(
    dir: &std::path::Path,
    origins: &[(&str, &Nginx)],
    replication: &str,
) -> (ProxyProcess, u16) {
    let admin = free_port();
    let hothot = ProxyProcess::start(dir, &config(origins, admin, replication)).await;
    wait_for_port(admin).await;
    (hothot, admin)
}

/// Writers PUTting small files to 40 keys until stopped: how many writes
/// were answered 2xx, and how many anything else.
pub struct Writers {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    tasks: tokio::task::JoinSet<()>,
}

impl Writers {
    pub fn start(url: String, clients: usize, body_len: usize) -> Writers {
        let stop: Arc<AtomicBool> = Arc::default();
        let (ok, refused): (Arc<AtomicUsize>, Arc<AtomicUsize>) = Default::default();
        let mut tasks = tokio::task::JoinSet::new();
        for client in 0..clients {
            let (url, stop, ok, refused) = (url.clone(), stop.clone(), ok.clone(), refused.clone());
            tasks.spawn(async move {
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let body = format!("{client}-{i}-{}", "x".repeat(body_len));
                    let key = (client * 7 + i) % 40;
                    let answer = put(&format!("{url}/data/k{key}"), &body).await;
                    let counter: &AtomicUsize = match answer.status {
                        200..=299 => &ok,
                        _ => &refused,
                    };
                    // The first few refusals, for the failure's message.
                    if counter.fetch_add(1, Ordering::Relaxed) < 3 && answer.status >= 300 {
                        eprintln!("writer {client}: {} {}", answer.status, answer.body.trim());
                    }
                    i += 1;
                }
            });
        }
        Writers {
            stop,
            ok,
            refused,
            tasks,
        }
    }

    pub fn ok(&self) -> usize {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stops them; (answered 2xx, answered otherwise).
    pub async fn stop(mut self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        while self.tasks.join_next().await.is_some() {}
        (self.ok(), self.refused.load(Ordering::Relaxed))
    }
}

pub async fn admin_post(admin: u16, path: &str) -> Answer {
    let request = http::Request::post(format!("http://127.0.0.1:{admin}{path}"))
        .body(Full::default())
        .unwrap();
    send(request).await
}

/// The `/status` entry of `origin`.
pub async fn origin_status(admin: u16, origin: &str) -> serde_json::Value {
    let status = get(&format!("http://127.0.0.1:{admin}/status")).await;
    let status: serde_json::Value = serde_json::from_str(&status.body).unwrap();
    let origins = status["origins"].as_array().unwrap();
    let found = origins.iter().find(|o| o["name"] == origin);
    found.cloned().unwrap_or_default()
}

pub async fn wait_for_state(admin: u16, origin: &str, state: &str, limit: Duration) {
    let reached = wait_until(limit, || async {
        origin_status(admin, origin).await["state"] == state
    })
    .await;
    let now = origin_status(admin, origin).await;
    assert!(reached, "{origin} never {state:?}: {now}");
}

/// Replaces `to`'s document root with a copy of `from`'s (`cp -a`).
pub fn copy_root(from: &Nginx, to: &Nginx) {
    let _ = std::fs::remove_dir_all(to.root());
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(from.root())
        .arg(to.root())
        .status()
        .unwrap();
    assert!(copied.success());
}

/// Resyncs `origin` from `donor` as the README's procedure does: the cut,
/// `cp -a` of the donor's root, done; returns once the origin serves.
pub async fn resync_by_hand(admin: u16, origin: (&str, &Nginx), donor: (&str, &Nginx)) {
    let path = format!("/origins/{}/resync?from={}", origin.0, donor.0);
    let started = admin_post(admin, &path).await;
    assert_eq!(started.status, 200, "{}", started.body);
    copy_root(donor.1, origin.1);
    let done = admin_post(admin, &format!("/origins/{}/resync/done", origin.0)).await;
    assert_eq!(done.status, 200, "{}", done.body);
    wait_for_state(admin, origin.0, "up", CONVERGE).await;
}

/// hothot's resident memory, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Reads the pool served from `origin`, per hothot's metrics.
pub fn reads_served(metrics: &str, origin: &str) -> f64 {
    let wanted = format!("origin=\"{origin}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with("hothot_requests_total{") && l.contains(&wanted))
        .filter(|l| l.contains("method=\"GET\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until every origin named has nothing pending, then asserts the
/// document roots are identical and hold something.
pub async fn assert_converged(hothot: &ProxyProcess, origins: &[(&str, &Nginx)]) {
    let names: Vec<&str> = origins.iter().map(|(n, _)| *n).collect();
    let drained = pending_within(CONVERGE, hothot.metrics_port, &names, 0).await;
    if !drained {
        // Which origin, and what its series say: a gauge left above 0 by
        // some path, or an origin really stuck (a known rare failure).
        let metrics = hothot.metrics().await;
        let series: Vec<&str> = metrics
            .lines()
            .filter(|l| {
                !l.starts_with('#')
                    && names.iter().any(|n| l.contains(&format!("\"{n}\"")))
                    && (l.starts_with("hothot_replication_") || l.starts_with("hothot_origin_"))
            })
            .collect();
        panic!(
            "backlogs never drained:\n{}\n{}",
            series.join("\n"),
            hothot.log()
        );
    }
    let files: Vec<_> = origins.iter().map(|(_, n)| n.files()).collect();
    assert!(!files[0].is_empty());
    assert_eq!(differing(&files), Vec::<String>::new(), "keys differ");
}
