//! SSE stream translators: bytes of the upstream's stream in (any chunking), bytes of the
//! client's stream out.
//!
//! Both are small state machines over an [`SseSplitter`]: `push` returns what can be sent now,
//! `finish` (at the upstream's end of stream) closes the client's stream properly even if the
//! upstream stopped early, and `usage` reports the tokens the upstream declared so far.
//! Memory stays bounded by the splitter's limit plus a few counters per tool call.

use serde_json::{Value, json};

use super::response::{anthropic_error_kind, openai_error_kind};
use super::sse::{Event, SseSplitter};
use super::{
    AnthropicUsage, OpenAiUsage, Usage, finish_reason_from_anthropic, stop_reason_from_openai,
};

fn overflow_message(limit: usize) -> String {
    format!(
        "The upstream stream sent an event larger than the gateway's limit of {limit} bytes; the stream was stopped."
    )
}

/// What each translator adds to the shared framing: how to handle one upstream event, how to
/// close the client's stream, and what to send when an event is too large.
trait Translate {
    fn splitter(&mut self) -> &mut SseSplitter;
    fn done(&self) -> bool;
    fn event(&mut self, ev: &Event, out: &mut Vec<u8>);
    fn end(&mut self, out: &mut Vec<u8>);
    fn overflow(&mut self, message: &str, out: &mut Vec<u8>);

    /// `push` of both translators: events in order until the client's stream is complete.
    fn drive_push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        if self.done() {
            return out;
        }
        for ev in self.splitter().push(chunk) {
            self.event(&ev, &mut out);
            if self.done() {
                return out;
            }
        }
        if self.splitter().overflowed() {
            let message = overflow_message(self.splitter().limit());
            self.overflow(&message, &mut out);
        }
        out
    }

    /// `finish` of both translators: a last unterminated event, then a proper close.
    fn drive_finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.done() {
            return out;
        }
        if let Some(ev) = self.splitter().finish() {
            self.event(&ev, &mut out);
        }
        if !self.done() {
            self.end(&mut out);
        }
        out
    }
}

// =============================================================================================
// Anthropic upstream → OpenAI client

/// Turns an Anthropic Messages stream into an OpenAI `chat.completion.chunk` stream.
///
/// | Anthropic event | OpenAI output |
/// | --- | --- |
/// | `message_start` | a chunk with `delta: {role: "assistant", content: ""}` |
/// | `content_block_start` (tool_use) | a `tool_calls` delta with index, id, type, name, `arguments: ""` |
/// | `content_block_delta` text_delta | a `content` delta |
/// | `content_block_delta` input_json_delta | a `tool_calls` delta with `arguments` |
/// | `message_delta` | a chunk with an empty delta and `finish_reason` |
/// | `message_stop` | the usage chunk (`choices: []`) when `include_usage`, then `data: [DONE]` |
/// | `error` | `data: {"error": {…}}` then `data: [DONE]` |
/// | `ping`, `content_block_stop`, thinking/signature/citation deltas | nothing |
///
/// With `include_usage` every chunk carries `"usage": null` and the usage chunk comes last,
/// as OpenAI does with `stream_options.include_usage`.
#[derive(Debug)]
pub struct AnthropicToOpenAiStream {
    sse: SseSplitter,
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    started: bool,
    /// `(Anthropic content block index, OpenAI tool call index)` of each tool_use block.
    tools: Vec<(u64, usize)>,
    finish_reason: Option<&'static str>,
    finish_sent: bool,
    usage: Option<AnthropicUsage>,
    done: bool,
}

// === impl AnthropicToOpenAiStream ===

impl AnthropicToOpenAiStream {
    /// `id` and `created` go into every chunk (OpenAI uses one id per completion); `model` is
    /// the name the client asked for; `include_usage` is the client's
    /// `stream_options.include_usage`.
    pub fn new(
        id: impl Into<String>,
        model: impl Into<String>,
        created: u64,
        include_usage: bool,
    ) -> Self {
        Self {
            sse: SseSplitter::new(),
            id: id.into(),
            model: model.into(),
            created,
            include_usage,
            started: false,
            tools: Vec::new(),
            finish_reason: None,
            finish_sent: false,
            usage: None,
            done: false,
        }
    }

    /// Caps one buffered upstream event at `max_event_bytes` instead of 1 MiB.
    pub fn with_limit(mut self, max_event_bytes: usize) -> Self {
        self.sse = SseSplitter::with_limit(max_event_bytes);
        self
    }

    /// The usage the upstream declared so far: the prompt from `message_start`, the completion
    /// from the latest `message_delta` (Anthropic's `message_start` says `output_tokens: 1`
    /// before any text is produced). `None` until `message_start`.
    pub fn usage(&self) -> Option<Usage> {
        self.usage.map(|u| u.usage())
    }

    /// True once the client's stream is complete (`data: [DONE]` sent); later input is ignored.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Consumes a chunk of the upstream stream, returns the bytes to send to the client now.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        self.drive_push(chunk)
    }

    /// The upstream stream ended: returns what is left to send. If the upstream stopped before
    /// `message_stop`, this closes the client's stream: the final chunk (with the finish reason
    /// seen, else `stop`), the usage chunk if asked, and `data: [DONE]`.
    pub fn finish(&mut self) -> Vec<u8> {
        self.drive_finish()
    }

    fn chunk(&self, delta: Value, finish_reason: Option<&str>, out: &mut Vec<u8>) {
        let mut c = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
        });
        if self.include_usage
            && let Some(o) = c.as_object_mut()
        {
            o.insert("usage".into(), Value::Null);
        }
        data_frame(&c, out);
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            self.chunk(json!({"role": "assistant", "content": ""}), None, out);
        }
    }

    fn event(&mut self, ev: &Event, out: &mut Vec<u8>) {
        let Ok(data) = serde_json::from_str::<Value>(&ev.data) else {
            return; // Anthropic only sends JSON; a torn last event of a cut stream lands here.
        };
        let kind = data
            .get("type")
            .and_then(Value::as_str)
            .or(ev.event.as_deref())
            .unwrap_or("");
        match kind {
            "message_start" => {
                let mut u = self.usage.unwrap_or_default();
                if let Some(mu) = data.get("message").and_then(|m| m.get("usage")) {
                    u.update(mu);
                }
                self.usage = Some(u);
                self.start(out);
            }
            "content_block_start" => {
                self.start(out);
                let block = data.get("content_block");
                if block.and_then(|b| b.get("type")).and_then(Value::as_str) == Some("tool_use") {
                    let index = data.get("index").and_then(Value::as_u64).unwrap_or(0);
                    let tool = self.tools.len();
                    self.tools.push((index, tool));
                    let field = |k: &str| {
                        block
                            .and_then(|b| b.get(k))
                            .and_then(Value::as_str)
                            .unwrap_or("")
                    };
                    let delta = json!({"tool_calls": [{"index": tool, "id": field("id"), "type": "function",
                                                       "function": {"name": field("name"), "arguments": ""}}]});
                    self.chunk(delta, None, out);
                } else if let Some(t) = block
                    .and_then(|b| b.get("text"))
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                {
                    self.chunk(json!({"content": t}), None, out);
                }
            }
            "content_block_delta" => {
                self.start(out);
                let delta = data.get("delta");
                let field = |k: &str| delta.and_then(|d| d.get(k)).and_then(Value::as_str);
                match field("type") {
                    Some("text_delta") => {
                        if let Some(t) = field("text").filter(|t| !t.is_empty()) {
                            self.chunk(json!({"content": t}), None, out);
                        }
                    }
                    Some("input_json_delta") => {
                        let index = data.get("index").and_then(Value::as_u64).unwrap_or(0);
                        let tool = self.tools.iter().find(|(i, _)| *i == index).map(|t| t.1);
                        if let (Some(tool), Some(json)) =
                            (tool, field("partial_json").filter(|j| !j.is_empty()))
                        {
                            self.chunk(
                                json!({"tool_calls": [{"index": tool, "function": {"arguments": json}}]}),
                                None,
                                out,
                            );
                        }
                    }
                    // thinking_delta, signature_delta, citations_delta: nothing OpenAI carries.
                    _ => {}
                }
            }
            "message_delta" => {
                self.start(out);
                if let Some(r) = data
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str)
                {
                    self.finish_reason = Some(finish_reason_from_anthropic(r));
                }
                if let Some(mu) = data.get("usage") {
                    let mut u = self.usage.unwrap_or_default();
                    u.update(mu);
                    self.usage = Some(u);
                }
                if !self.finish_sent {
                    self.finish_sent = true;
                    self.chunk(json!({}), Some(self.finish_reason.unwrap_or("stop")), out);
                }
            }
            "message_stop" => self.end(out),
            "error" => {
                let e = data.get("error");
                let message = e
                    .and_then(|e| e.get("message"))
                    .and_then(Value::as_str)
                    .unwrap_or("The upstream provider reported an error.");
                let (kind, code) =
                    openai_error_kind(0, e.and_then(|e| e.get("type")).and_then(Value::as_str));
                self.fail(
                    json!({"message": message, "type": kind, "param": null, "code": code}),
                    out,
                );
            }
            // ping, content_block_stop, and event types newer than this code.
            _ => {}
        }
    }

    fn end(&mut self, out: &mut Vec<u8>) {
        self.start(out);
        if !self.finish_sent {
            self.finish_sent = true;
            self.chunk(json!({}), Some(self.finish_reason.unwrap_or("stop")), out);
        }
        if self.include_usage {
            let c = json!({
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": self.usage.unwrap_or_default().to_openai(),
            });
            data_frame(&c, out);
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
        self.done = true;
    }

    /// An error inside the stream, the way OpenAI sends one (its SDKs raise on an `error` key).
    fn fail(&mut self, error: Value, out: &mut Vec<u8>) {
        data_frame(&json!({ "error": error }), out);
        out.extend_from_slice(b"data: [DONE]\n\n");
        self.done = true;
    }
}

fn data_frame(v: &Value, out: &mut Vec<u8>) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(v.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

// =============================================================================================
// OpenAI upstream → Anthropic client

/// The content block currently open in the client's stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Block {
    Text(u64),
    Tool(u64),
}

/// Turns an OpenAI `chat.completion.chunk` stream into an Anthropic Messages stream.
///
/// The first chunk opens the message (`message_start`; its usage is zero unless that chunk
/// carries usage, since OpenAI reports usage only at the end). `content` (and `refusal`)
/// deltas go into a text block, each new `tool_calls[i]` opens a `tool_use` block whose
/// `arguments` deltas become `input_json_delta`s; a block is stopped when the next one starts
/// or when `finish_reason` arrives. `message_delta` (stop reason, and usage from the usage
/// chunk: `output_tokens`, plus `input_tokens` and `cache_read_input_tokens`) and
/// `message_stop` are sent at `data: [DONE]` (or at `finish`), after the usage chunk that
/// `stream_options.include_usage` adds. A chunk with an `error` key becomes an `error` event.
#[derive(Debug)]
pub struct OpenAiToAnthropicStream {
    sse: SseSplitter,
    id: String,
    model: String,
    started: bool,
    open: Option<Block>,
    next_block: u64,
    /// `(OpenAI tool call index, Anthropic content block index)` of each tool call.
    tools: Vec<(u64, u64)>,
    stop_reason: Option<&'static str>,
    usage: Option<OpenAiUsage>,
    done: bool,
}

// === impl OpenAiToAnthropicStream ===

impl OpenAiToAnthropicStream {
    /// `id` is the message id the client sees; `model` the name it asked for.
    pub fn new(id: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            sse: SseSplitter::new(),
            id: id.into(),
            model: model.into(),
            started: false,
            open: None,
            next_block: 0,
            tools: Vec::new(),
            stop_reason: None,
            usage: None,
            done: false,
        }
    }

    /// Caps one buffered upstream event at `max_event_bytes` instead of 1 MiB.
    pub fn with_limit(mut self, max_event_bytes: usize) -> Self {
        self.sse = SseSplitter::with_limit(max_event_bytes);
        self
    }

    /// The usage the upstream reported (its usage chunk, or the latest chunk carrying usage).
    /// `None` until then.
    pub fn usage(&self) -> Option<Usage> {
        self.usage.map(|u| u.usage())
    }

    /// True once the client's stream is complete (`message_stop` or `error` sent).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Consumes a chunk of the upstream stream, returns the bytes to send to the client now.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        self.drive_push(chunk)
    }

    /// The upstream stream ended: returns what is left to send. If the upstream stopped before
    /// `data: [DONE]`, this closes the client's stream: open block stopped, `message_delta`
    /// (the stop reason seen, else `end_turn`; the usage seen) and `message_stop`.
    pub fn finish(&mut self) -> Vec<u8> {
        self.drive_finish()
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let usage = match self.usage {
            Some(u) => u.to_anthropic(),
            None => json!({"input_tokens": 0, "output_tokens": 0}),
        };
        let m = json!({"type": "message_start", "message": {
            "id": self.id, "type": "message", "role": "assistant", "model": self.model,
            "content": [], "stop_reason": null, "stop_sequence": null, "usage": usage,
        }});
        event_frame("message_start", &m, out);
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if let Some(Block::Text(i) | Block::Tool(i)) = self.open.take() {
            event_frame(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": i}),
                out,
            );
        }
    }

    fn open(&mut self, block: Value, out: &mut Vec<u8>) -> u64 {
        self.close(out);
        let index = self.next_block;
        self.next_block += 1;
        event_frame(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
            out,
        );
        index
    }

    fn text(&mut self, text: &str, out: &mut Vec<u8>) {
        let index = match self.open {
            Some(Block::Text(i)) => i,
            _ => {
                let i = self.open(json!({"type": "text", "text": ""}), out);
                self.open = Some(Block::Text(i));
                i
            }
        };
        event_frame(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}),
            out,
        );
    }

    fn tool_call(&mut self, position: usize, call: &Value, out: &mut Vec<u8>) {
        let key = call
            .get("index")
            .and_then(Value::as_u64)
            .unwrap_or(position as u64);
        let f = call.get("function");
        let index = match self.tools.iter().find(|(k, _)| *k == key) {
            Some(&(_, i)) => i,
            None => {
                let id = call
                    .get("id")
                    .and_then(Value::as_str)
                    .map_or_else(|| format!("toolu_{key}"), str::to_owned);
                let name = f
                    .and_then(|f| f.get("name"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let i = self.open(
                    json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                    out,
                );
                self.open = Some(Block::Tool(i));
                self.tools.push((key, i));
                i
            }
        };
        // A delta for an earlier, already stopped call still names its block: SDKs accumulate
        // by index.
        if let Some(args) = f
            .and_then(|f| f.get("arguments"))
            .and_then(Value::as_str)
            .filter(|a| !a.is_empty())
        {
            event_frame(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": args}}),
                out,
            );
        }
    }

    fn event(&mut self, ev: &Event, out: &mut Vec<u8>) {
        if ev.data.trim() == "[DONE]" {
            self.end(out);
            return;
        }
        let Ok(data) = serde_json::from_str::<Value>(&ev.data) else {
            return; // a torn last event of a cut stream
        };
        if let Some(e) = data.get("error").filter(|e| !e.is_null()) {
            let message = e
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("The upstream provider reported an error.");
            let kind = anthropic_error_kind(0, e.get("type").and_then(Value::as_str));
            self.fail(kind, message, out);
            return;
        }
        if let Some(u) = data.get("usage").and_then(OpenAiUsage::from_value) {
            self.usage = Some(u);
        }
        self.start(out);
        let Some(choice) = data.get("choices").and_then(Value::as_array).and_then(|c| {
            c.iter()
                .find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
        }) else {
            return;
        };
        if let Some(delta) = choice.get("delta") {
            for key in ["content", "refusal"] {
                if let Some(t) = delta
                    .get(key)
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                {
                    self.text(t, out);
                }
            }
            if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
                for (position, call) in calls.iter().enumerate() {
                    self.tool_call(position, call, out);
                }
            }
        }
        if let Some(r) = choice.get("finish_reason").and_then(Value::as_str) {
            self.stop_reason = Some(stop_reason_from_openai(r));
            self.close(out);
        }
    }

    fn end(&mut self, out: &mut Vec<u8>) {
        self.start(out);
        self.close(out);
        let usage = match self.usage {
            Some(u) => json!({
                "input_tokens": u.prompt - u.cached,
                "cache_read_input_tokens": u.cached,
                "output_tokens": u.completion,
            }),
            None => json!({"output_tokens": 0}),
        };
        event_frame(
            "message_delta",
            &json!({"type": "message_delta",
                    "delta": {"stop_reason": self.stop_reason.unwrap_or("end_turn"), "stop_sequence": null},
                    "usage": usage}),
            out,
        );
        event_frame("message_stop", &json!({"type": "message_stop"}), out);
        self.done = true;
    }

    /// An `error` event, the way Anthropic sends one mid-stream; the stream ends there.
    fn fail(&mut self, kind: &str, message: &str, out: &mut Vec<u8>) {
        event_frame(
            "error",
            &json!({"type": "error", "error": {"type": kind, "message": message}}),
            out,
        );
        self.done = true;
    }
}

impl Translate for AnthropicToOpenAiStream {
    fn splitter(&mut self) -> &mut SseSplitter {
        &mut self.sse
    }
    fn done(&self) -> bool {
        self.done
    }
    fn event(&mut self, ev: &Event, out: &mut Vec<u8>) {
        AnthropicToOpenAiStream::event(self, ev, out);
    }
    fn end(&mut self, out: &mut Vec<u8>) {
        AnthropicToOpenAiStream::end(self, out);
    }
    fn overflow(&mut self, message: &str, out: &mut Vec<u8>) {
        let e = json!({"message": message, "type": "server_error", "param": null, "code": "stream_event_too_large"});
        self.fail(e, out);
    }
}

impl Translate for OpenAiToAnthropicStream {
    fn splitter(&mut self) -> &mut SseSplitter {
        &mut self.sse
    }
    fn done(&self) -> bool {
        self.done
    }
    fn event(&mut self, ev: &Event, out: &mut Vec<u8>) {
        OpenAiToAnthropicStream::event(self, ev, out);
    }
    fn end(&mut self, out: &mut Vec<u8>) {
        OpenAiToAnthropicStream::end(self, out);
    }
    fn overflow(&mut self, message: &str, out: &mut Vec<u8>) {
        self.fail("api_error", message, out);
    }
}

fn event_frame(name: &str, v: &Value, out: &mut Vec<u8>) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(v.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
