//! Which writes must reach an origin in sequence order relative to each
//! other: those with the same key.
//!
//! Under `order: total` (and `version`, whose copies also follow one
//! sequence) every write has the same key. Under `order: key` the key is the
//! request path without the query, or the value of a configured header
//! (writes without that header share one key). Keys are hashed: two keys that
//! collide are simply kept in order together, which is never wrong.

use crate::config::{Order, OrderKey};
use std::hash::{DefaultHasher, Hash, Hasher};

/// The key of every write under `order: total` and `version`.
pub const ONE_SEQUENCE: u64 = 0;

/// How the writes of this configuration are keyed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keying {
    order: Order,
    by: OrderKey,
}

impl Keying {
    pub fn new(order: Order, by: OrderKey) -> Self {
        Keying { order, by }
    }

    /// Are writes with different keys independent here?
    pub fn is_per_key(&self) -> bool {
        self.order == Order::Key
    }

    /// The key of a write to `path` whose headers `header` looks up by name.
    pub fn key<'h>(&self, path: &str, header: impl FnOnce(&str) -> Option<&'h [u8]>) -> u64 {
        if !self.is_per_key() {
            return ONE_SEQUENCE;
        }
        let mut hasher = DefaultHasher::new();
        match &self.by {
            OrderKey::Path => path.hash(&mut hasher),
            OrderKey::Header(name) => header(name.as_str()).unwrap_or_default().hash(&mut hasher),
        }
        hasher.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_sequence_unless_keyed() {
        let total = Keying::new(Order::Total, OrderKey::Path);
        assert_eq!(total.key("/a", |_| None), total.key("/b", |_| None));
        let by_path = Keying::new(Order::Key, OrderKey::Path);
        assert_ne!(by_path.key("/a", |_| None), by_path.key("/b", |_| None));
        assert_eq!(
            by_path.key("/a", |_| None),
            by_path.key("/a", |_| Some(b"x"))
        );
        let tenant = http::HeaderName::from_static("x-tenant");
        let by_header = Keying::new(Order::Key, OrderKey::Header(tenant));
        assert_eq!(
            by_header.key("/a", |_| Some(b"t1")),
            by_header.key("/b", |_| Some(b"t1"))
        );
        assert_ne!(
            by_header.key("/a", |_| Some(b"t1")),
            by_header.key("/a", |_| Some(b"t2"))
        );
    }
}
