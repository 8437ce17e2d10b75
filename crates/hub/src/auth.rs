//! Authorization: JWTs, where requests carry them, and what they grant. Protocol parsing stays
//! here, at the edge; the rest of the hub sees only [`Grants`]. Two generations of token:
//!
//! - Mercure 0.x: any JWT with a `mercure` claim (`publish`, `subscribe` selectors, `payload`);
//!   `exp` and `nbf` checked when present;
//! - Mercure 1.0: an OAuth 2.0 access token (RFC 9068: header `typ` `at+jwt`), whose `exp` and
//!   `aud` are required, `aud` naming the hub (`--jwt-audience`, else the URL the request was
//!   sent to), `iss` checked against `--jwt-issuer` when set, and whose rights are RFC 9396
//!   `authorization_details` entries of type `mercure`
//!   (`{"type", "actions": ["publish"|"subscribe"], "topics": [{"match", "match_type"?}],
//!   "payload"?}`). A token is read as 1.0 when its `typ` says so or it has
//!   `authorization_details`; one invalid Mercure entry refuses the whole token.

use crate::topic::{Selector, SelectorError, SelectorSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The cookie a browser sends the subscriber (or publisher) token in.
pub const COOKIE_NAME: &str = "mercureAuthorization";
/// The cookie Mercure 1.0 clients carry their token in (a `__Secure-` cookie: the browser
/// only sets it over HTTPS).
pub const COOKIE_NAME_V1: &str = "__Secure-mercure_access_token";
/// The query parameter a token may be given in (for clients that cannot set headers).
pub const QUERY_PARAM: &str = "authorization";

/// The JWT claims the hub reads.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    /// Also read under the namespaced name `https://mercure.rocks/`, as the reference hub does.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "https://mercure.rocks/"
    )]
    pub mercure: Option<MercureClaim>,
    /// Expiry (seconds since the epoch); checked when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
}

/// A token read as Mercure 0.x: its claims, and whether it has 1.0's `authorization_details`
/// (then it is not a 0.x token at all).
#[derive(Deserialize)]
struct LegacyClaims {
    #[serde(flatten)]
    claims: Claims,
    #[serde(default)]
    authorization_details: Option<serde::de::IgnoredAny>,
}

/// The claims of a Mercure 1.0 access token the hub reads itself (`exp`, `aud` and `iss` are
/// checked by jsonwebtoken).
#[derive(Debug, Deserialize)]
struct AccessClaims {
    exp: u64,
    /// Kept as JSON values, checked one by one here, so that an error says which entry is wrong.
    #[serde(default)]
    authorization_details: Option<Vec<Value>>,
}

/// The `type` of a Mercure entry of `authorization_details`: the draft's short name, and the
/// URI the reference hub 1.0 uses. Entries of any other type are someone else's.
pub const DETAIL_TYPES: [&str; 2] = ["mercure", "https://mercure.rocks/authorization-detail"];

/// Whether a JWT header's `typ` names an access token (RFC 9068: `at+jwt`, or
/// `application/at+jwt`, in any case).
fn is_access_token_type(typ: Option<&str>) -> bool {
    typ.is_some_and(|typ| {
        let typ = typ.to_ascii_lowercase();
        typ.strip_prefix("application/").unwrap_or(&typ) == "at+jwt"
    })
}

/// The `mercure` claim.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MercureClaim {
    /// Selectors of the topics the bearer may publish to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<Vec<String>>,
    /// Selectors of the topics whose private updates the bearer may receive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribe: Option<Vec<String>>,
    /// Free data echoed in subscription events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
}

impl Claims {
    /// The claims of a token for one role: `topics` to publish to, or to subscribe to, and an
    /// optional expiry.
    pub fn for_role(role: Role, topics: Vec<String>, exp: Option<u64>) -> Claims {
        let (publish, subscribe) = match role {
            Role::Publisher => (Some(topics), None),
            Role::Subscriber => (None, Some(topics)),
        };
        Claims {
            mercure: Some(MercureClaim {
                publish,
                subscribe,
                payload: None,
            }),
            exp,
        }
    }
}

/// What a valid token grants, compiled for matching.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// Topics the bearer may publish to (`mercure.publish`).
    pub publish: SelectorSet,
    /// Topics whose private updates the bearer may receive (`mercure.subscribe`).
    pub subscribe: SelectorSet,
    /// `mercure.payload`, shown in the bearer's subscription events.
    pub payload: Option<Value>,
    /// When the token expires (seconds since the epoch): a subscription ends then.
    pub expires_at: Option<u64>,
    /// It is a Mercure 1.0 access token (the subscriptions API answers in 1.0's shape).
    pub access_token: bool,
    /// A 1.0 token's `subscribe` entries with their payloads, in order: a subscription's
    /// payload is that of the first entry whose topics match its matcher.
    pub payloads: Vec<(SelectorSet, Option<Value>)>,
}

impl Grants {
    /// The payload shown in the subscription events of a subscription to `selector`: a 1.0
    /// token's first `subscribe` entry whose topics match it, else (0.x) the token's one.
    pub fn payload_for(&self, selector: &str) -> Option<Value> {
        if !self.access_token {
            return self.payload.clone();
        }
        self.payloads
            .iter()
            .find(|(topics, _)| topics.matches(selector))
            .and_then(|(_, payload)| payload.clone())
    }
}

/// Why a token was refused. Every variant is a `401` at the HTTP edge.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Not a JWT, a bad signature, expired, another algorithm...
    #[error("invalid JWT: {}", explain(.0))]
    Invalid(#[from] jsonwebtoken::errors::Error),
    /// A selector of the `mercure` claim cannot be compiled.
    #[error("invalid selector in the JWT's mercure claim: {0}")]
    Selector(#[from] SelectorError),
    /// A Mercure 1.0 access token that breaks a rule of its own (its `typ`, its audience, an
    /// `authorization_details` entry): what is wrong.
    #[error("invalid access token: {0}")]
    Access(String),
}

/// What is wrong with a token, in words that say what to fix (jsonwebtoken's own `Display` is
/// the bare kind, such as `InvalidToken`).
fn explain(err: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind::*;
    match err.kind() {
        InvalidToken => "not a JWT: expected three base64url parts separated by dots \
                         (header.claims.signature)"
            .into(),
        InvalidSignature => "the signature does not match the hub's key: the token was signed \
                             with another key (a hub started without --jwt-key signs with the \
                             key it generated, and prints tokens for it)"
            .into(),
        ExpiredSignature => "the token has expired (its exp claim is in the past)".into(),
        ImmatureSignature => "the token is not valid yet (its nbf claim is in the future)".into(),
        InvalidAlgorithm => "the token is signed with another algorithm than the hub's \
                             --jwt-alg"
            .into(),
        Base64(e) => format!("a part of the token is not base64url: {e}"),
        Json(e) => format!("the token's header or claims are not the expected JSON: {e}"),
        Utf8(e) => format!("the token's claims are not UTF-8: {e}"),
        _ => err.to_string(),
    }
}

/// Verifying keys for the two roles. Its `Debug` shows no key.
#[derive(Clone)]
pub struct Verifier {
    publisher: DecodingKey,
    subscriber: DecodingKey,
    validation: Validation,
    /// What a 1.0 token's `aud` must name; `None`: the URL the request was sent to.
    audience: Option<String>,
    /// What a 1.0 token's `iss` must be; `None`: not checked (self-issued tokens).
    issuer: Option<String>,
    /// Which generations of token are accepted (`--protocol`).
    protocol: crate::hub::Protocol,
}

/// A key as configured: an HMAC secret, or a PEM public key (RS*/ES*/PS*/EdDSA).
#[derive(Debug, Clone)]
pub enum KeySource {
    /// An HMAC secret (HS256, HS384, HS512).
    Secret(Vec<u8>),
    /// A PEM public key (RS*, PS*, ES*, EdDSA).
    Pem(Vec<u8>),
}

/// Which token a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Publishing: the `mercure.publish` claim, the publisher key.
    Publisher,
    /// Subscribing: the `mercure.subscribe` claim, the subscriber key.
    Subscriber,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Verifies tokens signed with `alg` by these keys; fails if a key does not suit `alg`.
    pub fn new(
        alg: Algorithm,
        publisher: &KeySource,
        subscriber: &KeySource,
    ) -> Result<Self, jsonwebtoken::errors::Error> {
        let mut validation = Validation::new(alg);
        // Mercure tokens usually carry no `exp` (long-lived publisher tokens) and no `aud`:
        // check them when present, require nothing beyond the signature.
        validation.required_spec_claims.clear();
        validation.validate_aud = false;
        // `exp` and `nbf` are checked exactly unless a leeway is configured (`with_leeway`).
        validation.validate_nbf = true;
        validation.leeway = 0;
        Ok(Verifier {
            publisher: decoding_key(alg, publisher)?,
            subscriber: decoding_key(alg, subscriber)?,
            validation,
            audience: None,
            issuer: None,
            protocol: crate::hub::Protocol::Both,
        })
    }

    /// Mercure 1.0 access tokens must name `audience` (the hub's URL, e.g.
    /// `https://hub.example/.well-known/mercure`) in `aud` (`--jwt-audience`), instead of the
    /// URL each request was sent to.
    pub fn with_audience(mut self, audience: Option<String>) -> Self {
        self.audience = audience;
        self
    }

    /// Accepts only the tokens of the generations `protocol` serves (`Hub::start` applies the
    /// hub's `--protocol`).
    pub fn with_protocol(mut self, protocol: crate::hub::Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// The configured audience of 1.0 access tokens (`--jwt-audience`), if any.
    pub fn audience(&self) -> Option<&str> {
        self.audience.as_deref()
    }

    /// The configured issuer of 1.0 access tokens (`--jwt-issuer`), if any.
    pub fn issuer(&self) -> Option<&str> {
        self.issuer.as_deref()
    }

    /// Mercure 1.0 access tokens must have been issued by `issuer` (`--jwt-issuer`).
    pub fn with_issuer(mut self, issuer: Option<String>) -> Self {
        self.issuer = issuer;
        self
    }

    /// Accepts tokens up to `seconds` past their `exp` or before their `nbf`, for clocks that
    /// disagree (`--jwt-leeway`).
    pub fn with_leeway(mut self, seconds: u64) -> Self {
        self.validation.leeway = seconds;
        self
    }

    /// Verifies `token` for `role` and compiles its grants, for a request that did not say
    /// where it was sent (a 1.0 token then needs `--jwt-audience`).
    pub fn verify(&self, role: Role, token: &str) -> Result<Grants, AuthError> {
        self.verify_at(role, token, || None)
    }

    /// Verifies `token` for `role`, sent to the hub at the URL `hub_url` gives (asked only for
    /// a 1.0 access token, the one kind that needs it), and compiles its grants.
    pub fn verify_at(
        &self,
        role: Role,
        token: &str,
        hub_url: impl FnOnce() -> Option<url::Url>,
    ) -> Result<Grants, AuthError> {
        let key = match role {
            Role::Publisher => &self.publisher,
            Role::Subscriber => &self.subscriber,
        };
        let header = jsonwebtoken::decode_header(token)?;
        if is_access_token_type(header.typ.as_deref()) {
            if !self.protocol.serves_v1() {
                return Err(AuthError::Access(
                    "this hub serves Mercure 0.x only (--protocol 0): send a JWT with a mercure \
                     claim, not an at+jwt access token"
                        .into(),
                ));
            }
            return self.verify_access_token(token, key, hub_url().as_ref());
        }
        if !self.protocol.serves_v0() {
            return Err(AuthError::Access(
                "this hub serves Mercure 1.0 only (--protocol 1): send an OAuth 2.0 access token \
                 (header typ at+jwt) with authorization_details"
                    .into(),
            ));
        }
        let decoded = jsonwebtoken::decode::<LegacyClaims>(token, key, &self.validation)?.claims;
        if decoded.authorization_details.is_some() {
            return Err(AuthError::Access(
                "a token with authorization_details (Mercure 1.0) must be an access token: \
                 its header's typ must be at+jwt"
                    .into(),
            ));
        }
        let claims = decoded.claims;
        let mercure = claims.mercure.unwrap_or_default();
        Ok(Grants {
            publish: SelectorSet::parse(mercure.publish.unwrap_or_default())?,
            subscribe: SelectorSet::parse(mercure.subscribe.unwrap_or_default())?,
            payload: mercure.payload,
            expires_at: claims.exp,
            access_token: false,
            payloads: Vec::new(),
        })
    }

    /// A Mercure 1.0 access token: `exp` and `aud` required, `iss` if configured, rights from
    /// `authorization_details`.
    fn verify_access_token(
        &self,
        token: &str,
        key: &DecodingKey,
        hub_url: Option<&url::Url>,
    ) -> Result<Grants, AuthError> {
        // The audience: the configured one, else the hub's URL as the request named it, in
        // either scheme (behind a TLS-terminating proxy the hub cannot tell which it was).
        let audiences: Vec<String> = match (&self.audience, hub_url) {
            (Some(audience), _) => vec![audience.clone()],
            (None, Some(url)) => {
                let mut other = url.clone();
                let _ = other.set_scheme(if url.scheme() == "https" {
                    "http"
                } else {
                    "https"
                });
                vec![url.to_string(), other.to_string()]
            }
            (None, None) => {
                return Err(AuthError::Access(
                    "the hub has no audience to check this access token's aud against: start it with --jwt-audience <its URL>"
                        .into(),
                ));
            }
        };
        let mut validation = self.validation.clone();
        validation.set_required_spec_claims(&["exp", "aud"]);
        validation.set_audience(&audiences);
        validation.validate_aud = true;
        if let Some(issuer) = &self.issuer {
            validation.set_required_spec_claims(&["exp", "aud", "iss"]);
            validation.set_issuer(&[issuer]);
        }
        let claims = jsonwebtoken::decode::<AccessClaims>(token, key, &validation)?.claims;
        let base = match (&self.audience, hub_url) {
            (_, Some(url)) => url.clone(),
            (Some(audience), None) => url::Url::parse(audience).map_err(|err| {
                AuthError::Access(format!("--jwt-audience {audience:?} is not a URL: {err}"))
            })?,
            (None, None) => unreachable!("refused above"),
        };
        let mut grants = Grants {
            expires_at: Some(claims.exp),
            access_token: true,
            ..Grants::default()
        };
        let (mut publish, mut subscribe) = (Vec::new(), Vec::new());
        for (index, detail) in claims
            .authorization_details
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let wrong =
                |what: &str| AuthError::Access(format!("authorization_details[{index}]: {what}"));
            let Some(kind) = detail.get("type").and_then(Value::as_str) else {
                return Err(wrong("no \"type\" string"));
            };
            if !DETAIL_TYPES.contains(&kind) {
                continue; // another resource's entry
            }
            let actions = detail
                .get("actions")
                .and_then(Value::as_array)
                .filter(|a| !a.is_empty())
                .ok_or_else(|| wrong("\"actions\" must be a non-empty array"))?;
            let topics = detail
                .get("topics")
                .and_then(Value::as_array)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| wrong("\"topics\" must be a non-empty array"))?;
            let mut selectors = Vec::with_capacity(topics.len());
            for topic in topics {
                let Some(matched) = topic.get("match").and_then(Value::as_str) else {
                    return Err(wrong("each topic needs a \"match\" string"));
                };
                if matched.is_empty() {
                    return Err(wrong("a topic's \"match\" is empty"));
                }
                let selector = match topic.get("match_type").map(|t| t.as_str()) {
                    None | Some(Some("exact")) => Selector::exact_match(matched)?,
                    Some(Some("urlpattern")) => Selector::url_pattern(matched, &base)?,
                    Some(other) => {
                        return Err(wrong(&format!(
                            "unknown match_type {other:?} (exact or urlpattern)"
                        )));
                    }
                };
                selectors.push(selector);
            }
            for action in actions {
                match action.as_str() {
                    Some("publish") => publish.extend(selectors.iter().cloned()),
                    Some("subscribe") => {
                        subscribe.extend(selectors.iter().cloned());
                        grants.payloads.push((
                            SelectorSet::from_selectors(selectors.clone()),
                            detail.get("payload").cloned(),
                        ));
                        if grants.payload.is_none() {
                            grants.payload = detail.get("payload").cloned();
                        }
                    }
                    // The draft: actions a hub does not know are ignored.
                    Some(_) => {}
                    None => return Err(wrong("actions must be strings")),
                }
            }
        }
        grants.publish = SelectorSet::from_selectors(publish);
        grants.subscribe = SelectorSet::from_selectors(subscribe);
        Ok(grants)
    }
}

fn decoding_key(
    alg: Algorithm,
    key: &KeySource,
) -> Result<DecodingKey, jsonwebtoken::errors::Error> {
    use Algorithm::*;
    match (key, alg) {
        (KeySource::Secret(secret), HS256 | HS384 | HS512) => Ok(DecodingKey::from_secret(secret)),
        (KeySource::Pem(pem), RS256 | RS384 | RS512 | PS256 | PS384 | PS512) => {
            DecodingKey::from_rsa_pem(pem)
        }
        (KeySource::Pem(pem), ES256 | ES384) => DecodingKey::from_ec_pem(pem),
        (KeySource::Pem(pem), EdDSA) => DecodingKey::from_ed_pem(pem),
        _ => Err(jsonwebtoken::errors::ErrorKind::InvalidAlgorithm.into()),
    }
}

/// Signs `claims` with an HMAC secret (what `herald token` does).
pub fn sign_hmac(
    alg: Algorithm,
    secret: &[u8],
    claims: &Claims,
) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret))
}

/// Where a request carried its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// `Authorization: Bearer`.
    Header,
    /// Sent by browsers automatically, so a state-changing request with it needs an origin check.
    Cookie,
    /// The `authorization` query parameter.
    Query,
}

/// An `Authorization` header that is not `Bearer <token>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the Authorization header must be `Bearer <jwt>` (when it is present, the hub looks for the \
     token nowhere else)"
)]
pub struct MalformedAuthorization;

/// Finds the token of a request, and where it was, in the order of the Mercure spec and the
/// reference hub: an `Authorization` header, when there is one, alone decides, and it must be
/// `Bearer <token>` (anything else is an error, never a fall-back to the other places); else
/// the `authorization` query parameter (extracted by the caller, which parses the query); else
/// the `mercureAuthorization` cookie.
pub fn locate_token<'a>(
    headers: &'a http::HeaderMap,
    query_token: Option<&'a str>,
) -> Result<Option<(&'a str, Location)>, MalformedAuthorization> {
    locate_token_in(headers, query_token, &[COOKIE_NAME])
}

/// [`locate_token`], with the cookie looked for among `cookies` (in this order): the 0.x
/// cookie, Mercure 1.0's `__Secure-mercure_access_token`, or either.
pub fn locate_token_in<'a>(
    headers: &'a http::HeaderMap,
    query_token: Option<&'a str>,
    cookies: &[&str],
) -> Result<Option<(&'a str, Location)>, MalformedAuthorization> {
    if let Some(value) = headers.get(http::header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| MalformedAuthorization)?;
        let (scheme, token) = value.split_once(' ').ok_or(MalformedAuthorization)?;
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("Bearer") || token.is_empty() {
            return Err(MalformedAuthorization);
        }
        return Ok(Some((token, Location::Header)));
    }
    if let Some(token) = query_token {
        return Ok(Some((token, Location::Query)));
    }
    for wanted in cookies {
        for value in headers.get_all(http::header::COOKIE) {
            let Ok(value) = value.to_str() else { continue };
            for pair in value.split(';') {
                if let Some((name, token)) = pair.trim().split_once('=')
                    && name == *wanted
                {
                    return Ok(Some((token, Location::Cookie)));
                }
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Mercure 1.0 access token signed with `secret`.
    fn access_token(secret: &[u8], claims: Value) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some("application/AT+JWT".into());
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret)).unwrap()
    }

    #[test]
    fn access_tokens_check_audience_and_issuer_as_configured() {
        let key = KeySource::Secret(b"k".to_vec());
        let plain = Verifier::new(Algorithm::HS256, &key, &key).unwrap();
        let hub = "https://hub.example/.well-known/mercure";
        let exp = 4_102_444_800u64;
        let details = serde_json::json!([{"type": "mercure", "actions": ["subscribe", "fly"],
            "topics": [{"match": "/books/:id", "match_type": "urlpattern"}], "payload": {"u": 1}}]);
        let token = |claims: Value| access_token(b"k", claims);
        let good = token(
            serde_json::json!({"exp": exp, "aud": hub, "iss": "https://idp",
            "authorization_details": details}),
        );
        // Without a request's URL, only a configured audience can be checked.
        let err = plain.verify(Role::Subscriber, &good).unwrap_err();
        assert!(
            err.to_string().contains("start it with --jwt-audience"),
            "{err}"
        );
        let pinned = plain.clone().with_audience(Some(hub.into()));
        let grants = pinned.verify(Role::Subscriber, &good).unwrap();
        assert!(
            grants.subscribe.matches("https://hub.example/books/1"),
            "relative to aud"
        );
        assert!(!grants.subscribe.matches("https://hub.example/authors/1"));
        assert!(grants.publish.is_empty(), "an unknown action is ignored");
        assert_eq!(grants.payload, Some(serde_json::json!({"u": 1})));
        assert_eq!(grants.expires_at, Some(exp));
        // The request's URL, in either scheme, when none is configured.
        let at = |url: &str| {
            let url = url::Url::parse(url).unwrap();
            plain.verify_at(Role::Subscriber, &good, || Some(url))
        };
        assert!(at("http://hub.example/.well-known/mercure").is_ok());
        assert!(at("https://other.example/.well-known/mercure").is_err());
        // The issuer, when configured.
        let issuer = pinned.clone().with_issuer(Some("https://idp".into()));
        assert!(issuer.verify(Role::Subscriber, &good).is_ok());
        let other = token(serde_json::json!({"exp": exp, "aud": hub, "iss": "https://evil"}));
        assert!(issuer.verify(Role::Subscriber, &other).is_err());
        let none = token(serde_json::json!({"exp": exp, "aud": hub}));
        assert!(issuer.verify(Role::Subscriber, &none).is_err());
        assert!(
            pinned.verify(Role::Subscriber, &none).is_ok(),
            "iss unchecked by default"
        );
        // A subscription's payload is the first subscribe entry's whose topics match its
        // matcher; `*` catches the rest.
        let two = token(
            serde_json::json!({"exp": exp, "aud": hub, "authorization_details": [
            {"type": "mercure", "actions": ["subscribe"], "payload": {"p": 1},
             "topics": [{"match": "https://a.example/:x", "match_type": "urlpattern"}]},
            {"type": "mercure", "actions": ["subscribe"], "payload": {"p": 2},
             "topics": [{"match": "*"}]}]}),
        );
        let grants = pinned.verify(Role::Subscriber, &two).unwrap();
        assert_eq!(
            grants.payload_for("https://a.example/1"),
            Some(serde_json::json!({"p": 1}))
        );
        assert_eq!(
            grants.payload_for("https://b.example/1"),
            Some(serde_json::json!({"p": 2}))
        );
        // An unknown match_type refuses the whole token.
        let bad = token(
            serde_json::json!({"exp": exp, "aud": hub, "authorization_details": [
            {"type": "mercure", "actions": ["subscribe"], "topics": [{"match": "*"}]},
            {"type": "mercure", "actions": ["subscribe"],
             "topics": [{"match": "x", "match_type": "regexp"}]}]}),
        );
        let err = pinned.verify(Role::Subscriber, &bad).unwrap_err();
        assert!(
            err.to_string().contains("authorization_details[1]"),
            "{err}"
        );
    }

    fn claims(publish: &[&str], subscribe: &[&str]) -> Claims {
        Claims {
            mercure: Some(MercureClaim {
                publish: Some(publish.iter().map(|s| s.to_string()).collect()),
                subscribe: Some(subscribe.iter().map(|s| s.to_string()).collect()),
                payload: Some(serde_json::json!({"user": "alice"})),
            }),
            exp: None,
        }
    }

    #[test]
    fn hmac_round_trip_and_roles() {
        let v = Verifier::new(
            Algorithm::HS256,
            &KeySource::Secret(b"pub".to_vec()),
            &KeySource::Secret(b"sub".to_vec()),
        )
        .unwrap();
        let token = sign_hmac(Algorithm::HS256, b"pub", &claims(&["https://a/{id}"], &[])).unwrap();
        let grants = v.verify(Role::Publisher, &token).unwrap();
        assert!(grants.publish.matches("https://a/1"));
        assert!(!grants.publish.matches("https://b/1"));
        assert_eq!(grants.payload.unwrap()["user"], "alice");
        assert!(
            v.verify(Role::Subscriber, &token).is_err(),
            "wrong key for the role"
        );
    }

    #[test]
    fn namespaced_claim_is_accepted() {
        let v = Verifier::new(
            Algorithm::HS256,
            &KeySource::Secret(b"k".to_vec()),
            &KeySource::Secret(b"k".to_vec()),
        )
        .unwrap();
        let claims = serde_json::json!({"https://mercure.rocks/": {"publish": ["a"]}});
        let token =
            jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(b"k"))
                .unwrap();
        assert!(
            v.verify(Role::Publisher, &token)
                .unwrap()
                .publish
                .matches("a")
        );
    }

    #[test]
    fn expired_token_is_refused() {
        let v = Verifier::new(
            Algorithm::HS256,
            &KeySource::Secret(b"k".to_vec()),
            &KeySource::Secret(b"k".to_vec()),
        )
        .unwrap();
        let mut c = claims(&["*"], &[]);
        c.exp = Some(1_000_000);
        let token = sign_hmac(Algorithm::HS256, b"k", &c).unwrap();
        assert!(v.verify(Role::Publisher, &token).is_err());
    }

    /// A refusal says what is wrong with the token, not jsonwebtoken's bare kind
    /// (`invalid JWT: InvalidToken` said nothing a user could act on).
    #[test]
    fn refusals_say_what_is_wrong() {
        let key = KeySource::Secret(b"k".to_vec());
        let v = Verifier::new(Algorithm::HS256, &key, &key).unwrap();
        let refusal = |token: &str| v.verify(Role::Publisher, token).unwrap_err().to_string();
        let mut expired = claims(&["*"], &[]);
        expired.exp = Some(1_000_000);
        for (token, says) in [
            (
                "hello".to_owned(),
                "not a JWT: expected three base64url parts",
            ),
            (
                sign_hmac(Algorithm::HS256, b"other", &claims(&["*"], &[])).unwrap(),
                "signed with another key",
            ),
            (
                sign_hmac(Algorithm::HS256, b"k", &expired).unwrap(),
                "has expired",
            ),
            (
                sign_hmac(Algorithm::HS512, b"k", &claims(&["*"], &[])).unwrap(),
                "another algorithm than the hub's --jwt-alg",
            ),
            ("a.b!.c".to_owned(), "not base64url"),
        ] {
            let refusal = refusal(&token);
            assert!(refusal.starts_with("invalid JWT: "), "{refusal}");
            assert!(refusal.contains(says), "{token}: {refusal}");
        }
    }

    fn data(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn public_key_algorithms() {
        for (alg, private, public, wrong) in [
            (
                Algorithm::ES256,
                "es256-private.pem",
                "es256-public.pem",
                "rs256-public.pem",
            ),
            (
                Algorithm::RS256,
                "rs256-private.pem",
                "rs256-public.pem",
                "es256-public.pem",
            ),
        ] {
            let key = match alg {
                Algorithm::ES256 => EncodingKey::from_ec_pem(&data(private)).unwrap(),
                _ => EncodingKey::from_rsa_pem(&data(private)).unwrap(),
            };
            let token =
                jsonwebtoken::encode(&Header::new(alg), &claims(&["*"], &[]), &key).unwrap();
            let pem = KeySource::Pem(data(public));
            let v = Verifier::new(alg, &pem, &pem).unwrap();
            assert!(
                v.verify(Role::Publisher, &token)
                    .unwrap()
                    .publish
                    .matches("x")
            );
            let hmac = sign_hmac(Algorithm::HS256, b"k", &claims(&["*"], &[])).unwrap();
            assert!(
                v.verify(Role::Publisher, &hmac).is_err(),
                "no algorithm confusion"
            );
            // A key of the wrong type for the algorithm is refused when the hub starts.
            let wrong = KeySource::Pem(data(wrong));
            assert!(Verifier::new(alg, &wrong, &wrong).is_err());
        }
        assert!(
            Verifier::new(
                Algorithm::HS256,
                &KeySource::Pem(data("es256-public.pem")),
                &KeySource::Secret(vec![1])
            )
            .is_err()
        );
    }

    #[test]
    fn token_locations_in_order() {
        let find = |h: &http::HeaderMap, query: Option<&'static str>| {
            locate_token(h, query).map(|found| found.map(|(token, _)| token.to_owned()))
        };
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            "a=b; mercureAuthorization=c".parse().unwrap(),
        );
        assert_eq!(find(&h, None), Ok(Some("c".into())));
        // The query parameter comes before the cookie (the cookie won before: issue 15).
        assert_eq!(find(&h, Some("q")), Ok(Some("q".into())));
        h.insert(http::header::AUTHORIZATION, "Bearer t".parse().unwrap());
        assert_eq!(find(&h, Some("q")), Ok(Some("t".into())));
        h.insert(http::header::AUTHORIZATION, "bearer  t2 ".parse().unwrap());
        assert_eq!(find(&h, Some("q")), Ok(Some("t2".into())));
        // A header that is not a bearer token is an error, not a fall-back to the others.
        for bad in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "t"] {
            h.insert(http::header::AUTHORIZATION, bad.parse().unwrap());
            assert_eq!(find(&h, Some("q")), Err(MalformedAuthorization), "{bad:?}");
        }
    }
}
