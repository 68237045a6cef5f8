//! Counter keys. The only place that knows their format.
//!
//! A key names a domain, the matched descriptor entries and the limit's window, e.g.
//! `api|tenant=acme|tier=free|60000`. Descriptor values come from clients, so the separators
//! (and the braces Redis Cluster reads as hash tags) are percent-escaped: two different
//! descriptors can never share a counter.

use std::fmt::Write;

/// Appends `s` with `%`, `|`, `=`, `{`, `}` and `:` escaped.
pub fn push_escaped(out: &mut String, s: &str) {
    for ch in s.chars() {
        match ch {
            '%' | '|' | '=' | '{' | '}' | ':' => {
                let _ = write!(out, "%{:02X}", ch as u32);
            }
            _ => out.push(ch),
        }
    }
}

/// Builds a counter key from a domain, `(key, value)` entries and the window length.
pub fn counter_key<'a>(
    domain: &str,
    entries: impl IntoIterator<Item = (&'a str, &'a str)>,
    window_ms: u64,
) -> String {
    let mut out = String::with_capacity(64);
    push_escaped(&mut out, domain);
    for (k, v) in entries {
        out.push('|');
        push_escaped(&mut out, k);
        out.push('=');
        push_escaped(&mut out, v);
    }
    let _ = write!(out, "|{window_ms}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separators_in_values_cannot_collide() {
        let a = counter_key("d", [("k", "a|x=b")], 1000);
        let b = counter_key("d", [("k", "a"), ("x", "b")], 1000);
        assert_ne!(a, b);
        assert_eq!(a, "d|k=a%7Cx%3Db|1000");
        assert_eq!(counter_key("d", [("t", "{x}")], 5), "d|t=%7Bx%7D|5");
    }
}
