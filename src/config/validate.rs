//! Turns the file's serde structs into a [`Config`], refusing anything that
//! would start a half-working proxy. Each error names the key at fault.

use super::file::{FileConfig, HealthSection, ProbeKindName, TimeoutsSection};
use super::{Config, ConfigError, HealthConfig, PassiveConfig, ProbeKind, Timeouts};
use std::net::SocketAddr;
use std::time::Duration;

const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9100";

pub fn validate(file: FileConfig) -> Result<Config, ConfigError> {
    let listen = super::listen::validate(&file.listen, parse_addr)?;
    let metrics_listen = parse_addr(
        "metrics.listen",
        file.metrics
            .listen
            .as_deref()
            .unwrap_or(DEFAULT_METRICS_LISTEN),
    )?;
    let metrics_limits = super::limits::validate_at(
        file.metrics.limits,
        "metrics.limits",
        super::Limits::side_listener(),
    )?;
    let admin = super::admin::validate(file.admin, parse_addr)?;
    let addresses: Vec<SocketAddr> = listen.iter().map(|l| l.address).collect();
    check_listeners(&addresses, metrics_listen, admin.as_ref().map(|a| a.listen))?;
    validate_server(&file.server)?;
    let mut warnings = exposure_warnings(metrics_listen, admin.as_ref());
    let origins = super::origins::validate(&file.origins, &mut warnings)?;
    let mut replication =
        super::replication::validate(file.replication, origins.len(), &mut warnings)?;
    let cluster = super::cluster::validate(file.cluster, parse_addr)?;
    if let Some(cluster) = &cluster {
        let admin = admin.as_ref().map(|a| a.listen);
        let taken = addresses
            .iter()
            .copied()
            .chain([metrics_listen])
            .chain(admin);
        super::cluster::check_listen(cluster.listen, taken, overlap)?;
        super::cluster::adapt(&mut replication, &mut warnings);
    }
    let pid_file = super::paths::pid_file(file.server.pid_file.as_deref())?;
    Ok(Config {
        server: file.server,
        pid_file,
        listen,
        metrics_listen,
        metrics_limits,
        admin,
        access_log: super::access_log::validate(file.access_log)?,
        origins,
        health: validate_health(file.health)?,
        timeouts: validate_timeouts(&file.timeouts)?,
        retries: validate_retries(file.retries)?,
        replication,
        limits: super::limits::validate(file.limits)?,
        balancing: super::balancing::validate(file.balancing, &mut warnings)?,
        cluster,
        warnings,
        sha256: String::new(),
    })
}

/// Side listeners reachable beyond this host (`hothot -t` prints these, and
/// start-up logs them): both speak cleartext HTTP.
fn exposure_warnings(metrics: SocketAddr, admin: Option<&super::Admin>) -> Vec<String> {
    let mut warnings = Vec::new();
    if !metrics.ip().is_loopback() {
        warnings.push(format!(
            "metrics.listen {metrics} is reachable beyond this host: anyone who reaches it \
             reads /metrics (origin names, traffic); let a firewall admit only the scrapers"
        ));
    }
    match admin {
        Some(admin) if !admin.listen.ip().is_loopback() && admin.token.is_none() => {
            warnings.push(format!(
                "UNPROTECTED: admin.listen {} is reachable beyond this host and has no \
                 admin.token_file: anyone who reaches it reads /status (origins, addresses), \
                 and its write endpoints refuse everyone (403); set admin.token_file, or listen \
                 on 127.0.0.1",
                admin.listen
            ));
        }
        Some(admin) if !admin.listen.ip().is_loopback() => warnings.push(format!(
            "admin.listen {} is reachable beyond this host: the admin API speaks cleartext HTTP, \
             so its token travels readable on the network; prefer 127.0.0.1 or a private network",
            admin.listen
        )),
        _ => {}
    }
    warnings
}

/// Two listeners that would share a port: the same port on the same IP, or
/// on any IP when one of them binds every IP (`0.0.0.0`, `::`).
fn overlap(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// Every listener needs a port of its own: shared, half of the proxy's
/// requests would reach the metrics service (and get 404).
fn check_listeners(
    listen: &[SocketAddr],
    metrics: SocketAddr,
    admin: Option<SocketAddr>,
) -> Result<(), ConfigError> {
    if let Some(admin) = admin {
        let taken = listen.iter().chain(std::iter::once(&metrics));
        if let Some(other) = taken.copied().find(|a| overlap(*a, admin)) {
            return Err(ConfigError::invalid(
                "admin.listen",
                format!("{admin} shares its port with another listener ({other})"),
            ));
        }
    }
    for (i, address) in listen.iter().enumerate() {
        if let Some(first) = listen[..i].iter().position(|a| overlap(*a, *address)) {
            return Err(ConfigError::invalid(
                format!("listen[{i}]"),
                format!("{address} shares its port with listen[{first}]"),
            ));
        }
        if overlap(*address, metrics) {
            return Err(ConfigError::invalid(
                "metrics.listen",
                format!(
                    "{metrics} shares its port with the proxy listener listen[{i}] ({address})"
                ),
            ));
        }
    }
    Ok(())
}

/// Pingora settings bounded so that no value can make start-up abort on an
/// allocation or a thread it cannot create.
fn validate_server(server: &super::file::ServerSection) -> Result<(), ConfigError> {
    let bounds = [
        ("server.threads", server.threads, 1, 1024),
        (
            "server.listener_tasks_per_fd",
            server.listener_tasks_per_fd,
            1,
            64,
        ),
        (
            "server.upstream_keepalive_pool_size",
            server.upstream_keepalive_pool_size,
            0,
            1_000_000,
        ),
    ];
    for (key, value, min, max) in bounds {
        match value {
            Some(v) if v < min => {
                return Err(ConfigError::invalid(key, format!("must be at least {min}")))
            }
            Some(v) if v > max => {
                return Err(ConfigError::invalid(key, format!("must be at most {max}")))
            }
            _ => {}
        }
    }
    Ok(())
}

fn parse_addr(key: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|_| {
        ConfigError::invalid(
            key,
            format!("{text:?} is not an IP address with a port, like 127.0.0.1:8080"),
        )
    })
}

fn validate_health(health: HealthSection) -> Result<HealthConfig, ConfigError> {
    let kind = match health.kind.unwrap_or(ProbeKindName::Http) {
        ProbeKindName::Http => {
            let path = health.path.unwrap_or_else(|| "/health".to_owned());
            if !path.starts_with('/') {
                return Err(ConfigError::invalid(
                    "health.path",
                    format!("{path:?} must start with '/'"),
                ));
            }
            let expect_status = health.expect_status.unwrap_or_else(|| vec![200]);
            if expect_status.is_empty() {
                return Err(ConfigError::invalid(
                    "health.expect_status",
                    "list at least one status",
                ));
            }
            if let Some((i, code)) = expect_status
                .iter()
                .enumerate()
                .find(|(_, c)| !(100..=599).contains(*c))
            {
                return Err(ConfigError::invalid(
                    format!("health.expect_status[{i}]"),
                    format!("{code} is not an HTTP status (100-599)"),
                ));
            }
            ProbeKind::Http {
                path,
                expect_status,
            }
        }
        ProbeKindName::Tcp => {
            if health.path.is_some() || health.expect_status.is_some() {
                let key = if health.path.is_some() {
                    "health.path"
                } else {
                    "health.expect_status"
                };
                return Err(ConfigError::invalid(key, "only applies to kind: http"));
            }
            ProbeKind::Tcp
        }
    };
    let interval = positive(
        "health.interval",
        health.interval.map(|d| d.0),
        Duration::from_secs(1),
    )?;
    let timeout = positive(
        "health.timeout",
        health.timeout.map(|d| d.0),
        Duration::from_millis(500),
    )?;
    let rise = at_least_one("health.rise", health.rise.unwrap_or(2))?;
    let fall = at_least_one("health.fall", health.fall.unwrap_or(2))?;
    let connect_every = at_least_one("health.connect_every", health.connect_every.unwrap_or(10))?;
    if matches!(kind, ProbeKind::Tcp) && health.connect_every.is_some() {
        return Err(ConfigError::invalid(
            "health.connect_every",
            "only applies to kind: http (a TCP probe is a connect)",
        ));
    }
    let passive = PassiveConfig {
        failures: health.passive.failures.unwrap_or(3),
        eject: positive(
            "health.passive.eject",
            health.passive.eject.map(|d| d.0),
            Duration::from_secs(10),
        )?,
        max_ejection_percent: match health.passive.max_ejection_percent.unwrap_or(50) {
            percent @ 0..=100 => percent,
            _ => {
                return Err(ConfigError::invalid(
                    "health.passive.max_ejection_percent",
                    "must be between 0 and 100",
                ))
            }
        },
    };
    Ok(HealthConfig {
        kind,
        interval,
        timeout,
        rise,
        fall,
        connect_every,
        passive,
    })
}

fn validate_timeouts(t: &TimeoutsSection) -> Result<Timeouts, ConfigError> {
    Ok(Timeouts {
        connect: positive(
            "timeouts.connect",
            t.connect.map(|d| d.0),
            Duration::from_secs(1),
        )?,
        read: positive(
            "timeouts.read",
            t.read.map(|d| d.0),
            Duration::from_secs(30),
        )?,
        write: positive(
            "timeouts.write",
            t.write.map(|d| d.0),
            Duration::from_secs(30),
        )?,
        idle: positive(
            "timeouts.idle",
            t.idle.map(|d| d.0),
            Duration::from_secs(60),
        )?,
        tunnel_idle: positive(
            "timeouts.tunnel_idle",
            t.tunnel_idle.map(|d| d.0),
            Duration::from_secs(3600),
        )?,
    })
}

/// Pingora counts attempts against a cap the server sets
/// ([`crate::server`]'s `MAX_ATTEMPTS`, 1,000): `retries` stays below it,
/// so that hothot, not that cap, decides when a request stops. No pool is
/// that large: a request tries each origin at most once.
pub const MAX_RETRIES: u32 = 999;

fn validate_retries(retries: u32) -> Result<u32, ConfigError> {
    match retries {
        0..=MAX_RETRIES => Ok(retries),
        _ => Err(ConfigError::invalid(
            "retries",
            format!("must be at most {MAX_RETRIES}"),
        )),
    }
}

fn positive(
    key: &str,
    value: Option<Duration>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match value {
        Some(d) if d.is_zero() => Err(ConfigError::invalid(key, "must be longer than 0")),
        Some(d) => Ok(d),
        None => Ok(default),
    }
}

fn at_least_one(key: &str, value: u32) -> Result<u32, ConfigError> {
    if value == 0 {
        return Err(ConfigError::invalid(key, "must be at least 1"));
    }
    Ok(value)
}
