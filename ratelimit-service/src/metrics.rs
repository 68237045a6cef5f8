//! The service's Prometheus metrics, registered once at start-up. Labels stay low-cardinality:
//! domains and limit paths come from the config; request values appear only for limits that
//! opt in with `detailed_metric` or `value_to_metric`.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
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
