//! Operating hothot: the admin API (status, drain and enable, health and
//! readiness, tokens) and the access log (formats, rotation). Real origins,
//! hothot in-process or as a process, a real HTTP client.

mod common;

use bytes::Bytes;
use common::process::ProxyProcess;
use common::*;
use http::HeaderValue;
use http_body_util::Full;
use std::time::Duration;

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
    let (proxy, admin) = start_with_admin(&[("a", a.addr, 300), ("b", b.addr, 100)], "").await;
    let status = admin.status().await;
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    // Which OpenSSL serves TLS: the system's shared library (#29).
    let openssl = status["build"]["openssl"].as_str().unwrap_or_default();
    assert!(openssl.starts_with("OpenSSL 3"), "{status}");
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
    // Three writes: a applies them, b refuses its copies (and is down, so
    // they never count against it): they wait in its backlog.
    b.set_copy_status(503);
    for i in 0..3 {
        assert_eq!(put(&proxy.url(&format!("/kv/k{i}")), "v").await.status, 200);
    }
    let applied = wait_until(Duration::from_secs(5), || async {
        origin(&admin.status().await, "a")["applied_seq"] == 3
    })
    .await;
    let status = admin.status().await;
    assert!(applied, "{status}");
    let sb = origin(&status, "b");
    assert_eq!(
        (sb["applied_seq"].as_u64(), sb["pending_writes"].as_u64()),
        (Some(0), Some(3))
    );
    assert!(sb["backlog_bytes"].as_u64().unwrap() > 3 * 20, "{sb}");
    assert_eq!(origin(&status, "a")["backlog_bytes"], 0);
    let gauges = wait_until(Duration::from_secs(5), || async {
        let metrics = proxy.metrics().await;
        metric_value(&metrics, "hothot_replication_applied_sequence{peer=\"a\"}") == Some(3.0)
            && metric_value(&metrics, "hothot_replication_backlog_bytes{peer=\"b\"}")
                .is_some_and(|bytes| bytes > 60.0)
    })
    .await;
    assert!(gauges, "{}", proxy.metrics().await);
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
    const AGENT: &str = "hothot-test/1 (Zürich; 東京)";
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
                // Not ASCII (UTF-8): logged as text, never as null.
                .header(
                    "user-agent",
                    HeaderValue::from_bytes(AGENT.as_bytes()).unwrap(),
                )
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
        assert_eq!(entry["user_agent"], AGENT);
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
            && get3.contains(&format!(
                "] \"GET /item/3?q=1 HTTP/1.1\" 200 1 \"-\" \"{AGENT}\" rt="
            ))
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
