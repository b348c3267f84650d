//! A write one origin cannot complete (its connection closes unanswered)
//! while its peers applied it: after `retry.max_attempts` and
//! `replication.detach_after` the origin is detached, says which write in
//! its log and `/status`, is out of service while its peers go on, and
//! only a resync brings it back.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_origin_that_cannot_complete_a_write_its_peers_applied_is_detached() {
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
             replication:\n  retry: {{initial: 10ms, max: 20ms, max_attempts: 3}}\n  detach_after: 500ms\n",
            a.addr, b.addr, c.addr
        ),
    )
    .await;
    wait_for_port(admin_port).await;
    assert_eq!(put(&proxy.url("/bad-on-c/k1"), "x").await.status, 200);
    for i in 0..5 {
        assert_eq!(put(&proxy.url(&format!("/kv/k{i}")), "v").await.status, 200);
    }
    let status_url = format!("http://127.0.0.1:{admin_port}/status");
    let detached = wait_until(WAIT, || async {
        let status: serde_json::Value = serde_json::from_str(&get(&status_url).await.body).unwrap();
        // The gauges follow the state a moment later.
        let gauge = metric_value(
            &proxy.metrics().await,
            "hothot_origin_detached{origin=\"c\"}",
        );
        status["origins"][2]["state"] == "detached" && gauge == Some(1.0)
    })
    .await;
    assert!(detached, "{}", proxy.log());
    let attempts = c
        .seen()
        .iter()
        .filter(|s| s.path_and_query == "/bad-on-c/k1")
        .count();
    assert!(attempts >= 3, "retry.max_attempts: {attempts}");
    assert!(
        c.state().is_empty(),
        "nothing after the missed write reached c"
    );
    let metrics = proxy.metrics().await;
    for (series, value) in [
        ("hothot_origin_out_of_sync{origin=\"c\"}", 1.0),
        ("hothot_origin_detached{origin=\"c\"}", 1.0),
        ("hothot_origin_up{origin=\"c\"}", 0.0),
    ] {
        assert_eq!(metric_value(&metrics, series), Some(value), "{series}");
    }
    let log = proxy.log();
    let line = log
        .lines()
        .find(|l| l.contains("origin c detached"))
        .unwrap_or_else(|| panic!("no detach line:\n{log}"));
    for needle in ["/bad-on-c/k1", "version ", "detach_after", "through #"] {
        assert!(line.contains(needle), "{needle:?} missing from {line}");
    }
    let status: serde_json::Value = serde_json::from_str(&get(&status_url).await.body).unwrap();
    let c_status = &status["origins"][2];
    assert!(c_status["missed_write"]
        .as_str()
        .unwrap()
        .contains("/bad-on-c/k1"));
    // Out of service: reads go to a and b only.
    let served = c.served();
    for _ in 0..12 {
        assert_eq!(get(&proxy.url("/kv/k0")).await.status, 200);
    }
    assert_eq!(c.served(), served, "a detached origin served reads");
    // Enabling it is no way back: it lacks writes; a resync is.
    let enable = http::Request::post(format!("http://127.0.0.1:{admin_port}/origins/c/enable"))
        .body(Full::default())
        .unwrap();
    let refused = send(enable).await;
    assert_eq!(refused.status, 409);
    assert!(refused.body.contains("resync"), "{}", refused.body);
}
