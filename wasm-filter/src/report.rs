//! What a request really used, and getting that to ratelimit-service exactly once in effect.
//!
//! At admission the rate-limit filter charged the estimate (tokens, spend) into the reserved
//! descriptors' counters. When the response ends, [`settle`] decides the real usage, [`report`]
//! turns it into an `llmgateway.usage.v1.UsageReport` (one correction per reserved descriptor,
//! built exactly as Envoy built the descriptor), and the [`Outbox`] batches reports and retries
//! a failed batch a bounded number of times. The service applies each request id once, so a
//! batch retried after a lost answer counts once; a batch that runs out of attempts is dropped
//! and counted.

use std::collections::{HashMap, VecDeque};

use rls_proto::llmgateway::usage::v1::{Correction, Entry, ProviderOutcome, UsageReport};

use crate::config::{Accounting, Amount, Price};
use crate::meter::Meter;

/// Where the real token counts of a finished request come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The provider's `usage`.
    Provider,
    /// A stream that ended before its usage: the prompt as estimated (or as the stream announced
    /// it) and the streamed text counted.
    Counted,
    /// Nothing is known (no response, or a JSON body cut short): the reservation stands.
    Estimate,
    /// The provider (or Envoy on its behalf) answered an error: nothing was used.
    Error,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Provider => "provider",
            Source::Counted => "counted",
            Source::Estimate => "estimate",
            Source::Error => "error",
        }
    }
}

/// Tokens a request used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Used {
    pub prompt: u64,
    pub completion: u64,
    pub source: Source,
}

/// The real usage of a reserved request whose response ended with `status` (0: none arrived).
/// `estimate` is what was reserved: (prompt, completion).
pub fn settle(status: u32, meter: Option<&Meter>, stream: bool, estimate: (u64, u64)) -> Used {
    let (prompt, completion) = estimate;
    let used = |prompt, completion, source| Used {
        prompt,
        completion,
        source,
    };
    if status == 0 {
        return used(prompt, completion, Source::Estimate);
    }
    if !(200..300).contains(&status) {
        return used(0, 0, Source::Error);
    }
    match meter {
        Some(m) => match m.reported() {
            Some(u) => used(u.prompt, u.completion, Source::Provider),
            None if stream => used(
                m.announced_prompt().unwrap_or(prompt),
                m.streamed_completion(),
                Source::Counted,
            ),
            None => used(prompt, completion, Source::Estimate),
        },
        None => used(prompt, completion, Source::Estimate),
    }
}

/// Who and what a request was, for the report's descriptors and labels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subject {
    pub tenant: String,
    pub tier: String,
    /// The model the client asked for, if configured (never a client's arbitrary string).
    pub model: String,
    pub deployment: String,
}

impl Subject {
    /// The value of a descriptor template: a placeholder or literal text.
    fn fill<'a>(&'a self, template: &'a str) -> &'a str {
        match template {
            "{tenant}" => &self.tenant,
            "{tier}" => &self.tier,
            "{model}" => &self.model,
            "{deployment}" => &self.deployment,
            literal => literal,
        }
    }
}

/// What was reserved for a request and when (`x-llm-reserved-at`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reserved {
    pub at_ms: u64,
    pub tokens: u64,
    pub cost_micros: u64,
}

/// Everything the report of one finished request says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Finished {
    pub request_id: String,
    pub subject: Subject,
    pub status: u32,
    pub stream: bool,
    pub duration_ms: u64,
    pub first_byte_ms: u64,
    /// The reservation's estimate, 0 for requests that never reached admission.
    pub estimated_tokens: u64,
    pub estimated_cost_micros: u64,
    /// What the response says about the deployment (`health::outcome`).
    pub provider_outcome: ProviderOutcome,
}

/// The report of a finished request. `reserved`: what admission charged (`None`: nothing was,
/// e.g. refused before, rate limited, or the service failed open), so no corrections.
pub fn report(
    accounting: &Accounting,
    f: &Finished,
    reserved: Option<Reserved>,
    used: Option<Used>,
    price: Option<&Price>,
) -> UsageReport {
    let (prompt, completion, source) =
        used.map_or((0, 0, ""), |u| (u.prompt, u.completion, u.source.name()));
    let cost = price.map_or(0, |p| p.micros(prompt, completion));
    let mut corrections = Vec::new();
    if let Some(r) = reserved {
        for res in &accounting.reservations {
            let entries: Vec<Entry> = res
                .descriptor
                .iter()
                .map(|(k, v)| Entry {
                    key: k.clone(),
                    value: f.subject.fill(v).to_string(),
                })
                .collect();
            // Envoy leaves out a descriptor whose header is absent (a key without a tier).
            if entries.iter().any(|e| e.value.is_empty()) {
                continue;
            }
            let (reserved, actual) = match res.amount {
                Amount::Tokens => (r.tokens, prompt + completion),
                Amount::Cost => (r.cost_micros, cost),
            };
            corrections.push(Correction {
                entries,
                reserved,
                actual,
            });
        }
    }
    UsageReport {
        request_id: f.request_id.clone(),
        domain: accounting.domain.clone(),
        reserved_at_ms: reserved.map_or(0, |r| r.at_ms),
        corrections,
        tenant: f.subject.tenant.clone(),
        model: f.subject.model.clone(),
        deployment: f.subject.deployment.clone(),
        status: f.status,
        stream: f.stream,
        estimated_tokens: f.estimated_tokens,
        prompt_tokens: prompt,
        completion_tokens: completion,
        usage_source: source.to_string(),
        estimated_cost_micros: f.estimated_cost_micros,
        cost_micros: cost,
        duration_ms: f.duration_ms,
        first_token_ms: f.first_byte_ms,
        reserved: reserved.is_some(),
        provider_outcome: f.provider_outcome as i32,
    }
}

/// A batch on its way, or waiting to be retried.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub reports: Vec<UsageReport>,
    /// Attempts made so far.
    pub attempts: u32,
    /// Not sent again before this (Unix ms).
    pub not_before_ms: u64,
}

/// Reports waiting to be sent, batches in flight and batches to retry. One per Envoy worker
/// (a VM is single-threaded); the shell sends [`Outbox::next`] on a timer.
#[derive(Debug, Default)]
pub struct Outbox {
    queue: VecDeque<UsageReport>,
    retry: VecDeque<Batch>,
    in_flight: HashMap<u32, Batch>,
    /// Reports given up on since the shell last asked ([`Outbox::take_dropped`]).
    dropped: u64,
}

/// Reports one call carries at most.
pub const MAX_BATCH: usize = 256;
/// Reports an Envoy worker holds at most while the service is unreachable; older ones are
/// dropped (and counted) first.
pub const MAX_QUEUED: usize = 20_000;
/// First retry delay; doubled per attempt up to [`RETRY_MAX_MS`].
pub const RETRY_BASE_MS: u64 = 250;
pub const RETRY_MAX_MS: u64 = 8_000;

impl Outbox {
    pub fn push(&mut self, report: UsageReport) {
        if self.queue.len() >= MAX_QUEUED {
            self.queue.pop_front();
            self.dropped += 1;
        }
        self.queue.push_back(report);
    }

    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.retry.is_empty() && self.in_flight.is_empty()
    }

    /// The next batch to send at `now_ms`: a retry that is due, else new reports.
    pub fn next(&mut self, now_ms: u64) -> Option<Batch> {
        if self
            .retry
            .front()
            .is_some_and(|b| b.not_before_ms <= now_ms)
        {
            return self.retry.pop_front();
        }
        if self.queue.is_empty() {
            return None;
        }
        let n = self.queue.len().min(MAX_BATCH);
        Some(Batch {
            reports: self.queue.drain(..n).collect(),
            attempts: 0,
            not_before_ms: 0,
        })
    }

    /// `batch` was sent as call `token`.
    pub fn sent(&mut self, token: u32, mut batch: Batch) {
        batch.attempts += 1;
        self.in_flight.insert(token, batch);
    }

    /// `batch` could not even be sent (no such cluster, ...): counts as a failed attempt.
    pub fn not_sent(&mut self, mut batch: Batch, now_ms: u64, max_attempts: u32) {
        batch.attempts += 1;
        self.retry_or_drop(batch, now_ms, max_attempts);
    }

    /// The answer to call `token`: `ok` when the service took the batch.
    pub fn answered(&mut self, token: u32, ok: bool, now_ms: u64, max_attempts: u32) {
        if let Some(batch) = self.in_flight.remove(&token)
            && !ok
        {
            self.retry_or_drop(batch, now_ms, max_attempts);
        }
    }

    fn retry_or_drop(&mut self, mut batch: Batch, now_ms: u64, max_attempts: u32) {
        if batch.attempts >= max_attempts {
            self.dropped += batch.reports.len() as u64;
            return;
        }
        let shift = batch.attempts.saturating_sub(1).min(10);
        batch.not_before_ms = now_ms + (RETRY_BASE_MS << shift).min(RETRY_MAX_MS);
        self.retry.push_back(batch);
    }

    /// Reports dropped since the last call.
    pub fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::meter::Format;

    fn accounting() -> Accounting {
        crate::config::Config::parse(
            br#"
accounting:
  cluster: ratelimit
  domain: llm
  reservations:
    - {descriptor: ["tenant={tenant}", "kind=tokens"], amount: tokens}
    - {descriptor: ["tenant={tenant}", "model={model}", "kind=tokens"], amount: tokens}
    - {descriptor: ["tier={tier}", "kind=tokens"], amount: tokens}
    - {descriptor: ["tenant={tenant}", "kind=budget"], amount: cost}
"#,
        )
        .unwrap()
        .accounting
        .unwrap()
    }

    fn words(s: &str) -> u64 {
        s.split_whitespace().count() as u64
    }

    #[test]
    fn settling_prefers_the_providers_usage_then_counts_cut_streams() {
        assert_eq!(settle(0, None, false, (10, 100)).source, Source::Estimate);
        let err = settle(503, None, true, (10, 100));
        assert_eq!(
            (err.prompt, err.completion, err.source),
            (0, 0, Source::Error)
        );

        let mut m = Meter::new(Format::Json);
        m.push(
            br#"{"usage":{"prompt_tokens":12,"completion_tokens":3}}"#,
            &words,
        );
        let u = settle(200, Some(&m), false, (10, 100));
        assert_eq!(
            (u.prompt, u.completion, u.source),
            (12, 3, Source::Provider)
        );

        let mut cut = Meter::new(Format::OpenAiSse { hide_usage: false });
        cut.push(
            b"data: {\"choices\":[{\"delta\":{\"content\":\"one two three\"}}]}\n\n",
            &words,
        );
        let u = settle(200, Some(&cut), true, (10, 100));
        assert_eq!((u.prompt, u.completion, u.source), (10, 3, Source::Counted));

        // A JSON body cut short: the reservation stands.
        let half = Meter::new(Format::Json);
        let u = settle(200, Some(&half), false, (10, 100));
        assert_eq!(
            (u.prompt, u.completion, u.source),
            (10, 100, Source::Estimate)
        );
    }

    #[test]
    fn a_report_corrects_every_reserved_descriptor_as_envoy_built_it() {
        let f = Finished {
            request_id: "abc-1".into(),
            subject: Subject {
                tenant: "acme".into(),
                tier: String::new(),
                model: "gpt-4o-mini".into(),
                deployment: "openai-a".into(),
            },
            status: 200,
            estimated_tokens: 1000,
            provider_outcome: ProviderOutcome::Ok,
            ..Default::default()
        };
        let price = Price {
            prompt: 0.15,
            completion: 0.6,
        };
        let used = Used {
            prompt: 60,
            completion: 40,
            source: Source::Provider,
        };
        let reserved = Reserved {
            at_ms: 123,
            tokens: 1000,
            cost_micros: 500,
        };
        let r = report(&accounting(), &f, Some(reserved), Some(used), Some(&price));
        assert_eq!(r.reserved_at_ms, 123);
        assert_eq!(r.cost_micros, 33); // 60 * 0.15 + 40 * 0.6
        assert_eq!(r.provider_outcome(), ProviderOutcome::Ok);
        // The tier descriptor is left out, as Envoy leaves it out for a key without a tier.
        type Shape<'a> = (Vec<(&'a str, &'a str)>, u64, u64);
        let shapes: Vec<Shape<'_>> = r
            .corrections
            .iter()
            .map(|c| {
                (
                    c.entries
                        .iter()
                        .map(|e| (e.key.as_str(), e.value.as_str()))
                        .collect(),
                    c.reserved,
                    c.actual,
                )
            })
            .collect();
        assert_eq!(
            shapes,
            vec![
                (vec![("tenant", "acme"), ("kind", "tokens")], 1000, 100),
                (
                    vec![
                        ("tenant", "acme"),
                        ("model", "gpt-4o-mini"),
                        ("kind", "tokens")
                    ],
                    1000,
                    100
                ),
                (vec![("tenant", "acme"), ("kind", "budget")], 500, 33),
            ]
        );
        let unreserved = report(&accounting(), &f, None, None, None);
        assert!(unreserved.corrections.is_empty() && !unreserved.reserved);
    }

    fn report_n(n: usize) -> UsageReport {
        UsageReport {
            request_id: format!("r{n}"),
            ..Default::default()
        }
    }

    #[test]
    fn outbox_batches_retries_with_backoff_and_drops_after_the_last_attempt() {
        let mut o = Outbox::default();
        for i in 0..(MAX_BATCH + 5) {
            o.push(report_n(i));
        }
        let first = o.next(0).unwrap();
        assert_eq!(first.reports.len(), MAX_BATCH);
        o.sent(1, first);
        let second = o.next(0).unwrap();
        assert_eq!(second.reports.len(), 5);
        o.sent(2, second);
        assert!(o.next(0).is_none());

        const B: u64 = RETRY_BASE_MS;
        o.answered(2, true, 0, 3);
        o.answered(1, false, 10_000, 3);
        assert!(o.next(10_000 + B - 1).is_none(), "the retry waits {B} ms");
        let retry = o.next(10_000 + B).unwrap();
        assert_eq!((retry.attempts, retry.reports.len()), (1, MAX_BATCH));
        o.sent(3, retry);
        o.answered(3, false, 20_000, 3);
        assert!(o.next(20_000 + 2 * B - 1).is_none(), "then twice as long");
        let retry = o.next(20_000 + 2 * B).unwrap();
        o.sent(4, retry);
        o.answered(4, false, 30_000, 3);
        assert_eq!(o.take_dropped(), MAX_BATCH as u64);
        assert_eq!(o.take_dropped(), 0);
        assert!(o.is_idle());
    }

    #[test]
    fn a_full_outbox_drops_the_oldest() {
        let mut o = Outbox::default();
        for i in 0..(MAX_QUEUED + 2) {
            o.push(report_n(i));
        }
        assert_eq!(o.take_dropped(), 2);
        assert_eq!(o.next(0).unwrap().reports[0].request_id, "r2");
    }
}
