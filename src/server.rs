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
use crate::pingora_conf::server_conf;
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
use pingora_core::server::configuration::Opt;
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
    let proxy_service = ProxyService::new(proxy_service, replication);
    let proxy_stopped = proxy_service.stopped();
    let proxy_handle = server.add_service(proxy_service);
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
    let drain = crate::drain::DrainService {
        connections: book,
        proxy_stopped,
        grace_period_end: server.grace_period_end(),
    };
    server.add_service(background_service("drain", drain));
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
