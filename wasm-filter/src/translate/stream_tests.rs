//! Stream translator tests over recorded-shape fixtures (`testdata/*.sse`): the Anthropic and
//! OpenAI formats as the real APIs and `tests/mock-provider` send them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::translate::SseSplitter;

const ANTHROPIC_TEXT: &str = include_str!("testdata/anthropic_text.sse");
const ANTHROPIC_TOOLS: &str = include_str!("testdata/anthropic_tools.sse");
const ANTHROPIC_ERROR: &str = include_str!("testdata/anthropic_error.sse");
const OPENAI_TEXT_USAGE: &str = include_str!("testdata/openai_text_usage.sse");
const OPENAI_TEXT: &str = include_str!("testdata/openai_text.sse");
const OPENAI_TOOLS: &str = include_str!("testdata/openai_tools.sse");
const OPENAI_ERROR: &str = include_str!("testdata/openai_error.sse");

const ANTHROPIC_FIXTURES: &[(&str, &str)] = &[
    ("anthropic_text", ANTHROPIC_TEXT),
    ("anthropic_tools", ANTHROPIC_TOOLS),
    ("anthropic_error", ANTHROPIC_ERROR),
];
const OPENAI_FIXTURES: &[(&str, &str)] = &[
    ("openai_text_usage", OPENAI_TEXT_USAGE),
    ("openai_text", OPENAI_TEXT),
    ("openai_tools", OPENAI_TOOLS),
    ("openai_error", OPENAI_ERROR),
];

// ---------------------------------------------------------------------------------------------
// harness

trait Translator {
    fn push(&mut self, chunk: &[u8]) -> Vec<u8>;
    fn finish(&mut self) -> Vec<u8>;
}

impl Translator for AnthropicToOpenAiStream {
    fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        AnthropicToOpenAiStream::push(self, chunk)
    }
    fn finish(&mut self) -> Vec<u8> {
        AnthropicToOpenAiStream::finish(self)
    }
}

impl Translator for OpenAiToAnthropicStream {
    fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        OpenAiToAnthropicStream::push(self, chunk)
    }
    fn finish(&mut self) -> Vec<u8> {
        OpenAiToAnthropicStream::finish(self)
    }
}

fn to_openai() -> AnthropicToOpenAiStream {
    AnthropicToOpenAiStream::new("chatcmpl-gw-1", "claude", 1_700_000_123, true)
}

fn to_anthropic() -> OpenAiToAnthropicStream {
    OpenAiToAnthropicStream::new("msg_gw_1", "gpt")
}

/// Feeds `chunks` then finishes; the concatenated output.
fn run<T: Translator>(mut t: T, chunks: impl IntoIterator<Item = Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::new();
    for c in chunks {
        out.extend(t.push(&c));
    }
    out.extend(t.finish());
    out
}

/// A tiny deterministic generator (Numerical Recipes' LCG), so "random" splits are reproducible.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

/// `input` cut into pieces of 1..=max bytes (cuts land inside UTF-8 characters too).
fn random_chunks(input: &[u8], seed: u64, max: u64) -> Vec<Vec<u8>> {
    let mut rng = Lcg(seed);
    let mut out = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        let n = (1 + rng.next() % max).min(rest.len() as u64) as usize;
        out.push(rest[..n].to_vec());
        rest = &rest[n..];
    }
    out
}

fn crlf(s: &str) -> String {
    s.replace('\n', "\r\n")
}

/// The same output whatever the chunking: whole, byte by byte, every two-piece split, and
/// random chunk sizes from fixed seeds; with `\n` and with `\r\n` line ends.
fn assert_split_invariant<T: Translator>(name: &str, input: &str, make: impl Fn() -> T) {
    let whole = run(make(), [input.as_bytes().to_vec()]);
    assert!(!whole.is_empty(), "{name}: no output");
    let crlf_input = crlf(input);
    for (variant, text) in [("lf", input), ("crlf", crlf_input.as_str())] {
        let bytes = text.as_bytes();
        assert_eq!(
            run(make(), [bytes.to_vec()]),
            whole,
            "{name}/{variant}: whole"
        );
        let bytewise = run(make(), bytes.iter().map(|b| vec![*b]));
        assert_eq!(bytewise, whole, "{name}/{variant}: byte by byte");
        for cut in 0..=bytes.len() {
            let two = run(make(), [bytes[..cut].to_vec(), bytes[cut..].to_vec()]);
            assert_eq!(two, whole, "{name}/{variant}: split at {cut}");
        }
        for seed in 1..=20u64 {
            for max in [3, 17, 64, 700] {
                let got = run(make(), random_chunks(bytes, seed, max));
                assert_eq!(got, whole, "{name}/{variant}: seed {seed}, max {max}");
            }
        }
        // Several events per chunk with empty chunks in between.
        let mut chunks = random_chunks(bytes, 99, 1500);
        chunks.insert(0, Vec::new());
        chunks.push(Vec::new());
        assert_eq!(
            run(make(), chunks),
            whole,
            "{name}/{variant}: with empty chunks"
        );
    }
}

/// The events of an SSE byte stream, parsed with our own splitter.
fn events(bytes: &[u8]) -> Vec<crate::translate::Event> {
    let mut s = SseSplitter::new();
    let mut v = s.push(bytes);
    v.extend(s.finish());
    v
}

/// OpenAI frames: JSON payloads, with `[DONE]` as the string "[DONE]".
fn openai_frames(bytes: &[u8]) -> Vec<Value> {
    events(bytes)
        .into_iter()
        .map(|e| {
            assert_eq!(e.event, None, "OpenAI frames have no event: line");
            if e.data == "[DONE]" {
                json!("[DONE]")
            } else {
                serde_json::from_str(&e.data).unwrap()
            }
        })
        .collect()
}

/// Anthropic frames: `(event name, payload)`; the name always equals the payload's type.
fn anthropic_frames(bytes: &[u8]) -> Vec<(String, Value)> {
    events(bytes)
        .into_iter()
        .map(|e| {
            let v: Value = serde_json::from_str(&e.data).unwrap();
            let name = e.event.expect("Anthropic frames are named");
            assert_eq!(v["type"], name.as_str());
            (name, v)
        })
        .collect()
}

/// What an OpenAI SDK would assemble from a stream, checking the stream's rules on the way.
#[derive(Debug, Default, PartialEq)]
struct OpenAiResult {
    content: String,
    /// `(id, name, arguments)` by index.
    tools: Vec<(String, String, String)>,
    finish_reason: Option<String>,
    usage: Option<Value>,
    error: Option<Value>,
}

fn assemble_openai(bytes: &[u8], include_usage: bool) -> OpenAiResult {
    let frames = openai_frames(bytes);
    let mut r = OpenAiResult::default();
    assert_eq!(
        frames.last(),
        Some(&json!("[DONE]")),
        "an OpenAI stream ends with [DONE]"
    );
    for (i, f) in frames.iter().enumerate() {
        if f == "[DONE]" {
            assert_eq!(i, frames.len() - 1, "[DONE] is last");
            continue;
        }
        if let Some(e) = f.get("error") {
            assert!(r.error.is_none());
            r.error = Some(e.clone());
            continue;
        }
        assert!(r.error.is_none(), "nothing but [DONE] after an error");
        assert_eq!(f["object"], "chat.completion.chunk");
        assert_eq!(f["id"], "chatcmpl-gw-1");
        assert_eq!(f["model"], "claude");
        assert_eq!(f["created"], 1_700_000_123);
        assert_eq!(f.get("usage").is_some(), include_usage, "usage key: {f}");
        let choices = f["choices"].as_array().unwrap();
        if choices.is_empty() {
            assert!(include_usage && r.usage.is_none());
            r.usage = Some(f["usage"].clone());
            continue;
        }
        assert!(r.usage.is_none(), "the usage chunk is the last chunk");
        assert!(f["usage"].is_null());
        let c = &choices[0];
        if i == 0 {
            assert_eq!(c["delta"]["role"], "assistant", "first chunk has the role");
        } else {
            assert!(c["delta"].get("role").is_none());
        }
        if let Some(t) = c["delta"]["content"].as_str() {
            r.content.push_str(t);
        }
        for tc in c["delta"]["tool_calls"].as_array().into_iter().flatten() {
            let idx = tc["index"].as_u64().unwrap() as usize;
            if idx == r.tools.len() {
                assert_eq!(tc["type"], "function");
                r.tools.push((
                    tc["id"].as_str().unwrap().to_owned(),
                    tc["function"]["name"].as_str().unwrap().to_owned(),
                    String::new(),
                ));
            }
            r.tools[idx]
                .2
                .push_str(tc["function"]["arguments"].as_str().unwrap_or(""));
        }
        if let Some(fr) = c["finish_reason"].as_str() {
            assert!(r.finish_reason.is_none(), "one finish_reason");
            assert_eq!(c["delta"], json!({}));
            r.finish_reason = Some(fr.to_owned());
        }
    }
    if r.error.is_none() {
        assert!(r.finish_reason.is_some(), "a finish_reason before [DONE]");
        assert_eq!(r.usage.is_some(), include_usage);
    }
    r
}

/// What the Anthropic SDK would assemble from a stream (content blocks by index, tool inputs
/// parsed from their partial JSON), checking the event order rules on the way.
#[derive(Debug, Default, PartialEq)]
struct AnthropicResult {
    start: Value,
    blocks: Vec<Value>,
    stop_reason: Option<String>,
    usage: Option<Value>,
    error: Option<Value>,
}

fn assemble_anthropic(bytes: &[u8]) -> AnthropicResult {
    let frames = anthropic_frames(bytes);
    let mut r = AnthropicResult::default();
    let mut partial: Vec<String> = Vec::new();
    let mut open: Option<usize> = None;
    let mut stopped = false;
    for (i, (name, v)) in frames.iter().enumerate() {
        assert!(!stopped, "nothing after message_stop");
        assert!(r.error.is_none(), "nothing after an error");
        if i == 0 {
            assert!(
                name == "message_start" || name == "error",
                "message_start (or an error) comes first"
            );
        }
        match name.as_str() {
            "message_start" => {
                assert_eq!(i, 0);
                assert_eq!(v["message"]["id"], "msg_gw_1");
                assert_eq!(v["message"]["model"], "gpt");
                assert_eq!(v["message"]["role"], "assistant");
                assert_eq!(v["message"]["content"], json!([]));
                assert!(v["message"]["usage"]["input_tokens"].is_u64());
                r.start = v.clone();
            }
            "content_block_start" => {
                assert!(open.is_none(), "one block open at a time");
                let idx = v["index"].as_u64().unwrap() as usize;
                assert_eq!(idx, r.blocks.len(), "blocks are numbered in order");
                r.blocks.push(v["content_block"].clone());
                partial.push(String::new());
                open = Some(idx);
            }
            "content_block_delta" => {
                let idx = v["index"].as_u64().unwrap() as usize;
                assert!(idx < r.blocks.len(), "a delta names a started block");
                let d = &v["delta"];
                match d["type"].as_str().unwrap() {
                    "text_delta" => {
                        let t = format!(
                            "{}{}",
                            r.blocks[idx]["text"].as_str().unwrap(),
                            d["text"].as_str().unwrap()
                        );
                        r.blocks[idx]["text"] = json!(t);
                    }
                    "input_json_delta" => {
                        partial[idx].push_str(d["partial_json"].as_str().unwrap())
                    }
                    other => panic!("unexpected delta {other}"),
                }
            }
            "content_block_stop" => {
                let idx = v["index"].as_u64().unwrap() as usize;
                assert_eq!(open, Some(idx), "stop closes the open block");
                open = None;
            }
            "message_delta" => {
                assert!(open.is_none(), "blocks are stopped before message_delta");
                r.stop_reason = Some(v["delta"]["stop_reason"].as_str().unwrap().to_owned());
                r.usage = Some(v["usage"].clone());
            }
            "message_stop" => {
                assert!(r.stop_reason.is_some(), "message_delta before message_stop");
                stopped = true;
            }
            "error" => r.error = Some(v["error"].clone()),
            "ping" => {}
            other => panic!("unexpected event {other}"),
        }
    }
    assert!(stopped || r.error.is_some(), "the stream is closed");
    for (b, p) in r.blocks.iter_mut().zip(&partial) {
        if b["type"] == "tool_use" {
            // A cut stream may leave a tool's JSON unfinished; SDKs parse it leniently.
            b["input"] = if p.is_empty() {
                json!({})
            } else {
                serde_json::from_str(p).unwrap_or_else(|_| json!(p))
            };
        }
    }
    r
}

// ---------------------------------------------------------------------------------------------
// Anthropic upstream → OpenAI client

#[test]
fn anthropic_text_to_openai_exact() {
    let out = run(to_openai(), [ANTHROPIC_TEXT.as_bytes().to_vec()]);
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-gw-1", "object": "chat.completion.chunk", "created": 1_700_000_123, "model": "claude",
               "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}], "usage": null})
    };
    let mut want = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    for t in ["tok0", " tok1", " tok2", " tok3", " tok4"] {
        want.push(chunk(json!({ "content": t }), Value::Null));
    }
    want.push(chunk(json!({}), json!("length")));
    want.push(json!({"id": "chatcmpl-gw-1", "object": "chat.completion.chunk", "created": 1_700_000_123, "model": "claude",
                     "choices": [], "usage": {"prompt_tokens": 14, "completion_tokens": 5, "total_tokens": 19,
                                              "prompt_tokens_details": {"cached_tokens": 0}}}));
    want.push(json!("[DONE]"));
    assert_eq!(openai_frames(&out), want);
}

#[test]
fn anthropic_text_to_openai_without_usage() {
    let mut t = AnthropicToOpenAiStream::new("chatcmpl-gw-1", "claude", 1_700_000_123, false);
    let mut out = t.push(ANTHROPIC_TEXT.as_bytes());
    assert!(t.is_done());
    assert!(t.finish().is_empty());
    assert!(
        t.push(b"event: ping\ndata: {\"type\":\"ping\"}\n\n")
            .is_empty()
    );
    out.extend(t.finish());
    let r = assemble_openai(&out, false);
    assert_eq!(r.content, "tok0 tok1 tok2 tok3 tok4");
    assert_eq!(r.finish_reason.as_deref(), Some("length"));
    // The translator still knows the usage, for accounting.
    assert_eq!(
        t.usage(),
        Some(Usage {
            prompt: 14,
            completion: 5
        })
    );
}

#[test]
fn anthropic_tools_to_openai() {
    let mut t = to_openai();
    assert_eq!(t.usage(), None);
    let out = run_keep(&mut t, ANTHROPIC_TOOLS);
    let r = assemble_openai(&out, true);
    assert_eq!(r.content, "Je vérifie la météo à Paris 🌦 et à Zürich.");
    assert_eq!(
        r.tools,
        vec![
            (
                "toolu_01T1x1fJ34qAmk2tNTrN7Up6".to_owned(),
                "get_weather".to_owned(),
                "{\"city\": \"Paris\", \"unit\": \"celsius\"}".to_owned()
            ),
            (
                "toolu_01CQ4uu3m8uMxJqXeBXgVfqb".to_owned(),
                "get_weather".to_owned(),
                "{\"city\": \"Zürich\"}".to_owned()
            ),
        ]
    );
    assert_eq!(r.finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(
        r.usage,
        Some(
            json!({"prompt_tokens": 2520, "completion_tokens": 89, "total_tokens": 2609, "prompt_tokens_details": {"cached_tokens": 2048}})
        )
    );
    assert_eq!(
        t.usage(),
        Some(Usage {
            prompt: 2520,
            completion: 89
        })
    );
}

fn run_keep<T: Translator>(t: &mut T, input: &str) -> Vec<u8> {
    let mut out = t.push(input.as_bytes());
    out.extend(t.finish());
    out
}

#[test]
fn anthropic_error_to_openai_in_stream() {
    let mut t = to_openai();
    let out = run_keep(&mut t, ANTHROPIC_ERROR);
    let r = assemble_openai(&out, true);
    assert_eq!(r.content, "Hello");
    assert_eq!(
        r.error,
        Some(
            json!({"message": "Overloaded", "type": "server_error", "param": null, "code": "overloaded"})
        )
    );
    assert!(t.is_done());
    assert_eq!(
        t.usage(),
        Some(Usage {
            prompt: 10,
            completion: 1
        })
    );
}

#[test]
fn anthropic_streams_split_anywhere() {
    for (name, input) in ANTHROPIC_FIXTURES {
        assert_split_invariant(name, input, to_openai);
        assert_split_invariant(name, input, || {
            AnthropicToOpenAiStream::new("chatcmpl-gw-1", "claude", 1_700_000_123, false)
        });
    }
}

#[test]
fn anthropic_stream_cut_then_finish() {
    // Cut inside the third text delta's data line.
    let cut = ANTHROPIC_TEXT.find("\" tok2\"").unwrap();
    let mut t = to_openai();
    let mut out = t.push(&ANTHROPIC_TEXT.as_bytes()[..cut]);
    assert!(!t.is_done());
    out.extend(t.finish());
    assert!(t.is_done());
    let r = assemble_openai(&out, true);
    assert_eq!(r.content, "tok0 tok1");
    assert_eq!(r.finish_reason.as_deref(), Some("stop"));
    // Usage as the upstream declared it so far (message_start's placeholder output count).
    assert_eq!(
        r.usage,
        Some(
            json!({"prompt_tokens": 14, "completion_tokens": 1, "total_tokens": 15, "prompt_tokens_details": {"cached_tokens": 0}})
        )
    );
    assert_eq!(
        t.usage(),
        Some(Usage {
            prompt: 14,
            completion: 1
        })
    );

    // Cut after message_delta: its finish reason and usage hold.
    let cut = ANTHROPIC_TEXT.find("event: message_stop").unwrap();
    let out = run(to_openai(), [ANTHROPIC_TEXT.as_bytes()[..cut].to_vec()]);
    let r = assemble_openai(&out, true);
    assert_eq!(r.finish_reason.as_deref(), Some("length"));
    assert_eq!(r.usage.unwrap()["completion_tokens"], 5);

    // Nothing at all: still a well-formed (empty) completion.
    let r = assemble_openai(&run(to_openai(), []), true);
    assert_eq!(r.content, "");
    assert_eq!(r.usage.unwrap()["total_tokens"], 0);
}

#[test]
fn anthropic_stream_cut_anywhere_is_well_formed() {
    for (name, input) in ANTHROPIC_FIXTURES {
        let bytes = input.as_bytes();
        let full = assemble_openai(&run(to_openai(), [bytes.to_vec()]), true);
        for cut in 0..=bytes.len() {
            let out = run(to_openai(), [bytes[..cut].to_vec()]);
            let r = assemble_openai(&out, true);
            // What was sent is a prefix of the full answer.
            assert!(full.content.starts_with(&r.content), "{name} cut {cut}");
            assert!(r.tools.len() <= full.tools.len(), "{name} cut {cut}");
        }
    }
}

#[test]
fn anthropic_stream_overflow() {
    let mut t = to_openai().with_limit(256);
    let mut out = t.push(ANTHROPIC_TEXT.as_bytes());
    // message_start's data line is over 256 bytes.
    assert!(t.is_done());
    assert!(t.push(b"more").is_empty());
    out.extend(t.finish());
    let r = assemble_openai(&out, true);
    let e = r.error.unwrap();
    assert_eq!(e["type"], "server_error");
    assert_eq!(e["code"], "stream_event_too_large");
    assert!(e["message"].as_str().unwrap().contains("256 bytes"));
}

// ---------------------------------------------------------------------------------------------
// OpenAI upstream → Anthropic client

#[test]
fn openai_text_to_anthropic_exact() {
    let mut t = to_anthropic();
    let out = run_keep(&mut t, OPENAI_TEXT_USAGE);
    let frames = anthropic_frames(&out);
    let delta = |text: &str| json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}});
    let want = vec![
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_gw_1", "type": "message", "role": "assistant", "model": "gpt",
                   "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 0, "output_tokens": 0}}}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        ("content_block_delta", delta("tok0")),
        ("content_block_delta", delta(" tok1")),
        ("content_block_delta", delta(" tok2")),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                   "usage": {"input_tokens": 14, "cache_read_input_tokens": 0, "output_tokens": 3}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ];
    let want: Vec<(String, Value)> = want.into_iter().map(|(n, v)| (n.to_owned(), v)).collect();
    assert_eq!(frames, want);
    assert_eq!(
        t.usage(),
        Some(Usage {
            prompt: 14,
            completion: 3
        })
    );
}

#[test]
fn openai_tools_to_anthropic() {
    let mut t = to_anthropic();
    let out = run_keep(&mut t, OPENAI_TOOLS);
    let r = assemble_anthropic(&out);
    assert_eq!(
        r.blocks,
        vec![
            json!({"type": "text", "text": "Je vérifie 🌦"}),
            json!({"type": "tool_use", "id": "call_DdmO9pD3xa9XTPNJ32zg2hcA", "name": "get_weather", "input": {"city": "Paris"}}),
            json!({"type": "tool_use", "id": "call_ABxTg2bzRwK3hTGr5Pq1vmqB", "name": "get_weather", "input": {"city": "Zürich"}}),
        ]
    );
    assert_eq!(r.stop_reason.as_deref(), Some("tool_use"));
    assert_eq!(
        r.usage,
        Some(json!({"input_tokens": 72, "cache_read_input_tokens": 2048, "output_tokens": 52}))
    );
    assert_eq!(
        t.usage(),
        Some(Usage {
            prompt: 2120,
            completion: 52
        })
    );
}

#[test]
fn openai_without_usage_to_anthropic() {
    let mut t = to_anthropic();
    let r = assemble_anthropic(&run_keep(&mut t, OPENAI_TEXT));
    assert_eq!(r.blocks, vec![json!({"type": "text", "text": "tok0 tok1"})]);
    assert_eq!(r.stop_reason.as_deref(), Some("max_tokens"));
    assert_eq!(r.usage, Some(json!({"output_tokens": 0})));
    assert_eq!(t.usage(), None);
}

#[test]
fn openai_error_to_anthropic_in_stream() {
    let mut t = to_anthropic();
    let r = assemble_anthropic(&run_keep(&mut t, OPENAI_ERROR));
    assert_eq!(r.blocks, vec![json!({"type": "text", "text": "Hel"})]);
    assert_eq!(
        r.error,
        Some(
            json!({"type": "api_error", "message": "The server had an error while processing your request. Sorry about that!"})
        )
    );
    assert!(t.is_done());
}

#[test]
fn openai_streams_split_anywhere() {
    for (name, input) in OPENAI_FIXTURES {
        assert_split_invariant(name, input, to_anthropic);
    }
}

#[test]
fn openai_stream_cut_then_finish() {
    // Cut inside the second tool call's arguments chunk.
    let cut = OPENAI_TOOLS.find("Zürich").unwrap();
    let mut t = to_anthropic();
    let mut out = t.push(&OPENAI_TOOLS.as_bytes()[..cut]);
    out.extend(t.finish());
    let r = assemble_anthropic(&out);
    assert_eq!(r.blocks.len(), 3);
    assert_eq!(r.blocks[1]["input"], json!({"city": "Paris"}));
    assert_eq!(r.blocks[2]["input"], json!({}));
    assert_eq!(r.stop_reason.as_deref(), Some("end_turn"));
    assert_eq!(t.usage(), None);

    // Cut after the usage chunk, before [DONE].
    let cut = OPENAI_TOOLS.find("data: [DONE]").unwrap();
    let mut t = to_anthropic();
    let r = assemble_anthropic(&run_keep(&mut t, &OPENAI_TOOLS[..cut]));
    assert_eq!(r.stop_reason.as_deref(), Some("tool_use"));
    assert_eq!(
        t.usage(),
        Some(Usage {
            prompt: 2120,
            completion: 52
        })
    );

    // Nothing at all.
    let r = assemble_anthropic(&run(to_anthropic(), []));
    assert!(r.blocks.is_empty());
}

#[test]
fn openai_stream_cut_anywhere_is_well_formed() {
    for (name, input) in OPENAI_FIXTURES {
        let bytes = input.as_bytes();
        for cut in 0..=bytes.len() {
            let r = assemble_anthropic(&run(to_anthropic(), [bytes[..cut].to_vec()]));
            assert!(r.blocks.len() <= 3, "{name} cut {cut}");
        }
    }
}

#[test]
fn openai_stream_overflow() {
    let mut t = to_anthropic().with_limit(128);
    let out = t.push(OPENAI_TEXT.as_bytes());
    assert!(t.is_done());
    assert!(t.finish().is_empty());
    let r = assemble_anthropic(&out);
    assert_eq!(r.error.unwrap()["type"], "api_error");
}

#[test]
fn parallel_tool_deltas_interleaved() {
    // Some servers interleave argument deltas of parallel calls; each goes to its own block.
    let chunk = |delta: Value, finish: Value| {
        format!(
            "data: {}\n\n",
            json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        )
    };
    let input = [
        chunk(
            json!({"role": "assistant", "tool_calls": [
            {"index": 0, "id": "call_a", "type": "function", "function": {"name": "f", "arguments": "{\"x\":"}},
            {"index": 1, "id": "call_b", "type": "function", "function": {"name": "g", "arguments": "{\"y\":"}}]}),
            Value::Null,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
            Value::Null,
        ),
        chunk(
            json!({"tool_calls": [{"index": 1, "function": {"arguments": "2}"}}]}),
            Value::Null,
        ),
        chunk(json!({}), json!("tool_calls")),
        "data: [DONE]\n\n".to_owned(),
    ]
    .concat();
    let frames = anthropic_frames(&run(to_anthropic(), [input.into_bytes()]));
    let mut inputs = vec![String::new(), String::new()];
    for (name, v) in &frames {
        if name == "content_block_delta" {
            inputs[v["index"].as_u64().unwrap() as usize]
                .push_str(v["delta"]["partial_json"].as_str().unwrap());
        }
    }
    assert_eq!(inputs, ["{\"x\":1}", "{\"y\":2}"]);
}

// ---------------------------------------------------------------------------------------------
// both directions

#[test]
fn round_trips_keep_text_and_tools() {
    // Anthropic → OpenAI → Anthropic: the same text and tool calls (thinking is dropped).
    let openai = run(to_openai(), [ANTHROPIC_TOOLS.as_bytes().to_vec()]);
    let back = assemble_anthropic(&run(to_anthropic(), [openai]));
    assert_eq!(
        back.blocks,
        vec![
            json!({"type": "text", "text": "Je vérifie la météo à Paris 🌦 et à Zürich."}),
            json!({"type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather", "input": {"city": "Paris", "unit": "celsius"}}),
            json!({"type": "tool_use", "id": "toolu_01CQ4uu3m8uMxJqXeBXgVfqb", "name": "get_weather", "input": {"city": "Zürich"}}),
        ]
    );
    assert_eq!(back.stop_reason.as_deref(), Some("tool_use"));
    assert_eq!(
        back.usage,
        Some(json!({"input_tokens": 472, "cache_read_input_tokens": 2048, "output_tokens": 89}))
    );

    // OpenAI → Anthropic → OpenAI.
    let anthropic = run(to_anthropic(), [OPENAI_TOOLS.as_bytes().to_vec()]);
    let back = assemble_openai(&run(to_openai(), [anthropic]), true);
    assert_eq!(back.content, "Je vérifie 🌦");
    assert_eq!(back.tools.len(), 2);
    assert_eq!(back.tools[1].2, "{\"city\": \"Zürich\"}");
    assert_eq!(back.finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(back.usage.unwrap()["prompt_tokens"], 2120);
}
