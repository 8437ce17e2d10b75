//! The console's endpoints over real sockets: the stats the page charts, and token minting,
//! which must only ever work for a development hub's own machine.

mod common;

use bytes::Bytes;
use common::*;
use herald_hub::Settings;
use herald_hub::console::MintKey;
use http::{Request, StatusCode};
use http_body_util::Full;
use jsonwebtoken::Algorithm;

fn developing() -> Settings {
    Settings {
        mint_key: Some(MintKey {
            alg: Algorithm::HS256,
            secret: PUB_KEY.into(),
        }),
        ..Settings::default()
    }
}

/// POSTs a mint request with these extra headers; the status and body.
async fn mint(hub: &TestHub, form: &str, headers: &[(&str, &str)]) -> (StatusCode, String) {
    let mut request = Request::post(hub.url("/console/token"))
        .header("content-type", "application/x-www-form-urlencoded");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = hub
        .request(
            request
                .body(Full::new(Bytes::from(form.to_owned())))
                .unwrap(),
        )
        .await;
    let status = response.status();
    (status, body_text(response).await)
}

#[tokio::test]
async fn stats_follow_what_the_hub_does() {
    let hub = TestHub::start(Settings::default()).await;
    let stats = |body: String| serde_json::from_str::<serde_json::Value>(&body).unwrap();
    let (status, headers, body) = hub.get("/console/stats").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/json");
    let before = stats(body);
    assert_eq!(before["published"], 0);
    assert_eq!(before["history"]["updates"], 0);
    assert_eq!(before["history"]["ready"], true);
    assert_eq!(before["mint"], false);

    let token = subscriber_token(&["*"]);
    let mut sub = hub
        .subscribe("topic=t", &[("authorization", &format!("Bearer {token}"))])
        .await;
    hub.publish(&[("topic", "t"), ("data", "one")]).await;
    hub.publish(&[("topic", "t"), ("data", "two")]).await;
    sub.take(2).await;
    let after = stats(hub.get("/console/stats").await.2);
    assert_eq!(after["published"], 2);
    assert_eq!(after["subscribers"], 1);
    assert!(after["delivered"].as_u64().unwrap() >= 2, "{after}");
    assert_eq!(after["history"]["updates"], 2);
    assert_eq!(after["history"]["oldest"], 1);
    assert_eq!(after["history"]["newest"], 2);
}

#[tokio::test]
async fn a_development_hub_mints_tokens_for_its_own_machine_only() {
    let hub = TestHub::start(developing()).await;
    let (_, _, body) = hub.get("/console/stats").await;
    assert!(body.contains("\"mint\":true"), "{body}");

    let (status, token) = mint(&hub, "role=publisher&topic=*", &[]).await;
    assert_eq!(status, StatusCode::OK, "{token}");
    let (status, _) = hub
        .publish_with(Some(token.trim()), &[("topic", "t"), ("data", "x")])
        .await;
    assert_eq!(status, StatusCode::OK, "a minted publisher token publishes");
    let own_origin = format!("http://{}", hub.addr);
    let (status, _) = mint(&hub, "role=publisher", &[("origin", &own_origin)]).await;
    assert_eq!(status, StatusCode::OK, "from the console itself");

    // A page of another site, or one reaching the hub through a name of its own (DNS
    // rebinding), cannot mint through the user's browser.
    for (headers, says) in [
        (
            &[("origin", "http://evil.example")][..],
            "another site's page",
        ),
        (&[("host", "evil.example:8080")][..], "open the console as"),
    ] {
        let (status, body) = mint(&hub, "role=publisher", headers).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{headers:?}: {body}");
        assert!(body.contains(says), "{body}");
    }
    let (status, body) = mint(&hub, "role=admin", &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = mint(&hub, "role=subscriber&topic={a:64}{b:64}", &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn a_hub_with_a_configured_key_mints_nothing() {
    let hub = TestHub::start(Settings::default()).await;
    let (status, body) = mint(&hub, "role=publisher", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("herald token"), "{body}");
}

#[tokio::test]
async fn the_page_is_self_contained() {
    let hub = TestHub::start(Settings::default()).await;
    let (status, headers, page) = hub.get("/").await;
    assert_eq!(status, StatusCode::OK);
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"));
    // Nothing loaded from elsewhere: no external script, style, image or font.
    for external in ["src=\"http", "href=\"http", "url(http", "@import"] {
        assert!(!page.contains(external), "the page loads {external}…");
    }
    for id in [
        "sub-token",
        "pub-token",
        "subscribe-form",
        "publish-form",
        "events",
    ] {
        assert!(page.contains(&format!("id=\"{id}\"")), "no #{id}");
    }
}
