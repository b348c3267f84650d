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
use crate::pool::{OriginId, Pool};
use bytes::Bytes;
use std::hash::{DefaultHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

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

/// The read that verifies a write: `GET` of its path, in the write's place
/// in the order (its sequence and key).
pub struct VerifyRead {
    pub seq: u64,
    pub key: u64,
    pub accepted_at: Instant,
    /// The whole request, without a body.
    pub request: Bytes,
    pub sample: Arc<Sample>,
}

/// One sampled write's reads, as the origins answer them.
pub struct Sample {
    verifier: Arc<Verifier>,
    path: String,
    version: u64,
    primary: Option<OriginId>,
    answers: Mutex<Answers>,
}

#[derive(Default)]
struct Answers {
    /// Each origin's status and body hash, as it answered.
    given: Vec<(OriginId, (u16, u64))>,
    /// Origins that have neither answered nor left the pool.
    awaited: Vec<OriginId>,
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

    /// The read that verifies `write`, if it is sampled; it goes to
    /// `origins` (every origin in the pool), each of which answers it or
    /// has it withdrawn when it leaves the pool first.
    pub fn read_for(
        self: &Arc<Self>,
        write: &Write,
        origins: Vec<OriginId>,
    ) -> Option<Arc<VerifyRead>> {
        if !self.samples(write.seq) {
            return None;
        }
        let (path, request) = read_request(write.head())?;
        let sample = Arc::new(Sample {
            verifier: self.clone(),
            path,
            version: write.version,
            primary: write.primary,
            answers: Mutex::new(Answers {
                given: Vec::with_capacity(origins.len()),
                awaited: origins,
            }),
        });
        Some(Arc::new(VerifyRead {
            seq: write.seq,
            key: write.key,
            accepted_at: write.accepted_at,
            request,
            sample,
        }))
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
    /// `origin` answered the read (`raw`: the whole answer).
    pub fn record(&self, origin: OriginId, status: u16, raw: Option<&Bytes>) {
        let body = raw
            .and_then(|raw| pipeline::decode(raw).ok())
            .map(|d| d.body);
        let mut hasher = DefaultHasher::new();
        hasher.write(body.as_deref().unwrap_or_default());
        self.settle(origin, Some((status, hasher.finish())));
    }

    /// `origin` left the pool before it answered: the sample is compared
    /// without it (it would otherwise wait for that answer for ever, and
    /// its counters would silently miss it).
    pub fn withdraw(&self, origin: OriginId) {
        self.settle(origin, None);
    }

    fn settle(&self, origin: OriginId, answer: Option<(u16, u64)>) {
        let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        let Some(at) = answers.awaited.iter().position(|o| *o == origin) else {
            return; // answered already (a resend after a broken connection)
        };
        answers.awaited.swap_remove(at);
        if let Some(answer) = answer {
            answers.given.push((origin, answer));
        }
        if answers.awaited.is_empty() {
            let given = std::mem::take(&mut answers.given);
            drop(answers);
            self.compare(given);
        }
    }

    /// Every origin answered (or left): count and log the ones that differ
    /// from the most common answer (on a tie, the primary's).
    fn compare(&self, given: Vec<(OriginId, (u16, u64))>) {
        if given.is_empty() {
            return; // every origin left before answering: nothing to compare
        }
        let verifier = &self.verifier;
        let replication = &verifier.metrics.replication;
        let count = |answer: &(u16, u64)| given.iter().filter(|(_, a)| a == answer).count();
        let primary_answer = given
            .iter()
            .find(|(origin, _)| Some(*origin) == self.primary)
            .map(|(_, a)| a);
        let reference = given
            .iter()
            .map(|(_, a)| a)
            .max_by_key(|a| (count(a), Some(*a) == primary_answer))
            .copied()
            .unwrap_or_default();
        if given.iter().all(|(_, a)| *a == reference) {
            replication.verified_match.inc();
            return;
        }
        replication.verified_mismatch.inc();
        let mut listing = Vec::new();
        for (origin, answer) in &given {
            let known = verifier.pool.get(*origin);
            if *answer != reference {
                if let Some(known) = known {
                    known.metrics.replication.divergence.inc();
                }
            }
            let name = known.map_or("?", |o| o.name.as_str());
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
        let (pool, metrics) = crate::replication::testing::empty_pool();
        let verifier = Verifier::new(0.01, pool.clone(), metrics.clone());
        assert_eq!((1..=10_000).filter(|s| verifier.samples(*s)).count(), 100);
        let all = Verifier::new(1.0, pool.clone(), metrics.clone());
        assert!((1..=10).all(|s| all.samples(s)));
        let off = Verifier::new(0.0, pool, metrics);
        assert!(!(1..=10).any(|s| off.samples(s)));
    }
}
