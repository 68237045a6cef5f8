//! Fault injection: per-request headers and the counted queue of the control API.

use std::collections::VecDeque;

use hyper::HeaderMap;
use serde::{Deserialize, Serialize};

/// What to do to one request. Every field is optional; a request carries the merge of the
/// control API's next queued fault and its own `x-mock-*` headers (the headers win).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// Answer this status (400..=599) in the provider's error shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `retry-after` seconds to send with the injected status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// Close the TCP connection (RST) without any response.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reset: bool,
    /// Wait this long before answering (before the reset/status too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// Streams: send this many token chunks, then stall until the client goes away.
    #[serde(
        default,
        alias = "stream_stall_after",
        skip_serializing_if = "Option::is_none"
    )]
    pub stall_after: Option<u64>,
    /// Streams: wait this long between events.
    #[serde(
        default,
        alias = "stream_chunk_delay_ms",
        skip_serializing_if = "Option::is_none"
    )]
    pub chunk_delay_ms: Option<u64>,
    /// Produce exactly this many completion tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<u64>,
}

impl Fault {
    /// `self` with every field that `over` sets replaced by `over`'s.
    pub fn overlaid(self, over: Fault) -> Fault {
        Fault {
            status: over.status.or(self.status),
            retry_after: over.retry_after.or(self.retry_after),
            reset: over.reset || self.reset,
            latency_ms: over.latency_ms.or(self.latency_ms),
            stall_after: over.stall_after.or(self.stall_after),
            chunk_delay_ms: over.chunk_delay_ms.or(self.chunk_delay_ms),
            completion_tokens: over.completion_tokens.or(self.completion_tokens),
        }
    }

    fn validate(&self) -> Result<(), String> {
        match self.status {
            Some(s) if !(400..=599).contains(&s) => {
                Err(format!("status must be 400..=599, got {s}"))
            }
            _ => Ok(()),
        }
    }

    /// The fault the request's `x-mock-*` headers ask for; an error names the bad header.
    pub fn from_headers(h: &HeaderMap) -> Result<Fault, String> {
        fn num(h: &HeaderMap, name: &str) -> Result<Option<u64>, String> {
            match h.get(name) {
                None => Ok(None),
                Some(v) => v
                    .to_str()
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .map(Some)
                    .ok_or_else(|| format!("{name}: expected a non-negative integer")),
            }
        }
        let status = match num(h, "x-mock-status")? {
            None => None,
            Some(s) => {
                Some(u16::try_from(s).map_err(|_| format!("x-mock-status: {s} is not a status"))?)
            }
        };
        let reset = match h.get("x-mock-reset").map(|v| v.to_str().map(str::trim)) {
            None => false,
            Some(Ok("1" | "true" | "yes")) => true,
            Some(Ok("0" | "false" | "no" | "")) => false,
            Some(_) => return Err("x-mock-reset: expected 1 or 0".into()),
        };
        let f = Fault {
            status,
            retry_after: num(h, "x-mock-retry-after")?,
            reset,
            latency_ms: num(h, "x-mock-latency-ms")?,
            stall_after: num(h, "x-mock-stream-stall-after")?,
            chunk_delay_ms: num(h, "x-mock-stream-chunk-delay-ms")?,
            completion_tokens: num(h, "x-mock-completion-tokens")?,
        };
        f.validate().map_err(|e| format!("x-mock-{e}"))?;
        Ok(f)
    }
}

/// One entry of the control API's queue: a fault for the next `count` requests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Programmed {
    #[serde(flatten)]
    pub fault: Fault,
    /// Requests still to be hit.
    pub count: u64,
}

/// Parses the body of `POST /_mock/faults`: one object or an array of them.
pub fn parse_program(body: &[u8]) -> Result<Vec<Programmed>, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let items = match v {
        serde_json::Value::Array(items) => items,
        other => vec![other],
    };
    items
        .into_iter()
        .map(|item| {
            let p = parse_one(item)?;
            p.fault.validate()?;
            if p.count == 0 {
                return Err("count must be at least 1".into());
            }
            if p.fault == Fault::default() {
                return Err(
                    "a fault needs at least one of status, reset, latency_ms, stall_after, \
                            chunk_delay_ms, completion_tokens"
                        .into(),
                );
            }
            Ok(p)
        })
        .collect()
}

/// serde's `deny_unknown_fields` does not combine with `flatten`, so unknown keys are checked
/// here by hand.
fn parse_one(item: serde_json::Value) -> Result<Programmed, String> {
    const KNOWN: &[&str] = &[
        "status",
        "retry_after",
        "reset",
        "latency_ms",
        "stall_after",
        "stream_stall_after",
        "chunk_delay_ms",
        "stream_chunk_delay_ms",
        "completion_tokens",
        "count",
    ];
    let obj = item.as_object().ok_or("a fault must be a JSON object")?;
    if let Some(k) = obj.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(format!("unknown field `{k}`; known: {}", KNOWN.join(", ")));
    }
    let mut obj = obj.clone();
    let count = match obj.remove("count") {
        None => 1,
        Some(c) => c.as_u64().ok_or("count must be a non-negative integer")?,
    };
    let fault: Fault =
        serde_json::from_value(serde_json::Value::Object(obj)).map_err(|e| e.to_string())?;
    Ok(Programmed { fault, count })
}

/// The counted queue: each provider request takes one use of the front entry.
#[derive(Debug, Default)]
pub struct Queue {
    entries: VecDeque<Programmed>,
}

impl Queue {
    pub fn push(&mut self, p: Programmed) {
        self.entries.push_back(p);
    }

    /// The fault for the next request, if any is programmed.
    pub fn take(&mut self) -> Option<Fault> {
        let front = self.entries.front_mut()?;
        let fault = front.fault.clone();
        front.count -= 1;
        if front.count == 0 {
            self.entries.pop_front();
        }
        Some(fault)
    }

    pub fn clear(&mut self) -> usize {
        let n = self.entries.len();
        self.entries.clear();
        n
    }

    pub fn pending(&self) -> Vec<Programmed> {
        self.entries.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn headers_parse() {
        assert_eq!(Fault::from_headers(&HeaderMap::new()), Ok(Fault::default()));
        let f = Fault::from_headers(&headers(&[
            ("x-mock-status", "429"),
            ("x-mock-retry-after", "3"),
            ("x-mock-latency-ms", "10"),
            ("x-mock-stream-stall-after", "2"),
            ("x-mock-stream-chunk-delay-ms", "5"),
            ("x-mock-completion-tokens", "7"),
            ("x-mock-reset", "1"),
        ]));
        assert_eq!(
            f,
            Ok(Fault {
                status: Some(429),
                retry_after: Some(3),
                reset: true,
                latency_ms: Some(10),
                stall_after: Some(2),
                chunk_delay_ms: Some(5),
                completion_tokens: Some(7),
            })
        );
        assert!(Fault::from_headers(&headers(&[("x-mock-status", "abc")])).is_err());
        assert!(Fault::from_headers(&headers(&[("x-mock-status", "200")])).is_err());
        assert!(Fault::from_headers(&headers(&[("x-mock-status", "70000")])).is_err());
        assert!(Fault::from_headers(&headers(&[("x-mock-reset", "maybe")])).is_err());
    }

    #[test]
    fn headers_override_programmed() {
        let programmed = Fault {
            status: Some(503),
            retry_after: Some(1),
            ..Fault::default()
        };
        let hdr = Fault {
            status: Some(500),
            latency_ms: Some(3),
            ..Fault::default()
        };
        assert_eq!(
            programmed.overlaid(hdr),
            Fault {
                status: Some(500),
                retry_after: Some(1),
                latency_ms: Some(3),
                ..Fault::default()
            }
        );
    }

    #[test]
    fn program_parsing() {
        let p = parse_program(br#"{"status":503,"count":2,"retry_after":1}"#);
        assert_eq!(
            p,
            Ok(vec![Programmed {
                fault: Fault {
                    status: Some(503),
                    retry_after: Some(1),
                    ..Fault::default()
                },
                count: 2
            }])
        );
        let p = parse_program(
            br#"[{"reset":true},{"latency_ms":2000,"count":1},{"stream_stall_after":1}]"#,
        );
        assert_eq!(p.as_ref().map(Vec::len), Ok(3));
        assert!(parse_program(br#"{"status":503,"cuont":2}"#).is_err_and(|e| e.contains("cuont")));
        assert!(parse_program(br#"{"count":2}"#).is_err());
        assert!(parse_program(br#"{"status":503,"count":0}"#).is_err());
        assert!(parse_program(br#"{"status":302}"#).is_err());
        assert!(parse_program(br#"{"status":"503"}"#).is_err());
        assert!(parse_program(b"nope").is_err());
    }

    #[test]
    fn queue_counts_in_order() {
        let mut q = Queue::default();
        q.push(Programmed {
            fault: Fault {
                status: Some(503),
                ..Fault::default()
            },
            count: 2,
        });
        q.push(Programmed {
            fault: Fault {
                reset: true,
                ..Fault::default()
            },
            count: 1,
        });
        assert_eq!(q.take().and_then(|f| f.status), Some(503));
        assert_eq!(q.pending().len(), 2);
        assert_eq!(q.take().and_then(|f| f.status), Some(503));
        assert_eq!(q.take().map(|f| f.reset), Some(true));
        assert_eq!(q.take(), None);
        q.push(Programmed {
            fault: Fault {
                latency_ms: Some(1),
                ..Fault::default()
            },
            count: 5,
        });
        assert_eq!(q.clear(), 1);
        assert_eq!(q.take(), None);
    }
}
