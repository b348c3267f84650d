//! A write one origin cannot complete (its connection closes unanswered):
//! after `retry.max_attempts` the origin gives it up, says which write in
//! its log and `/status`, is out of service while its peers go on, and
//! comes back when an operator enables it.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_one_origin_cannot_complete_is_given_up_and_the_origin_leaves_service() {
    let (a, b, c) = (
        TestOrigin::start_plain("a").await,
        TestOrigin::start_plain("b").await,
        TestOrigin::start_plain("c").await,
    );
    c.fail_path(Some(("/bad-on-c/", 0)));
    let admin_port = free_port();
    let proxy = ProxyProcess::start(
        &temp_dir("stuck-write"),
        &format!(
            "origins:\n  - {{name: a, address: \"{}\", capacity: 1}}\n  \
             - {{name: b, address: \"{}\", capacity: 1}}\n  - {{name: c, address: \"{}\", capacity: 1}}\n\
             health: {{interval: 100ms, timeout: 200ms, passive: {{failures: 0}}}}\n\
             balancing: {{slow_start: 0s}}\nadmin: {{listen: \"127.0.0.1:{admin_port}\"}}\n\
             replication:\n  retry: {{initial: 10ms, max: 20ms, max_attempts: 3}}\n",
            a.addr, b.addr, c.addr
        ),
    )
    .await;
    wait_for_port(admin_port).await;
    assert_eq!(put(&proxy.url("/bad-on-c/k1"), "x").await.status, 200);
    for i in 0..5 {
        assert_eq!(put(&proxy.url(&format!("/kv/k{i}")), "v").await.status, 200);
    }
    let moved_on = wait_until(WAIT, || async { c.state().len() == 5 }).await;
    assert!(moved_on, "c holds {:?}", c.state().keys());
    let attempts = c
        .seen()
        .iter()
        .filter(|s| s.path_and_query == "/bad-on-c/k1")
        .count();
    assert_eq!(attempts, 3, "retry.max_attempts");
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric_value(&metrics, "hothot_origin_out_of_sync{origin=\"c\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric_value(&metrics, "hothot_origin_up{origin=\"c\"}"),
        Some(0.0)
    );
    let failed = "hothot_replication_total{outcome=\"failed\",peer=\"c\"}";
    assert_eq!(metric_value(&metrics, failed), Some(1.0));
    let log = proxy.log();
    let line = log
        .lines()
        .find(|l| l.contains("gave up on write #"))
        .unwrap_or_else(|| panic!("no give-up line:\n{log}"));
    for needle in [
        "replication to c",
        "/bad-on-c/k1",
        "version ",
        "after 3 failed attempts",
    ] {
        assert!(line.contains(needle), "{needle:?} missing from {line}");
    }
    let status = get(&format!("http://127.0.0.1:{admin_port}/status")).await;
    let status: serde_json::Value = serde_json::from_str(&status.body).unwrap();
    let c_status = &status["origins"][2];
    assert_eq!(c_status["state"], "out of sync", "{c_status}");
    assert!(c_status["missed_write"]
        .as_str()
        .unwrap()
        .contains("/bad-on-c/k1"));
    // Out of service: reads go to a and b only.
    let served = c.served();
    for _ in 0..12 {
        assert_eq!(get(&proxy.url("/kv/k0")).await.status, 200);
    }
    assert_eq!(c.served(), served, "an out-of-sync origin served reads");
    // The operator copies a peer's data to c and enables it.
    let enable = http::Request::post(format!("http://127.0.0.1:{admin_port}/origins/c/enable"))
        .body(Full::default())
        .unwrap();
    assert_eq!(send(enable).await.status, 200);
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric_value(&metrics, "hothot_origin_out_of_sync{origin=\"c\"}"),
        Some(0.0)
    );
    assert_eq!(
        metric_value(&metrics, "hothot_origin_up{origin=\"c\"}"),
        Some(1.0)
    );
}
