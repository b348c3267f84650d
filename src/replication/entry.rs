//! What an origin's backlog holds: writes, and the reads that verify some of
//! them, each at its place in the sequence.

use super::verify::VerifyRead;
use super::write::Write;
use crate::pool::OriginId;
use std::sync::Arc;
use std::time::Instant;

/// One entry of a backlog.
#[derive(Clone)]
pub enum Entry {
    Write(Arc<Write>),
    /// The read behind a sampled write (see [`super::verify`]); it shares
    /// the write's place and key.
    VerifyRead(Arc<VerifyRead>),
}

impl Entry {
    /// Its place in the sequence.
    pub fn seq(&self) -> u64 {
        match self {
            Entry::Write(write) => write.seq,
            Entry::VerifyRead(read) => read.seq,
        }
    }

    /// Entries with the same key reach an origin in sequence order.
    pub fn key(&self) -> u64 {
        match self {
            Entry::Write(write) => write.key,
            Entry::VerifyRead(read) => read.key,
        }
    }

    /// When its write was sequenced: the start of every origin's delay window.
    pub fn accepted_at(&self) -> Instant {
        match self {
            Entry::Write(write) => write.accepted_at,
            Entry::VerifyRead(read) => read.accepted_at,
        }
    }

    /// The write, if it is one.
    pub fn write(&self) -> Option<&Arc<Write>> {
        match self {
            Entry::Write(write) => Some(write),
            Entry::VerifyRead(_) => None,
        }
    }

    /// Does a client wait for `origin`'s answer to it (its primary's, with
    /// a client waiting)? Such an entry leaves at once, without lingering.
    pub fn is_urgent_for(&self, origin: OriginId) -> bool {
        match self {
            Entry::Write(write) => write.reply.is_some() && write.primary == Some(origin),
            Entry::VerifyRead(_) => false,
        }
    }

    /// The request as `origin` receives it, in two pieces.
    pub fn wire_for(&self, origin: OriginId) -> (&[u8], &[u8]) {
        match self {
            Entry::Write(write) => write.wire_for(origin),
            Entry::VerifyRead(read) => (&read.request, &[]),
        }
    }

    /// Bytes of the request as the origins receive it.
    pub fn wire_len(&self) -> usize {
        match self {
            Entry::Write(write) => write.wire_len(),
            Entry::VerifyRead(read) => read.request.len(),
        }
    }

    /// `origin` will never answer it: it was dropped from its backlog (or
    /// never joined it) because the origin left the pool.
    pub fn withdrawn(&self, origin: OriginId) {
        if let Entry::VerifyRead(read) = self {
            read.sample.withdraw(origin);
        }
    }
}
