//! Mercure 1.0 beside 0.x on one hub, over every transport: a subscribe request with a
//! parameter of 1.0's `match` namespace is read as 1.0 (`match` / `match_exact` exact,
//! `match_urlpattern` WHATWG URL patterns, `last_event_id`, `Mercure-Last-Event-ID`, the
//! `__Secure-mercure_access_token` cookie, no token in the URL); any other as 0.x. Tokens are
//! read by their own generation: an `at+jwt` access token with `authorization_details`, or a
//! JWT with a `mercure` claim.

mod common;

use common::*;
use herald_hub::Settings;
use http::StatusCode;
use std::time::Duration;

const SHORT: Duration = Duration::from_millis(300);

fn data(events: Vec<herald_sse::MessageEvent>) -> Vec<String> {
    events.into_iter().map(|e| e.data).collect()
}

/// `match` is exact (braces are not a template in 1.0), `match_urlpattern` a URL pattern,
/// `*` every topic; relative patterns and topics resolve against the hub's URL.
async fn matchers_select_as_1_0_says(transport: Transport) {
    let hub = TestHub::start(anonymous()).await.over(transport);
    let mut exact = hub
        .subscribe("match=https://example.com/books/%7Bid%7D", &[])
        .await;
    let mut pattern = hub
        .subscribe("match_urlpattern=https://example.com/books/:id", &[])
        .await;
    let mut every = hub.subscribe("match_exact=*", &[]).await;
    let mut relative = hub.subscribe("match_urlpattern=/rel/:x", &[]).await;
    for sse in [&exact, &pattern, &every, &relative] {
        assert_eq!(sse.status, StatusCode::OK);
    }
    for topic in [
        "https://example.com/books/1",
        "https://example.com/books/{id}",
        "https://example.com/books/1/reviews",
        "https://other.example/books/2",
        "/rel/1",
    ] {
        hub.publish(&[("topic", topic), ("data", topic)]).await;
    }
    assert_eq!(
        data(exact.take(1).await),
        ["https://example.com/books/{id}"]
    );
    assert_eq!(
        data(pattern.take(2).await),
        [
            "https://example.com/books/1",
            "https://example.com/books/{id}"
        ]
    );
    assert_eq!(every.take(5).await.len(), 5);
    assert_eq!(data(relative.take(1).await), ["/rel/1"]);
    for sse in [&mut exact, &mut pattern, &mut relative] {
        assert!(sse.quiet_for(SHORT).await);
    }
}

/// 1.0 resumes from `last_event_id` (the `Last-Event-ID` header still wins) and answers
/// `Mercure-Last-Event-ID`, never 0.x's `Last-Event-ID` response header; `lastEventID` is
/// 0.x's and a 1.0 request does not read it.
async fn last_event_id_in_1_0(transport: Transport) {
    let hub = TestHub::start(anonymous()).await.over(transport);
    let mut ids = Vec::new();
    for n in ["one", "two", "three"] {
        ids.push(hub.publish(&[("topic", "t"), ("data", n)]).await);
    }
    let mut by_param = hub
        .subscribe(&format!("match=t&last_event_id={}", ids[0]), &[])
        .await;
    assert_eq!(by_param.headers["mercure-last-event-id"], ids[0].as_str());
    assert!(!by_param.headers.contains_key("last-event-id"));
    assert_eq!(data(by_param.take(2).await), ["two", "three"]);
    let mut by_header = hub
        .subscribe(
            &format!("match=t&last_event_id={}", ids[0]),
            &[("last-event-id", &ids[1])],
        )
        .await;
    assert_eq!(data(by_header.take(1).await), ["three"]);
    let unknown = hub.subscribe("match=t&last_event_id=no-such-id", &[]).await;
    assert_eq!(unknown.headers["mercure-last-event-id"], "earliest");
    let mut old_spelling = hub
        .subscribe(&format!("match=t&lastEventID={}", ids[0]), &[])
        .await;
    assert!(!old_spelling.headers.contains_key("mercure-last-event-id"));
    assert!(old_spelling.quiet_for(SHORT).await, "nothing replayed");
    // 0.x, on the same hub, as before.
    let zero = hub
        .subscribe(&format!("topic=t&lastEventID={}", ids[0]), &[])
        .await;
    assert_eq!(zero.headers["last-event-id"], ids[0].as_str());
    assert!(!zero.headers.contains_key("mercure-last-event-id"));
}

/// What 1.0 refuses, with a `400` that says what to fix.
async fn refusals_of_1_0(transport: Transport) {
    let hub = TestHub::start(anonymous()).await.over(transport);
    let token = subscriber_token(&["*"]);
    for (query, says) in [
        ("matchURLPattern=x", "unknown matcher parameter"),
        ("match_regexp=x", "unknown matcher parameter"),
        ("topic=a&match=b", "not both"),
        (
            &*format!("match=a&authorization={token}"),
            "no token in the URL",
        ),
        ("match_urlpattern=https://x/(?=a)", "invalid URL pattern"),
        ("match=a%00b", "control or format character"),
        // Found by the fuzz smoke: a name with a multi-byte character across byte 5 panicked.
        ("matc%C3%8E=x", "missing \"topic\""),
        ("MATCH%C3%8E=x", "unknown matcher parameter"),
        ("match=a%C2%85b", "control or format character"),
        ("match=a%E2%80%8Bb", "control or format character"),
    ] {
        let (status, _, body) = hub.get(&format!("/.well-known/mercure?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert!(body.contains(says), "{query}: {body}");
        assert!(!body.contains("  "), "a message in one piece: {body:?}");
    }
    let (status, body) = hub
        .publish_with(
            Some(&publisher_token(&["*"])),
            &[("topic", "t"), ("type", "mercure"), ("data", "x")],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("reserved"), "{body}");
    assert!(!body.contains("  "), "a message in one piece: {body:?}");
}

/// A 1.0 subscriber's token travels in the `__Secure-mercure_access_token` cookie; a 0.x one
/// in `mercureAuthorization`. Each generation reads its own.
async fn each_generation_reads_its_cookie(transport: Transport) {
    let hub = TestHub::start(Settings::default()).await.over(transport);
    let token = subscriber_token(&["*"]);
    let v1 = format!("__Secure-mercure_access_token={token}");
    let v0 = format!("mercureAuthorization={token}");
    let mut modern = hub.subscribe("match=p", &[("cookie", &v1)]).await;
    assert_eq!(modern.status, StatusCode::OK);
    assert_eq!(
        hub.subscribe("match=p", &[("cookie", &v0)]).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        hub.subscribe("topic=p", &[("cookie", &v1)]).await.status,
        StatusCode::UNAUTHORIZED
    );
    let mut legacy = hub.subscribe("topic=p", &[("cookie", &v0)]).await;
    assert_eq!(legacy.status, StatusCode::OK);
    hub.publish(&[("topic", "p"), ("data", "private"), ("private", "on")])
        .await;
    assert_eq!(modern.next().await.data, "private");
    assert_eq!(legacy.next().await.data, "private");
}

/// A Mercure 1.0 access token (`typ: at+jwt`) with these claims, signed with `key`.
fn access_token(key: &[u8], claims: serde_json::Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.typ = Some("at+jwt".into());
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(key),
    )
    .unwrap()
}

/// `Bearer` and a 1.0 access token for `hub` that may receive every private update.
fn subscribe_everything(hub: &TestHub) -> String {
    let claims = serde_json::json!({
        "exp": unix_now() + 600,
        "aud": hub.url("/.well-known/mercure"),
        "authorization_details": [detail("subscribe", serde_json::json!([{"match": "*"}]))],
    });
    format!("Bearer {}", access_token(SUB_KEY, claims))
}

/// One `authorization_details` entry of type `mercure`.
fn detail(action: &str, topics: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"type": "mercure", "actions": [action], "topics": topics})
}

/// 1.0 access tokens authorize by `authorization_details` (URL patterns included), with
/// `exp` and `aud` (the hub's URL, here as the request names it) required; a private update
/// reaches only a subscriber granted its topic.
async fn access_tokens_of_1_0_authorize(transport: Transport) {
    let hub = TestHub::start(Settings::default()).await.over(transport);
    let audience = hub.url("/.well-known/mercure");
    let exp = unix_now() + 3600;
    let subscriber = access_token(
        SUB_KEY,
        serde_json::json!({"exp": exp, "aud": audience, "authorization_details": [
            {"type": "https://mercure.rocks/authorization-detail", "actions": ["subscribe"],
             "topics": [{"match": "https://example.com/users/:id", "match_type": "urlpattern"}]},
            {"type": "someone-else", "anything": true},
        ]}),
    );
    let publisher = access_token(
        PUB_KEY,
        serde_json::json!({"exp": exp, "aud": [audience, "other"], "authorization_details": [
            detail("publish", serde_json::json!([{"match": "*"}]))
        ]}),
    );
    let bearer = format!("Bearer {subscriber}");
    let mut granted = hub
        .subscribe(
            "match_urlpattern=https://example.com/users/:id",
            &[("authorization", &bearer)],
        )
        .await;
    assert_eq!(granted.status, StatusCode::OK);
    for (topic, data) in [
        ("https://example.com/users/42/secret", "not granted"),
        ("https://example.com/users/42", "granted"),
    ] {
        let (status, body) = hub
            .publish_with(
                Some(&publisher),
                &[("topic", topic), ("data", data), ("private", "on")],
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    assert_eq!(granted.next().await.data, "granted");
    // Refused, each with a 401: no exp, another audience, a 1.0 grant in a plain JWT, an
    // invalid entry.
    let plain = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"exp": exp, "aud": audience,
            "authorization_details": [detail("subscribe", serde_json::json!([{"match": "*"}]))]}),
        &jsonwebtoken::EncodingKey::from_secret(SUB_KEY),
    )
    .unwrap();
    for (token, why) in [
        (
            access_token(SUB_KEY, serde_json::json!({"aud": audience})),
            "no exp",
        ),
        (
            access_token(
                SUB_KEY,
                serde_json::json!({"exp": exp, "aud": "https://elsewhere/.well-known/mercure"}),
            ),
            "another audience",
        ),
        (plain, "typ at+jwt"),
        (
            access_token(
                SUB_KEY,
                serde_json::json!({"exp": exp, "aud": audience,
                    "authorization_details": [detail("subscribe", serde_json::json!([]))]}),
            ),
            "topics",
        ),
    ] {
        let mut sse = hub
            .subscribe("match=t", &[("authorization", &format!("Bearer {token}"))])
            .await;
        assert_eq!(sse.status, StatusCode::UNAUTHORIZED, "{why}");
        let body = sse.text().await;
        assert!(!body.is_empty(), "{why}: says why");
    }
}

/// Authorization errors are RFC 6750 challenges that point at the protected resource metadata
/// (RFC 9728), which names the hub as its tokens' audience, as the request named it.
async fn challenges_point_at_the_resource_metadata(transport: Transport) {
    let hub = TestHub::start(Settings::default()).await.over(transport);
    let challenge =
        |headers: &http::HeaderMap| headers["www-authenticate"].to_str().unwrap().to_owned();
    let none = hub.subscribe("match=t", &[]).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    let bare = challenge(&none.headers);
    assert!(
        bare.starts_with("Bearer ") && !bare.contains("error="),
        "{bare}"
    );
    let metadata_url = bare
        .split("resource_metadata=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no resource_metadata in {bare}"))
        .to_owned();
    assert_eq!(
        metadata_url,
        hub.url("/.well-known/oauth-protected-resource/.well-known/mercure"),
        "the hub's own address, in the request's scheme"
    );
    let bad = hub
        .subscribe("match=t", &[("authorization", "Bearer not.a.jwt")])
        .await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    assert!(challenge(&bad.headers).contains("error=\"invalid_token\""));
    let (status, headers, body) = hub
        .get("/.well-known/oauth-protected-resource/.well-known/mercure")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["content-type"], "application/json");
    let metadata: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(metadata["resource"], hub.url("/.well-known/mercure"));
    assert_eq!(
        metadata["bearer_methods_supported"],
        serde_json::json!(["header"])
    );
    assert_eq!(metadata["mercure_cookie"], "__Secure-mercure_access_token");
    // A publisher whose token lacks the topic: 403, insufficient_scope.
    let request = http::Request::post(hub.url("/.well-known/mercure"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header(
            "authorization",
            format!("Bearer {}", publisher_token(&["other"])),
        )
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"topic=t&data=x",
        )))
        .unwrap();
    let response = hub.request(request).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(challenge(response.headers()).contains("error=\"insufficient_scope\""));
}

/// `--protocol 0` or `1` restricts the hub to one generation: the other's subscriptions are a
/// `400` and its tokens a `401`, each saying which generation the hub serves.
#[tokio::test]
async fn the_protocol_setting_keeps_one_generation() {
    let zero_token = format!("Bearer {}", subscriber_token(&["*"]));
    for protocol in [herald_hub::Protocol::V0, herald_hub::Protocol::V1] {
        let hub = TestHub::start(Settings {
            protocol,
            ..Settings::default()
        })
        .await;
        let one_token = subscribe_everything(&hub);
        let (own, other, own_token, other_token, flag) = match protocol {
            herald_hub::Protocol::V0 => (
                "topic=t",
                "match=t",
                &zero_token,
                &one_token,
                "--protocol 0",
            ),
            _ => (
                "match=t",
                "topic=t",
                &one_token,
                &zero_token,
                "--protocol 1",
            ),
        };
        let sse = hub.subscribe(own, &[("authorization", own_token)]).await;
        assert_eq!(sse.status, StatusCode::OK, "{flag}");
        let (status, _, body) = hub.get(&format!("/.well-known/mercure?{other}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{flag}: {body}");
        assert!(body.contains(flag), "{body}");
        let mut refused = hub.subscribe(own, &[("authorization", other_token)]).await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{flag}");
        assert!(refused.text().await.contains(flag));
    }
}

/// Mercure 1.0 subscriptions are announced in 1.0's shape (plain JSON, `event: mercure`, on
/// `/subscriptions/{match_type}/{match}/{subscriber}`) and listed by the 1.0 API as
/// `application/json`; 0.x ones stay in 0.x's shape, each API listing its own generation's.
async fn subscriptions_of_1_0_in_1_0_shape(transport: Transport) {
    let hub = TestHub::start(Settings {
        anonymous: true,
        subscriptions: true,
        ..Settings::default()
    })
    .await
    .over(transport);
    let every = subscribe_everything(&hub);
    let pattern = "/.well-known/mercure/subscriptions/:match_type/:match/:subscriber";
    let mut watcher = hub
        .subscribe(
            &format!("match_urlpattern={}", urlencode(pattern)),
            &[("authorization", &every)],
        )
        .await;
    assert_eq!(watcher.status, StatusCode::OK);
    let own = watcher.next().await;
    assert_eq!(
        own.event_type, "mercure",
        "the watcher's own subscription first"
    );
    let _reader = hub
        .subscribe("match=https://example.com/books/1", &[])
        .await;
    let _legacy = hub
        .subscribe("topic=https://example.com/books/1", &[])
        .await;
    let event = watcher.next().await;
    assert_eq!(event.event_type, "mercure");
    let started: serde_json::Value = serde_json::from_str(&event.data).unwrap();
    assert_eq!(started["type"], "subscription");
    assert_eq!(started["match"], "https://example.com/books/1");
    assert_eq!(started["match_type"], "exact");
    assert_eq!(started["active"], true);
    assert!(started.get("@context").is_none(), "{started}");
    let subscriber = started["subscriber"].as_str().unwrap().to_owned();
    let id = format!(
        "/.well-known/mercure/subscriptions/exact/https%3A%2F%2Fexample.com%2Fbooks%2F1/{}",
        subscriber.replace(':', "%3A")
    );
    assert_eq!(started["id"], id);
    assert!(
        watcher.quiet_for(SHORT).await,
        "the 0.x subscription is not announced in 1.0's shape"
    );
    // The 1.0 API: the list, by matcher, one subscription; all plain JSON.
    let get = |path: String, token: String| {
        let hub = &hub;
        async move {
            let request = http::Request::get(hub.url(&path))
                .header("authorization", token)
                .body(http_body_util::Full::default())
                .unwrap();
            let response = hub.request(request).await;
            let (status, headers) = (response.status(), response.headers().clone());
            (status, headers, body_text(response).await)
        }
    };
    // The view follows the feed: wait until it lists the reader.
    let mut listed = serde_json::Value::Null;
    for _ in 0..100 {
        let (status, headers, body) =
            get("/.well-known/mercure/subscriptions".into(), every.clone()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(headers["content-type"], "application/json");
        listed = serde_json::from_str(&body).unwrap();
        if listed["subscriptions"].as_array().unwrap().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(listed["type"], "subscriptions", "{listed}");
    assert!(listed["last_event_id"].is_string(), "{listed}");
    let matches: Vec<&str> = listed["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["match"].as_str().unwrap())
        .collect();
    assert!(matches.contains(&"https://example.com/books/1"), "{listed}");
    let (status, _, body) = get(
        "/.well-known/mercure/subscriptions/exact/https%3A%2F%2Fexample.com%2Fbooks%2F1".into(),
        every.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let by_matcher: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(by_matcher["subscriptions"].as_array().unwrap().len(), 1);
    let (status, _, body) = get(id.clone(), every.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let one: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (one["type"].as_str(), one["id"].as_str()),
        (Some("subscription"), Some(&*id))
    );
    assert!(one["last_event_id"].is_string(), "{one}");
    // The 0.x API, with a 0.x token, lists the 0.x subscription only, as JSON-LD.
    let zero = format!("Bearer {}", subscriber_token(&["*"]));
    let (status, headers, body) = get("/.well-known/mercure/subscriptions".into(), zero).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["content-type"], "application/ld+json");
    let legacy: serde_json::Value = serde_json::from_str(&body).unwrap();
    let topics: Vec<&str> = legacy["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["topic"].as_str().unwrap())
        .collect();
    assert_eq!(topics, ["https://example.com/books/1"], "{legacy}");
}

/// 1.0 forbids a credentialed CORS answer with `*` or an echoed unlisted origin: with
/// `--cors-origin '*'` a 1.0 subscription is answered `*` without credentials, while 0.x's
/// keeps echoing the origin with credentials; a listed origin is echoed for both.
async fn cors_of_1_0_never_echoes_an_unlisted_origin(transport: Transport) {
    let hub = TestHub::start(Settings {
        cors_origins: vec!["*".into(), "https://app.example".into()],
        ..anonymous()
    })
    .await
    .over(transport);
    let header = |sse: &Sse, name: &str| {
        sse.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let any = [("origin", "https://any.example")];
    let one = hub.subscribe("match=t", &any).await;
    assert_eq!(
        header(&one, "access-control-allow-origin").as_deref(),
        Some("*")
    );
    assert_eq!(header(&one, "access-control-allow-credentials"), None);
    let zero = hub.subscribe("topic=t", &any).await;
    assert_eq!(
        header(&zero, "access-control-allow-origin").as_deref(),
        Some("https://any.example")
    );
    assert_eq!(
        header(&zero, "access-control-allow-credentials").as_deref(),
        Some("true")
    );
    let listed = hub
        .subscribe("match=t", &[("origin", "https://app.example")])
        .await;
    assert_eq!(
        header(&listed, "access-control-allow-origin").as_deref(),
        Some("https://app.example")
    );
    assert_eq!(
        header(&listed, "access-control-allow-credentials").as_deref(),
        Some("true")
    );
}

/// A publish follows its token's generation: a 1.0 access token may not publish an id that
/// starts with `#` or has a control or format character, nor a topic or type with one; a 0.x
/// publisher keeps 0.x's rules. Every generation's publisher is refused the hub's namespace,
/// however the topic names it (resolved against the hub's URL, as 1.0 resolves topics).
async fn publish_rules_follow_the_token(transport: Transport) {
    let hub = TestHub::start(Settings::default()).await.over(transport);
    let modern = access_token(
        PUB_KEY,
        serde_json::json!({"exp": unix_now() + 600, "aud": hub.url("/.well-known/mercure"),
            "authorization_details": [detail("publish", serde_json::json!([{"match": "*"}]))]}),
    );
    let legacy = publisher_token(&["*"]);
    for (field, value, says) in [
        ("id", "#fragment", "may not start with"),
        ("id", "a\u{1}b", "control or format character"),
        ("id", "a\u{200B}b", "control or format character"),
        ("topic", "t\u{7F}", "control or format character"),
        ("topic", "t\u{85}", "control or format character"),
        ("type", "a\u{0}b", "control or format character"),
    ] {
        let mut form = vec![(field, value), ("data", "x")];
        if field != "topic" {
            form.push(("topic", "t"));
        }
        let (status, body) = hub.publish_with(Some(&modern), &form).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "1.0 {field}={value:?}: {body}"
        );
        assert!(body.contains(says), "{body}");
        assert!(!body.contains("  "), "a message in one piece: {body:?}");
        let (status, body) = hub.publish_with(Some(&legacy), &form).await;
        assert_eq!(status, StatusCode::OK, "0.x {field}={value:?}: {body}");
    }
    for topic in [
        "https://elsewhere.example/.well-known/mercure/subscriptions/t/s",
        "mercure/subscriptions/t/s",
        "/a/../.well-known/mercure",
        "/.well-known/%6Dercure/x",
        "/.well-known/mercure?x",
    ] {
        for token in [&modern, &legacy] {
            let (status, body) = hub
                .publish_with(Some(token), &[("topic", topic), ("data", "x")])
                .await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{topic}: {body}");
            assert!(body.contains("reserved"), "{body}");
        }
    }
    // Near the namespace is not in it.
    for topic in ["/.well-known/mercure-like", "https://example.com/mercure/x"] {
        let (status, body) = hub
            .publish_with(Some(&modern), &[("topic", topic), ("data", "x")])
            .await;
        assert_eq!(status, StatusCode::OK, "{topic}: {body}");
    }
}

/// The `QUERY` method (a reference hub extension of 1.0) subscribes with the fields in a form
/// body, added to those of the query string; the hub says so in `Accept-Query`. A body of
/// another type, or none, is refused, and other methods get `405` naming the allowed ones.
async fn query_method_subscribes(transport: Transport) {
    use http_body_util::Full;
    let hub = TestHub::start(anonymous()).await.over(transport);
    let ids = [
        hub.publish(&[("topic", "https://example.com/b/1"), ("data", "one")])
            .await,
        hub.publish(&[("topic", "https://example.com/b/2"), ("data", "two")])
            .await,
    ];
    hub.publish(&[("topic", "elsewhere"), ("data", "not asked for")])
        .await;
    let query = |content_type: Option<&str>, body: String| {
        let mut request = http::Request::builder()
            .method(http::Method::from_bytes(b"QUERY").unwrap())
            .uri(hub.url("/.well-known/mercure?match=t"));
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        request.body(Full::new(bytes::Bytes::from(body))).unwrap()
    };
    let form = format!(
        "match_urlpattern={}&last_event_id={}",
        urlencode("https://example.com/b/:id"),
        urlencode(&ids[0])
    );
    let response = hub
        .request(query(
            Some("application/x-www-form-urlencoded"),
            form.clone(),
        ))
        .await;
    let mut sse = Sse::new(response);
    assert_eq!(sse.status, StatusCode::OK);
    assert_eq!(sse.headers["mercure-last-event-id"], ids[0].as_str());
    assert_eq!(
        sse.headers["accept-query"],
        "application/x-www-form-urlencoded"
    );
    assert_eq!(data(sse.take(1).await), ["two"]);
    // From the query string (`match=t`) as much as from the body.
    hub.publish(&[("topic", "t"), ("data", "three")]).await;
    assert_eq!(data(sse.take(1).await), ["three"]);

    let response = hub.request(query(None, form.clone())).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(body_text(response).await.contains("Content-Type"));
    let response = hub.request(query(Some("text/plain"), form)).await;
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let response = hub
        .request(query(
            Some("application/x-www-form-urlencoded"),
            "match=a%00".into(),
        ))
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let put = http::Request::put(hub.url("/.well-known/mercure"))
        .body(Full::default())
        .unwrap();
    let response = hub.request(put).await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(
        response.headers()["allow"]
            .to_str()
            .unwrap()
            .contains("QUERY")
    );
    assert!(body_text(response).await.contains("POST publishes"));
}

per_transport!(
    query_method_subscribes,
    publish_rules_follow_the_token,
    cors_of_1_0_never_echoes_an_unlisted_origin,
    subscriptions_of_1_0_in_1_0_shape,
    challenges_point_at_the_resource_metadata,
    access_tokens_of_1_0_authorize,
    matchers_select_as_1_0_says,
    last_event_id_in_1_0,
    refusals_of_1_0,
    each_generation_reads_its_cookie,
);
