//! Resyncs: by `replication.resync.command`, for an origin a reload added,
//! interrupted by a crash, and refused when they cannot start.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resync_command_copies_the_donor_and_completes_the_resync() {
    let dir = temp_dir("behind-command");
    let [a, b, c] = three_nginx(&dir, ["", "", ""]).await;
    let script = dir.join("copy.sh");
    let base = dir.display();
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nset -e\necho \"copying $HOTHOT_DONOR ($HOTHOT_DONOR_ADDRESS) to \
             $HOTHOT_ORIGIN ($HOTHOT_ORIGIN_ADDRESS) at #$HOTHOT_SEQ\" > {base}/command.out\n\
             rm -rf {base}/$HOTHOT_ORIGIN/root\ncp -a {base}/$HOTHOT_DONOR/root {base}/$HOTHOT_ORIGIN/root\n"
        ),
    )
    .unwrap();
    let origins = [("a", &a), ("b", &b), ("c", &c)];
    let replication = format!(
        "  retain: {{bytes: 128KiB}}\n  resync: {{command: [sh, \"{}\"], timeout: 30s}}\n",
        script.display()
    );
    let (hothot, admin) = start_hothot(&dir, &origins, &replication).await;
    c.kill();
    let writers = Writers::start(hothot.url(""), 4, 512);
    wait_for_state(admin, "c", "detached", Duration::from_secs(30)).await;
    c.restart().await;
    let started = admin_post(admin, "/origins/c/resync?from=b").await;
    assert_eq!(started.status, 200, "{}", started.body);
    wait_for_state(admin, "c", "up", CONVERGE).await;
    let (_, refused) = writers.stop().await;
    assert_eq!(refused, 0);
    assert_converged(&hothot, &origins).await;
    let said = std::fs::read_to_string(dir.join("command.out")).unwrap();
    assert!(said.starts_with("copying b (127.0.0.1:"), "{said}");
    assert!(said.contains("to c (127.0.0.1:"), "{said}");
    let metrics = hothot.metrics().await;
    assert_eq!(
        metric_value(&metrics, "hothot_resync_total{result=\"done\"}"),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_origin_added_by_a_reload_waits_for_its_resync_then_converges() {
    let dir = temp_dir("behind-join");
    let [a, b, d] = three_nginx(&dir, ["", "", ""]).await;
    let (hothot, admin) = start_hothot(&dir, &[("a", &a), ("b", &b)], "").await;
    let writers = Writers::start(hothot.url(""), 4, 256);
    let some = wait_until(Duration::from_secs(10), || async { writers.ok() > 200 }).await;
    assert!(some);
    let rewrite = common::reload::rewriter(&dir.join("hothot.yaml"));
    let all = [("a", &a), ("b", &b), ("d", &d)];
    let config_text = config(&all, admin, "");
    rewrite(config_text[config_text.find("origins:").unwrap()..].to_owned());
    common::reload::hup_until(&hothot, "success", 1.0).await;
    wait_for_state(admin, "d", "detached", Duration::from_secs(5)).await;
    let joined = origin_status(admin, "d").await;
    assert_eq!(joined["waits_for_resync"], true, "{joined}");
    assert!(hothot.log().contains("waits for a resync"));
    resync_by_hand(admin, ("d", &d), ("b", &b)).await;
    let (_, refused) = writers.stop().await;
    assert_eq!(refused, 0);
    assert_converged(&hothot, &all).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_during_a_resync_aborts_it_and_loses_nothing() {
    let dir = temp_dir("behind-crash");
    let [a, b, c] = three_nginx(&dir, ["", "", ""]).await;
    let origins = [("a", &a), ("b", &b), ("c", &c)];
    let (mut hothot, admin) = start_hothot(&dir, &origins, "").await;
    for i in 0..20 {
        assert!(put(&hothot.url(&format!("/data/k{i}")), "1").await.status < 300);
    }
    // Rebuild c (serving) from a; a is held at the cut.
    let started = admin_post(admin, "/origins/c/resync?from=a").await;
    assert_eq!(started.status, 200, "{}", started.body);
    // Writes acknowledged while a is held: a gets them only after the hold.
    for i in 0..20 {
        let answer = put(&hothot.url(&format!("/data/k{i}")), "2").await;
        assert!(answer.status < 300, "{}", answer.status);
    }
    hothot.kill();
    hothot.spawn().await;
    wait_for_port(admin).await;
    wait_for_state(admin, "c", "detached", Duration::from_secs(10)).await;
    wait_for_state(admin, "a", "up", Duration::from_secs(10)).await;
    assert_converged(&hothot, &[("a", &a), ("b", &b)]).await;
    assert_eq!(a.files()["/data/k19"], b"2");
    // A new resync, completed this time, makes c whole again.
    resync_by_hand(admin, ("c", &c), ("b", &b)).await;
    assert_converged(&hothot, &origins).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resync_that_cannot_start_says_why() {
    let dir = temp_dir("behind-refused");
    let [a, b, c] = three_nginx(&dir, ["", "", ""]).await;
    let origins = [("a", &a), ("b", &b), ("c", &c)];
    let (hothot, admin) = start_hothot(&dir, &origins, "").await;
    assert!(put(&hothot.url("/data/k"), "1").await.status < 300);
    let refusals = [
        (
            "/origins/c/resync?from=nobody",
            409,
            "no donor named \"nobody\"",
        ),
        ("/origins/c/resync", 409, "give ?from=NAME"),
        ("/origins/c/resync?from=c", 409, "from itself"),
        ("/origins/x/resync?from=a", 404, "no origin named \"x\""),
        ("/origins/c/resync/done", 409, "no resync of c is running"),
        ("/origins/c/resync/abort", 409, "no resync of c is running"),
    ];
    for (path, status, why) in refusals {
        let answer = admin_post(admin, path).await;
        assert_eq!(answer.status, status, "{path}: {}", answer.body);
        assert!(answer.body.contains(why), "{path}: {}", answer.body);
    }
    let started = admin_post(admin, "/origins/c/resync?from=a").await;
    assert_eq!(started.status, 200, "{}", started.body);
    let running = admin_post(admin, "/origins/b/resync?from=a").await;
    assert_eq!(running.status, 409);
    assert!(
        running.body.contains("a resync of c from a is running"),
        "{}",
        running.body
    );
    // The donor is held, not serving: it cannot give again.
    let aborted = admin_post(admin, "/origins/c/resync/abort").await;
    assert_eq!(aborted.status, 200, "{}", aborted.body);
    assert!(aborted.body.contains("\"detached\""), "{}", aborted.body);
    wait_for_state(admin, "a", "up", Duration::from_secs(5)).await;
    assert_eq!(origin_status(admin, "c").await["state"], "detached");
    let from_detached = admin_post(admin, "/origins/b/resync?from=c").await;
    assert_eq!(from_detached.status, 409);
    assert!(
        from_detached.body.contains("not serving"),
        "{}",
        from_detached.body
    );
    let metrics = hothot.metrics().await;
    assert_eq!(
        metric_value(&metrics, "hothot_resync_total{result=\"aborted\"}"),
        Some(1.0)
    );
    // Without the admin token: refused like the other POSTs (loopback is allowed).
    assert_converged(&hothot, &[("a", &a), ("b", &b)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_resync_command_aborts_the_resync_and_says_why() {
    let dir = temp_dir("behind-command-fails");
    let [a, b, c] = three_nginx(&dir, ["", "", ""]).await;
    let origins = [("a", &a), ("b", &b), ("c", &c)];
    let replication =
        "  resync: {command: [sh, -c, \"echo cannot reach $HOTHOT_ORIGIN >&2; exit 3\"]}\n";
    let (hothot, admin) = start_hothot(&dir, &origins, replication).await;
    assert!(put(&hothot.url("/data/k"), "1").await.status < 300);
    let started = admin_post(admin, "/origins/c/resync?from=a").await;
    assert_eq!(started.status, 200, "{}", started.body);
    wait_for_state(admin, "c", "detached", Duration::from_secs(10)).await;
    wait_for_state(admin, "a", "up", Duration::from_secs(5)).await;
    let metrics = hothot.metrics().await;
    assert_eq!(
        metric_value(&metrics, "hothot_resync_total{result=\"failed\"}"),
        Some(1.0)
    );
    let log = hothot.log();
    let line = log
        .lines()
        .find(|l| l.contains("resync of c ended"))
        .unwrap_or("");
    assert!(line.contains("exit status: 3"), "{log}");
    assert!(line.contains("cannot reach c"), "{log}");
}
