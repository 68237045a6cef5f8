#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::OnceLock;

use serde_json::{Value, json};

use super::*;

/// (name, text) of the corpora in testdata/estimate (see make_corpora.py there).
pub(super) const CORPORA: [(&str, &str); 5] = [
    (
        "english",
        include_str!("../../testdata/estimate/english.txt"),
    ),
    ("code", include_str!("../../testdata/estimate/code.txt")),
    ("json", include_str!("../../testdata/estimate/json.txt")),
    ("cjk", include_str!("../../testdata/estimate/cjk.txt")),
    ("mixed", include_str!("../../testdata/estimate/mixed.txt")),
];

fn tok(e: Encoding) -> &'static Tokenizer {
    static O: OnceLock<Tokenizer> = OnceLock::new();
    static C: OnceLock<Tokenizer> = OnceLock::new();
    let cell = match e {
        Encoding::O200k => &O,
        Encoding::Cl100k => &C,
    };
    cell.get_or_init(|| Tokenizer::load(e).expect("embedded vocabulary loads"))
}

fn reference(e: Encoding) -> &'static tiktoken_rs::CoreBPE {
    match e {
        Encoding::O200k => tiktoken_rs::o200k_base_singleton(),
        Encoding::Cl100k => tiktoken_rs::cl100k_base_singleton(),
    }
}

const BOTH: [Encoding; 2] = [Encoding::O200k, Encoding::Cl100k];

fn pct(estimate: u64, exact: u64) -> f64 {
    (estimate as f64 - exact as f64) / exact as f64 * 100.0
}

// ---- exact tokenizer ----

#[test]
fn known_counts() {
    for e in BOTH {
        let t = tok(e);
        assert_eq!(t.count("hello world"), 2, "{e:?}");
        assert_eq!(t.count(""), 0);
        assert_eq!(t.count(" "), 1);
    }
    // Checked against tiktoken (Python and tiktoken-rs).
    let o = tok(Encoding::O200k);
    let c = tok(Encoding::Cl100k);
    assert_eq!(o.encode("hello world"), vec![24912, 2375]);
    assert_eq!(c.encode("hello world"), vec![15339, 1917]);
    assert_eq!(c.count("tiktoken is great!"), 6);
    assert_eq!(o.count("tiktoken is great!"), 6);
    // Special-token text counts as ordinary text.
    assert_eq!(c.count("<|endoftext|>"), 7);
    assert_eq!(o.vocabulary_size(), 199_998);
    assert_eq!(c.vocabulary_size(), 100_256);
}

/// The embedded vocabularies are tiktoken's, rank for rank.
#[test]
fn vocabularies_match_tiktoken() {
    for (e, data) in [
        (
            Encoding::O200k,
            &include_bytes!("../../assets/o200k_base.bpe")[..],
        ),
        (
            Encoding::Cl100k,
            &include_bytes!("../../assets/cl100k_base.bpe")[..],
        ),
    ] {
        let (mut at, mut rank) = (0usize, 0u32);
        while at < data.len() {
            let len = usize::from(data[at]);
            let ours = &data[at + 1..at + 1 + len];
            let theirs = reference(e).decode_bytes(&[rank]).expect("rank exists");
            assert_eq!(ours, theirs.as_slice(), "{e:?} rank {rank}");
            at += 1 + len;
            rank += 1;
        }
        assert_eq!(rank as usize, tok(e).vocabulary_size());
    }
}

fn assert_same_as_tiktoken(e: Encoding, text: &str, what: &str) {
    let ours = tok(e).encode(text);
    let theirs = reference(e).encode_ordinary(text);
    assert_eq!(ours.len(), theirs.len(), "{e:?} {what}: count differs");
    assert_eq!(ours, theirs, "{e:?} {what}: tokens differ");
    assert_eq!(
        tok(e).count(text),
        theirs.len(),
        "{e:?} {what}: count() differs"
    );
}

#[test]
fn corpora_match_tiktoken() {
    for e in BOTH {
        for (name, text) in CORPORA {
            assert_same_as_tiktoken(e, text, name);
        }
    }
}

#[test]
fn edge_cases_match_tiktoken() {
    let long_word = "a".repeat(5000);
    let long_letters: String = (0..3000u32)
        .map(|i| char::from(b'a' + (i.wrapping_mul(2_654_435_761) >> 27) as u8 % 26))
        .collect();
    let spaces = format!("x{}y", " ".repeat(300));
    let cases = [
        "   leading and trailing   ",
        "tabs\tand\nnewlines\r\n\r\n\n  \n",
        "trailing spaces at end   ",
        "it's I'LL we'd they've YOU'RE don't",
        "numbers 1 12 123 1234 12345 3.14159 -42 1e10 0x1F",
        "emoji 😀👍🏽🇫🇷 and ZWJ 👨‍👩‍👧",
        "façade naïve coöperate Ünïcödé ß ẞ",
        "日本語のテキストと中文文本和한국어",
        "Ελληνικά и русский текст עברית العربية हिन्दी ไทย",
        "<|endoftext|> <|fim_prefix|> <|im_start|>",
        "combining marks: e\u{301} a\u{308}\u{301} \u{301}alone",
        "\u{0}\u{1}\u{7f} control chars",
        "https://example.com/a/b?c=d&e=f#g",
        "    indented code\n        more\n",
        long_word.as_str(),
        long_letters.as_str(),
        spaces.as_str(),
    ];
    for e in BOTH {
        for (i, text) in cases.iter().enumerate() {
            assert_same_as_tiktoken(e, text, &format!("case {i}"));
        }
    }
}

/// Many substrings of the corpora at odd offsets (not starting at whitespace, cut mid-run).
#[test]
fn substrings_match_tiktoken() {
    for e in BOTH {
        for (name, text) in CORPORA {
            let mut at = 7usize;
            while at + 600 < text.len() {
                let mut a = at;
                while !text.is_char_boundary(a) {
                    a += 1;
                }
                let mut b = a + 311 + at % 97;
                while !text.is_char_boundary(b) {
                    b += 1;
                }
                let s = &text[a..b];
                assert_eq!(
                    tok(e).count(s),
                    reference(e).encode_ordinary(s).len(),
                    "{e:?} {name} @{a}"
                );
                at += 4999;
            }
        }
    }
}

// ---- bounded estimator ----

/// Sampled estimate within this many percent of exact, every corpus, both encodings.
const SAMPLED_BOUND_PCT: f64 = 3.0;
/// The class model alone (no tokenizer for the encoding).
const MODEL_ONLY_BOUND_PCT: f64 = 6.0;

#[test]
fn sampled_estimate_within_bound() {
    let cfg = EstimateConfig::default();
    for e in BOTH {
        for (name, text) in CORPORA {
            assert!(
                text.len() > cfg.exact_limit_bytes,
                "{name} must exercise sampling"
            );
            let exact = tok(e).count(text) as u64;
            let est = count_segments(tok(e), &[text], &cfg);
            let err = pct(est, exact);
            assert!(
                err.abs() <= SAMPLED_BOUND_PCT,
                "{e:?} {name}: {est} vs {exact} ({err:+.2}%)"
            );
        }
    }
}

/// All corpora as one ~300 KiB prompt (≈ 80k tokens), one string or split in messages.
#[test]
fn sampled_estimate_large_prompt() {
    let cfg = EstimateConfig::default();
    let all: Vec<&str> = CORPORA.iter().map(|(_, t)| *t).collect();
    let joined = all.concat();
    for e in BOTH {
        let exact: u64 = all.iter().map(|t| tok(e).count(t) as u64).sum();
        for (what, est) in [
            ("joined", count_segments(tok(e), &[joined.as_str()], &cfg)),
            ("segments", count_segments(tok(e), &all, &cfg)),
        ] {
            let err = pct(est, exact);
            assert!(
                err.abs() <= SAMPLED_BOUND_PCT,
                "{e:?} {what}: {est} vs {exact} ({err:+.2}%)"
            );
        }
    }
}

/// Many small messages that together exceed the limit: windows span message boundaries.
#[test]
fn sampled_estimate_many_small_segments() {
    let cfg = EstimateConfig::default();
    let (_, text) = CORPORA[0];
    let segments: Vec<&str> = text.split_inclusive("\n\n").collect();
    assert!(segments.len() > 200);
    for e in BOTH {
        let exact: u64 = segments.iter().map(|s| tok(e).count(s) as u64).sum();
        let est = count_segments(tok(e), &segments, &cfg);
        let err = pct(est, exact);
        assert!(
            err.abs() <= SAMPLED_BOUND_PCT,
            "{e:?}: {est} vs {exact} ({err:+.2}%)"
        );
    }
}

/// Text the model was not fitted on (random letters, base64): the samples rescale it.
#[test]
fn sampled_estimate_adversarial_text() {
    let cfg = EstimateConfig::default();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let b64: String = (0..100_000)
        .map(|_| {
            char::from(
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
                    [(next() % 64) as usize],
            )
        })
        .collect();
    let words: String = (0..100_000)
        .map(|i| {
            if i % 9 == 8 {
                ' '
            } else {
                char::from(b'a' + (next() % 26) as u8)
            }
        })
        .collect();
    for e in BOTH {
        for (name, text) in [("base64", &b64), ("random words", &words)] {
            let exact = tok(e).count(text) as u64;
            let est = count_segments(tok(e), &[text.as_str()], &cfg);
            let err = pct(est, exact);
            assert!(
                err.abs() <= 5.0,
                "{e:?} {name}: {est} vs {exact} ({err:+.2}%)"
            );
        }
    }
}

#[test]
fn model_only_within_bound() {
    for e in BOTH {
        for (name, text) in CORPORA {
            let exact = tok(e).count(text) as u64;
            let est = model_only(e, &[text]);
            let err = pct(est, exact);
            assert!(
                err.abs() <= MODEL_ONLY_BOUND_PCT,
                "{e:?} {name}: {est} vs {exact} ({err:+.2}%)"
            );
        }
    }
}

/// At the limit the count is exact; one byte more switches to the estimate.
#[test]
fn threshold_boundary() {
    let (_, text) = CORPORA[0];
    let cfg = EstimateConfig::default();
    let mut end = cfg.exact_limit_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let at_limit = &text[..end];
    for e in BOTH {
        let exact = reference(e).encode_ordinary(at_limit).len() as u64;
        assert_eq!(count_segments(tok(e), &[at_limit], &cfg), exact);
        // Split in two strings, still exact.
        let (a, b) = at_limit.split_at(at_limit.len() / 2);
        let split_exact = (tok(e).count(a) + tok(e).count(b)) as u64;
        assert_eq!(count_segments(tok(e), &[a, b], &cfg), split_exact);
        let over = &text[..end + 1];
        let est = count_segments(tok(e), &[over], &cfg);
        let exact_over = tok(e).count(over) as u64;
        assert!(pct(est, exact_over).abs() <= SAMPLED_BOUND_PCT);
    }
    // A known exact count at the boundary (from tiktoken): pins the corpus and the rule.
    assert_eq!(
        count_segments(tok(Encoding::O200k), &[at_limit], &cfg),
        7712
    );
    assert_eq!(
        count_segments(tok(Encoding::Cl100k), &[at_limit], &cfg),
        7698
    );
}

// ---- requests ----

fn c(e: Encoding, s: &str) -> u64 {
    tok(e).count(s) as u64
}

/// OpenAI cookbook "How to count tokens with tiktoken": its example conversation, counted by
/// tiktoken-rs's port of the cookbook's `num_tokens_from_messages`.
#[test]
fn openai_cookbook_example() {
    let body = json!({"model": "gpt-4o", "messages": [
        {"role": "system", "content": "You are a helpful, pattern-following assistant that translates corporate jargon into plain English."},
        {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
        {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
        {"role": "system", "name": "example_user", "content": "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage."},
        {"role": "system", "name": "example_assistant", "content": "Let's talk later when we're less busy about how to do better."},
        {"role": "user", "content": "This late pivot means we don't have time to boil the ocean for the client project."},
    ]});
    let messages: Vec<tiktoken_rs::ChatCompletionRequestMessage> = body["messages"]
        .as_array()
        .expect("array")
        .iter()
        .map(|m| tiktoken_rs::ChatCompletionRequestMessage {
            role: m["role"].as_str().unwrap_or_default().to_string(),
            content: m["content"].as_str().map(str::to_string),
            name: m["name"].as_str().map(str::to_string),
            ..Default::default()
        })
        .collect();
    for (e, model, count) in [
        (Encoding::Cl100k, "gpt-4", 128),
        (Encoding::O200k, "gpt-4o", 123),
    ] {
        let theirs = tiktoken_rs::num_tokens_from_messages(model, &messages).expect("known model");
        assert_eq!(theirs, count);
        assert_eq!(
            prompt_tokens(Api::Chat, &body, tok(e)),
            count as u64,
            "{model}"
        );
    }
}

#[test]
fn chat_content_parts_tools_and_images() {
    let e = Encoding::O200k;
    let png = png_data_url(1024, 1024);
    let body = json!({
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this image?"},
                {"type": "image_url", "image_url": {"url": png}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/dog.jpg"}},
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21°C"},
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
    });
    let tool_json = body["tools"][0]["function"].to_string();
    let expected = 3 * 3 + 3
        + c(e, "user") + c(e, "What is in this image?")
        + (85 + 4 * 170) // 1024×1024 png: 768×768 → 4 tiles
        + 85 // low detail
        + OPENAI_IMAGE_UNKNOWN_FOR_TEST
        + c(e, "assistant") + 3 + c(e, "get_weather") + c(e, "{\"city\":\"Paris\"}")
        + c(e, "tool") + c(e, "call_1") + c(e, "sunny, 21°C")
        + 8 + c(e, &tool_json);
    assert_eq!(prompt_tokens(Api::Chat, &body, tok(e)), expected);
}

const OPENAI_IMAGE_UNKNOWN_FOR_TEST: u64 = request::OPENAI_IMAGE_UNKNOWN;

#[test]
fn completions_prompt_shapes() {
    let e = Encoding::Cl100k;
    let t = tok(e);
    assert_eq!(
        prompt_tokens(
            Api::Completions,
            &json!({"prompt": "Say this is a test"}),
            t
        ),
        c(e, "Say this is a test")
    );
    assert_eq!(
        prompt_tokens(
            Api::Completions,
            &json!({"prompt": ["hello world", "foo"], "suffix": " bar"}),
            t
        ),
        2 + c(e, "foo") + c(e, " bar")
    );
    assert_eq!(
        prompt_tokens(Api::Completions, &json!({"prompt": [1, 2, 3]}), t),
        3
    );
    assert_eq!(
        prompt_tokens(Api::Completions, &json!({"prompt": [[1, 2], [3, 4, 5]]}), t),
        5
    );
    assert_eq!(prompt_tokens(Api::Completions, &json!({}), t), 0);
}

#[test]
fn embeddings_input_shapes() {
    let e = Encoding::O200k;
    let t = tok(e);
    assert_eq!(
        prompt_tokens(Api::Embeddings, &json!({"input": "hello world"}), t),
        2
    );
    assert_eq!(
        prompt_tokens(
            Api::Embeddings,
            &json!({"input": ["hello world", "hello world"]}),
            t
        ),
        4
    );
    assert_eq!(
        prompt_tokens(Api::Embeddings, &json!({"input": [[1, 2, 3], [4]]}), t),
        4
    );
    assert_eq!(
        prompt_tokens(Api::Embeddings, &json!({"input": [9, 9]}), t),
        2
    );
}

#[test]
fn anthropic_messages() {
    let e = Encoding::O200k;
    let body = json!({
        "model": "claude-sonnet-4", "max_tokens": 1024,
        "system": [{"type": "text", "text": "You are terse."}],
        "messages": [
            {"role": "user", "content": "hello world"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "x"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "42"}]},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png_base64(1568, 784)}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
            ]}
        ],
        "tools": [{"name": "lookup", "description": "Look up", "input_schema": {"type": "object"}}]
    });
    let tool_json = body["tools"][0].to_string();
    let expected = c(e, "You are terse.")
        + 3 * 3 + 3
        + c(e, "user") + 2
        + c(e, "assistant") + c(e, "Checking.") + c(e, "lookup") + c(e, "{\"q\":\"x\"}")
        + c(e, "user") + c(e, "42")
        + 1600 // 1568×784 = 1640 by w×h/750, capped at Anthropic's ~1600 maximum
        + 1600 // URL image: size unknown
        + 346 + 8 + c(e, &tool_json);
    assert_eq!(prompt_tokens(Api::Messages, &body, tok(e)), expected);
    // System as a plain string.
    let plain = json!({"system": "You are terse.", "messages": []});
    assert_eq!(
        prompt_tokens(Api::Messages, &plain, tok(e)),
        c(e, "You are terse.") + 3
    );
}

#[test]
fn max_output_rules() {
    let b = |v: Value| v;
    assert_eq!(max_output_tokens(Api::Chat, &b(json!({})), 512), 512);
    assert_eq!(
        max_output_tokens(Api::Chat, &b(json!({"max_tokens": 100})), 512),
        100
    );
    assert_eq!(
        max_output_tokens(
            Api::Chat,
            &b(json!({"max_tokens": 100, "max_completion_tokens": 300})),
            512
        ),
        300
    );
    assert_eq!(
        max_output_tokens(
            Api::Chat,
            &b(json!({"max_completion_tokens": 300, "n": 3})),
            512
        ),
        900
    );
    assert_eq!(max_output_tokens(Api::Chat, &b(json!({"n": 0})), 10), 10);
    assert_eq!(
        max_output_tokens(
            Api::Completions,
            &b(json!({"max_tokens": 50, "n": 2, "best_of": 5})),
            512
        ),
        250
    );
    assert_eq!(
        max_output_tokens(
            Api::Completions,
            &b(json!({"max_completion_tokens": 50})),
            512
        ),
        512
    );
    assert_eq!(
        max_output_tokens(Api::Embeddings, &b(json!({"max_tokens": 50})), 512),
        0
    );
    assert_eq!(
        max_output_tokens(Api::Messages, &b(json!({"max_tokens": 4096})), 512),
        4096
    );
    assert_eq!(
        max_output_tokens(Api::Messages, &b(json!({"max_tokens": "x"})), 512),
        512
    );
}

#[test]
fn tokenizers_estimate_and_fallback() {
    let only_o200k = Tokenizers::load(&[Encoding::O200k, Encoding::O200k]).expect("loads");
    assert!(only_o200k.get(Encoding::Cl100k).is_none());
    let body = json!({"messages": [{"role": "user", "content": "hello world"}], "max_tokens": 10});
    assert_eq!(
        only_o200k.estimate(Api::Chat, &body, Encoding::O200k, 99),
        3 + 1 + 2 + 3 + 10
    );
    // cl100k not loaded: the class model answers, no load on the request path.
    let fallback = only_o200k.estimate(Api::Chat, &body, Encoding::Cl100k, 99);
    assert!((16..=22).contains(&fallback), "{fallback}");
    let g = init_global(&[Encoding::O200k]).expect("loads");
    assert!(std::ptr::eq(g, global().expect("set")));
}

#[test]
fn image_sizes_from_headers() {
    assert_eq!(image_size(&png_data_url(640, 480)), Some((640, 480)));
    let gif = b"GIF89a\x20\x03\x58\x02\x00\x00";
    assert_eq!(
        image_size(&format!("data:image/gif;base64,{}", b64(gif))),
        Some((800, 600))
    );
    // JPEG: SOI, an APP0 segment, then SOF0 with height 300, width 400.
    let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10];
    jpeg.extend_from_slice(&[0; 14]);
    jpeg.extend_from_slice(&[0xFF, 0xC0, 0x00, 0x11, 0x08, 0x01, 0x2C, 0x01, 0x90, 0x03]);
    jpeg.extend_from_slice(&[0; 12]);
    assert_eq!(
        image_size(&format!("data:image/jpeg;base64,{}", b64(&jpeg))),
        Some((400, 300))
    );
    assert_eq!(image_size("https://example.com/x.png"), None);
    assert_eq!(image_size("data:image/png;base64,!!!"), None);
    // OpenAI tiles: 2048×4096 → 1024×2048 → 768×1536 → 2×3 tiles.
    assert_eq!(
        image_tokens(Api::Chat, Some((2048, 4096)), None),
        85 + 6 * 170
    );
    assert_eq!(image_tokens(Api::Chat, Some((4096, 4096)), Some("low")), 85);
    assert_eq!(image_tokens(Api::Messages, Some((200, 200)), None), 54);
}

fn png_base64(w: u32, h: u32) -> String {
    let mut png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
    png.extend_from_slice(&w.to_be_bytes());
    png.extend_from_slice(&h.to_be_bytes());
    png.extend_from_slice(&[8, 6, 0, 0, 0]);
    b64(&png)
}

fn png_data_url(w: u32, h: u32) -> String {
    format!("data:image/png;base64,{}", png_base64(w, h))
}

fn b64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(A[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}
