//! What a lane may send next from its origin's backlog: entries in
//! sequence order, a key on one lane at a time, keys in backoff held back,
//! and short batches nobody waits for lingering for company.

use super::{Backlog, Queued, Taken, Work, SCAN_LIMIT};
use std::collections::HashSet;
use std::time::Duration;
use tokio::time::Instant;

impl Backlog {
    /// Up to `room` entries that `lane` may send now, marked in flight there.
    /// A `patient` lane gets nothing unless a client waits on one of them
    /// here or they fill `room` (`Work::Hold`).
    pub fn take(&self, lane: usize, room: usize, patient: bool) -> Work {
        let mut guard = self.lock();
        let Queued {
            entries,
            in_flight,
            blocked,
            intake,
            hold_after,
            ..
        } = &mut *guard;
        if *intake != super::Intake::Open {
            return Work::Wait;
        }
        let hold_after = hold_after.unwrap_or(u64::MAX);
        let now = (!blocked.is_empty()).then(Instant::now);
        if let Some(now) = now {
            blocked.retain(|_, until| *until > now);
        }
        let mut held: HashSet<u64> = HashSet::new();
        let mut picked = Vec::new();
        let mut urgent = false;
        let mut until: Option<Instant> = None;
        let mut examined = 0;
        for (id, slot) in entries.iter() {
            if picked.len() == room || examined == SCAN_LIMIT {
                break;
            }
            if slot.sent {
                continue;
            }
            if slot.entry.seq() > hold_after {
                break;
            }
            examined += 1;
            let key = slot.entry.key();
            if held.contains(&key) {
                continue;
            }
            if let Some(end) = blocked.get(&key) {
                until = Some(until.map_or(*end, |u| u.min(*end)));
                held.insert(key);
                continue;
            }
            if in_flight.get(&key).is_some_and(|(on, _)| *on != lane) {
                held.insert(key);
                continue;
            }
            urgent |= slot.entry.is_urgent_for(self.origin);
            picked.push(*id);
        }
        if picked.is_empty() {
            return until.map_or(Work::Wait, Work::Until);
        }
        if patient && !urgent && picked.len() < room {
            return Work::Hold;
        }
        let taken = picked
            .into_iter()
            .filter_map(|id| {
                let slot = entries.get_mut(&id)?;
                slot.sent = true;
                in_flight.entry(slot.entry.key()).or_insert((lane, 0)).1 += 1;
                Some(Taken {
                    id,
                    entry: slot.entry.clone(),
                })
            })
            .collect();
        Work::Send(taken)
    }

    /// Waits until there are entries `lane` may send, at most `room`. A
    /// short batch nobody waits for here first lingers up to `linger` for
    /// company, unless an entry whose client waits for this origin joins
    /// it: then it leaves at once.
    pub async fn next_batch(&self, lane: usize, room: usize, linger: Duration) -> Vec<Taken> {
        let mut linger_until: Option<Instant> = None;
        loop {
            let woken = self.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let now = Instant::now();
            let patient = !linger.is_zero() && linger_until.is_none_or(|until| now < until);
            match self.take(lane, room, patient) {
                Work::Send(batch) => return batch,
                Work::Hold => {
                    let until = *linger_until.get_or_insert(now + linger);
                    let _ = tokio::time::timeout_at(until, woken).await;
                }
                Work::Until(until) => {
                    let _ = tokio::time::timeout_at(until, woken).await;
                }
                // Memory is empty but writes wait in the log: the lane reads them back.
                Work::Wait if self.refill_wanted().is_some() => return Vec::new(),
                Work::Wait => woken.await,
            }
        }
    }
}
