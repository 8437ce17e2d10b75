//! Subscription events and the subscriptions API (`--subscriptions`), over real sockets.

mod common;

use common::*;
use herald_hub::Settings;
use http::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

const WATCH: &str = "/.well-known/mercure/subscriptions{/topic}{/subscriber}";

fn with_subscriptions() -> Settings {
    Settings {
        anonymous: true,
        subscriptions: true,
        ..Settings::default()
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn subscription_events_announce_start_and_end(transport: Transport) {
    let hub = TestHub::start(with_subscriptions()).await.over(transport);
    let watcher_token = subscriber_token(&[WATCH]);
    let mut watcher = hub
        .subscribe(
            &format!("topic={}", urlencode(WATCH)),
            &[("authorization", &bearer(&watcher_token))],
        )
        .await;
    assert_eq!(watcher.status, StatusCode::OK);
    // The watcher's own subscription is announced first.
    let own: Value = serde_json::from_str(&watcher.next().await.data).unwrap();
    assert_eq!(own["topic"], WATCH);

    let alice = subscriber_token_with_payload(&[], json!({"user": "alice"}));
    let client = hub
        .subscribe(
            "topic=https://example.com/books/1",
            &[("authorization", &bearer(&alice))],
        )
        .await;
    let started: Value = serde_json::from_str(&watcher.next().await.data).unwrap();
    assert_eq!(started["@context"], "https://mercure.rocks/");
    assert_eq!(started["type"], "Subscription");
    assert_eq!(started["topic"], "https://example.com/books/1");
    assert_eq!(started["active"], true);
    assert_eq!(started["payload"]["user"], "alice");
    let subscriber = started["subscriber"].as_str().unwrap().to_owned();
    assert!(subscriber.starts_with("urn:uuid:"));
    assert_eq!(
        started["id"],
        format!(
            "/.well-known/mercure/subscriptions/https%3A%2F%2Fexample.com%2Fbooks%2F1/{}",
            subscriber.replace(':', "%3A")
        )
    );

    drop(client);
    let ended: Value = serde_json::from_str(&watcher.next().await.data).unwrap();
    assert_eq!(ended["active"], false);
    assert_eq!(ended["subscriber"], subscriber.as_str());

    // Subscription events are private: an anonymous watcher sees none.
    let mut anonymous = hub
        .subscribe(&format!("topic={}", urlencode(WATCH)), &[])
        .await;
    let _other = hub.subscribe("topic=x", &[]).await;
    assert!(
        anonymous
            .quiet_for(std::time::Duration::from_millis(300))
            .await
    );
}

async fn subscriptions_api_lists_active_subscriptions(transport: Transport) {
    let hub = TestHub::start(with_subscriptions()).await.over(transport);
    let _a = hub
        .subscribe(
            "topic=https://example.com/a&topic=https://example.com/b",
            &[],
        )
        .await;
    let api_token = subscriber_token(&["/.well-known/mercure/subscriptions{/topic}{/subscriber}"]);
    let get = |path: String, token: Option<String>| {
        let hub = &hub;
        async move {
            let mut req = http::Request::get(hub.url(&path));
            if let Some(token) = token {
                req = req.header("authorization", bearer(&token));
            }
            let response = hub
                .request(req.body(http_body_util::Full::default()).unwrap())
                .await;
            let status = response.status();
            let ct = response.headers().get("content-type").cloned();
            (status, ct, body_text(response).await)
        }
    };
    let (status, ct, body) = get(
        "/.well-known/mercure/subscriptions".into(),
        Some(api_token.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(ct.unwrap(), "application/ld+json");
    let list: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list["type"], "Subscriptions");
    assert_eq!(list["id"], "/.well-known/mercure/subscriptions");
    assert!(
        list["lastEventID"]
            .as_str()
            .unwrap()
            .starts_with("urn:uuid:")
    );
    let subs = list["subscriptions"].as_array().unwrap();
    assert_eq!(subs.len(), 2, "{body}");

    let topic = "https%3A%2F%2Fexample.com%2Fb";
    let (status, _, body) = get(
        format!("/.well-known/mercure/subscriptions/{topic}"),
        Some(api_token.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let list: Value = serde_json::from_str(&body).unwrap();
    let subs = list["subscriptions"].as_array().unwrap();
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0]["topic"], "https://example.com/b");
    let subscriber = subs[0]["subscriber"].as_str().unwrap().replace(':', "%3A");

    let (status, _, body) = get(
        format!("/.well-known/mercure/subscriptions/{topic}/{subscriber}"),
        Some(api_token.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let one: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(one["type"], "Subscription");
    assert_eq!(one["active"], true);
    // Issue 15's audit: every subscriptions document has lastEventID at its root.
    assert_eq!(one["lastEventID"], list["lastEventID"], "{body}");

    let (status, _, _) = get("/.well-known/mercure/subscriptions".into(), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, body) = get(
        "/.well-known/mercure/subscriptions".into(),
        Some(subscriber_token(&["https://example.com/{x}"])),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
}

async fn subscriptions_api_is_off_by_default(transport: Transport) {
    let hub = TestHub::start(Settings {
        anonymous: true,
        ..Settings::default()
    })
    .await
    .over(transport);
    let (status, _, body) = hub.get("/.well-known/mercure/subscriptions").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("--subscriptions"), "{body}");
}

/// Issue 15's audit: the subscriptions API had no ETag, so a polling client could not ask
/// "has it changed?" (the spec's examples show `ETag` and `If-None-Match`).
async fn subscriptions_api_answers_304_until_the_view_changes(transport: Transport) {
    let hub = TestHub::start(with_subscriptions()).await.over(transport);
    let api_token = subscriber_token(&["/.well-known/mercure/subscriptions{/topic}{/subscriber}"]);
    let get = |etag: Option<String>| {
        let (hub, token) = (&hub, &api_token);
        async move {
            let mut req = http::Request::get(hub.url("/.well-known/mercure/subscriptions"))
                .header("authorization", bearer(token));
            if let Some(etag) = etag {
                req = req.header("if-none-match", etag);
            }
            let response = hub
                .request(req.body(http_body_util::Full::default()).unwrap())
                .await;
            let status = response.status();
            let etag = response
                .headers()
                .get("etag")
                .map(|v| v.to_str().unwrap().to_owned());
            (status, etag)
        }
    };
    let _a = hub.subscribe("topic=https://example.com/a", &[]).await;
    // Seen once the view has the subscription (its event went through history).
    let mut first = get(None).await;
    for _ in 0..100 {
        let again = get(None).await;
        if again.1 == first.1 && again.1.as_deref() != Some("\"earliest\"") {
            break;
        }
        first = again;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, etag) = first;
    assert_eq!(status, StatusCode::OK);
    let etag = etag.expect("an ETag");
    assert_eq!(get(Some(etag.clone())).await.0, StatusCode::NOT_MODIFIED);
    assert_eq!(get(Some("\"other\"".into())).await.0, StatusCode::OK);

    let _b = hub.subscribe("topic=https://example.com/b", &[]).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (status, new_etag) = get(Some(etag.clone())).await;
        if status == StatusCode::OK {
            assert_ne!(new_etag.as_deref(), Some(etag.as_str()));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a new subscription changes the ETag"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

per_transport!(
    subscription_events_announce_start_and_end,
    subscriptions_api_lists_active_subscriptions,
    subscriptions_api_is_off_by_default,
    subscriptions_api_answers_304_until_the_view_changes,
);
