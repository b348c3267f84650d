//! How `hothot -s reload` learns whether the running hothot applied the
//! file or refused it: after every reload attempt the process writes its
//! verdict to a file beside its pid file (`<pid_file>.reload`), one line:
//! `<pid> <attempt> ok|refused <message>`. `-s reload` notes the line
//! before it signals, then waits for a newer one from that pid.
//!
//! A file rather than the admin API: the pid file is already how `-s` finds
//! the process, and it works whether or not the `admin` listener is
//! configured, without a token. The pid in the line tells a stale verdict
//! of an earlier process from this one's.

use std::path::{Path, PathBuf};

/// One reload attempt's outcome, as the running process wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The process that wrote it.
    pub pid: u32,
    /// Counts this process's reload attempts from 1.
    pub attempt: u64,
    pub applied: bool,
    /// What changed, or why the file was refused.
    pub message: String,
}

/// The verdict file of the process whose pid is in `pid_file`.
pub fn path(pid_file: &Path) -> PathBuf {
    let mut name = pid_file.as_os_str().to_owned();
    name.push(".reload");
    PathBuf::from(name)
}

impl Verdict {
    /// Writes the verdict whole (a reader never sees half a line): into a
    /// file aside, then renamed over the last one.
    pub fn record(&self, pid_file: &Path) -> std::io::Result<()> {
        let target = path(pid_file);
        let mut aside = target.as_os_str().to_owned();
        aside.push(".new");
        let outcome = if self.applied { "ok" } else { "refused" };
        // One line: a message never carries a newline into the file.
        let message = self.message.replace('\n', " ");
        let line = format!("{} {} {outcome} {message}\n", self.pid, self.attempt);
        std::fs::write(&aside, line)?;
        std::fs::rename(&aside, &target)
    }

    /// The last verdict written beside `pid_file`, if any can be read.
    pub fn read(pid_file: &Path) -> Option<Verdict> {
        let text = std::fs::read_to_string(path(pid_file)).ok()?;
        let mut fields = text.trim_end().splitn(4, ' ');
        let pid = fields.next()?.parse().ok()?;
        let attempt = fields.next()?.parse().ok()?;
        let applied = match fields.next()? {
            "ok" => true,
            "refused" => false,
            _ => return None,
        };
        let message = fields.next().unwrap_or_default().to_owned();
        Some(Verdict {
            pid,
            attempt,
            applied,
            message,
        })
    }

    /// Whether this verdict came after `before` (read before the signal)
    /// from process `pid`.
    pub fn answers(&self, pid: u32, before: Option<&Verdict>) -> bool {
        self.pid == pid && before.is_none_or(|b| b.pid != pid || self.attempt > b.attempt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_verdict_reads_back_and_answers_only_a_later_attempt() {
        let dir = std::env::temp_dir().join(format!("hothot-verdict-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pid_file = dir.join("hothot.pid");
        assert_eq!(Verdict::read(&pid_file), None);
        let first = Verdict {
            pid: 42,
            attempt: 1,
            applied: false,
            message: "listen cannot change\nwhile hothot runs".into(),
        };
        first.record(&pid_file).unwrap();
        let read = Verdict::read(&pid_file).unwrap();
        assert_eq!(read.message, "listen cannot change while hothot runs");
        assert!(!read.applied);
        assert!(
            !read.answers(42, Some(&read)),
            "the same attempt is no answer"
        );
        assert!(read.answers(42, None));
        assert!(!read.answers(43, None), "another process's verdict");
        let second = Verdict {
            attempt: 2,
            applied: true,
            message: "origins".into(),
            ..first
        };
        second.record(&pid_file).unwrap();
        assert!(Verdict::read(&pid_file).unwrap().answers(42, Some(&read)));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
