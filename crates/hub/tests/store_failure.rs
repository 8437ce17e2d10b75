//! The file store failing under a running hub: publishes get `503` with a clear message, nothing
//! refused is visible, subscribers stay connected, `/readyz` says so, and the hub recovers by
//! itself. (The failure is injected in the store's writer: as root, this machine cannot make a
//! directory unwritable, and it has no small filesystem to fill.)

mod common;

use common::*;
use herald_hub::Settings;
use herald_hub::history::{FileHistory, FileOptions, Retention};
use http::StatusCode;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_gets_503_while_the_store_fails_then_recovers() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("data");
    let history = Arc::new(
        FileHistory::open(
            &dir,
            FileOptions {
                retention: Retention {
                    max_updates: 1000,
                    ..Retention::default()
                },
                ..FileOptions::default()
            },
        )
        .unwrap(),
    );
    let hub = TestHub::start_on(
        history.clone(),
        Settings {
            anonymous: true,
            ..Settings::default()
        },
    )
    .await;
    let mut sse = hub.subscribe("topic=t", &[]).await;
    hub.publish(&[("topic", "t"), ("id", "before"), ("data", "1")])
        .await;
    assert_eq!(sse.next().await.last_event_id, "before");

    history.set_write_failure(true);
    let (status, body) = hub
        .publish_with(
            Some(&publisher_token(&["*"])),
            &[("topic", "t"), ("id", "during"), ("data", "2")],
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body.contains("history store unavailable") && body.contains("retry later"),
        "{body}"
    );
    assert_eq!(hub.get("/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        hub.get("/metrics")
            .await
            .2
            .contains("herald_store_errors_total 1")
    );
    assert!(
        sse.quiet_for(Duration::from_millis(300)).await,
        "nothing refused is dispatched"
    );
    assert!(!sse.ended, "subscribers stay connected");

    history.set_write_failure(false);
    hub.publish(&[("topic", "t"), ("id", "after"), ("data", "3")])
        .await;
    assert_eq!(sse.next().await.last_event_id, "after");
    assert_eq!(hub.get("/readyz").await.0, StatusCode::OK);
    let mut replay = hub
        .subscribe("topic=t", &[("last-event-id", "earliest")])
        .await;
    let ids: Vec<String> = replay
        .take(2)
        .await
        .into_iter()
        .map(|e| e.last_event_id)
        .collect();
    assert_eq!(ids, ["before", "after"]);
    assert!(
        replay.quiet_for(Duration::from_millis(200)).await,
        "the refused update is not in history"
    );
}
