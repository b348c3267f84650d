//! How often one kind of log line may be written: a line any client can
//! cause (a failed admin login, a side listener's broken connection) is
//! written at most [`BURST`] times per [`WINDOW`]; the next line written
//! after a quiet spell says how many were suppressed meanwhile, as the
//! kernel's "N callbacks suppressed".
//!
//! One [`Throttle`] per kind of line, usually a `static`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lines of one kind written per window.
pub const BURST: u32 = 5;
/// The window.
pub const WINDOW: Duration = Duration::from_secs(10);

/// The state of one kind of line.
pub struct Throttle {
    state: Mutex<Window>,
}

struct Window {
    started: Option<Instant>,
    written: u32,
    suppressed: u64,
}

impl Throttle {
    pub const fn new() -> Self {
        Throttle {
            state: Mutex::new(Window {
                started: None,
                written: 0,
                suppressed: 0,
            }),
        }
    }

    /// May a line be written now? `Some(n)`: yes, and `n` lines were
    /// suppressed since the last one written (say so in this one).
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Option<u64> {
        let mut window = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if window
            .started
            .is_none_or(|s| now.duration_since(s) >= WINDOW)
        {
            window.started = Some(now);
            window.written = 0;
        }
        if window.written >= BURST {
            window.suppressed += 1;
            return None;
        }
        window.written += 1;
        Some(std::mem::take(&mut window.suppressed))
    }
}

impl Default for Throttle {
    fn default() -> Self {
        Self::new()
    }
}

/// The text a line adds when others were suppressed before it.
pub fn suppressed_note(suppressed: u64) -> String {
    match suppressed {
        0 => String::new(),
        n => format!(" ({n} similar lines suppressed)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_lines_are_counted_until_the_next_window() {
        let throttle = Throttle::new();
        let start = Instant::now();
        for _ in 0..BURST {
            assert_eq!(throttle.admit_at(start), Some(0));
        }
        for _ in 0..1000 {
            assert_eq!(throttle.admit_at(start + Duration::from_secs(1)), None);
        }
        assert_eq!(throttle.admit_at(start + WINDOW), Some(1000));
        assert_eq!(throttle.admit_at(start + WINDOW), Some(0));
        assert_eq!(suppressed_note(1000), " (1000 similar lines suppressed)");
        assert_eq!(suppressed_note(0), "");
    }
}
