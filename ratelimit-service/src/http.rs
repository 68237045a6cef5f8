//! HTTP: `/healthz` (also the reference's `/healthcheck`), `/metrics`, and `/v1/usage` (what a
//! descriptor's counter holds now, for operators and tests).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{RawQuery, State as AxState};
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
        .route("/v1/usage", get(usage::<S>))
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

/// `GET /v1/usage?domain=D&entry=tenant=acme&entry=kind=tokens`: the limit that descriptor
/// matches and what its counter holds now (read with a zero-hit check: nothing is charged).
async fn usage<S: Store>(
    AxState(state): AxState<Arc<State<S>>>,
    RawQuery(query): RawQuery,
) -> impl IntoResponse {
    let json = |code: StatusCode, v: serde_json::Value| {
        (
            code,
            [(header::CONTENT_TYPE, "application/json")],
            v.to_string(),
        )
    };
    let mut domain = String::new();
    let mut entries = Vec::new();
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match (k.as_ref(), v.split_once('=')) {
            ("domain", _) => domain = v.into_owned(),
            ("entry", Some((key, value))) => {
                entries.push(rls_proto::rate_limit_descriptor::Entry {
                    key: key.to_string(),
                    value: value.to_string(),
                })
            }
            _ => {
                return json(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({"error": format!("unexpected parameter {k}={v}: use domain=D and entry=KEY=VALUE")}),
                );
            }
        }
    }
    let Some(config) = state.config.load_full() else {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"error": "no config loaded"}),
        );
    };
    let req = rls_proto::RateLimitRequest {
        domain,
        descriptors: vec![rls_proto::RateLimitDescriptor {
            entries,
            hits_addend: Some(0),
            ..Default::default()
        }],
        ..Default::default()
    };
    let plan = match crate::limiter::plan(&config, &req) {
        Ok(p) => p,
        Err(e) => {
            return json(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"error": e.to_string()}),
            );
        }
    };
    let (Some(crate::limiter::Item::Limited { limit, charge, .. }), Some(c)) =
        (plan.items.first(), plan.charges.first())
    else {
        return json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": "no limit matches this descriptor"}),
        );
    };
    let now = (state.clock)();
    match state
        .store
        .check_and_charge(now, std::slice::from_ref(c))
        .await
    {
        Ok(out) => {
            let used = c.window.estimate(out.before[*charge], now);
            json(
                StatusCode::OK,
                serde_json::json!({
                    "kind": limit.kind.name(),
                    "unit": limit.unit.name(),
                    "limit": limit.per_unit,
                    "used": used,
                    "remaining": limit.per_unit.saturating_sub(used),
                }),
            )
        }
        Err(e) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"error": e.to_string()}),
        ),
    }
}
