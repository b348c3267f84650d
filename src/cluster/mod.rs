//! Several hothot instances in front of one pool, sharing one order on an
//! etcd cluster (#25, in progress): the answer to "where does a write stand
//! among every instance's writes?" lives in etcd, which commits each entry
//! to a majority's write-ahead log before acknowledging it, so that an
//! acknowledged write keeps its one position through the loss of any
//! minority of its servers.
//!
//! So far: [`order`], a write's position, and [`follow`], the order read
//! back by every instance. Still to come (see the issue):
//! the `cluster` configuration section, deliveries held per origin through
//! etcd leases, answers sent back to the client's instance, and the log
//! behind [`crate::replication::log::Log`].

pub mod follow;
pub mod order;
