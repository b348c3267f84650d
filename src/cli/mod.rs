//! The command line, as an nginx operator expects it: `hothot -c FILE` runs,
//! `-t` only checks the file, `-s reload|reopen|stop|quit` signals the
//! running hothot (the process in the file's `server.pid_file`), `-d` runs
//! in the background, `-u` takes over a running hothot's sockets,
//! `-V` prints the versions. The same definitions make `--help` and the
//! man page (`packaging/hothot.1`, checked by a test).

mod signal;

use crate::{config, server};
use clap::{CommandFactory, FromArgMatches, Parser};
use pingora_core::server::configuration::Opt;
use std::path::PathBuf;

pub use signal::Signal;

/// Where hothot looks for its configuration without `-c`, as nginx looks
/// for `/etc/nginx/nginx.conf` (the Debian package installs one there).
pub const DEFAULT_CONF: &str = "/etc/hothot/hothot.yaml";

/// hothot's command-line arguments.
#[derive(Debug, Parser)]
#[command(
    name = "hothot",
    version = env!("CARGO_PKG_VERSION"),
    about = "A reverse proxy for hot-hot (active-active) origin pools",
    long_about = "hothot spreads requests over every origin of a pool in proportion to \
                  its capacity, probes the origins, and replicates every write to every \
                  origin in one order through a durable journal.",
    after_long_help = "Signals: SIGHUP reloads the configuration, SIGUSR1 reopens the access \
                       log, SIGTERM stops gracefully, SIGQUIT hands the listening sockets to a \
                       hothot started with -u and then stops gracefully, SIGINT stops at once.\n\n\
                       Files:\n  /etc/hothot/hothot.yaml  the configuration (-c)\n  \
                       /run/hothot/hothot.pid  the pid file (server.pid_file; under systemd \
                       $RUNTIME_DIRECTORY/hothot.pid)\n  \
                       /var/lib/hothot/journal  the replication journal \
                       (replication.journal.dir; under systemd $STATE_DIRECTORY/journal)\n\n\
                       Examples:\n  hothot -t -c /etc/hothot/hothot.yaml\n  \
                       hothot -s reload\n  hothot -c conf/hothot.yaml",
    disable_version_flag = true,
    // `--help` as `-h`: one line per option; the long text is the man page's.
    disable_help_flag = true
)]
pub struct Args {
    /// The configuration file
    #[arg(short = 'c', long = "conf", value_name = "FILE", default_value = DEFAULT_CONF)]
    pub conf: PathBuf,
    /// Check the configuration file and exit
    #[arg(short = 't', long = "test")]
    pub test: bool,
    /// Signal the running hothot and exit (reload waits for its verdict)
    #[arg(
        short = 's',
        long = "signal",
        value_name = "SIGNAL",
        value_enum,
        long_help = "Signal the running hothot, the process whose pid is in the file's \
                     server.pid_file, and exit. reload waits for the process's verdict and \
                     exits 1 with its reason when it refused the file."
    )]
    pub signal: Option<Signal>,
    /// Run in the background (as server.daemon: true)
    #[arg(short = 'd', long = "daemon")]
    pub daemon: bool,
    /// Take over a running hothot's listening sockets (then: hothot -s quit)
    #[arg(
        short = 'u',
        long = "upgrade",
        long_help = "Take over the listening sockets of the running hothot (needs \
                     server.upgrade_sock); then send the old one SIGQUIT (hothot -s quit), \
                     which hands its sockets over and finishes its requests: an upgrade \
                     without a refused connection."
    )]
    pub upgrade: bool,
    /// Print the versions of hothot, Pingora and OpenSSL
    #[arg(short = 'V', long = "version", short_alias = 'v')]
    pub version: bool,
    /// Print help (the man page, hothot(1), says more)
    #[arg(short = 'h', long = "help", action = clap::ArgAction::HelpShort)]
    pub help: Option<bool>,
}

/// clap's definition of the command line (for the man page).
pub fn command() -> clap::Command {
    Args::command()
}

/// What `hothot -V` prints: hothot's version and commit, the Pingora it was
/// built with, and the OpenSSL it runs with (the library's own word: with
/// the system's shared libssl, what Debian's updates installed).
pub fn version_text() -> String {
    format!(
        "hothot {} (commit {})\nPingora {}\n{}\n",
        env!("CARGO_PKG_VERSION"),
        env!("HOTHOT_GIT_COMMIT"),
        env!("HOTHOT_PINGORA_VERSION"),
        openssl::version::version(),
    )
}

/// Runs hothot with the process's arguments; returns the exit code.
pub fn main() -> i32 {
    let args = match Args::from_arg_matches_mut(&mut command().get_matches()) {
        Ok(args) => args,
        Err(e) => e.exit(),
    };
    if args.version {
        print!("{}", version_text());
        return 0;
    }
    let path = &args.conf;
    if let Some(signal) = args.signal {
        // A reload's file is checked here first, as `nginx -s reload`
        // does: what the running process would refuse is refused now. The
        // other signals need only the pid file.
        let pid_file = match signal {
            Signal::Reload => config::load(path).map(|config| config.pid_file),
            _ => config::pid_file_of(path),
        };
        return match pid_file {
            Ok(pid_file) => signal::send(signal, &pid_file),
            Err(e) => {
                eprintln!("hothot: {}: {e}", path.display());
                1
            }
        };
    }
    let config = match config::load(path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("hothot: {}: {e}", path.display());
            return 1;
        }
    };
    if args.test {
        return check(path, &config);
    }
    run(&args, path, &config)
}

/// `hothot -t`: the file is valid; what it sets without effect, or what
/// may stop it from starting here, is a warning.
fn check(path: &std::path::Path, config: &config::Config) -> i32 {
    for warning in &config.warnings {
        eprintln!("hothot: {}: warning: {warning}", path.display());
    }
    // Not an error here: the running hothot whose next config this is
    // holds these addresses (`-u` takes them over).
    for busy in server::unbindable(config) {
        eprintln!("hothot: {}: warning: {busy}", path.display());
    }
    // Also a warning: the running process's descriptor limit may differ.
    if let Err(e) = server::connection_budget(config) {
        eprintln!("hothot: {}: warning: {e}", path.display());
    }
    println!("hothot: {} is valid", path.display());
    0
}

fn run(args: &Args, path: &std::path::Path, config: &config::Config) -> i32 {
    crate::signals::ignore_until_handled();
    crate::logging::init();
    for warning in &config.warnings {
        log::warn!("{}: {warning}", path.display());
    }
    let daemon = args.daemon || config.server.daemon == Some(true);
    let opt = Opt {
        upgrade: args.upgrade,
        daemon: args.daemon,
        ..Opt::default()
    };
    if daemon {
        // Pingora writes a daemon's pid file after the fork, into a
        // directory that must exist.
        if let Err(e) = signal::make_pid_dir(&config.pid_file) {
            log::warn!(
                "server.pid_file: cannot create the directory of {}: {e}",
                config.pid_file.display()
            );
        }
    }
    match server::build(config, Some(opt), Some(path)) {
        Ok(server) => {
            // Pingora writes the pid file of a daemon itself (after the fork).
            if !daemon {
                signal::write_pid_file(&config.pid_file);
            }
            signal::remove_pid_file_at_exit(&config.pid_file);
            server.run_forever()
        }
        Err(e) => {
            eprintln!("hothot: cannot start: {e}");
            1
        }
    }
}
