//! The answers: request validation and response bodies for each endpoint, as pure functions of
//! the parsed request (no I/O), so they are unit-tested directly.

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::errors::{ApiError, anthropic_invalid, openai_invalid};
use crate::{sse, tokens};

/// Per-request facts that are not in the body.
#[derive(Clone, Debug)]
pub struct Ctx<'a> {
    /// `--name`: goes into ids and `system_fingerprint`.
    pub name: &'a str,
    /// A per-process sequence number, so ids are unique and predictable.
    pub seq: u64,
    /// Unix seconds for `created`.
    pub created: u64,
    /// `x-mock-completion-tokens` / the control API's `completion_tokens`.
    pub forced_tokens: Option<u64>,
}

/// What to send back.
#[derive(Debug, PartialEq)]
pub enum Answer {
    Json(Value),
    Stream(Stream),
}

/// A streamed answer, split where the stall fault cuts it: everything in `head` is sent, then
/// the token events, then `tail` (unless the stream stalls).
#[derive(Debug, Default, PartialEq)]
pub struct Stream {
    pub head: Vec<Bytes>,
    pub tokens: Vec<Bytes>,
    pub tail: Vec<Bytes>,
    /// For the usage ledger: the model the events name and the prompt tokens charged (the
    /// completion tokens are the token events actually sent).
    pub model: String,
    pub prompt_tokens: u64,
}

/// The models `GET /v1/models` lists (any model name is accepted by the other endpoints).
pub const MODELS: &[&str] = &[
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1-mini",
    "gpt-3.5-turbo-instruct",
    "text-embedding-3-small",
];

// ---------------------------------------------------------------------------------------------
// request field helpers (OpenAI wording)

fn as_object(body: &Value) -> Result<&Map<String, Value>, ApiError> {
    body.as_object().ok_or_else(crate::errors::openai_bad_json)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a decimal",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn invalid_type(key: &str, expected: &str, got: &Value) -> ApiError {
    openai_invalid(
        &format!(
            "Invalid type for '{key}': expected {expected}, but got {} instead.",
            type_name(got)
        ),
        Some(key),
        Some("invalid_type"),
    )
}

fn missing(key: &str) -> ApiError {
    openai_invalid(
        &format!("Missing required parameter: '{key}'."),
        Some(key),
        Some("missing_required_parameter"),
    )
}

/// The request's model; Azure takes it from the deployment in the path instead.
fn openai_model(o: &Map<String, Value>, deployment: Option<&str>) -> Result<String, ApiError> {
    if let Some(d) = deployment {
        return Ok(d.to_owned());
    }
    match o.get("model") {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(v @ (Value::Bool(_) | Value::Number(_) | Value::Array(_) | Value::Object(_))) => {
            Err(invalid_type("model", "a string", v))
        }
        _ => Err(openai_invalid(
            "you must provide a model parameter",
            None,
            None,
        )),
    }
}

/// An optional integer >= 1.
fn openai_limit(o: &Map<String, Value>, key: &str) -> Result<Option<u64>, ApiError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.as_u64().is_some_and(|v| v >= 1) => Ok(n.as_u64()),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Err(openai_invalid(
            &format!(
                "Invalid '{key}': integer below minimum value. Expected a value >= 1, but got {n} instead."
            ),
            Some(key),
            Some("integer_below_min_value"),
        )),
        Some(v) => Err(invalid_type(key, "an integer", v)),
    }
}

/// `(stream, include_usage)`.
fn openai_stream_flags(o: &Map<String, Value>) -> Result<(bool, bool), ApiError> {
    let stream = match o.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => return Err(invalid_type("stream", "a boolean", v)),
    };
    let include_usage = match o.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(so)) => {
            if !stream {
                return Err(openai_invalid(
                    "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                    Some("stream_options"),
                    None,
                ));
            }
            match so.get("include_usage") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(v) => {
                    return Err(invalid_type("stream_options.include_usage", "a boolean", v));
                }
            }
        }
        Some(v) => return Err(invalid_type("stream_options", "an object", v)),
    };
    Ok((stream, include_usage))
}

pub fn openai_usage(prompt: u64, completion: u64) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0
        }
    })
}

fn finish(length: bool) -> &'static str {
    if length { "length" } else { "stop" }
}

// ---------------------------------------------------------------------------------------------
// OpenAI / Azure

/// `POST /v1/chat/completions` (and Azure's `/openai/deployments/{d}/chat/completions`).
pub fn chat(ctx: &Ctx, body: &Value, deployment: Option<&str>) -> Result<Answer, ApiError> {
    let o = as_object(body)?;
    let model = openai_model(o, deployment)?;
    let messages = match o.get("messages") {
        None | Some(Value::Null) => return Err(missing("messages")),
        Some(Value::Array(m)) if m.is_empty() => {
            return Err(openai_invalid(
                "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
                Some("messages"),
                Some("empty_array"),
            ));
        }
        Some(Value::Array(m)) => m,
        Some(v) => return Err(invalid_type("messages", "an array", v)),
    };
    if let Some((i, _)) = messages.iter().enumerate().find(|(_, m)| !m.is_object()) {
        return Err(invalid_type(
            &format!("messages[{i}]"),
            "an object",
            &messages[i],
        ));
    }
    let limit = match openai_limit(o, "max_completion_tokens")? {
        Some(v) => Some(v),
        None => openai_limit(o, "max_tokens")?,
    };
    let (stream, include_usage) = openai_stream_flags(o)?;
    let prompt = tokens::chat_prompt_tokens(messages);
    let (n, length) = tokens::completion_tokens(ctx.forced_tokens, limit);
    let id = format!("chatcmpl-{}-{}", ctx.name, ctx.seq);
    let fingerprint = format!("fp_{}", ctx.name);

    if !stream {
        return Ok(Answer::Json(json!({
            "id": id,
            "object": "chat.completion",
            "created": ctx.created,
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": tokens::completion_text(n), "refusal": null, "annotations": []},
                "logprobs": null,
                "finish_reason": finish(length),
            }],
            "usage": openai_usage(prompt, n),
            "service_tier": "default",
            "system_fingerprint": fingerprint,
        })));
    }

    let chunk = |choices: Value, usage: Option<Value>| {
        let mut c = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": ctx.created,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": fingerprint,
            "choices": choices,
        });
        if include_usage {
            c["usage"] = usage.unwrap_or(Value::Null);
        }
        sse::data(&c)
    };
    let choice = |delta: Value, finish_reason: Option<&str>| json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}]);
    let mut s = Stream {
        head: vec![chunk(
            choice(
                json!({"role": "assistant", "content": "", "refusal": null}),
                None,
            ),
            None,
        )],
        tokens: (0..n)
            .map(|i| chunk(choice(json!({"content": tokens::piece(i)}), None), None))
            .collect(),
        tail: vec![chunk(choice(json!({}), Some(finish(length))), None)],
        model: model.clone(),
        prompt_tokens: prompt,
    };
    if include_usage {
        s.tail.push(chunk(json!([]), Some(openai_usage(prompt, n))));
    }
    s.tail.push(sse::done());
    Ok(Answer::Stream(s))
}

/// `POST /v1/completions` (legacy text completions; one choice for the whole prompt).
pub fn completions(ctx: &Ctx, body: &Value, deployment: Option<&str>) -> Result<Answer, ApiError> {
    let o = as_object(body)?;
    let model = openai_model(o, deployment)?;
    let prompt = match o.get("prompt") {
        None | Some(Value::Null) => return Err(missing("prompt")),
        Some(p) => tokens::input_tokens(p)
            .ok_or_else(|| invalid_type("prompt", "a string or an array of strings or tokens", p))?
            .iter()
            .sum::<u64>(),
    };
    let limit = openai_limit(o, "max_tokens")?;
    let (stream, include_usage) = openai_stream_flags(o)?;
    let (n, length) = tokens::completion_tokens(ctx.forced_tokens, limit);
    let id = format!("cmpl-{}-{}", ctx.name, ctx.seq);
    let fingerprint = format!("fp_{}", ctx.name);

    if !stream {
        return Ok(Answer::Json(json!({
            "id": id,
            "object": "text_completion",
            "created": ctx.created,
            "model": model,
            "choices": [{"text": tokens::completion_text(n), "index": 0, "logprobs": null, "finish_reason": finish(length)}],
            "usage": openai_usage(prompt, n),
            "system_fingerprint": fingerprint,
        })));
    }

    let chunk = |choices: Value, usage: Option<Value>| {
        let mut c = json!({
            "id": id,
            "object": "text_completion",
            "created": ctx.created,
            "model": model,
            "system_fingerprint": fingerprint,
            "choices": choices,
        });
        if include_usage {
            c["usage"] = usage.unwrap_or(Value::Null);
        }
        sse::data(&c)
    };
    let choice = |text: String, finish_reason: Option<&str>| json!([{"text": text, "index": 0, "logprobs": null, "finish_reason": finish_reason}]);
    let mut s = Stream {
        head: vec![],
        tokens: (0..n)
            .map(|i| chunk(choice(tokens::piece(i), None), None))
            .collect(),
        tail: vec![chunk(choice(String::new(), Some(finish(length))), None)],
        model: model.clone(),
        prompt_tokens: prompt,
    };
    if include_usage {
        s.tail.push(chunk(json!([]), Some(openai_usage(prompt, n))));
    }
    s.tail.push(sse::done());
    Ok(Answer::Stream(s))
}

/// The deterministic 8-float vector of one input: FNV-1a of its JSON text, one byte per
/// dimension, mapped to `(2·byte − 255) / 256` (exact in f32, so float and base64 agree).
pub fn embedding_vector(input: &Value) -> [f32; 8] {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in input.to_string().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut out = [0f32; 8];
    for (i, v) in out.iter_mut().enumerate() {
        let byte = ((h >> (8 * i)) & 0xff) as u8;
        *v = (2.0 * f32::from(byte) - 255.0) / 256.0;
    }
    out
}

/// `POST /v1/embeddings`: one 8-float vector per input, `float` or `base64` encoded.
pub fn embeddings(body: &Value, deployment: Option<&str>) -> Result<Answer, ApiError> {
    let o = as_object(body)?;
    let model = openai_model(o, deployment)?;
    let input = match o.get("input") {
        None | Some(Value::Null) => return Err(missing("input")),
        Some(i) => i,
    };
    let counts = tokens::input_tokens(input)
        .ok_or_else(|| invalid_type("input", "a string or an array of strings or tokens", input))?;
    if counts.is_empty() {
        return Err(openai_invalid(
            "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.",
            None,
            None,
        ));
    }
    // The same split tokens::input_tokens makes: one item, or one per array element.
    let items: Vec<&Value> = match input {
        Value::Array(a) if !a.iter().all(Value::is_number) => a.iter().collect(),
        other => vec![other],
    };
    let base64 = match o.get("encoding_format") {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) if s == "float" => false,
        Some(Value::String(s)) if s == "base64" => true,
        Some(v) => {
            return Err(openai_invalid(
                &format!(
                    "Invalid value for 'encoding_format': {v}. Supported values are: 'float' and 'base64'."
                ),
                Some("encoding_format"),
                Some("invalid_value"),
            ));
        }
    };
    let data: Vec<Value> = items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let v = embedding_vector(item);
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let prompt: u64 = counts.iter().sum();
    Ok(Answer::Json(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
    })))
}

pub fn model_object(id: &str, created: u64) -> Value {
    json!({"id": id, "object": "model", "created": created, "owned_by": "system"})
}

/// `GET /v1/models`.
pub fn models(created: u64) -> Value {
    json!({"object": "list", "data": MODELS.iter().map(|m| model_object(m, created)).collect::<Vec<_>>()})
}

// ---------------------------------------------------------------------------------------------
// Anthropic

/// Validated fields of a messages request: `(model, messages, system)`.
fn anthropic_common(body: &Value) -> Result<(&str, &Vec<Value>, Option<&Value>), ApiError> {
    let o = body
        .as_object()
        .ok_or_else(|| anthropic_invalid("Input should be a valid dictionary"))?;
    let model = match o.get("model") {
        None | Some(Value::Null) => return Err(anthropic_invalid("model: Field required")),
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(anthropic_invalid("model: Input should be a valid string")),
    };
    let messages = match o.get("messages") {
        None | Some(Value::Null) => return Err(anthropic_invalid("messages: Field required")),
        Some(Value::Array(m)) if m.is_empty() => {
            return Err(anthropic_invalid(
                "messages: at least one message is required",
            ));
        }
        Some(Value::Array(m)) => m,
        Some(_) => return Err(anthropic_invalid("messages: Input should be a valid list")),
    };
    if let Some(i) = messages.iter().position(|m| !m.is_object()) {
        return Err(anthropic_invalid(&format!(
            "messages.{i}: Input should be a valid dictionary"
        )));
    }
    let system = match o.get("system") {
        None | Some(Value::Null) => None,
        Some(s @ (Value::String(_) | Value::Array(_))) => Some(s),
        Some(_) => return Err(anthropic_invalid("system: Input should be a valid string")),
    };
    Ok((model, messages, system))
}

pub fn anthropic_usage(input: u64, output: u64) -> Value {
    json!({
        "input_tokens": input,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output,
    })
}

/// `POST /v1/messages`.
pub fn messages(ctx: &Ctx, body: &Value) -> Result<Answer, ApiError> {
    let (model, msgs, system) = anthropic_common(body)?;
    let max_tokens = match body.get("max_tokens") {
        None | Some(Value::Null) => return Err(anthropic_invalid("max_tokens: Field required")),
        Some(v) => match v.as_u64() {
            Some(m) if m >= 1 => m,
            Some(_) => {
                return Err(anthropic_invalid(
                    "max_tokens: Input should be greater than or equal to 1",
                ));
            }
            None => {
                return Err(anthropic_invalid(
                    "max_tokens: Input should be a valid integer",
                ));
            }
        },
    };
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(anthropic_invalid("stream: Input should be a valid boolean")),
    };
    let input = tokens::anthropic_input_tokens(system, msgs);
    let (n, length) = tokens::completion_tokens(ctx.forced_tokens, Some(max_tokens));
    let stop_reason = if length { "max_tokens" } else { "end_turn" };
    let id = format!("msg_{}_{}", ctx.name, ctx.seq);

    if !stream {
        return Ok(Answer::Json(json!({
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": tokens::completion_text(n)}],
            "stop_reason": stop_reason,
            "stop_sequence": null,
            "usage": anthropic_usage(input, n),
        })));
    }

    let start = json!({
        "type": "message_start",
        "message": {
            "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": null, "stop_sequence": null, "usage": anthropic_usage(input, 1),
        }
    });
    Ok(Answer::Stream(Stream {
        head: vec![
            sse::event("message_start", &start),
            sse::event(
                "content_block_start",
                &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            sse::event("ping", &json!({"type": "ping"})),
        ],
        tokens: (0..n)
            .map(|i| {
                sse::event(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": 0,
                            "delta": {"type": "text_delta", "text": tokens::piece(i)}}),
                )
            })
            .collect(),
        tail: vec![
            sse::event(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": 0}),
            ),
            sse::event(
                "message_delta",
                &json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null},
                        "usage": {"output_tokens": n}}),
            ),
            sse::event("message_stop", &json!({"type": "message_stop"})),
        ],
        model: model.to_owned(),
        prompt_tokens: input,
    }))
}

/// `POST /v1/messages/count_tokens`.
pub fn count_tokens(body: &Value) -> Result<Answer, ApiError> {
    let (_, msgs, system) = anthropic_common(body)?;
    Ok(Answer::Json(
        json!({"input_tokens": tokens::anthropic_input_tokens(system, msgs)}),
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn ctx(forced: Option<u64>) -> Ctx<'static> {
        Ctx {
            name: "openai-a",
            seq: 7,
            created: 1_700_000_000,
            forced_tokens: forced,
        }
    }

    fn json_answer(a: Result<Answer, ApiError>) -> Value {
        match a {
            Ok(Answer::Json(v)) => v,
            other => panic!("expected a JSON answer, got {other:?}"),
        }
    }

    fn stream_answer(a: Result<Answer, ApiError>) -> Stream {
        match a {
            Ok(Answer::Stream(s)) => s,
            other => panic!("expected a stream, got {other:?}"),
        }
    }

    fn err(a: Result<Answer, ApiError>) -> ApiError {
        match a {
            Err(e) => e,
            Ok(other) => panic!("expected an error, got {other:?}"),
        }
    }

    /// The JSON payloads of OpenAI `data:` frames (`[DONE]` as a string).
    fn payloads(frames: &[Bytes]) -> Vec<Value> {
        frames
            .iter()
            .map(|f| {
                let s = std::str::from_utf8(f).unwrap();
                let d = s
                    .strip_prefix("data: ")
                    .unwrap()
                    .strip_suffix("\n\n")
                    .unwrap();
                serde_json::from_str(d).unwrap_or_else(|_| Value::String(d.to_owned()))
            })
            .collect()
    }

    #[test]
    fn chat_non_stream() {
        let body = json!({"model": "gpt-4o-mini", "max_tokens": 5,
                          "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "say hi now"}]});
        let v = json_answer(chat(&ctx(None), &body, None));
        assert_eq!(v["id"], "chatcmpl-openai-a-7");
        assert_eq!(v["system_fingerprint"], "fp_openai-a");
        assert_eq!(v["model"], "gpt-4o-mini");
        assert_eq!(
            v["choices"][0]["message"]["content"],
            "tok0 tok1 tok2 tok3 tok4"
        );
        assert_eq!(v["choices"][0]["finish_reason"], "length");
        assert_eq!(v["usage"]["prompt_tokens"], 2 + 3 + 3 + 3);
        assert_eq!(v["usage"]["completion_tokens"], 5);
        assert_eq!(v["usage"]["total_tokens"], 16);

        let v = json_answer(chat(&ctx(Some(2)), &body, Some("my-deployment")));
        assert_eq!(v["model"], "my-deployment");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(v["usage"]["completion_tokens"], 2);
    }

    #[test]
    fn chat_max_completion_tokens_wins() {
        let body = json!({"model": "m", "max_tokens": 2, "max_completion_tokens": 3, "messages": [{"role": "user", "content": "x"}]});
        assert_eq!(
            json_answer(chat(&ctx(None), &body, None))["usage"]["completion_tokens"],
            3
        );
    }

    #[test]
    fn chat_stream_frames() {
        let body = json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "x"}], "max_tokens": 3});
        let s = stream_answer(chat(&ctx(None), &body, None));
        let head = payloads(&s.head);
        assert_eq!(head.len(), 1);
        assert_eq!(head[0]["object"], "chat.completion.chunk");
        assert_eq!(head[0]["choices"][0]["delta"]["role"], "assistant");
        assert!(
            head[0].get("usage").is_none(),
            "no usage key without include_usage"
        );
        let toks = payloads(&s.tokens);
        let text: String = toks
            .iter()
            .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
            .collect();
        assert_eq!(text, "tok0 tok1 tok2");
        let tail = payloads(&s.tail);
        assert_eq!(tail.len(), 2);
        assert_eq!(tail[0]["choices"][0]["finish_reason"], "length");
        assert_eq!(tail[0]["choices"][0]["delta"], json!({}));
        assert_eq!(tail[1], json!("[DONE]"));
    }

    #[test]
    fn chat_stream_include_usage() {
        let body = json!({"model": "m", "stream": true, "stream_options": {"include_usage": true},
                          "messages": [{"role": "user", "content": "a b"}]});
        let s = stream_answer(chat(&ctx(Some(4)), &body, None));
        assert!(payloads(&s.head)[0]["usage"].is_null());
        assert!(payloads(&s.tokens).iter().all(|c| c["usage"].is_null()));
        let tail = payloads(&s.tail);
        assert_eq!(tail.len(), 3);
        assert_eq!(tail[0]["choices"][0]["finish_reason"], "stop");
        assert_eq!(tail[1]["choices"], json!([]));
        assert_eq!(tail[1]["usage"]["prompt_tokens"], 5);
        assert_eq!(tail[1]["usage"]["completion_tokens"], 4);
        assert_eq!(tail[1]["usage"]["total_tokens"], 9);
        assert_eq!(tail[2], json!("[DONE]"));
        assert_eq!((s.model.as_str(), s.prompt_tokens), ("m", 5));
    }

    #[test]
    fn chat_validation() {
        let c = ctx(None);
        let e = err(chat(
            &c,
            &json!({"messages": [{"role": "user", "content": "x"}]}),
            None,
        ));
        assert_eq!(
            (e.status, e.body["error"]["message"].as_str()),
            (400, Some("you must provide a model parameter"))
        );
        let e = err(chat(&c, &json!({"model": "m"}), None));
        assert_eq!(e.body["error"]["code"], "missing_required_parameter");
        assert_eq!(e.body["error"]["param"], "messages");
        let e = err(chat(&c, &json!({"model": "m", "messages": []}), None));
        assert_eq!(e.body["error"]["code"], "empty_array");
        let e = err(chat(&c, &json!({"model": "m", "messages": "hi"}), None));
        assert_eq!(e.body["error"]["code"], "invalid_type");
        let e = err(chat(
            &c,
            &json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}),
            None,
        ));
        assert_eq!(e.body["error"]["code"], "integer_below_min_value");
        let e = err(chat(
            &c,
            &json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream_options": {"include_usage": true}}),
            None,
        ));
        assert_eq!(e.body["error"]["param"], "stream_options");
        let e = err(chat(&c, &json!([1, 2]), None));
        assert!(
            e.body["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("We could not parse the JSON body")
        );
        // Azure: the deployment stands in for the model.
        assert!(
            chat(
                &c,
                &json!({"messages": [{"role": "user", "content": "x"}]}),
                Some("dep")
            )
            .is_ok()
        );
    }

    #[test]
    fn completions_answers() {
        let v = json_answer(completions(
            &ctx(None),
            &json!({"model": "gpt-3.5-turbo-instruct", "prompt": "one two three"}),
            None,
        ));
        assert_eq!(v["object"], "text_completion");
        assert_eq!(v["choices"][0]["text"], completion_text_16());
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(v["usage"]["prompt_tokens"], 3);
        assert_eq!(v["usage"]["completion_tokens"], 16);

        let s = stream_answer(completions(
            &ctx(None),
            &json!({"model": "m", "prompt": ["a", "b c"], "max_tokens": 2, "stream": true, "stream_options": {"include_usage": true}}),
            None,
        ));
        assert!(s.head.is_empty());
        let toks = payloads(&s.tokens);
        assert_eq!(
            toks.iter()
                .map(|c| c["choices"][0]["text"].as_str().unwrap())
                .collect::<String>(),
            "tok0 tok1"
        );
        let tail = payloads(&s.tail);
        assert_eq!(tail[0]["choices"][0]["finish_reason"], "length");
        assert_eq!(tail[1]["usage"]["prompt_tokens"], 3);
        assert_eq!(tail[2], json!("[DONE]"));
        assert_eq!((s.model.as_str(), s.prompt_tokens), ("m", 3));

        let e = err(completions(&ctx(None), &json!({"model": "m"}), None));
        assert_eq!(e.body["error"]["param"], "prompt");
    }

    fn completion_text_16() -> String {
        tokens::completion_text(16)
    }

    #[test]
    fn embeddings_float_and_base64_agree() {
        let body = json!({"model": "text-embedding-3-small", "input": ["hello world", "x"]});
        let v = json_answer(embeddings(&body, None));
        assert_eq!(v["usage"], json!({"prompt_tokens": 3, "total_tokens": 3}));
        assert_eq!(v["data"].as_array().unwrap().len(), 2);
        let floats: Vec<f64> = v["data"][0]["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_f64().unwrap())
            .collect();
        assert_eq!(floats.len(), 8);
        assert!(floats.iter().all(|f| (-1.0..1.0).contains(f)));

        let mut b = body.clone();
        b["encoding_format"] = json!("base64");
        let v64 = json_answer(embeddings(&b, None));
        let raw = base64::engine::general_purpose::STANDARD
            .decode(v64["data"][0]["embedding"].as_str().unwrap())
            .unwrap();
        let decoded: Vec<f64> = raw
            .chunks(4)
            .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect();
        assert_eq!(decoded, floats);

        // Deterministic, and different inputs differ.
        assert_eq!(embedding_vector(&json!("a")), embedding_vector(&json!("a")));
        assert_ne!(embedding_vector(&json!("a")), embedding_vector(&json!("b")));

        let tokens_input = json_answer(embeddings(
            &json!({"model": "m", "input": [1, 2, 3, 4]}),
            None,
        ));
        assert_eq!(tokens_input["data"].as_array().unwrap().len(), 1);
        assert_eq!(tokens_input["usage"]["prompt_tokens"], 4);
        assert_eq!(
            err(embeddings(&json!({"model": "m", "input": []}), None)).status,
            400
        );
        assert_eq!(
            err(embeddings(
                &json!({"model": "m", "input": "x", "encoding_format": "hex"}),
                None
            ))
            .status,
            400
        );
        assert_eq!(
            err(embeddings(&json!({"model": "m"}), None)).body["error"]["param"],
            "input"
        );
    }

    /// `(event name, payload)` of Anthropic frames.
    fn events(frames: &[Bytes]) -> Vec<(String, Value)> {
        frames
            .iter()
            .map(|f| {
                let s = std::str::from_utf8(f).unwrap();
                let (ev, data) = s.strip_suffix("\n\n").unwrap().split_once('\n').unwrap();
                (
                    ev.strip_prefix("event: ").unwrap().to_owned(),
                    serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn anthropic_non_stream() {
        let body = json!({"model": "claude-x", "max_tokens": 4, "system": "be kind",
                          "messages": [{"role": "user", "content": "hello there"}]});
        let v = json_answer(messages(&ctx(None), &body));
        assert_eq!(v["id"], "msg_openai-a_7");
        assert_eq!(v["type"], "message");
        assert_eq!(v["model"], "claude-x");
        assert_eq!(
            v["content"],
            json!([{"type": "text", "text": "tok0 tok1 tok2 tok3"}])
        );
        assert_eq!(v["stop_reason"], "max_tokens");
        assert_eq!(v["usage"]["input_tokens"], 2 + 2 + 3);
        assert_eq!(v["usage"]["output_tokens"], 4);
        let v = json_answer(messages(
            &ctx(None),
            &json!({"model": "c", "max_tokens": 100, "messages": [{"role": "user", "content": "x"}]}),
        ));
        assert_eq!(v["stop_reason"], "end_turn");
        assert_eq!(v["usage"]["output_tokens"], 16);
    }

    #[test]
    fn anthropic_stream_events() {
        let body = json!({"model": "c", "max_tokens": 100, "stream": true, "messages": [{"role": "user", "content": "x y"}]});
        let s = stream_answer(messages(&ctx(Some(2)), &body));
        let names = |fs: &[Bytes]| events(fs).into_iter().map(|(n, _)| n).collect::<Vec<_>>();
        assert_eq!(
            names(&s.head),
            ["message_start", "content_block_start", "ping"]
        );
        assert_eq!(
            names(&s.tokens),
            ["content_block_delta", "content_block_delta"]
        );
        assert_eq!(
            names(&s.tail),
            ["content_block_stop", "message_delta", "message_stop"]
        );
        let start = &events(&s.head)[0].1;
        assert_eq!(start["message"]["usage"]["input_tokens"], 5);
        assert_eq!(start["message"]["usage"]["output_tokens"], 1);
        assert_eq!(
            events(&s.tokens)[1].1["delta"],
            json!({"type": "text_delta", "text": " tok1"})
        );
        let delta = &events(&s.tail)[1].1;
        assert_eq!(delta["delta"]["stop_reason"], "end_turn");
        assert_eq!(delta["usage"]["output_tokens"], 2);
        assert_eq!((s.model.as_str(), s.prompt_tokens), ("c", 5));
        for (name, payload) in events(&s.head)
            .iter()
            .chain(&events(&s.tokens))
            .chain(&events(&s.tail))
        {
            assert_eq!(&payload["type"], name);
        }
    }

    #[test]
    fn anthropic_validation() {
        let c = ctx(None);
        let m = |e: ApiError| {
            (
                e.status,
                e.body["error"]["type"].clone(),
                e.body["error"]["message"].clone(),
            )
        };
        assert_eq!(
            m(err(messages(
                &c,
                &json!({"model": "c", "messages": [{"role": "user", "content": "x"}]})
            ))),
            (
                400,
                json!("invalid_request_error"),
                json!("max_tokens: Field required")
            )
        );
        assert_eq!(
            m(err(messages(&c, &json!({"model": "c", "max_tokens": 1})))).2,
            "messages: Field required"
        );
        assert_eq!(
            m(err(messages(
                &c,
                &json!({"max_tokens": 1, "messages": [{}]})
            )))
            .2,
            "model: Field required"
        );
        assert_eq!(
            m(err(messages(
                &c,
                &json!({"model": "c", "max_tokens": 1, "messages": []})
            )))
            .0,
            400
        );
        assert_eq!(
            m(err(messages(
                &c,
                &json!({"model": "c", "max_tokens": 0, "messages": [{}]})
            )))
            .0,
            400
        );
        assert_eq!(
            json_answer(count_tokens(
                &json!({"model": "c", "system": "s", "messages": [{"role": "user", "content": "a b"}]})
            )),
            json!({"input_tokens": 6})
        );
    }

    #[test]
    fn models_list() {
        let v = models(1);
        assert_eq!(v["object"], "list");
        assert_eq!(v["data"].as_array().unwrap().len(), MODELS.len());
        assert_eq!(v["data"][0]["object"], "model");
    }
}
