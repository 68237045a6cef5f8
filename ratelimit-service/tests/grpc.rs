//! The service in process on 127.0.0.1:0, through a real tonic client: the gRPC edge, the
//! failure modes, gRPC health and draining.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::Arc;

use ratelimit_service::config::compile;
use ratelimit_service::metrics::Metrics;
use ratelimit_service::server;
use ratelimit_service::service::{Clock, FailureMode, State};
use ratelimit_service::store::memory::MemoryStore;
use ratelimit_service::store::{Charge, Outcome, Store, StoreError};
use rls_proto::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use rls_proto::rate_limit_descriptor::Entry;
use rls_proto::rate_limit_response::Code;
use rls_proto::{RateLimitDescriptor, RateLimitRequest};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const CONFIG: &str = "domain: llm\ndescriptors:\n  - key: tenant\n    rate_limit: {unit: hour, requests_per_unit: 2, algorithm: fixed}\n";

/// A store that is always down.
struct DownStore;

impl Store for DownStore {
    async fn check_and_charge(&self, _: u64, _: &[Charge]) -> Result<Outcome, StoreError> {
        Err(StoreError::Timeout(50))
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Err(StoreError::Timeout(50))
    }
}

struct Running<S> {
    state: Arc<State<S>>,
    channel: Channel,
    stop: watch::Sender<bool>,
    http: std::net::SocketAddr,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

async fn start<S: Store>(store: S, mode: FailureMode, with_config: bool) -> Running<S> {
    let clock: Clock = Arc::new(|| 1_700_000_000_000);
    let state = Arc::new(State::new(
        store,
        "test",
        mode,
        Metrics::new().unwrap(),
        clock,
    ));
    if with_config {
        let loaded = compile(&vec![(PathBuf::from("t.yaml"), CONFIG.as_bytes().to_vec())]).unwrap();
        state.config.store(Some(Arc::new(loaded.config)));
    }
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (grpc_addr, http_addr) = (grpc.local_addr().unwrap(), http.local_addr().unwrap());
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(server::serve(Arc::clone(&state), grpc, http, stop_rx));
    let channel = Channel::from_shared(format!("http://{grpc_addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    Running {
        state,
        channel,
        stop,
        http: http_addr,
        task,
    }
}

fn request(domain: &str, tenant: &str) -> RateLimitRequest {
    RateLimitRequest {
        domain: domain.into(),
        descriptors: vec![RateLimitDescriptor {
            entries: vec![Entry {
                key: "tenant".into(),
                value: tenant.into(),
            }],
            limit: None,
            hits_addend: None,
        }],
        hits_addend: 0,
    }
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let code = out[9..12].parse().unwrap();
    let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    (code, body)
}

/// A decision over gRPC that must succeed.
async fn decide(channel: &Channel, req: RateLimitRequest) -> rls_proto::RateLimitResponse {
    RateLimitServiceClient::new(channel.clone())
        .should_rate_limit(req)
        .await
        .unwrap()
        .into_inner()
}

/// The grpc.health.v1 status of `service`.
async fn grpc_health(channel: &Channel, service: &str) -> i32 {
    HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

#[tokio::test]
async fn decides_over_grpc_and_reports_health() {
    let r = start(MemoryStore::new(), FailureMode::Open, true).await;
    let mut client = RateLimitServiceClient::new(r.channel.clone());
    for _ in 0..2 {
        let resp = decide(&r.channel, request("llm", "a")).await;
        assert_eq!(resp.overall_code, Code::Ok as i32);
    }
    let resp = decide(&r.channel, request("llm", "a")).await;
    assert_eq!(resp.overall_code, Code::OverLimit as i32);
    assert!(!resp.raw_body.is_empty());

    let err = client
        .should_rate_limit(request("", "a"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let mut empty = request("llm", "a");
    empty.descriptors.clear();
    assert_eq!(
        client.should_rate_limit(empty).await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );

    assert_eq!(
        grpc_health(&r.channel, "envoy.service.ratelimit.v3.RateLimitService").await,
        ServingStatus::Serving as i32
    );

    let (code, body) = http_get(r.http, "/healthz").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"store_up\":true"));
    let (code, metrics) = http_get(r.http, "/metrics").await;
    assert_eq!(code, 200);
    assert!(
        metrics.contains("ratelimit_requests_total{code=\"over_limit\",domain=\"llm\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains(
        "ratelimit_descriptor_decisions_total{domain=\"llm\",limit=\"llm.tenant\",result=\"ok\"} 2"
    ));

    // Draining: health flips, the server stops.
    r.stop.send(true).unwrap();
    r.task.await.unwrap().unwrap();
    assert!(r.state.draining.load(std::sync::atomic::Ordering::Relaxed));
}

#[tokio::test]
async fn failure_mode_open_allows() {
    let r = start(DownStore, FailureMode::Open, true).await;
    let resp = decide(&r.channel, request("llm", "a")).await;
    assert_eq!(resp.overall_code, Code::Ok as i32);
    assert!(!r.state.store_up());
    let (code, body) = http_get(r.http, "/healthz").await;
    assert_eq!(code, 200, "open mode can still answer: {body}");
    assert!(body.contains("\"store_up\":false"));
    let (_, metrics) = http_get(r.http, "/metrics").await;
    assert!(metrics.contains("ratelimit_store_up 0"));
    assert!(metrics.contains("ratelimit_failure_mode_answers_total{mode=\"open\"} 1"));
}

#[tokio::test]
async fn failure_mode_closed_rejects_and_is_unhealthy() {
    let r = start(DownStore, FailureMode::Closed, true).await;
    let resp = decide(&r.channel, request("llm", "a")).await;
    assert_eq!(resp.overall_code, Code::OverLimit as i32);
    let body: serde_json::Value = serde_json::from_slice(&resp.raw_body).unwrap();
    assert_eq!(body["error"]["code"], "rate_limiter_unavailable");
    assert_eq!(http_get(r.http, "/healthz").await.0, 503);
}

#[tokio::test]
async fn failure_mode_envoy_returns_unavailable() {
    let r = start(DownStore, FailureMode::Envoy, true).await;
    let mut client = RateLimitServiceClient::new(r.channel.clone());
    let err = client
        .should_rate_limit(request("llm", "a"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    // Descriptors without a limit never touch the store.
    let resp = decide(&r.channel, request("other", "a")).await;
    assert_eq!(resp.overall_code, Code::Ok as i32);
}

#[tokio::test]
async fn without_config_calls_are_unavailable_and_health_is_503() {
    let r = start(MemoryStore::new(), FailureMode::Open, false).await;
    let mut client = RateLimitServiceClient::new(r.channel.clone());
    let err = client
        .should_rate_limit(request("llm", "a"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    let (code, body) = http_get(r.http, "/healthz").await;
    assert_eq!(code, 503);
    assert!(body.contains("\"config\":\"missing\""));
    // gRPC health says the same (Envoy's active health checks read it).
    for service in ["", "envoy.service.ratelimit.v3.RateLimitService"] {
        let status = grpc_health(&r.channel, service).await;
        assert_eq!(
            status,
            ServingStatus::NotServing as i32,
            "service '{service}'"
        );
    }
}
