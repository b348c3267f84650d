//! Divergence is found, not assumed: for a sampled fraction of writes
//! (`replication.verify.sample`), the write's path is read back (`GET`) from
//! every origin, and the answers' statuses and body hashes are compared.
//!
//! The read is queued right behind its write in every origin's backlog, so
//! each origin answers it at the same place in the order (under `order: key`,
//! in the write's key): identical origins give identical answers even while
//! other writes keep arriving. Under `order: version` the primary applied the
//! write on its own, so its read can run ahead of the peers' and a mismatch
//! may be a write still on its way. Origins whose answers embed per-origin
//! data (a host name, a timestamp) show up here: the operator learns which
//! endpoints are not deterministic.

use super::pipeline;
use super::write::Write;
use crate::metrics::Metrics;
use crate::pool::Pool;
use bytes::Bytes;
use std::hash::{DefaultHasher, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Request headers the verify read copies from its write: the virtual host
/// and the credentials that let an origin answer it as it answered the write.
const COPIED_HEADERS: [&str; 3] = ["host", "authorization", "cookie"];

pub struct Verifier {
    /// Fraction of writes verified (an `f64`'s bits, a reload may change
    /// it); 0 turns verification off.
    sample: AtomicU64,
    pool: Arc<Pool>,
    metrics: Arc<Metrics>,
}

/// One sampled write's reads, as the origins answer them.
pub struct Sample {
    verifier: Arc<Verifier>,
    path: String,
    version: u64,
    primary: Option<usize>,
    /// Each origin's status and body hash, once it answered.
    answers: Mutex<Vec<Option<(u16, u64)>>>,
    remaining: AtomicUsize,
}

impl Verifier {
    pub fn new(sample: f64, pool: Arc<Pool>, metrics: Arc<Metrics>) -> Self {
        Verifier {
            sample: AtomicU64::new(sample.to_bits()),
            pool,
            metrics,
        }
    }

    /// A reload's `verify.sample`.
    pub fn set_sample(&self, sample: f64) {
        self.sample.store(sample.to_bits(), Ordering::Relaxed);
    }

    /// Is the write numbered `seq` verified? Exactly `sample` of all writes,
    /// evenly spread: no randomness to reason about.
    fn samples(&self, seq: u64) -> bool {
        let sample = f64::from_bits(self.sample.load(Ordering::Relaxed));
        let seq = seq as f64;
        sample > 0.0 && (seq * sample).floor() > ((seq - 1.0) * sample).floor()
    }

    /// The read that verifies `write`, if it is sampled; `origins` is how
    /// many origins it goes to (every origin in the pool).
    pub fn read_for(self: &Arc<Self>, write: &Write, origins: usize) -> Option<Arc<Write>> {
        if write.is_verify_read() || !self.samples(write.seq) {
            return None;
        }
        let (path, request) = read_request(write.head())?;
        let sample = Arc::new(Sample {
            verifier: self.clone(),
            path,
            version: write.version,
            primary: write.primary,
            answers: Mutex::new(vec![None; self.pool.len()]),
            remaining: AtomicUsize::new(origins),
        });
        Some(Arc::new(write.verify_read(request, sample)))
    }
}

/// The `GET` of the write's path (without its query) whose head is `head`.
fn read_request(head: &[u8]) -> Option<(String, Bytes)> {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut request = httparse::Request::new(&mut headers);
    request.parse(head).ok()?;
    let target = request.path?;
    let path = target.split('?').next().unwrap_or(target).to_owned();
    let mut wire = format!("GET {path} HTTP/1.1\r\n").into_bytes();
    for header in request.headers.iter() {
        if COPIED_HEADERS
            .iter()
            .any(|name| header.name.eq_ignore_ascii_case(name))
        {
            wire.extend_from_slice(header.name.as_bytes());
            wire.extend_from_slice(b": ");
            wire.extend_from_slice(header.value);
            wire.extend_from_slice(b"\r\n");
        }
    }
    wire.extend_from_slice(b"\r\n");
    Some((path, Bytes::from(wire)))
}

impl Sample {
    /// The origin at `index` answered the read (`raw`: the whole answer).
    pub fn record(&self, index: usize, status: u16, raw: Option<&Bytes>) {
        let body = raw
            .and_then(|raw| pipeline::decode(raw).ok())
            .map(|d| d.body);
        let mut hasher = DefaultHasher::new();
        hasher.write(body.as_deref().unwrap_or_default());
        {
            let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
            match answers.get_mut(index) {
                Some(slot @ None) => *slot = Some((status, hasher.finish())),
                _ => return, // answered already (a resend after a broken connection)
            }
        }
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.compare();
        }
    }

    /// Every origin answered: count and log the ones that differ from the
    /// most common answer (on a tie, the primary's).
    fn compare(&self) {
        // Only the origins the read went to answered it.
        let (indexes, answers): (Vec<usize>, Vec<(u16, u64)>) = self
            .answers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .enumerate()
            .filter_map(|(index, answer)| Some((index, (*answer)?)))
            .unzip();
        let verifier = &self.verifier;
        let replication = &verifier.metrics.replication;
        let count = |answer: &(u16, u64)| answers.iter().filter(|a| *a == answer).count();
        let primary_answer = self
            .primary
            .and_then(|p| indexes.iter().position(|i| *i == p))
            .and_then(|p| answers.get(p));
        let reference = answers
            .iter()
            .max_by_key(|a| (count(a), Some(*a) == primary_answer))
            .copied()
            .unwrap_or_default();
        if answers.iter().all(|a| *a == reference) {
            replication.verified_match.inc();
            return;
        }
        replication.verified_mismatch.inc();
        let mut listing = Vec::new();
        for (index, answer) in indexes.iter().copied().zip(&answers) {
            if *answer != reference {
                if let Some(peer) = replication.peers.get(index) {
                    peer.divergence.inc();
                }
            }
            let name = verifier.pool.origin(index).map_or("?", |o| o.name.as_str());
            listing.push(format!(
                "{name}: {} (body hash {:016x})",
                answer.0, answer.1
            ));
        }
        log::warn!(
            "verify: GET {} after write version {} differs between origins: {}",
            self.path,
            self.version,
            listing.join(", ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_read_copies_the_path_and_the_hosts_credentials() {
        let head = b"PUT /kv/a?x=1 HTTP/1.1\r\nhost: example.test\r\ncontent-type: text/plain\r\n\
Authorization: Bearer t\r\n\r\n";
        let (path, wire) = read_request(head).unwrap();
        assert_eq!(path, "/kv/a");
        assert_eq!(
            &wire[..],
            b"GET /kv/a HTTP/1.1\r\nhost: example.test\r\nAuthorization: Bearer t\r\n\r\n"
        );
    }

    #[test]
    fn sampling_is_an_exact_fraction() {
        let pool = Arc::new(
            Pool::new(
                &[],
                crate::config::PassiveConfig {
                    failures: 0,
                    eject: std::time::Duration::from_secs(1),
                },
            )
            .unwrap(),
        );
        let metrics = Arc::new(Metrics::new(&pool).unwrap());
        let verifier = Verifier::new(0.01, pool.clone(), metrics.clone());
        assert_eq!((1..=10_000).filter(|s| verifier.samples(*s)).count(), 100);
        let all = Verifier::new(1.0, pool.clone(), metrics.clone());
        assert!((1..=10).all(|s| all.samples(s)));
        let off = Verifier::new(0.0, pool, metrics);
        assert!(!(1..=10).any(|s| off.samples(s)));
    }
}
