//! Workloads for the ordering tests: concurrent writers over shared keys,
//! waiting for replication to settle, and comparing origins' states.

use super::{get, metric_value, try_send, wait_until};
use bytes::Bytes;
use http_body_util::Full;
use std::collections::BTreeMap;
use std::time::Duration;

/// How long replication may take to settle.
pub const SETTLE: Duration = Duration::from_secs(30);

/// A write a client saw succeed: (method, path, body).
pub type Acknowledged = (String, String, String);

/// `clients` concurrent writers, each sending `per_client` writes over
/// `keys` shared keys (`/kv/k{n}`): PUTs with a unique body, and a DELETE
/// every fourth write. A write that fails (the proxy died) ends its writer.
/// Returns the writes that were acknowledged (2xx, or 404 for a DELETE).
pub async fn mixed_burst(
    url: &str,
    clients: usize,
    per_client: usize,
    keys: usize,
) -> Vec<Acknowledged> {
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..clients {
        let url = url.to_owned();
        tasks.spawn(async move {
            let mut acknowledged = Vec::new();
            // A fixed pseudo-random walk over the keys, different per client.
            let mut state = (client as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            for i in 0..per_client {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let path = format!("/kv/k{}", state % keys as u64);
                let (method, body) = match i % 4 {
                    3 => ("DELETE", String::new()),
                    _ => ("PUT", format!("c{client}-{i}")),
                };
                let request = http::Request::builder()
                    .method(method)
                    .uri(format!("{url}{path}"))
                    .body(Full::new(Bytes::from(body.clone())))
                    .unwrap();
                match try_send(request).await {
                    Ok(a) if a.status < 300 || (method == "DELETE" && a.status == 404) => {
                        acknowledged.push((method.to_owned(), path, body));
                    }
                    Ok(a) => panic!("{method} {path} answered {}: {}", a.status, a.body),
                    Err(_) => break,
                }
            }
            acknowledged
        });
    }
    let mut all = Vec::new();
    while let Some(done) = tasks.join_next().await {
        all.extend(done.unwrap());
    }
    all
}

/// Waits until no origin has a write pending, per hothot's metrics.
pub async fn settled(metrics_port: u16, origins: &[&str]) -> bool {
    settled_within(SETTLE, metrics_port, origins).await
}

/// [`settled`], waiting at most `limit`.
pub async fn settled_within(limit: Duration, metrics_port: u16, origins: &[&str]) -> bool {
    pending_within(limit, metrics_port, origins, 0).await
}

/// Waits at most `limit` until each of `origins` has `writes` pending, per
/// hothot's metrics. A copy joins the backlogs as the journal makes it
/// durable, which is also when its client is answered: the gauge may trail
/// the answer, so a test reads it through this rather than once.
pub async fn pending_within(
    limit: Duration,
    metrics_port: u16,
    origins: &[&str],
    writes: usize,
) -> bool {
    wait_until(limit, || async {
        let metrics = get(&format!("http://127.0.0.1:{metrics_port}/metrics"))
            .await
            .body;
        origins.iter().all(|o| {
            metric_value(
                &metrics,
                &format!("hothot_replication_pending{{peer=\"{o}\"}}"),
            ) == Some(writes as f64)
        })
    })
    .await
}

/// Keys whose values are not the same on every origin.
pub fn differing<V: PartialEq + Clone>(states: &[BTreeMap<String, V>]) -> Vec<String> {
    let mut keys: Vec<String> = states.iter().flat_map(|s| s.keys().cloned()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| states.windows(2).any(|w| w[0].get(k) != w[1].get(k)))
        .collect()
}
