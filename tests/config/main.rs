//! Bad configs are refused with the key at fault named; the shipped configs
//! are valid. (`hothot -t` and start-up as processes: `tests/startup.rs`.)
//! The checks of each section's own keys are in `sections.rs`.

mod cluster;
mod retention;
mod routes;
mod sections;

use std::path::Path;

const BASE_ORIGINS: &str = "origins:
  - {name: a, address: \"127.0.0.1:9001\", capacity: 1000}
  - {name: b, address: \"127.0.0.1:9002\", capacity: 800}
";

fn with_origins(rest: &str) -> String {
    format!("listen: [\"127.0.0.1:8080\"]\n{BASE_ORIGINS}{rest}")
}

/// Asserts that `yaml` is refused with a message naming `key` and containing `why`.
fn refused(yaml: &str, key: &str, why: &str) {
    let error = hothot::config::parse(yaml)
        .expect_err("config should be refused")
        .to_string();
    assert!(error.contains(key), "error does not name {key}: {error}");
    assert!(error.contains(why), "error does not say {why:?}: {error}");
}

#[test]
fn shipped_configs_are_valid() {
    let mut checked = 0;
    for entry in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("conf")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let config =
                hothot::config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(
                config.warnings.is_empty(),
                "{}: {:?}",
                path.display(),
                config.warnings
            );
            checked += 1;
        }
    }
    assert!(checked >= 1, "no config in conf/");
}

#[test]
fn unknown_keys_are_errors() {
    refused(&with_origins("retrys: 2\n"), "retrys", "unknown field");
    refused(
        &with_origins("health: {passive: {failurs: 3}}\n"),
        "health.passive",
        "failurs",
    );
    refused(&with_origins("server: {thread: 2}\n"), "server", "thread");
    refused(
        "listen: [\"127.0.0.1:8080\"]\norigins:\n  - {name: a, address: \"127.0.0.1:1\", capacity: 1, weight: 2}\n",
        "origins[0]",
        "weight",
    );
}

#[test]
fn duplicate_names_and_addresses_are_errors() {
    refused(
        &with_origins("  - {name: a, address: \"127.0.0.1:9003\", capacity: 1}\n"),
        "origins[2].name",
        "duplicate",
    );
    refused(
        &with_origins("  - {name: c, address: \"127.0.0.1:9001\", capacity: 1}\n"),
        "origins[2].address",
        "duplicate",
    );
}

#[test]
fn an_empty_or_fully_drained_pool_is_an_error() {
    refused(
        "listen: [\"127.0.0.1:8080\"]\norigins: []\n",
        "origins",
        "at least one origin",
    );
    refused(
        "listen: [\"127.0.0.1:8080\"]\norigins:\n  - {name: a, address: \"127.0.0.1:1\", capacity: 0}\n  - {name: b, address: \"127.0.0.1:2\", capacity: 0}\n",
        "origins",
        "capacity",
    );
    refused("listen: [\"127.0.0.1:8080\"]\n", "origins", "missing field");
}

#[test]
fn zero_thresholds_are_errors() {
    refused(
        &with_origins("health: {rise: 0}\n"),
        "health.rise",
        "at least 1",
    );
    refused(
        &with_origins("health: {fall: 0}\n"),
        "health.fall",
        "at least 1",
    );
    refused(
        &with_origins("health: {interval: 0s}\n"),
        "health.interval",
        "longer than 0",
    );
    refused(
        &with_origins("health: {connect_every: 0}\n"),
        "health.connect_every",
        "at least 1",
    );
    refused(
        &with_origins("health: {kind: tcp, connect_every: 5}\n"),
        "health.connect_every",
        "only applies to kind: http",
    );
}

#[test]
fn unparseable_values_are_errors() {
    refused(
        &with_origins("health: {interval: 2 seconds}\n"),
        "health.interval",
        "invalid duration",
    );
    refused(
        &with_origins("timeouts: {connect: 1}\n"),
        "timeouts.connect",
        "unit",
    );
    refused(
        "listen: [\"127.0.0.1:8080\"]\norigins:\n  - {name: a, address: \"localhost\", capacity: 1}\n",
        "origins[0].address",
        "not an address with a port",
    );
    refused(
        "listen: [\"127.0.0.1:8080\"]\norigins:\n  - {name: a, address: \"127.0.0.1:1\", capacity: -5}\n",
        "origins[0].capacity",
        "expected u32",
    );
    refused(
        &format!("listen: [\"8080\"]\n{BASE_ORIGINS}"),
        "listen[0]",
        "not an IP address",
    );
    refused(
        &with_origins("health: {kind: grpc}\n"),
        "health.kind",
        "unknown variant",
    );
    refused(
        &with_origins("health: {expect_status: [200, 1000]}\n"),
        "health.expect_status[1]",
        "1000",
    );
}
