//! Which origin gets this request: writes go to any serving origin, reads
//! skip origins lagging on replication, retries skip what was tried, and a
//! read after the client's own write skips origins that lack that write.
//! Under `balancing.limit`, an origin at its capacity is passed over, and a
//! request no serving origin has room for is shed (or first waits, under
//! `queue`).
//!
//! Read-your-writes: the answer to a replicated write sets the cookie
//! `hothot_v=<version>.<primary>`. A read carrying it goes only to the write's
//! primary or to peers with no pending write at or below that version; when
//! none of those is serving it goes to the primary, or gets 503 if the
//! primary is down, and never to a stale replica.

use crate::config::LimitMode;
use crate::limit::Limiter;
use crate::pool::{OriginId, Pool};
use crate::replication::Replicator;
use crate::selection::{selection_key, Balancer, Traffic};
use pingora_http::RequestHeader;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const COOKIE: &str = "hothot_v";

/// The newest replicated write a client has seen answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeenWrite {
    pub version: u64,
    /// Its primary, if it is still in the pool.
    pub primary: Option<OriginId>,
}

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Origin(OriginId),
    /// No origin may take it (503).
    NoOrigin,
    /// A retry found no untried origin.
    NoOtherOrigin,
    /// Origins are serving, but none has room (`balancing.limit`): 503
    /// with `Retry-After`.
    Full,
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
        primary: pool.find(primary).map(|o| o.id),
    })
}

/// Picks origins: the balancer's smooth weighted round robin, the pool's
/// states and the limiter's room, for proxied requests and sequenced
/// writes alike.
pub struct Router {
    pub balancer: Arc<Balancer>,
    pub pool: Arc<Pool>,
    limiter: Arc<Limiter>,
}

impl Router {
    pub fn new(balancer: Arc<Balancer>, pool: Arc<Pool>, limiter: Arc<Limiter>) -> Self {
        Router {
            balancer,
            pool,
            limiter,
        }
    }

    /// The origin for a proxied request (see the module doc).
    pub async fn choose(
        &self,
        traffic: Traffic,
        tried: &[OriginId],
        seen: Option<SeenWrite>,
    ) -> Route {
        self.with_room(|| self.choose_now(traffic, tried, seen))
            .await
    }

    /// The primary of a sequenced write (`order: total` or `key`): by
    /// capacity among the serving origins, avoiding those whose backlog is
    /// stuck (lagging past `max_lag`, or failing their deliveries): the
    /// client waits for its primary's answer, which such an origin would
    /// give late. If every serving origin is stuck, any of them.
    pub async fn choose_primary(&self) -> Route {
        self.with_room(|| self.primary_now()).await
    }

    /// Under `limit: queue`, tries `pick` again as room frees up, until
    /// `queue_timeout`; otherwise once.
    async fn with_room(&self, pick: impl Fn() -> Route) -> Route {
        // Read the clock only once a request has to wait: most never do.
        let mut deadline = None;
        loop {
            let route = pick();
            if route != Route::Full || self.limiter.mode() != LimitMode::Queue {
                return route;
            }
            let deadline =
                *deadline.get_or_insert_with(|| Instant::now() + self.limiter.queue_timeout());
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Route::Full;
            }
            let serving = self.pool.members().filter(|o| o.is_serving());
            let wait = self.limiter.time_to_room(serving.map(|o| &**o));
            tokio::time::sleep(wait.clamp(Duration::from_millis(1), left)).await;
        }
    }

    fn primary_now(&self) -> Route {
        let members = || self.pool.members();
        let stuck: Vec<OriginId> = members()
            .filter(|o| {
                // A spilled backlog is far behind: its answer would come late.
                o.is_lagging() || o.backlog.streak.is_failing() || o.backlog.is_spilled()
            })
            .map(|o| o.id)
            .collect();
        // In a cluster, an origin this instance delivers to answers without
        // a hand-off between instances: preferred.
        let elsewhere = members().filter(|o| !o.backlog.is_open()).map(|o| o.id);
        let preferred: Vec<OriginId> = stuck.iter().copied().chain(elsewhere).collect();
        let pick = |skip: &[OriginId]| {
            self.pick_by_capacity(&selection_key(Traffic::Write, skip.iter().copied()))
        };
        let picked = pick(&preferred)
            .or_else(|| {
                (preferred.len() > stuck.len())
                    .then(|| pick(&stuck))
                    .flatten()
            })
            .or_else(|| (!stuck.is_empty()).then(|| pick(&[])).flatten());
        match picked {
            Some(origin) => Route::Origin(origin),
            None => self.none_with_room(&[], Route::NoOrigin),
        }
    }

    fn choose_now(&self, traffic: Traffic, tried: &[OriginId], seen: Option<SeenWrite>) -> Route {
        let pool = &self.pool;
        // Only a client that saw a write of its own skips origins lacking it.
        let stale = seen.into_iter().flat_map(|s| {
            pool.members()
                .filter(move |o| !Replicator::has_applied(o, s.version, s.primary))
                .map(|o| o.id)
        });
        let key = selection_key(traffic, tried.iter().copied().chain(stale));
        match self.pick_by_capacity(&key) {
            Some(origin) => Route::Origin(origin),
            None if tried.is_empty() => {
                let primary = seen
                    .and_then(|s| s.primary)
                    .and_then(|p| pool.get(p))
                    .filter(|p| p.is_serving());
                match primary {
                    Some(primary) if self.limiter.try_take(primary) => Route::Origin(primary.id),
                    _ => self.none_with_room(tried, Route::NoOrigin),
                }
            }
            None => self.none_with_room(tried, Route::NoOtherOrigin),
        }
    }

    /// No pick: `Full` when the limit is why (an untried serving origin
    /// is at its capacity), `otherwise` when not.
    fn none_with_room(&self, tried: &[OriginId], otherwise: Route) -> Route {
        let full = self.limiter.is_on()
            && self
                .pool
                .members()
                .any(|o| !tried.contains(&o.id) && o.is_serving() && !self.limiter.has_room(o));
        match full {
            true => Route::Full,
            false => otherwise,
        }
    }

    /// The origin the balancer picks for selection `key` that has room, if any.
    fn pick_by_capacity(&self, key: &[u8]) -> Option<OriginId> {
        // Without a limit every pick is accepted.
        let limited = self.limiter.is_on();
        self.balancer.select_with(key, |id| {
            !limited || self.pool.get(id).is_some_and(|o| self.limiter.try_take(o))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_names_version_and_primary() {
        let (pool, _replicator) = crate::replication::testing::pool(&[1, 1]);
        let b = pool.find("o1").map(|o| o.id);
        let mut request = RequestHeader::build("GET", b"/", None).unwrap();
        request
            .insert_header("cookie", "theme=dark; hothot_v=42.o1; lang=en")
            .unwrap();
        assert_eq!(
            seen_write(&request, &pool),
            Some(SeenWrite {
                version: 42,
                primary: b
            })
        );
        assert!(b.is_some());
        request
            .insert_header("cookie", "hothot_v=nonsense")
            .unwrap();
        assert_eq!(seen_write(&request, &pool), None);
        assert!(cookie(42, "b").starts_with("hothot_v=42.b; Path=/"));
    }
}
