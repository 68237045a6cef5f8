//! Runs the gRPC (RateLimitService, the gateway's UsageService, grpc.health.v1) and HTTP servers until `stop` fires, then
//! drains: health turns NOT_SERVING / 503 first, in-flight calls finish.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rls_proto::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitServiceServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic_health::ServingStatus;

use rls_proto::llmgateway::usage::v1::usage_service_server::UsageServiceServer;

use crate::http;
use crate::service::{RlsService, State};
use crate::store::Store;
use crate::usage::UsageSvc;

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
    // `Server::tcp_nodelay` only applies to listeners tonic binds itself; with
    // `serve_with_incoming*` the accepted sockets must be configured here, or Nagle + delayed
    // ACK hold back every response by ~40 ms.
    let incoming = grpc_incoming(grpc);
    let grpc_server = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(RateLimitServiceServer::new(RlsService(Arc::clone(&state))))
        .add_service(UsageServiceServer::new(UsageSvc(Arc::clone(&state))))
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = grpc_stop.wait_for(|s| *s).await;
        });
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

/// Accepted gRPC connections, each with TCP_NODELAY set and batched writes (see below).
fn grpc_incoming(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<BufferedWrites>> {
    tokio_stream::StreamExt::map(
        tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
        |r| r.map(BufferedWrites),
    )
}

/// A gRPC connection's socket, presented to h2 as not supporting vectored writes.
///
/// h2 does not copy a DATA payload of 256 bytes or more into its write buffer when the socket
/// supports vectored writes: it queues it as a separate buffer and must write it out before it
/// can encode the next frame. Every `ShouldRateLimit` response is over 256 bytes (statuses and
/// x-ratelimit-* headers), so each one cost its own `writev`. Without vectored writes h2 copies
/// payloads below 1 KiB into its 16 KiB buffer, and the responses ready at one time leave in a
/// single write.
pub struct BufferedWrites(tokio::net::TcpStream);

impl tonic::transport::server::Connected for BufferedWrites {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.connect_info()
    }
}

impl tokio::io::AsyncRead for BufferedWrites {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for BufferedWrites {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// Without TCP_NODELAY, Nagle + the peer's delayed ACK hold each response ~40 ms.
    #[tokio::test]
    async fn accepted_grpc_sockets_have_nodelay_and_no_vectored_writes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = std::pin::pin!(grpc_incoming(listener));
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let conn = tokio_stream::StreamExt::next(&mut incoming)
            .await
            .unwrap()
            .unwrap();
        assert!(conn.0.nodelay().unwrap());
        assert!(!tokio::io::AsyncWrite::is_write_vectored(&conn));
    }
}
