//! A real HTTP origin for tests: hyper on 127.0.0.1, an ephemeral port,
//! stoppable and restartable on the same port.
//!
//! Its `/kv/{key}` store applies writes last-writer-wins by
//! `X-Hothot-Version` ([`TestOrigin::start`]), or, like an ordinary backend,
//! in arrival order with no version logic and no deduplication
//! ([`TestOrigin::start_plain`]).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::TcpSocket;
use tokio::task::JoinSet;

/// A request as the origin received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path_and_query: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    /// When the request arrived.
    pub at: std::time::Instant,
}

pub struct Shared {
    pub name: String,
    /// Status of `/health`.
    pub health_status: AtomicU16,
    /// Status of every other request.
    pub status: AtomicU16,
    /// Status of replicated copies (requests with `X-Hothot-Replicated-From`), if set.
    pub copy_status: AtomicU16,
    /// Requests other than `/health`.
    pub served: AtomicUsize,
    /// TCP connections accepted (to see keep-alive reuse).
    pub connections: AtomicUsize,
    pub seen: Mutex<Vec<Seen>>,
    /// `/kv/{key}`: (version, value), applied last-writer-wins by `X-Hothot-Version`
    /// (or in arrival order when `plain`).
    pub kv: Mutex<std::collections::HashMap<String, (u64, Bytes)>>,
    /// Apply writes in arrival order: PUT/POST/PATCH store, DELETE removes
    /// (404 if absent); no version logic, no deduplication.
    pub plain: bool,
    /// Append the origin's name to every `/kv` read (answers that differ per origin).
    pub name_in_reads: AtomicBool,
    /// Apply a write only once per `Idempotency-Key` (answer 200 to repeats).
    pub dedupe: AtomicBool,
    pub applied_keys: Mutex<std::collections::HashSet<String>>,
    /// Requests whose path starts with this get this status instead (0:
    /// the connection closes unanswered; 1: no answer ever).
    pub fail_path: Mutex<Option<(String, u16)>>,
    /// Writes applied (2xx), in arrival order: (method, path, body).
    pub applied: Mutex<Vec<(String, String, Bytes)>>,
    /// Milliseconds added before every answer but `/health`'s.
    pub delay_ms: AtomicU64,
    /// Thousandths of requests answered 500, spread evenly (never two in a
    /// row below one half).
    pub error_per_mille: AtomicU64,
}

pub struct TestOrigin {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    tasks: Option<JoinSet<()>>,
}

impl TestOrigin {
    pub async fn start(name: &str) -> TestOrigin {
        Self::start_with(name, false).await
    }

    /// An origin that applies writes in arrival order, like an ordinary backend.
    pub async fn start_plain(name: &str) -> TestOrigin {
        Self::start_with(name, true).await
    }

    async fn start_with(name: &str, plain: bool) -> TestOrigin {
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            health_status: AtomicU16::new(200),
            status: AtomicU16::new(200),
            copy_status: AtomicU16::new(0),
            served: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
            kv: Mutex::default(),
            plain,
            name_in_reads: AtomicBool::new(false),
            dedupe: AtomicBool::new(false),
            applied_keys: Mutex::default(),
            fail_path: Mutex::new(None),
            applied: Mutex::default(),
            delay_ms: AtomicU64::new(0),
            error_per_mille: AtomicU64::new(0),
        });
        let addr = "127.0.0.1:0".parse().unwrap();
        let (addr, tasks) = serve(addr, shared.clone()).await;
        TestOrigin {
            addr,
            shared,
            tasks: Some(tasks),
        }
    }

    pub fn served(&self) -> usize {
        self.shared.served.load(Ordering::SeqCst)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// The value this origin holds for `/kv/{key}`.
    pub fn value(&self, key: &str) -> Option<String> {
        let kv = self.shared.kv.lock().unwrap();
        kv.get(key)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    /// Requests that arrived as replicated copies, in arrival order.
    pub fn copies(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.headers.contains_key("x-hothot-replicated-from"))
            .collect()
    }

    /// Replaces this origin's data with `donor`'s (what an operator's copy
    /// does in a resync), the writes it applied included.
    pub fn copy_from(&self, donor: &TestOrigin) {
        let (kv, applied) = (donor.shared.kv.lock().unwrap().clone(), donor.applied());
        *self.shared.kv.lock().unwrap() = kv;
        *self.shared.applied.lock().unwrap() = applied;
    }

    /// Every `/kv` key and its value.
    pub fn state(&self) -> std::collections::BTreeMap<String, Bytes> {
        let kv = self.shared.kv.lock().unwrap();
        kv.iter()
            .map(|(k, (_, v))| (k.clone(), v.clone()))
            .collect()
    }

    /// Writes applied, in arrival order.
    pub fn applied(&self) -> Vec<(String, String, Bytes)> {
        self.shared.applied.lock().unwrap().clone()
    }

    /// Answer requests whose path starts with `prefix` with `status`; status
    /// 0 closes the connection without an answer, 1 never answers (None:
    /// stop).
    pub fn fail_path(&self, rule: Option<(&str, u16)>) {
        *self.shared.fail_path.lock().unwrap() = rule.map(|(p, s)| (p.to_owned(), s));
    }

    pub fn set_health(&self, status: u16) {
        self.shared.health_status.store(status, Ordering::SeqCst);
    }

    /// Answer replicated copies with `status` (0: like every other request).
    pub fn set_copy_status(&self, status: u16) {
        self.shared.copy_status.store(status, Ordering::SeqCst);
    }

    /// Answer every request (but `/health`) this much later.
    pub fn set_delay(&self, delay: std::time::Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap();
        self.shared.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Answer this fraction of requests 500, spread evenly.
    pub fn set_error_ratio(&self, ratio: f64) {
        let per_mille = (ratio * 1000.0).round() as u64;
        self.shared
            .error_per_mille
            .store(per_mille, Ordering::SeqCst);
    }

    /// Arrival times of requests other than `/health`.
    pub fn arrivals(&self) -> Vec<std::time::Instant> {
        self.shared
            .seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.at)
            .collect()
    }

    pub fn set_status(&self, status: u16) {
        self.shared.status.store(status, Ordering::SeqCst);
    }

    /// Closes the listener and every open connection: the origin is dead.
    pub fn stop(&mut self) {
        if let Some(mut tasks) = self.tasks.take() {
            tasks.abort_all();
        }
    }

    /// Serves again on the same port.
    pub async fn restart(&mut self) {
        self.stop();
        // An aborted task drops its listener when the runtime next gets to
        // it: on a loaded machine that can be after any fixed pause, and the
        // port is in use until then.
        for _ in 0..250 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            if let Ok(listener) = listen(self.addr) {
                self.tasks = Some(serve_on(listener, self.shared.clone()));
                return;
            }
        }
        panic!(
            "port {} is still in use 5 s after the origin stopped",
            self.addr
        );
    }
}

impl Drop for TestOrigin {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve(addr: SocketAddr, shared: Arc<Shared>) -> (SocketAddr, JoinSet<()>) {
    let listener = listen(addr).unwrap();
    let addr = listener.local_addr().unwrap();
    (addr, serve_on(listener, shared))
}

fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

fn serve_on(listener: tokio::net::TcpListener, shared: Arc<Shared>) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    tasks.spawn(async move {
        // Owned by this task: aborting it drops the set, which aborts every connection.
        let mut connections = JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            shared.connections.fetch_add(1, Ordering::SeqCst);
            let shared = shared.clone();
            connections.spawn(async move {
                let service = service_fn(move |req| handle(req, shared.clone()));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    tasks
}

/// What makes the origin close a connection without answering.
type Fault = Box<dyn std::error::Error + Send + Sync>;

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, Fault> {
    if req.uri().path() == "/health" {
        let status = shared.health_status.load(Ordering::SeqCst);
        return Ok(Response::builder()
            .status(status)
            .body(Full::new(Bytes::from_static(b"ok")))
            .unwrap());
    }
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let headers = req.headers().clone();
    let at = std::time::Instant::now();
    let body = req.into_body().collect().await?.to_bytes();
    shared.seen.lock().unwrap().push(Seen {
        method: method.clone(),
        path_and_query,
        headers: headers.clone(),
        body: body.clone(),
        at,
    });
    let served = shared.served.fetch_add(1, Ordering::SeqCst) as u64;
    let delay = shared.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    let per_mille = shared.error_per_mille.load(Ordering::SeqCst);
    // The n-th request fails when the count of failures due by n+1 grows.
    let injected_error = (served + 1) * per_mille / 1000 > served * per_mille / 1000;
    let copy_status = shared.copy_status.load(Ordering::SeqCst);
    let failing = shared
        .fail_path
        .lock()
        .unwrap()
        .as_ref()
        .filter(|(prefix, _)| path.starts_with(prefix.as_str()))
        .map(|(_, status)| *status);
    let status = if let Some(status) = failing {
        match status {
            0 => return Err("fail_path with status 0: the connection closes unanswered".into()),
            1 => std::future::pending::<()>().await,
            _ => {}
        }
        status
    } else if injected_error {
        500
    } else if copy_status != 0 && headers.contains_key("x-hothot-replicated-from") {
        copy_status
    } else {
        shared.status.load(Ordering::SeqCst)
    };
    let mut answer = Bytes::from(shared.name.clone());
    let mut status = status;
    if let (Some(key), true) = (path.strip_prefix("/kv/"), (200..300).contains(&status)) {
        let mut kv = shared.kv.lock().unwrap();
        if method == "GET" {
            let value = kv.get(key).map(|(_, v)| v.clone());
            drop(kv);
            let (status, mut body) = value.map_or((404, Bytes::new()), |v| (200, v));
            if shared.name_in_reads.load(Ordering::SeqCst) {
                body = Bytes::from([&body[..], b" from ", shared.name.as_bytes()].concat());
            }
            return Ok(Response::builder()
                .status(status)
                .header("x-origin", shared.name.as_str())
                .body(Full::new(body))
                .unwrap());
        }
        let version: u64 = headers
            .get("x-hothot-version")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let is_write = matches!(method.as_str(), "PUT" | "POST" | "PATCH" | "DELETE");
        if is_write && shared.dedupe.load(Ordering::SeqCst) {
            let idempotency_key = headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            if !shared.applied_keys.lock().unwrap().insert(idempotency_key) {
                return Ok(Response::builder()
                    .status(200)
                    .body(Full::new(Bytes::from_static(b"duplicate")))
                    .unwrap());
            }
        }
        let newer = shared.plain || kv.get(key).is_none_or(|(held, _)| version >= *held);
        match (is_write, newer, method.as_str()) {
            (true, true, "DELETE") if shared.plain => {
                if kv.remove(key).is_none() {
                    status = 404;
                }
            }
            (true, true, _) => {
                kv.insert(key.to_owned(), (version, body.clone()));
            }
            (true, false, _) => answer = Bytes::from_static(b"older version ignored"),
            (false, _, _) => {}
        }
        if is_write && (200..300).contains(&status) {
            let mut applied = shared.applied.lock().unwrap();
            applied.push((method.clone(), path.clone(), body.clone()));
        }
    }
    Ok(Response::builder()
        .status(status)
        .header("x-origin", shared.name.as_str())
        .header("keep-alive", "timeout=30")
        .body(Full::new(answer))
        .unwrap())
}
