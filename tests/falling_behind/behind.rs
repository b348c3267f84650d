//! Behind within retention, past it, and failing one write.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_origin_waits_on_disk_and_catches_up_when_it_returns() {
    let dir = temp_dir("behind-disk");
    let [a, b, c] = three_nginx(&dir, ["", "", ""]).await;
    let origins = [("a", &a), ("b", &b), ("c", &c)];
    let (hothot, admin) = start_hothot(&dir, &origins, "  max_pending: 100\n").await;
    let pid = hothot.pid().unwrap();
    c.kill();
    let writers = Writers::start(hothot.url(""), 8, 16 << 10);
    // Memory once the load runs (connections, buffers, the allocator's
    // caches), c 1,500 writes behind.
    wait_until(Duration::from_secs(60), || async { writers.ok() >= 1500 }).await;
    let warm_rss = rss_kib(pid);
    // Well past the in-memory window of 100 writes: the rest waits on disk.
    let passed = wait_until(Duration::from_secs(60), || async { writers.ok() >= 6000 }).await;
    let busy_rss = rss_kib(pid);
    let (ok, refused) = writers.stop().await;
    assert!(passed, "only {ok} writes in a minute");
    assert_eq!(refused, 0, "a write was refused with one origin down");
    let behind = origin_status(admin, "c").await;
    assert!(
        behind["backlog_bytes"].as_u64().unwrap() > 6000 * (16 << 10),
        "{behind}"
    );
    // 4,500 more writes of 16 KiB are 70 MiB: far less than that stays in
    // memory (what does vary is the allocator's caches and the buffers).
    let grown = busy_rss.saturating_sub(warm_rss);
    println!("RSS {warm_rss} KiB with c 1,500 writes behind, {busy_rss} KiB with c {ok} behind");
    assert!(grown < 24 * 1024, "RSS grew by {grown} KiB");
    c.restart().await;
    assert_converged(&hothot, &origins).await;
    assert_eq!(origin_status(admin, "c").await["state"], "up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn past_retention_an_origin_is_detached_and_a_resync_brings_it_back() {
    let dir = temp_dir("behind-retain");
    let [a, b, c] = three_nginx(&dir, ["", "", ""]).await;
    let origins = [("a", &a), ("b", &b), ("c", &c)];
    let (hothot, admin) = start_hothot(
        &dir,
        &origins,
        "  max_pending: 100\n  retain: {bytes: 256KiB}\n",
    )
    .await;
    c.kill();
    let writers = Writers::start(hothot.url(""), 4, 512);
    wait_for_state(admin, "c", "detached", Duration::from_secs(30)).await;
    let metrics = hothot.metrics().await;
    assert_eq!(
        metric_value(&metrics, "hothot_origin_detached{origin=\"c\"}"),
        Some(1.0)
    );
    let dropped = "hothot_replication_dropped_total{peer=\"c\"}";
    assert!(metric_value(&metrics, dropped).unwrap() > 0.0);
    let detached = origin_status(admin, "c").await;
    assert!(detached["detached"]
        .as_str()
        .unwrap()
        .contains("retain.bytes"));
    assert!(hothot.log().contains("origin c detached"));
    // Back up with old data: probes pass, but it gets no reads.
    c.restart().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = reads_served(&hothot.metrics().await, "c");
    for _ in 0..30 {
        assert_eq!(get(&hothot.url("/health")).await.status, 200);
    }
    assert_eq!(reads_served(&hothot.metrics().await, "c"), before);
    assert_eq!(admin_post(admin, "/origins/c/enable").await.status, 409);
    // The resync, while the clients keep writing.
    let started = admin_post(admin, "/origins/c/resync?from=a").await;
    assert_eq!(started.status, 200, "{}", started.body);
    let started: serde_json::Value = serde_json::from_str(&started.body).unwrap();
    assert_eq!(
        (&started["origin"], &started["donor"], &started["state"]),
        (&"c".into(), &"a".into(), &"resyncing".into())
    );
    assert!(started["seq"].as_u64().unwrap() > 0);
    assert_eq!(origin_status(admin, "a").await["state"], "donor");
    copy_root(&a, &c);
    let done = admin_post(admin, "/origins/c/resync/done").await;
    assert_eq!(done.status, 200, "{}", done.body);
    wait_for_state(admin, "c", "up", CONVERGE).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ok, refused) = writers.stop().await;
    println!("{ok} writes answered, {refused} refused");
    assert_eq!(refused, 0, "a write was refused because c was behind");
    assert_converged(&hothot, &origins).await;
    let resyncs = "hothot_resync_total{result=\"done\"}";
    assert_eq!(metric_value(&hothot.metrics().await, resyncs), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_origin_failing_a_write_its_peers_applied_is_detached_a_write_all_fail_moves_all_on() {
    let dir = temp_dir("behind-failing");
    let everywhere = "location /all-bad/ { return 500; }";
    let on_c = "location /all-bad/ { return 500; }\nlocation /c-bad/ { return 500; }";
    let [a, b, c] = three_nginx(&dir, [everywhere, everywhere, on_c]).await;
    let origins = [("a", &a), ("b", &b), ("c", &c)];
    let replication = "  retry: {initial: 10ms, max: 100ms, max_attempts: 3}\n  detach_after: 1s\n";
    let (hothot, admin) = start_hothot(&dir, &origins, replication).await;
    // Every origin answers 500: after retry.max_attempts they all move on.
    assert_eq!(put(&hothot.url("/all-bad/k"), "x").await.status, 500);
    let moved_on = wait_until(Duration::from_secs(10), || async {
        let metrics = hothot.metrics().await;
        ["a", "b", "c"].iter().all(|o| {
            let failed = format!("hothot_replication_total{{outcome=\"failed\",peer=\"{o}\"}}");
            metric_value(&metrics, &failed) == Some(1.0)
        })
    })
    .await;
    assert!(moved_on, "{}", hothot.log());
    for i in 0..5 {
        let answer = put(&hothot.url(&format!("/data/k{i}")), "v").await;
        assert!(
            answer.status < 300,
            "{} {}: {}",
            answer.status,
            answer.body,
            hothot.log()
        );
    }
    assert_converged(&hothot, &origins).await;
    let metrics = hothot.metrics().await;
    for origin in ["a", "b", "c"] {
        let failed = format!("hothot_replication_total{{outcome=\"failed\",peer=\"{origin}\"}}");
        assert_eq!(metric_value(&metrics, &failed), Some(1.0), "{origin}");
        assert_eq!(origin_status(admin, origin).await["state"], "up");
    }
    let log = hothot.log();
    assert_eq!(log.matches("every origin failed").count(), 1, "{log}");
    // Only c answers 500 to this one: c is detached, a short blip was not enough.
    let answer = put(&hothot.url("/c-bad/k"), "y").await;
    assert!(answer.status < 300, "{}", answer.status);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        origin_status(admin, "c").await["state"],
        "up",
        "before detach_after"
    );
    wait_for_state(admin, "c", "detached", Duration::from_secs(10)).await;
    let detached = origin_status(admin, "c").await;
    assert!(detached["missed_write"]
        .as_str()
        .unwrap()
        .contains("/c-bad/k"));
    let metrics = hothot.metrics().await;
    assert_eq!(
        metric_value(&metrics, "hothot_origin_out_of_sync{origin=\"c\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric_value(&metrics, "hothot_origin_up{origin=\"c\"}"),
        Some(0.0)
    );
    for i in 5..10 {
        let answer = put(&hothot.url(&format!("/data/k{i}")), "w").await;
        assert!(answer.status < 300, "{}", answer.status);
    }
    assert_converged(&hothot, &[("a", &a), ("b", &b)]).await;
    assert_ne!(a.files(), c.files(), "c missed writes, as /status says");
}
