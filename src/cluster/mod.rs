//! Several hothot instances in front of one pool, sharing one order on an
//! etcd cluster (#25): the answer to "where does a write stand among every
//! instance's writes?" lives in etcd, which commits each entry to a
//! majority's write-ahead log before acknowledging it, so that an
//! acknowledged write keeps its one position through the loss of any
//! minority of its servers.
//!
//! The pieces: [`order`], a write's position (an append retried under its
//! id keeps it); [`follow`], the order read back by every instance;
//! [`history`], a range of it read back, counted, trimmed; [`hold`], one
//! instance per origin's deliveries, fenced by its lease; [`instances`],
//! which instances live and which origins each should hold; [`origins`],
//! every instance with the same origins; [`answers`], an origin's answer
//! sent to the instance whose client waits; [`member`], this instance's
//! connection and gates, and the loops that keep them (`deliveries`);
//! [`pins`], the origins a resync keeps on one instance;
//! [`log`], the shared order behind the replication's
//! [`crate::replication::log::Log`], so that a cluster's writes take the
//! one write path every write takes.

pub mod answers;
mod batch;
mod deliveries;
pub mod etcd;
pub mod follow;
pub mod history;
pub mod hold;
pub mod instances;
pub mod log;
pub mod member;
pub mod order;
pub mod origins;
mod pins;

use crate::config::etcd_tls::EtcdTls;
use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use std::time::Duration;

/// A client of the etcd cluster `cluster` names, each request bounded by
/// `timeout`.
pub async fn connect(
    cluster: &crate::config::Cluster,
    timeout: Duration,
) -> Result<Client, order::OrderError> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(timeout)
        .with_timeout(timeout);
    if let Some(tls) = &cluster.tls {
        options = options.with_tls(tls_options(tls)?);
    }
    Ok(Client::connect(&cluster.servers, Some(options)).await?)
}

/// `cluster.tls` as etcd's client takes it, its files read now so that
/// renewed ones are used from the next connection on. (TLS to etcd is
/// rustls, through etcd-client's `tls` feature: its OpenSSL flavour
/// replaces the transport of every connection, plain ones included.)
fn tls_options(tls: &EtcdTls) -> Result<TlsOptions, order::OrderError> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| {
            order::OrderError::Failed(format!("cluster.tls: cannot read {}: {e}", path.display()))
        })
    };
    let mut options = TlsOptions::new();
    options = match &tls.ca {
        Some(ca) => options.ca_certificate(Certificate::from_pem(read(ca)?)),
        None => options.with_native_roots(),
    };
    if let Some((cert, key)) = &tls.identity {
        options = options.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    if !tls.sni.is_empty() {
        options = options.domain_name(tls.sni.clone());
    }
    Ok(options)
}

/// This instance's part in `cluster`, once its origins agree with the
/// other instances' ([`origins::agree`]).
pub fn join(
    cluster: &crate::config::Cluster,
    config: &crate::config::Config,
    metrics: &crate::metrics::ClusterMetrics,
) -> Result<std::sync::Arc<member::Member>, origins::Disagreement> {
    let timeout = config.timeouts.connect.max(Duration::from_secs(1));
    origins::agree(cluster, &origins::of(&config.origins), timeout)?;
    let member = member::Member::new(cluster.clone(), config.timeouts.connect, metrics);
    Ok(std::sync::Arc::new(member))
}
