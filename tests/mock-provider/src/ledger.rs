//! The usage ledger behind `/_mock/usage`: what the mock charged for its 2xx model answers, so
//! a test can compare the gateway's token counters with the provider's bill exactly.

use std::collections::BTreeMap;

use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{Value, json};

/// One model's share of the bill.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ModelUsage {
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Totals {
    requests: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    streams_cut: u64,
    by_model: BTreeMap<String, ModelUsage>,
}

/// A single mutex over everything: one charge touches several counters and a map entry, and a
/// snapshot must never see half of a charge (separate atomics could not promise that).
#[derive(Debug, Default)]
pub struct Ledger(Mutex<Totals>);

impl Ledger {
    /// Adds one answered request; `cut`: a stream that ended before its final event.
    pub fn charge(&self, model: &str, prompt: u64, completion: u64, cut: bool) {
        let mut t = self.0.lock();
        t.requests += 1;
        t.prompt_tokens = t.prompt_tokens.saturating_add(prompt);
        t.completion_tokens = t.completion_tokens.saturating_add(completion);
        t.streams_cut += u64::from(cut);
        let m = t.by_model.entry(model.to_owned()).or_default();
        m.requests += 1;
        m.prompt_tokens = m.prompt_tokens.saturating_add(prompt);
        m.completion_tokens = m.completion_tokens.saturating_add(completion);
    }

    /// Charges a complete JSON answer exactly what its `usage` says (OpenAI's
    /// `prompt_tokens`/`completion_tokens` or Anthropic's `input_tokens`/`output_tokens`; a
    /// missing field, as in embeddings' completion, is 0) under the `model` it reports.
    pub fn charge_answer(&self, answer: &Value) {
        let usage = &answer["usage"];
        let field = |openai: &str, anthropic: &str| {
            usage[openai]
                .as_u64()
                .or_else(|| usage[anthropic].as_u64())
                .unwrap_or(0)
        };
        self.charge(
            answer["model"].as_str().unwrap_or_default(),
            field("prompt_tokens", "input_tokens"),
            field("completion_tokens", "output_tokens"),
            false,
        );
    }

    /// The body of `GET /_mock/usage`.
    pub fn snapshot(&self) -> Value {
        let t = self.0.lock();
        json!({
            "requests": t.requests,
            "prompt_tokens": t.prompt_tokens,
            "completion_tokens": t.completion_tokens,
            "total_tokens": t.prompt_tokens.saturating_add(t.completion_tokens),
            "streams_cut": t.streams_cut,
            "by_model": t.by_model,
        })
    }

    pub fn clear(&self) {
        *self.0.lock() = Totals::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_per_model_and_in_total() {
        let l = Ledger::default();
        l.charge("gpt-4o", 14, 5, false);
        l.charge("gpt-4o", 5, 3, true);
        l.charge("claude-x", 7, 4, false);
        assert_eq!(
            l.snapshot(),
            json!({
                "requests": 3, "prompt_tokens": 26, "completion_tokens": 12, "total_tokens": 38,
                "streams_cut": 1,
                "by_model": {
                    "claude-x": {"requests": 1, "prompt_tokens": 7, "completion_tokens": 4},
                    "gpt-4o": {"requests": 2, "prompt_tokens": 19, "completion_tokens": 8},
                }
            })
        );
        l.clear();
        assert_eq!(
            l.snapshot(),
            json!({"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0,
                   "streams_cut": 0, "by_model": {}})
        );
    }

    #[test]
    fn charges_what_each_answer_shape_reports() {
        let l = Ledger::default();
        l.charge_answer(&json!({"model": "m", "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}));
        l.charge_answer(&json!({"model": "e", "usage": {"prompt_tokens": 4, "total_tokens": 4}}));
        l.charge_answer(&json!({"model": "c", "usage": {"input_tokens": 6, "cache_read_input_tokens": 0, "output_tokens": 1}}));
        let s = l.snapshot();
        assert_eq!(
            (&s["requests"], &s["prompt_tokens"], &s["completion_tokens"]),
            (&json!(3), &json!(13), &json!(3))
        );
        assert_eq!(s["by_model"]["e"]["completion_tokens"], 0);
        assert_eq!(s["by_model"]["c"]["prompt_tokens"], 6);
        assert_eq!(s["streams_cut"], 0);
    }

    #[test]
    fn exact_under_concurrency() {
        let l = Ledger::default();
        std::thread::scope(|s| {
            for t in 0..8u64 {
                let l = &l;
                s.spawn(move || {
                    for _ in 0..1000 {
                        l.charge(if t % 2 == 0 { "a" } else { "b" }, 2, 1, t == 0);
                    }
                });
            }
        });
        let s = l.snapshot();
        assert_eq!(s["requests"], 8000);
        assert_eq!(s["prompt_tokens"], 16000);
        assert_eq!(s["completion_tokens"], 8000);
        assert_eq!(s["total_tokens"], 24000);
        assert_eq!(s["streams_cut"], 1000);
        assert_eq!(s["by_model"]["a"]["requests"], 4000);
        assert_eq!(s["by_model"]["b"]["prompt_tokens"], 8000);
    }
}
