//! What a request is, decided once when its header has arrived: a read, a
//! write, or a copy of a write that another hothot has replicated already.
//!
//! Everything that treats reads and writes differently reads this one
//! answer: selection (reads skip origins lagging on replication, and those
//! lacking the client's own last write), retries (only a read may be sent
//! again after an origin received it), metrics (the `kind` label) and
//! replication (only a write is replicated, and only while replication is
//! on). Rules about which requests are writes (per route, say) belong here.
//!
//! - A request with `X-Hothot-Replicated-From` from an address in
//!   `replication.trusted_sources` whose method is a write's is a
//!   [`Class::TrustedCopy`]: another hothot replicated it; replicating it
//!   again would loop. From anyone else the header is removed first.
//! - A request that a rule of `replication.routes` matches is what the
//!   first such rule says (#26): `as: read` a [`Class::Read`], `as:
//!   primary` a [`Class::Primary`], a write rule a [`Class::Write`].
//! - Otherwise a request whose method is in `replication.methods` (POST,
//!   PUT, PATCH and DELETE by default) is a [`Class::Write`], whether
//!   replication is on or off.
//! - Everything else is a [`Class::Read`]: the safe methods (GET, HEAD,
//!   OPTIONS, TRACE, which the configuration refuses to list), and any
//!   method not listed.

use crate::config::ReplicationConfig;
use crate::replication::REPLICATED_FROM;
use crate::routes::Action;
use http::header;
use pingora_http::RequestHeader;
use std::net::IpAddr;

/// What a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Read,
    Write,
    TrustedCopy,
    /// For one origin only (a route's `as: primary`): balanced as a write,
    /// never replicated, never sent to a second origin once one received it.
    Primary,
}

/// A request's class, and whether it may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classified {
    pub class: Class,
    /// May it be sent to another origin after one received it (a failure
    /// after the request went out)? Only a read with a safe method and no
    /// body: replaying anything else could apply it twice.
    pub replayable: bool,
    /// The index of the `replication.routes` rule that decided, if one did.
    pub route: Option<usize>,
}

impl Default for Classified {
    /// Before a request is classified (it failed first): a read, not replayed.
    fn default() -> Self {
        Classified {
            class: Class::Read,
            replayable: false,
            route: None,
        }
    }
}

/// What the proxy asks of a request's headers, found in one pass over them
/// when the header has arrived. A lookup by name hashes the name (a custom
/// one byte by byte) and probes the map: the six lookups these answers took
/// cost more than walking the few headers most requests carry, and about as
/// much as walking a browser's dozen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeaderFacts {
    /// How many `Host` headers (counted up to 255).
    pub hosts: u8,
    /// A body follows: `Transfer-Encoding`, or a first `Content-Length`
    /// other than `0`.
    pub body: bool,
    /// `X-Hothot-Replicated-From` is present.
    pub replicated_from: bool,
    /// A `Cookie` header is present (read-your-writes looks in it).
    pub cookie: bool,
    /// An HTTP/1.1 request with `Upgrade` (as Pingora's `is_upgrade_req`).
    pub upgrade: bool,
}

impl HeaderFacts {
    pub fn of(request: &RequestHeader) -> Self {
        let mut facts = HeaderFacts::default();
        let mut upgrade = false;
        let mut content_length_seen = false;
        for (name, value) in &request.headers {
            // Comparing with a standard name is comparing two small
            // numbers; with the one custom name, its length first.
            if name == header::HOST {
                facts.hosts = facts.hosts.saturating_add(1);
            } else if name == header::COOKIE {
                facts.cookie = true;
            } else if name == header::UPGRADE {
                upgrade = true;
            } else if name == header::CONTENT_LENGTH {
                if !content_length_seen {
                    facts.body |= value.as_bytes() != b"0";
                }
                content_length_seen = true;
            } else if name == header::TRANSFER_ENCODING {
                facts.body = true;
            } else if name == REPLICATED_FROM_NAME {
                facts.replicated_from = true;
            }
        }
        facts.upgrade = upgrade && request.version == http::Version::HTTP_11;
        facts
    }
}

// By a constant name: a `&str` is parsed into a header name per lookup.
const REPLICATED_FROM_NAME: http::HeaderName = http::HeaderName::from_static(REPLICATED_FROM);

/// Classifies `request` from `client` under `config`, its headers' `facts`
/// found by [`HeaderFacts::of`]; removes a `X-Hothot-Replicated-From` the
/// client may not send.
pub fn classify(
    config: &ReplicationConfig,
    request: &mut RequestHeader,
    client: Option<IpAddr>,
    facts: &HeaderFacts,
) -> Classified {
    let route = crate::routes::decide(&config.routes, request);
    let mut class = match route.map(|(_, action)| action) {
        Some(Action::Read) => Class::Read,
        Some(Action::Primary) => Class::Primary,
        Some(Action::Write(_)) => Class::Write,
        None if config.methods.contains(&request.method) => Class::Write,
        None => Class::Read,
    };
    let listed = class == Class::Write;
    if facts.replicated_from {
        let trusted = client.is_some_and(|ip| {
            config
                .trusted_sources
                .iter()
                .any(|range| range.contains(ip))
        });
        match trusted {
            true if listed => class = Class::TrustedCopy,
            true => {}
            false => {
                request.remove_header(&REPLICATED_FROM_NAME);
            }
        }
    }
    let safe = matches!(
        request.method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS | http::Method::TRACE
    );
    // A route's read may be sent again as a safe method's is: its rule
    // says it changes nothing. The body is replayed from Pingora's retry
    // buffer (64 KiB); a larger one is not retried once sent.
    let declared_read = route.is_some() && class == Class::Read;
    Classified {
        class,
        replayable: class == Class::Read && (declared_read || (safe && !facts.body)),
        route: route.map(|(i, _)| i),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ReplicationMode;

    fn config(yaml: &str) -> ReplicationConfig {
        let text = format!(
            "listen: [\"127.0.0.1:8080\"]\norigins:\n  - {{name: a, address: \"127.0.0.1:9001\", capacity: 1}}\n{yaml}"
        );
        crate::config::parse(&text).unwrap().replication
    }

    fn request(method: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut request = RequestHeader::build(method, b"/k", None).unwrap();
        for (name, value) in headers {
            request.insert_header(name.to_string(), *value).unwrap();
        }
        request
    }

    /// Classifies as the proxy does: the facts first.
    fn classify(
        config: &ReplicationConfig,
        request: &mut RequestHeader,
        client: Option<IpAddr>,
    ) -> Classified {
        let facts = HeaderFacts::of(request);
        super::classify(config, request, client, &facts)
    }

    fn class_of(config: &ReplicationConfig, method: &str) -> Classified {
        classify(config, &mut request(method, &[]), None)
    }

    #[test]
    fn listed_methods_are_writes_with_replication_on_or_off() {
        for yaml in ["", "replication: {mode: off}\n"] {
            let config = config(yaml);
            for method in ["POST", "PUT", "PATCH", "DELETE"] {
                let classified = class_of(&config, method);
                assert_eq!(classified.class, Class::Write, "{method} ({yaml})");
                assert!(!classified.replayable);
            }
            for method in ["GET", "HEAD", "OPTIONS", "TRACE"] {
                let classified = class_of(&config, method);
                assert_eq!(classified.class, Class::Read, "{method} ({yaml})");
                assert!(classified.replayable, "{method}");
            }
        }
        assert_eq!(
            config("replication: {mode: off}\n").mode,
            ReplicationMode::Off
        );
    }

    #[test]
    fn unlisted_methods_are_reads_but_only_safe_ones_are_replayed() {
        let config = config("replication: {methods: [PUT]}\n");
        let post = class_of(&config, "POST");
        assert_eq!(post.class, Class::Read);
        assert!(!post.replayable, "POST is not safe to send twice");
        assert_eq!(class_of(&config, "PROPFIND").class, Class::Read);
        let mut with_body = request("GET", &[("content-length", "3")]);
        assert!(!classify(&config, &mut with_body, None).replayable);
    }

    #[test]
    fn routes_decide_before_methods() {
        let config = config(
            "replication:\n  routes:\n    - {match: {path: /k}, as: read}\n    \
             - {match: {path: /p}, as: primary}\n    - {match: {path: /g}, mode: sync}\n",
        );
        let mut read = request("POST", &[("content-length", "3")]);
        let read = classify(&config, &mut read, None);
        assert_eq!((read.class, read.route), (Class::Read, Some(0)));
        assert!(read.replayable, "a route's read is sent again like a GET");
        let mut primary = RequestHeader::build("POST", b"/p", None).unwrap();
        let primary = classify(&config, &mut primary, None);
        assert_eq!((primary.class, primary.route), (Class::Primary, Some(1)));
        assert!(!primary.replayable);
        let mut other = RequestHeader::build("PUT", b"/other", None).unwrap();
        let other = classify(&config, &mut other, None);
        assert_eq!((other.class, other.route), (Class::Write, None));
    }

    #[test]
    fn header_facts_are_what_lookups_by_name_would_say() {
        let facts = |headers: &[(&str, &str)]| HeaderFacts::of(&request("GET", headers));
        assert_eq!(facts(&[]), HeaderFacts::default());
        let mut two_hosts = request("GET", &[("Host", "a")]);
        two_hosts.append_header("host", "b").unwrap();
        assert_eq!(HeaderFacts::of(&two_hosts).hosts, 2);
        assert!(!facts(&[("Content-Length", "0")]).body);
        assert!(facts(&[("content-length", "12")]).body);
        assert!(facts(&[("Transfer-Encoding", "chunked")]).body);
        let mut zero_first = request("POST", &[("content-length", "0")]);
        zero_first.append_header("content-length", "5").unwrap();
        assert!(!HeaderFacts::of(&zero_first).body, "the first value counts");
        assert!(facts(&[("Cookie", "a=b")]).cookie);
        assert!(facts(&[(REPLICATED_FROM, "a")]).replicated_from);
        assert!(facts(&[("Upgrade", "websocket")]).upgrade);
        let mut old = request("GET", &[("Upgrade", "websocket")]);
        old.set_version(http::Version::HTTP_10);
        assert!(!HeaderFacts::of(&old).upgrade, "HTTP/1.0 does not upgrade");
        // Names as long as those asked about, that are none of them.
        let others = [
            ("Date", "x"),
            ("Origin", "x"),
            ("Referer", "x"),
            ("Accept-Charset", "x"),
            ("X-Custom-Header-1", "x"),
            ("x-hothot-replicated-fro2", "x"),
        ];
        assert_eq!(facts(&others), HeaderFacts::default());
    }

    #[test]
    fn only_trusted_sources_may_mark_a_copy() {
        let config = config("replication: {trusted_sources: [10.0.0.0/8]}\n");
        let copy = [(REPLICATED_FROM, "a")];
        let trusted = Some("10.1.2.3".parse().unwrap());
        let stranger = Some("192.0.2.1".parse().unwrap());
        let mut put = request("PUT", &copy);
        assert_eq!(
            classify(&config, &mut put, trusted).class,
            Class::TrustedCopy
        );
        let mut put = request("PUT", &copy);
        assert_eq!(classify(&config, &mut put, stranger).class, Class::Write);
        assert!(
            put.headers.get(REPLICATED_FROM).is_none(),
            "a stranger's header is removed"
        );
        let mut get = request("GET", &copy);
        assert_eq!(classify(&config, &mut get, trusted).class, Class::Read);
    }
}
