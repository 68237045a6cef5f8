//! Server-sent events framing, byte for byte as the providers send it.

use bytes::Bytes;
use serde_json::Value;

/// The content type of every streamed answer.
pub const CONTENT_TYPE: &str = "text/event-stream; charset=utf-8";

/// OpenAI style: a `data:` line only.
pub fn data(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

/// OpenAI's terminator.
pub fn done() -> Bytes {
    Bytes::from_static(b"data: [DONE]\n\n")
}

/// Anthropic style: an `event:` line naming the event, then its `data:` line.
pub fn event(name: &str, v: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {v}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn openai_frames() {
        assert_eq!(
            data(&json!({"a": 1})),
            Bytes::from_static(b"data: {\"a\":1}\n\n")
        );
        assert_eq!(done(), Bytes::from_static(b"data: [DONE]\n\n"));
    }

    #[test]
    fn anthropic_frames() {
        assert_eq!(
            event("ping", &json!({"type": "ping"})),
            Bytes::from_static(b"event: ping\ndata: {\"type\":\"ping\"}\n\n")
        );
    }

    #[test]
    fn json_with_newlines_stays_on_one_line() {
        // serde_json escapes control characters, so a payload can never split a frame.
        let f = data(&json!({"text": "a\nb\r\n\nc"}));
        let s = String::from_utf8_lossy(&f);
        assert_eq!(s.matches('\n').count(), 2);
        assert!(s.ends_with("\n\n"));
    }
}
