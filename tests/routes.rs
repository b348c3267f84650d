//! `replication.routes` (#26) against real servers: three independent etcd
//! 3.4 servers (Debian's `etcd-server`, each a one-member cluster started
//! here) behind hothot through etcd's JSON gateway, where reads are POSTs
//! (`/v3/kv/range`) and a lease grant must happen once, not on every etcd.

mod common;

use common::etcd::EtcdCluster;
use common::*;
use std::net::SocketAddr;
use std::time::Duration;

/// Three etcd servers that know nothing of each other: (their addresses,
/// the servers, kept running).
async fn three_etcds(label: &str) -> (Vec<SocketAddr>, Vec<EtcdCluster>) {
    let dir = temp_dir(label);
    let mut servers = Vec::new();
    for i in 0..3 {
        servers.push(EtcdCluster::start(&dir.join(format!("etcd{i}")), 1).await);
    }
    let addresses = (servers.iter())
        .map(|s| {
            s.endpoints()[0]
                .trim_start_matches("http://")
                .parse()
                .unwrap()
        })
        .collect();
    (addresses, servers)
}

/// hothot over `etcds` (capacities alike, TCP probes: etcd's own `/health`
/// must not count among the requests measured), with `replication`.
async fn hothot(etcds: &[SocketAddr], replication: &str) -> Proxy {
    let origins: Vec<(&str, SocketAddr, u32)> = ["e0", "e1", "e2"]
        .into_iter()
        .zip(etcds.iter().copied())
        .map(|(name, addr)| (name, addr, 100))
        .collect();
    let extra = format!(
        "health: {{kind: tcp, interval: 100ms, timeout: 200ms}}\nreplication:\n{replication}"
    );
    start_proxy(&origins, &extra).await
}

/// The routes of etcd's JSON gateway: ranges are reads, lease grants go
/// to one etcd, puts are the pool's writes (here: sync with a quorum of 2).
const ROUTES: &str = "  routes:
    - {match: {methods: [POST], path: /v3/kv/range}, as: read}
    - {match: {path_prefix: /v3/lease/grant}, as: primary}
    - {match: {path: /v3/kv/put}, mode: sync, quorum: 2, timeout: 2s}
";

fn base64(text: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in text.as_bytes().chunks(3) {
        let bytes = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]);
        for i in 0..4 {
            out.push(match i <= chunk.len() {
                true => ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char,
                false => '=',
            });
        }
    }
    out
}

async fn post(url: &str, body: String) -> Answer {
    let request = http::Request::post(url)
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    send(request).await
}

/// A gRPC method's successful calls at one etcd (its own `/metrics`).
async fn handled(etcd: SocketAddr, method: &str) -> f64 {
    let metrics = get(&format!("http://{etcd}/metrics")).await.body;
    let series = format!("grpc_server_handled_total{{grpc_code=\"OK\",grpc_method=\"{method}\",");
    (metrics.lines())
        .filter(|line| line.starts_with(&series))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `key` at one etcd, straight from it: (its value in base64, if any,
/// and the store's revision).
async fn range(etcd: SocketAddr, key: &str) -> (Option<String>, u64) {
    let answer = post(
        &format!("http://{etcd}/v3/kv/range"),
        format!("{{\"key\":\"{}\"}}", base64(key)),
    )
    .await;
    let json: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    let value = json["kvs"][0]["value"].as_str().map(str::to_owned);
    let revision = json["header"]["revision"]
        .as_str()
        .and_then(|r| r.parse().ok());
    (value, revision.unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn range_posts_reach_one_etcd_each_and_a_lease_is_granted_once() {
    let (etcds, _servers) = three_etcds("routes-reads").await;
    let proxy = hothot(&etcds, &format!("  mode: async\n{ROUTES}")).await;
    let url = |path: &str| format!("http://127.0.0.1:{}{path}", proxy.port);
    let put = post(
        &url("/v3/kv/put"),
        format!(
            "{{\"key\":\"{}\",\"value\":\"{}\"}}",
            base64("k"),
            base64("v")
        ),
    )
    .await;
    assert_eq!(put.status, 200, "{}", put.body);
    let mut before = 0.0;
    for etcd in &etcds {
        before += handled(*etcd, "Range").await;
    }
    for _ in 0..30 {
        let answer = post(
            &url("/v3/kv/range"),
            format!("{{\"key\":\"{}\"}}", base64("k")),
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert!(answer.body.contains(&base64("v")), "{}", answer.body);
        assert!(
            !answer.headers.contains_key("x-hothot-version"),
            "a read is not sequenced"
        );
    }
    let mut after = 0.0;
    for etcd in &etcds {
        after += handled(*etcd, "Range").await;
    }
    assert_eq!(
        after - before,
        30.0,
        "30 ranges through hothot, each at one etcd"
    );
    // Lease grants: one lease per request over the three etcds.
    for _ in 0..12 {
        let answer = post(&url("/v3/lease/grant"), "{\"TTL\":600}".into()).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert!(
            !answer.headers.contains_key("x-hothot-version"),
            "not replicated"
        );
    }
    let mut leases = 0;
    for etcd in &etcds {
        let answer = post(&format!("http://{etcd}/v3/lease/leases"), "{}".into()).await;
        let json: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
        leases += json["leases"].as_array().map_or(0, |l| l.len());
    }
    assert_eq!(leases, 12, "one lease per grant");
    let metrics = get(&format!("http://127.0.0.1:{}/metrics", proxy.metrics_port))
        .await
        .body;
    let primary: f64 = (metrics.lines())
        .filter(|l| l.starts_with("hothot_responses_total{") && l.contains("kind=\"primary\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(primary, 12.0, "the grants count as kind=\"primary\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sync_route_in_an_async_pool_and_concurrent_writers_leave_the_etcds_identical() {
    let (etcds, servers) = three_etcds("routes-writes").await;
    let proxy = hothot(&etcds, &format!("  mode: async\n{ROUTES}")).await;
    let put_url = format!("http://127.0.0.1:{}/v3/kv/put", proxy.port);
    let put = move |key: String, value: String| {
        let url = put_url.clone();
        async move {
            post(
                &url,
                format!(
                    "{{\"key\":\"{}\",\"value\":\"{}\"}}",
                    base64(&key),
                    base64(&value)
                ),
            )
            .await
        }
    };
    // Sync with a quorum of 2: when the client has its answer, the write
    // is on the primary and two more, that is on every etcd.
    for i in 0..5 {
        let answer = put(format!("sync{i}"), format!("v{i}")).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        for etcd in &etcds {
            let (value, _) = range(*etcd, &format!("sync{i}")).await;
            assert_eq!(value, Some(base64(&format!("v{i}"))), "sync{i} at {etcd}");
        }
    }
    // With one etcd stalled, no answer comes (the pool is async): three
    // writes, so that some have a primary that is not the stalled one.
    servers[2].pause(0, true);
    let waiting: Vec<_> = (0..3)
        .map(|i| tokio::spawn(put(format!("stalled{i}"), "v".into())))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let answered_early = waiting.iter().filter(|w| w.is_finished()).count();
    servers[2].pause(0, false);
    for write in waiting {
        let answer = write.await.unwrap();
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    assert_eq!(
        answered_early, 0,
        "sync writes answered with one of two peers stalled"
    );
    // Eight clients writing ten shared keys at once.
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..8 {
        let put = put.clone();
        clients.spawn(async move {
            for w in 0..25 {
                let answer = put(format!("k{}", w % 10), format!("c{c}-{w}")).await;
                assert_eq!(answer.status, 200, "{}", answer.body);
            }
        });
    }
    while let Some(done) = clients.join_next().await {
        done.unwrap();
    }
    let same = wait_until(Duration::from_secs(20), || async {
        let mut states = Vec::new();
        for etcd in &etcds {
            let mut state = Vec::new();
            for k in 0..10 {
                state.push(range(*etcd, &format!("k{k}")).await);
            }
            states.push(state);
        }
        states.iter().all(|s| *s == states[0])
    })
    .await;
    assert!(same, "the etcds differ in keys, values or revision");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_change_on_reload_under_load_without_a_closed_connection() {
    use common::process::ProxyProcess;
    use common::reload::{hup_until, rewriter, SteadyClients};
    let origins = [
        TestOrigin::start("a").await,
        TestOrigin::start("b").await,
        TestOrigin::start("c").await,
    ];
    let dir = temp_dir("routes-reload");
    let config = |route: &str| {
        let mut yaml = String::from("origins:\n");
        for (origin, name) in origins.iter().zip(["a", "b", "c"]) {
            yaml += &format!(
                "  - {{name: {name}, address: \"{}\", capacity: 100}}\n",
                origin.addr
            );
        }
        yaml + &format!("replication:\n  routes:\n    - {{match: {{path: /search}}, {route}}}\n")
    };
    let hothot = ProxyProcess::start(&dir, &config("as: read")).await;
    let rewrite = rewriter(&dir.join("hothot.yaml"));
    let steady = SteadyClients::start(hothot.port, 4);
    let searches = || -> usize {
        (origins.iter())
            .map(|o| {
                o.seen()
                    .iter()
                    .filter(|s| s.method == "POST" && s.path_and_query == "/search")
                    .count()
            })
            .sum()
    };
    let search_url = hothot.url("/search");
    let search = || post(&search_url, "{\"q\": 1}".into());
    assert_eq!(search().await.status, 200);
    assert_eq!(searches(), 1, "a read reaches one origin");
    // The same path becomes a write: every origin gets the next one.
    rewrite(config("as: write"));
    hup_until(&hothot, "success", 1.0).await;
    assert_eq!(search().await.status, 200);
    let replicated = wait_until(Duration::from_secs(10), || async { searches() == 4 }).await;
    assert!(replicated, "the write reached {} origins", searches() - 1);
    let (answers, errors) = steady.stop().await;
    assert!(errors.is_empty(), "steady clients saw {errors:?}");
    assert!(!answers.is_empty());
}
