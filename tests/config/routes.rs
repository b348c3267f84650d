//! `replication.routes` (#26): every mistake names its rule and key; rules
//! no request reaches and reads on write methods are warned about.

use super::*;

/// A config whose `replication.routes` is `rules` (one flow mapping per
/// line), over two origins; `extra` is more of the replication section.
fn routes(extra: &str, rules: &[&str]) -> String {
    let list: String = rules.iter().map(|r| format!("    - {r}\n")).collect();
    with_origins(&format!("replication:\n{extra}  routes:\n{list}"))
}

#[test]
fn route_mistakes_name_their_rule_and_key() {
    let cases: &[(&[&str], &str, &str)] = &[
        (&["{as: read}"], "replication.routes[0].match", "required"),
        (
            &["{match: {methods: []}, as: read}"],
            "replication.routes[0].match.methods",
            "at least one",
        ),
        (
            &["{match: {methods: [\"G T\"]}}"],
            "replication.routes[0].match.methods[0]",
            "not an HTTP method",
        ),
        (
            &["{match: {path: v3/kv}}"],
            "replication.routes[0].match.path",
            "must start with /",
        ),
        (
            &["{match: {path_prefix: api}}"],
            "replication.routes[0].match.path_prefix",
            "must start with /",
        ),
        (
            &[
                "{match: {path: /a}, as: read}",
                "{match: {path_regex: \"^/api/(v1\"}, as: primary}",
            ],
            "replication.routes[1].match.path_regex",
            "unclosed group",
        ),
        (
            &["{match: {header: {name: \"x y\", value_regex: a}}}"],
            "replication.routes[0].match.header.name",
            "not a header name",
        ),
        (
            &["{match: {header: {name: x, value_regex: \"[\"}}}"],
            "replication.routes[0].match.header.value_regex",
            "unclosed",
        ),
        (
            &["{match: {path: /a}, as: read, mode: sync}"],
            "replication.routes[0]",
            "as: read takes none",
        ),
        (
            &["{match: {path: /a}, as: primary, timeout: 1s}"],
            "replication.routes[0]",
            "as: primary takes none",
        ),
        (
            &["{match: {path: /a}, as: writer}"],
            "replication.routes[0]",
            "unknown variant",
        ),
        (
            &["{match: {path: /a}, mode: off}"],
            "replication.routes[0].mode",
            "as: primary",
        ),
        (
            &["{match: {path: /a}, quorum: 1}"],
            "replication.routes[0].quorum",
            "add mode: sync",
        ),
        (
            &["{match: {path: /a}, mode: sync, quorum: 2}"],
            "replication.routes[0].quorum",
            "1 peers",
        ),
        (
            &["{match: {path: /a}, mode: sync, timeout: 0s}"],
            "replication.routes[0].timeout",
            "longer than 0",
        ),
        (
            &["{match: {path: /a, query: x}}"],
            "replication.routes[0]",
            "query",
        ),
        (
            &["{match: {methods: [POST, GET]}, mode: sync}"],
            "replication.routes[0].match.methods[1]",
            "GET is a read",
        ),
    ];
    for (rules, key, why) in cases {
        refused(&routes("", rules), key, why);
    }
    refused(
        &routes("  mode: off\n", &["{match: {path: /a}, mode: sync}"]),
        "replication.routes[0]",
        "replication.mode is off",
    );
}

#[test]
fn unreachable_rules_and_reads_on_write_methods_are_warned_about() {
    let yaml = routes(
        "",
        &[
            "{match: {path_prefix: /v3/}, as: primary}",
            "{match: {methods: [POST], path: /v3/kv/range}, as: read}",
            "{match: {methods: [PUT, GET]}, as: read}",
            "{match: {path: /payments}, mode: sync, quorum: 1, timeout: 2s, on_timeout: degrade}",
        ],
    );
    let config = hothot::config::parse(&yaml).unwrap();
    let warned = |what: &str| config.warnings.iter().any(|w| w.contains(what));
    assert!(
        warned("replication.routes[1] is never reached") && warned("replication.routes[0] first"),
        "{:?}",
        config.warnings
    );
    assert!(
        warned("replication.routes[2] makes PUT reads"),
        "{:?}",
        config.warnings
    );
    assert_eq!(config.warnings.len(), 2, "{:?}", config.warnings);
    assert_eq!(config.replication.routes.len(), 4);
}
