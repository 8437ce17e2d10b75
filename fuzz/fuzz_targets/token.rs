//! Fuzzes tokens: where a request carries one, the JWT parser, and the claims behind a valid
//! signature, up to a subscription opened with them.
//!
//! Every input is used three ways:
//! 1. as a token string (lossy UTF-8), verified for both roles: a forged token never verifies;
//! 2. as the claims of a token correctly signed here (HS256 over the raw bytes, JSON or not);
//!    with a `\0` in the input, the bytes before it are the JOSE header and the bytes after it
//!    the claims. Nothing panics; a token never verifies for the role whose key did not sign
//!    it; verified grants agree with the JSON (`exp`, required for a Mercure 1.0 access
//!    token); a plain JWT with 1.0's `authorization_details` never verifies; and a subscriber
//!    token that verifies opens a subscription on an in-process hub with a 200/400/401/403
//!    (`?topic=...` for a 0.x token, `?match_urlpattern=...` for a 1.0 access token, whose
//!    topics may be URL patterns), so a far-future `exp` must not overflow anything the hub
//!    does with it. Seeds with `{"typ":"at+jwt",...}` headers lead it to access tokens;
//! 3. split on `\n` into an `Authorization` header (first line), `Cookie` headers (middle
//!    lines) and an `authorization` query parameter (last line, with 3 lines or more), for
//!    `locate_token`, whose answer is checked against where the token really was.
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use herald_fuzz::{
    HS256_HEADER, PUBLISHER_SECRET, SUBSCRIBER_SECRET, assert_subscribe_answer, send, sign_raw,
    verifier,
};
use herald_hub::auth::{AuthError, COOKIE_NAME, Location, Role, Verifier, locate_token};
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderValue, header};
use jsonwebtoken::errors::ErrorKind;
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;
use std::sync::OnceLock;

fn shared_verifier() -> &'static Verifier {
    static VERIFIER: OnceLock<Verifier> = OnceLock::new();
    VERIFIER.get_or_init(verifier)
}

fuzz_target!(|input: &[u8]| {
    let v = shared_verifier();
    as_token_string(v, input);
    as_claims(v, input);
    as_request_headers(v, input);
});

fn as_token_string(v: &Verifier, input: &[u8]) {
    let token = String::from_utf8_lossy(input);
    check_verify(v, Role::Subscriber, &token);
    check_verify(v, Role::Publisher, &token);
}

/// Verifies `token`; a token that verifies must really be HMAC-signed with the role's secret
/// (the fuzzer can only have it from a seed, never forge one).
fn check_verify(v: &Verifier, role: Role, token: &str) {
    if v.verify(role, token).is_ok() {
        let secret = match role {
            Role::Publisher => PUBLISHER_SECRET,
            Role::Subscriber => SUBSCRIBER_SECRET,
        };
        let (signed, signature) = token.rsplit_once('.').expect("a JWS has dots");
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(signed.as_bytes());
        let expected = mac.finalize().into_bytes();
        assert_eq!(
            URL_SAFE_NO_PAD.decode(signature).ok().as_deref(),
            Some(&expected[..]),
            "{token:?} verified for {role:?} without that role's signature"
        );
    }
}

fn as_claims(v: &Verifier, input: &[u8]) {
    let (header, claims) = match input.iter().position(|&b| b == 0) {
        Some(i) => (&input[..i], &input[i + 1..]),
        None => (HS256_HEADER, input),
    };
    let for_publisher = sign_raw(PUBLISHER_SECRET, header, claims);
    let for_subscriber = sign_raw(SUBSCRIBER_SECRET, header, claims);

    // The other role's key never accepts it.
    assert!(v.verify(Role::Subscriber, &for_publisher).is_err());
    assert!(v.verify(Role::Publisher, &for_subscriber).is_err());

    let published = v.verify(Role::Publisher, &for_publisher);
    let subscribed = v.verify(Role::Subscriber, &for_subscriber);
    // Same header and claims, same verdict for both roles.
    assert_eq!(published.is_ok(), subscribed.is_ok());

    if header == HS256_HEADER
        && let Err(AuthError::Invalid(err)) = &published
    {
        // The signature is right: only the claims (or their expiry) can be wrong.
        assert!(
            !matches!(
                err.kind(),
                ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm | ErrorKind::InvalidToken
            ),
            "a correctly signed token was refused for its signature: {err:?}"
        );
    }

    let json = serde_json::from_slice::<serde_json::Value>(claims).ok();
    if header == HS256_HEADER
        && json
            .as_ref()
            .is_some_and(|json| json.get("authorization_details").is_some())
    {
        assert!(
            subscribed.is_err(),
            "a JWT that is not an access token verified with authorization_details"
        );
    }
    if let Ok(grants) = &subscribed {
        // What was granted is what the JSON says.
        if let Some(exp) = json
            .as_ref()
            .and_then(|json| json.get("exp"))
            .and_then(serde_json::Value::as_u64)
        {
            assert_eq!(grants.expires_at, Some(exp));
        }
        if grants.access_token {
            assert!(grants.expires_at.is_some(), "an access token without exp");
        }
        if !grants.access_token {
            // A 0.x selector (URI template or exact) matches its own text; a URL pattern
            // need not (`(a*)*b`).
            for selector in grants.subscribe.iter() {
                assert!(selector.matches(selector.as_str()));
            }
        }
        // And the hub can open a subscription with it, whatever its expiry and selectors.
        let query = if grants.access_token {
            "match_urlpattern=https%3A%2F%2Fexample.com%2Fbooks%2F%3Aid"
        } else {
            "topic=https%3A%2F%2Fexample.com%2Fbooks%2F1"
        };
        let request = http::Request::get(format!("/.well-known/mercure?{query}"))
            .header(header::HOST, "hub.example")
            .header(header::AUTHORIZATION, format!("Bearer {for_subscriber}"))
            .body(axum::body::Body::empty())
            .expect("a valid request");
        assert_subscribe_answer(send(request), "subscribing with a verified token");
    }
}

fn as_request_headers(v: &Verifier, input: &[u8]) {
    let lines: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(lines[0]) {
        headers.insert(header::AUTHORIZATION, value);
    }
    let (middle, query) = match lines.len() {
        0..=2 => (&lines[1..], None),
        n => (&lines[1..n - 1], std::str::from_utf8(lines[n - 1]).ok()),
    };
    for line in middle {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            headers.append(header::COOKIE, value);
        }
    }

    let located = locate_token(&headers, query);
    let header = headers.get(header::AUTHORIZATION);
    // The header, when present, alone decides: `Bearer <token>` (any case), else an error.
    let bearer = header.map(|h| {
        h.to_str()
            .ok()
            .and_then(|h| h.split_once(' '))
            .filter(|(scheme, token)| {
                scheme.eq_ignore_ascii_case("Bearer") && !token.trim().is_empty()
            })
            .map(|(_, token)| token.trim())
    });
    let cookie = || {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|h| h.to_str().ok())
            .flat_map(|h| h.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == COOKIE_NAME)
            .map(|(_, token)| token)
    };
    match (bearer, located) {
        (Some(None), Err(_)) => {}
        (Some(Some(expected)), Ok(Some((token, Location::Header)))) => assert_eq!(token, expected),
        (Some(_), other) => panic!("with an Authorization header {header:?}: {other:?}"),
        (None, Ok(Some((token, Location::Query)))) => assert_eq!(Some(token), query),
        (None, Ok(Some((token, Location::Cookie)))) => {
            assert!(query.is_none());
            assert_eq!(Some(token), cookie());
        }
        (None, Ok(None)) => assert!(query.is_none() && cookie().is_none()),
        (None, other) => panic!("without an Authorization header: {other:?}"),
    }
    let located = located.ok().flatten();
    if let Some((token, _)) = located {
        check_verify(v, Role::Subscriber, token);
    }
}
