//! Each section's mistakes (replication, ordering, machine limits,
//! balancing, admin and access log, TLS) name the key at fault.

use super::*;
use std::time::Duration;

#[test]
fn replication_mistakes_name_their_key() {
    refused(
        &with_origins("replication: {mode: sync, quorum: 2}\n"),
        "replication.quorum",
        "1 peers",
    );
    refused(
        &with_origins("replication: {mode: fast}\n"),
        "replication.mode",
        "unknown variant",
    );
    refused(
        &with_origins("replication: {methods: [PUT, HEAD]}\n"),
        "replication.methods[1]",
        "read",
    );
    // TRACE is a read too: listed, it was replicated while metrics and
    // retries called it a read.
    refused(
        &with_origins("replication: {methods: [trace]}\n"),
        "replication.methods[0]",
        "read",
    );
    refused(
        &with_origins("replication: {trusted_sources: [\"10.0.0.0/40\"]}\n"),
        "replication.trusted_sources[0]",
        "address range",
    );
    refused(
        &with_origins("replication: {retry: {initial: 2s, max: 1s}}\n"),
        "replication.retry.max",
        "retry.initial",
    );
    refused(
        &with_origins("replication: {max_body: 8 megs}\n"),
        "replication.max_body",
        "invalid size",
    );
    refused(
        &with_origins("replication: {max_pending: 0}\n"),
        "replication.max_pending",
        "at least 1",
    );
    refused(
        &with_origins("replication: {journal: {fsync: sometimes}}\n"),
        "replication.journal.fsync",
        "unknown variant",
    );
    refused(
        &with_origins("replication: {journal: {max_bytes: 1KiB}}\n"),
        "replication.journal.max_bytes",
        "1MiB",
    );
    refused(
        &with_origins("replication: {max_lag: 0s}\n"),
        "replication.max_lag",
        "longer than 0",
    );
    refused(
        &with_origins("replication: {linger: 2s}\n"),
        "replication.linger",
        "at most 1s",
    );
    refused(
        &with_origins("replication: {journal: {commit_delay: 20ms}}\n"),
        "replication.journal.commit_delay",
        "at most 10ms",
    );
    refused(
        "listen: [\"127.0.0.1:8080\"]\norigins:\n  - {name: \"a b\", address: \"127.0.0.1:1\", capacity: 1}\n",
        "origins[0].name",
        "letters, digits",
    );
}

#[test]
fn ordering_mistakes_name_their_key() {
    refused(
        &with_origins("replication: {order: random}\n"),
        "replication.order",
        "unknown variant",
    );
    refused(
        &with_origins("replication: {order: key, order_key: \"query\"}\n"),
        "replication.order_key",
        "header:NAME",
    );
    refused(
        &with_origins("replication: {order: key, order_key: \"header:bad name\"}\n"),
        "replication.order_key",
        "not a header name",
    );
    refused(
        &with_origins("replication: {verify: {sample: 1.5}}\n"),
        "replication.verify.sample",
        "between 0 and 1",
    );
    refused(
        &with_origins("replication: {retry: {max_attempts: 0}}\n"),
        "replication.retry.max_attempts",
        "at least 1",
    );
    let config = hothot::config::parse(&with_origins(
        "replication: {order: key, order_key: \"header:X-Tenant\", verify: {sample: 0}}\n",
    ))
    .unwrap();
    assert_eq!(config.replication.order, hothot::config::Order::Key);
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    let defaults = hothot::config::parse(&with_origins("")).unwrap();
    assert_eq!(defaults.replication.order, hothot::config::Order::Total);
    assert_eq!(defaults.replication.verify_sample, 0.01);
    assert_eq!(defaults.replication.retry_max_attempts, 10);
}

#[test]
fn values_no_machine_could_honour_are_errors() {
    refused(
        &with_origins("server: {threads: 100000000}\n"),
        "server.threads",
        "at most 1024",
    );
    refused(
        &with_origins("server: {upstream_keepalive_pool_size: 1000000000}\n"),
        "server.upstream_keepalive_pool_size",
        "at most",
    );
    // Pingora caps attempts at 1,000: more retries than that would be
    // that cap's decision, not hothot's.
    refused(&with_origins("retries: 1000\n"), "retries", "at most 999");
    assert_eq!(
        hothot::config::parse(&with_origins("retries: 999\n"))
            .unwrap()
            .retries,
        999
    );
    refused(
        &with_origins("replication: {max_body: 99999999GiB}\n"),
        "replication.max_body",
        "at most 1GiB",
    );
    refused(
        &with_origins("timeouts: {read: 99999999h}\n"),
        "timeouts.read",
        "at most 24h",
    );
    // Two listeners on one port: the proxy's requests would be split between them.
    refused(
        &with_origins("metrics: {listen: \"127.0.0.1:8080\"}\n"),
        "metrics.listen",
        "listen[0]",
    );
    refused(
        "listen: [\"0.0.0.0:8080\", \"127.0.0.1:8080\"]\norigins:\n  - {name: a, address: \"127.0.0.1:1\", capacity: 1}\n",
        "listen[1]",
        "listen[0]",
    );
}

#[test]
fn balancing_mistakes_name_their_key() {
    refused(
        &with_origins("balancing: {adaptive: {min_factor: 0}}\n"),
        "balancing.adaptive.min_factor",
        "between 0.01 and 1",
    );
    refused(
        &with_origins("balancing: {adaptive: {window: 10ms}}\n"),
        "balancing.adaptive.window",
        "between 500ms and 1h",
    );
    refused(
        &with_origins("balancing: {limit: {mode: drop}}\n"),
        "balancing.limit.mode",
        "unknown variant",
    );
    refused(
        &with_origins("balancing: {limit: {queue_timeout: 0s}}\n"),
        "balancing.limit.queue_timeout",
        "longer than 0",
    );
    refused(
        &with_origins("balancing: {adaptive: {enable: true}}\n"),
        "balancing.adaptive",
        "unknown field `enable`",
    );
    let defaults = hothot::config::parse(&with_origins("")).unwrap().balancing;
    assert!(defaults.adaptive);
    assert_eq!(defaults.window, Duration::from_secs(10));
    assert_eq!(defaults.min_factor, 0.1);
    assert_eq!(defaults.slow_start, Duration::from_secs(30));
    assert_eq!(defaults.limit, hothot::config::LimitMode::Off);
}

#[test]
fn balancing_settings_without_effect_are_warned_about() {
    let config = hothot::config::parse(&with_origins(
        "balancing: {limit: {mode: shed, queue_timeout: 1s}}\n",
    ))
    .unwrap();
    assert!(
        config
            .warnings
            .iter()
            .any(|w| w.contains("balancing.limit.queue_timeout")),
        "{:?}",
        config.warnings
    );
}

#[test]
fn admin_and_access_log_mistakes_name_their_key() {
    refused(
        &with_origins("admin: {listen: \"127.0.0.1:8080\"}\n"),
        "admin.listen",
        "shares its port",
    );
    refused(
        &with_origins("admin: {token_file: /nonexistent/token}\n"),
        "admin.token_file",
        "cannot read /nonexistent/token",
    );
    refused(
        &with_origins("admin: {listen: localhost}\n"),
        "admin.listen",
        "not an IP address with a port",
    );
    refused(
        &with_origins("access_log: {path: /nonexistent/dir/access.log}\n"),
        "access_log.path",
        "is not a directory",
    );
    refused(
        &with_origins("access_log: {path: stdout, format: apache}\n"),
        "access_log.format",
        "unknown variant",
    );
    let config =
        hothot::config::parse(&with_origins("admin: {}\naccess_log: {path: stdout}\n")).unwrap();
    assert_eq!(
        config.admin.unwrap().listen,
        "127.0.0.1:9101".parse().unwrap()
    );
    assert_eq!(config.access_log.unwrap().path, None);
    let defaults = hothot::config::parse(&with_origins("")).unwrap();
    assert!(defaults.admin.is_none() && defaults.access_log.is_none());
}

#[test]
fn tls_listener_mistakes_name_their_key() {
    let origins = BASE_ORIGINS;
    refused(
        &format!("listen: [{{address: \"127.0.0.1:8443\", tls: {{cert: /nonexistent/cert.pem, key: /nonexistent/key.pem}}}}]\n{origins}"),
        "listen[0].tls.cert",
        "cannot read /nonexistent/cert.pem",
    );
    refused(
        &format!("listen: [{{address: \"localhost:8443\"}}]\n{origins}"),
        "listen[0].address",
        "not an IP address with a port",
    );
    let plain = hothot::config::parse(&format!(
        "listen: [\"127.0.0.1:8080\", {{address: \"127.0.0.1:8081\"}}]\n{origins}"
    ))
    .unwrap();
    assert_eq!(plain.listen.len(), 2);
    assert!(plain.listen.iter().all(|l| l.tls.is_none()));
}

#[test]
fn origin_tls_mistakes_name_their_key() {
    let origin = |tls: &str| {
        format!("listen: [\"127.0.0.1:8080\"]\norigins: [{{name: a, address: \"127.0.0.1:9443\", capacity: 1, tls: {tls}}}]\n")
    };
    refused(
        &origin("{ca: /nonexistent/ca.pem}"),
        "origins[0].tls.ca",
        "cannot read",
    );
    refused(
        &origin("{sni: \"bad name\"}"),
        "origins[0].tls.sni",
        "not a host name",
    );
    refused(&origin("{verify: maybe}"), "origins[0].tls", "verify");
    let config = hothot::config::parse(&origin("{sni: example.com}")).unwrap();
    let tls = config.origins[0].tls.clone().unwrap();
    assert_eq!(
        (tls.sni.as_str(), tls.verify, tls.ca),
        ("example.com", true, None)
    );
}

#[test]
fn certificate_files_are_checked_before_start() {
    let dir = std::env::temp_dir().join(format!("hothot-config-pem-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let g = garbage.display();
    refused(
        &format!("listen: [{{address: \"127.0.0.1:8443\", tls: {{cert: \"{g}\", key: \"{g}\"}}}}]\n{BASE_ORIGINS}"),
        "listen[0].tls",
        "holds no certificate",
    );
    refused(
        &format!("listen: [\"127.0.0.1:8080\"]\norigins: [{{name: a, address: \"127.0.0.1:9443\", capacity: 1, tls: {{ca: \"{g}\"}}}}]\n"),
        "origins[0].tls.ca",
        "holds no PEM certificate",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn side_listeners_take_limits_of_their_own() {
    let config = hothot::config::parse(&with_origins(
        "metrics: {limits: {max_connections: 8, header_timeout: 2s}}\n\
         admin: {limits: {keepalive_timeout: 5s}}\nhealth: {passive: {max_ejection_percent: 30}}\n\
         timeouts: {tunnel_idle: 10m}\n",
    ))
    .unwrap();
    assert_eq!(config.metrics_limits.max_connections, Some(8));
    assert_eq!(config.metrics_limits.header_timeout, Duration::from_secs(2));
    let admin = config.admin.unwrap().limits;
    assert_eq!(
        (
            admin.max_connections,
            admin.header_timeout,
            admin.keepalive_timeout
        ),
        (Some(64), Duration::from_secs(10), Duration::from_secs(5))
    );
    assert_eq!(config.health.passive.max_ejection_percent, 30);
    assert_eq!(config.timeouts.tunnel_idle, Duration::from_secs(600));
    let defaults = hothot::config::parse(&with_origins("")).unwrap();
    assert_eq!(defaults.metrics_limits.max_connections, Some(64));
    assert_eq!(defaults.health.passive.max_ejection_percent, 50);
    assert_eq!(defaults.timeouts.tunnel_idle, Duration::from_secs(3600));
    refused(
        &with_origins("admin: {limits: {max_connections: 0}}\n"),
        "admin.limits.max_connections",
        "at least 1",
    );
    refused(
        &with_origins("metrics: {limits: {header_timeout: 0s}}\n"),
        "metrics.limits.header_timeout",
        "longer than 0",
    );
    refused(
        &with_origins("health: {passive: {max_ejection_percent: 101}}\n"),
        "health.passive.max_ejection_percent",
        "between 0 and 100",
    );
}
