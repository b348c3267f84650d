//! The `cluster` section (#25): several hothot instances sharing one order
//! on an etcd cluster. Absent, hothot is one instance with its own journal.

use super::units::HumanDuration;
use super::ConfigError;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    pub servers: Vec<String>,
    pub name: Option<String>,
    pub instance: Option<String>,
    pub listen: Option<String>,
    pub token_file: Option<PathBuf>,
    pub lease: Option<HumanDuration>,
    pub linger: Option<HumanDuration>,
    pub tls: Option<super::etcd_tls::EtcdTlsSection>,
}

/// Validated cluster settings.
#[derive(Clone, PartialEq, Eq)]
pub struct Cluster {
    /// etcd's client URLs (`http://host:port`, or all `https://`).
    pub servers: Vec<String>,
    /// How etcd is reached over TLS: `Some` when the servers are `https://`.
    pub tls: Option<super::etcd_tls::EtcdTls>,
    /// The key prefix of this pool in etcd. Default `hothot`.
    pub name: String,
    /// This instance's name, unique in the pool. Default: the host name.
    pub instance: String,
    /// Where the other instances send this one the answers to its writes.
    pub listen: SocketAddr,
    /// Shared by the instances (`token_file`); required unless `listen`
    /// is a loopback address.
    pub token: Option<String>,
    /// How long a hold on an origin's deliveries lasts without renewal,
    /// in whole seconds (etcd's unit). Default 5s.
    pub lease: Duration,
    /// How long a write that finds no append on its way to etcd waits for
    /// others to share its transaction. Default [`DEFAULT_LINGER`].
    pub linger: Duration,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("Cluster")
            .field("servers", &self.servers)
            .field("name", &self.name)
            .field("instance", &self.instance)
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("lease", &self.lease)
            .field("linger", &self.linger)
            .field("tls", &self.tls)
            .finish()
    }
}

pub const DEFAULT_NAME: &str = "hothot";
pub const DEFAULT_LEASE: Duration = Duration::from_secs(5);
/// See `cluster.linger` in README's configuration table for why.
pub const DEFAULT_LINGER: Duration = Duration::ZERO;
/// Longer would make every write wait longer than etcd takes to commit one.
const MAX_LINGER: Duration = Duration::from_millis(100);

pub fn validate(
    section: Option<ClusterSection>,
    parse_addr: impl Fn(&str, &str) -> Result<SocketAddr, ConfigError>,
) -> Result<Option<Cluster>, ConfigError> {
    let Some(section) = section else {
        return Ok(None);
    };
    if section.servers.is_empty() {
        return Err(ConfigError::invalid(
            "cluster.servers",
            "list etcd's client URLs (http://host:2379)",
        ));
    }
    for (i, server) in section.servers.iter().enumerate() {
        check_server(server).map_err(|why| {
            ConfigError::invalid(
                format!("cluster.servers[{i}]"),
                format!("{server:?}: {why}"),
            )
        })?;
    }
    let name = section.name.unwrap_or_else(|| DEFAULT_NAME.to_owned());
    check_word("cluster.name", &name)?;
    let instance = match section.instance {
        Some(instance) => instance,
        None => host_name().ok_or_else(|| {
            ConfigError::invalid(
                "cluster.instance",
                "the host name is unknown: name the instance",
            )
        })?,
    };
    check_word("cluster.instance", &instance)?;
    let Some(listen) = section.listen else {
        return Err(ConfigError::invalid(
            "cluster.listen",
            "required: the address where the other instances reach this one (host:port)",
        ));
    };
    let listen = parse_addr("cluster.listen", &listen)?;
    let token = match section.token_file {
        Some(path) => Some(super::admin::read_token("cluster.token_file", &path)?),
        None if listen.ip().is_loopback() => None,
        None => {
            return Err(ConfigError::invalid(
                "cluster.token_file",
                format!(
                    "required: cluster.listen {listen} is reachable beyond this host, and \
                     answers from other instances must be authenticated"
                ),
            ))
        }
    };
    let lease = section.lease.map_or(DEFAULT_LEASE, |d| d.0);
    if lease < Duration::from_secs(1) || lease.subsec_nanos() != 0 {
        return Err(ConfigError::invalid(
            "cluster.lease",
            "must be whole seconds, at least 1s (etcd counts leases in seconds)",
        ));
    }
    let linger = section.linger.map_or(DEFAULT_LINGER, |d| d.0);
    if linger > MAX_LINGER {
        return Err(ConfigError::invalid(
            "cluster.linger",
            "at most 100ms: every write that finds etcd idle waits this long",
        ));
    }
    let tls = super::etcd_tls::validate(section.tls, &section.servers)?;
    Ok(Some(Cluster {
        servers: section.servers,
        tls,
        name,
        instance,
        listen,
        token,
        lease,
        linger,
    }))
}

/// `cluster.listen` needs a port of its own: none of `taken` may
/// `overlap` it.
pub fn check_listen(
    cluster: SocketAddr,
    mut taken: impl Iterator<Item = SocketAddr>,
    overlap: impl Fn(SocketAddr, SocketAddr) -> bool,
) -> Result<(), ConfigError> {
    match taken.find(|a| overlap(*a, cluster)) {
        Some(other) => Err(ConfigError::invalid(
            "cluster.listen",
            format!("{cluster} shares its port with another listener ({other})"),
        )),
        None => Ok(()),
    }
}

/// The largest write a cluster takes: etcd refuses requests above 1.5 MiB
/// by default (`--max-request-bytes`), and a write is one request.
pub const MAX_BODY: usize = 1 << 20;

/// What a cluster changes in `replication`: writes at most [`MAX_BODY`]
/// (larger ones get 413); and warnings for a cluster whose writes do not
/// use its shared order.
pub fn adapt(replication: &mut super::ReplicationConfig, warnings: &mut Vec<String>) {
    if replication.max_body > MAX_BODY {
        // The default (8 MiB) is capped silently; a larger setting is named.
        if replication.max_body != super::replication::DEFAULT_MAX_BODY {
            warnings.push(format!(
                "replication.max_body {} is capped at 1MiB in a cluster (etcd's request limit)",
                replication.max_body
            ));
        }
        replication.max_body = MAX_BODY;
    }
    if replication.mode == super::ReplicationMode::Off {
        warnings.push(
            "cluster is set but replication.mode is off: the instances share no order".into(),
        );
    } else if !replication.order.is_sequenced() {
        warnings.push(
            "cluster is set but replication.order is version: versions need no shared order, \
             each instance keeps its own journal"
                .into(),
        );
    }
}

/// `http://host:port` or `https://host:port`: etcd's client URL.
fn check_server(server: &str) -> Result<(), &'static str> {
    let rest = match server.split_once("://") {
        Some(("http" | "https", rest)) => rest,
        _ => return Err("must start with http:// or https://"),
    };
    let host_port = rest.trim_end_matches('/');
    match host_port.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(())
        }
        _ => Err("must name a host and a port (http://10.0.0.5:2379)"),
    }
}

/// A name that is part of etcd keys and of write ids: letters, digits,
/// `-`, `_` and `.`.
fn check_word(key: &str, word: &str) -> Result<(), ConfigError> {
    let fine = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
    if word.is_empty() || word.len() > 128 || !word.chars().all(fine) {
        return Err(ConfigError::invalid(
            key,
            format!("{word:?}: use 1 to 128 letters, digits, '-', '_' or '.'"),
        ));
    }
    Ok(())
}

/// The host name (`gethostname`), if it has one.
fn host_name() -> Option<String> {
    let mut buffer = [0u8; 256];
    // SAFETY: the buffer is valid for its length; the name is NUL-terminated.
    let status = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    if status != 0 {
        return None;
    }
    let end = buffer.iter().position(|&b| b == 0)?;
    let name = String::from_utf8_lossy(&buffer[..end]).into_owned();
    (!name.is_empty()).then_some(name)
}
