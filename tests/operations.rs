//! Operating hothot: the admin API (status, drain and enable, health and
//! readiness, tokens). Real origins, hothot in-process, a real HTTP client.

mod common;

use bytes::Bytes;
use common::process::ProxyProcess;
use common::*;
use http_body_util::Full;
use std::time::Duration;

/// Probes at start-up only, no passive ejection, no slow start: the pool
/// changes only when the test says so.
const STEADY: &str = "health: {interval: 1m, timeout: 500ms, passive: {failures: 0}}\n\
                      balancing: {slow_start: 0s}\n";

struct Admin {
    port: u16,
}

impl Admin {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn status(&self) -> serde_json::Value {
        let answer = get(&self.url("/status")).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        serde_json::from_str(&answer.body).expect("/status is JSON")
    }

    async fn post(&self, path: &str, token: Option<&str>) -> Answer {
        let mut request = http::Request::post(self.url(path));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        send(request.body(Full::new(Bytes::new())).unwrap()).await
    }
}

/// A proxy with its admin API on a free loopback port; `admin` is the rest
/// of the `admin` section (e.g. `token_file: ...`).
async fn start_with_admin(
    origins: &[(&str, std::net::SocketAddr, u32)],
    admin: &str,
) -> (Proxy, Admin) {
    let [port, metrics, admin_port] = free_ports();
    let extra = format!("{STEADY}admin: {{listen: \"127.0.0.1:{admin_port}\"{admin}}}\n");
    let proxy = start_proxy_on((port, metrics), origins, &extra).await;
    wait_for_port(admin_port).await;
    (proxy, Admin { port: admin_port })
}

fn origin<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["origins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == name)
        .unwrap_or_else(|| panic!("no origin {name} in {status}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_every_origin_replication_and_versions() {
    let (a, b) = (TestOrigin::start("a").await, TestOrigin::start("b").await);
    b.set_health(503);
    let (_proxy, admin) = start_with_admin(&[("a", a.addr, 300), ("b", b.addr, 100)], "").await;
    let status = admin.status().await;
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    let sha = status["config"]["sha256"].as_str().unwrap();
    assert!(
        sha.len() == 64 && sha.chars().all(|c| c.is_ascii_hexdigit()),
        "{sha}"
    );
    assert!(status["config"]["loaded_at_unix"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(status["replication"]["mode"], "async");
    assert_eq!(status["replication"]["order"], "total");
    assert!(status["journal_bytes"].is_u64());
    let (sa, sb) = (origin(&status, "a"), origin(&status, "b"));
    assert_eq!(sa["state"], "up");
    assert_eq!(sa["capacity"], 300);
    assert_eq!(sa["share"], 1.0);
    assert_eq!(sa["pending_writes"], 0);
    assert_eq!(sb["state"], "down");
    assert_eq!(sb["share"], 0.0);
    assert_eq!(get(&admin.url("/healthz")).await.status, 200);
    assert_eq!(get(&admin.url("/readyz")).await.status, 200);
    assert_eq!(get(&admin.url("/nothing")).await.status, 404);
    assert_eq!(admin.post("/status", None).await.status, 405);
    assert_eq!(get(&admin.url("/origins/a/drain")).await.status, 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_origin_gets_no_new_traffic_finishes_what_it_has_and_still_gets_writes() {
    let (a, b) = (TestOrigin::start("a").await, TestOrigin::start("b").await);
    let (proxy, admin) = start_with_admin(&[("a", a.addr, 100), ("b", b.addr, 100)], "").await;
    // A slow request in flight on b while b is drained still completes.
    b.set_delay(Duration::from_millis(400));
    let url = proxy.url("/slow");
    let first = tokio::spawn({
        let url = url.clone();
        async move { get(&url).await }
    });
    let second = tokio::spawn(async move { get(&url).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let drained = admin.post("/origins/b/drain", None).await;
    assert_eq!(drained.status, 200, "{}", drained.body);
    let answers = [first.await.unwrap(), second.await.unwrap()];
    assert!(answers.iter().all(|a| a.status == 200));
    assert!(answers.iter().any(|a| a.body == "b"), "b was not in flight");
    b.set_delay(Duration::ZERO);

    let before = b.served();
    for _ in 0..20 {
        assert_eq!(get(&proxy.url("/")).await.body, "a");
    }
    assert_eq!(b.served(), before, "a drained origin got traffic");
    let status = admin.status().await;
    assert_eq!(origin(&status, "b")["state"], "drained");
    assert_eq!(origin(&status, "a")["share"], 1.0);
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric_value(&metrics, "hothot_origin_drained{origin=\"b\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric_value(&metrics, "hothot_origin_up{origin=\"b\"}"),
        Some(0.0)
    );
    // Writes still replicate to it.
    assert_eq!(put(&proxy.url("/kv/k"), "v1").await.status, 200);
    let copied = wait_until(Duration::from_secs(5), || async { b.value("k").is_some() }).await;
    assert!(copied, "a write did not reach the drained origin");

    let enabled = admin.post("/origins/b/enable", None).await;
    assert_eq!(enabled.status, 200);
    let url = proxy.url("/");
    let answers: Vec<String> = futures::future::join_all((0..10).map(|_| get(&url)))
        .await
        .into_iter()
        .map(|a| a.body)
        .collect();
    assert!(
        answers.iter().any(|o| o == "b"),
        "b got nothing back: {answers:?}"
    );
    assert_eq!(admin.post("/origins/nope/drain", None).await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_endpoints_need_the_token_when_one_is_set() {
    let a = TestOrigin::start("a").await;
    let dir = temp_dir("admin-token");
    std::fs::create_dir_all(&dir).unwrap();
    let token_file = dir.join("token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let (_proxy, admin) = start_with_admin(
        &[("a", a.addr, 100)],
        &format!(", token_file: \"{}\"", token_file.display()),
    )
    .await;
    let missing = admin.post("/origins/a/drain", None).await;
    assert_eq!(missing.status, 401);
    assert_eq!(missing.headers["www-authenticate"], "Bearer");
    assert_eq!(
        admin.post("/origins/a/drain", Some("wrong")).await.status,
        401
    );
    assert_eq!(admin.status().await["origins"][0]["drained"], false);
    let right = admin.post("/origins/a/drain", Some("s3cret-token")).await;
    assert_eq!(right.status, 200, "{}", right.body);
    assert_eq!(admin.status().await["origins"][0]["drained"], true);
    // Reads need no token; with its only origin drained, hothot is not ready.
    assert_eq!(get(&admin.url("/readyz")).await.status, 503);
    assert_eq!(get(&admin.url("/healthz")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_file_a_non_loopback_admin_listener_refuses_changes() {
    let a = TestOrigin::start("a").await;
    let [port, metrics, admin_port] = free_ports();
    let extra = format!("{STEADY}admin: {{listen: \"0.0.0.0:{admin_port}\"}}\n");
    let _proxy = start_proxy_on((port, metrics), &[("a", a.addr, 100)], &extra).await;
    wait_for_port(admin_port).await;
    let admin = Admin { port: admin_port };
    assert_eq!(admin.post("/origins/a/drain", None).await.status, 403);
    assert_eq!(admin.status().await["origins"][0]["drained"], false);
}

/// Lines of a file (none if it does not exist yet).
fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_has_one_parseable_line_per_request() {
    let (a, b) = (TestOrigin::start("a").await, TestOrigin::start("b").await);
    let dir = temp_dir("access-log");
    std::fs::create_dir_all(&dir).unwrap();
    let (json_path, combined_path) = (dir.join("access.json"), dir.join("access.log"));
    let json_proxy = start_proxy(
        &[("a", a.addr, 100), ("b", b.addr, 100)],
        &format!(
            "{STEADY}access_log: {{path: \"{}\", format: json}}\n",
            json_path.display()
        ),
    )
    .await;
    let combined_proxy = start_proxy(
        &[("a", a.addr, 100)],
        &format!(
            "{STEADY}access_log: {{path: \"{}\"}}\n",
            combined_path.display()
        ),
    )
    .await;
    for proxy in [&json_proxy, &combined_proxy] {
        for i in 0..10 {
            let request = http::Request::get(proxy.url(&format!("/item/{i}?q=1")))
                .header("user-agent", "hothot-test/1")
                .body(Full::default())
                .unwrap();
            assert_eq!(send(request).await.status, 200);
        }
        assert_eq!(put(&proxy.url("/kv/key"), "value").await.status, 200);
    }
    let complete = wait_until(Duration::from_secs(5), || async {
        lines(&json_path).len() == 11 && lines(&combined_path).len() == 11
    })
    .await;
    assert!(
        complete,
        "{:?} {:?}",
        lines(&json_path),
        lines(&combined_path)
    );

    let entries: Vec<serde_json::Value> = lines(&json_path)
        .iter()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    // Lines are written as requests end: neighbours may swap places.
    let (gets, writes): (Vec<_>, Vec<_>) = entries.iter().partition(|e| e["method"] == "GET");
    let mut paths: Vec<String> = gets
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_owned())
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        (0..10)
            .map(|i| format!("/item/{i}?q=1"))
            .collect::<Vec<_>>()
    );
    for entry in &gets {
        assert_eq!(entry["status"], 200);
        assert_eq!(entry["upstream_status"], 200);
        assert_eq!(entry["attempts"], 1);
        assert_eq!(entry["client"], "127.0.0.1");
        assert_eq!(entry["user_agent"], "hothot-test/1");
        assert_eq!(entry["bytes"], 1);
        assert!(entry["origin"] == "a" || entry["origin"] == "b", "{entry}");
        assert!(entry["duration_seconds"].as_f64().unwrap() >= 0.0);
        assert!(entry["time"].as_str().unwrap().ends_with('Z'));
    }
    let write = writes[0];
    assert_eq!(write["method"], "PUT");
    assert!(write["version"].as_u64().unwrap() > 0, "{write}");
    assert_eq!(write["replication"], "queued");

    let combined = lines(&combined_path);
    let line = |needle: &str| {
        combined
            .iter()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle}: {combined:?}"))
            .clone()
    };
    let get3 = line("\"GET /item/3?q=1 HTTP/1.1\"");
    assert!(
        get3.starts_with("127.0.0.1 - - [")
            && get3.contains("] \"GET /item/3?q=1 HTTP/1.1\" 200 1 \"-\" \"hothot-test/1\" rt=")
            && get3.contains(" origin=a attempts=1 upstream_status=200"),
        "{get3}"
    );
    let put = line("\"PUT /kv/key HTTP/1.1\" 200 ");
    assert!(put.contains(" replication=queued"), "{put}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr1_reopens_the_access_log_and_rotation_loses_no_line() {
    let a = TestOrigin::start("a").await;
    let dir = temp_dir("access-rotation");
    let hothot = ProxyProcess::start(
        &dir,
        &format!(
            "origins: [{{name: a, address: \"{}\", capacity: 100}}]\n{STEADY}access_log: {{path: access.log}}\n",
            a.addr
        ),
    )
    .await;
    let (current, rotated) = (dir.join("access.log"), dir.join("access.log.1"));
    let sent = 300;
    for i in 0..sent {
        if i == sent / 2 {
            // logrotate's way: move the file, then tell hothot.
            std::fs::rename(&current, &rotated).unwrap();
            let pid = hothot.pid().unwrap().to_string();
            assert!(std::process::Command::new("kill")
                .args(["-USR1", &pid])
                .status()
                .unwrap()
                .success());
        }
        assert_eq!(get(&hothot.url(&format!("/r/{i}"))).await.status, 200);
    }
    let all_there = wait_until(Duration::from_secs(5), || async {
        lines(&rotated).len() + lines(&current).len() == sent
    })
    .await;
    let (old, new) = (lines(&rotated), lines(&current));
    assert!(
        all_there,
        "{} + {} lines for {sent} requests",
        old.len(),
        new.len()
    );
    assert!(
        !old.is_empty() && !new.is_empty(),
        "{} and {} lines",
        old.len(),
        new.len()
    );
    // Each request once. (Lines are written when requests end, and two
    // worker threads may end neighbours in either order.)
    let mut logged: Vec<usize> = old
        .iter()
        .chain(&new)
        .filter_map(|line| {
            line.split("\"GET /r/")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    logged.sort_unstable();
    assert_eq!(logged, (0..sent).collect::<Vec<_>>());
}

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

/// A self-signed certificate for `localhost` and 127.0.0.1, made by the
/// `openssl` command: (certificate, key).
fn certificate(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    (cert, key)
}

/// `curl` over TLS with `protocol` (`--http2` or `--http1.1`): "<version> <status> <body>".
async fn curl_tls(port: u16, ca: &std::path::Path, protocol: &str) -> String {
    let (ca, protocol) = (ca.to_owned(), protocol.to_owned());
    tokio::task::spawn_blocking(move || {
        let output = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", &protocol, "--cacert"])
            .arg(&ca)
            .args(["-w", " %{http_version} %{http_code}"])
            .arg(format!("https://localhost:{port}/tls"))
            .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
            .output()
            .expect("curl runs");
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        format!("{text}{}", String::from_utf8_lossy(&output.stderr))
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_listener_speaks_http2_and_http11_by_alpn() {
    let a = TestOrigin::start("a").await;
    let dir = temp_dir("tls-listener");
    let (cert, key) = certificate(&dir);
    let [port, metrics] = free_ports();
    let yaml = format!(
        "listen: [{{address: \"127.0.0.1:{port}\", tls: {{cert: \"{}\", key: \"{}\"}}}}]\n\
         metrics: {{listen: \"127.0.0.1:{metrics}\"}}\n\
         origins: [{{name: a, address: \"{}\", capacity: 100}}]\n{STEADY}\
         replication: {{journal: {{dir: \"{}\"}}}}\n",
        cert.display(),
        key.display(),
        a.addr,
        dir.join("journal").display()
    );
    let config = hothot::config::parse(&yaml).expect("valid config");
    let _running = hothot::spawn(&config).expect("proxy starts");
    wait_for_port(port).await;
    // curl prints the body ("a"), then the protocol and the status.
    assert_eq!(curl_tls(port, &cert, "--http2").await, "a 2 200");
    assert_eq!(curl_tls(port, &cert, "--http1.1").await, "a 1.1 200");
    assert_eq!(a.served(), 2);
}

/// Starts hothot in-process on `origins_yaml` (an `origins:` section);
/// returns it and its proxy and metrics ports.
async fn spawn_with_origins(
    dir: &std::path::Path,
    origins_yaml: &str,
) -> (hothot::RunningProxy, u16, u16) {
    let [port, metrics] = free_ports();
    let yaml = format!(
        "listen: [\"127.0.0.1:{port}\"]\nmetrics: {{listen: \"127.0.0.1:{metrics}\"}}\n{origins_yaml}\
         health: {{interval: 100ms, timeout: 500ms, passive: {{failures: 0}}}}\n\
         replication: {{journal: {{dir: \"{}\"}}}}\n",
        dir.join(format!("journal-{port}")).display()
    );
    let config = hothot::config::parse(&yaml).expect("valid config");
    let running = hothot::spawn(&config).expect("proxy starts");
    wait_for_port(port).await;
    (running, port, metrics)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_over_tls_is_probed_proxied_and_replicated_to() {
    let dir = temp_dir("tls-origin");
    let (cert, key) = certificate(&dir.join("certs"));
    let nginx = common::nginx::Nginx::start_tls(&dir.join("nginx"), &cert, &key).await;
    let origin = |tls: &str| {
        format!(
            "origins: [{{name: n, address: \"{}\", capacity: 100, tls: {tls}}}]\n",
            nginx.addr
        )
    };
    let trusted = format!("{{sni: localhost, ca: \"{}\"}}", cert.display());
    let (_proxy, port, _) = spawn_with_origins(&dir, &origin(&trusted)).await;
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    // The write reaches nginx through the replication lane, the read
    // through Pingora's connector: both over TLS.
    let stored = put(&url("/doc.txt"), "over tls").await;
    assert!(
        (200..300).contains(&stored.status),
        "{} {}",
        stored.status,
        stored.body
    );
    let read = get(&url("/doc.txt")).await;
    assert_eq!((read.status, read.body.as_str()), (200, "over tls"));
    assert_eq!(
        nginx.files().get("/doc.txt").map(Vec::as_slice),
        Some(&b"over tls"[..])
    );

    // Certificates are verified: trusting only the system's CAs, the
    // self-signed origin fails its probes and gets no traffic.
    let (_untrusting, port, metrics) = spawn_with_origins(&dir, &origin("{sni: localhost}")).await;
    let body = get(&format!("http://127.0.0.1:{metrics}/metrics"))
        .await
        .body;
    assert_eq!(
        metric_value(&body, "hothot_origin_up{origin=\"n\"}"),
        Some(0.0)
    );
    assert_eq!(
        get(&format!("http://127.0.0.1:{port}/doc.txt"))
            .await
            .status,
        503
    );
    // ...unless told not to verify.
    let (_unverified, port, _) = spawn_with_origins(&dir, &origin("{verify: false}")).await;
    assert_eq!(
        get(&format!("http://127.0.0.1:{port}/doc.txt")).await.body,
        "over tls"
    );
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
