//! Non-streaming response bodies and error bodies, both directions. These never fail: whatever
//! the upstream sent becomes a body of the client's shape (missing fields take neutral values).

use serde_json::{Map, Value, json};

use super::{AnthropicUsage, OpenAiUsage, finish_reason_from_anthropic, stop_reason_from_openai};

/// An Anthropic `message` → an OpenAI `chat.completion`.
///
/// Text blocks are concatenated into `message.content` (null when the answer is only tool
/// calls), `tool_use` blocks become `tool_calls` (their `input` serialised as `arguments`),
/// `thinking` blocks are dropped. `stop_reason` → `finish_reason` (end_turn, stop_sequence,
/// pause_turn → stop; max_tokens → length; tool_use → tool_calls; refusal → content_filter).
/// Usage: `prompt_tokens` = input + cache creation + cache read tokens, `cached_tokens` = cache
/// read tokens. `id` is the upstream's; `created` is the caller's clock (Unix seconds).
pub fn anthropic_to_openai_response(body: &Value, client_model: &str, created: u64) -> Value {
    let mut text = String::new();
    let mut calls = Vec::new();
    for b in body
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => {
                let arguments = b
                    .get("input")
                    .map_or_else(|| "{}".to_owned(), Value::to_string);
                calls.push(json!({
                    "id": b.get("id").and_then(Value::as_str).unwrap_or(""),
                    "type": "function",
                    "function": {"name": b.get("name").and_then(Value::as_str).unwrap_or(""), "arguments": arguments},
                }));
            }
            _ => {}
        }
    }
    let mut message = Map::new();
    message.insert("role".into(), json!("assistant"));
    message.insert(
        "content".into(),
        if text.is_empty() && !calls.is_empty() {
            Value::Null
        } else {
            Value::String(text)
        },
    );
    message.insert("refusal".into(), Value::Null);
    if !calls.is_empty() {
        message.insert("tool_calls".into(), Value::Array(calls));
    }
    let finish = body
        .get("stop_reason")
        .and_then(Value::as_str)
        .map_or("stop", finish_reason_from_anthropic);
    let mut usage = AnthropicUsage::default();
    if let Some(u) = body.get("usage") {
        usage.update(u);
    }
    json!({
        "id": body.get("id").and_then(Value::as_str).unwrap_or("chatcmpl-translated"),
        "object": "chat.completion",
        "created": created,
        "model": client_model,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
        "usage": usage.to_openai(),
    })
}

/// An OpenAI `chat.completion` → an Anthropic `message`.
///
/// `choices[0].message`: `content` (and a `refusal`) → a text block, `tool_calls` → `tool_use`
/// blocks (`arguments` parsed; arguments that are not a JSON object become `{}`).
/// `finish_reason` → `stop_reason` (stop → end_turn, length → max_tokens, tool_calls →
/// tool_use, content_filter → refusal). Usage: cached prompt tokens → `cache_read_input_tokens`,
/// the rest → `input_tokens`. `id` is the upstream's.
pub fn openai_to_anthropic_response(body: &Value, client_model: &str) -> Value {
    let choice = body
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first());
    let message = choice.and_then(|c| c.get("message"));
    let mut content = Vec::new();
    for key in ["content", "refusal"] {
        if let Some(t) = message
            .and_then(|m| m.get(key))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            content.push(json!({"type": "text", "text": t}));
        }
    }
    for c in message
        .and_then(|m| m.get("tool_calls"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let f = c.get("function");
        let input = f
            .and_then(|f| f.get("arguments"))
            .and_then(Value::as_str)
            .and_then(|a| serde_json::from_str::<Value>(a).ok())
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({}));
        content.push(json!({
            "type": "tool_use",
            "id": c.get("id").and_then(Value::as_str).unwrap_or(""),
            "name": f.and_then(|f| f.get("name")).and_then(Value::as_str).unwrap_or(""),
            "input": input,
        }));
    }
    let stop = choice
        .and_then(|c| c.get("finish_reason"))
        .and_then(Value::as_str)
        .map_or("end_turn", stop_reason_from_openai);
    let usage = body
        .get("usage")
        .and_then(OpenAiUsage::from_value)
        .unwrap_or_default();
    json!({
        "id": body.get("id").and_then(Value::as_str).unwrap_or("msg_translated"),
        "type": "message",
        "role": "assistant",
        "model": client_model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": null,
        "usage": usage.to_anthropic(),
    })
}

/// The longest upstream text kept as an error message when the body is not JSON.
const MAX_RAW_MESSAGE: usize = 1000;

/// `(message, upstream type)` of an error body in either provider's shape
/// (`{"error":{"message","type"}}` — OpenAI, Azure, Anthropic — or a bare text body).
fn error_parts(body: &[u8]) -> (String, Option<String>) {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        let e = v.get("error").unwrap_or(&v);
        let message = e
            .get("message")
            .and_then(Value::as_str)
            .or_else(|| e.as_str())
            .map(str::to_owned);
        let kind = e.get("type").and_then(Value::as_str).map(str::to_owned);
        if let Some(m) = message {
            return (m, kind);
        }
        if kind.is_some() {
            return (String::new(), kind);
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let cut = text
        .char_indices()
        .nth(MAX_RAW_MESSAGE)
        .map_or(text.len(), |(i, _)| i);
    (text[..cut].to_owned(), None)
}

fn default_message(status: u16) -> String {
    format!("The upstream provider answered with status {status}.")
}

/// An Anthropic error answer → the OpenAI error body for the same status (the caller keeps the
/// status). Types: invalid_request_error, authentication_error (code invalid_api_key),
/// permission_error, not_found_error, request_too_large → invalid_request_error;
/// rate_limit_error → `requests` / rate_limit_exceeded; billing_error → insufficient_quota;
/// api_error, overloaded_error, timeout_error → server_error. Unknown types follow the status.
pub fn anthropic_error_to_openai(status: u16, body: &[u8]) -> Value {
    let (message, kind) = error_parts(body);
    let message = if message.is_empty() {
        default_message(status)
    } else {
        message
    };
    let (kind, code) = openai_error_kind(status, kind.as_deref());
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

pub(crate) fn openai_error_kind(
    status: u16,
    anthropic_type: Option<&str>,
) -> (&'static str, Option<&'static str>) {
    match anthropic_type {
        Some("invalid_request_error") => ("invalid_request_error", None),
        Some("authentication_error") => ("invalid_request_error", Some("invalid_api_key")),
        Some("permission_error") => ("invalid_request_error", Some("permission_denied")),
        Some("not_found_error") => ("invalid_request_error", Some("not_found")),
        Some("request_too_large") => ("invalid_request_error", Some("request_too_large")),
        Some("rate_limit_error") => ("requests", Some("rate_limit_exceeded")),
        Some("billing_error") => ("insufficient_quota", Some("insufficient_quota")),
        Some("overloaded_error") => ("server_error", Some("overloaded")),
        Some("timeout_error") => ("server_error", Some("timeout")),
        Some("api_error") => ("server_error", None),
        _ => match status {
            401 => ("invalid_request_error", Some("invalid_api_key")),
            403 => ("invalid_request_error", Some("permission_denied")),
            404 => ("invalid_request_error", Some("not_found")),
            413 => ("invalid_request_error", Some("request_too_large")),
            429 => ("requests", Some("rate_limit_exceeded")),
            s if s >= 500 => ("server_error", None),
            _ => ("invalid_request_error", None),
        },
    }
}

/// An OpenAI (or Azure) error answer → the Anthropic error body for the same status (the caller
/// keeps the status). The type follows the status, as Anthropic's do: 400 → invalid_request_error,
/// 401 → authentication_error, 402 → billing_error, 403 → permission_error, 404 →
/// not_found_error, 413 → request_too_large, 429 → rate_limit_error, 503/529 →
/// overloaded_error, 504 → timeout_error, other 5xx → api_error.
pub fn openai_error_to_anthropic(status: u16, body: &[u8]) -> Value {
    let (message, kind) = error_parts(body);
    let message = if message.is_empty() {
        default_message(status)
    } else {
        message
    };
    let kind = anthropic_error_kind(status, kind.as_deref());
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

pub(crate) fn anthropic_error_kind(status: u16, openai_type: Option<&str>) -> &'static str {
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        s if s >= 500 => "api_error",
        s if (400..500).contains(&s) => "invalid_request_error",
        // No usable status (an error inside a 200 stream): go by OpenAI's type.
        _ => match openai_type {
            Some("invalid_request_error") => "invalid_request_error",
            Some("requests" | "tokens" | "rate_limit_exceeded") => "rate_limit_error",
            Some("insufficient_quota") => "billing_error",
            _ => "api_error",
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn anthropic_message_to_chat_completion() {
        // Shape of the mock provider's answer.
        let body = json!({
            "id": "msg_anth_1", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [{"type": "text", "text": "tok0 tok1 tok2 tok3"}],
            "stop_reason": "max_tokens", "stop_sequence": null,
            "usage": {"input_tokens": 7, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 4}
        });
        assert_eq!(
            anthropic_to_openai_response(&body, "claude", 1_700_000_000),
            json!({
                "id": "msg_anth_1", "object": "chat.completion", "created": 1_700_000_000u64, "model": "claude",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "tok0 tok1 tok2 tok3", "refusal": null},
                             "logprobs": null, "finish_reason": "length"}],
                "usage": {"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11, "prompt_tokens_details": {"cached_tokens": 0}}
            })
        );
    }

    #[test]
    fn anthropic_tool_use_and_cache_to_openai() {
        let body = json!({
            "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": [
                {"type": "thinking", "thinking": "The user wants weather.", "signature": "sig"},
                {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_01B", "name": "get_time", "input": {}}
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 12, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 2000, "output_tokens": 40}
        });
        let v = anthropic_to_openai_response(&body, "claude", 5);
        let m = &v["choices"][0]["message"];
        assert!(m["content"].is_null());
        assert_eq!(
            m["tool_calls"],
            json!([
                {"id": "toolu_01A", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "toolu_01B", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
            ])
        );
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens": 2112, "completion_tokens": 40, "total_tokens": 2152, "prompt_tokens_details": {"cached_tokens": 2000}})
        );
    }

    #[test]
    fn stop_reasons() {
        for (anthropic, openai) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("pause_turn", "stop"),
            ("max_tokens", "length"),
            ("model_context_window_exceeded", "length"),
            ("tool_use", "tool_calls"),
            ("refusal", "content_filter"),
        ] {
            let v = anthropic_to_openai_response(
                &json!({"content": [], "stop_reason": anthropic}),
                "m",
                0,
            );
            assert_eq!(v["choices"][0]["finish_reason"], openai, "{anthropic}");
            // An empty answer is an empty string, never null, when there are no tool calls.
            assert_eq!(v["choices"][0]["message"]["content"], "");
        }
        for (openai, anthropic) in [
            ("stop", "end_turn"),
            ("length", "max_tokens"),
            ("tool_calls", "tool_use"),
            ("function_call", "tool_use"),
            ("content_filter", "refusal"),
        ] {
            let v = openai_to_anthropic_response(
                &json!({"choices": [{"message": {"content": "x"}, "finish_reason": openai}]}),
                "m",
            );
            assert_eq!(v["stop_reason"], anthropic, "{openai}");
        }
    }

    #[test]
    fn chat_completion_to_anthropic_message() {
        // Shape of the mock provider's answer.
        let body = json!({
            "id": "chatcmpl-oa-3", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "tok0 tok1", "refusal": null, "annotations": []},
                         "logprobs": null, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 14, "completion_tokens": 2, "total_tokens": 16,
                      "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                      "completion_tokens_details": {"reasoning_tokens": 0}},
            "service_tier": "default", "system_fingerprint": "fp_oa"
        });
        assert_eq!(
            openai_to_anthropic_response(&body, "gpt"),
            json!({
                "id": "chatcmpl-oa-3", "type": "message", "role": "assistant", "model": "gpt",
                "content": [{"type": "text", "text": "tok0 tok1"}],
                "stop_reason": "end_turn", "stop_sequence": null,
                "usage": {"input_tokens": 14, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 2}
            })
        );
    }

    #[test]
    fn openai_tool_calls_to_anthropic() {
        let body = json!({
            "id": "chatcmpl-1",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "broken", "arguments": "{\"unterminated"}}
            ]}, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120, "prompt_tokens_details": {"cached_tokens": 64}}
        });
        let v = openai_to_anthropic_response(&body, "gpt");
        assert_eq!(
            v["content"],
            json!([
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_2", "name": "broken", "input": {}}
            ])
        );
        assert_eq!(v["stop_reason"], "tool_use");
        assert_eq!(
            v["usage"],
            json!({"input_tokens": 36, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 64, "output_tokens": 20})
        );
        // A refusal is the answer's text.
        let v = openai_to_anthropic_response(
            &json!({"choices": [{"message": {"content": null, "refusal": "I can't help with that."}, "finish_reason": "stop"}]}),
            "gpt",
        );
        assert_eq!(
            v["content"],
            json!([{"type": "text", "text": "I can't help with that."}])
        );
        // Garbage in, a well-formed message out.
        let v = openai_to_anthropic_response(&json!({}), "gpt");
        assert_eq!(v["content"], json!([]));
        assert_eq!(v["stop_reason"], "end_turn");
        assert_eq!(v["usage"]["output_tokens"], 0);
    }

    #[test]
    fn anthropic_errors_to_openai() {
        let cases: &[(u16, &str, &str, Option<&str>, &str)] = &[
            (
                400,
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: Field required"}}"#,
                "invalid_request_error",
                None,
                "max_tokens: Field required",
            ),
            (
                401,
                r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
                "invalid_request_error",
                Some("invalid_api_key"),
                "invalid x-api-key",
            ),
            (
                429,
                r#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of requests has exceeded your rate limit."}}"#,
                "requests",
                Some("rate_limit_exceeded"),
                "Number of requests has exceeded your rate limit.",
            ),
            (
                529,
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_1"}"#,
                "server_error",
                Some("overloaded"),
                "Overloaded",
            ),
            (
                500,
                r#"{"type":"error","error":{"type":"api_error","message":"Internal server error"}}"#,
                "server_error",
                None,
                "Internal server error",
            ),
            (
                503,
                "upstream connect error or disconnect/reset before headers. reset reason: connection termination",
                "server_error",
                None,
                "upstream connect error or disconnect/reset before headers. reset reason: connection termination",
            ),
            (
                404,
                "",
                "invalid_request_error",
                Some("not_found"),
                "The upstream provider answered with status 404.",
            ),
        ];
        for (status, body, kind, code, message) in cases {
            let v = anthropic_error_to_openai(*status, body.as_bytes());
            assert_eq!(
                v,
                json!({"error": {"message": message, "type": kind, "param": null, "code": code}}),
                "{status} {body}"
            );
        }
        // A huge non-JSON body is cut.
        let v = anthropic_error_to_openai(502, "x".repeat(5000).as_bytes());
        assert_eq!(
            v["error"]["message"].as_str().unwrap().len(),
            MAX_RAW_MESSAGE
        );
    }

    #[test]
    fn openai_errors_to_anthropic() {
        let cases: &[(u16, &str, &str, &str)] = &[
            (
                400,
                r#"{"error":{"message":"Invalid 'max_tokens'","type":"invalid_request_error","param":"max_tokens","code":"integer_below_min_value"}}"#,
                "invalid_request_error",
                "Invalid 'max_tokens'",
            ),
            (
                401,
                r#"{"error":{"message":"Incorrect API key provided: sk-...abcd.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#,
                "authentication_error",
                "Incorrect API key provided: sk-...abcd.",
            ),
            // Azure's shape.
            (
                401,
                r#"{"error":{"code":"401","message":"Access denied due to invalid subscription key."}}"#,
                "authentication_error",
                "Access denied due to invalid subscription key.",
            ),
            (
                404,
                r#"{"error":{"code":"404","message":"Resource not found"}}"#,
                "not_found_error",
                "Resource not found",
            ),
            (
                429,
                r#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#,
                "rate_limit_error",
                "Rate limit reached",
            ),
            (
                500,
                r#"{"error":{"message":"The server had an error","type":"server_error","param":null,"code":null}}"#,
                "api_error",
                "The server had an error",
            ),
            (
                503,
                r#"{"error":{"message":"The server is overloaded","type":"server_error"}}"#,
                "overloaded_error",
                "The server is overloaded",
            ),
            (504, "gateway timeout", "timeout_error", "gateway timeout"),
            (
                413,
                "",
                "request_too_large",
                "The upstream provider answered with status 413.",
            ),
        ];
        for (status, body, kind, message) in cases {
            let v = openai_error_to_anthropic(*status, body.as_bytes());
            assert_eq!(
                v,
                json!({"type": "error", "error": {"type": kind, "message": message}}),
                "{status} {body}"
            );
        }
    }
}
