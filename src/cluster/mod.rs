//! Several hothot instances in front of one pool, sharing one order on an
//! etcd cluster (#25, in progress): the answer to "where does a write stand
//! among every instance's writes?" lives in etcd, which commits each entry
//! to a majority's write-ahead log before acknowledging it, so that an
//! acknowledged write keeps its one position through the loss of any
//! minority of its servers.
//!
//! So far: [`order`], a write's position; [`follow`], the order read back
//! by every instance; [`hold`], one instance per origin's deliveries;
//! [`instances`], which instances live and which origins each should hold.
//! Still to come (see the issue): the `cluster` configuration section,
//! answers sent back to the client's instance, and the log behind
//! [`crate::replication::log::Log`].

pub mod follow;
pub mod hold;
pub mod instances;
pub mod order;

use etcd_client::{Client, ConnectOptions};
use std::time::Duration;

/// A client of the etcd cluster at `servers` (client URLs), each request
/// bounded by `timeout`.
pub async fn connect(servers: &[String], timeout: Duration) -> Result<Client, order::OrderError> {
    let options = ConnectOptions::new()
        .with_connect_timeout(timeout)
        .with_timeout(timeout);
    Ok(Client::connect(servers, Some(options)).await?)
}
