//! `replication.routes` (#26): which requests are reads, writes, or for
//! one origin only, rule by rule, validated into [`crate::routes::Route`]s
//! (regexes compiled here, once). Also the one parser of method lists,
//! which `replication.methods` shares.

use super::units::HumanDuration;
use super::{ConfigError, OnTimeout, ReplicationMode};
use crate::routes::{Action, Match, Pattern, Route, WriteRule};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    #[serde(rename = "match")]
    pub matches: Option<MatchSection>,
    #[serde(rename = "as")]
    pub kind: Option<RouteKind>,
    pub mode: Option<ReplicationMode>,
    pub quorum: Option<usize>,
    pub timeout: Option<HumanDuration>,
    pub on_timeout: Option<OnTimeout>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteKind {
    Read,
    Primary,
    Write,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchSection {
    pub methods: Option<Vec<String>>,
    pub path: Option<String>,
    pub path_prefix: Option<String>,
    pub path_regex: Option<String>,
    pub host: Option<String>,
    pub header: Option<HeaderMatchSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatchSection {
    pub name: String,
    pub value_regex: String,
}

/// The safe methods (RFC 9110 §9.2.1): reads, never replicated.
const READS: [&str; 4] = ["GET", "HEAD", "OPTIONS", "TRACE"];

/// `names` as methods, each named `{key}[i]` when it is not one; a safe
/// method is refused unless `reads_allowed`.
pub fn parse_methods(
    key: &str,
    names: &[String],
    reads_allowed: bool,
) -> Result<Vec<http::Method>, ConfigError> {
    let mut methods = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let key = format!("{key}[{i}]");
        let upper = name.to_ascii_uppercase();
        if !reads_allowed && READS.contains(&upper.as_str()) {
            return Err(ConfigError::invalid(
                key,
                format!("{name} is a read: reads are never replicated"),
            ));
        }
        let method = http::Method::from_bytes(upper.as_bytes())
            .map_err(|_| ConfigError::invalid(&key, format!("{name:?} is not an HTTP method")))?;
        methods.push(method);
    }
    Ok(methods)
}

/// A sync quorum of `quorum` peers, of the pool's `peers` besides the
/// primary (`replication.quorum` and each route's).
pub fn check_quorum(key: &str, quorum: usize, peers: usize) -> Result<(), ConfigError> {
    match quorum == 0 || quorum > peers {
        true => Err(ConfigError::invalid(
            key,
            format!(
                "{quorum} peers cannot acknowledge: the pool has {peers} peers besides the primary"
            ),
        )),
        false => Ok(()),
    }
}

/// Validates `sections` for a pool of `origins` whose replication runs in
/// `mode`; rules no request can reach and reads on write methods are added
/// to `warnings`.
pub fn validate(
    sections: Vec<RouteSection>,
    origins: usize,
    mode: ReplicationMode,
    warnings: &mut Vec<String>,
) -> Result<Vec<Route>, ConfigError> {
    let mut routes: Vec<Route> = Vec::with_capacity(sections.len());
    for (i, section) in sections.into_iter().enumerate() {
        let key = format!("replication.routes[{i}]");
        let Some(matches) = section.matches else {
            return Err(ConfigError::invalid(
                format!("{key}.match"),
                "required: the conditions a request must meet (`match: {}` for every request)",
            ));
        };
        let kind = section.kind.unwrap_or(RouteKind::Write);
        let matches = validate_match(&key, matches, kind != RouteKind::Write)?;
        let rule = WriteRule {
            mode: section.mode,
            quorum: section.quorum,
            timeout: section.timeout.map(|d| d.0),
            on_timeout: section.on_timeout,
        };
        let action = match kind {
            RouteKind::Write => Action::Write(validate_write(&key, rule, origins, mode)?),
            _ if rule != WriteRule::default() => {
                let name = if kind == RouteKind::Read {
                    "read"
                } else {
                    "primary"
                };
                return Err(ConfigError::invalid(
                    key,
                    format!(
                        "mode, quorum, timeout and on_timeout are a write's: as: {name} takes none"
                    ),
                ));
            }
            RouteKind::Read => Action::Read,
            RouteKind::Primary => Action::Primary,
        };
        // A write rule lets safe methods pass on: it hides no rule that
        // may match one.
        let may_be_safe = matches.methods.is_empty() || matches.methods.iter().any(|m| m.is_safe());
        let hides = |r: &Route| !(may_be_safe && matches!(r.action, Action::Write(_)));
        let earlier = routes
            .iter()
            .position(|r| hides(r) && matches.shadowed_by(&r.matches));
        if let Some(earlier) = earlier {
            warnings.push(format!(
                "{key} is never reached: every request it matches matches replication.routes[{earlier}] first"
            ));
        }
        let writes: Vec<&str> = (matches.methods.iter())
            .map(|m| m.as_str())
            .filter(|m| ["PUT", "DELETE", "PATCH"].contains(m))
            .collect();
        if action == Action::Read && !writes.is_empty() {
            warnings.push(format!(
                "{key} makes {} reads: they are usually writes, and as reads reach one origin only",
                writes.join(", ")
            ));
        }
        routes.push(Route { matches, action });
    }
    Ok(routes)
}

/// `reads_allowed`: may `methods` list safe methods (not in a write rule).
fn validate_match(
    key: &str,
    section: MatchSection,
    reads_allowed: bool,
) -> Result<Match, ConfigError> {
    let methods = match &section.methods {
        Some(names) if names.is_empty() => {
            return Err(ConfigError::invalid(
                format!("{key}.match.methods"),
                "list at least one method (leave the key out for any)",
            ))
        }
        Some(names) => parse_methods(&format!("{key}.match.methods"), names, reads_allowed)?,
        None => Vec::new(),
    };
    for (name, path) in [
        ("path", &section.path),
        ("path_prefix", &section.path_prefix),
    ] {
        if path.as_deref().is_some_and(|p| !p.starts_with('/')) {
            return Err(ConfigError::invalid(
                format!("{key}.match.{name}"),
                "must start with /",
            ));
        }
    }
    let pattern = |name: &str, text: &str| {
        regex::Regex::new(text)
            .map(Pattern)
            .map_err(|e| ConfigError::invalid(format!("{key}.match.{name}"), e.to_string()))
    };
    let path_regex = match &section.path_regex {
        Some(text) => Some(pattern("path_regex", text)?),
        None => None,
    };
    let header = match section.header {
        Some(header) => {
            let name = http::HeaderName::from_bytes(header.name.as_bytes()).map_err(|_| {
                ConfigError::invalid(
                    format!("{key}.match.header.name"),
                    format!("{:?} is not a header name", header.name),
                )
            })?;
            Some((name, pattern("header.value_regex", &header.value_regex)?))
        }
        None => None,
    };
    Ok(Match {
        methods,
        path: section.path,
        path_prefix: section.path_prefix,
        path_regex,
        host: section.host,
        header,
    })
}

fn validate_write(
    key: &str,
    rule: WriteRule,
    origins: usize,
    pool_mode: ReplicationMode,
) -> Result<WriteRule, ConfigError> {
    if rule.mode == Some(ReplicationMode::Off) {
        return Err(ConfigError::invalid(
            format!("{key}.mode"),
            "a write route is replicated (async or sync): for one origin only, use as: primary",
        ));
    }
    if pool_mode == ReplicationMode::Off && rule != WriteRule::default() {
        return Err(ConfigError::invalid(
            key,
            "replication.mode is off: no write is replicated, so a route cannot choose how",
        ));
    }
    let peers = origins.saturating_sub(1);
    let mode = rule.mode.unwrap_or(pool_mode);
    if let Some(quorum) = rule.quorum {
        if mode != ReplicationMode::Sync {
            return Err(ConfigError::invalid(
                format!("{key}.quorum"),
                "a quorum is for sync writes: add mode: sync",
            ));
        }
        check_quorum(&format!("{key}.quorum"), quorum, peers)?;
    }
    if rule.timeout.is_some_and(|t| t.is_zero()) {
        return Err(ConfigError::invalid(
            format!("{key}.timeout"),
            "must be longer than 0",
        ));
    }
    Ok(rule)
}
