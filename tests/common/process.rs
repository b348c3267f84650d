//! hothot as a separate process, for tests where a crash is part of the story.

use super::{two_free_ports, wait_for_port};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct ProxyProcess {
    child: Option<Child>,
    pub port: u16,
    pub metrics_port: u16,
    pub dir: PathBuf,
    starts: usize,
    /// Run under this descriptor limit (soft and hard), via prlimit.
    nofile: Option<u64>,
}

impl ProxyProcess {
    /// Writes `origins_and_more` (everything after `listen`/`metrics`) into a
    /// config in `dir`, with the journal in `dir/journal`, and starts hothot.
    pub async fn start(dir: &Path, origins_and_more: &str) -> ProxyProcess {
        Self::start_with_nofile(dir, origins_and_more, None).await
    }

    /// The same, with at most `nofile` open descriptors (`ulimit -n`).
    pub async fn start_with_nofile(
        dir: &Path,
        origins_and_more: &str,
        nofile: Option<u64>,
    ) -> ProxyProcess {
        Self::start_with_server(dir, "", origins_and_more, nofile).await
    }

    /// `server_extra`: more keys of the `server` section (`, pid_file: ...`).
    pub async fn start_with_server(
        dir: &Path,
        server_extra: &str,
        origins_and_more: &str,
        nofile: Option<u64>,
    ) -> ProxyProcess {
        std::fs::create_dir_all(dir).unwrap();
        let (port, metrics_port) = two_free_ports();
        // `server_extra` may set its own grace period.
        let grace = match server_extra.contains("grace_period_seconds") {
            true => "",
            false => ", grace_period_seconds: 0",
        };
        let config = format!(
            "server: {{threads: 2{grace}, graceful_shutdown_timeout_seconds: 2{server_extra}}}\n\
             listen: [\"127.0.0.1:{port}\"]\nmetrics: {{listen: \"127.0.0.1:{metrics_port}\"}}\n{origins_and_more}"
        );
        std::fs::write(dir.join("hothot.yaml"), config).unwrap();
        let mut process = ProxyProcess {
            child: None,
            port,
            metrics_port,
            dir: dir.to_owned(),
            starts: 0,
            nofile,
        };
        process.spawn().await;
        process
    }

    /// Starts hothot again on the same config, ports and journal.
    pub async fn spawn(&mut self) {
        let child = self.launch(&[]);
        self.child = Some(child);
        wait_for_port(self.port).await;
    }

    /// An upgrade as an operator does it: `hothot -u` on the same config
    /// beside the running process, then SIGQUIT to the old one, which hands
    /// over its listening sockets. The new process is this one from then
    /// on; returns how long the old one took to exit after its SIGQUIT.
    pub async fn upgrade(&mut self) -> Duration {
        let new = self.launch(&["-u"]);
        // The new process waits for the sockets (it asks once a second).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut old = self.child.replace(new).expect("a running hothot");
        signal(&old, "-QUIT");
        let sent = std::time::Instant::now();
        assert!(
            exits_within(&mut old, Duration::from_secs(60)).await,
            "the old hothot still runs 60 s after SIGQUIT"
        );
        sent.elapsed()
    }

    /// A hothot process on this one's config, with `args`; its log is the
    /// next `hothot-N.log`.
    fn launch(&mut self, args: &[&str]) -> Child {
        self.starts += 1;
        let log =
            std::fs::File::create(self.dir.join(format!("hothot-{}.log", self.starts))).unwrap();
        let mut command = match self.nofile {
            Some(n) => {
                let mut prlimit = Command::new("prlimit");
                prlimit.arg(format!("--nofile={n}:{n}"));
                prlimit.arg(env!("CARGO_BIN_EXE_hothot"));
                prlimit
            }
            None => Command::new(env!("CARGO_BIN_EXE_hothot")),
        };
        command
            .args(args)
            .arg("-c")
            .arg(self.dir.join("hothot.yaml"))
            .current_dir(&self.dir)
            // The default journal and pid file (systemd's directories)
            // are this test's own.
            .env("STATE_DIRECTORY", &self.dir)
            .env("RUNTIME_DIRECTORY", &self.dir)
            // `HOTHOT_TEST_LOG=debug cargo test ...` when a test needs more.
            .env(
                "RUST_LOG",
                std::env::var("HOTHOT_TEST_LOG").unwrap_or("info".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("hothot starts")
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM, then wait for the graceful exit.
    pub async fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, "-TERM");
            if !exits_within(&mut child, Duration::from_secs(10)).await {
                child.kill().unwrap();
                panic!("hothot did not exit within 10s of SIGTERM");
            }
        }
    }

    /// Waits up to `within` for the process to exit by itself (after a
    /// signal the test sent some other way); whether it did.
    pub async fn wait_for_exit(&mut self, within: Duration) -> bool {
        let exited = match &mut self.child {
            Some(child) => exits_within(child, within).await,
            None => true,
        };
        if exited {
            self.child = None;
        }
        exited
    }

    /// The process id (prlimit execs hothot in its own place).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub async fn metrics(&self) -> String {
        super::get(&format!("http://127.0.0.1:{}/metrics", self.metrics_port))
            .await
            .body
    }

    /// Everything the process logged, over all its starts.
    pub fn log(&self) -> String {
        (1..=self.starts)
            .map(|n| {
                std::fs::read_to_string(self.dir.join(format!("hothot-{n}.log")))
                    .unwrap_or_default()
            })
            .collect()
    }

    pub fn journal_dir(&self) -> PathBuf {
        self.dir.join("journal")
    }
}

/// Sends `child` a signal (`-TERM`, `-QUIT`, ...), as an operator's `kill` does.
fn signal(child: &Child, name: &str) {
    let sent = Command::new("kill")
        .args([name, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

/// Whether `child` exits within `within`.
async fn exits_within(child: &mut Child, within: Duration) -> bool {
    let deadline = std::time::Instant::now() + within;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        self.kill();
        if !std::thread::panicking() && std::env::var_os("KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
