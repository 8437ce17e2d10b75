//! Subscriptions as data (Mercure's "subscription events" and subscriptions API): which
//! subscribers are connected to which selectors, published as private updates when a
//! subscription starts and ends, and listed by the API. Each generation in its own shape:
//! Mercure 0.x on `/.well-known/mercure/subscriptions/{topic}/{subscriber}`, JSON-LD, listed at
//! `GET /.well-known/mercure/subscriptions[/{topic}[/{subscriber}]]`; Mercure 1.0 on
//! `/.well-known/mercure/subscriptions/{match_type}/{match}/{subscriber}`, plain JSON with the
//! SSE event type `mercure`, listed (as `application/json`) at the same paths with the 1.0
//! segments.
//!
//! The list is not this node's connections: it is a view folded from the subscription events
//! in the update feed (seeded from history when the hub starts), so that in a cluster every
//! node lists every node's subscribers, and the list's `lastEventID` is exactly the update the
//! view reflects. A node that crashes cannot announce the end of its subscriptions; they stay
//! listed until history no longer holds their start (a restart of the other nodes forgets them).

use crate::history::History;
use crate::lock;
use crate::update::{NewUpdate, Update, new_id};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// The path under which subscriptions are topics.
pub(crate) const SUBSCRIPTIONS_PATH: &str = "/.well-known/mercure/subscriptions";
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
pub(crate) struct Subscription {
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
    /// The view's newest event id, at the root of a single-subscription document (the spec
    /// puts `lastEventID` at the root of every subscriptions API document).
    #[serde(rename = "lastEventID", skip_serializing_if = "Option::is_none")]
    pub last_event_id: Option<String>,
}

/// The subscriptions API's list.
#[derive(Debug, Serialize)]
pub(crate) struct SubscriptionList {
    #[serde(rename = "@context")]
    pub context: &'static str,
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(rename = "lastEventID")]
    pub last_event_id: String,
    pub subscriptions: Vec<Subscription>,
}

/// One Mercure 1.0 subscription (a subscriber and one of its matchers), as 1.0 shows it:
/// plain JSON, announced with the SSE event type `mercure`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct SubscriptionV1 {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(rename = "match")]
    pub matched: String,
    pub match_type: String,
    pub subscriber: String,
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_event_id: Option<String>,
}

/// The Mercure 1.0 subscriptions API's list.
#[derive(Debug, Serialize)]
pub(crate) struct SubscriptionListV1 {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub last_event_id: String,
    pub subscriptions: Vec<SubscriptionV1>,
}

/// What one subscription watches, as its generation names it: each generation's events,
/// topics and API documents have their own shape, and each API lists its own generation's.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Watched {
    /// Mercure 0.x: a `topic` selector.
    Topic(String),
    /// Mercure 1.0: a matcher and its type (`exact`, `urlpattern`).
    Match { match_type: String, text: String },
}

/// The SSE event type of Mercure 1.0's subscription events (refused to publishers).
pub(crate) const EVENT_TYPE_V1: &str = "mercure";

/// A subscriber connected to this node, as its subscription events describe it: what each
/// subscription watches, with its payload.
struct LocalSubscriber {
    watched: Vec<(Watched, Option<Value>)>,
}

/// The registry of subscribers, when subscriptions are enabled.
#[derive(Default)]
pub(crate) struct Subscriptions {
    /// This node's connected subscribers, whose ends it must announce.
    local: Mutex<BTreeMap<String, LocalSubscriber>>,
    /// Every active subscription in the cluster, as the feed's subscription events say.
    view: Mutex<View>,
    /// Announcements being published; a stopping hub waits for them, or the other nodes
    /// would list its subscribers forever.
    announcing: std::sync::atomic::AtomicUsize,
    announced: tokio::sync::Notify,
}

#[derive(Default)]
struct View {
    /// subscriber -> what it watches -> payload.
    active: BTreeMap<String, BTreeMap<Watched, Option<Value>>>,
    /// The id of the newest update the view has seen.
    last_event_id: Option<String>,
    /// Updates of the feed waiting for the seed from history (see `unseeded`).
    pending: Option<Vec<Arc<Update>>>,
}

/// The fields of a subscription event the view needs, of either generation (0.x: `topic`;
/// 1.0: `match` and `match_type`).
#[derive(serde::Deserialize)]
struct SubscriptionEvent {
    subscriber: String,
    #[serde(default)]
    topic: Option<String>,
    #[serde(default, rename = "match")]
    matched: Option<String>,
    #[serde(default)]
    match_type: Option<String>,
    active: bool,
    #[serde(default)]
    payload: Option<Value>,
}

impl SubscriptionEvent {
    fn watched(&self) -> Option<Watched> {
        match (&self.topic, &self.matched, &self.match_type) {
            (Some(topic), _, _) => Some(Watched::Topic(topic.clone())),
            (None, Some(text), Some(match_type)) => Some(Watched::Match {
                match_type: match_type.clone(),
                text: text.clone(),
            }),
            _ => None,
        }
    }
}

/// Escapes a topic or subscriber id for a subscription path segment.
pub(crate) fn escape(segment: &str) -> String {
    utf8_percent_encode(segment, ESCAPE).to_string()
}

/// The id (and topic) of the subscription of `subscriber` to `topic`.
pub(crate) fn subscription_id(topic: &str, subscriber: &str) -> String {
    format!(
        "{SUBSCRIPTIONS_PATH}/{}/{}",
        escape(topic),
        escape(subscriber)
    )
}

/// The id (and topic) of the Mercure 1.0 subscription of `subscriber` to a matcher.
pub(crate) fn subscription_id_v1(match_type: &str, text: &str, subscriber: &str) -> String {
    format!(
        "{SUBSCRIPTIONS_PATH}/{}/{}/{}",
        escape(match_type),
        escape(text),
        escape(subscriber)
    )
}

fn subscription_v1(
    match_type: &str,
    text: &str,
    subscriber: &str,
    active: bool,
    payload: &Option<Value>,
) -> SubscriptionV1 {
    SubscriptionV1 {
        id: subscription_id_v1(match_type, text, subscriber),
        kind: "subscription",
        matched: text.to_owned(),
        match_type: match_type.to_owned(),
        subscriber: subscriber.to_owned(),
        active,
        payload: payload.clone(),
        last_event_id: None,
    }
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
        last_event_id: None,
    }
}

impl Subscriptions {
    /// Records a new subscriber and returns its id and the updates announcing it.
    /// Records a new subscriber (what each of its subscriptions watches, with its payload)
    /// and returns its id and the updates announcing it.
    pub(crate) fn connect(
        &self,
        watched: Vec<(Watched, Option<Value>)>,
    ) -> (String, Vec<NewUpdate>) {
        let id = new_id();
        let updates = events(&id, &watched, true);
        lock(&self.local).insert(id.clone(), LocalSubscriber { watched });
        (id, updates)
    }

    /// Forgets a subscriber and returns the updates announcing its end.
    pub(crate) fn disconnect(&self, id: &str) -> Vec<NewUpdate> {
        match lock(&self.local).remove(id) {
            Some(s) => events(id, &s.watched, false),
            None => Vec::new(),
        }
    }

    /// Active Mercure 0.x subscriptions, optionally only those to `topic` (and of
    /// `subscriber`). With the id of the newest update the list reflects (`None` before any).
    pub(crate) fn list(
        &self,
        topic: Option<&str>,
        subscriber: Option<&str>,
    ) -> (Vec<Subscription>, Option<String>) {
        self.collect(subscriber, |id, watched, payload| match watched {
            Watched::Topic(t) if topic.is_none_or(|want| want == t) => {
                Some(subscription(t, id, true, payload))
            }
            _ => None,
        })
    }

    /// Active Mercure 1.0 subscriptions, optionally only those of a matcher (type and text)
    /// and of `subscriber`; with the id of the newest update the list reflects.
    pub(crate) fn list_v1(
        &self,
        matcher: Option<(&str, &str)>,
        subscriber: Option<&str>,
    ) -> (Vec<SubscriptionV1>, Option<String>) {
        self.collect(subscriber, |id, watched, payload| match watched {
            Watched::Match { match_type, text }
                if matcher.is_none_or(|(t, m)| t == match_type && m == text) =>
            {
                Some(subscription_v1(match_type, text, id, true, payload))
            }
            _ => None,
        })
    }

    /// What `document` makes of each active subscription (of `subscriber` only, if given) it
    /// keeps, and the id of the newest update the view reflects.
    fn collect<T>(
        &self,
        subscriber: Option<&str>,
        document: impl Fn(&str, &Watched, &Option<Value>) -> Option<T>,
    ) -> (Vec<T>, Option<String>) {
        let view = lock(&self.view);
        let out = view
            .active
            .iter()
            .filter(|(id, _)| subscriber.is_none_or(|want| want == *id))
            .flat_map(|(id, all)| {
                all.iter()
                    .filter_map(|(watched, payload)| document(id, watched, payload))
            })
            .collect();
        (out, view.last_event_id.clone())
    }

    /// A registry whose view waits for [`Subscriptions::seed`]: updates of the feed that
    /// arrive before the seed is done are folded in after it, in order.
    pub(crate) fn unseeded() -> Self {
        let this = Subscriptions::default();
        lock(&this.view).pending = Some(Vec::new());
        this
    }

    /// Folds one update of the feed into the view: subscription events change it, every
    /// update moves its `lastEventID`.
    pub(crate) fn apply(&self, update: &Arc<Update>) {
        let mut view = lock(&self.view);
        if let Some(pending) = &mut view.pending {
            pending.push(update.clone());
            return;
        }
        view.fold(update);
    }

    /// Builds the view from what history holds up to `until` (the feed's start), so that a
    /// node that joins a running cluster lists the subscriptions announced before it started;
    /// then folds in what the feed brought meanwhile. Delivery does not wait for it.
    pub(crate) async fn seed(&self, history: &dyn History, until: u64) {
        self.fold_history(history, until).await;
        let mut view = lock(&self.view);
        for update in view.pending.take().unwrap_or_default() {
            view.fold(&update);
        }
    }

    async fn fold_history(&self, history: &dyn History, until: u64) {
        let mut after = match history.resolve(crate::history::EARLIEST).await {
            Ok(crate::history::Start::After(position)) => position,
            _ => return,
        };
        while after < until {
            let batch = match history.read_after(after, 1024).await {
                Ok(batch) if !batch.is_empty() => batch,
                Ok(_) => return,
                Err(err) => {
                    tracing::warn!(%err, "could not read history to list existing subscriptions");
                    return;
                }
            };
            let mut view = lock(&self.view);
            for update in batch.iter().take_while(|u| u.position <= until) {
                view.fold(update);
            }
            after = batch.last().map_or(until, |u| u.position);
        }
    }
}

impl View {
    fn fold(&mut self, update: &Update) {
        self.last_event_id = Some(update.id().to_owned());
        let is_event = update.private()
            && update.topics().first().is_some_and(|t| {
                t.strip_prefix(SUBSCRIPTIONS_PATH)
                    .is_some_and(|rest| rest.starts_with('/'))
            });
        if !is_event {
            return;
        }
        let Ok(event) = serde_json::from_str::<SubscriptionEvent>(update.data()) else {
            return;
        };
        let Some(watched) = event.watched() else {
            return;
        };
        if event.active {
            self.active
                .entry(event.subscriber)
                .or_default()
                .insert(watched, event.payload);
        } else if let Some(all) = self.active.get_mut(&event.subscriber) {
            all.remove(&watched);
            if all.is_empty() {
                self.active.remove(&event.subscriber);
            }
        }
    }
}

/// The subscription events of a subscriber: one private update per subscription, in its
/// generation's shape (0.x: JSON-LD, 1.0: plain JSON with the event type `mercure`).
fn events(id: &str, watched: &[(Watched, Option<Value>)], active: bool) -> Vec<NewUpdate> {
    watched
        .iter()
        .map(|(w, payload)| {
            let mut update = match w {
                Watched::Topic(topic) => {
                    let mut s = subscription(topic, id, active, payload);
                    s.context = Some(CONTEXT);
                    NewUpdate::new(vec![s.id.clone()], json(&s))
                }
                Watched::Match { match_type, text } => {
                    let s = subscription_v1(match_type, text, id, active, payload);
                    let mut update = NewUpdate::new(vec![s.id.clone()], json(&s));
                    update.event_type = Some(EVENT_TYPE_V1.to_owned());
                    update
                }
            };
            update.private = true;
            update
        })
        .collect()
}

fn json(value: &impl Serialize) -> String {
    // Serializing plain structs of strings, bools and JSON values cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

impl Subscriptions {
    /// Publishes announcements in the background (tracked, see [`Subscriptions::settle`]),
    /// after `before` if given (an end after its start). What it returns completes when they
    /// are out, and can be awaited by several (the request, and later its guard).
    pub(crate) fn announce(
        self: &Arc<Self>,
        history: Arc<dyn History>,
        before: Option<Announced>,
        updates: Vec<NewUpdate>,
    ) -> Announced {
        use futures_util::FutureExt;
        use std::sync::atomic::Ordering;
        self.announcing.fetch_add(1, Ordering::AcqRel);
        let this = self.clone();
        let task = tokio::spawn(async move {
            if let Some(before) = before {
                before.await;
            }
            publish_all(history.as_ref(), updates).await;
            if this.announcing.fetch_sub(1, Ordering::AcqRel) == 1 {
                this.announced.notify_waiters();
            }
        });
        task.map(|_| ()).boxed().shared()
    }

    /// Waits (at most `limit`) until every announcement is published.
    pub(crate) async fn settle(&self, limit: std::time::Duration) {
        use std::sync::atomic::Ordering;
        let _ = tokio::time::timeout(limit, async {
            loop {
                let notified = self.announced.notified();
                if self.announcing.load(Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        })
        .await;
    }
}

impl SubscriptionListV1 {
    pub(crate) fn new(
        id: String,
        last_event_id: String,
        subscriptions: Vec<SubscriptionV1>,
    ) -> Self {
        SubscriptionListV1 {
            id,
            kind: "subscriptions",
            last_event_id,
            subscriptions,
        }
    }
}

impl SubscriptionList {
    pub(crate) fn new(id: String, last_event_id: String, subscriptions: Vec<Subscription>) -> Self {
        SubscriptionList {
            context: CONTEXT,
            id,
            kind: "Subscriptions",
            last_event_id,
            subscriptions,
        }
    }
}

/// Announcements being published: done when they are out.
pub(crate) type Announced =
    futures_util::future::Shared<futures_util::future::BoxFuture<'static, ()>>;

/// Ends a subscriber's subscriptions when its connection goes away: made as soon as the
/// subscriber is recorded, so that a request dropped while its start is being announced still
/// announces its end (after the start).
pub(crate) struct SubscriptionGuard {
    pub id: String,
    subscriptions: Arc<Subscriptions>,
    history: Arc<dyn History>,
    started: Option<Announced>,
}

impl SubscriptionGuard {
    pub(crate) fn new(
        id: String,
        subscriptions: Arc<Subscriptions>,
        history: Arc<dyn History>,
        started: Announced,
    ) -> Self {
        SubscriptionGuard {
            id,
            subscriptions,
            history,
            started: Some(started),
        }
    }
}

impl Drop for SubscriptionGuard {
    fn drop(&mut self) {
        let updates = self.subscriptions.disconnect(&self.id);
        // Drop cannot wait; the hub's runtime publishes the end of the subscription.
        if tokio::runtime::Handle::try_current().is_ok() {
            // Not awaited here: `settle` waits for it when the hub stops.
            drop(
                self.subscriptions
                    .announce(self.history.clone(), self.started.take(), updates),
            );
        }
    }
}

/// Appends subscription events; a failure only loses the announcement, never an update.
pub(crate) async fn publish_all(history: &dyn History, updates: Vec<NewUpdate>) {
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

    /// Applies announcements as the feed would: positions in order.
    fn feed(s: &Subscriptions, events: Vec<NewUpdate>, next: &mut u64) {
        for event in events {
            *next += 1;
            s.apply(&Arc::new(event.into_update(*next).unwrap()));
        }
    }

    #[test]
    fn connect_list_disconnect() {
        let s = Subscriptions::default();
        let mut position = 0;
        let payload = Some(serde_json::json!({"u": 1}));
        let (id, events) = s.connect(vec![
            (Watched::Topic("a".into()), payload.clone()),
            (Watched::Topic("b".into()), payload),
        ]);
        assert_eq!(events.len(), 2);
        assert!(events.iter().all(|e| e.private));
        let first: serde_json::Value = serde_json::from_str(&events[0].data).unwrap();
        assert_eq!(first["active"], true);
        assert_eq!(first["type"], "Subscription");
        assert_eq!(first["payload"]["u"], 1);
        assert!(
            s.list(None, None).0.is_empty(),
            "listed once the feed brings the events"
        );
        let last_id = events[1].id.clone();
        feed(&s, events, &mut position);
        let (all, listed_at) = s.list(None, None);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].payload, Some(serde_json::json!({"u": 1})));
        assert_eq!(listed_at, Some(last_id));
        assert_eq!(s.list(Some("b"), None).0.len(), 1);
        assert_eq!(s.list(Some("b"), Some("other")).0.len(), 0);
        let ended = s.disconnect(&id);
        let last: serde_json::Value = serde_json::from_str(&ended[1].data).unwrap();
        assert_eq!(last["active"], false);
        feed(&s, ended, &mut position);
        assert!(s.list(None, None).0.is_empty());
        assert!(s.disconnect(&id).is_empty(), "only once");
    }

    /// The feed may bring a subscriber's end before the seed from history has read its start:
    /// the view folds history first, then what the feed brought meanwhile.
    #[tokio::test]
    async fn seeding_folds_history_before_the_feed() {
        let history = crate::history::MemoryHistory::new(100);
        let other = Subscriptions::default();
        let (id, started) = other.connect(vec![(Watched::Topic("t".into()), None)]);
        for update in started {
            history.append(update).await.unwrap();
        }
        let until = 1;
        let view = Subscriptions::unseeded();
        let mut position = until;
        feed(&view, other.disconnect(&id), &mut position);
        assert!(
            view.list(None, None).0.is_empty(),
            "nothing before the seed"
        );
        view.seed(&history, until).await;
        assert!(view.list(None, None).0.is_empty(), "started, then ended");
        let (again, started) = other.connect(vec![(Watched::Topic("u".into()), None)]);
        feed(&view, started, &mut position);
        assert_eq!(view.list(None, None).0.len(), 1, "then live: {again}");
    }

    #[test]
    fn the_view_ignores_lookalikes_and_follows_other_nodes() {
        let s = Subscriptions::default();
        let mut position = 0;
        // Another node's subscriber, known only from the feed.
        let other = Subscriptions::default();
        let (_, events) = other.connect(vec![(Watched::Topic("t".into()), None)]);
        feed(&s, events, &mut position);
        // A public update on a subscription-like topic, and one with unrelated JSON.
        let mut public = NewUpdate::new(
            vec![format!("{SUBSCRIPTIONS_PATH}/x/y")],
            r#"{"subscriber":"z","topic":"t","active":true}"#,
        );
        public.private = false;
        let mut garbage = NewUpdate::new(vec![format!("{SUBSCRIPTIONS_PATH}/x/y")], "not json");
        garbage.private = true;
        feed(&s, vec![public, garbage], &mut position);
        let (list, _) = s.list(None, None);
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].topic, "t");
    }
}
