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

/// A budget amount (millionths) as currency: at least two decimals, at most six.
pub fn format_amount(micros: u64) -> String {
    let s = format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000);
    let trimmed = s.trim_end_matches('0');
    let decimals = trimmed.len() - trimmed.find('.').map_or(trimmed.len(), |i| i + 1);
    s[..trimmed.len() + 2usize.saturating_sub(decimals)].to_string()
}

/// A header value for a limit or remaining amount of `kind`.
pub fn format_count(kind: Kind, n: u64) -> String {
    match kind {
        Kind::Budget => format_amount(n),
        Kind::Requests | Kind::Tokens => n.to_string(),
    }
}

/// The OpenAI-shaped JSON body of a 429.
pub fn over_limit_body(v: &Violation<'_>) -> String {
    let what = v.kind.name();
    if v.kind == Kind::Budget {
        // OpenAI's own words for a spent quota, so clients that handle it already do here.
        let message = format!(
            "You exceeded your current quota: the {} budget for {} is spent (budget {}, spent {}, this request needs an estimated {}).{}",
            v.unit,
            v.subject,
            format_amount(v.limit),
            format_amount(v.used),
            format_amount(v.requested),
            match v.retry {
                Some(d) => format!(" It resets in {}.", format_reset(d)),
                None => " The request alone costs more than the budget.".to_string(),
            }
        );
        return error_body(&message, "insufficient_quota", "insufficient_quota");
    }
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
    fn amounts_have_two_to_six_decimals() {
        assert_eq!(format_amount(5_000_000), "5.00");
        assert_eq!(format_amount(3_120_000), "3.12");
        assert_eq!(format_amount(1_234_567), "1.234567");
        assert_eq!(format_amount(1_500), "0.0015");
        assert_eq!(format_amount(0), "0.00");
    }

    #[test]
    fn budget_body_says_the_quota_is_spent() {
        let body = over_limit_body(&Violation {
            kind: Kind::Budget,
            limit: 5_000_000,
            used: 4_990_000,
            requested: 20_000,
            unit: "day",
            subject: "tenant=acme, kind=budget".into(),
            retry: Some(Duration::from_secs(3600)),
        });
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        assert_eq!(v["error"]["type"], "insufficient_quota");
        assert_eq!(v["error"]["code"], "insufficient_quota");
        assert_eq!(
            v["error"]["message"],
            "You exceeded your current quota: the day budget for tenant=acme, kind=budget is spent (budget 5.00, spent 4.99, this request needs an estimated 0.02). It resets in 1h0m0s."
        );
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
