//! Counter keys. The only place that knows their format.
//!
//! A key names a domain, the matched descriptor entries and the limit's window, e.g.
//! `api|tenant=acme|tier=free|60000`. Descriptor values come from clients, so the separators
//! (and the braces Redis Cluster reads as hash tags) are percent-escaped: two different
//! descriptors can never share a counter.
//!
//! # In Redis
//!
//! The Redis stores write counter `key` of window `index` as
//!
//! - `rls:<key>:<index>` on a single Redis ([`RedisLayout::Plain`]), and
//! - `rls:{<domain>|<first entry>}<rest of key>:<index>` on a Redis Cluster
//!   ([`RedisLayout::HashTagged`]), e.g. `rls:{llm|tenant=acme}|kind=tokens|60000:28333334`.
//!
//! Redis Cluster hashes only the text between the first `{` and the next `}`, so every counter
//! whose descriptor starts with the same entry (a tenant's requests, tokens, and models of that
//! tenant) lives in one slot and one request's counters are usually checked by one script
//! call. The tag cannot be broken by clients: `{`, `}` and `|` inside domains, keys and values
//! are escaped by [`push_escaped`], so the first `}` of a key is the one that closes the tag
//! and the first `|` after the domain ends it. A counter without descriptor entries (a request
//! override on an empty descriptor) is tagged by its domain alone. Single-node keys have no tag,
//! as before clusters were supported: upgrading does not reset counters.

use std::fmt::{Display, Write};

/// Prefix of every key the Redis stores write.
pub const REDIS_PREFIX: &str = "rls:";

/// How a counter key is written as a Redis key (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedisLayout {
    /// `rls:<key>:<index>`: one Redis.
    Plain,
    /// `rls:{<domain>|<first entry>}<rest>:<index>`: Redis Cluster.
    HashTagged,
}

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

/// Splits a counter key into its hash tag (the domain and the first descriptor entry) and the
/// rest: `llm|tenant=acme|kind=tokens|60000` → (`llm|tenant=acme`, `|kind=tokens|60000`).
/// A key is `domain|entry|...|window`, so with a single `|` there is no entry and the tag is
/// the domain; escaping guarantees that every `|` is a separator.
pub fn hash_tag(counter_key: &str) -> (&str, &str) {
    let mut bars = counter_key.match_indices('|').map(|(i, _)| i);
    let end = match (bars.next(), bars.next()) {
        (Some(_), Some(second)) => second,
        (Some(first), None) => first,
        (None, _) => counter_key.len(),
    };
    counter_key.split_at(end)
}

/// The Redis key of the counter `counter_key` in window `index`.
pub fn redis_key(layout: RedisLayout, counter_key: &str, index: u64) -> String {
    write_redis_key(layout, counter_key, index)
}

/// The Redis key of the window before `index` (window -1 exists only for clocks near the
/// epoch, i.e. tests).
pub fn redis_previous_key(layout: RedisLayout, counter_key: &str, index: u64) -> String {
    match index.checked_sub(1) {
        Some(prev) => write_redis_key(layout, counter_key, prev),
        None => write_redis_key(layout, counter_key, -1),
    }
}

/// The Redis key that marks usage report `id` as applied, in the slot of `counter_key` (any
/// counter the report corrects there; `None`: a report that corrects nothing). Ids are checked
/// by the service to hold no separator.
pub fn report_key(layout: RedisLayout, counter_key: Option<&str>, id: &str) -> String {
    match (layout, counter_key) {
        (RedisLayout::HashTagged, Some(k)) => {
            format!("{REDIS_PREFIX}{{{}}}|report={id}", hash_tag(k).0)
        }
        (RedisLayout::HashTagged, None) => format!("{REDIS_PREFIX}{{report={id}}}"),
        (RedisLayout::Plain, _) => format!("{REDIS_PREFIX}report={id}"),
    }
}

/// The Redis key of deployment `name`'s circuit (`crate::health`). Every circuit shares one hash
/// tag, so a batch of outcomes is one script in one slot on Redis Cluster too.
pub fn health_key(name: &str) -> String {
    let mut out = String::with_capacity(REDIS_PREFIX.len() + name.len() + 10);
    out.push_str(REDIS_PREFIX);
    out.push_str("{health}|");
    push_escaped(&mut out, name);
    out
}

fn write_redis_key(layout: RedisLayout, counter_key: &str, index: impl Display) -> String {
    let mut out = String::with_capacity(REDIS_PREFIX.len() + counter_key.len() + 16);
    out.push_str(REDIS_PREFIX);
    match layout {
        RedisLayout::Plain => out.push_str(counter_key),
        RedisLayout::HashTagged => {
            let (tag, rest) = hash_tag(counter_key);
            out.push('{');
            out.push_str(tag);
            out.push('}');
            out.push_str(rest);
        }
    }
    let _ = write!(out, ":{index}");
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

    #[test]
    fn redis_keys() {
        use RedisLayout::{HashTagged, Plain};
        let k = counter_key("llm", [("tenant", "acme"), ("kind", "tokens")], 60_000);
        assert_eq!(
            redis_key(Plain, &k, 7),
            "rls:llm|tenant=acme|kind=tokens|60000:7"
        );
        assert_eq!(
            redis_key(HashTagged, &k, 7),
            "rls:{llm|tenant=acme}|kind=tokens|60000:7"
        );
        assert_eq!(
            redis_previous_key(HashTagged, &k, 7),
            "rls:{llm|tenant=acme}|kind=tokens|60000:6"
        );
        assert_eq!(redis_previous_key(Plain, "x", 0), "rls:x:-1");
        // One entry, none, and keys that are not built here (tests): the tag is never empty.
        let one = counter_key("llm", [("tenant", "acme")], 1_000);
        assert_eq!(
            redis_key(HashTagged, &one, 1),
            "rls:{llm|tenant=acme}|1000:1"
        );
        let none = counter_key("llm", [], 1_000);
        assert_eq!(redis_key(HashTagged, &none, 1), "rls:{llm}|1000:1");
        assert_eq!(redis_key(HashTagged, "a", 1), "rls:{a}:1");
    }

    #[test]
    fn client_values_cannot_move_the_tag() {
        // Braces and bars in values are escaped: the tag is still domain + first entry, and
        // the first `}` of the key closes it.
        let k = counter_key("llm", [("tenant", "}{x|y"), ("model", "{m}")], 60_000);
        let key = redis_key(RedisLayout::HashTagged, &k, 3);
        assert_eq!(key, "rls:{llm|tenant=%7D%7Bx%7Cy}|model=%7Bm%7D|60000:3");
        let open = key.find('{').unwrap_or(0);
        let close = key.find('}').unwrap_or(0);
        assert_eq!(&key[open + 1..close], "llm|tenant=%7D%7Bx%7Cy");
        // Same first entry, different second entries: same tag.
        let a = counter_key("llm", [("tenant", "acme"), ("model", "a")], 60_000);
        let b = counter_key("llm", [("tenant", "acme"), ("kind", "tokens")], 1_000);
        assert_eq!(hash_tag(&a).0, hash_tag(&b).0);
    }
}
