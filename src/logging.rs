//! Which log lines reach the operator: what `RUST_LOG` lets through (default
//! `info`), except one routine kind. Pingora logs an ERROR for every client
//! that closes, stalls or fails before its request header was read ("Fail
//! to proxy: Downstream ..."), one line per connection of a slowloris or a
//! port scan: any client could flood the log. Those are counted in
//! `hothot_client_aborts_total` and logged at debug.

use log::{Level, Log, Metadata, Record};
use prometheus::IntCounter;
use std::sync::LazyLock;

/// Process-wide, as the logger is. First used at start-up, by the metrics.
static CLIENT_ABORTS: LazyLock<IntCounter> = LazyLock::new(|| {
    IntCounter::new(
        "hothot_client_aborts_total",
        "Clients that closed, stalled or failed before their request header was read",
    )
    // Only an invalid metric name fails, and this one is a constant.
    .expect("a valid metric name")
});

/// The client abort counter.
pub fn client_aborts() -> &'static IntCounter {
    &CLIENT_ABORTS
}

/// Installs the logger (once; later calls do nothing).
pub fn init() {
    let env = env_logger::Env::default().default_filter_or("info");
    let logger = env_logger::Builder::from_env(env).build();
    let max = logger.filter();
    if log::set_boxed_logger(Box::new(Routine { inner: logger })).is_ok() {
        log::set_max_level(max);
    }
}

struct Routine {
    inner: env_logger::Logger,
}

impl Routine {
    fn is_client_abort(record: &Record) -> bool {
        const PREFIX: &str = "Fail to proxy: Downstream";
        record.level() == Level::Error
            && record.target().starts_with("pingora_proxy")
            && match record.args().as_str() {
                Some(text) => text.starts_with(PREFIX),
                // A formatted message: only these rare error lines pay for it.
                None => record.args().to_string().starts_with(PREFIX),
            }
    }
}

impl Log for Routine {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        if !Self::is_client_abort(record) {
            return self.inner.log(record);
        }
        CLIENT_ABORTS.inc();
        let debug = Record::builder()
            .args(*record.args())
            .level(Level::Debug)
            .target(record.target())
            .module_path(record.module_path())
            .file(record.file())
            .line(record.line())
            .build();
        if self.inner.enabled(debug.metadata()) {
            self.inner.log(&debug);
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::LevelFilter;

    #[test]
    fn client_aborts_are_counted_not_logged_as_errors() {
        let logger = Routine {
            inner: env_logger::Builder::new()
                .filter_level(LevelFilter::Info)
                .build(),
        };
        let before = client_aborts().get();
        let abort = format_args!("Fail to proxy: Downstream ConnectionClosed context: x");
        let record = Record::builder()
            .args(abort)
            .level(Level::Error)
            .target("pingora_proxy")
            .build();
        assert!(Routine::is_client_abort(&record));
        logger.log(&record);
        assert_eq!(client_aborts().get(), before + 1);
        let other = format_args!("Fail to proxy: Upstream ConnectRefused");
        let record = Record::builder()
            .args(other)
            .level(Level::Error)
            .target("pingora_proxy")
            .build();
        assert!(!Routine::is_client_abort(&record));
    }
}
