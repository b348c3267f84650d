//! `hothot -t -c FILE` and start-up, as processes: a good file passes, a bad
//! one is refused naming its key, settings without effect are warned about,
//! huge or deeply nested files are refused at once, a busy port is a clear
//! error (a warning at `-t`), and nothing panics.

use std::process::Command;

const BASE_ORIGINS: &str = "origins:
  - {name: a, address: \"127.0.0.1:9001\", capacity: 1000}
  - {name: b, address: \"127.0.0.1:9002\", capacity: 800}
";

fn with_origins(rest: &str) -> String {
    format!("listen: [\"127.0.0.1:8080\"]\n{BASE_ORIGINS}{rest}")
}

/// A fresh directory of this test run's own, `hothot-config-LABEL-PID`.
fn scratch(label: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("hothot-config-{label}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn hothot(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hothot"))
        .args(args)
        .output()
        .expect("hothot runs")
}

#[test]
fn check_flag_accepts_a_good_file_and_names_the_key_of_a_bad_one() {
    let good = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/hothot.yaml");
    let output = hothot(&["-t", "-c", good]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let dir = scratch("test");
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "listen: [\"127.0.0.1:8080\"]\norigins:\n  - {name: a, address: \"127.0.0.1:1\", capacity: 1}\n  - {name: b, address: \"127.0.0.1:2\", capacity: x}\n",
    )
    .unwrap();
    let output = hothot(&["-t", "-c", bad.to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("origins[1].capacity"), "{stderr}");

    // Without -t a bad file still refuses to start, before binding anything.
    let output = hothot(&["-c", bad.to_str().unwrap()]);
    assert!(!output.status.success());
    let output = hothot(&["-c", dir.join("missing.yaml").to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("missing.yaml"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn check_flag_says_which_settings_have_no_effect() {
    let dir = scratch("warn");
    let file = dir.join("warn.yaml");
    std::fs::write(
        &file,
        with_origins("replication: {replicate_on: always, order_key: path}\n"),
    )
    .unwrap();
    let output = hothot(&["-t", "-c", file.to_str().unwrap()]);
    assert!(output.status.success(), "a warning is not an error");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("replication.replicate_on has no effect with replication.order: total"),
        "{stderr}"
    );
    assert!(
        stderr.contains("replication.order_key has no effect"),
        "{stderr}"
    );
    // Under version order replicate_on still decides.
    std::fs::write(
        &file,
        with_origins("replication: {order: version, replicate_on: always}\n"),
    )
    .unwrap();
    let output = hothot(&["-t", "-c", file.to_str().unwrap()]);
    assert!(output.status.success());
    // (Another program may hold port 8080 or 9100 now: that warning is not
    // this test's business.)
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("has no effect"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn huge_or_deeply_nested_files_are_refused_at_once() {
    let dir = scratch("deep");
    // 100,000 nested brackets: parsing them would take minutes.
    let deep = dir.join("deep.yaml");
    let depth = 100_000;
    std::fs::write(
        &deep,
        format!("listen: {}{}\n", "[".repeat(depth), "]".repeat(depth)),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let output = hothot(&["-t", "-c", deep.to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("line 1: nested more than 64 levels"),
        "{stderr}"
    );
    println!("refused in {:?}", started.elapsed());
    let huge = dir.join("huge.yaml");
    std::fs::write(&huge, "#".repeat(2 << 20)).unwrap();
    let output = hothot(&["-t", "-c", huge.to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("at most 1048576"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_busy_port_is_a_clear_start_up_error_and_a_warning_at_check() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let dir = scratch("busy");
    let file = dir.join("busy.yaml");
    std::fs::write(
        &file,
        format!(
            "listen: [\"127.0.0.1:{port}\"]\nmetrics: {{listen: \"127.0.0.1:0\"}}\n\
             origins:\n  - {{name: a, address: \"127.0.0.1:1\", capacity: 1}}\n\
             replication: {{journal: {{dir: {}}}}}\n",
            dir.join("journal").display()
        ),
    )
    .unwrap();
    let output = hothot(&["-c", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "a clear exit, not a panic");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("listen[0]") && stderr.contains("in use"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let output = hothot(&["-t", "-c", file.to_str().unwrap()]);
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("warning: listen[0]"));
    drop(busy);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn check_flag_warns_about_side_listeners_beyond_loopback() {
    let dir = scratch("exposed");
    std::fs::write(dir.join("token"), "s3cret\n").unwrap();
    let file = dir.join("exposed.yaml");
    let check = |rest: &str| {
        std::fs::write(&file, with_origins(rest)).unwrap();
        let output = hothot(&["-t", "-c", file.to_str().unwrap()]);
        assert!(output.status.success(), "a warning is not an error");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let stderr = check("metrics: {listen: \"0.0.0.0:9100\"}\nadmin: {listen: \"0.0.0.0:9101\"}\n");
    assert!(
        stderr.contains("warning: metrics.listen 0.0.0.0:9100 is reachable beyond this host"),
        "{stderr}"
    );
    assert!(
        stderr.contains("warning: UNPROTECTED: admin.listen 0.0.0.0:9101"),
        "{stderr}"
    );
    let token = dir.join("token");
    let stderr = check(&format!(
        "admin: {{listen: \"0.0.0.0:9101\", token_file: {}}}\n",
        token.display()
    ));
    assert!(
        stderr.contains("admin.listen 0.0.0.0:9101 is reachable beyond this host"),
        "{stderr}"
    );
    assert!(stderr.contains("token travels readable"), "{stderr}");
    assert!(!stderr.contains("UNPROTECTED"), "{stderr}");
    assert!(
        !stderr.contains("metrics.listen"),
        "loopback by default: {stderr}"
    );
    let stderr = check("admin: {listen: \"127.0.0.1:9101\"}\n");
    assert!(!stderr.contains("warning"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn help_lists_hothots_own_options_and_version_names_what_it_runs_with() {
    let output = hothot(&["--help"]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for option in [
        "-c, --conf <FILE>",
        "-t, --test",
        "-s, --signal <SIGNAL>",
        "-d, --daemon",
        "-u, --upgrade",
        "-V, --version",
        "reload",
        "reopen",
        "stop",
        "quit",
    ] {
        assert!(help.contains(option), "--help lacks {option}:\n{help}");
    }
    assert!(!help.contains("pingora-based service"), "{help}");

    for flag in ["--version", "-V", "-v"] {
        let output = hothot(&[flag]);
        assert!(output.status.success(), "{flag}");
        let version = String::from_utf8_lossy(&output.stdout);
        assert!(
            version.starts_with(&format!("hothot {} (commit ", env!("CARGO_PKG_VERSION"))),
            "{version}"
        );
        assert!(version.contains("\nPingora 0.9."), "{version}");
        assert!(version.contains("\nOpenSSL 3."), "{version}");
    }

    let output = hothot(&["-s", "restart", "-c", "/nonexistent.yaml"]);
    assert_eq!(output.status.code(), Some(2), "a usage error");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("possible values: reload, reopen, stop, quit"),
        "{stderr}"
    );

    // Without -c: the packaged location.
    let output = hothot(&["-t"]);
    if !std::path::Path::new("/etc/hothot/hothot.yaml").exists() {
        assert_eq!(output.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("/etc/hothot/hothot.yaml"), "{stderr}");
    }
}

/// `packaging/hothot.1` is what the command line's definitions make;
/// `HOTHOT_UPDATE_MAN=1 cargo test --test startup man_page` rewrites it.
#[test]
fn man_page_matches_the_command_line() {
    let mut page = Vec::new();
    clap_mangen::Man::new(hothot::cli::command())
        .render(&mut page)
        .unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/hothot.1");
    if std::env::var_os("HOTHOT_UPDATE_MAN").is_some() {
        std::fs::write(path, &page).unwrap();
    }
    let kept = std::fs::read(path).unwrap_or_default();
    assert!(
        kept == page,
        "packaging/hothot.1 differs from `hothot --help`: run \
         HOTHOT_UPDATE_MAN=1 cargo test --test startup man_page"
    );
    let text = String::from_utf8_lossy(&page);
    assert!(text.contains(".TH hothot 1"), "{text}");
    assert!(text.contains("reload"), "{text}");
}

/// TLS links the system's OpenSSL (Debian's security updates reach it),
/// not a copy built into the binary.
#[test]
fn the_binary_links_the_systems_openssl() {
    let Ok(output) = Command::new("ldd")
        .arg(env!("CARGO_BIN_EXE_hothot"))
        .output()
    else {
        println!("no ldd here: not checked");
        return;
    };
    let libraries = String::from_utf8_lossy(&output.stdout);
    assert!(
        libraries.contains("libssl.so.3") && libraries.contains("libcrypto.so.3"),
        "{libraries}"
    );
}

#[test]
fn origins_may_be_dns_names_and_one_that_does_not_resolve_is_named_at_check() {
    let dir = scratch("names");
    let file = dir.join("names.yaml");
    let check = |origins: &str| {
        std::fs::write(
            &file,
            format!("listen: [\"127.0.0.1:8080\"]\norigins:\n{origins}"),
        )
        .unwrap();
        let output = hothot(&["-t", "-c", file.to_str().unwrap()]);
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (valid, stderr) = check(
        "  - {name: a, address: \"localhost:9001\", capacity: 1, resolve: 30s}\n  \
         - {name: b, address: \"127.0.0.1:9002\", capacity: 1}\n",
    );
    assert!(valid, "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");

    let (valid, stderr) =
        check("  - {name: a, address: \"no-such-origin.invalid:80\", capacity: 1}\n");
    assert!(!valid);
    assert!(
        stderr.contains("origins[0].address: cannot resolve no-such-origin.invalid"),
        "{stderr}"
    );
    let (valid, stderr) = check("  - {name: a, address: \"localhost\", capacity: 1}\n");
    assert!(!valid);
    assert!(
        stderr.contains("origins[0].address: \"localhost\" is not an address with a port"),
        "{stderr}"
    );
    let (valid, stderr) =
        check("  - {name: a, address: \"127.0.0.1:9001\", capacity: 1, resolve: 5s}\n");
    assert!(valid, "{stderr}");
    assert!(
        stderr.contains("warning: origins[0].resolve has no effect"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Under systemd (`Type=notify`): `READY=1` once the proxy listens,
/// `RELOADING=1` then `READY=1` around a reload, `STOPPING=1` at a
/// graceful stop, on the socket `$NOTIFY_SOCKET` names.
#[test]
fn systemd_hears_ready_reloading_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let dir = scratch("notify");
    let notify = dir.join("notify.sock");
    let systemd = UnixDatagram::bind(&notify).unwrap();
    systemd
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let log = dir.join("hothot.log");
    let hear = || {
        let mut message = [0u8; 256];
        match systemd.recv(&mut message) {
            Ok(length) => String::from_utf8_lossy(&message[..length]).into_owned(),
            Err(e) => panic!(
                "no notification in time ({e}); hothot's log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ),
        }
    };
    // An origin that accepts (the TCP probe needs no more).
    let origin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    // Two free ports, held together so that they differ. (With the metrics
    // listener on port 0 the kernel sometimes gave it the proxy's port,
    // and Pingora retried that bind for 30 s.)
    let held = [(); 2].map(|()| std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    let [port, metrics_port] = held.each_ref().map(|l| l.local_addr().unwrap().port());
    drop(held);
    let file = dir.join("notify.yaml");
    std::fs::write(
        &file,
        format!(
            "server: {{pid_file: {}, grace_period_seconds: 1}}\nlisten: [\"127.0.0.1:{port}\"]\n\
             metrics: {{listen: \"127.0.0.1:{metrics_port}\"}}\n\
             origins:\n  - {{name: a, address: \"{}\", capacity: 1}}\n\
             health: {{kind: tcp}}\nreplication: {{mode: off}}\n",
            dir.join("hothot.pid").display(),
            origin.local_addr().unwrap()
        ),
    )
    .unwrap();
    let mut hothot = Command::new(env!("CARGO_BIN_EXE_hothot"))
        .args(["-c", file.to_str().unwrap()])
        .env("NOTIFY_SOCKET", &notify)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // SAFETY: kill(2) of our own child, which has not been waited for.
    let signal = |signal| assert_eq!(unsafe { libc::kill(hothot.id() as i32, signal) }, 0);
    assert_eq!(hear(), "READY=1\nSTATUS=serving");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "READY=1 before the proxy listens"
    );
    signal(libc::SIGHUP);
    assert!(hear().starts_with("RELOADING=1\nMONOTONIC_USEC="));
    assert_eq!(hear(), "READY=1\nSTATUS=serving");
    signal(libc::SIGTERM);
    assert_eq!(hear(), "STOPPING=1");
    assert!(hothot.wait().unwrap().success());
    std::fs::remove_dir_all(&dir).ok();
}
