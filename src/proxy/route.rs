//! Which origin gets this request: writes go to any serving origin, reads
//! skip origins lagging on replication, retries skip what was tried, and a
//! read after the client's own write skips origins that lack that write.
//!
//! Read-your-writes: the answer to a replicated write sets the cookie
//! `hothot_v=<version>.<primary>`. A read carrying it goes only to the write's
//! primary or to peers with no pending write at or below that version; when
//! none of those is serving it goes to the primary, or gets 503 if the
//! primary is down, and never to a stale replica.

use crate::pool::Pool;
use crate::replication::Replicator;
use crate::selection::{selection_key, CapacityWeighted, Traffic};
use pingora_http::RequestHeader;
use pingora_load_balancing::LoadBalancer;

pub const COOKIE: &str = "hothot_v";

/// The newest replicated write a client has seen answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeenWrite {
    pub version: u64,
    /// Its primary, if it is still in the pool.
    pub primary: Option<usize>,
}

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Origin(usize),
    /// No origin may take it (503).
    NoOrigin,
    /// A retry found no untried origin.
    NoOtherOrigin,
}

/// The `Set-Cookie` value for the answer to a replicated write.
pub fn cookie(version: u64, primary: &str) -> String {
    format!("{COOKIE}={version}.{primary}; Path=/; HttpOnly; SameSite=Lax")
}

/// Reads the read-your-writes cookie of a request, if it has a valid one.
pub fn seen_write(request: &RequestHeader, pool: &Pool) -> Option<SeenWrite> {
    let value = request
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .next_back()?;
    let (version, primary) = value.split_once('.')?;
    Some(SeenWrite {
        version: version.parse().ok()?,
        primary: pool.origins().iter().position(|o| o.name == primary),
    })
}

/// The primary of a sequenced write (`order: total` or `key`): by capacity
/// among the serving origins, avoiding those whose backlog is stuck (lagging
/// past `max_lag`, or failing their deliveries): the client waits for its
/// primary's answer, which such an origin would give late. If every serving
/// origin is stuck, any of them.
pub fn choose_primary(
    balancer: &LoadBalancer<CapacityWeighted>,
    pool: &Pool,
    replicator: &Replicator,
) -> Option<usize> {
    let stuck: Vec<usize> = (0..pool.len())
        .filter(|i| pool.is_lagging(*i) || replicator.is_failing(*i))
        .collect();
    let pick = |skip: &[usize]| {
        pick_by_capacity(
            balancer,
            pool,
            &selection_key(Traffic::Write, skip.iter().copied()),
        )
    };
    pick(&stuck).or_else(|| match stuck.is_empty() {
        true => None,
        false => pick(&[]),
    })
}

/// The origin the balancer picks for selection `key`, if any.
fn pick_by_capacity(
    balancer: &LoadBalancer<CapacityWeighted>,
    pool: &Pool,
    key: &[u8],
) -> Option<usize> {
    balancer
        .select_with(key, pool.len(), |_, _| true)
        .and_then(|backend| backend.as_inet().and_then(|addr| pool.index_of(*addr)))
}

pub fn choose(
    balancer: &LoadBalancer<CapacityWeighted>,
    pool: &Pool,
    replicator: &Replicator,
    traffic: Traffic,
    tried: &[usize],
    seen: Option<SeenWrite>,
) -> Route {
    // Only a client that saw a write of its own skips origins lacking it.
    let stale = seen.into_iter().flat_map(|s| {
        (0..pool.len()).filter(move |i| !replicator.has_applied(*i, s.version, s.primary))
    });
    let key = selection_key(traffic, tried.iter().copied().chain(stale));
    match pick_by_capacity(balancer, pool, &key) {
        Some(index) => Route::Origin(index),
        None if tried.is_empty() => {
            match seen.and_then(|s| s.primary).filter(|p| pool.is_serving(*p)) {
                Some(primary) => Route::Origin(primary),
                None => Route::NoOrigin,
            }
        }
        None => Route::NoOtherOrigin,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{OriginConfig, PassiveConfig};

    #[test]
    fn the_cookie_names_version_and_primary() {
        let origins: Vec<OriginConfig> = ["a", "b"]
            .iter()
            .enumerate()
            .map(|(i, n)| OriginConfig {
                name: n.to_string(),
                address: format!("127.0.0.1:{}", 9000 + i).parse().unwrap(),
                capacity: 1,
            })
            .collect();
        let pool = Pool::new(
            &origins,
            PassiveConfig {
                failures: 0,
                eject: std::time::Duration::from_secs(1),
            },
        );
        let mut request = RequestHeader::build("GET", b"/", None).unwrap();
        request
            .insert_header("cookie", "theme=dark; hothot_v=42.b; lang=en")
            .unwrap();
        assert_eq!(
            seen_write(&request, &pool),
            Some(SeenWrite {
                version: 42,
                primary: Some(1)
            })
        );
        request
            .insert_header("cookie", "hothot_v=nonsense")
            .unwrap();
        assert_eq!(seen_write(&request, &pool), None);
        assert!(cookie(42, "b").starts_with("hothot_v=42.b; Path=/"));
    }
}
