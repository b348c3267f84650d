//! Assembles the Pingora server from a validated configuration: the health
//! service first, then the adaptive weights, the proxy (its listeners, TLS
//! included) and the metrics and admin listeners, which wait for its first
//! probe round; the signal handlers and the reloader get the pieces a
//! reload changes.

use crate::access_log::AccessLog;
use crate::adaptive::{Adaptive, AdaptiveService};
use crate::admin::AdminApp;
use crate::certificates::ListenerCertificate;
use crate::config::Config;
use crate::connections::{guarded_service, Book};
use crate::health::HealthService;
use crate::limit::Limiter;
use crate::metrics::{Metrics, MetricsApp};
use crate::origin_tls::TlsError;
use crate::pool::{NewOrigin, Pool};
use crate::proxy::{HotHotProxy, LiveSettings, ProxyParts};
use crate::proxy_service::ProxyService;
use crate::reload::{Live, Reloader};
use crate::replication::Replicator;
use crate::selection::Balancer;
use crate::side_listener;
use crate::signals::SignalService;
use arc_swap::ArcSwap;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::listeners::ListenerConfig;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::services::background::background_service;
use std::path::Path;
use std::sync::Arc;

/// Why hothot could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot register metrics: {0}")]
    Metrics(#[source] prometheus::Error),
    #[error("cannot start the server thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("{key}: {source}")]
    Certificate {
        key: String,
        #[source]
        source: crate::certificates::CertificateError,
    },
    #[error("{key}: {source}")]
    Tls {
        key: String,
        #[source]
        source: Box<pingora_error::Error>,
    },
    #[error("{key}: {source}")]
    OriginTls {
        key: String,
        #[source]
        source: TlsError,
    },
    #[error("access_log.path: cannot open: {0}")]
    AccessLog(#[source] std::io::Error),
    #[error("replication journal: {0}")]
    Journal(#[source] crate::journal::JournalError),
    #[error("{key}: {reason}")]
    Limit { key: String, reason: String },
    #[error("cluster: {0}")]
    Cluster(#[source] crate::cluster::origins::Disagreement),
    #[error("{key}: cannot listen on {address}: {source}")]
    Listen {
        key: String,
        address: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The listeners of `config` that cannot be bound now (in use by another
/// process, or not an address of this machine), each with its key. Pingora
/// itself would retry a busy address for 30 s and then panic.
pub fn unbindable(config: &Config) -> Vec<StartError> {
    let listeners = config
        .listen
        .iter()
        .enumerate()
        .map(|(i, l)| (format!("listen[{i}]"), l.address))
        .chain(std::iter::once((
            "metrics.listen".to_owned(),
            config.metrics_listen,
        )))
        .chain(
            config
                .admin
                .iter()
                .map(|a| ("admin.listen".to_owned(), a.listen)),
        )
        .chain(
            config
                .cluster
                .iter()
                .map(|c| ("cluster.listen".to_owned(), c.listen)),
        );
    listeners
        .filter_map(|(key, address)| {
            std::net::TcpListener::bind(address)
                .err()
                .map(|source| StartError::Listen {
                    key,
                    address,
                    source,
                })
        })
        .collect()
}

/// Pingora's work-stealing runtime, when `server.work_stealing` is not set:
/// off for one worker thread, on for more. One current-thread runtime
/// (`false`) measured 6% less CPU per request (median of ten interleaved
/// rounds) and has nothing to steal from with one thread; with two or more
/// threads an origin connection released on one thread often cannot be
/// taken by another ("failed to acquire reusable stream"), so connections
/// would churn (README's "Performance").
fn default_work_stealing(threads: usize) -> bool {
    threads > 1
}

/// Pingora keeps 128 idle origin connections in all, least recently used
/// first out: with 1,000 origins taking turns, every connection was gone
/// before its origin's next turn, and each request opened a new one.
const IDLE_UPSTREAM_CONNECTIONS_PER_ORIGIN: usize = 2;

/// Pingora's cap on attempts per request; hothot's `retries` (validated
/// below it: [`crate::config::MAX_RETRIES`]) is what decides.
const MAX_ATTEMPTS: usize = crate::config::MAX_RETRIES as usize + 1;

/// Pingora's `grace_period_seconds` default is 300: too long for a proxy whose
/// peers health-check it every few seconds.
const DEFAULT_GRACE_PERIOD_SECONDS: u64 = 5;
const DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT_SECONDS: u64 = 5;

/// Timeouts longer than this many whole seconds run on tokio's timer, not
/// Pingora's fast timer (Pingora's default: above 15 minutes). The fast timer
/// keeps every timeout until its deadline, in a map of 10 ms buckets under a
/// lock, even when the read it guarded finished in microseconds: with
/// hothot's 30 s origin read timeout and 60 s idle timeout that is thousands
/// of live buckets, and a lookup and a reference per read. Tokio's wheel
/// drops a finished timeout at once. Measured with callgrind: about 1,400
/// instructions less per proxied request.
const TIMEOUTS_ON_TOKIO_ABOVE_SECONDS: u64 = 0;

fn server_conf(config: &Config) -> ServerConf {
    let s = &config.server;
    let mut conf = ServerConf::default();
    conf.threads = s.threads.unwrap_or(conf.threads);
    conf.work_stealing = s
        .work_stealing
        .unwrap_or_else(|| default_work_stealing(conf.threads));
    conf.daemon = s.daemon.unwrap_or(false);
    conf.error_log = s.error_log.clone();
    conf.pid_file = config.pid_file.to_string_lossy().into_owned();
    conf.upgrade_sock = s.upgrade_sock.clone().unwrap_or(conf.upgrade_sock);
    conf.user = s.user.clone();
    conf.group = s.group.clone();
    conf.grace_period_seconds = Some(
        s.grace_period_seconds
            .unwrap_or(DEFAULT_GRACE_PERIOD_SECONDS),
    );
    conf.graceful_shutdown_timeout_seconds = Some(
        s.graceful_shutdown_timeout_seconds
            .unwrap_or(DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT_SECONDS),
    );
    conf.upstream_keepalive_pool_size = s.upstream_keepalive_pool_size.unwrap_or(
        conf.upstream_keepalive_pool_size
            .max(IDLE_UPSTREAM_CONNECTIONS_PER_ORIGIN * config.origins.len()),
    );
    conf.listener_tasks_per_fd = s
        .listener_tasks_per_fd
        .unwrap_or(conf.listener_tasks_per_fd);
    // Pingora counts attempts, not retries, in `max_retries`. hothot decides
    // each retry itself (a reload may change `retries`): Pingora's cap only
    // has to stay out of the way.
    conf.max_retries = MAX_ATTEMPTS;
    conf.fast_timeout_to_tokio_threshold_seconds = Some(TIMEOUTS_ON_TOKIO_ABOVE_SECONDS);
    conf
}

/// A TLS listener's settings: Mozilla's "intermediate" profile (OpenSSL,
/// as Pingora builds it), offering HTTP/2 and HTTP/1.1 by ALPN, presenting
/// `certificate` (which a reload may renew).
fn tls_settings(certificate: &Arc<ListenerCertificate>) -> pingora_error::Result<TlsSettings> {
    let mut settings = TlsSettings::with_callbacks(certificate.presenter())?;
    settings.enable_h2();
    Ok(settings)
}

/// How many client connections the proxy may hold (see [`crate::connections`]).
pub fn connection_budget(config: &Config) -> Result<usize, StartError> {
    crate::connections::budget(
        config.limits.max_connections,
        config.origins.len(),
        kept_descriptors(config),
    )
    .map_err(|(key, reason)| StartError::Limit { key, reason })
}

/// Descriptors kept out of the proxy's connection budget beside the
/// per-origin reserve: the idle upstream pool, and the side listeners',
/// so that a flood there cannot take the proxy's.
fn kept_descriptors(config: &Config) -> usize {
    let admin = config.admin.as_ref();
    server_conf(config).upstream_keepalive_pool_size
        + side_listener::descriptors(&config.metrics_limits)
        + admin.map_or(0, |a| side_listener::descriptors(&a.limits))
}

/// Builds a ready-to-run server for `config`, read from `path` (which a
/// reload reads again).
pub fn build(config: &Config, opt: Option<Opt>, path: Option<&Path>) -> Result<Server, StartError> {
    // An upgrade (-u) takes the listening sockets over from the running
    // process: the addresses are in use on purpose.
    if !opt.as_ref().is_some_and(|o| o.upgrade) {
        if let Some(error) = unbindable(config).into_iter().next() {
            return Err(error);
        }
    }
    let conf = server_conf(config);
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let metrics = Arc::new(Metrics::new().map_err(StartError::Metrics)?);
    let pool = Arc::new(Pool::new(
        config.health.passive,
        config.timeouts,
        metrics.clone(),
    ));
    let origins = config
        .origins
        .iter()
        .enumerate()
        .map(|(i, origin)| {
            NewOrigin::build(origin).map_err(|source| StartError::OriginTls {
                key: format!("origins[{i}].tls"),
                source,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let member = match &config.cluster {
        Some(cluster) => {
            metrics.enable_cluster().map_err(StartError::Metrics)?;
            let joined = crate::cluster::join(cluster, config, &metrics.cluster);
            Some(joined.map_err(StartError::Cluster)?)
        }
        None => None,
    };
    // The origins join the pool as the journal is opened, before its
    // pending writes are queued for them.
    let replicator = Replicator::open(
        config.replication.clone(),
        pool.clone(),
        metrics.clone(),
        config.timeouts,
        origins,
        member,
    )
    .map_err(StartError::Journal)?;
    let replicator = Arc::new(replicator);
    let replication = replicator.service();

    let health_config = Arc::new(ArcSwap::from_pointee(config.health.clone()));
    let health = HealthService::new(pool.clone(), metrics.clone(), health_config.clone());
    let probe_added = health.on_added();
    let health_handle = server.add_service(background_service("health checks", health));
    let resolver = crate::resolve::ResolveService::new(pool.clone());
    server.add_service(background_service("origin names", resolver));

    let adaptive = Arc::new(Adaptive::new(
        pool.clone(),
        metrics.clone(),
        config.balancing,
    ));
    let adaptive_handle = server.add_service(background_service(
        "adaptive weights",
        AdaptiveService(adaptive.clone()),
    ));
    // Its first tick must see the first probe round's verdicts.
    adaptive_handle.add_dependency(&health_handle);

    let access_log = match &config.access_log {
        Some(settings) => Some(Arc::new(
            AccessLog::start(settings, metrics.access_log_dropped.clone())
                .map_err(StartError::AccessLog)?,
        )),
        None => None,
    };
    let balancing = &config.balancing;
    let limiter = Arc::new(Limiter::new(balancing.limit, balancing.queue_timeout));
    let live = Arc::new(LiveSettings::new(config.retries));
    let balancer = Arc::new(Balancer::new(pool.clone()));
    let proxy = HotHotProxy::new(ProxyParts {
        pool: pool.clone(),
        balancer: balancer.clone(),
        adaptive: adaptive.clone(),
        limiter: limiter.clone(),
        live: live.clone(),
        metrics: metrics.clone(),
        replicator: replicator.clone(),
        access_log: access_log.clone(),
        limits: config.limits,
    });
    let book = Book::new(connection_budget(config)?, metrics.connections.clone());
    let mut app = pingora_proxy::HttpProxy::new(proxy, server.configuration.clone());
    app.handle_init_modules();
    let mut proxy_service = guarded_service("hothot proxy", app, book.clone(), config.limits);
    let buffers = crate::connections::buffers(&config.limits);
    let mut certificates = Vec::new();
    for (i, listener) in config.listen.iter().enumerate() {
        let mut endpoint = ListenerConfig::tcp(listener.address.to_string()).l4_buffer(buffers);
        if let Some(files) = &listener.tls {
            let key = format!("listen[{i}].tls");
            let certificate =
                ListenerCertificate::load(&files.cert, &files.key).map_err(|source| {
                    StartError::Certificate {
                        key: key.clone(),
                        source,
                    }
                })?;
            let settings =
                tls_settings(&certificate).map_err(|source| StartError::Tls { key, source })?;
            certificates.push(certificate);
            endpoint = endpoint.tls(settings);
        }
        proxy_service.add_listener(endpoint);
    }
    let reloader = Arc::new(Reloader::new(
        path.map(Path::to_owned),
        config,
        Live {
            pool: pool.clone(),
            metrics: metrics.clone(),
            limiter,
            adaptive,
            health: health_config,
            proxy: live,
            replicator: replicator.clone(),
            balancer,
            probe_added,
            connections: book.clone(),
            kept_descriptors: kept_descriptors(config),
            certificates,
        },
    ));
    server.add_service(background_service(
        "signals",
        SignalService {
            access_log,
            reloader: reloader.clone(),
        },
    ));
    let proxy_handle = server.add_service(ProxyService::new(proxy_service, replication));
    proxy_handle.add_dependency(&health_handle);

    if let Some(settings) = &config.admin {
        let app = AdminApp::new(
            pool.clone(),
            replicator.clone(),
            metrics.clone(),
            settings.clone(),
            reloader.version(),
            config,
        );
        let connections = metrics.listeners.listener("admin");
        server.add_service(side_listener::service(
            "admin",
            app,
            settings.listen,
            settings.limits,
            connections,
        ));
    }
    let connections = metrics.listeners.listener("metrics");
    server.add_service(side_listener::service(
        "metrics",
        MetricsApp::new(metrics),
        config.metrics_listen,
        config.metrics_limits,
        connections,
    ));
    Ok(server)
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_worker_thread_runs_without_work_stealing_and_more_steal() {
        assert!(!super::default_work_stealing(1));
        assert!(super::default_work_stealing(2));
        assert!(super::default_work_stealing(8));
    }
}
