//! The keys that bound how far an origin may fall behind (`retain`,
//! `detach_after`), rebuild it (`resync`) and say how one joins (`join`).

use super::*;
use std::time::Duration;

#[test]
fn retention_and_resync_mistakes_name_their_key() {
    refused(
        &with_origins("replication: {retain: {bytes: 0B}}\n"),
        "replication.retain.bytes",
        "above 0",
    );
    refused(
        &with_origins("replication: {retain: {age: 0s}}\n"),
        "replication.retain.age",
        "longer than 0",
    );
    refused(
        &with_origins("replication: {retain: {size: 1GiB}}\n"),
        "replication.retain",
        "size",
    );
    refused(
        &with_origins("replication: {resync: {command: []}}\n"),
        "replication.resync.command",
        "program",
    );
    refused(
        &with_origins("replication: {resync: {command: [no-such-copier-here, x]}}\n"),
        "replication.resync.command[0]",
        "not a file",
    );
    refused(
        &with_origins("replication: {resync: {timeout: 0s}}\n"),
        "replication.resync.timeout",
        "longer than 0",
    );
    refused(
        "listen: [\"127.0.0.1:8080\"]\norigins:\n  - {name: a, address: \"127.0.0.1:1\", capacity: 1, join: later}\n",
        "origins[0].join",
        "unknown variant",
    );
    let config = hothot::config::parse(&with_origins(
        "replication: {retain: {bytes: 1GiB, age: 1h}, detach_after: 30s, resync: {command: [cp, -a], timeout: 10m}}\n",
    ))
    .unwrap();
    let retention = &config.replication.retention;
    assert_eq!(retention.bytes, 1 << 30);
    assert_eq!(retention.age, Duration::from_secs(3600));
    assert_eq!(retention.detach_after, Duration::from_secs(30));
    assert_eq!(
        retention.resync_command.as_deref(),
        Some(&["cp".to_owned(), "-a".to_owned()][..])
    );
    assert_eq!(retention.resync_timeout, Duration::from_secs(600));
}
