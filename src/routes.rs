//! Which rule of `replication.routes` a request falls under (#26): the
//! first rule whose every condition holds decides what the request is (a
//! read, a write, or a request for one origin only) and, for a write, the
//! consistency it asks for. Exact paths and prefixes are compared as
//! bytes; only `path_regex` and a header's `value_regex` run a regex, each
//! compiled once when the configuration is loaded.

use crate::config::{OnTimeout, ReplicationMode};
use http::{HeaderName, Method};
use pingora_http::RequestHeader;
use std::time::Duration;

/// A regular expression compared by its text (configurations are compared
/// on reload; `regex::Regex` has no equality of its own).
#[derive(Debug, Clone)]
pub struct Pattern(pub regex::Regex);

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

/// What a request must be for a rule to apply: every condition given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Match {
    /// Any of these methods (empty: any method).
    pub methods: Vec<Method>,
    /// The path, without the query, exactly.
    pub path: Option<String>,
    pub path_prefix: Option<String>,
    pub path_regex: Option<Pattern>,
    /// The `Host` header (or the URI's authority), port aside, ASCII case aside.
    pub host: Option<String>,
    /// A header whose value the pattern finds a match in.
    pub header: Option<(HeaderName, Pattern)>,
}

/// What a write route changes from the pool's settings (`None`: the pool's).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteRule {
    pub mode: Option<ReplicationMode>,
    pub quorum: Option<usize>,
    pub timeout: Option<Duration>,
    pub on_timeout: Option<OnTimeout>,
}

/// How a write's client is answered: the pool's `mode`, `quorum`,
/// `timeout` and `on_timeout`, or what its route changes of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Consistency {
    pub mode: ReplicationMode,
    pub quorum: usize,
    pub timeout: Duration,
    pub on_timeout: OnTimeout,
}

impl Consistency {
    /// The consistency of a write that rule `route` of `config` (if any)
    /// decided.
    pub fn of(config: &crate::config::ReplicationConfig, route: Option<usize>) -> Consistency {
        let pool = Consistency {
            mode: config.mode,
            quorum: config.quorum,
            timeout: config.timeout,
            on_timeout: config.on_timeout,
        };
        match route.and_then(|i| config.routes.get(i)).map(|r| &r.action) {
            Some(Action::Write(rule)) => Consistency {
                mode: rule.mode.unwrap_or(pool.mode),
                quorum: rule.quorum.unwrap_or(pool.quorum),
                timeout: rule.timeout.unwrap_or(pool.timeout),
                on_timeout: rule.on_timeout.unwrap_or(pool.on_timeout),
            },
            _ => pool,
        }
    }
}

/// What a matching request is.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Balanced and retried as a read; never sequenced or journaled.
    Read,
    /// Sent to one origin chosen by capacity, outside the sequence, never
    /// replicated, never sent to a second origin once one received it.
    Primary,
    /// Sequenced and replicated, with the rule's consistency.
    Write(WriteRule),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub matches: Match,
    pub action: Action,
}

impl Route {
    /// The rule as `/status` lists it: its conditions and what it makes of
    /// a request (`as`, and a write's own consistency).
    pub fn describe(&self) -> serde_json::Value {
        let m = &self.matches;
        let methods: Vec<&str> = m.methods.iter().map(|m| m.as_str()).collect();
        let mut rule = serde_json::json!({
            "match": {
                "methods": (!methods.is_empty()).then_some(methods),
                "path": m.path,
                "path_prefix": m.path_prefix,
                "path_regex": m.path_regex.as_ref().map(|r| r.0.as_str()),
                "host": m.host,
                "header": m.header.as_ref().map(|(name, value)| {
                    serde_json::json!({"name": name.as_str(), "value_regex": value.0.as_str()})
                }),
            },
        });
        let (kind, write) = match &self.action {
            Action::Read => ("read", None),
            Action::Primary => ("primary", None),
            Action::Write(rule) => ("write", Some(rule)),
        };
        rule["as"] = kind.into();
        if let Some(w) = write {
            rule["mode"] = serde_json::json!(w.mode.map(ReplicationMode::name));
            rule["quorum"] = serde_json::json!(w.quorum);
            rule["timeout_seconds"] = serde_json::json!(w.timeout.map(|t| t.as_secs_f64()));
            rule["on_timeout"] = serde_json::json!(w.on_timeout);
        }
        rule
    }
}

impl Match {
    pub fn holds(&self, request: &RequestHeader) -> bool {
        if !self.methods.is_empty() && !self.methods.contains(&request.method) {
            return false;
        }
        let path = request.uri.path();
        if self.path.as_deref().is_some_and(|p| p != path)
            || self
                .path_prefix
                .as_deref()
                .is_some_and(|p| !path.starts_with(p))
            || self
                .path_regex
                .as_ref()
                .is_some_and(|r| !r.0.is_match(path))
        {
            return false;
        }
        if let Some(host) = &self.host {
            if !host_of(request).is_some_and(|h| h.eq_ignore_ascii_case(host)) {
                return false;
            }
        }
        if let Some((name, pattern)) = &self.header {
            let found = request
                .headers
                .get_all(name)
                .iter()
                .any(|value| value.to_str().is_ok_and(|v| pattern.0.is_match(v)));
            if !found {
                return false;
            }
        }
        true
    }

    /// Does every request this one matches match `earlier` too (so that
    /// a rule of this match after `earlier`'s is never reached)? Judged on
    /// what can be told without running the regexes: `false` when unsure.
    pub fn shadowed_by(&self, earlier: &Match) -> bool {
        let methods = earlier.methods.is_empty()
            || (!self.methods.is_empty()
                && self.methods.iter().all(|m| earlier.methods.contains(m)));
        let path = match (&earlier.path, &self.path) {
            (None, _) => true,
            (Some(e), Some(p)) => e == p,
            (Some(_), None) => false,
        };
        let prefix = match &earlier.path_prefix {
            None => true,
            Some(e) => {
                (self.path.as_deref()).is_some_and(|p| p.starts_with(e.as_str()))
                    || (self.path_prefix.as_deref()).is_some_and(|p| p.starts_with(e.as_str()))
            }
        };
        let regex = earlier.path_regex.is_none() || earlier.path_regex == self.path_regex;
        let host = earlier.host.is_none()
            || (earlier.host.as_ref().map(|h| h.to_ascii_lowercase()))
                == (self.host.as_ref().map(|h| h.to_ascii_lowercase()));
        let header = earlier.header.is_none() || earlier.header == self.header;
        methods && path && prefix && regex && host && header
    }
}

/// The request's host, without its port.
fn host_of(request: &RequestHeader) -> Option<&str> {
    let host = match request.headers.get(http::header::HOST) {
        Some(value) => value.to_str().ok()?,
        None => request.uri.authority()?.as_str(),
    };
    // An IPv6 literal keeps its brackets; a port after the name goes.
    if let Some(rest) = host.strip_prefix('[') {
        return Some(rest.find(']').map_or(host, |end| &host[..end + 2]));
    }
    Some(host.split_once(':').map_or(host, |(name, _)| name))
}

/// The first of `routes` that `request` matches: its index and action.
/// A write rule never makes a safe method (GET, HEAD, OPTIONS, TRACE) a
/// write: such a request passes on to the next rule, so that a rule
/// choosing the consistency of `/payments/` leaves its reads reads.
pub fn decide<'a>(routes: &'a [Route], request: &RequestHeader) -> Option<(usize, &'a Action)> {
    let safe = request.method.is_safe();
    (routes.iter().enumerate())
        .filter(|(_, route)| !(safe && matches!(route.action, Action::Write(_))))
        .find(|(_, route)| route.matches.holds(request))
        .map(|(i, route)| (i, &route.action))
}

#[cfg(test)]
mod tests;
