//! The shared order behind [`crate::replication::log::Log`], the interface
//! the sequencer already has for the local journal (#25): one write path
//! whichever log keeps the order.
//!
//! What differs is who stores: in a cluster a write is in etcd before the
//! sequencer ever sees it (the proxy appends it, and every instance's
//! follower hands it to the sequencer at its position), so `append` has
//! nothing left to do and every entry is durable when it arrives. Reading
//! back (a backlog taking over an origin, or one that spilled) reads etcd;
//! an origin's progress lives in etcd under its hold
//! ([`super::deliveries`]), and so does trimming.

use super::member::Member;
use crate::journal::EntryRecord;
use crate::replication::log::{apply_marks, Log, LogReader, Mark, Stored, Usage};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

pub struct SharedLog {
    member: Arc<Member>,
    /// Every origin's name: every entry is addressed to all of them.
    targets: Vec<String>,
    /// Where origins stand, as this instance last recorded it.
    members: Mutex<Option<BTreeMap<String, Mark>>>,
}

impl SharedLog {
    pub fn new(member: Arc<Member>, targets: Vec<String>) -> Self {
        SharedLog {
            member,
            targets,
            members: Mutex::new(None),
        }
    }
}

/// Reads the shared order back from a position on.
struct SharedReader {
    member: Arc<Member>,
    targets: Vec<String>,
    next_seq: u64,
}

impl LogReader for SharedReader {
    fn next_seq(&self) -> u64 {
        self.next_seq
    }

    fn read(&mut self, up_to: u64, max: usize) -> std::io::Result<Vec<EntryRecord>> {
        let entries = self
            .member
            .read_blocking(self.next_seq, up_to, max)
            .map_err(std::io::Error::other)?;
        let records: Vec<EntryRecord> = entries
            .into_iter()
            .map(|entry| EntryRecord {
                seq: entry.position,
                targets: self.targets.clone(),
                payload: entry.payload.into(),
            })
            .collect();
        self.next_seq = match records.last() {
            Some(last) => last.seq + 1,
            // Nothing left through `up_to`: the rest was trimmed or is not there.
            None if max > 0 => up_to + 1,
            None => self.next_seq,
        };
        Ok(records)
    }
}

#[async_trait]
impl Log for SharedLog {
    fn append(&self, _seq: u64, _targets: &[&str], _payload: &[&[u8]]) -> Stored {
        // In etcd already: the follower hands off only what etcd committed.
        Stored::Ready
    }

    async fn durable_after(&self, known: u64) -> Option<u64> {
        // Everything handed off is durable already: all of it, at once.
        match known {
            u64::MAX => std::future::pending().await,
            _ => Some(u64::MAX),
        }
    }

    fn track(&self, _name: &str, settled: u64) -> Arc<AtomicU64> {
        Arc::new(AtomicU64::new(settled))
    }

    fn has_room(&self) -> bool {
        true
    }

    fn set_max_bytes(&self, _max_bytes: u64) {}

    fn trim(&self, _below: u64) {
        // By progress in etcd, across instances (see `deliveries`).
    }

    fn reader(&self, from: u64) -> Box<dyn LogReader> {
        Box::new(SharedReader {
            member: self.member.clone(),
            targets: self.targets.clone(),
            next_seq: from,
        })
    }

    fn usage(&self) -> Usage {
        Usage::default()
    }

    fn members(&self) -> Option<BTreeMap<String, Mark>> {
        self.members
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn mark(&self, changes: &[(String, Option<Mark>)]) -> std::io::Result<()> {
        let mut members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        apply_marks(&mut members, changes);
        // The other instances learn it from etcd (and trimming skips a
        // detached origin, whose progress no longer moves).
        let detached = changes
            .iter()
            .map(|(name, mark)| (name.clone(), *mark == Some(Mark::Detached)));
        self.member.record_detached(detached.collect());
        Ok(())
    }

    fn start(&self) -> std::io::Result<()> {
        Ok(())
    }

    fn close(&self) {}
}
