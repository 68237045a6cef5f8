//! Local provider health: a small circuit per deployment in the VM's shared data, so every
//! worker of this Envoy agrees. Consecutive failures (5xx, 429, no response) open the circuit;
//! it closes after a cool-down, when the next request probes the deployment again.

/// Failures in a row that open the circuit.
pub const FAILURES_TO_OPEN: u32 = 3;
/// How long an open circuit keeps a deployment out.
pub const OPEN_FOR_MS: u64 = 10_000;

/// A deployment's circuit state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Circuit {
    pub failures: u32,
    pub open_until_ms: u64,
}

impl Circuit {
    pub fn healthy(&self, now_ms: u64) -> bool {
        self.open_until_ms <= now_ms
    }

    /// The state after one more response with `status` (0: no response at all).
    pub fn after(self, status: u16, now_ms: u64) -> Circuit {
        let failed = status == 0 || status == 429 || status >= 500;
        if !failed {
            return Circuit::default();
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
        }
    }

    pub fn encode(&self) -> String {
        format!("{} {}", self.failures, self.open_until_ms)
    }

    pub fn decode(s: &[u8]) -> Circuit {
        let text = std::str::from_utf8(s).unwrap_or_default();
        let mut it = text.split(' ').map(|p| p.parse::<u64>().unwrap_or(0));
        Circuit {
            failures: it.next().unwrap_or(0) as u32,
            open_until_ms: it.next().unwrap_or(0),
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

/// Records a response; retries a few times on a compare-and-swap conflict with another worker.
#[cfg(target_arch = "wasm32")]
pub fn record(deployment: &str, status: u16, now_ms: u64) {
    let k = key(deployment);
    for _ in 0..4 {
        let (current, cas) = match proxy_wasm::hostcalls::get_shared_data(&k) {
            Ok((bytes, cas)) => (bytes.map(|b| Circuit::decode(&b)).unwrap_or_default(), cas),
            Err(_) => return,
        };
        let next = current.after(status, now_ms);
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
            Circuit::default().after(0, 5).failures,
            1,
            "no response counts as a failure"
        );
    }
}
