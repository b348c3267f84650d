//! The metrics as a site reliability engineer uses them, against a real
//! Prometheus (Debian's package) scraping a real hothot process every second
//! under a short scripted load with faults injected: every query of the
//! shipped Grafana dashboard returns data, the faults show (the first 5xx
//! included), `promtool check metrics` accepts the exposition and the
//! alerting rules pass their unit tests.
//!
//! `scripts/check-prometheus.sh` runs this with `--nocapture`, which prints
//! each panel's values.

mod common;

use common::process::ProxyProcess;
use common::prometheus::{promtool, Prometheus};
use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const DASHBOARD: &str = include_str!("../grafana/provisioning/dashboards/hothot.json");

/// Reads and writes back to back until told to stop.
fn steady_load(url: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut sent = 0;
        while !stop.load(Ordering::SeqCst) {
            let key = sent % 10;
            put(&format!("{url}/kv/k{key}"), &sent.to_string()).await;
            get(&format!("{url}/kv/k{key}")).await;
            sent += 2;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        sent
    })
}

/// Every query of the dashboard, with its panel's title, variables
/// substituted as Grafana would for job `hothot`, every instance, and a
/// rate interval of four scrapes.
fn dashboard_queries() -> Vec<(String, String)> {
    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).unwrap();
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(variables, ["datasource", "job", "instance"]);
    // Provisioning loads this file; import by hand uses the link to it.
    let root = env!("CARGO_MANIFEST_DIR");
    let linked = std::fs::read_to_string(format!("{root}/grafana/hothot-dashboard.json")).unwrap();
    assert_eq!(linked, DASHBOARD);
    let rows: Vec<&str> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|panel| panel["type"] == "row")
        .map(|row| row["title"].as_str().unwrap())
        .collect();
    for wanted in ["Traffic", "Origins", "Replication", "hothot itself"] {
        assert!(rows.contains(&wanted), "no row {wanted}: {rows:?}");
    }
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().unwrap();
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            assert!(
                expr.contains("job=~\"$job\",instance=~\"$instance\""),
                "{title}: a query without the job and instance variables: {expr}"
            );
            assert!(
                !expr.contains("[1m]"),
                "{title}: a fixed rate window: {expr}"
            );
            if expr.contains("hothot_cluster_") {
                // A single instance exports no cluster series: the
                // cluster's are checked by tests/cluster/.
                continue;
            }
            let expr = expr
                .replace("$job", "hothot")
                .replace("$instance", ".*")
                .replace("$__rate_interval", "4s");
            queries.push((title.to_owned(), expr));
        }
    }
    queries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_data_and_injected_faults_show() {
    let (a, b, mut c) = (
        TestOrigin::start("a").await,
        TestOrigin::start("b").await,
        TestOrigin::start("c").await,
    );
    let dir = temp_dir("observability");
    let config = format!(
        "origins:\n  - {{name: a, address: \"{}\", capacity: 100}}\n  - {{name: b, address: \"{}\", capacity: 100}}\n  - {{name: c, address: \"{}\", capacity: 100}}\n{}",
        a.addr,
        b.addr,
        c.addr,
        replication_settings("  journal: {dir: journal}\n  max_lag: 1s\n  verify: {sample: 0.1}\n"),
    );
    let mut hothot = ProxyProcess::start(&dir, &config).await;
    let target = format!("127.0.0.1:{}", hothot.metrics_port);
    let prometheus = Prometheus::start(&dir.join("prometheus"), &target).await;
    let up = wait_until(Duration::from_secs(10), || async {
        prometheus.query("up{job=\"hothot\"} == 1").await.len() == 1
    })
    .await;
    assert!(up, "prometheus does not scrape hothot");

    // Two scrapes of a quiet hothot, then exactly one 5xx: a series made
    // on first use would hide it from increase().
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for origin in [&a, &b, &c] {
        origin.fail_path(Some(("/boom", 500)));
    }
    assert_eq!(get(&hothot.url("/boom")).await.status, 500);
    let stop = Arc::new(AtomicBool::new(false));
    let load = steady_load(hothot.url(""), stop.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;
    // c goes down: its probes fail and its writes wait.
    c.stop();
    tokio::time::sleep(Duration::from_secs(4)).await;

    let first_5xx = prometheus
        .query("sum(increase(hothot_responses_total{class=\"5xx\"}[1m]))")
        .await;
    assert!(
        first_5xx.first().is_some_and(|(_, v)| *v >= 1.0),
        "the one 5xx answer does not show: {first_5xx:?}"
    );
    let c_up = prometheus.query("hothot_origin_up{origin=\"c\"}").await;
    assert_eq!(
        c_up.first().map(|(_, v)| *v),
        Some(0.0),
        "c is not shown down"
    );
    let c_lag = prometheus
        .query("hothot_replication_lag_seconds{peer=\"c\"}")
        .await;
    assert!(
        c_lag.first().is_some_and(|(_, v)| *v > 0.5),
        "c's lag does not show: {c_lag:?}"
    );

    let mut empty = Vec::new();
    for (title, expr) in dashboard_queries() {
        let result = prometheus.query(&expr).await;
        let values: Vec<String> = result
            .iter()
            .take(6)
            .map(|(labels, value)| {
                let labels = labels.as_object().map_or(String::new(), |m| {
                    m.iter()
                        .filter(|(k, _)| !["job", "instance", "__name__"].contains(&k.as_str()))
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                        .collect::<Vec<_>>()
                        .join(",")
                });
                format!("{{{labels}}} {value:.4}")
            })
            .collect();
        println!("{title}: {} series: {}", result.len(), values.join("  "));
        if result.is_empty() {
            empty.push(format!("{title}: {expr}"));
        }
    }
    stop.store(true, Ordering::SeqCst);
    let sent = load.await.unwrap();
    println!("load: {sent} requests");
    assert!(
        empty.is_empty(),
        "queries without data:\n{}",
        empty.join("\n")
    );

    let exposition = hothot.metrics().await;
    let (ok, lint) = promtool(&["check", "metrics"], Some(exposition.as_bytes()));
    assert!(ok, "promtool check metrics: {lint}");
    let rules = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/conf/prometheus/hothot-rules.test.yml"
    );
    let (ok, tested) = promtool(&["test", "rules", rules], None);
    assert!(ok, "promtool test rules: {tested}");
    drop(prometheus);
    hothot.terminate().await;
}

/// Grafana's expansion of a provisioning file's value: `$NAME` and
/// `${NAME}` from the environment, an unset one empty (Go's os.Expand).
fn grafana_expand(value: &str, env: &[(&str, &str)]) -> String {
    let lookup = |name: &str| env.iter().find(|(n, _)| *n == name).map_or("", |(_, v)| *v);
    let mut out = String::new();
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, tail) = match after.strip_prefix('{') {
            Some(braced) => {
                let end = braced.find('}').unwrap_or(braced.len());
                (&braced[..end], braced.get(end + 1..).unwrap_or(""))
            }
            None => {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], &after[end..])
            }
        };
        out.push_str(lookup(name));
        rest = tail;
    }
    out + rest
}

/// The provisioning files work in Grafana's Debian/RPM packages (no
/// environment variable; the directory on their command line) and in its
/// Docker image (`GF_PATHS_PROVISIONING`): the dashboards' path resolves to
/// the same absolute directory, where the dashboard is copied; the data
/// source is hothot's own and not a second default.
#[test]
fn grafana_provisioning_resolves_in_the_packages_and_the_docker_image() {
    let root = env!("CARGO_MANIFEST_DIR");
    let provider =
        std::fs::read_to_string(format!("{root}/grafana/provisioning/dashboards/hothot.yml"))
            .unwrap();
    let provider: serde_yaml::Value = serde_yaml::from_str(&provider).unwrap();
    let path = provider["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    let packaged = grafana_expand(path, &[]);
    let docker = grafana_expand(
        path,
        &[("GF_PATHS_PROVISIONING", "/etc/grafana/provisioning")],
    );
    assert_eq!(packaged, docker);
    assert_eq!(packaged, "/etc/grafana/provisioning/dashboards");
    // The repository's directory is copied over /etc/grafana/provisioning:
    // the dashboard lands in the provider's path.
    assert!(std::path::Path::new(&format!(
        "{root}/grafana/provisioning/dashboards/hothot.json"
    ))
    .exists());
    assert_eq!(
        grafana_expand("$GF_PATHS_PROVISIONING/dashboards", &[]),
        "/dashboards",
        "the expansion that broke the packaged Grafana"
    );

    let sources = std::fs::read_to_string(format!(
        "{root}/grafana/provisioning/datasources/hothot.yml"
    ))
    .unwrap();
    let sources: serde_yaml::Value = serde_yaml::from_str(&sources).unwrap();
    let source = &sources["datasources"][0];
    assert_eq!(source["name"], "hothot-prometheus");
    assert_eq!(source["isDefault"], false);
}
