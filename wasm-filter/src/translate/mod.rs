//! OpenAI Chat Completions ↔ Anthropic Messages translation, both directions: request bodies,
//! non-streaming response bodies, error bodies and SSE streams.
//!
//! Everything here is pure: JSON values and bytes in, JSON values and bytes out, no clock and no
//! I/O, so the proxy-wasm shell decides *when* to call it and the tests decide *what* it sees.
//!
//! | client calls | deployment speaks | request | response |
//! | --- | --- | --- | --- |
//! | `/v1/chat/completions` | Anthropic | [`openai_to_anthropic_request`] | [`anthropic_to_openai_response`], [`anthropic_error_to_openai`], [`AnthropicToOpenAiStream`] |
//! | `/v1/messages` | OpenAI | [`anthropic_to_openai_request`] | [`openai_to_anthropic_response`], [`openai_error_to_anthropic`], [`OpenAiToAnthropicStream`] |
//!
//! Request translation refuses (with a [`TranslateError`] fit for a 400) what the other API
//! cannot express without changing the answer (`n > 1`, `logprobs`, structured output, server
//! tools, …) and silently drops what only tunes it (`presence_penalty`, `seed`, `top_k`, …).
//! Response translation never fails: a body the upstream sent is always turned into *something*
//! the client's SDK accepts.
//!
//! [`SseSplitter`] is the reusable server-sent-events framer under both stream translators.

mod request;
mod response;
mod sse;
mod stream;

pub use request::{anthropic_to_openai_request, openai_to_anthropic_request};
pub use response::{
    anthropic_error_to_openai, anthropic_to_openai_response, openai_error_to_anthropic,
    openai_to_anthropic_response,
};
pub use sse::{DEFAULT_MAX_EVENT_BYTES, Event, SseSplitter};
pub use stream::{AnthropicToOpenAiStream, OpenAiToAnthropicStream};

use serde_json::{Value, json};

/// Token usage as a provider reported it, in the client-neutral terms accounting needs.
/// `prompt` counts every input token, cached or not (Anthropic's `input_tokens` plus its
/// `cache_*_input_tokens`; OpenAI's `prompt_tokens`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt: u64,
    pub completion: u64,
}

/// Why a request cannot be translated. The `Display` text is written for the client: the shell
/// answers it as a 400 (see [`TranslateError::openai_body`] / [`TranslateError::anthropic_body`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// The body is JSON but not an object.
    #[error("The request body must be a JSON object.")]
    NotAnObject,
    /// A required field is absent or null.
    #[error("Missing required parameter: '{0}'.")]
    Missing(String),
    /// A field has the wrong type or an impossible value.
    #[error("Invalid '{field}': {reason}")]
    Invalid { field: String, reason: String },
    /// A feature the deployment's API cannot provide without changing what the request means.
    #[error("'{field}' is not supported for this model: {reason}")]
    Unsupported { field: String, reason: String },
}

// === impl TranslateError ===

impl TranslateError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn unsupported(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Unsupported {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The offending field, as a path into the client's body (`messages[2].content[0].type`).
    pub fn param(&self) -> Option<&str> {
        match self {
            Self::NotAnObject => None,
            Self::Missing(field)
            | Self::Invalid { field, .. }
            | Self::Unsupported { field, .. } => Some(field),
        }
    }

    /// OpenAI's error `code` for this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotAnObject | Self::Invalid { .. } => "invalid_value",
            Self::Missing(_) => "missing_required_parameter",
            Self::Unsupported { .. } => "unsupported_parameter",
        }
    }

    /// The 400 body for a `/v1/chat/completions` client: `{"error":{"message","type","param","code"}}`.
    pub fn openai_body(&self) -> Value {
        json!({"error": {
            "message": self.to_string(),
            "type": "invalid_request_error",
            "param": self.param(),
            "code": self.code(),
        }})
    }

    /// The 400 body for a `/v1/messages` client: `{"type":"error","error":{"type","message"}}`.
    pub fn anthropic_body(&self) -> Value {
        json!({"type": "error", "error": {"type": "invalid_request_error", "message": self.to_string()}})
    }
}

// === stop reasons, shared by responses and streams ===

/// Anthropic `stop_reason` → OpenAI `finish_reason`.
pub(crate) fn finish_reason_from_anthropic(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        // end_turn, stop_sequence, pause_turn and anything newer.
        _ => "stop",
    }
}

/// OpenAI `finish_reason` → Anthropic `stop_reason`.
pub(crate) fn stop_reason_from_openai(finish_reason: &str) -> &'static str {
    match finish_reason {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        // OpenAI does not say whether a stop sequence matched, so `stop` is always end_turn.
        _ => "end_turn",
    }
}

/// Anthropic's usage object, the four counters we read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct AnthropicUsage {
    pub input: u64,
    pub cache_creation: u64,
    pub cache_read: u64,
    pub output: u64,
}

impl AnthropicUsage {
    /// Reads the fields present in `u`, keeping `self`'s value for absent ones (a stream's
    /// `message_delta` repeats only some of them).
    pub(crate) fn update(&mut self, u: &Value) {
        let field = |k: &str| u.get(k).and_then(Value::as_u64);
        if let Some(v) = field("input_tokens") {
            self.input = v;
        }
        if let Some(v) = field("cache_creation_input_tokens") {
            self.cache_creation = v;
        }
        if let Some(v) = field("cache_read_input_tokens") {
            self.cache_read = v;
        }
        if let Some(v) = field("output_tokens") {
            self.output = v;
        }
    }

    pub(crate) fn usage(&self) -> Usage {
        Usage {
            prompt: self.input + self.cache_creation + self.cache_read,
            completion: self.output,
        }
    }

    /// The OpenAI `usage` object.
    pub(crate) fn to_openai(self) -> Value {
        let u = self.usage();
        json!({
            "prompt_tokens": u.prompt,
            "completion_tokens": u.completion,
            "total_tokens": u.prompt + u.completion,
            "prompt_tokens_details": {"cached_tokens": self.cache_read},
        })
    }
}

/// OpenAI's usage object, the counters we read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct OpenAiUsage {
    pub prompt: u64,
    pub completion: u64,
    pub cached: u64,
}

impl OpenAiUsage {
    pub(crate) fn from_value(u: &Value) -> Option<Self> {
        let o = u.as_object()?;
        let prompt = o.get("prompt_tokens").and_then(Value::as_u64).unwrap_or(0);
        let completion = o
            .get("completion_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let cached = o
            .get("prompt_tokens_details")
            .and_then(|d| d.get("cached_tokens"))
            .and_then(Value::as_u64)
            .unwrap_or(0)
            .min(prompt);
        Some(Self {
            prompt,
            completion,
            cached,
        })
    }

    pub(crate) fn usage(&self) -> Usage {
        Usage {
            prompt: self.prompt,
            completion: self.completion,
        }
    }

    /// The Anthropic `usage` object: cached prompt tokens become `cache_read_input_tokens`, the
    /// rest `input_tokens`, so the two still add up to the prompt.
    pub(crate) fn to_anthropic(self) -> Value {
        json!({
            "input_tokens": self.prompt - self.cached,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": self.cached,
            "output_tokens": self.completion,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies() {
        let e = TranslateError::unsupported("n", "only one choice can be generated.");
        assert_eq!(
            e.to_string(),
            "'n' is not supported for this model: only one choice can be generated."
        );
        let b = e.openai_body();
        assert_eq!(b["error"]["param"], "n");
        assert_eq!(b["error"]["code"], "unsupported_parameter");
        assert_eq!(b["error"]["type"], "invalid_request_error");
        let a = TranslateError::Missing("messages".into()).anthropic_body();
        assert_eq!(a["type"], "error");
        assert_eq!(a["error"]["type"], "invalid_request_error");
        assert_eq!(
            a["error"]["message"],
            "Missing required parameter: 'messages'."
        );
        assert_eq!(TranslateError::NotAnObject.param(), None);
    }

    #[test]
    fn usage_conversions() {
        let mut a = AnthropicUsage::default();
        a.update(&json!({"input_tokens": 10, "cache_read_input_tokens": 90, "cache_creation_input_tokens": 5, "output_tokens": 1}));
        a.update(&json!({"output_tokens": 7}));
        assert_eq!(
            a.usage(),
            Usage {
                prompt: 105,
                completion: 7
            }
        );
        assert_eq!(
            a.to_openai(),
            json!({"prompt_tokens": 105, "completion_tokens": 7, "total_tokens": 112, "prompt_tokens_details": {"cached_tokens": 90}})
        );
        let o = OpenAiUsage::from_value(
            &json!({"prompt_tokens": 100, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 64}}),
        );
        assert_eq!(
            o.map(OpenAiUsage::to_anthropic),
            Some(
                json!({"input_tokens": 36, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 64, "output_tokens": 3})
            )
        );
        assert_eq!(OpenAiUsage::from_value(&Value::Null), None);
    }
}
