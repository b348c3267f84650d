//! The shared test harness: real origins, a real proxy, a real HTTP client.
#![allow(dead_code)]

pub mod etcd;
pub mod nginx;
pub mod origin;
pub mod process;
pub mod prometheus;
pub mod reload;
pub mod tls;
pub mod workload;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[allow(unused_imports)] // not every test binary starts in-process origins
pub use origin::TestOrigin;

/// Health settings fast enough for tests: probes every 100ms.
pub const FAST_HEALTH: &str = "health:
  kind: http
  path: /health
  interval: 100ms
  timeout: 200ms
  rise: 2
  fall: 2
  passive: {failures: 3, eject: 1s}
";

/// Probes at start-up only, no passive ejection, no slow start: the pool
/// changes only when the test says so.
pub const STEADY: &str = "health: {interval: 1m, timeout: 500ms, passive: {failures: 0}}\n\
                          balancing: {slow_start: 0s}\n";

/// Probes every 100ms with passive ejection off, so that the pool only changes
/// when a test says so; fast replication retries; then `replication` (indented
/// keys of the `replication:` section).
pub fn replication_settings(replication: &str) -> String {
    format!(
        "health: {{interval: 100ms, timeout: 100ms, passive: {{failures: 0}}}}\n\
         replication:\n  retry: {{initial: 20ms, max: 200ms}}\n{replication}"
    )
}

/// A bare TCP server on 127.0.0.1 (for origins that misbehave below HTTP):
/// every accepted connection is handed to `serve` on a task of its own.
pub async fn raw_server<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            if let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream));
            }
        }
    });
    addr
}

/// An ephemeral port that was free a moment ago (Pingora binds by address,
/// so the proxy cannot be handed port 0 and report back).
///
/// Never the same port twice in one test process: tests run in parallel,
/// and Pingora binds with `SO_REUSEPORT`, so two proxies handed the same
/// port would both listen on it and share its connections (a PUT then
/// reached another proxy's metrics listener and got 405).
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut handed_out = HANDED_OUT.lock().unwrap();
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
}

/// Two different free ports (the proxy's and its metrics listener's): two
/// calls of [`free_port`] may hand out the same port, which hothot refuses.
pub fn two_free_ports() -> (u16, u16) {
    let [first, second] = free_ports();
    (first, second)
}

/// `N` different free ports.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let mut ports = [0; N];
    for i in 0..N {
        ports[i] = std::iter::repeat_with(free_port)
            .find(|p| !ports[..i].contains(p))
            .unwrap();
    }
    ports
}

pub struct Proxy {
    pub port: u16,
    pub metrics_port: u16,
    pub running: hothot::RunningProxy,
    pub journal: std::path::PathBuf,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.journal);
    }
}

/// A fresh directory under the system's temp dir, unique to this process and call.
pub fn temp_dir(label: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("hothot-test-{label}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

impl Proxy {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub async fn metrics(&self) -> String {
        get(&format!("http://127.0.0.1:{}/metrics", self.metrics_port))
            .await
            .body
    }
}

/// The YAML of a proxy in front of `origins` (name, address, capacity) with `extra` appended.
pub fn config_yaml(
    port: u16,
    metrics_port: u16,
    origins: &[(&str, SocketAddr, u32)],
    extra: &str,
) -> String {
    let mut yaml = format!(
        "server: {{threads: 2}}\nlisten: [\"127.0.0.1:{port}\"]\nmetrics: {{listen: \"127.0.0.1:{metrics_port}\"}}\norigins:\n"
    );
    for (name, addr, capacity) in origins {
        yaml.push_str(&format!(
            "  - {{name: {name}, address: \"{addr}\", capacity: {capacity}}}\n"
        ));
    }
    yaml.push_str(extra);
    yaml
}

/// Starts hothot in-process and waits until it accepts connections.
pub async fn start_proxy(origins: &[(&str, SocketAddr, u32)], extra: &str) -> Proxy {
    start_proxy_on(two_free_ports(), origins, extra).await
}

/// [`start_proxy`] on the given proxy and metrics ports.
pub async fn start_proxy_on(
    (port, metrics_port): (u16, u16),
    origins: &[(&str, SocketAddr, u32)],
    extra: &str,
) -> Proxy {
    let mut config = hothot::config::parse(&config_yaml(port, metrics_port, origins, extra))
        .expect("valid config");
    // Every in-process proxy gets a journal of its own.
    let journal = temp_dir("journal");
    config.replication.journal.dir = journal.clone();
    let running = hothot::spawn(&config).expect("proxy starts");
    wait_for_port(port).await;
    wait_for_port(metrics_port).await;
    Proxy {
        port,
        metrics_port,
        running,
        journal,
    }
}

pub async fn wait_for_port(port: u16) {
    let open = wait_until(Duration::from_secs(10), || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
    assert!(open, "nothing listens on port {port}");
}

/// Polls `check` every 20ms until it holds or `limit` passes; returns whether it held.
pub async fn wait_until<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

pub async fn send(request: http::Request<Full<Bytes>>) -> Answer {
    try_send(request).await.expect("request completes")
}

pub async fn try_send(request: http::Request<Full<Bytes>>) -> Result<Answer, String> {
    let response = client()
        .request(request)
        .await
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{e:?}"))?
        .to_bytes();
    Ok(Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

pub async fn put(url: &str, body: &str) -> Answer {
    send(
        http::Request::put(url)
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap(),
    )
    .await
}

pub async fn get(url: &str) -> Answer {
    send(http::Request::get(url).body(Full::default()).unwrap()).await
}

/// The value of one series in Prometheus text, e.g. `hothot_origin_up{origin="a"}`.
pub fn metric_value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
        .and_then(|line| line[series.len()..].trim().parse().ok())
}

/// Sends a chunked PUT by hand (no Content-Length) and returns the status.
pub async fn chunked_put(port: u16, path: &str, chunks: &[&[u8]]) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let head = format!("PUT {path} HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    // The proxy may answer (413) and close before the last chunk: keep going quietly.
    for chunk in chunks {
        let _ = stream
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await;
        let _ = stream.write_all(chunk).await;
        let _ = stream.write_all(b"\r\n").await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response);
    text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}
