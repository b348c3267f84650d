//! Which targets the journal's pool has and where each stands (#24), kept
//! across restarts: a detached target stays detached (it gets nothing until
//! a resync); a resynced one holds every entry through its cut, so that a
//! restart before its cursor was logged past the cut does not deliver it
//! writes its copy already holds; and a name the file does not list joins
//! a pool with history. One line per target in `members` beside the
//! segments (`name current`, `name current SEQ`, `name detached`),
//! replaced atomically (written aside, synced, renamed, directory synced):
//! small, rarely written, and readable by an operator.

use super::Journal;
use crate::replication::log::Mark;
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const FILE: &str = "members";

/// The marks, as on disk; `None` before the file was first written (a
/// journal older than it, or a new one).
pub struct Members {
    dir: PathBuf,
    marks: Mutex<Option<BTreeMap<String, Mark>>>,
}

impl Members {
    /// Reads the marks in `dir`.
    pub fn load(dir: &Path) -> std::io::Result<Members> {
        let marks = match fs::read_to_string(dir.join(FILE)) {
            Ok(text) => Some(text.lines().filter_map(parse).collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        Ok(Members {
            dir: dir.to_owned(),
            marks: Mutex::new(marks),
        })
    }

    /// Raises the cursors of resynced targets to their cuts.
    pub fn raise(&self, cursors: &mut BTreeMap<String, u64>) {
        let marks = self.marks.lock().unwrap_or_else(|e| e.into_inner());
        for (name, mark) in marks.iter().flatten() {
            if let Mark::Current(Some(cut)) = mark {
                let cursor = cursors.entry(name.clone()).or_default();
                *cursor = (*cursor).max(*cut);
            }
        }
    }

    fn store(&self, marks: &BTreeMap<String, Mark>) -> std::io::Result<()> {
        let aside = self.dir.join(format!("{FILE}.new"));
        let mut file = fs::File::create(&aside)?;
        for (name, mark) in marks {
            match mark {
                Mark::Current(None) => writeln!(file, "{name} current")?,
                Mark::Current(Some(cut)) => writeln!(file, "{name} current {cut}")?,
                Mark::Detached => writeln!(file, "{name} detached")?,
            }
        }
        file.sync_all()?;
        fs::rename(&aside, self.dir.join(FILE))?;
        fs::File::open(&self.dir)?.sync_all()
    }
}

fn parse(line: &str) -> Option<(String, Mark)> {
    let mut words = line.split_whitespace();
    let name = words.next()?.to_owned();
    let mark = match (words.next()?, words.next()) {
        ("detached", _) => Mark::Detached,
        ("current", cut) => Mark::Current(cut.and_then(|c| c.parse().ok())),
        _ => return None,
    };
    Some((name, mark))
}

impl Journal {
    /// The targets and their marks; `None` if never written.
    pub fn members(&self) -> Option<BTreeMap<String, Mark>> {
        let marks = self.members.marks.lock();
        marks.unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Applies `changes` (`None` forgets a target that left); on disk when
    /// this returns.
    pub fn mark(&self, changes: &[(String, Option<Mark>)]) -> std::io::Result<()> {
        let members = &self.members;
        let mut marks = members.marks.lock().unwrap_or_else(|e| e.into_inner());
        let mut updated = marks.clone().unwrap_or_default();
        for (name, mark) in changes {
            match mark {
                Some(mark) => updated.insert(name.clone(), *mark),
                None => updated.remove(name),
            };
        }
        if marks.as_ref() != Some(&updated) {
            members.store(&updated)?;
            *marks = Some(updated);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_survive_a_reopen_and_raise_resynced_cursors() {
        let dir = std::env::temp_dir().join(format!("hothot-members-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let members = Members::load(&dir).unwrap();
        assert!(members.marks.lock().unwrap().is_none());
        let marks = BTreeMap::from([
            ("a".to_owned(), Mark::Current(None)),
            ("c".to_owned(), Mark::Detached),
            ("d".to_owned(), Mark::Current(Some(42))),
        ]);
        members.store(&marks).unwrap();
        let again = Members::load(&dir).unwrap();
        assert_eq!(*again.marks.lock().unwrap(), Some(marks));
        let mut cursors = BTreeMap::from([("d".to_owned(), 7)]);
        again.raise(&mut cursors);
        assert_eq!(cursors["d"], 42);
        fs::remove_dir_all(&dir).unwrap();
    }
}
