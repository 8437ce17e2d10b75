//! Prometheus metrics of the hub, served as text at `/metrics`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The hub's counters and gauges. Cheap to update (atomics); rendered on demand.
pub struct Metrics {
    registry: Registry,
    /// Open HTTP connections.
    pub connections: Gauge,
    /// Open SSE subscriptions.
    pub subscribers: Gauge,
    /// Updates accepted from publishers (acknowledged with `200`).
    pub published: Counter,
    /// Updates put on subscriber queues by the dispatcher.
    pub queued: Counter,
    /// Updates written to subscriber streams (live and replayed).
    pub delivered: Counter,
    /// Bytes written to subscriber streams.
    pub bytes_sent: Counter,
    /// Times a subscriber queue was full, so that subscriber caught up from history instead.
    pub lagged: Counter,
    /// Subscribers closed because what they were owed was no longer in history.
    pub closed_slow: Counter,
    /// Publishes refused because the history store failed (`503`).
    pub store_errors: Counter,
    /// Bytes taken for subscribers (from their queues or history) and not yet written.
    pub owed_bytes: Gauge,
    /// Subscribers closed because their socket took no bytes for the write timeout.
    pub closed_stalled: Counter,
    /// Subscribers closed while blocked because the bytes owed to all were over budget.
    pub closed_budget: Counter,
    /// Connections refused at accept (connection limit, or per-address limit).
    pub refused_connections: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("herald");
        let metrics = Metrics {
            connections: Gauge::default(),
            subscribers: Gauge::default(),
            published: Counter::default(),
            queued: Counter::default(),
            delivered: Counter::default(),
            bytes_sent: Counter::default(),
            lagged: Counter::default(),
            closed_slow: Counter::default(),
            store_errors: Counter::default(),
            owed_bytes: Gauge::default(),
            closed_stalled: Counter::default(),
            closed_budget: Counter::default(),
            refused_connections: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "connections",
            "Open HTTP connections",
            metrics.connections.clone(),
        );
        registry.register(
            "subscribers",
            "Open SSE subscriptions",
            metrics.subscribers.clone(),
        );
        registry.register(
            "updates_published",
            "Updates accepted from publishers",
            metrics.published.clone(),
        );
        registry.register(
            "updates_queued",
            "Updates queued for subscribers by the dispatcher",
            metrics.queued.clone(),
        );
        registry.register(
            "updates_delivered",
            "Updates written to subscriber streams, live and replayed",
            metrics.delivered.clone(),
        );
        registry.register(
            "sent_bytes",
            "Bytes written to subscriber streams",
            metrics.bytes_sent.clone(),
        );
        registry.register(
            "subscriber_lagged",
            "Times a full subscriber queue made that subscriber catch up from history",
            metrics.lagged.clone(),
        );
        registry.register(
            "subscriber_closed_slow",
            "Subscribers closed because the updates they were owed had left history",
            metrics.closed_slow.clone(),
        );
        registry.register(
            "store_errors",
            "Publishes refused because the history store failed",
            metrics.store_errors.clone(),
        );
        registry.register(
            "owed_bytes",
            "Bytes taken for subscribers and not yet written to their sockets",
            metrics.owed_bytes.clone(),
        );
        registry.register(
            "subscriber_closed_stalled",
            "Subscribers closed because their socket took no bytes for the write timeout",
            metrics.closed_stalled.clone(),
        );
        registry.register(
            "subscriber_closed_budget",
            "Blocked subscribers closed because the bytes owed to all subscribers were over budget",
            metrics.closed_budget.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections refused at accept by the total or per-address connection limit",
            metrics.refused_connections.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
