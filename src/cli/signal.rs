//! `hothot -s NAME`: signals the running hothot, the process whose pid its
//! `server.pid_file` holds, as nginx's `-s`; and the pid file itself, which
//! hothot writes at start and removes at exit.

use crate::reload::verdict::{self, Verdict};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// What `-s` sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Signal {
    /// SIGHUP: reload the configuration file; waits for the verdict
    Reload,
    /// SIGUSR1: reopen the access log (after log rotation)
    Reopen,
    /// SIGTERM: stop accepting, finish the requests in flight, exit
    Stop,
    /// SIGQUIT: hand the listening sockets to a hothot started with -u (if
    /// any), finish the requests in flight, exit
    Quit,
}

impl Signal {
    fn number(self) -> libc::c_int {
        match self {
            Signal::Reload => libc::SIGHUP,
            Signal::Reopen => libc::SIGUSR1,
            Signal::Stop => libc::SIGTERM,
            Signal::Quit => libc::SIGQUIT,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Signal::Reload => "reload",
            Signal::Reopen => "reopen",
            Signal::Stop => "stop",
            Signal::Quit => "quit",
        }
    }
}

/// How long `-s reload` waits for the running hothot's verdict: a reload
/// reads and checks files and resolves names, which takes milliseconds
/// unless a resolver hangs.
const VERDICT_WAIT: Duration = Duration::from_secs(30);

/// Sends `signal` to the hothot whose pid `pid_file` holds; returns the
/// exit code.
pub fn send(signal: Signal, pid_file: &Path) -> i32 {
    let name = signal.name();
    match running_pid(pid_file) {
        Ok(pid) => {
            let before = Verdict::read(pid_file);
            // SAFETY: kill(2) has no memory-safety preconditions.
            if unsafe { libc::kill(pid as libc::pid_t, signal.number()) } != 0 {
                eprintln!(
                    "hothot: cannot signal process {pid}: {}",
                    std::io::Error::last_os_error()
                );
                return 1;
            }
            if signal != Signal::Reload {
                println!("hothot: sent {name} to process {pid}");
                return 0;
            }
            await_verdict(pid_file, pid, before.as_ref())
        }
        Err(reason) => {
            eprintln!("hothot: -s {name}: {reason}");
            1
        }
    }
}

/// The pid in `pid_file`, checked to be a running hothot.
fn running_pid(pid_file: &Path) -> Result<u32, String> {
    let shown = pid_file.display();
    let text = std::fs::read_to_string(pid_file).map_err(|e| {
        format!("cannot read {shown} (is hothot running? server.pid_file names the file): {e}")
    })?;
    let pid = match text.trim().parse::<u32>() {
        Ok(pid) if pid > 0 && pid <= i32::MAX as u32 => pid,
        _ => return Err(format!("{shown} does not hold a process id")),
    };
    // A stale pid file may name another program now: only signal hothot.
    let command = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if !command.trim().starts_with("hothot") {
        return Err(format!(
            "process {pid} (from {shown}) is not hothot; is the pid file stale?"
        ));
    }
    Ok(pid)
}

/// Waits for process `pid`'s verdict on the reload just signalled.
fn await_verdict(pid_file: &Path, pid: u32, before: Option<&Verdict>) -> i32 {
    let deadline = Instant::now() + VERDICT_WAIT;
    while Instant::now() < deadline {
        if let Some(verdict) = Verdict::read(pid_file).filter(|v| v.answers(pid, before)) {
            return if verdict.applied {
                println!("hothot: process {pid}: {}", verdict.message);
                0
            } else {
                eprintln!("hothot: process {pid}: {}", verdict.message);
                1
            };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "hothot: sent reload to process {pid}, which gave no verdict in {} s \
         (in {}); see its log",
        VERDICT_WAIT.as_secs(),
        verdict::path(pid_file).display()
    );
    1
}

/// Writes this process's pid to `pid_file`, creating its directory; a
/// failure is logged, not fatal (only `hothot -s` needs the file).
pub fn write_pid_file(pid_file: &Path) {
    let written = make_pid_dir(pid_file)
        .and_then(|()| std::fs::write(pid_file, format!("{}\n", std::process::id())));
    if let Err(e) = written {
        log::warn!(
            "server.pid_file: cannot write {}: {e}; `hothot -s` will not find this process",
            pid_file.display()
        );
    }
}

/// Creates the pid file's directory (`/run/hothot` by default), which
/// Pingora does not when it writes a daemon's pid file.
pub fn make_pid_dir(pid_file: &Path) -> std::io::Result<()> {
    pid_file
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .map_or(Ok(()), std::fs::create_dir_all)
}

/// The pid file removed at exit.
static PID_FILE: OnceLock<PathBuf> = OnceLock::new();

/// Removes `pid_file` (and the reload verdict beside it) when this process
/// exits, whichever way Pingora ends it (`std::process::exit` runs the C
/// library's exit handlers), if it still holds this process's pid: during
/// an upgrade the new process has written its own.
pub fn remove_pid_file_at_exit(pid_file: &Path) {
    extern "C" fn remove() {
        let Some(pid_file) = PID_FILE.get() else {
            return;
        };
        let ours = std::fs::read_to_string(pid_file)
            .is_ok_and(|text| text.trim() == std::process::id().to_string());
        if ours {
            let _ = std::fs::remove_file(pid_file);
            let _ = std::fs::remove_file(verdict::path(pid_file));
        }
    }
    if PID_FILE.set(pid_file.to_owned()).is_ok() {
        // SAFETY: `remove` is a plain function that does not unwind.
        unsafe { libc::atexit(remove) };
    }
}
