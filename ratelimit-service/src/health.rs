//! Provider health shared by every gateway: one circuit per deployment, built from the provider
//! outcomes in the filters' usage reports and read back by every filter
//! (`llmgateway.usage.v1.UsageService/Health`). A filter acts on its own Envoy's failures at
//! once; through the service, the failures one gateway sees keep the deployment out of every
//! other gateway's choice too.
//!
//! The rule is the filter's local one (`wasm-filter/src/health.rs`): `failures_to_open`
//! provider failures in a row open the circuit for `open_for_ms`; any answer that is not a
//! failure closes it and starts the count again. The Redis script (`store/health.lua`) mirrors
//! [`Circuit::apply`].

use std::time::Duration;

use rls_proto::llmgateway::usage::v1::{ProviderOutcome, UsageReport};

/// Longest deployment name the service keeps a circuit for.
pub const MAX_DEPLOYMENT_LEN: usize = 256;
/// Most deployments one `Health` call may ask for.
pub const MAX_DEPLOYMENTS_PER_CALL: usize = 1000;

/// When circuits open, and for how long. The filter's local circuits use the same defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub failures_to_open: u32,
    pub open_for_ms: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            failures_to_open: 3,
            open_for_ms: 10_000,
        }
    }
}

impl Policy {
    /// How long a circuit is kept after its last outcome: failures further apart than this do
    /// not add up.
    pub fn keep_ms(&self) -> u64 {
        self.open_for_ms
            .max(Duration::from_secs(600).as_millis() as u64)
    }
}

/// A deployment's circuit as the store keeps it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Circuit {
    /// Provider failures in a row.
    pub failures: u32,
    /// Unix ms until which the circuit is open (the service's clock).
    pub open_until_ms: u64,
}

/// The outcomes of one deployment in one batch of reports, folded in order: only the last
/// answer that was not a failure, and the failures after it, decide the new state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcomes {
    /// An answer that is not a failure came in: the count starts again from it.
    pub reset: bool,
    /// Failures after the last such answer (or in all, without one).
    pub failures: u32,
}

impl Outcomes {
    pub fn push(&mut self, failed: bool) {
        if failed {
            self.failures = self.failures.saturating_add(1);
        } else {
            *self = Outcomes {
                reset: true,
                failures: 0,
            };
        }
    }
}

impl Circuit {
    /// The state after `outcomes` at `now_ms`, and whether they opened a closed circuit.
    pub fn apply(self, outcomes: Outcomes, now_ms: u64, policy: &Policy) -> (Circuit, bool) {
        let start = if outcomes.reset {
            Circuit::default()
        } else {
            self
        };
        let failures = start.failures.saturating_add(outcomes.failures);
        let open_until_ms = if outcomes.failures > 0 && failures >= policy.failures_to_open {
            now_ms.saturating_add(policy.open_for_ms)
        } else {
            start.open_until_ms
        };
        let next = Circuit {
            failures,
            open_until_ms,
        };
        let opened = !self.is_open(now_ms) && next.is_open(now_ms);
        (next, opened)
    }

    pub fn is_open(&self, now_ms: u64) -> bool {
        self.open_until_ms > now_ms
    }

    /// How much longer the circuit stays open; 0 when closed.
    pub fn open_for_ms(&self, now_ms: u64) -> u64 {
        self.open_until_ms.saturating_sub(now_ms)
    }

    /// `"<failures> <open until>"`, the value the Redis stores keep.
    pub fn encode(&self) -> String {
        format!("{} {}", self.failures, self.open_until_ms)
    }

    /// The inverse of [`Circuit::encode`]; `None` for anything else.
    pub fn decode(s: &str) -> Option<Circuit> {
        let (f, o) = s.split_once(' ')?;
        Some(Circuit {
            failures: f.parse().ok()?,
            open_until_ms: o.parse().ok()?,
        })
    }
}

/// The provider outcomes of `reports`, per deployment, in the order the deployments first
/// appear. Reports without a deployment or without a provider outcome say nothing.
pub fn outcomes<'a>(reports: impl IntoIterator<Item = &'a UsageReport>) -> Vec<(String, Outcomes)> {
    let mut out: Vec<(String, Outcomes)> = Vec::new();
    for r in reports {
        let failed = match r.provider_outcome() {
            ProviderOutcome::None => continue,
            ProviderOutcome::Ok => false,
            ProviderOutcome::Failed => true,
        };
        if r.deployment.is_empty() || r.deployment.len() > MAX_DEPLOYMENT_LEN {
            continue;
        }
        match out.iter_mut().find(|(d, _)| *d == r.deployment) {
            Some((_, o)) => o.push(failed),
            None => {
                let mut o = Outcomes::default();
                o.push(failed);
                out.push((r.deployment.clone(), o));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn report(deployment: &str, outcome: ProviderOutcome) -> UsageReport {
        UsageReport {
            deployment: deployment.into(),
            provider_outcome: outcome as i32,
            ..Default::default()
        }
    }

    #[test]
    fn failures_in_a_row_open_and_an_answer_closes() {
        let p = Policy::default();
        let fail = Outcomes {
            reset: false,
            failures: 1,
        };
        let (c, opened) = Circuit::default().apply(fail, 1_000, &p);
        assert!(!opened && !c.is_open(1_000));
        let (c, _) = c.apply(fail, 1_100, &p);
        let (c, opened) = c.apply(fail, 1_200, &p);
        assert!(opened && c.is_open(1_200));
        assert_eq!(c.open_for_ms(1_200), p.open_for_ms);
        assert_eq!(c.open_for_ms(1_200 + p.open_for_ms), 0);
        // Another failure while open extends it, but did not open it.
        let (c2, opened) = c.apply(fail, 2_000, &p);
        assert!(!opened && c2.open_until_ms == 2_000 + p.open_for_ms);
        // An answer that is not a failure closes it, even mid-batch.
        let ok_then_fail = Outcomes {
            reset: true,
            failures: 1,
        };
        let (c3, _) = c2.apply(ok_then_fail, 2_100, &p);
        assert_eq!(
            c3,
            Circuit {
                failures: 1,
                open_until_ms: 0
            }
        );
        assert_eq!(Circuit::decode(&c2.encode()), Some(c2));
        assert_eq!(Circuit::decode("x 1"), None);
    }

    #[test]
    fn a_batch_folds_per_deployment_in_order() {
        use ProviderOutcome::{Failed, None as Local, Ok};
        let reports = [
            report("a", Failed),
            report("b", Failed),
            report("a", Ok),
            report("a", Failed),
            report("a", Failed),
            report("b", Local),
            report("", Failed),
            report(&"x".repeat(MAX_DEPLOYMENT_LEN + 1), Failed),
        ];
        let out = outcomes(&reports);
        assert_eq!(
            out,
            [
                (
                    "a".to_string(),
                    Outcomes {
                        reset: true,
                        failures: 2
                    }
                ),
                (
                    "b".to_string(),
                    Outcomes {
                        reset: false,
                        failures: 1
                    }
                ),
            ]
        );
    }
}
