#![allow(clippy::unwrap_used, clippy::panic)]

use super::*;

const OPENAI_TEXT_USAGE: &str = include_str!("translate/testdata/openai_text_usage.sse");
const OPENAI_TOOLS: &str = include_str!("translate/testdata/openai_tools.sse");
const ANTHROPIC_TEXT: &str = include_str!("translate/testdata/anthropic_text.sse");

/// Whitespace words: exact expectations without a tokenizer.
fn words(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

fn usage(prompt: u64, completion: u64) -> Option<Usage> {
    Some(Usage { prompt, completion })
}

/// Feeds `pieces`, returns the meter and what the client receives.
fn client_view(format: Format, pieces: &[&[u8]]) -> (Meter, Vec<u8>) {
    let mut m = Meter::new(format);
    let mut out = Vec::new();
    for p in pieces {
        match m.push(p, &words) {
            None => out.extend_from_slice(p),
            Some(b) => out.extend(b),
        }
    }
    out.extend(m.finish(&words).unwrap_or_default());
    (m, out)
}

/// Runs `check` on the whole input, on every two-piece split and byte by byte.
fn every_split(format: Format, input: &[u8], check: impl Fn(&str, &Meter, &[u8])) {
    let (m, out) = client_view(format, &[input]);
    check("whole", &m, &out);
    for cut in 0..=input.len() {
        let (m, out) = client_view(format, &[&input[..cut], &input[cut..]]);
        check(&format!("cut at {cut}"), &m, &out);
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    let (m, out) = client_view(format, &bytes);
    check("bytewise", &m, &out);
}

fn json_usage(body: &str) -> Option<Usage> {
    let (m, out) = client_view(Format::Json, &[body.as_bytes()]);
    assert_eq!(out, body.as_bytes(), "json bodies are never rewritten");
    m.reported()
}

// === JSON bodies ===

#[test]
fn json_bodies_at_every_split() {
    let cases: &[(&str, &str, Option<Usage>)] = &[
        (
            "openai chat",
            r#"{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hi \"there\" {usage}"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15,"prompt_tokens_details":{"cached_tokens":0}},"system_fingerprint":"fp"}"#,
            usage(12, 3),
        ),
        (
            "anthropic message",
            "{\n  \"id\": \"msg_1\",\n  \"type\": \"message\",\n  \"content\": [{\"type\": \"text\", \"text\": \"h\u{e9}llo \u{1F30D}\"}],\n  \"usage\" : {\"input_tokens\": 10, \"cache_creation_input_tokens\": 20, \"cache_read_input_tokens\": 30, \"output_tokens\": 7}\n}\n",
            usage(60, 7),
        ),
        (
            "openai embeddings",
            r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,-0.2,3e-4]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8}}"#,
            usage(8, 0),
        ),
    ];
    for (name, body, want) in cases {
        every_split(Format::Json, body.as_bytes(), |how, m, out| {
            assert_eq!(m.reported(), *want, "{name}, {how}");
            assert_eq!(out, body.as_bytes(), "{name}, {how}");
            assert_eq!(m.streamed_completion(), 0);
            assert_eq!(m.announced_prompt(), None);
        });
    }
}

#[test]
fn json_only_the_top_level_usage_key_counts() {
    let cases: &[(&str, &str, Option<Usage>)] = &[
        (
            "nested usage keys",
            r#"{"choices":[{"message":{"usage":{"prompt_tokens":99}}}],"meta":{"usage":{"input_tokens":5}},"usage":{"prompt_tokens":3,"completion_tokens":4}}"#,
            usage(3, 4),
        ),
        (
            "only nested",
            r#"{"meta":{"usage":{"prompt_tokens":1,"completion_tokens":1}}}"#,
            None,
        ),
        (
            "inside a string, escaped quotes and a trailing backslash",
            r#"{"content":"\"usage\": {\"prompt_tokens\": 9}","x":"a\\","usage":{"prompt_tokens":1,"completion_tokens":2}}"#,
            usage(1, 2),
        ),
        (
            "a string value spelled usage is not a key",
            r#"{"a":"usage","b":{"prompt_tokens":5}}"#,
            None,
        ),
        (
            "keys that only start or end like usage",
            r#"{"usages":{"prompt_tokens":5},"_usage":{"prompt_tokens":5},"usag":{"prompt_tokens":5}}"#,
            None,
        ),
        (
            "escaped spelling",
            r#"{"us\u0061ge":{"prompt_tokens":5}}"#,
            None,
        ),
        (
            "top-level array",
            r#"[{"usage":{"prompt_tokens":1}},"usage",{"prompt_tokens":2}]"#,
            None,
        ),
        ("null", r#"{"usage": null}"#, None),
        ("not an object", r#"{"usage": 12}"#, None),
        ("unknown fields", r#"{"usage": {"tokens": 12}}"#, None),
        (
            "after the top-level object closes",
            r#"{"a":1} {"usage":{"prompt_tokens":1}}"#,
            None,
        ),
        ("malformed value", r#"{"usage":{"prompt_tokens":}}"#, None),
        ("truncated", r#"{"usage":{"prompt_tokens":1"#, None),
        ("garbage", "<html>}}]]\"{{usage:", None),
        ("empty", "", None),
    ];
    for (name, body, want) in cases {
        assert_eq!(json_usage(body), *want, "{name}");
    }
}

#[test]
fn json_usage_over_the_cap_is_given_up() {
    let pad = "x".repeat(MAX_USAGE_BYTES);
    let body = format!(r#"{{"usage":{{"prompt_tokens":1,"pad":"{pad}"}},"id":"a"}}"#);
    assert_eq!(json_usage(&body), None);
    // Just under the cap still reads.
    let pad = "x".repeat(MAX_USAGE_BYTES - 64);
    let body = format!(r#"{{"usage":{{"prompt_tokens":1,"completion_tokens":2,"pad":"{pad}"}}}}"#);
    assert_eq!(json_usage(&body), usage(1, 2));
}

// === OpenAI streams ===

/// The fixture as the client would have received it without `include_usage`.
fn without_include_usage(stream: &str) -> String {
    stream
        .split_inclusive("\n\n")
        .filter(|ev| !(ev.contains(r#""choices":[]"#) && ev.contains(r#""usage":{"#)))
        .collect::<String>()
        .replace(r#","usage":null"#, "")
}

#[test]
fn openai_stream_with_usage_passes_through_when_the_client_asked() {
    let input = OPENAI_TEXT_USAGE.as_bytes();
    every_split(
        Format::OpenAiSse { hide_usage: false },
        input,
        |how, m, out| {
            assert_eq!(m.reported(), usage(14, 3), "{how}");
            assert_eq!(m.streamed_completion(), 3, "{how}");
            assert_eq!(m.announced_prompt(), None);
            assert_eq!(out, input, "{how}");
        },
    );
    let mut m = Meter::new(Format::OpenAiSse { hide_usage: false });
    assert_eq!(m.push(input, &words), None);
    assert_eq!(m.finish(&words), None);
}

#[test]
fn openai_stream_hides_the_usage_it_added() {
    let input = OPENAI_TEXT_USAGE.as_bytes();
    let want = without_include_usage(OPENAI_TEXT_USAGE);
    assert!(!want.contains("usage") && want.ends_with("data: [DONE]\n\n"));
    every_split(
        Format::OpenAiSse { hide_usage: true },
        input,
        |how, m, out| {
            assert_eq!(m.reported(), usage(14, 3), "{how}");
            assert_eq!(m.streamed_completion(), 3, "{how}");
            assert_eq!(String::from_utf8_lossy(out), want, "{how}");
        },
    );
}

#[test]
fn openai_hidden_stream_holds_back_incomplete_events() {
    let mut m = Meter::new(Format::OpenAiSse { hide_usage: true });
    let event = "data: {\"choices\":[{\"delta\":{\"content\":\"a b\"}}],\"usage\":null}\n\n";
    let (head, tail) = event.split_at(20);
    assert_eq!(m.push(head.as_bytes(), &words), Some(Vec::new()));
    assert_eq!(
        m.push(tail.as_bytes(), &words).unwrap(),
        b"data: {\"choices\":[{\"delta\":{\"content\":\"a b\"}}]}\n\n"
    );
    // A last event without its blank line comes out of finish, completed.
    assert_eq!(m.push(b"data: [DONE]", &words), Some(Vec::new()));
    assert_eq!(m.finish(&words).unwrap(), b"data: [DONE]\n\n");
    assert_eq!(m.finish(&words), Some(Vec::new()));
    assert_eq!(m.streamed_completion(), 2);
    assert_eq!(m.reported(), None);
}

#[test]
fn openai_hidden_stream_keeps_event_names_data_lines_and_other_chunks() {
    let input = concat!(
        "event: custom\ndata: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n",
        "data: {\"a\":1,\ndata: \"usage\": null}\n\n",
        "data: not json, \"usage\": null\n\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\"y z\"}}],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":3}}\n\n",
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":3}}\n\n",
    );
    let want = concat!(
        "event: custom\ndata: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n",
        "data: {\"a\":1}\n\n",
        "data: not json, \"usage\": null\n\n",
        // Usage on a content chunk (some compatible servers) is hidden too.
        "data: {\"choices\":[{\"delta\":{\"content\":\"y z\"}}]}\n\n",
    );
    every_split(
        Format::OpenAiSse { hide_usage: true },
        input.as_bytes(),
        |how, m, out| {
            assert_eq!(String::from_utf8_lossy(out), want, "{how}");
            assert_eq!(m.reported(), usage(4, 3), "{how}");
            assert_eq!(m.streamed_completion(), 3, "{how}");
        },
    );
}

#[test]
fn usage_members_are_cut_out_in_place() {
    let cases = [
        (r#"{"a":1,"usage":null}"#, r#"{"a":1}"#),
        (r#"{"usage":null,"a":1}"#, r#"{"a":1}"#),
        (r#"{"usage":null}"#, r#"{}"#),
        (r#"{"a":1,"usage":null,"b":2}"#, r#"{"a":1,"b":2}"#),
        (
            r#"{ "a" : 1 , "usage" : null , "b" : {"usage":null} }"#,
            r#"{ "a" : 1 , "b" : {"usage":null} }"#,
        ),
        (r#"{"usage":{"x":[1,2]},"usage":null}"#, r#"{}"#),
        (
            r#"{"s":"\",\"usage\":null","usage":{}}"#,
            r#"{"s":"\",\"usage\":null"}"#,
        ),
        (r#"{"a":1}"#, r#"{"a":1}"#),
    ];
    for (input, want) in cases {
        let got = without_usage(input.as_bytes());
        assert_eq!(String::from_utf8_lossy(&got), want, "{input}");
        serde_json::from_slice::<Value>(&got).unwrap();
    }
}

#[test]
fn openai_tool_call_arguments_count() {
    every_split(
        Format::OpenAiSse { hide_usage: false },
        OPENAI_TOOLS.as_bytes(),
        |how, m, _| {
            // "Je vérifie 🌦" 3, `{"ci` 1, `ty": "Paris"}` 2, `{"city": "Zürich"}` 2.
            assert_eq!(m.streamed_completion(), 8, "{how}");
            assert_eq!(m.reported(), usage(2120, 52), "{how}");
        },
    );
}

#[test]
fn openai_counts_refusal_reasoning_and_legacy_function_calls() {
    let input = concat!(
        "data: {\"choices\":[{\"delta\":{\"refusal\":\"I can't\"}}]}\n\n",
        "data: {\"choices\":[{\"delta\":{\"reasoning_content\":\"think hard\"}}]}\n\n",
        "data: {\"choices\":[{\"delta\":{\"function_call\":{\"arguments\":\"{} {}\"}}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}},{\"index\":1,\"delta\":{\"content\":\"b c\"}}]}\n\n",
    );
    let (m, _) = client_view(Format::OpenAiSse { hide_usage: false }, &[input.as_bytes()]);
    assert_eq!(m.streamed_completion(), 2 + 2 + 2 + 3);
    assert_eq!(m.reported(), None);
}

#[test]
fn legacy_completions_stream() {
    let input = concat!(
        "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,\"choices\":[{\"text\":\" hello world\",\"index\":0,\"logprobs\":null,\"finish_reason\":null}],\"model\":\"gpt-3.5-turbo-instruct\",\"usage\":null}\n\n",
        "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,\"choices\":[{\"text\":\"!\",\"index\":0,\"logprobs\":null,\"finish_reason\":\"stop\"}],\"model\":\"gpt-3.5-turbo-instruct\",\"usage\":null}\n\n",
        "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,\"choices\":[],\"model\":\"gpt-3.5-turbo-instruct\",\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":3,\"total_tokens\":8}}\n\n",
        "data: [DONE]\n\n",
    );
    let want = without_include_usage(input);
    every_split(
        Format::OpenAiSse { hide_usage: true },
        input.as_bytes(),
        |how, m, out| {
            assert_eq!(m.streamed_completion(), 3, "{how}");
            assert_eq!(m.reported(), usage(5, 3), "{how}");
            assert_eq!(String::from_utf8_lossy(out), want, "{how}");
        },
    );
}

#[test]
fn openai_malformed_events_are_ignored() {
    let input = concat!(
        "data: {\"choices\":[{\"delta\":{\"content\":\"lost words\"}}]\n\n",
        "data: {\"usage\":{\"prompt_tokens\":\"many\"},\"choices\":[{\"delta\":{\"content\":7}}]}\n\n",
        "data: {\"choices\":\"none\",\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":1}}\n\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\"kept\"}}]}\n\n",
        "data: [DONE]\n\n",
    );
    let (m, out) = client_view(Format::OpenAiSse { hide_usage: false }, &[input.as_bytes()]);
    assert_eq!(out, input.as_bytes());
    assert_eq!(m.streamed_completion(), 1);
    assert_eq!(m.reported(), usage(2, 1));
}

#[test]
fn openai_oversized_event_switches_to_pass_through() {
    let mut m = Meter::new(Format::OpenAiSse { hide_usage: true });
    let first = b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n";
    assert_eq!(m.push(first, &words).unwrap(), first);
    let huge = vec![b'x'; crate::translate::DEFAULT_MAX_EVENT_BYTES + 1];
    assert_eq!(m.push(b"data: ", &words), Some(Vec::new()));
    assert_eq!(m.push(&huge, &words), Some(Vec::new()));
    assert_eq!(m.push(b"\n\ndata: [DONE]\n\n", &words), None);
    assert_eq!(m.finish(&words), None);
    assert_eq!(m.streamed_completion(), 1);
}

// === Anthropic streams ===

const ANTHROPIC_FULL: &str = concat!(
    "event: message_start\n",
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"usage\":{\"input_tokens\":10,\"cache_creation_input_tokens\":200,\"cache_read_input_tokens\":3000,\"output_tokens\":1}}}\n\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"let me see\"}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"abc def\"}}\n\n",
    "event: ping\n",
    "data: {\"type\":\"ping\"}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"Sure, calling\"}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\": \\\"Paris\\\"}\"}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":broken}}\n\n",
    "event: message_delta\n",
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":\"bad\"}\n\n",
    "event: message_delta\n",
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":42}}\n\n",
    "event: message_stop\n",
    "data: {\"type\":\"message_stop\"}\n\n",
);

#[test]
fn anthropic_full_stream() {
    every_split(
        Format::AnthropicSse,
        ANTHROPIC_FULL.as_bytes(),
        |how, m, out| {
            // Prompt: input + cache creation + cache read; output from the last message_delta.
            assert_eq!(m.reported(), usage(3210, 42), "{how}");
            assert_eq!(m.announced_prompt(), Some(3210), "{how}");
            // "let me see" 3, "Sure, calling" 2, `{"city": "Paris"}` 2; the signature is not text.
            assert_eq!(m.streamed_completion(), 7, "{how}");
            assert_eq!(out, ANTHROPIC_FULL.as_bytes(), "{how}");
        },
    );
    let (m, _) = client_view(Format::AnthropicSse, &[ANTHROPIC_TEXT.as_bytes()]);
    assert_eq!(m.reported(), usage(14, 5));
    assert_eq!(m.streamed_completion(), 5);
}

#[test]
fn anthropic_cut_stream_has_only_the_announced_prompt() {
    let cut = ANTHROPIC_FULL.find("event: message_delta").unwrap();
    let mut m = Meter::new(Format::AnthropicSse);
    assert_eq!(m.push(&ANTHROPIC_FULL.as_bytes()[..cut + 10], &words), None);
    assert_eq!(m.finish(&words), None);
    assert_eq!(m.reported(), None);
    assert_eq!(m.announced_prompt(), Some(3210));
    assert_eq!(m.streamed_completion(), 7);

    // Cut inside the first event: nothing known.
    let mut m = Meter::new(Format::AnthropicSse);
    m.push(&ANTHROPIC_FULL.as_bytes()[..100], &words);
    m.finish(&words);
    assert_eq!((m.reported(), m.announced_prompt()), (None, None));
}
