//! The command line: `hothot -c FILE` runs, `hothot -t -c FILE` only validates.
//! Pingora's own flags (`-d` daemon, `-u` upgrade) keep their meaning.

use crate::{config, server};
use pingora_core::server::configuration::Opt;
use std::path::PathBuf;

/// Runs hothot with the process's arguments; returns the exit code on failure.
pub fn main() -> i32 {
    let mut opt = Opt::parse_args();
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
    match server::build(&config, Some(opt)) {
        Ok(server) => server.run_forever(),
        Err(e) => {
            eprintln!("hothot: cannot start: {e}");
            1
        }
    }
}
