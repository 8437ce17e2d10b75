//! Prometheus metrics of the hub, served as text at `/metrics`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The table of metrics: each line is a field of [`Metrics`], its type, its Prometheus name
/// (after the `herald_` prefix; counters get `_total`) and its help text, which the field's doc
/// repeats. One line per metric, so that a field cannot exist without being registered.
macro_rules! metrics {
    ($( $(#[$doc:meta])* $field:ident: $kind:ty = $name:literal, $help:literal; )*) => {
        /// The hub's counters and gauges. Cheap to update (atomics); rendered on demand.
        #[derive(Debug)]
        pub struct Metrics {
            registry: Registry,
            $( $(#[$doc])* pub $field: $kind, )*
        }

        impl Default for Metrics {
            fn default() -> Self {
                let mut registry = Registry::with_prefix("herald");
                $( let $field = <$kind>::default();
                   registry.register($name, $help, $field.clone()); )*
                Metrics { registry, $( $field, )* }
            }
        }
    };
}

metrics! {
    /// Open HTTP connections.
    connections: Gauge = "connections", "Open HTTP connections";
    /// Open SSE subscriptions.
    subscribers: Gauge = "subscribers", "Open SSE subscriptions";
    /// Updates accepted from publishers (acknowledged with `200`).
    published: Counter = "updates_published", "Updates accepted from publishers";
    /// Updates put on subscriber queues by the dispatcher.
    queued: Counter = "updates_queued", "Updates queued for subscribers by the dispatcher";
    /// Updates written to subscriber streams (live and replayed).
    delivered: Counter = "updates_delivered",
        "Updates written to subscriber streams, live and replayed";
    /// Bytes written to subscriber streams.
    bytes_sent: Counter = "sent_bytes", "Bytes written to subscriber streams";
    /// Times a subscriber queue was full, so that subscriber caught up from history instead.
    lagged: Counter = "subscriber_lagged",
        "Times a full subscriber queue made that subscriber catch up from history";
    /// Updates not sent to a subscriber that had fallen behind, because a newer update of the
    /// same latest-value topic followed (`--conflate`).
    conflated: Counter = "updates_conflated",
        "Updates skipped for a subscriber behind on a latest-value topic, a newer one following";
    /// Subscribers closed because what they were owed was no longer in history.
    closed_slow: Counter = "subscriber_closed_slow",
        "Subscribers closed because the updates they were owed had left history";
    /// Publishes refused because the history store failed (`503`).
    store_errors: Counter = "store_errors", "Publishes refused because the history store failed";
    /// Bytes taken for subscribers (from their queues or history) and not yet written.
    owed_bytes: Gauge = "owed_bytes",
        "Bytes taken for subscribers and not yet written to their sockets";
    /// Subscribers closed because their socket took no bytes for the write timeout.
    closed_stalled: Counter = "subscriber_closed_stalled",
        "Subscribers closed because their socket took no bytes for the write timeout";
    /// Subscribers closed while blocked because the bytes owed to all were over budget.
    closed_budget: Counter = "subscriber_closed_budget",
        "Blocked subscribers closed because the bytes owed to all subscribers were over budget";
    /// Connections refused at accept (connection limit, or per-address limit).
    refused_connections: Counter = "connections_refused",
        "Connections refused at accept by the total or per-address connection limit";
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_rendered_under_its_name() {
        let m = Metrics::default();
        m.published.inc();
        m.owed_bytes.set(7);
        let text = m.render();
        for line in [
            "herald_connections 0",
            "herald_updates_published_total 1",
            "herald_owed_bytes 7",
            "herald_connections_refused_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert_eq!(text.matches("# TYPE").count(), 14, "one per field");
    }
}
