//! The gRPC edge: Envoy's `ShouldRateLimit`, the failure modes, and store health.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use rls_proto::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitService;
use rls_proto::rate_limit_response::{Code, DescriptorStatus};
use rls_proto::{HeaderValue, RateLimitRequest, RateLimitResponse};
use tonic::{Request, Response, Status};

use crate::config::Config;
use crate::headers::error_body;
use crate::limiter::{self, CheckError, Item, Verdict};
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

/// What to answer while the store fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FailureMode {
    /// Allow every request.
    Open,
    /// Reject every request (429).
    Closed,
    /// Return gRPC UNAVAILABLE so Envoy's `failure_mode_deny` decides.
    Envoy,
}

pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Unix time in milliseconds.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    })
}

/// Everything a call needs, shared by the gRPC and HTTP servers.
pub struct State<S> {
    pub config: ArcSwapOption<Config>,
    pub store: S,
    pub store_name: &'static str,
    pub failure_mode: FailureMode,
    pub metrics: Metrics,
    pub clock: Clock,
    store_down: AtomicBool,
    pub draining: AtomicBool,
    /// Where usage reports' access-log lines go; `None`: nowhere.
    pub access_log: Option<crate::usage::AccessLog>,
    /// When the deployments' shared circuits open (`crate::health`).
    pub health: crate::health::Policy,
}

impl<S: Store> State<S> {
    pub fn new(
        store: S,
        store_name: &'static str,
        failure_mode: FailureMode,
        metrics: Metrics,
        clock: Clock,
    ) -> Self {
        Self {
            config: ArcSwapOption::empty(),
            store,
            store_name,
            failure_mode,
            metrics,
            clock,
            store_down: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            access_log: None,
            health: crate::health::Policy::default(),
        }
    }

    pub fn store_up(&self) -> bool {
        !self.store_down.load(Ordering::Relaxed)
    }

    /// Whether this process should get traffic: a valid config, not draining, and not a store
    /// outage in `closed` mode (where every answer would be a rejection). `/healthz` and
    /// `grpc.health.v1` both report this.
    pub fn healthy(&self) -> bool {
        self.config.load().is_some()
            && !self.draining.load(Ordering::Relaxed)
            && (self.store_up() || self.failure_mode != FailureMode::Closed)
    }

    /// Logs store health only when it changes, never once per request. A failed call marks the
    /// store down at once; only the probe (which checks every node) marks it up again, so a
    /// partial outage (one cluster master down) cannot flap the state with every request.
    pub fn record_store(&self, result: Result<(), &StoreError>) {
        match result {
            Ok(()) => {
                if self.store_down.swap(false, Ordering::Relaxed) {
                    self.metrics.store_up.set(1);
                    tracing::info!(
                        store = self.store_name,
                        "store recovered; limits are enforced again"
                    );
                }
            }
            Err(e) => {
                self.metrics.store_errors.inc();
                if !self.store_down.swap(true, Ordering::Relaxed) {
                    self.metrics.store_up.set(0);
                    tracing::error!(
                        store = self.store_name,
                        error = %e,
                        failure_mode = ?self.failure_mode,
                        "store unavailable; answering with the failure mode until it recovers"
                    );
                }
            }
        }
    }

    /// Probes the store on a timer: the only path that declares the store recovered.
    pub fn spawn_store_probe(self: &Arc<Self>, every: Duration) {
        let state = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let r = state.store.ping().await;
                state.record_store(r.as_ref().map(|_| ()));
            }
        });
    }

    pub async fn should_rate_limit(
        &self,
        req: &RateLimitRequest,
    ) -> Result<RateLimitResponse, Status> {
        let Some(config) = self.config.load_full() else {
            self.count(&req.domain, "error");
            return Err(Status::unavailable(
                "no valid rate-limit configuration is loaded",
            ));
        };
        // Metric label: configured domains only, so clients cannot grow the label set.
        let domain = if config.domains.contains_key(&req.domain) {
            req.domain.as_str()
        } else {
            "unknown"
        };
        let now = (self.clock)();
        let started = Instant::now();
        match limiter::check(&config, &self.store, req, now).await {
            Ok((response, plan, verdicts)) => {
                if !plan.charges.is_empty() {
                    self.metrics
                        .store_latency
                        .observe(started.elapsed().as_secs_f64());
                }
                let rejected = response.overall_code != Code::Ok as i32;
                for ((item, verdict), d) in plan.items.iter().zip(verdicts).zip(&req.descriptors) {
                    if let (Item::Limited { limit, .. }, Some(Verdict::OverLimit), true) =
                        (item, verdict, rejected)
                    {
                        let tenant = d
                            .entries
                            .iter()
                            .find(|e| e.key == "tenant")
                            .map_or("", |e| e.value.as_str());
                        let llm = &self.metrics.llm;
                        llm.exceeded
                            .with_label_values(&[llm.tenant(tenant), limit.kind.name()])
                            .inc();
                    }
                    if let (Item::Limited { metric_key, .. }, Some(v)) = (item, verdict) {
                        let result = match v {
                            Verdict::Ok => "ok",
                            Verdict::OverLimit => "over_limit",
                            Verdict::ShadowOverLimit => "shadow_over_limit",
                        };
                        self.metrics
                            .descriptors
                            .with_label_values(&[domain, metric_key, result])
                            .inc();
                    }
                }
                let code = if response.overall_code == Code::Ok as i32 {
                    "ok"
                } else {
                    "over_limit"
                };
                self.metrics
                    .requests
                    .with_label_values(&[domain, code])
                    .inc();
                Ok(response)
            }
            Err(CheckError::Invalid(e)) => {
                self.count("unknown", "error");
                Err(Status::invalid_argument(e.to_string()))
            }
            Err(CheckError::Store(e)) => {
                self.record_store(Err(&e));
                let mode = self.failure_mode;
                self.metrics
                    .failure_mode_answers
                    .with_label_values(&[match mode {
                        FailureMode::Open => "open",
                        FailureMode::Closed => "closed",
                        FailureMode::Envoy => "envoy",
                    }])
                    .inc();
                match mode {
                    FailureMode::Open => {
                        self.count(domain, "ok");
                        Ok(uniform(req, Code::Ok))
                    }
                    FailureMode::Closed => {
                        self.count(domain, "over_limit");
                        let mut r = uniform(req, Code::OverLimit);
                        r.response_headers_to_add = vec![
                            HeaderValue {
                                key: "retry-after".into(),
                                value: "1".into(),
                                raw_value: Vec::new(),
                            },
                            HeaderValue {
                                key: "content-type".into(),
                                value: "application/json".into(),
                                raw_value: Vec::new(),
                            },
                        ];
                        r.raw_body = error_body(
                            "Rate limiting is temporarily unavailable and this gateway fails closed; retry shortly.",
                            "rate_limiter_unavailable",
                            "rate_limiter_unavailable",
                        )
                        .into_bytes();
                        Ok(r)
                    }
                    FailureMode::Envoy => {
                        self.count(domain, "error");
                        Err(Status::unavailable(format!(
                            "rate-limit store unavailable: {e}"
                        )))
                    }
                }
            }
        }
    }

    fn count(&self, domain: &str, code: &str) {
        self.metrics
            .requests
            .with_label_values(&[domain, code])
            .inc();
    }
}

/// Every descriptor with the same code and no limit details.
fn uniform(req: &RateLimitRequest, code: Code) -> RateLimitResponse {
    RateLimitResponse {
        overall_code: code as i32,
        statuses: req
            .descriptors
            .iter()
            .map(|_| DescriptorStatus {
                code: code as i32,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// The tonic service over a shared [`State`].
pub struct RlsService<S>(pub Arc<State<S>>);

#[tonic::async_trait]
impl<S: Store> RateLimitService for RlsService<S> {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        self.0
            .should_rate_limit(request.get_ref())
            .await
            .map(Response::new)
    }
}
