//! When an origin can no longer hold every write of the sequence, and what
//! then (#24): it is *detached*, out of service until a resync, rather than
//! served with data its peers do not have, and rather than holding up the
//! pool's writes.
//!
//! An origin is detached when its backlog outgrows `replication.retain`
//! (bytes or age), when the journal is full and it is the origin furthest
//! behind (a backlog no serving origin waits on), when it keeps failing a
//! write its peers applied (`replication.detach_after`), and when it joins
//! a pool that has history without `join: now`. Its backlog is dropped
//! (counted in `hothot_replication_dropped_total`), the journal may trim
//! what only it held, and the log remembers it across restarts.

use super::backlog::Intake;
use super::log::Mark;
use super::write::Write;
use super::Replicator;
use crate::config::Join;
use crate::pool::{Detached, Origin, Standing};
use std::collections::BTreeSet;
use std::time::Duration;

impl Replicator {
    /// Detaches `origin` (`why`, and the write it missed if that was the
    /// reason); false when it was not current.
    pub(crate) fn detach(&self, origin: &Origin, why: &str, missed: Option<String>) -> bool {
        if !origin.is_current() || origin.is_retired() {
            return false;
        }
        let (applied, dropped) = self.cut_loose(origin, why, missed);
        let name = &origin.name;
        self.remember(&[(name.clone(), Some(Mark::Detached))]);
        log::error!(
            "origin {name} detached: {why}. It has applied every write through #{applied}; \
             {dropped} writes it had not received are dropped for it. It serves nothing until \
             a resync copies a peer's data to it (POST /origins/{name}/resync?from=PEER)"
        );
        self.metrics.publish_pool(&self.pool);
        true
    }

    /// Drops `origin`'s backlog (counted) and marks it detached, between
    /// two writes (none is half handed to its backlog); returns the
    /// sequence it had applied through, and how many writes it dropped.
    pub(super) fn cut_loose(
        &self,
        origin: &Origin,
        why: &str,
        missed: Option<String>,
    ) -> (u64, usize) {
        let cut = self.sequencer.cut(self.config().max_pending);
        let dropped = origin.backlog.drop_all(Intake::Refused);
        let applied = origin.backlog.applied_seq();
        let why = why.to_owned();
        let standing = Standing::Detached(Detached {
            applied,
            why,
            missed,
        });
        self.pool.set_standing(origin.id, standing);
        drop(cut);
        origin.metrics.replication.dropped.inc_by(dropped as u64);
        (applied, dropped)
    }

    /// Tells the log where origins stand; a failure is logged (a restart
    /// would then take them for what the log last knew).
    pub(super) fn remember(&self, changes: &[(String, Option<Mark>)]) {
        if let Some(log) = self.sequencer.log() {
            if let Err(e) = log.mark(changes) {
                log::error!("journal: cannot record where origins stand: {e}");
            }
        }
    }

    /// `origin` failed `write` `retry.max_attempts` times, the first
    /// `failing_for` ago (the last: `why`). If every origin that should
    /// apply it did the same, it moves on (counted `failed`, logged once
    /// for the pool); if a peer applied it, it is detached once it has
    /// failed it for `detach_after`; otherwise it keeps trying. True when
    /// this origin is done with the write.
    pub(super) fn give_up(
        &self,
        origin: &Origin,
        write: &Write,
        failing_for: Duration,
        why: &str,
    ) -> bool {
        let config = self.config();
        let described = format!(
            "write #{} version {} ({})",
            write.seq,
            write.version,
            write.request_line()
        );
        // Under version order the primary applied it before anyone else got it.
        if write.fate.is_applied() || !config.order.is_sequenced() {
            if failing_for >= config.retention.detach_after {
                let why = format!(
                    "it failed {described} for {failing_for:.1?} (the last attempt: {why}) \
                     while its peers applied it (replication.detach_after)"
                );
                self.detach(origin, &why, Some(described));
            }
            return false;
        }
        let live: Vec<_> = (self.pool.members())
            .filter(|o| o.is_current() && o.backlog.accepts(write.seq))
            .map(|o| o.id)
            .collect();
        if !write.fate.give_up(origin.id, &live) {
            return false;
        }
        origin.metrics.replication.failed.inc();
        if write.fate.abandon() {
            log::error!(
                "replication: every origin failed {described} (retry.max_attempts; the last \
                 attempt: {why}); all of them move on without it, so the pool stays the same \
                 everywhere"
            );
        }
        true
    }

    /// Detaches the origins whose backlog outgrew `replication.retain`.
    pub(super) fn enforce_retention(&self) {
        let config = self.config();
        let retention = &config.retention;
        for origin in self.pool.members() {
            if !origin.is_current() || self.in_resync(origin.id) {
                continue;
            }
            let (bytes, age) = (origin.backlog.bytes(), origin.backlog.oldest_age());
            let why = if bytes > retention.bytes {
                format!(
                    "its backlog holds {bytes} bytes, more than replication.retain.bytes ({})",
                    retention.bytes
                )
            } else if age > retention.age {
                format!(
                    "its oldest pending write is {age:.0?} old, older than replication.retain.age ({:?})",
                    retention.age
                )
            } else {
                continue;
            };
            self.detach(origin, &why, None);
        }
    }

    /// The journal is full: it drops what every origin settled since the
    /// last housekeeping tick; if that is not enough, the origin furthest
    /// behind among those not keeping up (down, lagging or spilled) is
    /// detached, and it drops again. True when that made room.
    pub(super) fn relieve_full_journal(&self) -> bool {
        let Some(log) = self.sequencer.log() else {
            return false;
        };
        log.trim(self.sequencer.oldest_pending());
        if log.has_room() {
            return true;
        }
        let behind = (self.pool.members())
            .filter(|o| o.is_current() && !self.in_resync(o.id))
            .filter(|o| !o.is_serving_reads() || o.backlog.is_spilled())
            .filter_map(|o| o.backlog.head_seq().map(|head| (head, o)))
            .min_by_key(|(head, _)| *head);
        let Some((_, origin)) = behind else {
            return false;
        };
        let why = "the journal reached replication.journal.max_bytes and it is the origin \
                   furthest behind";
        self.detach(origin, why, None);
        log.trim(self.sequencer.oldest_pending());
        log.has_room()
    }

    /// Start-up: origins the log remembers as detached stay so; with
    /// history in the log, an origin it has never seen (`seen`: targets and
    /// cursors of what it holds) waits for a resync unless its entry says
    /// `join: now`. A log that never recorded its members (a new one, or one
    /// older than the record) takes every origin as current.
    pub(super) fn detach_at_start(&self, seen: &BTreeSet<String>, history: bool) {
        let Some(log) = self.sequencer.log() else {
            return;
        };
        let recorded = log.members();
        let mut changes = Vec::new();
        for origin in self.pool.members() {
            let name = &origin.name;
            let mark = recorded.as_ref().map(|r| r.get(name));
            let known = seen.contains(name) || matches!(mark, Some(Some(_)));
            let why = match mark {
                Some(Some(Mark::Detached)) => "it was detached before this start",
                Some(_) if history && !known && origin.join != Join::Now => {
                    "it joined a pool that has history (join: resync): it waits for a resync"
                }
                _ => {
                    if !matches!(mark, Some(Some(Mark::Current(_)))) {
                        changes.push((name.clone(), Some(Mark::Current(None))));
                    }
                    continue;
                }
            };
            self.detach(origin, why, None);
        }
        // Origins no longer configured are forgotten.
        for name in recorded.iter().flat_map(|r| r.keys()) {
            if self.pool.find(name).is_none() {
                changes.push((name.clone(), None));
            }
        }
        self.remember(&changes);
    }
}

/// Why an origin is detached on an instance that only followed another
/// instance's mark in etcd (#25).
const DETACHED_ELSEWHERE: &str = "another instance of the cluster detached it";

impl Replicator {
    /// In a cluster: another instance marked `name` detached in etcd.
    pub(super) fn detach_as_elsewhere(&self, name: &str) {
        if let Some(origin) = self.pool.find(name) {
            self.detach(origin, DETACHED_ELSEWHERE, None);
        }
    }

    /// In a cluster: no instance marks `name` detached any more (a resync
    /// on another instance ended). If it was detached here only for that
    /// mark, it is current again, its holder's to deliver to (`true`).
    pub(super) fn reattach(&self, name: &str) -> bool {
        let Some(origin) = self.pool.find(name) else {
            return false;
        };
        let standing = origin.standing();
        if !matches!(&standing, Standing::Detached(d) if d.why == DETACHED_ELSEWHERE) {
            return false;
        }
        let cut = self.sequencer.cut(self.config().max_pending);
        origin.backlog.drop_all(Intake::Elsewhere);
        let reattached = (self.pool).replace_standing(origin.id, &standing, Standing::Current);
        drop(cut);
        if reattached {
            self.remember(&[(name.to_owned(), Some(Mark::Current(None)))]);
            log::warn!("origin {name} is current again: no instance marks it detached any more (a resync elsewhere ended)");
            self.metrics.publish_pool(&self.pool);
        }
        reattached
    }
}
