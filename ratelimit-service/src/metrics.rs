//! The service's Prometheus metrics, registered once at start-up. Labels stay low-cardinality:
//! domains and limit paths come from the config; request values appear only for limits that
//! opt in with `detailed_metric` or `value_to_metric`. The `llm_*` metrics' tenant and model
//! labels come from the gateway's configuration; [`LabelCap`] bounds them anyway.

use std::collections::HashSet;

use parking_lot::Mutex;
use prometheus::{
    CounterVec, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, Opts, Registry, TextEncoder,
};
use rls_proto::llmgateway::usage::v1::UsageReport;

use crate::usage::status_class;

pub struct Metrics {
    pub registry: Registry,
    /// The LLM traffic, from the filter's usage reports and the token/budget verdicts.
    pub llm: LlmMetrics,
    /// ShouldRateLimit calls by domain and overall code (ok, over_limit, error).
    pub requests: IntCounterVec,
    /// Per-descriptor verdicts by domain, limit path and result.
    pub descriptors: IntCounterVec,
    pub store_latency: Histogram,
    pub store_errors: IntCounter,
    pub store_up: IntGauge,
    /// Calls answered by the failure mode because the store failed, by mode.
    pub failure_mode_answers: IntCounterVec,
    pub config_reloads: IntCounterVec,
    pub config_loaded: IntGauge,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let m = Self {
            requests: IntCounterVec::new(
                Opts::new(
                    "ratelimit_requests_total",
                    "ShouldRateLimit calls by domain and overall code",
                ),
                &["domain", "code"],
            )?,
            descriptors: IntCounterVec::new(
                Opts::new(
                    "ratelimit_descriptor_decisions_total",
                    "Descriptor verdicts by domain, limit and result",
                ),
                &["domain", "limit", "result"],
            )?,
            store_latency: Histogram::with_opts(
                HistogramOpts::new(
                    "ratelimit_store_latency_seconds",
                    "Time of one check-and-charge in the store",
                )
                .buckets(vec![
                    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
                    0.1, 0.25,
                ]),
            )?,
            store_errors: IntCounter::new("ratelimit_store_errors_total", "Failed store calls")?,
            store_up: IntGauge::new(
                "ratelimit_store_up",
                "1 while the store answers, 0 while it fails",
            )?,
            failure_mode_answers: IntCounterVec::new(
                Opts::new(
                    "ratelimit_failure_mode_answers_total",
                    "Calls answered by the failure mode while the store failed",
                ),
                &["mode"],
            )?,
            config_reloads: IntCounterVec::new(
                Opts::new(
                    "ratelimit_config_reload_total",
                    "Config loads by result (success, failure)",
                ),
                &["result"],
            )?,
            config_loaded: IntGauge::new(
                "ratelimit_config_loaded",
                "1 while a valid config is in force",
            )?,
            llm: LlmMetrics::new(&registry)?,
            registry,
        };
        m.registry.register(Box::new(m.requests.clone()))?;
        m.registry.register(Box::new(m.descriptors.clone()))?;
        m.registry.register(Box::new(m.store_latency.clone()))?;
        m.registry.register(Box::new(m.store_errors.clone()))?;
        m.registry.register(Box::new(m.store_up.clone()))?;
        m.registry
            .register(Box::new(m.failure_mode_answers.clone()))?;
        m.registry.register(Box::new(m.config_reloads.clone()))?;
        m.registry.register(Box::new(m.config_loaded.clone()))?;
        m.store_up.set(1);
        for r in ["success", "failure"] {
            m.config_reloads.with_label_values(&[r]);
        }
        Ok(m)
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Caps the distinct values of a label: past `max`, new values are reported as `other`, so a
/// misconfigured client cannot grow the metric set without bound.
pub struct LabelCap {
    seen: Mutex<HashSet<String>>,
    max: usize,
}

impl LabelCap {
    pub fn new(max: usize) -> Self {
        Self {
            seen: Mutex::new(HashSet::new()),
            max,
        }
    }

    pub fn label<'a>(&self, value: &'a str) -> &'a str {
        let mut seen = self.seen.lock();
        if seen.contains(value) {
            return value;
        }
        if seen.len() < self.max {
            seen.insert(value.to_string());
            return value;
        }
        "other"
    }
}

/// The LLM metrics (names are a contract: README, "Metrics").
pub struct LlmMetrics {
    /// tenant, model, deployment, code (2xx, 4xx, 5xx, 0xx).
    pub requests: IntCounterVec,
    /// model, deployment.
    pub duration: HistogramVec,
    /// model, deployment; streams only.
    pub first_token: HistogramVec,
    /// type (prompt, completion), tenant, model.
    pub tokens: IntCounterVec,
    /// tenant, kind (requests, tokens, budget).
    pub exceeded: IntCounterVec,
    /// tenant, model; currency units.
    pub cost: CounterVec,
    /// Usage reports by result (applied, duplicate, invalid).
    pub reports: IntCounterVec,
    /// deployment: shared circuits opened by the gateways' reports.
    circuit_opened: IntCounterVec,
    tenants: LabelCap,
    models: LabelCap,
}

/// Latency buckets for whole LLM calls: tens of milliseconds to minutes.
const LLM_BUCKETS: [f64; 14] = [
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
];

impl LlmMetrics {
    fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Self {
            requests: IntCounterVec::new(
                Opts::new(
                    "llm_requests_total",
                    "LLM requests by tenant, model, deployment and status class",
                ),
                &["tenant", "model", "deployment", "code"],
            )?,
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "llm_request_duration_seconds",
                    "Time from the request to the end of the response, as the gateway saw it",
                )
                .buckets(LLM_BUCKETS.to_vec()),
                &["model", "deployment"],
            )?,
            first_token: HistogramVec::new(
                HistogramOpts::new(
                    "llm_time_to_first_token_seconds",
                    "Streams: time from the request to the first byte of the response body",
                )
                .buckets(LLM_BUCKETS.to_vec()),
                &["model", "deployment"],
            )?,
            tokens: IntCounterVec::new(
                Opts::new(
                    "llm_tokens_used_total",
                    "Tokens the providers reported (or the gateway counted for cut streams)",
                ),
                &["type", "tenant", "model"],
            )?,
            exceeded: IntCounterVec::new(
                Opts::new(
                    "llm_rate_limit_exceeded_total",
                    "Requests refused by a limit, by tenant and limit kind",
                ),
                &["tenant", "kind"],
            )?,
            cost: CounterVec::new(
                Opts::new(
                    "llm_cost_total",
                    "Spend in currency units, from the gateway's price table",
                ),
                &["tenant", "model"],
            )?,
            reports: IntCounterVec::new(
                Opts::new(
                    "llm_usage_reports_total",
                    "Usage reports from the gateway's filter by result",
                ),
                &["result"],
            )?,
            circuit_opened: IntCounterVec::new(
                Opts::new(
                    "llm_deployment_circuit_opened_total",
                    "Times a deployment's shared circuit opened on provider failures reported by the gateways",
                ),
                &["deployment"],
            )?,
            tenants: LabelCap::new(10_000),
            models: LabelCap::new(1_000),
        };
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.duration.clone()))?;
        registry.register(Box::new(m.first_token.clone()))?;
        registry.register(Box::new(m.tokens.clone()))?;
        registry.register(Box::new(m.exceeded.clone()))?;
        registry.register(Box::new(m.cost.clone()))?;
        registry.register(Box::new(m.reports.clone()))?;
        registry.register(Box::new(m.circuit_opened.clone()))?;
        Ok(m)
    }

    /// Counts one opening of `deployment`'s shared circuit.
    pub fn circuit_opened(&self, deployment: &str) {
        self.circuit_opened
            .with_label_values(&[self.models.label(deployment)])
            .inc();
    }

    /// A tenant label value, capped.
    pub fn tenant<'a>(&self, tenant: &'a str) -> &'a str {
        self.tenants
            .label(if tenant.is_empty() { "unknown" } else { tenant })
    }

    /// Counts one request's report.
    pub fn record(&self, r: &UsageReport) {
        let tenant = self.tenant(&r.tenant);
        let model = self.models.label(if r.model.is_empty() {
            "unknown"
        } else {
            &r.model
        });
        let deployment = self.models.label(if r.deployment.is_empty() {
            "none"
        } else {
            &r.deployment
        });
        self.requests
            .with_label_values(&[tenant, model, deployment, status_class(r.status)])
            .inc();
        self.duration
            .with_label_values(&[model, deployment])
            .observe(r.duration_ms as f64 / 1000.0);
        if r.stream && r.first_token_ms > 0 {
            self.first_token
                .with_label_values(&[model, deployment])
                .observe(r.first_token_ms as f64 / 1000.0);
        }
        if r.reserved {
            self.tokens
                .with_label_values(&["prompt", tenant, model])
                .inc_by(r.prompt_tokens);
            self.tokens
                .with_label_values(&["completion", tenant, model])
                .inc_by(r.completion_tokens);
            self.cost
                .with_label_values(&[tenant, model])
                .inc_by(r.cost_micros as f64 / 1_000_000.0);
        }
    }
}
