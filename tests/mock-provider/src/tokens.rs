//! The deterministic token arithmetic of the mock.
//!
//! Prompt tokens (documented contract, the tests assert exact numbers):
//! - a *word* is a run of non-whitespace characters (`str::split_whitespace`);
//! - chat (OpenAI/Azure `/chat/completions`): for every message, the words of its `content`
//!   (a string, or the `text` fields of an array of content parts) plus [`PER_MESSAGE`] (3);
//! - Anthropic `/v1/messages`: the words of `system` (string or text blocks) plus, for every
//!   message, the words of its `content` (string or text blocks) plus 3;
//! - completions: the words of `prompt` (a string or an array of strings; a pre-tokenized
//!   prompt — an array of integers — counts one token per integer);
//! - embeddings: the same per input, summed over the inputs.
//!
//! Completion tokens: `N` = the `x-mock-completion-tokens` header (or the control API's
//! `completion_tokens`) when given, else `min(max_tokens, 16)` (`max_completion_tokens` wins over
//! `max_tokens`; 16 when neither is sent). The text is `tok0 tok1 … tok{N-1}`; the answer ends
//! with "length"/"max_tokens" when a limit was sent and `N >= limit`, else "stop"/"end_turn".

use serde_json::Value;

/// Tokens charged per chat message on top of its words.
pub const PER_MESSAGE: u64 = 3;
/// Completion length when the request sets no limit (and the upper bound otherwise).
pub const DEFAULT_COMPLETION_TOKENS: u64 = 16;

/// Whitespace-separated words in `s`.
pub fn words(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

/// Words of a message `content`: a string, or an array of parts/blocks whose `text` counts.
pub fn content_words(content: &Value) -> u64 {
    match content {
        Value::String(s) => words(s),
        Value::Array(parts) => parts
            .iter()
            .map(|p| match p {
                Value::String(s) => words(s),
                Value::Object(o) => o.get("text").and_then(Value::as_str).map_or(0, words),
                _ => 0,
            })
            .sum(),
        _ => 0,
    }
}

/// Prompt tokens of an OpenAI chat request's `messages`.
pub fn chat_prompt_tokens(messages: &[Value]) -> u64 {
    messages
        .iter()
        .map(|m| m.get("content").map_or(0, content_words) + PER_MESSAGE)
        .sum()
}

/// Input tokens of an Anthropic messages request.
pub fn anthropic_input_tokens(system: Option<&Value>, messages: &[Value]) -> u64 {
    system.map_or(0, content_words) + chat_prompt_tokens(messages)
}

/// Token counts of each input of a completions `prompt` / embeddings `input`: a string, an
/// array of strings, an array of integers (one pre-tokenized input), or an array of arrays of
/// integers. `None` when the value has none of these shapes.
pub fn input_tokens(input: &Value) -> Option<Vec<u64>> {
    match input {
        Value::String(s) => Some(vec![words(s)]),
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_number) => {
            Some(vec![items.len() as u64])
        }
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Some(words(s)),
                Value::Array(toks) if toks.iter().all(Value::is_number) => Some(toks.len() as u64),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

/// How many tokens to produce and whether that hit the request's limit.
pub fn completion_tokens(forced: Option<u64>, max_tokens: Option<u64>) -> (u64, bool) {
    let n = forced.unwrap_or_else(|| {
        max_tokens
            .unwrap_or(DEFAULT_COMPLETION_TOKENS)
            .min(DEFAULT_COMPLETION_TOKENS)
    });
    (n, max_tokens.is_some_and(|m| n >= m))
}

/// The `i`-th streamed piece: `tok0`, then ` tok1`, ` tok2`… (concatenated = [`completion_text`]).
pub fn piece(i: u64) -> String {
    if i == 0 {
        "tok0".to_owned()
    } else {
        format!(" tok{i}")
    }
}

/// `tok0 tok1 … tok{n-1}`.
pub fn completion_text(n: u64) -> String {
    (0..n).map(piece).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn words_split_on_any_whitespace() {
        assert_eq!(words(""), 0);
        assert_eq!(words("   "), 0);
        assert_eq!(words("hello"), 1);
        assert_eq!(words(" Say  hello\tto\nthe world "), 5);
    }

    #[test]
    fn chat_counts_words_plus_three_per_message() {
        let msgs = [
            json!({"role": "system", "content": "You are terse."}),
            json!({"role": "user", "content": [{"type": "text", "text": "two words"}, {"type": "image_url", "image_url": {"url": "x"}}]}),
            json!({"role": "assistant", "content": null, "tool_calls": []}),
        ];
        assert_eq!(chat_prompt_tokens(&msgs), (3 + 3) + (2 + 3) + 3);
        assert_eq!(chat_prompt_tokens(&[]), 0);
    }

    #[test]
    fn anthropic_counts_system_once() {
        let msgs = [json!({"role": "user", "content": [{"type": "text", "text": "a b c"}]})];
        assert_eq!(
            anthropic_input_tokens(Some(&json!("be brief")), &msgs),
            2 + 3 + 3
        );
        let blocks =
            json!([{"type": "text", "text": "one"}, {"type": "text", "text": "two three"}]);
        assert_eq!(anthropic_input_tokens(Some(&blocks), &msgs), 3 + 3 + 3);
        assert_eq!(anthropic_input_tokens(None, &msgs), 6);
    }

    #[test]
    fn inputs_of_every_shape() {
        assert_eq!(input_tokens(&json!("a b")), Some(vec![2]));
        assert_eq!(input_tokens(&json!(["a b", "c"])), Some(vec![2, 1]));
        assert_eq!(input_tokens(&json!([1, 2, 3])), Some(vec![3]));
        assert_eq!(input_tokens(&json!([[1, 2], [3]])), Some(vec![2, 1]));
        assert_eq!(input_tokens(&json!([])), Some(vec![]));
        assert_eq!(input_tokens(&json!(7)), None);
        assert_eq!(input_tokens(&json!([{"x": 1}])), None);
    }

    #[test]
    fn completion_length_and_limit() {
        assert_eq!(completion_tokens(None, None), (16, false));
        assert_eq!(completion_tokens(None, Some(5)), (5, true));
        assert_eq!(completion_tokens(None, Some(100)), (16, false));
        assert_eq!(completion_tokens(None, Some(16)), (16, true));
        assert_eq!(completion_tokens(Some(3), Some(100)), (3, false));
        assert_eq!(completion_tokens(Some(40), Some(10)), (40, true));
        assert_eq!(completion_tokens(Some(0), None), (0, false));
    }

    #[test]
    fn text_and_pieces_agree() {
        assert_eq!(completion_text(0), "");
        assert_eq!(completion_text(3), "tok0 tok1 tok2");
        assert_eq!(
            (0..3).map(piece).collect::<Vec<_>>(),
            ["tok0", " tok1", " tok2"]
        );
        assert_eq!(words(&completion_text(11)), 11);
    }
}
