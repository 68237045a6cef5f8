//! Real token usage, read from a provider's response body as it streams through the filter.
//!
//! The gateway reserves an estimate per request; reconciling needs what the provider actually
//! counted. [`Meter`] watches the body chunk by chunk and extracts the usage the provider
//! reported, plus a fallback for streams cut off before they reported it: the completion tokens
//! counted from the generated text seen so far.
//!
//! Pure (bytes in, bytes and numbers out) and bounded: a JSON body is scanned, never buffered,
//! keeping at most the `usage` value ([`MAX_USAGE_BYTES`]); an SSE stream holds at most its
//! current incomplete event ([`SseSplitter`]'s limit).

use serde_json::Value;

use crate::translate::{AnthropicUsage, Event, OpenAiUsage, SseSplitter, Usage};

/// Cap on a captured `usage` value: real ones are a few hundred bytes, so anything larger is not
/// a usage object worth waiting for.
pub const MAX_USAGE_BYTES: usize = 64 * 1024;

/// Which body the provider sends, so the meter knows where its usage is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One JSON object: OpenAI chat/completions/embeddings or Anthropic messages — all have a
    /// top-level `usage` object.
    Json,
    /// OpenAI (and Azure / OpenAI-compatible) `text/event-stream` of `chat.completion.chunk` or
    /// `text_completion` chunks. `hide_usage`: the gateway added `stream_options.include_usage`
    /// itself, the client did not ask, so the client must get the stream it would have had
    /// without it: the usage-only chunk is dropped and the `usage` key removed from the others.
    OpenAiSse { hide_usage: bool },
    /// Anthropic messages stream: usage comes in `message_start` (prompt) and `message_delta`
    /// (cumulative output).
    AnthropicSse,
}

/// Per-request usage observer; feed it every body chunk, then read what it found.
#[derive(Debug)]
pub struct Meter {
    format: Format,
    /// `Json` only.
    scanner: UsageScanner,
    /// SSE formats only.
    sse: SseSplitter,
    /// `AnthropicSse` only: fields arrive in several events, each updating some of them.
    anthropic: AnthropicUsage,
    reported: Option<Usage>,
    streamed: u64,
    announced: Option<u64>,
}

impl Meter {
    /// One meter per response: the format is known from the route and content type before the
    /// body starts.
    pub fn new(format: Format) -> Meter {
        Meter {
            format,
            scanner: UsageScanner::default(),
            sse: SseSplitter::new(),
            anthropic: AnthropicUsage::default(),
            reported: None,
            streamed: 0,
            announced: None,
        }
    }

    /// Observes the next chunk. `count` counts the tokens of a piece of generated text (the filter
    /// passes its BPE tokenizer), for the fallback of [`streamed_completion`](Self::streamed_completion).
    ///
    /// Returns `None` when the chunk goes to the client unchanged, or `Some(bytes)` to send
    /// instead. Only `OpenAiSse { hide_usage: true }` rewrites: it re-emits whole events (as
    /// `event:`/`data:` lines; comments and `id:` are dropped), so bytes of an incomplete event
    /// are held back until it completes. Should an event pass the splitter's limit, the stream
    /// passes through unchanged from then on (the oversized event is lost, the rest reaches the
    /// client) and metering stops.
    pub fn push(&mut self, chunk: &[u8], count: &dyn Fn(&str) -> u64) -> Option<Vec<u8>> {
        if self.format == Format::Json {
            for member in self.scanner.feed(chunk) {
                self.json_usage(member);
            }
            return None;
        }
        let rewrite = self.rewrites();
        let events = self.sse.push(chunk);
        self.events(events, count, rewrite)
    }

    /// End of the body: processes a last event that lacked its blank line and returns the bytes
    /// still held back (same convention as [`push`](Self::push)).
    pub fn finish(&mut self, count: &dyn Fn(&str) -> u64) -> Option<Vec<u8>> {
        if self.format == Format::Json {
            // A `usage` value still open at the end is truncated: nothing to read.
            return None;
        }
        let rewrite = self.rewrites();
        let events = self.sse.finish().into_iter().collect();
        self.events(events, count, rewrite)
    }

    /// The usage the provider reported, once it did: what reconciliation should charge.
    /// OpenAI: the last non-null `usage`. Anthropic stream: prompt from `message_start`,
    /// completion from the last `message_delta` (None until one arrives). JSON: the body's usage.
    pub fn reported(&self) -> Option<Usage> {
        self.reported
    }

    /// Completion tokens counted from the text streamed so far (the sum of `count` over each
    /// content, refusal, reasoning, tool-argument and thinking piece), to charge a stream that
    /// was cut off before the provider reported usage.
    pub fn streamed_completion(&self) -> u64 {
        self.streamed
    }

    /// Prompt tokens the stream announced before its end (Anthropic `message_start`), so a cut
    /// stream still charges the real prompt rather than the estimate.
    pub fn announced_prompt(&self) -> Option<u64> {
        self.announced
    }

    /// Whether this meter re-emits events rather than letting the bytes through.
    fn rewrites(&self) -> bool {
        self.format == (Format::OpenAiSse { hide_usage: true }) && !self.sse.overflowed()
    }

    fn events(
        &mut self,
        events: Vec<Event>,
        count: &dyn Fn(&str) -> u64,
        rewrite: bool,
    ) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        for ev in &events {
            match self.format {
                Format::AnthropicSse => self.anthropic_event(ev, count),
                _ => self.openai_event(ev, count, rewrite.then_some(&mut out)),
            }
        }
        rewrite.then_some(out)
    }

    fn json_usage(&mut self, member: Member) {
        let Some(bytes) = member.value else { return };
        let Ok(value) = serde_json::from_slice::<Value>(&bytes) else {
            return;
        };
        if let Some(usage) = body_usage(&value) {
            self.reported = Some(usage);
        }
    }

    /// One OpenAI chunk; `out` is where to re-emit it when hiding usage.
    fn openai_event(&mut self, ev: &Event, count: &dyn Fn(&str) -> u64, out: Option<&mut Vec<u8>>) {
        let value = match ev.data.as_str() {
            "[DONE]" => None,
            data => serde_json::from_str::<Value>(data).ok(),
        };
        if let Some(v) = &value {
            if let Some(u) = v.get("usage").and_then(OpenAiUsage::from_value) {
                self.reported = Some(u.usage());
            }
            self.streamed = self.streamed.saturating_add(openai_text(v, count));
        }
        let Some(out) = out else { return };
        match &value {
            Some(v) if is_usage_only(v) => {}
            Some(v) if v.get("usage").is_some() => {
                emit(out, ev.event.as_deref(), &without_usage(ev.data.as_bytes()));
            }
            // Malformed data and `[DONE]` go through as they came: not ours to judge.
            _ => emit(out, ev.event.as_deref(), ev.data.as_bytes()),
        }
    }

    fn anthropic_event(&mut self, ev: &Event, count: &dyn Fn(&str) -> u64) {
        let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
            return;
        };
        // The data repeats the event name as `type`; trust the data, as the SDKs do.
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .or(ev.event.as_deref());
        match kind {
            Some("message_start") => {
                if let Some(u) = v.pointer("/message/usage").filter(|u| u.is_object()) {
                    self.anthropic.update(u);
                    self.announced = Some(self.anthropic.usage().prompt);
                }
            }
            Some("message_delta") => {
                if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
                    // Cumulative: the last delta holds the totals (input may grow with server tools).
                    self.anthropic.update(u);
                    self.announced = Some(self.anthropic.usage().prompt);
                    self.reported = Some(self.anthropic.usage());
                }
            }
            Some("content_block_delta") => {
                if let Some(d) = v.get("delta") {
                    let n = ["text", "partial_json", "thinking"]
                        .iter()
                        .map(|k| text_tokens(d.get(*k), count))
                        .fold(0, u64::saturating_add);
                    self.streamed = self.streamed.saturating_add(n);
                }
            }
            _ => {}
        }
    }
}

/// Reads a JSON body's `usage` value with the translators' helpers, so accounting matches them.
/// OpenAI's (also embeddings', without `completion_tokens`) has `prompt_tokens`; Anthropic's has
/// `input_tokens`/`output_tokens`.
fn body_usage(u: &Value) -> Option<Usage> {
    let has = |k: &str| u.get(k).is_some();
    if has("prompt_tokens") || has("completion_tokens") {
        return OpenAiUsage::from_value(u).map(|o| o.usage());
    }
    if has("input_tokens") || has("output_tokens") {
        let mut a = AnthropicUsage::default();
        a.update(u);
        return Some(a.usage());
    }
    None
}

/// Tokens of the generated text in one OpenAI chunk, over all choices.
fn openai_text(chunk: &Value, count: &dyn Fn(&str) -> u64) -> u64 {
    let Some(choices) = chunk.get("choices").and_then(Value::as_array) else {
        return 0;
    };
    choices
        .iter()
        .map(|c| choice_text(c, count))
        .fold(0, u64::saturating_add)
}

/// Legacy completions carry `text`; chat chunks a `delta` with content, refusal, reasoning
/// (OpenAI-compatible servers) and function arguments, all billed as completion tokens.
fn choice_text(choice: &Value, count: &dyn Fn(&str) -> u64) -> u64 {
    let mut pieces = vec![choice.get("text")];
    if let Some(d) = choice.get("delta") {
        pieces.extend(["content", "refusal", "reasoning_content"].map(|k| d.get(k)));
        pieces.push(d.pointer("/function_call/arguments"));
        if let Some(calls) = d.get("tool_calls").and_then(Value::as_array) {
            pieces.extend(calls.iter().map(|c| c.pointer("/function/arguments")));
        }
    }
    pieces
        .into_iter()
        .map(|p| text_tokens(p, count))
        .fold(0, u64::saturating_add)
}

fn text_tokens(piece: Option<&Value>, count: &dyn Fn(&str) -> u64) -> u64 {
    piece
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map_or(0, count)
}

/// The final chunk `include_usage` adds: no choices, only usage. The client did not ask for it.
fn is_usage_only(chunk: &Value) -> bool {
    let no_choices = chunk
        .get("choices")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty);
    no_choices && chunk.get("usage").is_some_and(|u| !u.is_null())
}

/// `data` without its top-level `usage` member(s), edited in place rather than re-serialized so
/// everything else (key order, spacing, numbers) reaches the client byte for byte.
fn without_usage(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut at = 0;
    for m in UsageScanner::default().feed(data) {
        // Take the separating comma along: the one before, or else the one after.
        let range = match (m.comma_before, m.closer) {
            (Some(comma), _) => comma..m.end,
            (None, b',') => m.key_start..m.end + 1,
            (None, _) => m.key_start..m.end,
        };
        out.extend_from_slice(data.get(at..range.start).unwrap_or_default());
        at = at.max(range.end);
    }
    out.extend_from_slice(data.get(at..).unwrap_or_default());
    out
}

/// Writes one event; multi-line data needs one `data:` line per line.
fn emit(out: &mut Vec<u8>, name: Option<&str>, data: &[u8]) {
    if let Some(name) = name {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    for line in data.split(|&b| b == b'\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.push(b'\n');
}

// =============================================================================================
// Incremental scan for the top-level `usage` member of a JSON object

const USAGE: &[u8] = b"usage";

/// A top-level `usage` member, with offsets (from the start of the scanned bytes) so it can also
/// be cut out of a document.
#[derive(Debug)]
struct Member {
    /// The key's opening quote.
    key_start: usize,
    /// The `,` separating it from the previous member, if it is not the first.
    comma_before: Option<usize>,
    /// The `,` or `}` that ends the value, and which of the two it is.
    end: usize,
    closer: u8,
    /// The value's bytes (with surrounding whitespace), `None` when it passed [`MAX_USAGE_BYTES`].
    value: Option<Vec<u8>>,
}

/// Tracks just enough JSON syntax (depth, strings, escapes, keys at depth 1) to find top-level
/// members named `usage` across any chunking, without parsing or holding the rest of the body.
/// Its state is a few counters plus the captured value, so memory is bounded whatever the body.
#[derive(Debug, Default)]
struct UsageScanner {
    /// Offset of the next byte.
    pos: usize,
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// The top-level value is an object (its depth-1 strings can be keys).
    top_object: bool,
    /// At depth 1, the next string is a key (after `{` or `,`, until `:`).
    expect_key: bool,
    /// The depth-1 key being read: its start, and how much of `usage` it matched (`None`: not it).
    key: Option<(usize, Option<usize>)>,
    /// Start of the key just read, when it was `usage`; its value starts at the `:`.
    usage_key: Option<usize>,
    /// The last `,` at depth 1.
    comma: Option<usize>,
    capture: Option<Capture>,
    /// The top-level value closed: the rest is not ours to read.
    done: bool,
}

#[derive(Debug)]
struct Capture {
    key_start: usize,
    comma_before: Option<usize>,
    bytes: Vec<u8>,
    over: bool,
}

impl Capture {
    fn push(&mut self, b: u8) {
        if self.over {
            return;
        }
        if self.bytes.len() >= MAX_USAGE_BYTES {
            self.over = true;
            self.bytes = Vec::new();
            return;
        }
        self.bytes.push(b);
    }
}

impl UsageScanner {
    /// Consumes a chunk, returns the `usage` members it completed.
    fn feed(&mut self, chunk: &[u8]) -> Vec<Member> {
        let mut found = Vec::new();
        let mut at = 0;
        while let Some(&b) = chunk.get(at) {
            if self.done {
                break;
            }
            if self.in_string && !self.escaped && self.key.is_none() && self.capture.is_none() {
                // Inside a string nothing is read but where it ends: skip to the next quote or
                // backslash (the generated text is most of an answer's bytes).
                let skip = memchr::memchr2(b'"', b'\\', &chunk[at..]).unwrap_or(chunk.len() - at);
                if skip > 0 {
                    self.pos += skip;
                    at += skip;
                    continue;
                }
            }
            let pos = self.pos;
            self.pos += 1;
            at += 1;
            found.extend(self.byte(pos, b));
        }
        found
    }

    fn byte(&mut self, pos: usize, b: u8) -> Option<Member> {
        if self.in_string {
            self.capture_byte(b);
            self.string_byte(b);
            return None;
        }
        let mut found = None;
        if self.depth == 1 && matches!(b, b',' | b'}' | b']') {
            found = self.capture.take().map(|c| Member {
                key_start: c.key_start,
                comma_before: c.comma_before,
                end: pos,
                closer: b,
                value: (!c.over).then_some(c.bytes),
            });
        } else {
            self.capture_byte(b);
        }
        match b {
            b'"' => {
                self.in_string = true;
                if self.depth == 1 && self.expect_key {
                    self.key = Some((pos, Some(0)));
                }
            }
            b'{' | b'[' => {
                self.depth += 1;
                if self.depth == 1 {
                    self.top_object = b == b'{';
                    self.expect_key = self.top_object;
                }
            }
            b'}' | b']' => {
                self.done = self.depth == 1;
                self.depth = self.depth.saturating_sub(1);
            }
            b',' if self.depth == 1 => {
                self.expect_key = self.top_object;
                self.comma = Some(pos);
            }
            b':' if self.depth == 1 => {
                self.expect_key = false;
                if let Some(key_start) = self.usage_key.take() {
                    self.capture = Some(Capture {
                        key_start,
                        comma_before: self.comma,
                        bytes: Vec::new(),
                        over: false,
                    });
                }
            }
            _ => {}
        }
        found
    }

    /// A byte inside a string: escapes, the closing quote, and the key match.
    fn string_byte(&mut self, b: u8) {
        if self.escaped {
            self.escaped = false;
        } else if b == b'\\' {
            self.escaped = true;
        } else if b == b'"' {
            self.in_string = false;
            if let Some((start, matched)) = self.key.take() {
                self.usage_key = (matched == Some(USAGE.len())).then_some(start);
            }
            return;
        }
        // Raw bytes: an escaped spelling of `usage` does not match, and no provider sends one.
        if let Some((_, matched)) = &mut self.key {
            *matched = matched.filter(|&n| USAGE.get(n) == Some(&b)).map(|n| n + 1);
        }
    }

    fn capture_byte(&mut self, b: u8) {
        if let Some(c) = &mut self.capture {
            c.push(b);
        }
    }
}

#[cfg(test)]
#[path = "meter_tests.rs"]
mod tests;
