//! The operator's commands to a running hothot: `hothot -s reload` exits
//! with the process's verdict, `-s reopen|stop` reach it, and an upgrade
//! (`-u`, then SIGQUIT) under keep-alive load loses no request.

use super::common::process::ProxyProcess;
use super::common::reload::ReconnectingClients;
use super::common::*;
use std::time::Duration;

/// `hothot ARGS` beside a test's proxy: its default pid file is in `dir`
/// (systemd's `$RUNTIME_DIRECTORY`, as `ProxyProcess` sets it).
fn hothot_cli(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hothot"))
        .args(args)
        .arg("-c")
        .arg(dir.join("hothot.yaml"))
        .env("RUNTIME_DIRECTORY", dir)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s_reload_exits_with_the_running_processs_verdict_and_s_stop_removes_the_pid_file() {
    let a = TestOrigin::start("a").await;
    let dir = temp_dir("reload-verdict");
    // Reached by name (resolved again every second in the background).
    let origins = |capacity: u32| {
        format!(
            "origins:\n  - {{name: a, address: \"localhost:{}\", capacity: {capacity}, resolve: 1s}}\n\
             replication: {{mode: off}}\n",
            a.addr.port()
        )
    };
    let mut hothot = ProxyProcess::start(&dir, &origins(100)).await;
    let answer = get(&hothot.url("/")).await;
    assert_eq!(answer.status, 200, "{}", hothot.log());
    assert_eq!(a.served(), 1, "served by a, found by its name");
    let config_path = dir.join("hothot.yaml");
    let pid_file = dir.join("hothot.pid");
    let written = std::fs::read_to_string(&pid_file).unwrap_or_default();
    assert_eq!(written.trim(), hothot.pid().unwrap().to_string());

    // Applied: exit 0, and the process's own words.
    let config = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(
        &config_path,
        config.replace("capacity: 100", "capacity: 300"),
    )
    .unwrap();
    let (code, stdout, stderr) = hothot_cli(&dir, &["-s", "reload"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("applied"), "{stdout}");

    // Refused (a listener cannot change live): exit 1, saying why.
    let config = std::fs::read_to_string(&config_path).unwrap();
    let moved = config.replace(&format!(":{}\"]", hothot.port), ":1\"]");
    assert_ne!(moved, config);
    std::fs::write(&config_path, moved).unwrap();
    let (code, stdout, stderr) = hothot_cli(&dir, &["-s", "reload"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("refused") && stderr.contains("listen"),
        "{stderr}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await; // a background resolution
    assert_eq!(get(&hothot.url("/")).await.status, 200, "still serving");

    // A file that no longer validates (a name that stopped resolving):
    // -s reload refuses it before signalling; -s reopen still gets through.
    let unresolvable = config.replace(
        &format!("localhost:{}", a.addr.port()),
        "no-such-origin.invalid:80",
    );
    assert_ne!(unresolvable, config);
    std::fs::write(&config_path, unresolvable).unwrap();
    let (code, _, stderr) = hothot_cli(&dir, &["-s", "reload"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("cannot resolve no-such-origin.invalid"),
        "{stderr}"
    );
    let (code, stdout, stderr) = hothot_cli(&dir, &["-s", "reopen"]);
    assert_eq!(code, 0, "{stdout}{stderr}");

    // Stop: a graceful exit that leaves no pid file behind.
    std::fs::write(&config_path, config).unwrap();
    let (code, stdout, stderr) = hothot_cli(&dir, &["-s", "stop"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        hothot.wait_for_exit(Duration::from_secs(10)).await,
        "hothot -s stop: still running"
    );
    assert!(!pid_file.exists(), "the pid file outlived the process");
    let (code, _, stderr) = hothot_cli(&dir, &["-s", "reload"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("is hothot running?"), "{stderr}");
}

/// `hothot -u`, then SIGQUIT to the old process, under clients sending
/// requests on keep-alive connections, back to back or 20 ms apart: every request is
/// answered (the old process answers its connections' last requests with
/// `Connection: close`; the new one takes the reconnections), the old
/// process leaves once its connections are done rather than after the
/// whole grace period, and the normal path logs no ERROR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_under_keep_alive_load_loses_no_request() {
    let (a, b) = (TestOrigin::start("a").await, TestOrigin::start("b").await);
    let dir = temp_dir("upgrade");
    let grace = 10;
    let server = format!(
        ", grace_period_seconds: {grace}, upgrade_sock: \"{}\"",
        dir.join("upgrade.sock").display()
    );
    // Replication on: the new process waits for the old one's journal.
    let origins = format!(
        "origins:\n  - {{name: a, address: \"{}\", capacity: 100}}\n  \
         - {{name: b, address: \"{}\", capacity: 100}}\n\
         replication: {{mode: async}}\n",
        a.addr, b.addr
    );
    let mut hothot = ProxyProcess::start_with_server(&dir, &server, &origins, None).await;
    // Back to back, and with pauses: at the hand-over most of the slow
    // ones' connections are idle between two requests.
    let clients = ReconnectingClients::start(hothot.port, 2, Duration::ZERO);
    let slow_clients = ReconnectingClients::start(hothot.port, 8, Duration::from_millis(20));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let old_pid = hothot.pid().unwrap();

    let took = hothot.upgrade().await;
    println!("the old hothot exited {took:?} after SIGQUIT");
    // After the hand-over Pingora keeps the old process accepting for 5 s,
    // then its connections drain; it must not wait out the grace period.
    assert!(
        took < Duration::from_secs(5 + grace - 3),
        "the old hothot took {took:?} to exit (grace period {grace}s)"
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for (clients, count) in [(clients, 2), (slow_clients, 8)] {
        let (answers, errors, connections) = clients.stop().await;
        println!("{answers} answers over {connections} connections");
        assert!(errors.is_empty(), "{} errors: {errors:?}", errors.len());
        assert!(connections > count, "nobody reconnected to the new process");
    }
    assert_ne!(hothot.pid(), Some(old_pid));
    let answer = put(&hothot.url("/after-upgrade"), "v").await;
    assert_eq!(answer.status, 200);
    let log = hothot.log();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert!(errors.is_empty(), "ERROR lines: {errors:#?}");
    hothot.terminate().await;
}
