//! `hothot_requests_total{origin,method,code}` without a label lookup per
//! request, and `hothot_responses_total{origin,kind,class}` with every
//! series made at start-up.
//!
//! Method and status vary per request, so their handles cannot all be made at
//! start-up without exporting thousands of zero series. Instead each
//! (method, status) pair is resolved the first time it is seen and kept in a
//! small open-addressed table of `OnceLock`s, which afterwards costs one
//! atomic load. The table has room for far more pairs than one origin
//! answers; a pair that finds it full is counted through a label lookup.

use crate::classify::Class;
use prometheus::{IntCounter, IntCounterVec};
use std::sync::OnceLock;

/// Methods with a label of their own; anything else is counted as `OTHER` so
/// that clients cannot grow the series count without bound.
const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
];
const OTHER: usize = METHODS.len();
const FIRST_STATUS: u16 = 100;
const LAST_STATUS: u16 = 599;
/// (method, status) pairs kept per origin. A slot for every possible pair
/// (10 × 500) took 80 KB per origin, 80 MB with 1,000 origins; 64 take
/// 1.5 KB.
const SLOTS: usize = 64;

pub struct RequestCounters {
    family: IntCounterVec,
    origin: String,
    /// Open addressing: a pair's key hashes to a first slot, and it takes
    /// the first slot from there that is empty or already its own.
    slots: Box<[OnceLock<(u16, IntCounter)>]>,
}

impl RequestCounters {
    pub fn new(family: &IntCounterVec, origin: &str) -> Self {
        RequestCounters {
            family: family.clone(),
            origin: origin.to_owned(),
            slots: (0..SLOTS).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Counts one request answered with `status`.
    pub fn inc(&self, method: &str, status: u16) {
        let method = METHODS.iter().position(|m| *m == method).unwrap_or(OTHER);
        let status = status.clamp(FIRST_STATUS, LAST_STATUS);
        // At most 10 × 500 keys: fits a u16.
        let key = (method as u16) * (LAST_STATUS - FIRST_STATUS + 1) + (status - FIRST_STATUS);
        // Fibonacci hashing spreads neighbouring statuses over the table.
        let first = (usize::from(key).wrapping_mul(0x9E37_79B9) >> 8) % SLOTS;
        for probe in 0..SLOTS {
            let (owner, counter) = self.slots[(first + probe) % SLOTS]
                .get_or_init(|| (key, self.resolve(method, status)));
            if *owner == key {
                counter.inc();
                return;
            }
        }
        self.resolve(method, status).inc();
    }

    /// The series of `method` (an index into [`METHODS`]) and `status`.
    fn resolve(&self, method: usize, status: u16) -> IntCounter {
        let method_label = METHODS.get(method).copied().unwrap_or("OTHER");
        self.family
            .with_label_values(&[self.origin.as_str(), method_label, &status.to_string()])
    }
}

/// What a request was, as [`crate::classify`] decided: `read`, `write`
/// (a write, replicated or not, or a trusted copy of one) or `primary` (a
/// route's request for one origin only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Read,
    Write,
    Primary,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Read, Kind::Write, Kind::Primary];

    pub fn of(class: Class) -> Kind {
        match class {
            Class::Read => Kind::Read,
            Class::Write | Class::TrustedCopy => Kind::Write,
            Class::Primary => Kind::Primary,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Kind::Read => "read",
            Kind::Write => "write",
            Kind::Primary => "primary",
        }
    }
}

/// `class` label values: the status class, or `none` for a client that
/// left before any answer.
pub const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];

/// `hothot_responses_total{origin,kind,class}` of one origin: every
/// combination exists from start-up, at 0, so that `rate()` and
/// `increase()` see the first of each.
pub struct ResponseCounters {
    by_kind: [[IntCounter; CLASSES.len()]; Kind::ALL.len()],
}

impl ResponseCounters {
    pub fn new(family: &IntCounterVec, origin: &str) -> Self {
        let counters = |kind: Kind| {
            CLASSES.map(|class| family.with_label_values(&[origin, kind.label(), class]))
        };
        ResponseCounters {
            by_kind: Kind::ALL.map(counters),
        }
    }

    /// Counts one answer with `status` (`None`: the client left first).
    pub fn inc(&self, kind: Kind, status: Option<u16>) {
        let class = match status {
            Some(status @ 100..=599) => usize::from(status / 100 - 1),
            _ => CLASSES.len() - 1,
        };
        self.by_kind[kind as usize][class].inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::core::Collector;
    use prometheus::Opts;

    #[test]
    fn counts_by_method_and_status_and_folds_unknown_methods() {
        let family =
            IntCounterVec::new(Opts::new("t", "t"), &["origin", "method", "code"]).unwrap();
        let counters = RequestCounters::new(&family, "a");
        counters.inc("GET", 200);
        counters.inc("GET", 200);
        counters.inc("BREW", 418);
        assert_eq!(family.with_label_values(&["a", "GET", "200"]).get(), 2);
        assert_eq!(family.with_label_values(&["a", "OTHER", "418"]).get(), 1);
    }

    #[test]
    fn more_pairs_than_slots_are_all_counted() {
        let family =
            IntCounterVec::new(Opts::new("t", "t"), &["origin", "method", "code"]).unwrap();
        let counters = RequestCounters::new(&family, "a");
        for round in 0..3 {
            for status in 100..=599 {
                counters.inc("GET", status);
                if round == 0 {
                    counters.inc("PUT", status);
                }
            }
        }
        counters.inc("GET", 700); // clamped to 599
        assert_eq!(family.with_label_values(&["a", "GET", "200"]).get(), 3);
        assert_eq!(family.with_label_values(&["a", "GET", "599"]).get(), 4);
        assert_eq!(family.with_label_values(&["a", "PUT", "503"]).get(), 1);
        assert_eq!(family.collect()[0].get_metric().len(), 1000);
    }

    #[test]
    fn every_response_class_exists_at_zero_and_counts_by_kind() {
        let family = IntCounterVec::new(Opts::new("r", "r"), &["origin", "kind", "class"]).unwrap();
        let counters = ResponseCounters::new(&family, "a");
        assert_eq!(family.collect()[0].get_metric().len(), 18);
        counters.inc(Kind::of(Class::Read), Some(504));
        counters.inc(Kind::of(Class::Primary), Some(200));
        counters.inc(Kind::of(Class::Write), Some(201));
        counters.inc(Kind::Read, None);
        assert_eq!(family.with_label_values(&["a", "read", "5xx"]).get(), 1);
        assert_eq!(family.with_label_values(&["a", "write", "2xx"]).get(), 1);
        assert_eq!(family.with_label_values(&["a", "read", "none"]).get(), 1);
        assert_eq!(family.with_label_values(&["a", "write", "5xx"]).get(), 0);
        assert_eq!(family.with_label_values(&["a", "primary", "2xx"]).get(), 1);
    }
}
