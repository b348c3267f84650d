//! Live reload: `SIGHUP` (or `hothot -s reload -c FILE`) re-reads the
//! configuration file and applies it without closing a connection.
//!
//! TLS listeners' certificate files are read again each time (a renewed
//! certificate is served to new connections). A new configuration is
//! validated whole first; an invalid one is refused
//! and the running one stays (the log names the key). What changes live:
//! `origins` (added, removed, renamed, re-weighted: see
//! `membership`), `health` (probes and passive ejection),
//! `timeouts`, `retries`, `balancing`, and replication's tunables (`methods`,
//! `quorum`, `timeout`, `max_lag`, `linger`, `retry`, `max_pending`,
//! `verify`, ...). Keys that need a restart (or a `-u` upgrade) are refused
//! with a message naming them: `listen`, `metrics`, `admin`, `access_log`,
//! `limits`, `server`, and `replication.mode`, `order`, `order_key` and
//! `journal` but its `max_bytes` (they decide how writes are numbered,
//! stored and read back).

mod membership;
pub mod verdict;

use crate::adaptive::Adaptive;
use crate::certificates::{CertificateError, ListenerCertificate};
use crate::config::{Config, ConfigError, HealthConfig};
use crate::limit::Limiter;
use crate::metrics::Metrics;
use crate::origin_tls::TlsError;
use crate::pool::Pool;
use crate::proxy::LiveSettings;
use crate::replication::Replicator;
use crate::selection::Balancer;
use arc_swap::ArcSwap;
use membership::Plan;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Why a reload was refused (the running configuration stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0} cannot change while hothot runs: restart it (or start a new one with -u)")]
    NeedsRestart(&'static str),
    #[error("{0}")]
    Certificate(#[from] CertificateError),
    #[error("{key}: {source}")]
    OriginTls {
        key: String,
        #[source]
        source: TlsError,
    },
    #[error("{key}: {reason}")]
    Limit { key: String, reason: String },
    /// In a cluster every instance has the same origins.
    #[error("{0}: in a cluster every instance has the same origins (names and addresses); change them by restarting every instance with the new list")]
    ClusterOrigins(String),
}

/// The configuration in force: what `/status` reports.
#[derive(Debug, Clone)]
pub struct ConfigVersion {
    pub sha256: String,
    pub loaded_at: SystemTime,
}

/// The pieces a reload changes.
pub struct Live {
    pub pool: Arc<Pool>,
    pub metrics: Arc<Metrics>,
    pub limiter: Arc<Limiter>,
    pub adaptive: Arc<Adaptive>,
    pub health: Arc<ArcSwap<HealthConfig>>,
    pub proxy: Arc<LiveSettings>,
    pub replicator: Arc<Replicator>,
    /// Rebuilt when origins are added or removed.
    pub balancer: Arc<Balancer>,
    /// Told when origins are added: the health service probes them at once.
    pub probe_added: Arc<tokio::sync::Notify>,
    /// The client connections' budget, which the number of origins changes
    /// (descriptors are kept for each one's connections, probes and lanes).
    pub connections: Arc<crate::connections::Book>,
    /// Descriptors kept beside the per-origin reserve (the idle upstream
    /// pool, the side listeners'), fixed at start-up.
    pub kept_descriptors: usize,
    /// The TLS listeners' certificates, read again at every reload.
    pub certificates: Vec<Arc<ListenerCertificate>>,
}

pub struct Reloader {
    /// The file to re-read; `None` for a proxy built without one (tests).
    path: Option<PathBuf>,
    /// Beside it each attempt's verdict is written for `hothot -s reload`.
    pid_file: PathBuf,
    /// Reload attempts so far.
    attempts: std::sync::atomic::AtomicU64,
    current: Mutex<Config>,
    version: Arc<Mutex<ConfigVersion>>,
    live: Live,
}

impl Reloader {
    pub fn new(path: Option<PathBuf>, config: &Config, live: Live) -> Self {
        let version = ConfigVersion {
            sha256: config.sha256.clone(),
            loaded_at: SystemTime::now(),
        };
        live.metrics.config_reloaded(version.loaded_at);
        Reloader {
            path,
            pid_file: config.pid_file.clone(),
            attempts: Default::default(),
            current: Mutex::new(config.clone()),
            version: Arc::new(Mutex::new(version)),
            live,
        }
    }

    /// The version in force, shared with the admin API.
    pub fn version(&self) -> Arc<Mutex<ConfigVersion>> {
        self.version.clone()
    }

    /// Re-reads the file and applies it, or refuses it whole; logs and
    /// counts either way.
    pub fn reload(&self) {
        let Some(path) = &self.path else {
            log::warn!("reload: this hothot was not started from a config file");
            return;
        };
        let outcome = crate::config::load(path)
            .map_err(ReloadError::from)
            .and_then(|new| self.apply(new));
        // One message for the log and for `hothot -s reload`.
        let (applied, message) = match outcome {
            Ok(what) => {
                self.live.metrics.config_reloaded(SystemTime::now());
                (true, format!("{} applied ({what})", path.display()))
            }
            Err(reason) => {
                self.live.metrics.reload_failed();
                let shown = path.display();
                let message = format!("{shown} refused, the running configuration stays: {reason}");
                (false, message)
            }
        };
        match applied {
            // A reload that worked is news, not a warning (#29).
            true => log::info!("reload: {message}"),
            false => log::error!("reload: {message}"),
        }
        let verdict = verdict::Verdict {
            pid: std::process::id(),
            attempt: self.attempts.fetch_add(1, Ordering::Relaxed) + 1,
            applied,
            message,
        };
        if let Err(e) = verdict.record(&self.pid_file) {
            log::warn!(
                "reload: cannot write {} for `hothot -s reload`: {e}",
                verdict::path(&self.pid_file).display()
            );
        }
    }

    fn apply(&self, new: Config) -> Result<String, ReloadError> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        needs_restart(&current, &new)?;
        let budget = crate::connections::budget(
            new.limits.max_connections,
            new.origins.len(),
            self.live.kept_descriptors,
        )
        .map_err(|(key, reason)| ReloadError::Limit { key, reason })?;
        let plan = Plan::prepare(&self.live.pool, &current, &new)?;
        // Certificates are read again even when the file is unchanged:
        // renewing one rewrites its files, not the configuration.
        ListenerCertificate::reload_all(&self.live.certificates)?;
        if new.sha256 == current.sha256 {
            return Ok(match self.live.certificates.is_empty() {
                true => "unchanged".into(),
                false => "unchanged; TLS certificates read again".into(),
            });
        }
        for warning in &new.warnings {
            log::warn!("reload: {warning}");
        }
        let live = &self.live;
        // Everything that can refuse the reload has run: from here it applies whole.
        let members = plan.changes_members();
        let mut changed = plan.apply(&live.pool, &live.replicator);
        if members {
            // Probed at once, picked from now on.
            live.probe_added.notify_one();
            live.balancer.rebuild();
        }
        if budget != live.connections.max() {
            changed.push(format!(
                "client connection budget {} -> {budget}",
                live.connections.max()
            ));
            live.connections.set_max(budget);
        }
        if current.health != new.health {
            live.pool.set_passive(new.health.passive);
            live.health.store(Arc::new(new.health.clone()));
            changed.push("health".into());
        }
        if (current.timeouts, current.retries) != (new.timeouts, new.retries) {
            live.pool.set_timeouts(new.timeouts);
            live.proxy.set_retries(new.retries);
            changed.push("timeouts and retries".into());
        }
        if current.replication != new.replication {
            live.replicator.set_config(new.replication.clone());
            changed.push("replication".into());
        }
        if current.balancing != new.balancing {
            live.adaptive.set_settings(new.balancing);
            let balancing = &new.balancing;
            live.limiter
                .set_mode(balancing.limit, balancing.queue_timeout);
            changed.push("balancing".into());
        }
        live.metrics.publish_pool(&live.pool);
        *self.version.lock().unwrap_or_else(|e| e.into_inner()) = ConfigVersion {
            sha256: new.sha256.clone(),
            loaded_at: SystemTime::now(),
        };
        *current = new;
        Ok(match changed.is_empty() {
            true => "no setting changed".into(),
            false => changed.join(", "),
        })
    }
}

/// The first key whose change needs a restart, as a refusal.
fn needs_restart(old: &Config, new: &Config) -> Result<(), ReloadError> {
    let (a, b) = (&old.replication, &new.replication);
    let restart_only = [
        ("listen", old.listen != new.listen),
        ("metrics.listen", old.metrics_listen != new.metrics_listen),
        ("metrics.limits", old.metrics_limits != new.metrics_limits),
        ("admin", old.admin != new.admin),
        ("cluster", old.cluster != new.cluster),
        ("access_log", old.access_log != new.access_log),
        ("limits", old.limits != new.limits),
        ("server", old.server != new.server),
        ("replication.mode", a.mode != b.mode),
        ("replication.order", a.order != b.order),
        ("replication.order_key", a.order_key != b.order_key),
        ("replication.journal.dir", a.journal.dir != b.journal.dir),
        (
            "replication.journal.fsync, fsync_interval and commit_delay",
            (
                a.journal.fsync,
                a.journal.fsync_interval,
                a.journal.commit_delay,
            ) != (
                b.journal.fsync,
                b.journal.fsync_interval,
                b.journal.commit_delay,
            ),
        ),
    ];
    if let Some((key, _)) = restart_only.iter().find(|(_, changed)| *changed) {
        return Err(ReloadError::NeedsRestart(key));
    }
    match old.cluster.is_some() {
        true => same_origins(&old.origins, &new.origins).map_err(ReloadError::ClusterOrigins),
        false => Ok(()),
    }
}

/// In a cluster every instance keeps the cluster's origins: the first that
/// differs, as a refusal.
pub fn same_origins(
    old: &[crate::config::OriginConfig],
    new: &[crate::config::OriginConfig],
) -> Result<(), String> {
    use crate::cluster::origins;
    match origins::first_difference(&origins::of(old), &origins::of(new)) {
        Some(difference) => Err(difference),
        None => Ok(()),
    }
}
