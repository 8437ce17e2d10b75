//! `/healthz`, `/readyz` and `/metrics`: what an orchestrator and a monitoring system ask.

use crate::hub::Hub;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

/// Liveness: the hub answers.
pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: the history store can take publishes.
pub(super) async fn readyz(State(hub): State<Hub>) -> Response {
    if hub.inner.history.is_ready() {
        "ready\n".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "history store not ready\n").into_response()
    }
}

/// The hub's Prometheus metrics.
pub(super) async fn metrics(State(hub): State<Hub>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        hub.metrics().render(),
    )
        .into_response()
}
