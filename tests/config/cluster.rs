//! The `cluster` section: several instances sharing one order on etcd.

use super::*;
use std::time::Duration;

const SERVERS: &str = "servers: [\"http://127.0.0.1:2379\"]";

#[test]
fn cluster_mistakes_name_their_key() {
    let cluster = |keys: &str| with_origins(&format!("cluster: {{{keys}}}\n"));
    refused(&cluster("servers: []"), "cluster.servers", "etcd");
    refused(
        &cluster(
            "servers: [\"https://10.0.0.5:2379\", \"http://10.0.0.6:2379\"], listen: \"127.0.0.1:9102\"",
        ),
        "cluster.servers",
        "https:// or none",
    );
    refused(
        &cluster("servers: [\"10.0.0.5:2379\"], listen: \"127.0.0.1:9102\""),
        "cluster.servers[0]",
        "http://",
    );
    refused(&cluster(SERVERS), "cluster.listen", "required");
    refused(
        &cluster(&format!(
            "{SERVERS}, listen: \"127.0.0.1:9102\", instance: \"hh 1\""
        )),
        "cluster.instance",
        "letters",
    );
    refused(
        &cluster(&format!("{SERVERS}, listen: \"10.0.0.8:9102\"")),
        "cluster.token_file",
        "required",
    );
    refused(
        &cluster(&format!(
            "{SERVERS}, listen: \"127.0.0.1:9102\", lease: 1500ms"
        )),
        "cluster.lease",
        "whole seconds",
    );
    refused(
        &cluster(&format!(
            "{SERVERS}, listen: \"127.0.0.1:9102\", linger: 1s"
        )),
        "cluster.linger",
        "at most 100ms",
    );
    refused(
        &cluster(&format!("{SERVERS}, listen: \"127.0.0.1:8080\"")),
        "cluster.listen",
        "shares its port",
    );
    refused(
        &cluster(&format!("{SERVERS}, listen: \"127.0.0.1:9102\", size: 3")),
        "cluster",
        "size",
    );
}

#[test]
fn a_cluster_has_defaults_and_warns_where_it_does_nothing() {
    let yaml = with_origins(&format!(
        "cluster: {{{SERVERS}, listen: \"127.0.0.1:9102\"}}\n"
    ));
    let config = hothot::config::parse(&yaml).unwrap();
    let cluster = config.cluster.expect("a cluster");
    assert_eq!(cluster.name, "hothot");
    assert_eq!(cluster.lease, Duration::from_secs(5));
    assert_eq!(cluster.linger, hothot::config::cluster::DEFAULT_LINGER);
    assert!(!cluster.instance.is_empty(), "the host name by default");
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    let version = with_origins(&format!(
        "replication: {{order: version}}\ncluster: {{{SERVERS}, listen: \"127.0.0.1:9102\"}}\n"
    ));
    let config = hothot::config::parse(&version).unwrap();
    assert!(
        config
            .warnings
            .iter()
            .any(|w| w.contains("order is version")),
        "{:?}",
        config.warnings
    );
}

#[test]
fn tls_to_etcd_mistakes_name_their_key() {
    let https = "servers: [\"https://127.0.0.1:2379\"], listen: \"127.0.0.1:9102\"";
    let cluster = |keys: &str| with_origins(&format!("cluster: {{{keys}}}\n"));
    refused(
        &cluster(&format!("{SERVERS}, listen: \"127.0.0.1:9102\", tls: {{}}")),
        "cluster.tls",
        "https://",
    );
    refused(
        &cluster(&format!("{https}, tls: {{verify: false}}")),
        "cluster.tls.verify",
        "always verified",
    );
    refused(
        &cluster(&format!("{https}, tls: {{ca: /nonexistent/ca.pem}}")),
        "cluster.tls.ca",
        "cannot read",
    );
    let not_pem = std::env::temp_dir().join(format!("hothot-not-pem-{}", std::process::id()));
    std::fs::write(&not_pem, "not a certificate").unwrap();
    let not_pem = not_pem.display();
    refused(
        &cluster(&format!("{https}, tls: {{ca: {not_pem}}}")),
        "cluster.tls.ca",
        "no PEM certificate",
    );
    refused(
        &cluster(&format!("{https}, tls: {{cert: {not_pem}}}")),
        "cluster.tls.key",
        "required",
    );
    refused(
        &cluster(&format!("{https}, tls: {{sni: \"etcd one\"}}")),
        "cluster.tls.sni",
        "host name",
    );
    refused(
        &cluster(&format!("{https}, tls: {{cipher: x}}")),
        "cluster.tls",
        "cipher",
    );
    // https:// alone: etcd's certificate checked against the system's CAs.
    let config = hothot::config::parse(&cluster(https)).unwrap();
    let tls = config.cluster.and_then(|c| c.tls).expect("TLS to etcd");
    assert_eq!((tls.ca, tls.identity), (None, None));
}
