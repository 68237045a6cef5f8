//! What clients see: OpenAI-style `x-ratelimit-*` headers, `retry-after`, and the 429 body.

use std::time::Duration;

use crate::config::Kind;

/// Formats a duration the way OpenAI's reset headers do: `20ms`, `1s`, `6m0s`, `1h2m3.5s`.
pub fn format_reset(d: Duration) -> String {
    let ms = d.as_millis() as u64;
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    let secs = if rest % 1000 == 0 {
        format!("{}s", rest / 1000)
    } else {
        let s = format!("{}.{:03}", rest / 1000, rest % 1000);
        format!("{}s", s.trim_end_matches('0'))
    };
    match (h, m) {
        (0, 0) => secs,
        (0, m) => format!("{m}m{secs}"),
        (h, m) => format!("{h}h{m}m{secs}"),
    }
}

/// `retry-after` in whole seconds, rounded up, at least 1.
pub fn retry_after_secs(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000).max(1) as u64
}

/// What one violated limit tells the client.
pub struct Violation<'a> {
    pub kind: Kind,
    pub limit: u64,
    pub used: u64,
    pub requested: u64,
    pub unit: &'a str,
    /// `tenant=acme, model=gpt-4o`
    pub subject: String,
    /// `None` when the request can never fit (it alone is over the limit).
    pub retry: Option<Duration>,
}

/// The OpenAI-shaped JSON body of a 429.
pub fn over_limit_body(v: &Violation<'_>) -> String {
    let what = match v.kind {
        Kind::Requests => "requests",
        Kind::Tokens => "tokens",
    };
    let message = match v.retry {
        Some(d) => format!(
            "Rate limit reached for {} on {what} per {}: Limit {}, Used {}, Requested {}. Please try again in {}.",
            v.subject,
            v.unit,
            v.limit,
            v.used,
            v.requested,
            format_reset(d)
        ),
        None => format!(
            "Request too large for {} on {what} per {}: Limit {}, Requested {}. The request alone exceeds the limit; make it smaller.",
            v.subject, v.unit, v.limit, v.requested
        ),
    };
    error_body(&message, what, "rate_limit_exceeded")
}

/// `{"error":{"message","type","param":null,"code"}}`
pub fn error_body(message: &str, kind: &str, code: &str) -> String {
    serde_json::json!({
        "error": { "message": message, "type": kind, "param": null, "code": code }
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resets_look_like_openai() {
        let f = |ms| format_reset(Duration::from_millis(ms));
        assert_eq!(f(20), "20ms");
        assert_eq!(f(1000), "1s");
        assert_eq!(f(6_500), "6.5s");
        assert_eq!(f(360_000), "6m0s");
        assert_eq!(f(3_723_250), "1h2m3.25s");
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(30)), 30);
    }

    #[test]
    fn body_is_openai_shaped() {
        let body = over_limit_body(&Violation {
            kind: Kind::Tokens,
            limit: 2000,
            used: 1900,
            requested: 300,
            unit: "minute",
            subject: "tenant=acme".into(),
            retry: Some(Duration::from_secs(6)),
        });
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        assert_eq!(v["error"]["type"], "tokens");
        assert_eq!(v["error"]["code"], "rate_limit_exceeded");
        assert!(v["error"]["param"].is_null());
        assert_eq!(
            v["error"]["message"],
            "Rate limit reached for tenant=acme on tokens per minute: Limit 2000, Used 1900, Requested 300. Please try again in 6s."
        );
    }
}
