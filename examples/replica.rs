//! A replica origin for demos and benchmarks: an in-memory key-value store over HTTP.
//!
//! `cargo run --example replica -- --name a --listen 127.0.0.1:9001`
//!
//! - `GET /kv/{key}`: the value, or 404.
//! - `PUT /kv/{key}` (body = value), `DELETE /kv/{key}`: applied last-writer-wins by
//!   `X-Hothot-Version` (a write older than what the key holds is acknowledged and
//!   ignored), deduplicated by `Idempotency-Key` (among the last 100,000 or more).
//! - `GET /health`: 200.
//! - anything else: 200 with the replica's name, for load tests.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

// The same allocator as hothot (the default `mimalloc` feature): a replica in a
// benchmark should not be slowed by glibc's malloc on its three requests per write.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: hothot::alloc::Allocator = hothot::alloc::Allocator;

/// Idempotency keys remembered per generation. Two generations are kept, so
/// a replayed copy is recognised among the last 100,000-200,000 writes (and
/// last-writer-wins makes an older duplicate harmless anyway). Sets of a fixed
/// size never rehash: one set growing forever stalled the replica for 100+ ms
/// each time it doubled.
const KEYS_PER_GENERATION: usize = 100_000;

struct Store {
    /// key -> (version, value; None once deleted)
    entries: HashMap<String, (u64, Option<Bytes>)>,
    applied_keys: HashSet<String>,
    previous_keys: HashSet<String>,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            entries: HashMap::new(),
            applied_keys: HashSet::with_capacity(KEYS_PER_GENERATION),
            previous_keys: HashSet::new(),
        }
    }
}

impl Store {
    /// Records `key`; false if it was already applied.
    fn first_time(&mut self, key: String) -> bool {
        if self.previous_keys.contains(&key) || self.applied_keys.contains(&key) {
            return false;
        }
        if self.applied_keys.len() == KEYS_PER_GENERATION {
            let fresh = HashSet::with_capacity(KEYS_PER_GENERATION);
            self.previous_keys = std::mem::replace(&mut self.applied_keys, fresh);
        }
        self.applied_keys.insert(key)
    }
}

struct Replica {
    name: String,
    store: Mutex<Store>,
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
}

fn header<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

async fn handle(
    req: Request<Incoming>,
    replica: Arc<Replica>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let path = req.uri().path();
    if path == "/health" {
        return Ok(text(StatusCode::OK, "ok"));
    }
    let Some(key) = path
        .strip_prefix("/kv/")
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
    else {
        return Ok(text(StatusCode::OK, replica.name.clone()));
    };
    let version: u64 = header(&req, "x-hothot-version")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let idempotency_key = header(&req, "idempotency-key").map(str::to_owned);
    let method = req.method().clone();
    let body = req.into_body().collect().await?.to_bytes();
    let mut store = replica.store.lock().unwrap_or_else(|e| e.into_inner());
    let write = match method {
        Method::GET | Method::HEAD => {
            return Ok(match store.entries.get(&key) {
                Some((_, Some(value))) => text(StatusCode::OK, value.clone()),
                _ => text(StatusCode::NOT_FOUND, "not found\n"),
            })
        }
        Method::PUT | Method::POST => Some(body),
        Method::DELETE => None,
        _ => {
            return Ok(text(
                StatusCode::METHOD_NOT_ALLOWED,
                "use GET, PUT or DELETE\n",
            ))
        }
    };
    if let Some(id) = idempotency_key {
        if !store.first_time(id) {
            return Ok(text(StatusCode::OK, "duplicate ignored\n"));
        }
    }
    let newer = store
        .entries
        .get(&key)
        .is_none_or(|(held, _)| version >= *held);
    if newer {
        store.entries.insert(key, (version, write));
    }
    Ok(text(
        StatusCode::OK,
        if newer {
            "applied\n"
        } else {
            "older version ignored\n"
        },
    ))
}

fn arg(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(name), Some(listen)) = (arg(&args, "--name"), arg(&args, "--listen")) else {
        eprintln!("usage: replica --name NAME --listen ADDRESS:PORT");
        std::process::exit(2);
    };
    let listener = match tokio::net::TcpListener::bind(&listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("replica {name}: cannot listen on {listen}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("replica {name} listening on {listen}");
    let replica = Arc::new(Replica {
        name,
        store: Mutex::default(),
    });
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let replica = replica.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(req, replica.clone()));
            let _ = http1::Builder::new()
                .pipeline_flush(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
