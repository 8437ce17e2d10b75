//! Retained (latest-value) updates over real sockets (issue 16, a Herald extension): a publish
//! with `retain=on` is kept as its topics' latest value, and a subscription with `retained=1`
//! (or one `--retain` names) receives the latest value of every matching topic it may see
//! first, then live updates, with no gap and no duplicate between the two.

mod common;

use common::*;
use herald_hub::Settings;
use herald_hub::history::{FileHistory, FileOptions, RetainedLimits, Retention};
use http::StatusCode;
use std::sync::Arc;
use std::time::Duration;

const SHORT: Duration = Duration::from_millis(300);

fn data(events: Vec<herald_sse::MessageEvent>) -> Vec<String> {
    events.into_iter().map(|e| e.data).collect()
}

async fn price(hub: &TestHub, symbol: &str, value: &str, retain: bool) -> String {
    let topic = format!("https://example.com/prices/{symbol}");
    let mut form = vec![("topic", topic.as_str()), ("data", value)];
    if retain {
        form.push(("retain", "on"));
    }
    hub.publish(&form).await
}

const PRICES: &str = "topic=https%3A%2F%2Fexample.com%2Fprices%2F%7Bsymbol%7D";

/// The latest retained update of each matching topic first, in publish order, each once; then
/// live updates. Without `retained=1` nothing comes first; with `Last-Event-ID` the replay
/// comes instead, as always, unless the hub does not know the id.
async fn latest_values_first_then_live(transport: Transport) {
    let hub = TestHub::start(anonymous()).await.over(transport);
    price(&hub, "AAA", "A 1", true).await;
    price(&hub, "BBB", "B 1", true).await;
    let a2 = price(&hub, "AAA", "A 2", true).await;
    price(&hub, "CCC", "C 1 (not retained)", false).await;
    hub.publish(&[
        ("topic", "https://example.com/other"),
        ("data", "elsewhere"),
        ("retain", "on"),
    ])
    .await;

    let mut ticker = hub.subscribe(&format!("{PRICES}&retained=1"), &[]).await;
    assert_eq!(ticker.status, StatusCode::OK);
    assert_eq!(data(ticker.take(2).await), ["B 1", "A 2"]);
    assert!(
        ticker.quiet_for(SHORT).await,
        "each topic once, nothing else"
    );
    price(&hub, "BBB", "B 2", false).await;
    assert_eq!(ticker.next().await.data, "B 2", "then live");

    let mut plain = hub.subscribe(PRICES, &[]).await;
    assert!(plain.quiet_for(SHORT).await, "asked for nothing retained");
    let mut resuming = hub
        .subscribe(&format!("{PRICES}&retained=1"), &[("last-event-id", &a2)])
        .await;
    assert_eq!(
        data(resuming.take(2).await),
        ["C 1 (not retained)", "B 2"],
        "a resuming subscriber gets what it missed, not the latest values"
    );
    assert!(resuming.quiet_for(SHORT).await);
    // An id the hub does not know (say, long gone from history): the subscriber lost its
    // place, and the latest values are the state to start again from.
    let mut lost = hub
        .subscribe(
            &format!("{PRICES}&retained=1"),
            &[("last-event-id", "urn:uuid:not-known-here")],
        )
        .await;
    assert_eq!(data(lost.take(2).await), ["B 1", "A 2"]);
    assert!(lost.quiet_for(SHORT).await);
}

/// A private retained update goes only to subscribers whose token grants one of its topics.
async fn private_retained_updates_follow_the_rules(transport: Transport) {
    let hub = TestHub::start(anonymous()).await.over(transport);
    hub.publish(&[
        ("topic", "https://example.com/users/1/inbox"),
        ("data", "for user 1"),
        ("retain", "on"),
        ("private", "on"),
    ])
    .await;
    let query = "topic=https%3A%2F%2Fexample.com%2Fusers%2F%7Bid%7D%2Finbox&retained=1";
    let mut anonymous = hub.subscribe(query, &[]).await;
    assert!(anonymous.quiet_for(SHORT).await);
    let other = format!(
        "Bearer {}",
        subscriber_token(&["https://example.com/users/2/inbox"])
    );
    let mut someone_else = hub.subscribe(query, &[("authorization", &other)]).await;
    assert!(someone_else.quiet_for(SHORT).await);
    let owner = format!(
        "Bearer {}",
        subscriber_token(&["https://example.com/users/1/inbox"])
    );
    let mut user = hub.subscribe(query, &[("authorization", &owner)]).await;
    assert_eq!(user.next().await.data, "for user 1");
}

/// `--retain SELECTOR`: every subscription gets the latest values of the topics it names,
/// without asking.
async fn configured_selectors_retain_without_asking(transport: Transport) {
    let hub = TestHub::start(Settings {
        retain: vec!["https://example.com/prices/{symbol}".into()],
        ..anonymous()
    })
    .await
    .over(transport);
    price(&hub, "AAA", "A 1", true).await;
    hub.publish(&[
        ("topic", "https://example.com/other"),
        ("data", "not configured"),
        ("retain", "on"),
    ])
    .await;
    let mut sse = hub.subscribe("topic=*", &[]).await;
    assert_eq!(sse.next().await.data, "A 1");
    assert!(sse.quiet_for(SHORT).await);
}

/// While a publisher keeps replacing a topic's value, subscriptions opened at any moment each
/// see a strictly increasing run of values that ends with the last one: no value twice, none
/// missing after the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_gap_and_no_duplicate_while_values_change() {
    let hub = Arc::new(TestHub::start(anonymous()).await);
    const LAST: u32 = 300;
    let publisher = {
        let hub = hub.clone();
        tokio::spawn(async move {
            for n in 1..=LAST {
                let n = n.to_string();
                hub.publish(&[("topic", "t"), ("data", &n), ("retain", "on")])
                    .await;
            }
        })
    };
    let mut subscribers = Vec::new();
    for _ in 0..20 {
        subscribers.push(hub.subscribe("topic=t&retained=1", &[]).await);
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    publisher.await.unwrap();
    for mut sse in subscribers {
        let mut seen: Vec<u32> = Vec::new();
        while seen.last() != Some(&LAST) {
            let event = sse.next().await;
            seen.push(event.data.parse().unwrap());
        }
        let first = seen[0];
        let expected: Vec<u32> = (first..=LAST).collect();
        assert_eq!(seen, expected, "contiguous from the first value on");
    }
}

/// Many latest values go out a chunk at a time, all of them, in publish order.
#[tokio::test]
async fn many_latest_values_all_arrive_in_order() {
    let hub = TestHub::start(anonymous()).await;
    for n in 0..150 {
        price(&hub, &format!("S{n}"), &n.to_string(), true).await;
    }
    let mut sse = hub.subscribe(&format!("{PRICES}&retained=1"), &[]).await;
    let expected: Vec<String> = (0..150).map(|n| n.to_string()).collect();
    assert_eq!(data(sse.take(150).await), expected);
    assert!(sse.quiet_for(SHORT).await);
}

/// `--conflate SELECTOR`: a subscriber that catches up (here: resuming with `Last-Event-ID`)
/// gets only the newest update of each conflated topic it is owed, and every update of the
/// others; one that keeps up gets everything.
#[tokio::test]
async fn conflated_topics_catch_up_with_their_newest_update_only() {
    let hub = TestHub::start(Settings {
        conflate: vec!["https://example.com/prices/{symbol}".into()],
        ..anonymous()
    })
    .await;
    let first = hub.publish(&[("topic", "start"), ("data", "start")]).await;
    let query = format!("{PRICES}&topic=news");
    let mut live = hub.subscribe(&query, &[]).await;
    for n in 0..20 {
        // `live` takes each update before the next is published: it keeps up.
        price(&hub, "AAA", &format!("A {n}"), false).await;
        assert_eq!(data(live.take(1).await), [format!("A {n}")]);
        price(&hub, "BBB", &format!("B {n}"), false).await;
        assert_eq!(data(live.take(1).await), [format!("B {n}")]);
        hub.publish(&[("topic", "news"), ("data", &format!("news {n}"))])
            .await;
        assert_eq!(data(live.take(1).await), [format!("news {n}")]);
    }
    let mut resuming = hub.subscribe(&query, &[("last-event-id", &first)]).await;
    let mut expected: Vec<String> = (0..20).map(|n| format!("news {n}")).collect();
    expected.insert(19, "A 19".into());
    expected.insert(20, "B 19".into());
    assert_eq!(data(resuming.take(22).await), expected);
    assert!(resuming.quiet_for(SHORT).await);
}

/// On the file store, after a restart: the hub never dispatched the prices it reads back, and
/// a resuming subscriber's catch-up still gets only the newest of each symbol (within each read
/// from history; the first read is small, so one stale price may precede the newest) and every
/// news update, in order.
#[tokio::test]
async fn conflation_after_a_restart_on_the_file_store() {
    let dir = std::env::temp_dir().join(format!("herald-conflate-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let open = || FileHistory::open(&dir, FileOptions::default()).map(Arc::new);
    let settings = || Settings {
        conflate: vec!["https://example.com/prices/{symbol}".into()],
        ..anonymous()
    };
    let first;
    {
        let mut hub = TestHub::start_on(open().unwrap(), settings()).await;
        first = hub.publish(&[("topic", "news"), ("data", "start")]).await;
        for n in 0..20 {
            price(&hub, "AAA", &format!("A {n}"), false).await;
            price(&hub, "BBB", &format!("B {n}"), false).await;
            hub.publish(&[("topic", "news"), ("data", &format!("news {n}"))])
                .await;
        }
        hub.stop();
    }
    let hub = TestHub::start_on(reopen(open).await, settings()).await;
    let query = format!("{PRICES}&topic=news");
    let mut resuming = hub.subscribe(&query, &[("last-event-id", &first)]).await;
    let mut got = Vec::new();
    while got.last().map(String::as_str) != Some("news 19") {
        got.extend(data(resuming.take(1).await));
    }
    assert!(resuming.quiet_for(SHORT).await);
    let news: Vec<&String> = got.iter().filter(|d| d.starts_with("news")).collect();
    let all_news: Vec<String> = (0..20).map(|n| format!("news {n}")).collect();
    assert_eq!(news, all_news.iter().collect::<Vec<_>>());
    assert!(
        got.ends_with(&["A 19".into(), "B 19".into(), "news 19".into()]),
        "{got:?}"
    );
    assert!(got.len() <= 25, "the older prices skipped: {got:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// On the file store the latest values survive a restart, and outlive history's retention
/// (a symbol that rarely changes keeps its price); their own bounds drop the oldest.
#[tokio::test]
async fn the_file_store_keeps_latest_values_across_restarts() {
    let dir = std::env::temp_dir().join(format!("herald-retained-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let open = || {
        FileHistory::open(
            &dir,
            FileOptions {
                retention: Retention {
                    max_updates: 3,
                    retained: RetainedLimits {
                        max_topics: 2,
                        ..RetainedLimits::default()
                    },
                    ..Retention::default()
                },
                ..FileOptions::default()
            },
        )
        .map(Arc::new)
    };
    {
        let mut hub = TestHub::start_on(open().unwrap(), anonymous()).await;
        price(&hub, "OLD", "dropped by the bound of 2 topics", true).await;
        price(&hub, "AAA", "A 1", true).await;
        price(&hub, "BBB", "B 1", true).await;
        for n in 0..5 {
            price(&hub, "CCC", &format!("C {n}"), false).await;
        }
        hub.stop();
    }
    let history = reopen(open).await;
    let hub = TestHub::start_on(history, anonymous()).await;
    let mut sse = hub.subscribe(&format!("{PRICES}&retained=1"), &[]).await;
    assert_eq!(data(sse.take(2).await), ["A 1", "B 1"]);
    assert!(sse.quiet_for(SHORT).await);
    let _ = std::fs::remove_dir_all(&dir);
}

per_transport!(
    latest_values_first_then_live,
    private_retained_updates_follow_the_rules,
    configured_selectors_retain_without_asking,
);
