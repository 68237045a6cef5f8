//! What a request body asks for, in tokens: the prompt (per API) and the output it may
//! produce.
//!
//! Prompt counting gathers every string the provider will tokenize (message contents, names,
//! tool calls and definitions…) into one list, so the cost bound of
//! [`count_segments`](super::sample::count_segments) applies to the request as a whole, and
//! adds fixed overheads:
//!
//! * OpenAI chat: OpenAI cookbook's rule for current models: 3 tokens per message, +1 per
//!   `name`, +3 priming the reply; every string value of a message is counted (role, content,
//!   name, tool_call_id). Tool calls: name + arguments + 3. Tool definitions (`tools`, legacy
//!   `functions`): the JSON of each definition + 8; OpenAI renders them into a hidden system
//!   message whose exact format is not published, so this is an approximation.
//! * OpenAI completions: `prompt` (+ `suffix`); token-id arrays count as their length.
//! * Embeddings: `input`, same shapes; no overhead, no output.
//! * Anthropic messages: `system` (string or text blocks), messages like OpenAI chat
//!   (3 per message), `tool_use` (name + input JSON), `tool_result`, `tools` (JSON of each +
//!   8) plus Anthropic's documented tool-use system prompt (346 tokens). Anthropic's tokenizer
//!   is not public: the model's configured BPE stands in for it (Claude counts typically run
//!   10–30% above o200k for English), and reconciliation with the real usage corrects it.
//! * Images: see [`image_tokens`].

use std::borrow::Cow;

use serde_json::Value;

use crate::api::Api;

/// OpenAI: tokens added per chat message.
pub const TOKENS_PER_MESSAGE: u64 = 3;
/// OpenAI: tokens added per `name` field.
pub const TOKENS_PER_NAME: u64 = 1;
/// OpenAI: tokens priming the assistant's reply.
pub const REPLY_PRIMER: u64 = 3;
/// Per tool call in a message (structure around name and arguments).
pub const TOKENS_PER_TOOL_CALL: u64 = 3;
/// Per tool definition (structure around the rendered definition).
pub const TOKENS_PER_TOOL: u64 = 8;
/// Anthropic's tool-use system prompt (documented: 346 tokens with `tool_choice` auto/none).
pub const ANTHROPIC_TOOL_PROMPT: u64 = 346;

/// OpenAI image: base tokens, and per 512 px tile at `detail: high`.
pub const OPENAI_IMAGE_BASE: u64 = 85;
pub const OPENAI_IMAGE_TILE: u64 = 170;
/// OpenAI image of unknown size at high/auto detail: a 1024×1024 image (4 tiles).
pub const OPENAI_IMAGE_UNKNOWN: u64 = OPENAI_IMAGE_BASE + 4 * OPENAI_IMAGE_TILE;
/// Anthropic image of unknown size: the documented maximum (~1.15 megapixels / 750).
pub const ANTHROPIC_IMAGE_UNKNOWN: u64 = 1600;

/// A request's prompt, ready to count: strings to tokenize plus tokens known without
/// tokenizing (overheads, images, token-id arrays).
#[derive(Debug, Default, PartialEq)]
pub struct PromptParts<'a> {
    pub texts: Vec<Cow<'a, str>>,
    pub fixed: u64,
}

impl<'a> PromptParts<'a> {
    fn text(&mut self, s: &'a str) {
        if !s.is_empty() {
            self.texts.push(Cow::Borrowed(s));
        }
    }

    /// A JSON value the provider renders as text (tool arguments, schemas): its compact JSON.
    fn json(&mut self, v: &'a Value) {
        match v {
            Value::Null => {}
            Value::String(s) => self.text(s),
            other => self.texts.push(Cow::Owned(other.to_string())),
        }
    }
}

/// Collects the prompt of `body` for `api`. Unknown shapes count as nothing rather than fail:
/// validating the body is the provider's job, and reconciliation corrects the estimate.
pub fn prompt_parts(api: Api, body: &Value) -> PromptParts<'_> {
    let mut p = PromptParts::default();
    match api {
        Api::Chat => openai_chat(body, &mut p),
        Api::Completions => {
            text_or_tokens(body.get("prompt"), &mut p);
            if let Some(s) = body.get("suffix").and_then(Value::as_str) {
                p.text(s);
            }
        }
        Api::Embeddings => text_or_tokens(body.get("input"), &mut p),
        Api::Messages => anthropic(body, &mut p),
    }
    p
}

fn openai_chat<'a>(body: &'a Value, p: &mut PromptParts<'a>) {
    let messages = body.get("messages").and_then(Value::as_array);
    for m in messages.into_iter().flatten() {
        p.fixed += TOKENS_PER_MESSAGE;
        let Some(fields) = m.as_object() else {
            continue;
        };
        for (key, value) in fields {
            match (key.as_str(), value) {
                ("content", Value::Array(parts)) => {
                    for part in parts {
                        openai_content_part(part, p);
                    }
                }
                ("tool_calls", Value::Array(calls)) => {
                    for call in calls {
                        p.fixed += TOKENS_PER_TOOL_CALL;
                        let f = call.get("function");
                        if let Some(name) = f.and_then(|f| f.get("name")).and_then(Value::as_str) {
                            p.text(name);
                        }
                        if let Some(args) = f.and_then(|f| f.get("arguments")) {
                            p.json(args);
                        }
                    }
                }
                ("function_call", Value::Object(_)) => {
                    if let Some(name) = value.get("name").and_then(Value::as_str) {
                        p.text(name);
                    }
                    if let Some(args) = value.get("arguments") {
                        p.json(args);
                    }
                }
                (key, Value::String(s)) => {
                    p.text(s);
                    if key == "name" {
                        p.fixed += TOKENS_PER_NAME;
                    }
                }
                _ => {}
            }
        }
    }
    if messages.is_some() {
        p.fixed += REPLY_PRIMER;
    }
    let tools = body.get("tools").and_then(Value::as_array);
    for tool in tools.into_iter().flatten() {
        p.fixed += TOKENS_PER_TOOL;
        p.json(tool.get("function").unwrap_or(tool));
    }
    let functions = body.get("functions").and_then(Value::as_array);
    for f in functions.into_iter().flatten() {
        p.fixed += TOKENS_PER_TOOL;
        p.json(f);
    }
    // Structured output: the schema is part of the prompt the model sees.
    if let Some(schema) = body
        .get("response_format")
        .and_then(|r| r.get("json_schema"))
    {
        p.json(schema);
    }
}

fn openai_content_part<'a>(part: &'a Value, p: &mut PromptParts<'a>) {
    match part.get("type").and_then(Value::as_str) {
        Some("text") | Some("input_text") => {
            if let Some(s) = part.get("text").and_then(Value::as_str) {
                p.text(s);
            }
        }
        Some("image_url") | Some("input_image") => {
            let image = part.get("image_url");
            let url = image
                .and_then(|i| i.get("url").or(Some(i)))
                .and_then(Value::as_str);
            let detail = image.and_then(|i| i.get("detail")).and_then(Value::as_str);
            p.fixed += openai_image_tokens(url.and_then(image_size), detail);
        }
        // Audio and files are not counted; the provider's usage corrects the reservation.
        _ => {
            if let Value::String(s) = part {
                p.text(s);
            }
        }
    }
}

/// `prompt` / `input`: a string, an array of strings, an array of token ids, or an array of
/// token-id arrays.
fn text_or_tokens<'a>(v: Option<&'a Value>, p: &mut PromptParts<'a>) {
    match v {
        Some(Value::String(s)) => p.text(s),
        Some(Value::Array(items)) => {
            for item in items {
                match item {
                    Value::String(s) => p.text(s),
                    Value::Number(_) => p.fixed += 1,
                    Value::Array(ids) => p.fixed += ids.len() as u64,
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

fn anthropic<'a>(body: &'a Value, p: &mut PromptParts<'a>) {
    match body.get("system") {
        Some(Value::String(s)) => p.text(s),
        Some(Value::Array(blocks)) => {
            for b in blocks {
                anthropic_block(b, p);
            }
        }
        _ => {}
    }
    let messages = body.get("messages").and_then(Value::as_array);
    for m in messages.into_iter().flatten() {
        p.fixed += TOKENS_PER_MESSAGE;
        if let Some(role) = m.get("role").and_then(Value::as_str) {
            p.text(role);
        }
        match m.get("content") {
            Some(Value::String(s)) => p.text(s),
            Some(Value::Array(blocks)) => {
                for b in blocks {
                    anthropic_block(b, p);
                }
            }
            _ => {}
        }
    }
    if messages.is_some() {
        p.fixed += REPLY_PRIMER;
    }
    let tools = body.get("tools").and_then(Value::as_array);
    if tools.is_some_and(|t| !t.is_empty()) {
        p.fixed += ANTHROPIC_TOOL_PROMPT;
    }
    for tool in tools.into_iter().flatten() {
        p.fixed += TOKENS_PER_TOOL;
        p.json(tool);
    }
}

fn anthropic_block<'a>(b: &'a Value, p: &mut PromptParts<'a>) {
    match b.get("type").and_then(Value::as_str) {
        Some("text") => {
            if let Some(s) = b.get("text").and_then(Value::as_str) {
                p.text(s);
            }
        }
        Some("thinking") => {
            if let Some(s) = b.get("thinking").and_then(Value::as_str) {
                p.text(s);
            }
        }
        Some("image") => {
            let source = b.get("source");
            let size = match source.and_then(|s| s.get("type")).and_then(Value::as_str) {
                Some("base64") => source
                    .and_then(|s| s.get("data"))
                    .and_then(Value::as_str)
                    .and_then(base64_image_size),
                _ => None,
            };
            p.fixed += anthropic_image_tokens(size);
        }
        Some("tool_use") | Some("server_tool_use") => {
            if let Some(name) = b.get("name").and_then(Value::as_str) {
                p.text(name);
            }
            if let Some(input) = b.get("input") {
                p.json(input);
            }
        }
        Some("tool_result") => match b.get("content") {
            Some(Value::String(s)) => p.text(s),
            Some(Value::Array(blocks)) => {
                for inner in blocks {
                    anthropic_block(inner, p);
                }
            }
            _ => {}
        },
        Some("document") => {
            if let Some(s) = b
                .get("source")
                .filter(|s| s.get("type").and_then(Value::as_str) == Some("text"))
                .and_then(|s| s.get("data"))
                .and_then(Value::as_str)
            {
                p.text(s);
            }
        }
        _ => {}
    }
}

/// The output tokens a request may produce: `max_completion_tokens`, else `max_tokens`, else
/// `default`; times the number of choices (`n`, and `best_of` for completions, which the
/// provider generates and bills even though it returns only `n`). Embeddings produce none.
pub fn max_output_tokens(api: Api, body: &Value, default: u32) -> u64 {
    let field = |name: &str| body.get(name).and_then(Value::as_u64);
    let per_choice = match api {
        Api::Embeddings => return 0,
        Api::Chat => field("max_completion_tokens").or_else(|| field("max_tokens")),
        Api::Completions | Api::Messages => field("max_tokens"),
    }
    .unwrap_or(u64::from(default));
    let choices = match api {
        Api::Chat => field("n").unwrap_or(1),
        Api::Completions => field("n").unwrap_or(1).max(field("best_of").unwrap_or(1)),
        _ => 1,
    }
    .max(1);
    per_choice.saturating_mul(choices)
}

/// Image tokens, documented constants and formulas:
///
/// * OpenAI (GPT-4o family): `detail: low` → 85. Otherwise the image is scaled to fit
///   2048×2048, then down so its short side is at most 768, and costs 85 + 170 per 512 px
///   tile. Size known only for `data:` URLs (PNG, GIF, JPEG, WebP headers); else 765 (a
///   1024×1024 image). Other model families (gpt-4o-mini, o-series) price images differently;
///   reconciliation corrects that.
/// * Anthropic: scaled so the long side ≤ 1568 px, then w×h/750; unknown size → 1600.
pub fn image_tokens(api: Api, size: Option<(u32, u32)>, detail: Option<&str>) -> u64 {
    if api.is_anthropic() {
        anthropic_image_tokens(size)
    } else {
        openai_image_tokens(size, detail)
    }
}

fn openai_image_tokens(size: Option<(u32, u32)>, detail: Option<&str>) -> u64 {
    if detail == Some("low") {
        return OPENAI_IMAGE_BASE;
    }
    let Some((w, h)) = size.filter(|&(w, h)| w > 0 && h > 0) else {
        return OPENAI_IMAGE_UNKNOWN;
    };
    let (mut w, mut h) = (f64::from(w), f64::from(h));
    if w > 2048.0 || h > 2048.0 {
        let s = 2048.0 / w.max(h);
        (w, h) = (w * s, h * s);
    }
    if w.min(h) > 768.0 {
        let s = 768.0 / w.min(h);
        (w, h) = (w * s, h * s);
    }
    let tiles = (w / 512.0).ceil() * (h / 512.0).ceil();
    OPENAI_IMAGE_BASE + OPENAI_IMAGE_TILE * tiles as u64
}

fn anthropic_image_tokens(size: Option<(u32, u32)>) -> u64 {
    let Some((w, h)) = size.filter(|&(w, h)| w > 0 && h > 0) else {
        return ANTHROPIC_IMAGE_UNKNOWN;
    };
    let (mut w, mut h) = (f64::from(w), f64::from(h));
    if w.max(h) > 1568.0 {
        let s = 1568.0 / w.max(h);
        (w, h) = (w * s, h * s);
    }
    ((w * h / 750.0).ceil() as u64).min(ANTHROPIC_IMAGE_UNKNOWN)
}

/// Width and height of an image in a `data:image/...;base64,` URL, from its header.
pub fn image_size(url: &str) -> Option<(u32, u32)> {
    let rest = url.strip_prefix("data:")?;
    let (_, data) = rest.split_once(";base64,")?;
    base64_image_size(data)
}

/// Width and height from the first bytes of base64 image data (PNG, GIF, WebP, JPEG).
/// Decodes at most 64 KiB (JPEG's size marker may follow EXIF data).
fn base64_image_size(data: &str) -> Option<(u32, u32)> {
    let head = decode_base64_prefix(data, 64 * 1024);
    let be16 = |i: usize| {
        Some(u32::from(u16::from_be_bytes([
            *head.get(i)?,
            *head.get(i + 1)?,
        ])))
    };
    let le16 = |i: usize| {
        Some(u32::from(u16::from_le_bytes([
            *head.get(i)?,
            *head.get(i + 1)?,
        ])))
    };
    let be32 = |i: usize| {
        Some(u32::from_be_bytes([
            *head.get(i)?,
            *head.get(i + 1)?,
            *head.get(i + 2)?,
            *head.get(i + 3)?,
        ]))
    };
    if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Some((be32(16)?, be32(20)?));
    }
    if head.starts_with(b"GIF8") {
        return Some((le16(6)?, le16(8)?));
    }
    if head.starts_with(b"RIFF") && head.get(8..12) == Some(b"WEBP") {
        let le24 = |i: usize| {
            Some(u32::from_le_bytes([
                *head.get(i)?,
                *head.get(i + 1)?,
                *head.get(i + 2)?,
                0,
            ]))
        };
        return match head.get(12..16)? {
            b"VP8X" => Some((le24(24)? + 1, le24(27)? + 1)),
            b"VP8 " => Some((le16(26)? & 0x3FFF, le16(28)? & 0x3FFF)),
            b"VP8L" => {
                let b = be32(21).map(u32::swap_bytes)?;
                Some(((b & 0x3FFF) + 1, ((b >> 14) & 0x3FFF) + 1))
            }
            _ => None,
        };
    }
    if head.starts_with(&[0xFF, 0xD8]) {
        let mut i = 2;
        while i + 9 < head.len() {
            if head[i] != 0xFF {
                i += 1;
                continue;
            }
            let marker = head[i + 1];
            // SOF0..SOF15 except DHT (C4), JPG (C8), DAC (CC).
            if (0xC0..=0xCF).contains(&marker) && !matches!(marker, 0xC4 | 0xC8 | 0xCC) {
                return Some((be16(i + 7)?, be16(i + 5)?));
            }
            if marker == 0xD8 || marker == 0x01 || (0xD0..=0xD7).contains(&marker) || marker == 0xFF
            {
                i += if marker == 0xFF { 1 } else { 2 };
                continue;
            }
            i += 2 + usize::try_from(be16(i + 2)?).ok()?;
        }
    }
    None
}

/// Decodes base64 (standard or URL-safe alphabet, whitespace skipped) until `limit` bytes or
/// the first invalid character.
fn decode_base64_prefix(data: &str, limit: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(limit.min(data.len() * 3 / 4 + 3));
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in data.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'\n' | b'\r' | b' ' | b'\t' => continue,
            _ => break,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
            if out.len() >= limit {
                break;
            }
        }
    }
    out
}
