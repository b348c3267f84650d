//! Reloading a hothot process: clients that hold their connections
//! through reloads, SIGHUP and its outcome, and rewriting the config file.

use super::process::ProxyProcess;
use super::{metric_value, wait_until};
use bytes::Bytes;
use http_body_util::Full;
use std::time::Duration;

/// Clients that each keep one keep-alive connection for their whole run;
/// any error, a closed connection included, is recorded.
pub struct SteadyClients {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<(Vec<String>, Vec<String>)>>,
}

impl SteadyClients {
    pub fn start(port: u16, clients: usize) -> SteadyClients {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|_| {
                let stop = stop.clone();
                tokio::spawn(async move {
                    let (mut origins, mut errors) = (Vec::new(), Vec::new());
                    let mut sender = connect(port).await.unwrap();
                    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                        match steady_get(&mut sender).await {
                            Ok((origin, _)) => origins.push(origin),
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

    pub async fn stop(self) -> (Vec<String>, Vec<String>) {
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

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// A keep-alive connection to hothot at `port`.
async fn connect(port: u16) -> Result<Sender, String> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(connection);
    Ok(sender)
}

/// `GET /steady`: the answering origin's name, and whether the answer
/// closes the connection (`Connection: close`); any failure, a status
/// other than 200 included, is an error.
async fn steady_get(sender: &mut Sender) -> Result<(String, bool), String> {
    let request = http::Request::get("/steady")
        .header("host", "hothot")
        .body(Full::<Bytes>::default())
        .unwrap();
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("{e}"))?;
    let status = response.status();
    let closes = response
        .headers()
        .get(http::header::CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    let body = http_body_util::BodyExt::collect(response.into_body()).await;
    match (status.as_u16(), body) {
        (200, Ok(body)) => Ok((
            String::from_utf8_lossy(&body.to_bytes()).into_owned(),
            closes,
        )),
        (status, _) => Err(format!("status {status}")),
    }
}

/// Clients that send requests on keep-alive connections, `pause` apart,
/// each connection replaced by a new one when an answer says `Connection:
/// close` (as wrk and browsers do); every request that fails (refused,
/// reset, cut off, not 200) is an error.
pub struct ReconnectingClients {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<(usize, Vec<String>, usize)>>,
}

impl ReconnectingClients {
    pub fn start(port: u16, clients: usize, pause: Duration) -> ReconnectingClients {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|_| {
                let stop = stop.clone();
                tokio::spawn(async move {
                    let (mut answers, mut errors, mut connections) = (0, Vec::new(), 0);
                    'connection: while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                        let mut sender = match connect(port).await {
                            Ok(sender) => sender,
                            Err(e) => {
                                errors.push(e);
                                tokio::time::sleep(Duration::from_millis(10)).await;
                                continue;
                            }
                        };
                        connections += 1;
                        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                            match steady_get(&mut sender).await {
                                Ok((_, closes)) => {
                                    answers += 1;
                                    tokio::time::sleep(pause).await;
                                    if closes {
                                        continue 'connection;
                                    }
                                }
                                Err(e) => {
                                    errors.push(e);
                                    continue 'connection;
                                }
                            }
                        }
                    }
                    (answers, errors, connections)
                })
            })
            .collect();
        ReconnectingClients { stop, tasks }
    }

    /// Answers, errors, and connections opened.
    pub async fn stop(self) -> (usize, Vec<String>, usize) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let (mut answers, mut errors, mut connections) = (0, Vec::new(), 0);
        for task in self.tasks {
            let (a, e, c) = task.await.unwrap();
            answers += a;
            errors.extend(e);
            connections += c;
        }
        (answers, errors, connections)
    }
}

/// Sends SIGHUP and waits until `hothot_config_reloads_total{result}` is `count`.
pub async fn hup_until(hothot: &ProxyProcess, result: &str, count: f64) {
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
pub async fn refused_reload(hothot: &ProxyProcess, failures: f64, why: &str) {
    hup_until(hothot, "failure", failures).await;
    assert!(hothot.log().contains(why), "{}", hothot.log());
}

/// The process's `hothot_config_reloads_total{result}`.
pub async fn reloads(hothot: &ProxyProcess, result: &str) -> f64 {
    let series = format!("hothot_config_reloads_total{{result=\"{result}\"}}");
    metric_value(&hothot.metrics().await, &series).unwrap_or(-1.0)
}

/// Rewrites the config at `path` with a new body: the harness wrote
/// server/listen/metrics first; they stay, the rest is swapped.
pub fn rewriter(path: &std::path::Path) -> impl Fn(String) {
    let config = std::fs::read_to_string(path).unwrap();
    let keep: String = config
        .lines()
        .take_while(|l| !l.starts_with("origins:"))
        .map(|l| format!("{l}\n"))
        .collect();
    let path = path.to_owned();
    move |body: String| std::fs::write(&path, format!("{keep}{body}")).unwrap()
}
