use super::*;

/// The routes of `yaml` (the `routes:` list, indented under `replication`).
fn routes(yaml: &str) -> Vec<Route> {
    let text = format!(
        "listen: [\"127.0.0.1:8080\"]\norigins:\n  - {{name: a, address: \"127.0.0.1:9001\", capacity: 1}}\n  \
         - {{name: b, address: \"127.0.0.1:9002\", capacity: 1}}\n  - {{name: c, address: \"127.0.0.1:9003\", capacity: 1}}\n\
         replication:\n  routes:\n{yaml}"
    );
    crate::config::parse(&text).unwrap().replication.routes
}

fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> RequestHeader {
    let mut request = RequestHeader::build(method, uri.as_bytes(), None).unwrap();
    for (name, value) in headers {
        request.insert_header(name.to_string(), *value).unwrap();
    }
    request
}

/// The index of the rule `method uri` falls under.
fn rule(routes: &[Route], method: &str, uri: &str, headers: &[(&str, &str)]) -> Option<usize> {
    decide(routes, &request(method, uri, headers)).map(|(i, _)| i)
}

#[test]
fn the_first_rule_that_matches_decides() {
    let routes = routes(
        "    - {match: {path: /v3/kv/range}, as: read}\n\
         \x20   - {match: {path_prefix: /v3/}, as: primary}\n\
         \x20   - {match: {}, mode: sync, quorum: 2}\n",
    );
    assert_eq!(rule(&routes, "POST", "/v3/kv/range", &[]), Some(0));
    assert_eq!(rule(&routes, "POST", "/v3/lease/grant", &[]), Some(1));
    assert_eq!(rule(&routes, "PUT", "/other", &[]), Some(2));
    assert_eq!(routes[0].action, Action::Read);
    assert_eq!(routes[1].action, Action::Primary);
    let sync = WriteRule {
        mode: Some(ReplicationMode::Sync),
        quorum: Some(2),
        ..WriteRule::default()
    };
    assert_eq!(routes[2].action, Action::Write(sync));
}

#[test]
fn every_condition_given_must_hold() {
    let routes = routes("    - {match: {methods: [post], path_prefix: /_search}, as: read}\n");
    assert_eq!(rule(&routes, "POST", "/_search?q=1", &[]), Some(0));
    assert_eq!(rule(&routes, "POST", "/_search/scroll", &[]), Some(0));
    assert_eq!(rule(&routes, "PUT", "/_search", &[]), None, "method");
    assert_eq!(rule(&routes, "POST", "/index/_search", &[]), None, "prefix");
}

#[test]
fn each_match_key() {
    let exact = routes("    - {match: {path: /v3/kv/range}, as: read}\n");
    assert_eq!(
        rule(&exact, "POST", "/v3/kv/range?x=1", &[]),
        Some(0),
        "the query aside"
    );
    assert_eq!(rule(&exact, "POST", "/v3/kv/range2", &[]), None);
    let regex = routes("    - {match: {path_regex: \"^/api/v[0-9]+/notify\"}, as: primary}\n");
    assert_eq!(rule(&regex, "POST", "/api/v2/notify/all", &[]), Some(0));
    assert_eq!(rule(&regex, "POST", "/api/vx/notify", &[]), None);
    let host = routes("    - {match: {host: Search.example}, as: read}\n");
    assert_eq!(
        rule(&host, "POST", "/", &[("host", "search.example:8080")]),
        Some(0)
    );
    assert_eq!(rule(&host, "POST", "/", &[("host", "shop.example")]), None);
    assert_eq!(rule(&host, "POST", "/", &[]), None, "no host at all");
    let header = routes(
        "    - {match: {header: {name: X-GraphQL-Operation, value_regex: \"^query$\"}}, as: read}\n",
    );
    let query = [("x-graphql-operation", "query")];
    assert_eq!(rule(&header, "POST", "/graphql", &query), Some(0));
    let mutation = [("x-graphql-operation", "mutation")];
    assert_eq!(rule(&header, "POST", "/graphql", &mutation), None);
    assert_eq!(rule(&header, "POST", "/graphql", &[]), None);
}

#[test]
fn hosts_lose_their_port_and_keep_ipv6_brackets() {
    for (given, host) in [
        ("a.example", "a.example"),
        ("a.example:80", "a.example"),
        ("[::1]:8080", "[::1]"),
        ("[::1]", "[::1]"),
    ] {
        assert_eq!(
            host_of(&request("GET", "/", &[("host", given)])),
            Some(host)
        );
    }
}

#[test]
fn a_later_rule_covered_by_an_earlier_one_is_shadowed() {
    let m = |yaml: &str| {
        routes(&format!("    - {{match: {yaml}}}\n"))
            .remove(0)
            .matches
    };
    let any = m("{}");
    let post = m("{methods: [POST]}");
    let prefix = m("{path_prefix: /v3/}");
    let exact = m("{methods: [POST], path: /v3/kv/range}");
    assert!(exact.shadowed_by(&any));
    assert!(exact.shadowed_by(&post));
    assert!(exact.shadowed_by(&prefix));
    assert!(!post.shadowed_by(&exact));
    assert!(!any.shadowed_by(&post));
    assert!(
        !m("{path_prefix: /v3}").shadowed_by(&prefix),
        "a shorter prefix is wider"
    );
}

#[test]
fn a_write_rule_leaves_safe_methods_to_the_next_rule() {
    let routes = routes(
        "    - {match: {path_prefix: /payments/}, mode: sync, quorum: 2}\n\
         \x20   - {match: {path_prefix: /payments/}, as: primary}\n",
    );
    assert_eq!(rule(&routes, "POST", "/payments/1", &[]), Some(0));
    assert_eq!(rule(&routes, "GET", "/payments/1", &[]), Some(1));
    assert_eq!(rule(&routes, "HEAD", "/other", &[]), None);
}
