//! The service in process on 127.0.0.1:0, through a real tonic client: the gRPC edge, the
//! failure modes, gRPC health and draining.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::Arc;

use ratelimit_service::config::compile;
use ratelimit_service::health::{Circuit, Outcomes, Policy};
use ratelimit_service::metrics::Metrics;
use ratelimit_service::server;
use ratelimit_service::service::{Clock, FailureMode, State};
use ratelimit_service::store::memory::MemoryStore;
use ratelimit_service::store::{Charge, Correction, Outcome, Store, StoreError};
use rls_proto::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use rls_proto::llmgateway::usage::v1::usage_service_client::UsageServiceClient;
use rls_proto::llmgateway::usage::v1::{
    Correction as PbCorrection, Entry as PbEntry, HealthRequest, ProviderOutcome, ReportRequest,
    UsageReport,
};
use rls_proto::rate_limit_descriptor::Entry;
use rls_proto::rate_limit_response::Code;
use rls_proto::{RateLimitDescriptor, RateLimitRequest};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const CONFIG: &str = "domain: llm
descriptors:
  - key: tenant
    rate_limit: {unit: hour, requests_per_unit: 2, algorithm: fixed}
    descriptors:
      - key: kind
        value: tokens
        rate_limit: {unit: hour, requests_per_unit: 1000, kind: tokens, algorithm: fixed}
      - key: kind
        value: budget
        rate_limit: {unit: day, budget: 1.5}
";

/// A store that is always down.
struct DownStore;

impl Store for DownStore {
    async fn check_and_charge(&self, _: u64, _: &[Charge]) -> Result<Outcome, StoreError> {
        Err(StoreError::Timeout(50))
    }
    async fn correct(&self, _: u64, _: &str, _: &[Correction]) -> Result<bool, StoreError> {
        Err(StoreError::Timeout(50))
    }
    async fn record_outcomes(
        &self,
        _: u64,
        _: &Policy,
        _: &[(String, Outcomes)],
    ) -> Result<Vec<bool>, StoreError> {
        Err(StoreError::Timeout(50))
    }
    async fn circuits(&self, _: &[String]) -> Result<Vec<Circuit>, StoreError> {
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

fn tokens(tenant: &str, kind: &str, hits: u64) -> RateLimitRequest {
    let mut r = request("llm", tenant);
    r.descriptors[0].entries.push(Entry {
        key: "kind".into(),
        value: kind.into(),
    });
    r.descriptors[0].hits_addend = Some(hits);
    r
}

fn report(id: &str, kind: &str, reserved: u64, actual: u64) -> UsageReport {
    UsageReport {
        request_id: id.into(),
        domain: "llm".into(),
        reserved_at_ms: 1_700_000_000_000,
        corrections: vec![PbCorrection {
            entries: ["tenant=a", &format!("kind={kind}")]
                .iter()
                .map(|e| {
                    let (k, v) = e.split_once('=').unwrap();
                    PbEntry {
                        key: k.into(),
                        value: v.into(),
                    }
                })
                .collect(),
            reserved,
            actual,
        }],
        tenant: "a".into(),
        model: "gpt-4o-mini".into(),
        deployment: "openai-a".into(),
        status: 200,
        stream: true,
        estimated_tokens: reserved,
        prompt_tokens: 60,
        completion_tokens: actual - 60,
        usage_source: "provider".into(),
        cost_micros: 250,
        duration_ms: 1500,
        first_token_ms: 300,
        reserved: true,
        ..Default::default()
    }
}

fn header<'a>(resp: &'a rls_proto::RateLimitResponse, name: &str) -> Option<&'a str> {
    resp.response_headers_to_add
        .iter()
        .find(|h| h.key == name)
        .map(|h| h.value.as_str())
}

#[tokio::test]
async fn usage_reports_refund_once_and_feed_the_llm_metrics() {
    let r = start(MemoryStore::new(), FailureMode::Open, true).await;
    let resp = decide(&r.channel, tokens("a", "tokens", 1000)).await;
    assert_eq!(resp.overall_code, Code::Ok as i32);
    assert_eq!(header(&resp, "x-llm-reserved-at"), Some("1700000000000"));
    let resp = decide(&r.channel, tokens("a", "tokens", 1)).await;
    assert_eq!(resp.overall_code, Code::OverLimit as i32);

    let mut usage = UsageServiceClient::new(r.channel.clone());
    let batch = ReportRequest {
        reports: vec![report("req-1", "tokens", 1000, 100)],
    };
    let out = usage.report(batch.clone()).await.unwrap().into_inner();
    assert_eq!(out.results, vec![0]); // APPLIED
    // The answer was lost and the filter sends the batch again, twice: nothing changes.
    for _ in 0..2 {
        let out = usage.report(batch.clone()).await.unwrap().into_inner();
        assert_eq!(out.results, vec![1]); // DUPLICATE
    }
    let resp = decide(&r.channel, tokens("a", "tokens", 900)).await;
    assert_eq!(
        resp.overall_code,
        Code::Ok as i32,
        "the 900 refunded tokens are free again"
    );
    let resp = decide(&r.channel, tokens("a", "tokens", 1)).await;
    assert_eq!(resp.overall_code, Code::OverLimit as i32);

    let bad = ReportRequest {
        reports: vec![UsageReport {
            request_id: "bad id".into(),
            ..Default::default()
        }],
    };
    assert_eq!(
        usage.report(bad).await.unwrap().into_inner().results,
        vec![2]
    ); // INVALID

    let (_, metrics) = http_get(r.http, "/metrics").await;
    for line in [
        r#"llm_requests_total{code="2xx",deployment="openai-a",model="gpt-4o-mini",tenant="a"} 1"#,
        r#"llm_tokens_used_total{model="gpt-4o-mini",tenant="a",type="prompt"} 60"#,
        r#"llm_tokens_used_total{model="gpt-4o-mini",tenant="a",type="completion"} 40"#,
        r#"llm_cost_total{model="gpt-4o-mini",tenant="a"} 0.00025"#,
        r#"llm_request_duration_seconds_count{deployment="openai-a",model="gpt-4o-mini"} 1"#,
        r#"llm_time_to_first_token_seconds_count{deployment="openai-a",model="gpt-4o-mini"} 1"#,
        r#"llm_rate_limit_exceeded_total{kind="tokens",tenant="a"} 2"#,
        r#"llm_usage_reports_total{result="applied"} 1"#,
        r#"llm_usage_reports_total{result="duplicate"} 2"#,
        r#"llm_usage_reports_total{result="invalid"} 1"#,
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
}

#[tokio::test]
async fn a_spent_budget_is_a_429_that_says_so() {
    let r = start(MemoryStore::new(), FailureMode::Open, true).await;
    // 1.5 a day, counted in millionths: 1.2 estimated, then 0.4 more does not fit.
    let resp = decide(&r.channel, tokens("a", "budget", 1_200_000)).await;
    assert_eq!(resp.overall_code, Code::Ok as i32);
    assert_eq!(header(&resp, "x-ratelimit-limit-budget"), Some("1.50"));
    assert_eq!(header(&resp, "x-ratelimit-remaining-budget"), Some("0.30"));
    let resp = decide(&r.channel, tokens("a", "budget", 400_000)).await;
    assert_eq!(resp.overall_code, Code::OverLimit as i32);
    let body: serde_json::Value = serde_json::from_slice(&resp.raw_body).unwrap();
    assert_eq!(body["error"]["code"], "insufficient_quota");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("budget 1.50, spent 1.20, this request needs an estimated 0.40"),
        "{body}"
    );
    // The real cost was 0.2: 1.0 is refunded and the request fits.
    let mut usage = UsageServiceClient::new(r.channel.clone());
    usage
        .report(ReportRequest {
            reports: vec![report("b-1", "budget", 1_200_000, 200_000)],
        })
        .await
        .unwrap();
    let resp = decide(&r.channel, tokens("a", "budget", 400_000)).await;
    assert_eq!(resp.overall_code, Code::Ok as i32);
    assert_eq!(header(&resp, "x-ratelimit-remaining-budget"), Some("0.90"));
}

#[tokio::test]
async fn reports_fail_unavailable_while_the_store_is_down() {
    let r = start(DownStore, FailureMode::Open, true).await;
    let err = UsageServiceClient::new(r.channel.clone())
        .report(ReportRequest {
            reports: vec![report("x", "tokens", 10, 70)],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
}

fn outcome(id: &str, deployment: &str, outcome: ProviderOutcome) -> UsageReport {
    UsageReport {
        request_id: id.into(),
        deployment: deployment.into(),
        status: if outcome == ProviderOutcome::Failed {
            503
        } else {
            200
        },
        provider_outcome: outcome as i32,
        ..Default::default()
    }
}

fn ask(deployments: &[&str]) -> HealthRequest {
    HealthRequest {
        deployments: deployments.iter().map(|d| d.to_string()).collect(),
    }
}

#[tokio::test]
async fn reported_provider_failures_open_the_shared_circuit_once() {
    let r = start(MemoryStore::new(), FailureMode::Open, true).await;
    let mut usage = UsageServiceClient::new(r.channel.clone());
    // Two gateways' batches: openai-a fails three times in a row (one failure was a 429 of
    // the tenant's own limit: a local reply, which says nothing about the provider).
    let first = ReportRequest {
        reports: vec![
            outcome("g1-1", "openai-a", ProviderOutcome::Failed),
            outcome("g1-2", "openai-b", ProviderOutcome::Ok),
            outcome("g1-3", "openai-a", ProviderOutcome::None),
            outcome("g1-4", "openai-a", ProviderOutcome::Failed),
        ],
    };
    usage.report(first.clone()).await.unwrap();
    // The first batch again (its answer was lost): duplicates add no failures.
    let out = usage.report(first).await.unwrap().into_inner();
    assert_eq!(out.results, vec![1, 1, 1, 1]);
    let h = usage
        .health(ask(&["openai-a", "openai-b", "unknown"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.deployments[0].consecutive_failures, 2);
    assert_eq!(h.deployments[0].open_for_ms, 0);
    usage
        .report(ReportRequest {
            reports: vec![outcome("g2-1", "openai-a", ProviderOutcome::Failed)],
        })
        .await
        .unwrap();
    let h = usage
        .health(ask(&["openai-a", "openai-b", "unknown"]))
        .await
        .unwrap()
        .into_inner();
    let got: Vec<(&str, u32, u64)> = h
        .deployments
        .iter()
        .map(|d| (d.deployment.as_str(), d.consecutive_failures, d.open_for_ms))
        .collect();
    assert_eq!(
        got,
        [
            ("openai-a", 3, 10_000),
            ("openai-b", 0, 0),
            ("unknown", 0, 0)
        ]
    );
    let (_, metrics) = http_get(r.http, "/metrics").await;
    let line = r#"llm_deployment_circuit_opened_total{deployment="openai-a"} 1"#;
    assert!(metrics.contains(line), "missing {line} in\n{metrics}");

    let err = usage.health(ask(&[""])).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message()
            .contains("deployment names must be 1-256 bytes"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn health_is_unavailable_while_the_store_is_down() {
    let r = start(DownStore, FailureMode::Open, true).await;
    let err = UsageServiceClient::new(r.channel.clone())
        .health(ask(&["openai-a"]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
}
