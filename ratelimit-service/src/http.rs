//! HTTP: `/healthz` (also the reference's `/healthcheck`) and `/metrics`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State as AxState;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::service::State;
use crate::store::Store;

pub fn router<S: Store>(state: Arc<State<S>>) -> Router {
    Router::new()
        .route("/healthz", get(health::<S>))
        .route("/healthcheck", get(health::<S>))
        .route("/metrics", get(metrics::<S>))
        .with_state(state)
}

/// 200 while the service can answer; 503 without a valid config, while draining, or when the
/// store is down and the failure mode is `closed` (every answer would be a rejection).
async fn health<S: Store>(AxState(state): AxState<Arc<State<S>>>) -> impl IntoResponse {
    let config = state.config.load().is_some();
    let store_up = state.store_up();
    let draining = state.draining.load(Ordering::Relaxed);
    let healthy = state.healthy();
    let body = serde_json::json!({
        "status": if healthy { "ok" } else { "unavailable" },
        "config": if config { "loaded" } else { "missing" },
        "store": state.store_name,
        "store_up": store_up,
        "failure_mode": format!("{:?}", state.failure_mode).to_lowercase(),
        "draining": draining,
    });
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
}

async fn metrics<S: Store>(AxState(state): AxState<Arc<State<S>>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
