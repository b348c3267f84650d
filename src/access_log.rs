//! The access log (`access_log`): one line per request, written by a
//! thread of its own so that no worker thread waits on a disk.
//!
//! Requests append their line to a shared buffer; the writer thread writes
//! the buffer out every 100 ms, or as soon as it holds 64 KiB (nginx's
//! `access_log ... buffer=64k flush=100ms`): a write per request, and a
//! thread wake-up per request, cost more than the rest of the request
//! (measured in README's "Performance"). When the buffer holds 16 MiB (a
//! disk far slower than the traffic), lines are dropped and counted in
//! `hothot_access_log_dropped_total`, never waited for. `SIGUSR1` makes the
//! writer reopen the file (logrotate's `postrotate`): lines logged before
//! the signal are in the old file, later ones in the new. Shutdown writes
//! out what is buffered.

use crate::config::{AccessLogConfig, AccessLogFormat};
use prometheus::IntCounter;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

/// Written out at least this often...
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// ...or as soon as this much is buffered.
const FLUSH_BYTES: usize = 64 * 1024;
/// Beyond this, lines are dropped (and counted).
const MAX_BUFFERED: usize = 16 * 1024 * 1024;

/// Everything one line says about a request.
pub struct Line<'a> {
    pub time: SystemTime,
    pub client: Option<std::net::IpAddr>,
    pub method: &'a str,
    /// Path and query.
    pub target: &'a str,
    pub protocol: &'a str,
    pub status: u16,
    pub body_bytes: usize,
    pub referer: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub duration: Duration,
    /// The origin of the last attempt.
    pub origin: Option<&'a str>,
    pub attempts: usize,
    /// The status the origin answered with (the last attempt's).
    pub upstream_status: Option<u16>,
    /// A replicated write: its version and what became of its replication.
    pub write: Option<(u64, &'static str)>,
    /// The index of the `replication.routes` rule that decided what the
    /// request was, if one did.
    pub route: Option<usize>,
}

pub struct AccessLog {
    format: AccessLogFormat,
    shared: Arc<Shared>,
    dropped: IntCounter,
}

struct Shared {
    buffer: Mutex<Vec<u8>>,
    /// Wakes the writer early (a full buffer, a reopen).
    wake: Condvar,
    reopen: AtomicBool,
    sink: Mutex<Sink>,
}

/// Where lines go.
enum Sink {
    Stdout,
    File(PathBuf, File),
}

impl Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Stdout => std::io::stdout().lock().write_all(bytes),
            Sink::File(_, file) => file.write_all(bytes),
        }
    }
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl AccessLog {
    /// Opens the log (a file that cannot be opened is a start-up error)
    /// and starts its writer thread.
    pub fn start(config: &AccessLogConfig, dropped: IntCounter) -> std::io::Result<Self> {
        let sink = match &config.path {
            None => Sink::Stdout,
            Some(path) => Sink::File(path.clone(), open(path)?),
        };
        let shared = Arc::new(Shared {
            buffer: Mutex::new(Vec::with_capacity(FLUSH_BYTES)),
            wake: Condvar::new(),
            reopen: AtomicBool::new(false),
            sink: Mutex::new(sink),
        });
        let writer = shared.clone();
        std::thread::Builder::new()
            .name("hothot-access-log".into())
            .spawn(move || loop {
                writer.wait();
                writer.write_out();
            })?;
        Ok(AccessLog {
            format: config.format,
            shared,
            dropped,
        })
    }

    /// Asks the writer to reopen the file (log rotation).
    pub fn reopen(&self) {
        self.shared.reopen.store(true, Ordering::Release);
        self.shared.wake.notify_one();
    }

    /// Writes out what is buffered, now (at shutdown).
    pub fn flush(&self) {
        self.shared.write_out();
    }

    /// Adds the line for `entry`; counts it as dropped if the buffer is full.
    pub fn log(&self, entry: &Line) {
        let line = match self.format {
            AccessLogFormat::Combined => combined(entry),
            AccessLogFormat::Json => json(entry),
        };
        let mut buffer = lock(&self.shared.buffer);
        if buffer.len() + line.len() > MAX_BUFFERED {
            drop(buffer);
            self.dropped.inc();
            return;
        }
        buffer.extend_from_slice(line.as_bytes());
        if buffer.len() >= FLUSH_BYTES && buffer.len() - line.len() < FLUSH_BYTES {
            self.shared.wake.notify_one();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A writer that panicked left bytes, not broken invariants.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Sleeps until the next write-out is due.
    fn wait(&self) {
        let buffer = lock(&self.buffer);
        let _ = self.wake.wait_timeout_while(buffer, FLUSH_EVERY, |b| {
            b.len() < FLUSH_BYTES && !self.reopen.load(Ordering::Acquire)
        });
    }

    /// Writes the buffered lines out, then reopens the file if asked to.
    fn write_out(&self) {
        // The sink's lock is taken first and held throughout, so that lines
        // reach the file in the order they were logged.
        let mut sink = lock(&self.sink);
        let pending = std::mem::take(&mut *lock(&self.buffer));
        if !pending.is_empty() {
            if let Err(e) = sink.write(&pending) {
                log::error!(
                    "access log: write failed, {} bytes lost: {e}",
                    pending.len()
                );
            }
        }
        if self.reopen.swap(false, Ordering::AcqRel) {
            if let Sink::File(path, file) = &mut *sink {
                match open(path) {
                    Ok(new) => *file = new,
                    Err(e) => log::error!("access log: cannot reopen {}: {e}", path.display()),
                }
            }
        }
    }
}

/// The request's end time as both formats write it, formatted once per
/// second per thread (as nginx caches its time strings).
fn with_times<T>(time: SystemTime, use_them: impl FnOnce(&str, &str) -> T) -> T {
    thread_local! {
        static CACHE: std::cell::RefCell<(u64, String, String)> =
            const { std::cell::RefCell::new((u64::MAX, String::new(), String::new())) };
    }
    let second = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CACHE.with_borrow_mut(|(cached, combined, iso)| {
        if *cached != second {
            let timestamp = jiff::Timestamp::from_second(i64::try_from(second).unwrap_or(0))
                .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
            *combined = timestamp
                .to_zoned_datetime(jiff::tz::TimeZone::UTC)
                .strftime("%d/%b/%Y:%H:%M:%S %z")
                .to_string();
            *iso = timestamp.to_string();
            *cached = second;
        }
        use_them(combined, iso)
    })
}

/// nginx's `combined` format, then hothot's fields as `key=value`:
/// `127.0.0.1 - - [27/Nov/2026:02:58:10 +0000] "GET /a HTTP/1.1" 200 5 "-" "curl/8" rt=0.001 origin=a attempts=1 upstream_status=200`
fn combined(e: &Line) -> String {
    use std::fmt::Write as _;
    let mut line = String::with_capacity(200);
    match e.client {
        Some(ip) => {
            let _ = write!(line, "{ip}");
        }
        None => line.push('-'),
    }
    with_times(e.time, |time, _| {
        let _ = write!(line, " - - [{time}] \"");
    });
    push_escaped(&mut line, e.method);
    line.push(' ');
    push_escaped(&mut line, e.target);
    let _ = write!(line, " {}\" {} {} \"", e.protocol, e.status, e.body_bytes);
    push_escaped(&mut line, e.referer.unwrap_or("-"));
    line.push_str("\" \"");
    push_escaped(&mut line, e.user_agent.unwrap_or("-"));
    let _ = write!(
        line,
        "\" rt={:.3} origin={} attempts={} upstream_status=",
        e.duration.as_secs_f64(),
        e.origin.unwrap_or("-"),
        e.attempts,
    );
    match e.upstream_status {
        Some(status) => {
            let _ = write!(line, "{status}");
        }
        None => line.push('-'),
    }
    if let Some((version, outcome)) = e.write {
        let _ = write!(line, " version={version} replication={outcome}");
    }
    match e.route {
        Some(route) => {
            let _ = write!(line, " route={route}");
        }
        None => line.push_str(" route=-"),
    }
    line.push('\n');
    line
}

/// One JSON object per line.
fn json(e: &Line) -> String {
    #[derive(serde::Serialize)]
    struct Line<'a> {
        time: &'a str,
        client: Option<std::net::IpAddr>,
        method: &'a str,
        path: &'a str,
        protocol: &'a str,
        status: u16,
        bytes: usize,
        referer: Option<&'a str>,
        user_agent: Option<&'a str>,
        duration_seconds: f64,
        origin: Option<&'a str>,
        attempts: usize,
        upstream_status: Option<u16>,
        #[serde(skip_serializing_if = "Option::is_none")]
        version: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        replication: Option<&'a str>,
        route: Option<usize>,
    }
    let mut line = with_times(e.time, |_, time| {
        serde_json::to_string(&Line {
            time,
            client: e.client,
            method: e.method,
            path: e.target,
            protocol: e.protocol,
            status: e.status,
            bytes: e.body_bytes,
            referer: e.referer,
            user_agent: e.user_agent,
            duration_seconds: e.duration.as_secs_f64(),
            origin: e.origin,
            attempts: e.attempts,
            upstream_status: e.upstream_status,
            version: e.write.map(|(v, _)| v),
            replication: e.write.map(|(_, r)| r),
            route: e.route,
        })
        .unwrap_or_default()
    });
    line.push('\n');
    line
}

/// Appends `value`, escaping what would break a quoted field of a combined
/// line as nginx does: `"`, `\` and control characters as `\xHH`.
fn push_escaped(line: &mut String, value: &str) {
    use std::fmt::Write as _;
    if !value
        .chars()
        .any(|c| c == '"' || c == '\\' || c.is_control())
    {
        line.push_str(value);
        return;
    }
    for c in value.chars() {
        match c {
            '"' | '\\' => {
                let _ = write!(line, "\\x{:02X}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(line, "\\x{:02X}", c as u32);
            }
            c => line.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Line<'static> {
        Line {
            time: SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_748_290),
            client: Some("127.0.0.1".parse().unwrap()),
            method: "PUT",
            target: "/kv/a?x=\"1\"",
            protocol: "HTTP/1.1",
            status: 200,
            body_bytes: 5,
            referer: None,
            user_agent: Some("curl/8"),
            duration: Duration::from_millis(3),
            origin: Some("a"),
            attempts: 1,
            upstream_status: Some(200),
            write: Some((42, "queued")),
            route: Some(3),
        }
    }

    #[test]
    fn combined_lines_look_like_nginx_and_escape_quotes() {
        let line = combined(&entry());
        assert_eq!(
            line,
            "127.0.0.1 - - [27/Nov/2026:02:58:10 +0000] \"PUT /kv/a?x=\\x221\\x22 HTTP/1.1\" 200 5 \"-\" \"curl/8\" \
             rt=0.003 origin=a attempts=1 upstream_status=200 version=42 replication=queued route=3\n"
        );
        let unrouted = combined(&Line {
            route: None,
            ..entry()
        });
        assert!(unrouted.ends_with(" route=-\n"), "{unrouted}");
    }

    #[test]
    fn json_lines_parse() {
        let value: serde_json::Value = serde_json::from_str(&json(&entry())).unwrap();
        assert_eq!(value["status"], 200);
        assert_eq!(value["path"], "/kv/a?x=\"1\"");
        assert_eq!(value["version"], 42);
        assert_eq!(value["route"], 3);
        assert_eq!(value["time"], "2026-11-27T02:58:10Z");
    }
}
