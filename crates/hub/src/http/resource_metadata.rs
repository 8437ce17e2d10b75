//! OAuth 2.0 protected resource metadata (RFC 9728) at
//! `/.well-known/oauth-protected-resource/.well-known/mercure`: what a Mercure 1.0 client
//! needs to know to get a token for this hub (the resource identifier its tokens' `aud` must
//! name, the authorization server if one is configured, how a token may be sent). Every
//! authorization error's `WWW-Authenticate` points here.

use super::hub_url;
use crate::auth::{self, DETAIL_TYPES};
use crate::hub::Hub;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};

/// `GET` the metadata, as JSON.
pub(super) async fn resource_metadata(State(hub): State<Hub>, request: Request) -> Response {
    let verifier = &hub.inner.verifier;
    let resource = verifier
        .audience()
        .map(str::to_owned)
        .unwrap_or_else(|| hub_url(request.uri(), request.headers()).to_string());
    let mut metadata = serde_json::json!({
        "resource": resource,
        "bearer_methods_supported": ["header"],
        "authorization_details_types_supported": DETAIL_TYPES,
        "mercure_cookie": auth::COOKIE_NAME_V1,
        "mercure_subscriptions": hub.inner.subscriptions.is_some(),
    });
    if let Some(issuer) = verifier.issuer() {
        metadata["authorization_servers"] = serde_json::json!([issuer]);
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        metadata.to_string(),
    )
        .into_response()
}
