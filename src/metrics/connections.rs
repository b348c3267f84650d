//! Client connection series: held, refused when full, evicted to make room,
//! and clients that left before their request header was read; the
//! proxy's unlabelled, the side listeners' (admin, metrics) by `listener`.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct ConnectionMetrics {
    /// `hothot_client_connections`: client connections held now.
    pub open: IntGauge,
    /// `hothot_client_connections_max`: how many may be held.
    pub max: IntGauge,
    /// `hothot_client_connections_refused_total`: refused (503 and close) because hothot was full.
    pub refused: IntCounter,
    /// `hothot_client_connections_evicted_total`: closed while waiting for a request, to make room.
    pub evicted: IntCounter,
    /// `hothot_client_aborts_total`: clients that closed, stalled or failed
    /// before their request header was read (logged at debug only).
    pub aborts: IntCounter,
}

impl ConnectionMetrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let open = IntGauge::new(
            "hothot_client_connections",
            "Client connections held now (limits.max_connections caps them)",
        )?;
        let max = IntGauge::new(
            "hothot_client_connections_max",
            "Client connections hothot may hold: limits.max_connections, or what the descriptor limit allows after those kept for origins (a reload changing the origins changes it)",
        )?;
        let refused = IntCounter::new(
            "hothot_client_connections_refused_total",
            "Client connections refused with 503 because hothot held limits.max_connections and none was idle",
        )?;
        let evicted = IntCounter::new(
            "hothot_client_connections_evicted_total",
            "Idle or header-sending client connections closed to make room for a new one",
        )?;
        let aborts = crate::logging::client_aborts().clone();
        registry.register(Box::new(open.clone()))?;
        registry.register(Box::new(max.clone()))?;
        registry.register(Box::new(refused.clone()))?;
        registry.register(Box::new(evicted.clone()))?;
        registry.register(Box::new(aborts.clone()))?;
        Ok(ConnectionMetrics {
            open,
            max,
            refused,
            evicted,
            aborts,
        })
    }
}

/// The side listeners' connection series, labelled `listener`.
pub struct ListenerConnections {
    open: IntGaugeVec,
    max: IntGaugeVec,
    refused: IntCounterVec,
    evicted: IntCounterVec,
}

impl ListenerConnections {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let open = super::registered_gauges(
            registry,
            "hothot_listener_connections",
            "Connections a side listener (admin, metrics) holds now",
            &["listener"],
        )?;
        let max = super::registered_gauges(
            registry,
            "hothot_listener_connections_max",
            "Connections a side listener may hold (its limits.max_connections)",
            &["listener"],
        )?;
        let refused = IntCounterVec::new(
            Opts::new(
                "hothot_listener_connections_refused_total",
                "Connections a side listener refused because it held its limit and none was idle",
            ),
            &["listener"],
        )?;
        let evicted = IntCounterVec::new(
            Opts::new(
                "hothot_listener_connections_evicted_total",
                "Idle or header-sending side-listener connections closed to make room",
            ),
            &["listener"],
        )?;
        registry.register(Box::new(refused.clone()))?;
        registry.register(Box::new(evicted.clone()))?;
        Ok(ListenerConnections {
            open,
            max,
            refused,
            evicted,
        })
    }

    /// The series of the listener `name`, labels resolved.
    pub fn listener(&self, name: &str) -> ConnectionMetrics {
        ConnectionMetrics {
            open: self.open.with_label_values(&[name]),
            max: self.max.with_label_values(&[name]),
            refused: self.refused.with_label_values(&[name]),
            evicted: self.evicted.with_label_values(&[name]),
            aborts: crate::logging::client_aborts().clone(),
        }
    }
}
