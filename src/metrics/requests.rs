//! `hothot_requests_total{origin,method,code}` without a label lookup per request.
//!
//! Method and status vary per request, so their handles cannot all be made at
//! start-up without exporting thousands of zero series. Instead each
//! (method, status) slot is resolved the first time it is seen and kept in a
//! `OnceLock`, which afterwards costs one atomic load.

use prometheus::{IntCounter, IntCounterVec};
use std::sync::OnceLock;

/// Methods with a label of their own; anything else is counted as `OTHER` so
/// that clients cannot grow the series count without bound.
const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
];
const OTHER: usize = METHODS.len();
const FIRST_STATUS: u16 = 100;
const STATUS_SLOTS: usize = 500; // 100..=599

pub struct RequestCounters {
    family: IntCounterVec,
    origin: String,
    slots: Box<[OnceLock<IntCounter>]>,
}

impl RequestCounters {
    pub fn new(family: &IntCounterVec, origin: &str) -> Self {
        RequestCounters {
            family: family.clone(),
            origin: origin.to_owned(),
            slots: (0..(METHODS.len() + 1) * STATUS_SLOTS)
                .map(|_| OnceLock::new())
                .collect(),
        }
    }

    /// Counts one request answered with `status`.
    pub fn inc(&self, method: &str, status: u16) {
        let method_index = METHODS.iter().position(|m| *m == method).unwrap_or(OTHER);
        let status = status.clamp(FIRST_STATUS, FIRST_STATUS + STATUS_SLOTS as u16 - 1);
        let slot = method_index * STATUS_SLOTS + usize::from(status - FIRST_STATUS);
        let counter = self.slots[slot].get_or_init(|| {
            let method_label = METHODS.get(method_index).copied().unwrap_or("OTHER");
            self.family.with_label_values(&[
                self.origin.as_str(),
                method_label,
                &status.to_string(),
            ])
        });
        counter.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
}
