//! Server-sent events framing: bytes in arbitrary chunks → whole events.
//!
//! Follows the WHATWG event-stream parsing rules for what the providers send: lines end with
//! `\n` or `\r\n` (a lone `\r` is not treated as a line end), a blank line ends an event,
//! `event:` names it, `data:` lines are joined with `\n`, lines starting with `:` are comments,
//! other fields (`id:`, `retry:`) are ignored. Only complete lines are decoded, so a UTF-8
//! character split across chunks is never mangled.
//!
//! Memory is bounded: the splitter holds at most the current incomplete event. When that
//! passes the limit it stops ([`SseSplitter::overflowed`]) and ignores the rest of the stream;
//! an LLM stream event is a few hundred bytes, so this only happens on a broken upstream.

/// The default cap on one buffered event: 1 MiB.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1 << 20;

/// One dispatched event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field, when there was one.
    pub event: Option<String>,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
}

/// An incremental SSE parser. Feed it chunks with [`push`](Self::push); call
/// [`finish`](Self::finish) at the end of the stream for an event that lacked its blank line.
#[derive(Clone, Debug)]
pub struct SseSplitter {
    /// The current line, not yet terminated.
    line: Vec<u8>,
    /// The current event's fields so far.
    event: Option<String>,
    data: String,
    has_data: bool,
    max: usize,
    overflowed: bool,
    /// Skip a UTF-8 byte-order mark at the very start.
    at_start: bool,
}

impl Default for SseSplitter {
    fn default() -> Self {
        Self::new()
    }
}

// === impl SseSplitter ===

impl SseSplitter {
    pub fn new() -> Self {
        Self::with_limit(DEFAULT_MAX_EVENT_BYTES)
    }

    /// A splitter that gives up on an event larger than `max_event_bytes`.
    pub fn with_limit(max_event_bytes: usize) -> Self {
        Self {
            line: Vec::new(),
            event: None,
            data: String::new(),
            has_data: false,
            max: max_event_bytes,
            overflowed: false,
            at_start: true,
        }
    }

    /// The largest event this splitter buffers.
    pub fn limit(&self) -> usize {
        self.max
    }

    /// True once an event went over the limit; every later `push` returns nothing.
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// Bytes held for the incomplete event.
    pub fn buffered(&self) -> usize {
        self.line.len() + self.data.len() + self.event.as_ref().map_or(0, String::len)
    }

    /// Consumes a chunk, returns the events it completed, in order.
    pub fn push(&mut self, mut chunk: &[u8]) -> Vec<Event> {
        let mut out = Vec::new();
        if self.overflowed {
            return out;
        }
        if self.at_start {
            // The BOM may itself arrive split; wait until three bytes (or a non-BOM byte) are in.
            let mut head = std::mem::take(&mut self.line);
            let need = 3usize.saturating_sub(head.len()).min(chunk.len());
            head.extend_from_slice(&chunk[..need]);
            if head.len() < 3 && b"\xEF\xBB\xBF".starts_with(&head) {
                self.line = head;
                return out;
            }
            self.at_start = false;
            let rest = &chunk[need..];
            let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&head).to_vec();
            self.feed(&head, &mut out);
            chunk = rest;
        }
        self.feed(chunk, &mut out);
        out
    }

    /// End of stream: dispatches the pending event, if the stream ended without its blank line.
    /// (The standard discards it; for a translator a complete `data:` line is worth keeping.)
    pub fn finish(&mut self) -> Option<Event> {
        if self.overflowed {
            return None;
        }
        let mut out = Vec::new();
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.line(&line, &mut out);
        }
        self.line(b"", &mut out);
        out.pop()
    }

    fn feed(&mut self, mut chunk: &[u8], out: &mut Vec<Event>) {
        while !chunk.is_empty() {
            match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    let mut line = std::mem::take(&mut self.line);
                    line.extend_from_slice(&chunk[..i]);
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    self.line(&line, out);
                    // Keep the allocation for the next line.
                    line.clear();
                    self.line = line;
                    chunk = &chunk[i + 1..];
                }
                None => {
                    self.line.extend_from_slice(chunk);
                    chunk = &[];
                }
            }
            if self.buffered() > self.max {
                self.overflow();
                return;
            }
        }
    }

    fn overflow(&mut self) {
        self.overflowed = true;
        self.line = Vec::new();
        self.data = String::new();
        self.event = None;
        self.has_data = false;
    }

    /// One complete line, without its terminator.
    fn line(&mut self, line: &[u8], out: &mut Vec<Event>) {
        if line.is_empty() {
            let event = self.event.take();
            if std::mem::take(&mut self.has_data) {
                out.push(Event {
                    event,
                    data: std::mem::take(&mut self.data),
                });
            }
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &[][..]),
        };
        match field {
            b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&String::from_utf8_lossy(value));
                self.has_data = true;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ev(event: Option<&str>, data: &str) -> Event {
        Event {
            event: event.map(str::to_owned),
            data: data.to_owned(),
        }
    }

    fn all_at_once(input: &[u8]) -> Vec<Event> {
        let mut s = SseSplitter::new();
        let mut v = s.push(input);
        v.extend(s.finish());
        v
    }

    #[test]
    fn frames() {
        let cases: &[(&str, &[u8], Vec<Event>)] = &[
            (
                "openai data lines",
                b"data: {\"a\":1}\n\ndata: [DONE]\n\n",
                vec![ev(None, "{\"a\":1}"), ev(None, "[DONE]")],
            ),
            (
                "anthropic event + data",
                b"event: ping\ndata: {\"type\": \"ping\"}\n\n",
                vec![ev(Some("ping"), "{\"type\": \"ping\"}")],
            ),
            (
                "crlf",
                b"event: a\r\ndata: 1\r\n\r\ndata: 2\r\n\r\n",
                vec![ev(Some("a"), "1"), ev(None, "2")],
            ),
            (
                "multi-line data, no space after colon, comments, id and retry",
                b": keep-alive\nid: 7\nretry: 10\ndata:x\ndata: y\n\n",
                vec![ev(None, "x\ny")],
            ),
            (
                "event without data is not dispatched and does not leak",
                b"event: a\n\ndata: z\n\n",
                vec![ev(None, "z")],
            ),
            (
                "several blank lines",
                b"\n\n\ndata: 1\n\n\n\n",
                vec![ev(None, "1")],
            ),
            (
                "byte-order mark",
                b"\xEF\xBB\xBFdata: 1\n\n",
                vec![ev(None, "1")],
            ),
            (
                "a last event without its blank line comes out of finish",
                b"data: 1\n\ndata: 2",
                vec![ev(None, "1"), ev(None, "2")],
            ),
            (
                "utf-8",
                "data: héllo 🌍\n\n".as_bytes(),
                vec![ev(None, "héllo 🌍")],
            ),
        ];
        for (name, input, want) in cases {
            assert_eq!(&all_at_once(input), want, "{name}");
            // Every split point, and one byte at a time, give the same events.
            for cut in 0..=input.len() {
                let mut s = SseSplitter::new();
                let mut got = s.push(&input[..cut]);
                got.extend(s.push(&input[cut..]));
                got.extend(s.finish());
                assert_eq!(&got, want, "{name}, cut at {cut}");
            }
            let mut s = SseSplitter::new();
            let mut got: Vec<Event> = input.iter().flat_map(|b| s.push(&[*b])).collect();
            got.extend(s.finish());
            assert_eq!(&got, want, "{name}, bytewise");
        }
    }

    #[test]
    fn finish_is_idempotent_and_buffer_drains() {
        let mut s = SseSplitter::new();
        assert!(s.push(b"data: 1\n\ndata: 2\n").len() == 1);
        assert!(s.buffered() > 0);
        assert_eq!(s.finish(), Some(ev(None, "2")));
        assert_eq!(s.finish(), None);
        assert_eq!(s.buffered(), 0);
    }

    #[test]
    fn overflow_stops_the_splitter() {
        let mut s = SseSplitter::with_limit(16);
        assert_eq!(s.push(b"data: short\n\n"), vec![ev(None, "short")]);
        // A long line without its end, fed in pieces.
        assert!(s.push(b"data: 0123456789").is_empty());
        assert!(!s.overflowed());
        assert!(s.push(b"abcdef").is_empty());
        assert!(s.overflowed());
        assert_eq!(s.buffered(), 0);
        assert!(s.push(b"\n\ndata: later\n\n").is_empty());
        assert_eq!(s.finish(), None);

        // Many data lines add up too.
        let mut s = SseSplitter::with_limit(16);
        assert!(
            s.push(b"data: 12345\ndata: 12345\ndata: 12345\n")
                .is_empty()
        );
        assert!(s.overflowed());
    }
}
