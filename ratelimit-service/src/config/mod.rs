//! Rate-limit configuration: loading and validation (`load`), and the compiled tree that
//! requests are matched against (this module).
//!
//! Matching follows the reference service level by level: an entry first matches a descriptor
//! with the same key and value, then one whose value is a `*` pattern, then one with the key
//! alone. A limit applies only when the request's descriptor ends at the depth where the limit
//! is declared.

mod load;
mod raw;

use std::collections::HashMap;
use std::sync::Arc;

pub use load::{ConfigError, Loaded, Snapshot, compile, load_path, parse_file, read_snapshot};

use crate::store::Mode;
use crate::window::Window;

/// Time unit of a limit. Month and year are fixed lengths (30 and 365 days), as in the
/// reference service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Unit {
    Second,
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl Unit {
    pub fn parse(s: &str) -> Option<Unit> {
        Some(match s.to_ascii_lowercase().as_str() {
            "second" => Unit::Second,
            "minute" => Unit::Minute,
            "hour" => Unit::Hour,
            "day" => Unit::Day,
            "week" => Unit::Week,
            "month" => Unit::Month,
            "year" => Unit::Year,
            _ => return None,
        })
    }

    pub fn millis(self) -> u64 {
        const S: u64 = 1000;
        match self {
            Unit::Second => S,
            Unit::Minute => 60 * S,
            Unit::Hour => 3600 * S,
            Unit::Day => 86_400 * S,
            Unit::Week => 7 * 86_400 * S,
            Unit::Month => 30 * 86_400 * S,
            Unit::Year => 365 * 86_400 * S,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Unit::Second => "second",
            Unit::Minute => "minute",
            Unit::Hour => "hour",
            Unit::Day => "day",
            Unit::Week => "week",
            Unit::Month => "month",
            Unit::Year => "year",
        }
    }
}

/// What a limit counts, and so which header family (`x-ratelimit-*-requests`, `-tokens`,
/// `-budget`) it feeds. Token and budget limits are reserved at admission and reconciled with
/// the real usage afterwards (`usage.rs`); request counts never change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Requests,
    Tokens,
    /// Spend, counted in millionths of the currency unit.
    Budget,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Requests, Kind::Tokens, Kind::Budget];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Requests => "requests",
            Kind::Tokens => "tokens",
            Kind::Budget => "budget",
        }
    }

    /// Reserved on an estimate, so corrected by usage reports.
    pub fn reconciled(self) -> bool {
        self != Kind::Requests
    }
}

/// Millionths of a currency unit per unit: budgets are integers in the stores.
pub const MICROS: f64 = 1_000_000.0;

#[derive(Clone, Debug, PartialEq)]
pub struct Limit {
    pub per_unit: u64,
    pub unit: Unit,
    pub window: Window,
    pub kind: Kind,
    pub mode: Mode,
    pub unlimited: bool,
    pub name: Option<String>,
    pub replaces: Vec<String>,
    pub detailed_metric: bool,
    /// Config path for metrics, e.g. `api.tenant.tier_free`.
    pub path: String,
}

/// A level of the descriptor tree.
#[derive(Debug, Default)]
pub struct Node {
    pub limit: Option<Arc<Limit>>,
    pub children: HashMap<String, Children>,
    pub share_threshold: bool,
    pub value_to_metric: bool,
}

/// The descriptors under one key at one level.
#[derive(Debug, Default)]
pub struct Children {
    pub by_value: HashMap<String, Node>,
    /// `*` patterns in declaration order; the first match wins.
    pub wildcards: Vec<(Pattern, Node)>,
    pub any_value: Option<Node>,
}

/// A value pattern where each `*` matches any run of characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    pub text: String,
    parts: Vec<String>,
}

impl Pattern {
    pub fn new(text: &str) -> Self {
        Self {
            text: text.to_string(),
            parts: text.split('*').map(str::to_string).collect(),
        }
    }

    pub fn matches(&self, value: &str) -> bool {
        let (first, rest) = match self.parts.split_first() {
            Some(x) => x,
            None => return value.is_empty(),
        };
        let Some(mut tail) = value.strip_prefix(first.as_str()) else {
            return false;
        };
        let Some((last, middle)) = rest.split_last() else {
            return tail.is_empty();
        };
        for part in middle {
            match tail.find(part.as_str()) {
                Some(i) => tail = &tail[i + part.len()..],
                None => return false,
            }
        }
        tail.len() >= last.len() && tail.ends_with(last.as_str())
    }
}

/// All loaded domains.
#[derive(Debug, Default)]
pub struct Config {
    pub domains: HashMap<String, Node>,
}

/// A request descriptor matched to a limit.
#[derive(Debug, PartialEq)]
pub struct Matched<'a> {
    pub limit: &'a Arc<Limit>,
    /// Values to count under: the request's own, or the wildcard pattern where
    /// `share_threshold` makes all matching values share one counter.
    pub values: Vec<&'a str>,
    /// Metric label: the config path, with request values where `value_to_metric` or
    /// `detailed_metric` ask for them.
    pub metric_key: String,
}

impl Config {
    /// Finds the limit for one descriptor's entries, or `None` when no limit applies.
    pub fn lookup<'a>(
        &'a self,
        domain: &str,
        entries: &[(&'a str, &'a str)],
    ) -> Option<Matched<'a>> {
        let mut node = self.domains.get(domain)?;
        let mut values = Vec::with_capacity(entries.len());
        let mut metric_key = String::from(domain);
        let mut detailed_key = String::from(domain);
        for (i, &(key, value)) in entries.iter().enumerate() {
            let children = node.children.get(key)?;
            let (next, shown, counted) = if let Some(n) = children.by_value.get(value) {
                (n, Some(value), value)
            } else if let Some((p, n)) = children.wildcards.iter().find(|(p, _)| p.matches(value)) {
                let counted = if n.share_threshold {
                    p.text.as_str()
                } else {
                    value
                };
                let shown = if n.share_threshold || !n.value_to_metric {
                    p.text.as_str()
                } else {
                    value
                };
                (n, Some(shown), counted)
            } else {
                let n = children.any_value.as_ref()?;
                (n, n.value_to_metric.then_some(value), value)
            };
            values.push(counted);
            for (out, v) in [(&mut metric_key, shown), (&mut detailed_key, Some(value))] {
                out.push('.');
                out.push_str(key);
                if let Some(v) = v {
                    out.push('_');
                    out.push_str(v);
                }
            }
            if i + 1 == entries.len() {
                let limit = next.limit.as_ref()?;
                if limit.detailed_metric {
                    metric_key = detailed_key;
                }
                return Some(Matched {
                    limit,
                    values,
                    metric_key,
                });
            }
            node = next;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_like_globs() {
        let p = Pattern::new("foo*");
        assert!(p.matches("foo") && p.matches("foobar") && !p.matches("fo"));
        let p = Pattern::new("a*b*c");
        assert!(p.matches("abc") && p.matches("a-b-c") && p.matches("axxbyyc"));
        assert!(!p.matches("acb") && !p.matches("ab"));
        let p = Pattern::new("*x");
        assert!(p.matches("x") && p.matches("yx") && !p.matches("xy"));
        assert!(Pattern::new("a*a").matches("aa") && !Pattern::new("a*a").matches("a"));
    }
}
