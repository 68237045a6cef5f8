//! Runs the gRPC (RateLimitService + grpc.health.v1) and HTTP servers until `stop` fires, then
//! drains: health turns NOT_SERVING / 503 first, in-flight calls finish.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rls_proto::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitServiceServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic_health::ServingStatus;

use crate::http;
use crate::service::{RlsService, State};
use crate::store::Store;

const RLS_SERVICE: &str = "envoy.service.ratelimit.v3.RateLimitService";
const HEALTH_EVERY: Duration = Duration::from_millis(500);

pub async fn serve<S: Store>(
    state: Arc<State<S>>,
    grpc: TcpListener,
    http_listener: TcpListener,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    // grpc.health.v1 follows `State::healthy`, like /healthz: polled, and flipped at once
    // when draining starts.
    let (drained_tx, drained_rx) = watch::channel(false);
    let mut last = state.healthy();
    for name in [RLS_SERVICE, ""] {
        health_reporter
            .set_service_status(name, serving_status(last))
            .await;
    }
    {
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEALTH_EVERY);
            loop {
                let stopping = tokio::select! {
                    _ = tick.tick() => false,
                    _ = stop.wait_for(|s| *s) => true,
                };
                if stopping {
                    state.draining.store(true, Ordering::Relaxed);
                }
                let healthy = state.healthy();
                if healthy != last {
                    for name in [RLS_SERVICE, ""] {
                        health_reporter
                            .set_service_status(name, serving_status(healthy))
                            .await;
                    }
                    last = healthy;
                }
                if stopping {
                    let _ = drained_tx.send(true);
                    return;
                }
            }
        });
    }
    let mut grpc_stop = drained_rx.clone();
    let grpc_server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(health_service)
        .add_service(RateLimitServiceServer::new(RlsService(Arc::clone(&state))))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(grpc),
            async move {
                let _ = grpc_stop.wait_for(|s| *s).await;
            },
        );
    let mut http_stop = drained_rx;
    let http_server =
        axum::serve(http_listener, http::router(state)).with_graceful_shutdown(async move {
            let _ = http_stop.wait_for(|s| *s).await;
        });
    let (g, h) = tokio::join!(grpc_server, http_server);
    g.map_err(|e| format!("gRPC server: {e}"))?;
    h.map_err(|e| format!("HTTP server: {e}"))?;
    Ok(())
}

fn serving_status(healthy: bool) -> ServingStatus {
    if healthy {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}
