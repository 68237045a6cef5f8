//! Provider health: a small circuit per deployment in the VM's shared data, so every worker of
//! this Envoy agrees. Consecutive failures (5xx, 429, no response) open the circuit; it closes
//! after a cool-down, when the next request probes the deployment again.
//!
//! Every response's outcome also goes to ratelimit-service in the usage report, which keeps a
//! circuit per deployment for all gateways; each worker polls those shared circuits
//! (`accounting.health_poll_ms`) and keeps them beside its own. A deployment is chosen only
//! while both are closed: this Envoy's failures count at once, the other gateways' within a
//! poll.

use rls_proto::llmgateway::usage::v1::ProviderOutcome;

/// Failures in a row that open the circuit.
pub const FAILURES_TO_OPEN: u32 = 3;
/// How long an open circuit keeps a deployment out.
pub const OPEN_FOR_MS: u64 = 10_000;

/// A deployment's circuit state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Circuit {
    pub failures: u32,
    pub open_until_ms: u64,
    /// Until when the service's shared circuit is open, as of the last poll (this VM's clock).
    pub shared_open_until_ms: u64,
}

/// Whether a response with `status` (0: no response at all) is a provider failure.
pub fn failed(status: u16) -> bool {
    status == 0 || status == 429 || status >= 500
}

/// What a response says about its deployment, for the usage report.
pub fn outcome(status: u16, code_details: Option<&str>) -> ProviderOutcome {
    if !is_provider_outcome(code_details) {
        ProviderOutcome::None
    } else if failed(status) {
        ProviderOutcome::Failed
    } else {
        ProviderOutcome::Ok
    }
}

impl Circuit {
    pub fn healthy(&self, now_ms: u64) -> bool {
        self.open_until_ms <= now_ms && self.shared_open_until_ms <= now_ms
    }

    /// The state after one more response with `status` (0: no response at all). The shared
    /// part changes only with the next poll.
    pub fn after(self, status: u16, now_ms: u64) -> Circuit {
        if !failed(status) {
            return Circuit {
                shared_open_until_ms: self.shared_open_until_ms,
                ..Circuit::default()
            };
        }
        let failures = self.failures.saturating_add(1);
        let open_until_ms = if failures >= FAILURES_TO_OPEN {
            now_ms + OPEN_FOR_MS
        } else {
            self.open_until_ms
        };
        Circuit {
            failures,
            open_until_ms,
            shared_open_until_ms: self.shared_open_until_ms,
        }
    }

    /// The state once the service said its circuit stays open `open_for_ms` more (0: closed).
    pub fn with_shared(self, open_for_ms: u64, now_ms: u64) -> Circuit {
        Circuit {
            shared_open_until_ms: if open_for_ms == 0 {
                0
            } else {
                now_ms.saturating_add(open_for_ms)
            },
            ..self
        }
    }

    pub fn encode(&self) -> String {
        format!(
            "{} {} {}",
            self.failures, self.open_until_ms, self.shared_open_until_ms
        )
    }

    pub fn decode(s: &[u8]) -> Circuit {
        let text = std::str::from_utf8(s).unwrap_or_default();
        let mut it = text.split(' ').map(|p| p.parse::<u64>().unwrap_or(0));
        Circuit {
            failures: it.next().unwrap_or(0) as u32,
            open_until_ms: it.next().unwrap_or(0),
            shared_open_until_ms: it.next().unwrap_or(0),
        }
    }
}

/// Whether a response tells anything about the deployment, from Envoy's
/// `response.code_details`. Answers of the upstream (`via_upstream`) and Envoy's own failures to
/// get one (`upstream_reset_before_response_started{…}`, `upstream_response_timeout`,
/// `no_healthy_upstream`, …) do. Local replies of the filters before the router do not: a tenant
/// over its own rate limit (`request_rate_limited`) must not open the provider's circuit for
/// every tenant. Unknown details (the property unreadable) count, as before.
pub fn is_provider_outcome(code_details: Option<&str>) -> bool {
    match code_details {
        None | Some("") => true,
        Some(d) => d == "via_upstream" || d.contains("upstream"),
    }
}

#[cfg(target_arch = "wasm32")]
fn key(deployment: &str) -> String {
    format!("llm-gateway.circuit.{deployment}")
}

#[cfg(target_arch = "wasm32")]
pub fn is_healthy(deployment: &str, now_ms: u64) -> bool {
    match proxy_wasm::hostcalls::get_shared_data(&key(deployment)) {
        Ok((Some(bytes), _)) => Circuit::decode(&bytes).healthy(now_ms),
        _ => true,
    }
}

/// Records a response; see [`update`].
#[cfg(target_arch = "wasm32")]
pub fn record(deployment: &str, status: u16, now_ms: u64) {
    update(deployment, |c| c.after(status, now_ms));
}

/// Records what the service said of the deployment's shared circuit; see [`update`].
#[cfg(target_arch = "wasm32")]
pub fn record_shared(deployment: &str, open_for_ms: u64, now_ms: u64) {
    update(deployment, |c| c.with_shared(open_for_ms, now_ms));
}

/// Changes a deployment's circuit in shared data; retries a few times on a compare-and-swap
/// conflict with another worker.
#[cfg(target_arch = "wasm32")]
fn update(deployment: &str, change: impl Fn(Circuit) -> Circuit) {
    let k = key(deployment);
    for _ in 0..4 {
        let (current, cas) = match proxy_wasm::hostcalls::get_shared_data(&k) {
            Ok((bytes, cas)) => (bytes.map(|b| Circuit::decode(&b)).unwrap_or_default(), cas),
            Err(_) => return,
        };
        let next = change(current);
        if next == current {
            return;
        }
        if proxy_wasm::hostcalls::set_shared_data(&k, Some(next.encode().as_bytes()), cas).is_ok() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_circuit_keeps_a_deployment_out_until_it_closes() {
        let c = Circuit::default().with_shared(5_000, 1_000);
        assert!(!c.healthy(1_000) && !c.healthy(5_999) && c.healthy(6_000));
        // This Envoy's own answers do not close the other gateways' circuit ...
        let after_ok = c.after(200, 2_000);
        assert!(!after_ok.healthy(2_000));
        assert_eq!(after_ok.shared_open_until_ms, 6_000);
        // ... the next poll does.
        assert!(after_ok.with_shared(0, 2_500).healthy(2_500));
        // Either circuit open keeps the deployment out.
        let local = (0..FAILURES_TO_OPEN).fold(Circuit::default(), |c, _| c.after(503, 100));
        assert!(!local.with_shared(0, 100).healthy(100));
    }

    #[test]
    fn outcomes_for_the_report() {
        assert_eq!(outcome(200, Some("via_upstream")), ProviderOutcome::Ok);
        assert_eq!(outcome(404, Some("via_upstream")), ProviderOutcome::Ok);
        assert_eq!(outcome(429, Some("via_upstream")), ProviderOutcome::Failed);
        assert_eq!(
            outcome(
                503,
                Some("upstream_reset_before_response_started{connection_failure}")
            ),
            ProviderOutcome::Failed
        );
        assert_eq!(
            outcome(429, Some("request_rate_limited")),
            ProviderOutcome::None
        );
        assert_eq!(outcome(0, None), ProviderOutcome::Failed);
    }

    #[test]
    fn only_provider_outcomes_count() {
        for d in [
            "via_upstream",
            "upstream_reset_before_response_started{connection_termination}",
            "upstream_response_timeout",
            "upstream_per_try_timeout",
            "no_healthy_upstream",
        ] {
            assert!(is_provider_outcome(Some(d)), "{d}");
        }
        for d in [
            "request_rate_limited",
            "rate_limiter_error",
            "direct_response",
            "request_payload_too_large",
        ] {
            assert!(!is_provider_outcome(Some(d)), "{d}");
        }
        assert!(is_provider_outcome(None));
    }

    #[test]
    fn opens_after_consecutive_failures_and_closes_after_the_cool_down() {
        let mut c = Circuit::default();
        for status in [500, 503] {
            c = c.after(status, 1000);
            assert!(c.healthy(1000));
        }
        c = c.after(429, 1000);
        assert!(!c.healthy(1000));
        assert!(c.healthy(1000 + OPEN_FOR_MS));
        assert_eq!(c.after(200, 2000), Circuit::default());
        assert_eq!(Circuit::decode(c.encode().as_bytes()), c);
        assert_eq!(
            Circuit::decode(b"2 7"),
            Circuit {
                failures: 2,
                open_until_ms: 7,
                shared_open_until_ms: 0
            },
            "a circuit written before the shared part existed"
        );
        assert_eq!(
            Circuit::default().after(0, 5).failures,
            1,
            "no response counts as a failure"
        );
    }
}
