//! Live reload under load: capacities, replication keys and certificates
//! change without a closed connection; bad or restart-only configurations
//! are refused. hothot as a real process, signalled for real.

mod common;

use bytes::Bytes;
use common::process::ProxyProcess;
use common::tls::{certificate, curl_tls};
use common::*;
use http_body_util::Full;
use std::time::Duration;

/// Probes at start-up only, no passive ejection, no slow start: the pool
/// changes only when the test says so.
const STEADY: &str = "health: {interval: 1m, timeout: 500ms, passive: {failures: 0}}\n\
                      balancing: {slow_start: 0s}\n";

/// Clients that each keep one keep-alive connection for their whole run;
/// any error, a closed connection included, is recorded.
struct SteadyClients {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<(Vec<String>, Vec<String>)>>,
}

impl SteadyClients {
    fn start(port: u16, clients: usize) -> SteadyClients {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|_| {
                let stop = stop.clone();
                tokio::spawn(async move {
                    let (mut origins, mut errors) = (Vec::new(), Vec::new());
                    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
                        .await
                        .unwrap();
                    let (mut sender, connection) =
                        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                            .await
                            .unwrap();
                    tokio::spawn(connection);
                    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                        let request = http::Request::get("/steady")
                            .header("host", "hothot")
                            .body(Full::<Bytes>::default())
                            .unwrap();
                        let answer = match sender.send_request(request).await {
                            Ok(response) => {
                                let status = response.status();
                                let body =
                                    http_body_util::BodyExt::collect(response.into_body()).await;
                                match (status.as_u16(), body) {
                                    (200, Ok(body)) => {
                                        Ok(String::from_utf8_lossy(&body.to_bytes()).into_owned())
                                    }
                                    (status, _) => Err(format!("status {status}")),
                                }
                            }
                            Err(e) => Err(format!("{e}")),
                        };
                        match answer {
                            Ok(origin) => origins.push(origin),
                            Err(e) => {
                                errors.push(e);
                                break; // the connection is gone
                            }
                        }
                    }
                    (origins, errors)
                })
            })
            .collect();
        SteadyClients { stop, tasks }
    }

    async fn stop(self) -> (Vec<String>, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let (mut origins, mut errors) = (Vec::new(), Vec::new());
        for task in self.tasks {
            let (o, e) = task.await.unwrap();
            origins.extend(o);
            errors.extend(e);
        }
        (origins, errors)
    }
}

/// Sends SIGHUP and waits until `hothot_config_reloads_total{result}` is `count`.
async fn hup_until(hothot: &ProxyProcess, result: &str, count: f64) {
    let pid = hothot.pid().unwrap().to_string();
    let signalled = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status();
    assert!(signalled.unwrap().success());
    let reached = wait_until(Duration::from_secs(5), || async {
        reloads(hothot, result).await == count
    })
    .await;
    assert!(reached, "no {result} number {count}: {}", hothot.log());
}

/// Sends SIGHUP and waits for the reload to be refused (the `failures`-th
/// refusal) with `why` in the log.
async fn refused_reload(hothot: &ProxyProcess, failures: f64, why: &str) {
    hup_until(hothot, "failure", failures).await;
    assert!(hothot.log().contains(why), "{}", hothot.log());
}

/// The process's `hothot_config_reloads_total{result}`.
async fn reloads(hothot: &ProxyProcess, result: &str) -> f64 {
    let series = format!("hothot_config_reloads_total{{result=\"{result}\"}}");
    metric_value(&hothot.metrics().await, &series).unwrap_or(-1.0)
}

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
    let header = std::fs::read_to_string(&config_path).unwrap();
    // The harness wrote server/listen/metrics first; keep them, swap the rest.
    let keep: String = header
        .lines()
        .take_while(|l| !l.starts_with("origins:"))
        .map(|l| format!("{l}\n"))
        .collect();
    let rewrite = |body: String| std::fs::write(&config_path, format!("{keep}{body}")).unwrap();
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

    // 3. Adding an origin needs a restart in this version: refused, with that said.
    rewrite(origins(300, "").replace(
        "capacity: 100}\n",
        &format!(
            "capacity: 100}}\n  - {{name: c, address: \"{}\", capacity: 100}}\n",
            c.addr
        ),
    ));
    refused_reload(&hothot, 2.0, "needs a restart").await;

    // 4. Replication keys read per write change live; the ones the workers
    // started with are refused by name.
    rewrite(origins(300, "").replace(
        "replication: {mode: off}",
        "replication: {mode: off, max_lag: 2s}",
    ));
    hup_until(&hothot, "success", 2.0).await;
    rewrite(origins(300, "").replace(
        "replication: {mode: off}",
        "replication: {mode: off, linger: 5ms}",
    ));
    refused_reload(
        &hothot,
        3.0,
        "replication.linger cannot change while hothot runs",
    )
    .await;

    let (origins_seen, errors) = steady.stop().await;
    assert!(errors.is_empty(), "errors during reloads: {errors:?}");
    assert!(
        origins_seen.len() > 200,
        "only {} requests",
        origins_seen.len()
    );
    assert_eq!(c.served(), 0);
    hothot.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_serves_the_renewed_certificate_to_new_connections() {
    let a = TestOrigin::start("a").await;
    let dir = temp_dir("tls-reload");
    let (old_cert, old_key) = certificate(&dir.join("old"));
    let (new_cert, new_key) = certificate(&dir.join("new"));
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::copy(&old_cert, &cert).unwrap();
    std::fs::copy(&old_key, &key).unwrap();
    let mut hothot = ProxyProcess::start(
        &dir,
        &format!(
            "origins: [{{name: a, address: \"{}\", capacity: 100}}]\n{STEADY}replication: {{mode: off}}\n",
            a.addr
        ),
    )
    .await;
    // The same process, on the same port, with the listener made TLS.
    hothot.kill();
    let config_path = dir.join("hothot.yaml");
    let plain = format!("listen: [\"127.0.0.1:{}\"]", hothot.port);
    let tls = format!(
        "listen: [{{address: \"127.0.0.1:{}\", tls: {{cert: \"{}\", key: \"{}\"}}}}]",
        hothot.port,
        cert.display(),
        key.display()
    );
    let yaml = std::fs::read_to_string(&config_path)
        .unwrap()
        .replace(&plain, &tls);
    std::fs::write(&config_path, yaml).unwrap();
    hothot.spawn().await;
    assert_eq!(
        curl_tls(hothot.port, &old_cert, "--http1.1").await,
        "a 1.1 200"
    );

    // Renewal: new files over the old ones, then SIGHUP.
    std::fs::copy(&new_cert, &cert).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    hup_until(&hothot, "success", 1.0).await;
    assert_eq!(curl_tls(hothot.port, &new_cert, "--http2").await, "a 2 200");
    let old_trust = curl_tls(hothot.port, &old_cert, "--http2").await;
    assert!(
        !old_trust.contains("200"),
        "the old certificate is still served: {old_trust}"
    );
    hothot.terminate().await;
}
