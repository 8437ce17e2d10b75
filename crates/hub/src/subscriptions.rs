//! Subscriptions as data (Mercure's "subscription events" and subscriptions API): which
//! subscribers are connected to which selectors, published as private updates on
//! `/.well-known/mercure/subscriptions/{topic}/{subscriber}` when a subscription starts and ends,
//! and listed as JSON-LD at `GET /.well-known/mercure/subscriptions[/{topic}[/{subscriber}]]`.

use crate::history::History;
use crate::lock;
use crate::update::{NewUpdate, new_id};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// The path under which subscriptions are topics.
pub const SUBSCRIPTIONS_PATH: &str = "/.well-known/mercure/subscriptions";
const CONTEXT: &str = "https://mercure.rocks/";

/// What Go's `url.QueryEscape` leaves alone (the reference hub escapes ids with it), so ids
/// match the reference hub's byte for byte, except that a space is `%20` rather than `+`.
const ESCAPE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// One subscription (a subscriber and one of its selectors), as the protocol shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Subscription {
    #[serde(rename = "@context", skip_serializing_if = "Option::is_none")]
    pub context: Option<&'static str>,
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub subscriber: String,
    pub topic: String,
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
}

/// The subscriptions API's list.
#[derive(Debug, Serialize)]
pub struct SubscriptionList {
    #[serde(rename = "@context")]
    pub context: &'static str,
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(rename = "lastEventID")]
    pub last_event_id: String,
    pub subscriptions: Vec<Subscription>,
}

struct Subscriber {
    topics: Vec<String>,
    payload: Option<Value>,
}

/// The registry of connected subscribers, when subscriptions are enabled.
#[derive(Default)]
pub struct Subscriptions {
    active: Mutex<BTreeMap<String, Subscriber>>,
}

/// Escapes a topic or subscriber id for a subscription path segment.
pub fn escape(segment: &str) -> String {
    utf8_percent_encode(segment, ESCAPE).to_string()
}

/// The id (and topic) of the subscription of `subscriber` to `topic`.
pub fn subscription_id(topic: &str, subscriber: &str) -> String {
    format!(
        "{SUBSCRIPTIONS_PATH}/{}/{}",
        escape(topic),
        escape(subscriber)
    )
}

fn subscription(
    topic: &str,
    subscriber: &str,
    active: bool,
    payload: &Option<Value>,
) -> Subscription {
    Subscription {
        context: None,
        id: subscription_id(topic, subscriber),
        kind: "Subscription",
        subscriber: subscriber.to_owned(),
        topic: topic.to_owned(),
        active,
        payload: payload.clone(),
    }
}

impl Subscriptions {
    /// Records a new subscriber and returns its id and the updates announcing it.
    pub fn connect(&self, topics: Vec<String>, payload: Option<Value>) -> (String, Vec<NewUpdate>) {
        let id = new_id();
        let updates = events(&id, &topics, true, &payload);
        lock(&self.active).insert(id.clone(), Subscriber { topics, payload });
        (id, updates)
    }

    /// Forgets a subscriber and returns the updates announcing its end.
    pub fn disconnect(&self, id: &str) -> Vec<NewUpdate> {
        match lock(&self.active).remove(id) {
            Some(s) => events(id, &s.topics, false, &s.payload),
            None => Vec::new(),
        }
    }

    /// Active subscriptions, optionally only those to `topic` (and of `subscriber`).
    pub fn list(&self, topic: Option<&str>, subscriber: Option<&str>) -> Vec<Subscription> {
        let active = lock(&self.active);
        let mut out = Vec::new();
        for (id, s) in active.iter() {
            if subscriber.is_some_and(|want| want != id) {
                continue;
            }
            for t in &s.topics {
                if topic.is_none_or(|want| want == t) {
                    out.push(subscription(t, id, true, &s.payload));
                }
            }
        }
        out
    }
}

fn events(id: &str, topics: &[String], active: bool, payload: &Option<Value>) -> Vec<NewUpdate> {
    topics
        .iter()
        .map(|topic| {
            let mut s = subscription(topic, id, active, payload);
            s.context = Some(CONTEXT);
            let mut update = NewUpdate::new(vec![s.id.clone()], json(&s));
            update.private = true;
            update
        })
        .collect()
}

fn json(value: &impl Serialize) -> String {
    // Serializing plain structs of strings, bools and JSON values cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

impl SubscriptionList {
    pub fn new(id: String, last_event_id: String, subscriptions: Vec<Subscription>) -> Self {
        SubscriptionList {
            context: CONTEXT,
            id,
            kind: "Subscriptions",
            last_event_id,
            subscriptions,
        }
    }
}

/// Ends a subscriber's subscriptions when its connection goes away.
pub struct SubscriptionGuard {
    pub id: String,
    subscriptions: Arc<Subscriptions>,
    history: Arc<dyn History>,
}

impl SubscriptionGuard {
    pub fn new(id: String, subscriptions: Arc<Subscriptions>, history: Arc<dyn History>) -> Self {
        SubscriptionGuard {
            id,
            subscriptions,
            history,
        }
    }
}

impl Drop for SubscriptionGuard {
    fn drop(&mut self) {
        let updates = self.subscriptions.disconnect(&self.id);
        let history = self.history.clone();
        // Drop cannot wait; the hub's runtime publishes the end of the subscription.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { publish_all(history.as_ref(), updates).await });
        }
    }
}

/// Appends subscription events; a failure only loses the announcement, never an update.
pub async fn publish_all(history: &dyn History, updates: Vec<NewUpdate>) {
    for update in updates {
        if let Err(err) = history.append(update).await {
            tracing::warn!(%err, "could not publish a subscription event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_escape_like_the_reference_hub() {
        assert_eq!(
            subscription_id("https://example.com/{id}", "urn:uuid:1"),
            "/.well-known/mercure/subscriptions/https%3A%2F%2Fexample.com%2F%7Bid%7D/urn%3Auuid%3A1"
        );
    }

    #[test]
    fn connect_list_disconnect() {
        let s = Subscriptions::default();
        let (id, events) = s.connect(
            vec!["a".into(), "b".into()],
            Some(serde_json::json!({"u": 1})),
        );
        assert_eq!(events.len(), 2);
        assert!(events.iter().all(|e| e.private));
        let first: serde_json::Value = serde_json::from_str(&events[0].data).unwrap();
        assert_eq!(first["active"], true);
        assert_eq!(first["type"], "Subscription");
        assert_eq!(first["payload"]["u"], 1);
        assert_eq!(s.list(None, None).len(), 2);
        assert_eq!(s.list(Some("b"), None).len(), 1);
        assert_eq!(s.list(Some("b"), Some("other")).len(), 0);
        let ended = s.disconnect(&id);
        let last: serde_json::Value = serde_json::from_str(&ended[1].data).unwrap();
        assert_eq!(last["active"], false);
        assert!(s.list(None, None).is_empty());
        assert!(s.disconnect(&id).is_empty(), "only once");
    }
}
