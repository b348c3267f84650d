//! The command line: `hothot -c FILE` runs, `hothot -t -c FILE` only
//! validates, `hothot -s reload|reopen -c FILE` signals the hothot running
//! with FILE (the process named by its `server.pid_file`), as nginx's `-s`.
//! Pingora's own flags (`-d` daemon, `-u` upgrade) keep their meaning.

use crate::{config, server};
use pingora_core::server::configuration::Opt;
use std::path::PathBuf;

/// Runs hothot with the process's arguments; returns the exit code on failure.
pub fn main() -> i32 {
    let mut args: Vec<String> = std::env::args().collect();
    let signal = take_signal(&mut args);
    let mut opt = Opt::parse_from_args(args);
    let Some(path) = opt.conf.take().map(PathBuf::from) else {
        eprintln!("hothot: no config file given: run `hothot -c FILE` (or `hothot -t -c FILE` to check it)");
        return 2;
    };
    let config = match config::load(&path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("hothot: {}: {e}", path.display());
            return 1;
        }
    };
    if let Some(signal) = signal {
        return send_signal(&signal, &config);
    }
    if opt.test {
        for warning in &config.warnings {
            eprintln!("hothot: {}: warning: {warning}", path.display());
        }
        // Not an error here: the running hothot whose next config this is
        // holds these addresses (`-u` takes them over).
        for busy in server::unbindable(&config) {
            eprintln!("hothot: {}: warning: {busy}", path.display());
        }
        // Also a warning: the running process's descriptor limit may differ.
        if let Err(e) = server::connection_budget(&config) {
            eprintln!("hothot: {}: warning: {e}", path.display());
        }
        println!("hothot: {} is valid", path.display());
        return 0;
    }
    crate::logging::init();
    for warning in &config.warnings {
        log::warn!("{}: {warning}", path.display());
    }
    let daemon = opt.daemon || config.server.daemon == Some(true);
    match server::build(&config, Some(opt), Some(&path)) {
        Ok(server) => {
            // Pingora writes the pid file of a daemon itself.
            if let (false, Some(pid_file)) = (daemon, &config.server.pid_file) {
                if let Err(e) = std::fs::write(pid_file, format!("{}\n", std::process::id())) {
                    log::error!("server.pid_file: cannot write {pid_file}: {e}");
                }
            }
            server.run_forever()
        }
        Err(e) => {
            eprintln!("hothot: cannot start: {e}");
            1
        }
    }
}

/// Removes `-s NAME` / `--signal NAME` from `args`; returns NAME.
fn take_signal(args: &mut Vec<String>) -> Option<String> {
    let at = args.iter().position(|a| a == "-s" || a == "--signal")?;
    args.remove(at);
    (at < args.len()).then(|| args.remove(at))
}

/// `hothot -s reload|reopen -c FILE`: SIGHUP (reload the configuration) or
/// SIGUSR1 (reopen the access log) to the hothot whose pid FILE's
/// `server.pid_file` holds.
fn send_signal(name: &str, config: &config::Config) -> i32 {
    let signal = match name {
        "reload" => libc::SIGHUP,
        "reopen" => libc::SIGUSR1,
        other => {
            eprintln!("hothot: -s {other}: unknown signal name; use reload or reopen");
            return 2;
        }
    };
    let Some(pid_file) = &config.server.pid_file else {
        eprintln!("hothot: -s {name} needs server.pid_file in the config (where the running hothot writes its pid)");
        return 1;
    };
    let pid = match std::fs::read_to_string(pid_file) {
        Ok(text) => match text.trim().parse::<libc::pid_t>() {
            Ok(pid) if pid > 0 => pid,
            _ => {
                eprintln!("hothot: {pid_file} does not hold a process id");
                return 1;
            }
        },
        Err(e) => {
            eprintln!("hothot: cannot read {pid_file} (is hothot running?): {e}");
            return 1;
        }
    };
    // A stale pid file may name another program now: only signal hothot.
    let command = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if !command.trim().starts_with("hothot") {
        eprintln!("hothot: process {pid} (from {pid_file}) is not hothot; is the pid file stale?");
        return 1;
    }
    // SAFETY: kill(2) has no memory-safety preconditions.
    if unsafe { libc::kill(pid, signal) } != 0 {
        eprintln!(
            "hothot: cannot signal process {pid}: {}",
            std::io::Error::last_os_error()
        );
        return 1;
    }
    println!("hothot: sent {name} to process {pid}");
    0
}
