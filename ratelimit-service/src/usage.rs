//! Usage reports (`llmgateway.usage.v1.UsageService/Report`): what each request really used,
//! sent by the gateway's filter when the response ends.
//!
//! Tokens and spend are reserved at admission on an estimate (the `hits_addend` of their
//! descriptors). A report carries, per reserved descriptor, the reserved and the real amount;
//! the difference goes into the same counter and the same window the reservation went into
//! (extra charged, surplus refunded, never below zero), so after the response a counter holds
//! exactly what the provider reported. Every report also feeds the `llm_*` metrics and one
//! access-log line. A report is applied once per request id (the store remembers ids), so the
//! filter can retry a batch whose answer it never got.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;

use futures_util::future::join_all;
use rls_proto::llmgateway::usage::v1::usage_service_server::UsageService;
use rls_proto::llmgateway::usage::v1::{
    DeploymentHealth, HealthRequest, HealthResponse, ReportRequest, ReportResponse, UsageReport,
    report_response::Result as Outcome,
};
use rls_proto::rate_limit_descriptor::Entry;
use rls_proto::{RateLimitDescriptor, RateLimitRequest};
use tonic::{Request, Response, Status};

use crate::config::Config;
use crate::headers::format_amount;
use crate::health::{self, MAX_DEPLOYMENT_LEN, MAX_DEPLOYMENTS_PER_CALL};
use crate::limiter::{self, Item};
use crate::service::State;
use crate::store::{Correction, Store};

/// Most reports one call may carry: the filter sends a few per timer tick.
pub const MAX_REPORTS_PER_CALL: usize = 1000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidReport {
    #[error("request_id must be 1-128 letters, digits or . _ : - (got {0:?})")]
    BadId(String),
    #[error("a report with corrections needs a domain")]
    NoDomain,
    #[error("a correction needs at least one descriptor entry")]
    EmptyDescriptor,
}

/// Ids end up inside Redis keys: only characters that need no escaping.
pub fn valid_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

/// The counter corrections of `report` under `config`: its descriptors are resolved exactly as
/// at admission (same limits, `replaces`, shared counters), and only token and budget limits
/// are corrected. Descriptors that match no limit correct nothing.
pub fn corrections(
    config: &Config,
    report: &UsageReport,
) -> Result<Vec<Correction>, InvalidReport> {
    if !valid_id(&report.request_id) {
        return Err(InvalidReport::BadId(report.request_id.clone()));
    }
    if report.corrections.is_empty() {
        return Ok(Vec::new());
    }
    if report.domain.is_empty() {
        return Err(InvalidReport::NoDomain);
    }
    if report.corrections.iter().any(|c| c.entries.is_empty()) {
        return Err(InvalidReport::EmptyDescriptor);
    }
    let req = RateLimitRequest {
        domain: report.domain.clone(),
        descriptors: report
            .corrections
            .iter()
            .map(|c| RateLimitDescriptor {
                entries: c
                    .entries
                    .iter()
                    .map(|e| Entry {
                        key: e.key.clone(),
                        value: e.value.clone(),
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let Ok(plan) = limiter::plan(config, &req) else {
        return Ok(Vec::new());
    };
    // Summed per counter: two descriptors of one request may share one.
    let mut delta: HashMap<usize, i64> = HashMap::new();
    for (item, c) in plan.items.iter().zip(&report.corrections) {
        if let Item::Limited { limit, charge, .. } = item
            && limit.kind.reconciled()
        {
            let d = i128::from(c.actual) - i128::from(c.reserved);
            let d = i64::try_from(d).unwrap_or(if d < 0 { i64::MIN } else { i64::MAX });
            let sum = delta.entry(*charge).or_default();
            *sum = sum.saturating_add(d);
        }
    }
    let mut out: Vec<Correction> = delta
        .into_iter()
        .filter(|&(_, d)| d != 0)
        .map(|(i, d)| {
            let c = &plan.charges[i];
            Correction {
                key: c.key.clone(),
                window: c.window,
                index: c.window.index(report.reserved_at_ms),
                delta: d,
            }
        })
        .collect();
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// `2xx`, `4xx`, `5xx`; `0xx` for a request that got no status (the client went away first).
pub fn status_class(status: u32) -> &'static str {
    match status {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "0xx",
    }
}

/// One access-log line per applied report: JSON, no credentials (reports carry none).
pub fn access_log_line(report: &UsageReport, now_ms: u64) -> String {
    serde_json::json!({
        "time_ms": now_ms,
        "request_id": report.request_id,
        "tenant": report.tenant,
        "model": report.model,
        "deployment": report.deployment,
        "status": report.status,
        "stream": report.stream,
        "estimated_tokens": report.estimated_tokens,
        "prompt_tokens": report.prompt_tokens,
        "completion_tokens": report.completion_tokens,
        "usage_source": report.usage_source,
        "estimated_cost": format_amount(report.estimated_cost_micros),
        "cost": format_amount(report.cost_micros),
        "duration_ms": report.duration_ms,
        "first_token_ms": report.first_token_ms,
    })
    .to_string()
}

/// Where access-log lines go.
pub type AccessLog = Arc<parking_lot::Mutex<Box<dyn Write + Send>>>;

impl<S: Store> State<S> {
    /// Applies one report: corrections once per id, then metrics; returns the access-log line
    /// of an applied report.
    async fn apply_report(
        &self,
        config: &Config,
        report: &UsageReport,
    ) -> Result<(Outcome, Option<String>), Status> {
        let corrections = match corrections(config, report) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(request_id = %report.request_id, error = %e, "usage report rejected");
                return Ok((Outcome::Invalid, None));
            }
        };
        let now = (self.clock)();
        let applied = match self
            .store
            .correct(now, &report.request_id, &corrections)
            .await
        {
            Ok(a) => a,
            Err(e) => {
                self.record_store(Err(&e));
                return Err(Status::unavailable(format!(
                    "rate-limit store unavailable: {e}"
                )));
            }
        };
        if !applied {
            return Ok((Outcome::Duplicate, None));
        }
        self.metrics.llm.record(report);
        let line = self
            .access_log
            .is_some()
            .then(|| access_log_line(report, now));
        Ok((Outcome::Applied, line))
    }

    pub async fn report(&self, req: &ReportRequest) -> Result<ReportResponse, Status> {
        if req.reports.len() > MAX_REPORTS_PER_CALL {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_REPORTS_PER_CALL} reports per call, got {}",
                req.reports.len()
            )));
        }
        let Some(config) = self.config.load_full() else {
            return Err(Status::unavailable(
                "no valid rate-limit configuration is loaded",
            ));
        };
        let results = join_all(req.reports.iter().map(|r| self.apply_report(&config, r))).await;
        let mut out = Vec::with_capacity(results.len());
        let mut lines = String::new();
        let mut failed = None;
        let mut applied = Vec::with_capacity(results.len());
        for (r, report) in results.into_iter().zip(&req.reports) {
            let (outcome, line) = match r {
                Ok(x) => x,
                Err(e) => {
                    failed.get_or_insert(e);
                    continue;
                }
            };
            if outcome == Outcome::Applied {
                applied.push(report);
            }
            if let Some(l) = line {
                lines.push_str(&l);
                lines.push('\n');
            }
            self.metrics
                .llm
                .reports
                .with_label_values(&[outcome.as_str_name().to_ascii_lowercase().as_str()])
                .inc();
            out.push(outcome as i32);
        }
        // One write per call, and before answering: the lines of applied reports are never
        // lost to a failure of others in the batch (their retry is a duplicate).
        if let (Some(log), false) = (&self.access_log, lines.is_empty()) {
            let mut w = log.lock();
            let _ = w.write_all(lines.as_bytes());
            let _ = w.flush();
        }
        self.record_outcomes(applied).await;
        match failed {
            Some(e) => Err(e),
            None => Ok(ReportResponse { results: out }),
        }
    }

    /// Feeds the provider outcomes of applied reports (a retried batch's duplicates were fed
    /// the first time) into the deployments' circuits. Best effort: a store failure loses
    /// these outcomes, not the reports, which are applied already.
    async fn record_outcomes(&self, applied: Vec<&UsageReport>) {
        let outcomes = health::outcomes(applied);
        if outcomes.is_empty() {
            return;
        }
        let now = (self.clock)();
        match self
            .store
            .record_outcomes(now, &self.health, &outcomes)
            .await
        {
            Ok(opened) => {
                for ((name, _), _) in outcomes.iter().zip(opened).filter(|(_, o)| *o) {
                    tracing::warn!(
                        deployment = %name,
                        "deployment circuit opened: {} provider failures in a row",
                        self.health.failures_to_open
                    );
                    self.metrics.llm.circuit_opened(name);
                }
            }
            Err(e) => {
                self.record_store(Err(&e));
                tracing::warn!(error = %e, "provider outcomes not recorded");
            }
        }
    }

    pub async fn health(&self, req: &HealthRequest) -> Result<HealthResponse, Status> {
        if req.deployments.len() > MAX_DEPLOYMENTS_PER_CALL {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_DEPLOYMENTS_PER_CALL} deployments per call, got {}",
                req.deployments.len()
            )));
        }
        if let Some(d) = req
            .deployments
            .iter()
            .find(|d| d.is_empty() || d.len() > MAX_DEPLOYMENT_LEN)
        {
            return Err(Status::invalid_argument(format!(
                "deployment names must be 1-{MAX_DEPLOYMENT_LEN} bytes, got {} bytes",
                d.len()
            )));
        }
        let circuits = match self.store.circuits(&req.deployments).await {
            Ok(c) => c,
            Err(e) => {
                self.record_store(Err(&e));
                return Err(Status::unavailable(format!(
                    "rate-limit store unavailable: {e}"
                )));
            }
        };
        let now = (self.clock)();
        Ok(HealthResponse {
            deployments: req
                .deployments
                .iter()
                .zip(circuits)
                .map(|(d, c)| DeploymentHealth {
                    deployment: d.clone(),
                    consecutive_failures: c.failures,
                    open_for_ms: c.open_for_ms(now),
                })
                .collect(),
        })
    }
}

/// The tonic service over a shared [`State`].
pub struct UsageSvc<S>(pub Arc<State<S>>);

#[tonic::async_trait]
impl<S: Store> UsageService for UsageSvc<S> {
    async fn report(
        &self,
        request: Request<ReportRequest>,
    ) -> Result<Response<ReportResponse>, Status> {
        self.0.report(request.get_ref()).await.map(Response::new)
    }

    async fn health(
        &self,
        request: Request<HealthRequest>,
    ) -> Result<Response<HealthResponse>, Status> {
        self.0.health(request.get_ref()).await.map(Response::new)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rls_proto::llmgateway::usage::v1::{Correction as PbCorrection, Entry as PbEntry};

    const YAML: &str = r#"
domain: llm
descriptors:
  - key: tenant
    rate_limit: {unit: minute, requests_per_unit: 10}
    descriptors:
      - key: kind
        value: tokens
        rate_limit: {unit: minute, requests_per_unit: 1000, kind: tokens}
      - key: kind
        value: budget
        rate_limit: {unit: day, budget: 5.0}
"#;

    fn config() -> Config {
        crate::config::compile(&vec![("t.yaml".into(), YAML.as_bytes().to_vec())])
            .unwrap()
            .config
    }

    fn correction(entries: &[(&str, &str)], reserved: u64, actual: u64) -> PbCorrection {
        PbCorrection {
            entries: entries
                .iter()
                .map(|(k, v)| PbEntry {
                    key: k.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            reserved,
            actual,
        }
    }

    #[test]
    fn only_token_and_budget_limits_are_corrected_in_the_reserved_window() {
        let report = UsageReport {
            request_id: "r-1".into(),
            domain: "llm".into(),
            reserved_at_ms: 120_500,
            corrections: vec![
                correction(&[("tenant", "a")], 1, 7),
                correction(&[("tenant", "a"), ("kind", "tokens")], 1000, 100),
                correction(&[("tenant", "a"), ("kind", "budget")], 2000, 2500),
                correction(&[("tenant", "a"), ("kind", "nothing")], 5, 1),
            ],
            ..Default::default()
        };
        let out = corrections(&config(), &report).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].key, "llm|tenant=a|kind=budget|86400000");
        assert_eq!((out[0].index, out[0].delta), (0, 500));
        assert_eq!(out[1].key, "llm|tenant=a|kind=tokens|60000");
        assert_eq!((out[1].index, out[1].delta), (2, -900));
    }

    #[test]
    fn bad_reports_are_named() {
        let c = config();
        let bad_id = UsageReport {
            request_id: "a b".into(),
            ..Default::default()
        };
        assert!(matches!(
            corrections(&c, &bad_id),
            Err(InvalidReport::BadId(_))
        ));
        let no_domain = UsageReport {
            request_id: "x".into(),
            corrections: vec![correction(&[("tenant", "a")], 1, 2)],
            ..Default::default()
        };
        assert_eq!(corrections(&c, &no_domain), Err(InvalidReport::NoDomain));
        assert!(!valid_id(&"x".repeat(129)));
        assert!(valid_id("0f3a-19:ab_c.d"));
    }

    #[test]
    fn access_log_is_one_json_line() {
        let line = access_log_line(
            &UsageReport {
                request_id: "r".into(),
                tenant: "acme".into(),
                cost_micros: 1_250,
                ..Default::default()
            },
            7,
        );
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["tenant"], "acme");
        assert_eq!(v["cost"], "0.00125");
    }
}
