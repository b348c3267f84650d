//! The settings hothot hands Pingora's server (`ServerConf`): the
//! `server` section's keys passed through, and hothot's own defaults where
//! Pingora's do not suit a proxy (each below says why).

use crate::config::Config;
use pingora_core::server::configuration::ServerConf;

/// Pingora's work-stealing runtime, when `server.work_stealing` is not set:
/// off for one worker thread, on for more. One current-thread runtime
/// (`false`) measured 6% less CPU per request (median of ten interleaved
/// rounds) and has nothing to steal from with one thread; with two or more
/// threads an origin connection released on one thread often cannot be
/// taken by another ("failed to acquire reusable stream"), so connections
/// would churn (README's "Performance").
fn default_work_stealing(threads: usize) -> bool {
    threads > 1
}

/// Pingora keeps 128 idle origin connections in all, least recently used
/// first out: with 1,000 origins taking turns, every connection was gone
/// before its origin's next turn, and each request opened a new one.
const IDLE_UPSTREAM_CONNECTIONS_PER_ORIGIN: usize = 2;

/// Pingora's cap on attempts per request; hothot's `retries` (validated
/// below it: [`crate::config::MAX_RETRIES`]) is what decides.
const MAX_ATTEMPTS: usize = crate::config::MAX_RETRIES as usize + 1;

/// Pingora's `grace_period_seconds` default is 300: too long for a proxy whose
/// peers health-check it every few seconds.
const DEFAULT_GRACE_PERIOD_SECONDS: u64 = 5;
const DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT_SECONDS: u64 = 5;

/// Timeouts longer than this many whole seconds run on tokio's timer, not
/// Pingora's fast timer (Pingora's default: above 15 minutes). The fast timer
/// keeps every timeout until its deadline, in a map of 10 ms buckets under a
/// lock, even when the read it guarded finished in microseconds: with
/// hothot's 30 s origin read timeout and 60 s idle timeout that is thousands
/// of live buckets, and a lookup and a reference per read. Tokio's wheel
/// drops a finished timeout at once. Measured with callgrind: about 1,400
/// instructions less per proxied request.
const TIMEOUTS_ON_TOKIO_ABOVE_SECONDS: u64 = 0;

pub fn server_conf(config: &Config) -> ServerConf {
    let s = &config.server;
    let mut conf = ServerConf::default();
    conf.threads = s.threads.unwrap_or(conf.threads);
    conf.work_stealing = s
        .work_stealing
        .unwrap_or_else(|| default_work_stealing(conf.threads));
    conf.daemon = s.daemon.unwrap_or(false);
    conf.error_log = s.error_log.clone();
    conf.pid_file = config.pid_file.to_string_lossy().into_owned();
    conf.upgrade_sock = s.upgrade_sock.clone().unwrap_or(conf.upgrade_sock);
    conf.user = s.user.clone();
    conf.group = s.group.clone();
    conf.grace_period_seconds = Some(
        s.grace_period_seconds
            .unwrap_or(DEFAULT_GRACE_PERIOD_SECONDS),
    );
    conf.graceful_shutdown_timeout_seconds = Some(
        s.graceful_shutdown_timeout_seconds
            .unwrap_or(DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT_SECONDS),
    );
    conf.upstream_keepalive_pool_size = s.upstream_keepalive_pool_size.unwrap_or(
        conf.upstream_keepalive_pool_size
            .max(IDLE_UPSTREAM_CONNECTIONS_PER_ORIGIN * config.origins.len()),
    );
    conf.listener_tasks_per_fd = s
        .listener_tasks_per_fd
        .unwrap_or(conf.listener_tasks_per_fd);
    // Pingora counts attempts, not retries, in `max_retries`. hothot decides
    // each retry itself (a reload may change `retries`): Pingora's cap only
    // has to stay out of the way.
    conf.max_retries = MAX_ATTEMPTS;
    conf.fast_timeout_to_tokio_threshold_seconds = Some(TIMEOUTS_ON_TOKIO_ABOVE_SECONDS);
    conf
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_worker_thread_runs_without_work_stealing_and_more_steal() {
        assert!(!super::default_work_stealing(1));
        assert!(super::default_work_stealing(2));
        assert!(super::default_work_stealing(8));
    }
}
