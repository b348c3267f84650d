//! Answers back to the client's instance (#25): the instance delivering a
//! write to an origin sends that origin's answer to the instance whose
//! client waits for it, directly at its `cluster.listen`, never through
//! etcd (a consensus write per answer would cost more than the write).
//!
//! The wire is a plain TCP stream of length-prefixed frames: first the
//! shared token (`cluster.token_file`, empty when there is none), then one
//! frame per answer ([`Forwarded`]). An answer that cannot be sent (the
//! client's instance is gone, the connection broke) is dropped: its client
//! gets another origin's answer or, at `timeouts.read`, 504; the write
//! itself is in the order and reaches every origin either way.

use crate::codec::{put_bytes, put_u32, Reader};
use crate::log_throttle::{suppressed_note, Throttle};
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// The largest frame accepted: an answer is kept whole in memory.
const MAX_FRAME: usize = 16 << 20;
/// Answers waiting for one instance's connection; more are dropped.
const QUEUE: usize = 16_384;
/// Between two attempts at connecting to an instance.
const RECONNECT: Duration = Duration::from_millis(100);
/// How long answers wait for an instance that cannot be reached.
const GIVE_UP: Duration = Duration::from_secs(1);

/// One origin's answer to a write another instance's client waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    /// The write's id in the order.
    pub id: String,
    /// The origin that answered.
    pub origin: String,
    /// Below 500 (applied), or failed (a 5xx, a broken connection).
    pub applied: bool,
    /// The answer as the origin sent it, when kept.
    pub raw: Option<Bytes>,
}

impl Forwarded {
    fn encode(&self, out: &mut Vec<u8>) {
        let mut body = Vec::with_capacity(64 + self.raw.as_ref().map_or(0, |r| r.len()));
        put_bytes(&mut body, self.id.as_bytes());
        put_bytes(&mut body, self.origin.as_bytes());
        body.push(u8::from(self.applied) | (u8::from(self.raw.is_some()) << 1));
        put_bytes(&mut body, self.raw.as_deref().unwrap_or_default());
        put_u32(out, u32::try_from(body.len()).unwrap_or(u32::MAX));
        out.extend_from_slice(&body);
    }

    fn decode(frame: &[u8]) -> Option<Self> {
        let mut reader = Reader::new(frame);
        let id = reader.string()?;
        let origin = reader.string()?;
        let flags = reader.u8()?;
        let raw = reader.bytes()?;
        Some(Forwarded {
            id,
            origin,
            applied: flags & 1 != 0,
            raw: (flags & 2 != 0).then(|| Bytes::copy_from_slice(raw)),
        })
    }
}

/// Refused connections and broken streams, logged (see [`crate::log_throttle`]).
static REFUSED: Throttle = Throttle::new();
static SEND_ERRORS: Throttle = Throttle::new();

/// Accepts the other instances' answers on `listener`, handing each to
/// `deliver`; runs until dropped.
pub async fn serve(
    listener: TcpListener,
    token: Option<String>,
    deliver: Arc<dyn Fn(Forwarded) + Send + Sync>,
) {
    let token = Arc::new(token.unwrap_or_default());
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(RECONNECT).await;
            continue;
        };
        let (token, deliver) = (token.clone(), deliver.clone());
        tokio::spawn(async move {
            if let Err(why) = receive(stream, &token, deliver.as_ref()).await {
                if let Some(suppressed) = REFUSED.admit() {
                    log::warn!(
                        "cluster: answers from {peer} refused: {why}{}",
                        suppressed_note(suppressed)
                    );
                }
            }
        });
    }
}

async fn receive(
    stream: TcpStream,
    token: &str,
    deliver: &(dyn Fn(Forwarded) + Send + Sync),
) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    let mut stream = tokio::io::BufReader::new(stream);
    let given = read_frame(&mut stream)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("closed before its token")?;
    if !bool::from(given.as_slice().ct_eq(token.as_bytes())) {
        return Err("wrong token (cluster.token_file differs between instances)".into());
    }
    while let Some(frame) = read_frame(&mut stream).await.map_err(|e| e.to_string())? {
        match Forwarded::decode(&frame) {
            Some(answer) => deliver(answer),
            None => return Err("a malformed frame".into()),
        }
    }
    Ok(())
}

/// The next frame, `None` at a clean end of stream.
async fn read_frame(stream: &mut (impl AsyncReadExt + Unpin)) -> std::io::Result<Option<Vec<u8>>> {
    let mut length = [0u8; 4];
    match stream.read_exact(&mut length).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let length = u32::from_le_bytes(length) as usize;
    if length > MAX_FRAME {
        return Err(std::io::Error::other(format!("a frame of {length} bytes")));
    }
    let mut frame = vec![0; length];
    stream.read_exact(&mut frame).await?;
    Ok(Some(frame))
}

/// Sends answers to the other instances, one connection each.
pub struct Forwarder {
    token: String,
    /// Where each live instance listens (from the registry).
    addresses: Arc<Mutex<BTreeMap<String, String>>>,
    queues: Mutex<HashMap<String, mpsc::Sender<Forwarded>>>,
    runtime: tokio::runtime::Handle,
}

impl Forwarder {
    /// Connections run on `runtime`.
    pub fn new(token: Option<String>, runtime: tokio::runtime::Handle) -> Self {
        Forwarder {
            token: token.unwrap_or_default(),
            addresses: Arc::default(),
            queues: Mutex::default(),
            runtime,
        }
    }

    /// The live instances and their `cluster.listen`.
    pub fn set_addresses(&self, addresses: BTreeMap<String, String>) {
        *self.addresses.lock().unwrap_or_else(|e| e.into_inner()) = addresses;
    }

    /// Queues `answer` for `instance`; false when it was dropped (the
    /// queue is full).
    pub fn send(&self, instance: &str, answer: Forwarded) -> bool {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        let queue = queues.entry(instance.to_owned()).or_insert_with(|| {
            let (queue, answers) = mpsc::channel(QUEUE);
            let connection = Connection {
                instance: instance.to_owned(),
                token: self.token.clone(),
                addresses: self.addresses.clone(),
            };
            self.runtime.spawn(connection.run(answers));
            queue
        });
        queue.try_send(answer).is_ok()
    }
}

/// The connection to one instance.
struct Connection {
    instance: String,
    token: String,
    addresses: Arc<Mutex<BTreeMap<String, String>>>,
}

impl Connection {
    async fn run(self, mut answers: mpsc::Receiver<Forwarded>) {
        let mut pending: Option<Forwarded> = None;
        let mut failing_since: Option<tokio::time::Instant> = None;
        loop {
            let address = (self.addresses.lock().unwrap_or_else(|e| e.into_inner()))
                .get(&self.instance)
                .cloned();
            let stream = match address {
                Some(address) => TcpStream::connect(&address)
                    .await
                    .map_err(|e| e.to_string()),
                None => Err("not among the live instances".into()),
            };
            let outcome = match stream {
                Ok(stream) => {
                    failing_since = None;
                    self.send_all(stream, &mut answers, &mut pending).await
                }
                Err(e) => Err(e),
            };
            match outcome {
                Ok(()) => return, // every sender is gone
                Err(why) => {
                    // An instance that just joined is not known yet: its
                    // answers wait a little. Past that, what waited is
                    // dropped: its clients fall back or time out.
                    let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() < GIVE_UP {
                        tokio::time::sleep(RECONNECT).await;
                        continue;
                    }
                    pending = None;
                    while answers.try_recv().is_ok() {}
                    if let Some(suppressed) = SEND_ERRORS.admit() {
                        log::warn!(
                            "cluster: cannot send answers to instance {}: {why}{}",
                            self.instance,
                            suppressed_note(suppressed)
                        );
                    }
                    tokio::time::sleep(RECONNECT).await;
                }
            }
        }
    }

    async fn send_all(
        &self,
        stream: TcpStream,
        answers: &mut mpsc::Receiver<Forwarded>,
        pending: &mut Option<Forwarded>,
    ) -> Result<(), String> {
        let _ = stream.set_nodelay(true);
        let mut stream = BufWriter::new(stream);
        let mut frames = Vec::new();
        put_u32(&mut frames, self.token.len() as u32);
        frames.extend_from_slice(self.token.as_bytes());
        loop {
            if let Some(answer) = pending.take() {
                answer.encode(&mut frames);
            }
            while let Ok(answer) = answers.try_recv() {
                answer.encode(&mut frames);
                if frames.len() > 1 << 20 {
                    break;
                }
            }
            if !frames.is_empty() {
                stream.write_all(&frames).await.map_err(|e| e.to_string())?;
                stream.flush().await.map_err(|e| e.to_string())?;
                frames.clear();
            }
            match answers.recv().await {
                Some(answer) => *pending = Some(answer),
                None => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_round_trips() {
        for raw in [
            None,
            Some(Bytes::from_static(b"HTTP/1.1 201 Created\r\n\r\n")),
        ] {
            let answer = Forwarded {
                id: "hh1:42".into(),
                origin: "b".into(),
                applied: true,
                raw,
            };
            let mut out = Vec::new();
            answer.encode(&mut out);
            assert_eq!(Forwarded::decode(&out[4..]), Some(answer));
        }
    }
}
