//! The plugin configuration (JSON or YAML in Envoy's `configuration` field), parsed in two
//! phases: raw serde structs that reject unknown keys, then a validated form. Every error names
//! the place and the value, and `on_configure` returns false with it so Envoy rejects the config.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use serde::Deserialize;

/// Default body limit: a full 128k-token context with room for JSON overhead.
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
pub const DEFAULT_MAX_OUTPUT_TOKENS: u32 = 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    keys: Vec<RawKey>,
    #[serde(default)]
    models: BTreeMap<String, RawModel>,
    max_body_bytes: Option<usize>,
    default_max_output_tokens: Option<u32>,
    #[serde(default)]
    deployment_header: bool,
    accounting: Option<RawAccounting>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccounting {
    cluster: String,
    domain: String,
    #[serde(default)]
    reservations: Vec<RawReservation>,
    timeout_ms: Option<u64>,
    max_attempts: Option<u32>,
    flush_interval_ms: Option<u64>,
    health_poll_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReservation {
    descriptor: Vec<String>,
    amount: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrice {
    prompt: f64,
    completion: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    sha256: String,
    tenant: String,
    #[serde(default)]
    tier: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    tokenizer: Option<String>,
    price: Option<RawPrice>,
    deployments: Vec<RawDeployment>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeployment {
    name: String,
    cluster: String,
    provider: String,
    model: Option<String>,
    #[serde(default = "one")]
    weight: u32,
    #[serde(default = "one")]
    priority: u32,
}

fn one() -> u32 {
    1
}

/// Which wire API a provider speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Provider {
    OpenAi,
    AzureOpenAi,
    Anthropic,
    OpenAiCompatible,
}

impl Provider {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "openai" => Provider::OpenAi,
            "azure-openai" => Provider::AzureOpenAi,
            "anthropic" => Provider::Anthropic,
            "openai-compatible" => Provider::OpenAiCompatible,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::AzureOpenAi => "azure-openai",
            Provider::Anthropic => "anthropic",
            Provider::OpenAiCompatible => "openai-compatible",
        }
    }

    /// Anthropic speaks the Messages API; everything else the OpenAI API.
    pub fn speaks_anthropic(self) -> bool {
        self == Provider::Anthropic
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Encoding {
    #[default]
    O200k,
    Cl100k,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deployment {
    pub name: String,
    pub cluster: String,
    pub provider: Provider,
    /// The model name the upstream expects.
    pub model: String,
    pub weight: u32,
    pub priority: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    pub encoding: Encoding,
    pub deployments: Vec<Deployment>,
    /// What a million tokens cost, in currency units; `None`: the model costs nothing here.
    pub price: Option<Price>,
}

/// Currency units per million tokens. Spend is counted in millionths of a unit, so a token
/// costs exactly its per-million price in millionths.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Price {
    pub prompt: f64,
    pub completion: f64,
}

impl Price {
    /// Spend of `prompt` and `completion` tokens, in millionths of the currency unit.
    pub fn micros(&self, prompt: u64, completion: u64) -> u64 {
        (prompt as f64 * self.prompt + completion as f64 * self.completion).round() as u64
    }
}

/// What the filter reserves per request besides the request itself, and where it reports the
/// real usage (ratelimit-service's `llmgateway.usage.v1.UsageService`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accounting {
    /// Envoy cluster (HTTP/2) of ratelimit-service.
    pub cluster: String,
    /// The rate-limit filter's domain.
    pub domain: String,
    /// The descriptors whose `hits_addend` is an estimate, exactly as Envoy's `rate_limits`
    /// build them: their corrections go into the same counters.
    pub reservations: Vec<Reservation>,
    pub timeout_ms: u64,
    pub max_attempts: u32,
    pub flush_interval_ms: u64,
    /// How often each worker asks the service for the deployments' shared circuits; 0: never
    /// (each Envoy then goes by its own circuits only).
    pub health_poll_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    /// `(key, value template)`: the template is literal text or one of `{tenant}`, `{tier}`,
    /// `{model}`, `{deployment}`.
    pub descriptor: Vec<(String, String)>,
    pub amount: Amount,
}

/// What a reserved descriptor's `hits_addend` counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Amount {
    /// `%FILTER_STATE(wasm.llm_estimate:PLAIN)%`
    Tokens,
    /// `%FILTER_STATE(wasm.llm_cost_estimate:PLAIN)%`, millionths of the currency unit.
    Cost,
}

pub const PLACEHOLDERS: [&str; 4] = ["{tenant}", "{tier}", "{model}", "{deployment}"];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub tenant: String,
    pub tier: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// SHA-256 of the key (raw 32 bytes) → who it is.
    pub keys: HashMap<[u8; 32], Identity>,
    pub models: BTreeMap<String, Model>,
    pub max_body_bytes: usize,
    pub default_max_output_tokens: u32,
    pub deployment_header: bool,
    /// `None`: reservations are never reconciled (estimate-only).
    pub accounting: Option<Accounting>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// e.g. `models.gpt-4o.deployments[1].weight`
    pub place: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.place.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.place, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

fn err(place: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        place: place.into(),
        message: message.into(),
    }
}

/// Header values the filter sets must be plain tokens: no spoofable separators or controls.
fn accounting(raw: RawAccounting) -> Result<Accounting, ConfigError> {
    for (field, v) in [("cluster", &raw.cluster), ("domain", &raw.domain)] {
        if v.is_empty() {
            return Err(err(format!("accounting.{field}"), "must not be empty"));
        }
    }
    let mut reservations = Vec::new();
    for (i, r) in raw.reservations.into_iter().enumerate() {
        let here = format!("accounting.reservations[{i}]");
        let amount = match r.amount.as_str() {
            "tokens" => Amount::Tokens,
            "cost" => Amount::Cost,
            other => {
                return Err(err(
                    format!("{here}.amount"),
                    format!("unknown amount '{other}' (expected tokens or cost)"),
                ));
            }
        };
        if r.descriptor.is_empty() {
            return Err(err(
                format!("{here}.descriptor"),
                "needs at least one entry",
            ));
        }
        let mut descriptor = Vec::new();
        for (j, e) in r.descriptor.iter().enumerate() {
            let at = format!("{here}.descriptor[{j}]");
            let Some((k, v)) = e
                .split_once('=')
                .filter(|(k, v)| !k.is_empty() && !v.is_empty())
            else {
                return Err(err(at, format!("'{e}' must be key=value")));
            };
            if v.contains('{') && !PLACEHOLDERS.contains(&v) {
                return Err(err(
                    at,
                    format!(
                        "unknown placeholder '{v}' (expected one of {})",
                        PLACEHOLDERS.join(", ")
                    ),
                ));
            }
            descriptor.push((k.to_string(), v.to_string()));
        }
        reservations.push(Reservation { descriptor, amount });
    }
    // ratelimit-service remembers report ids for 5 minutes: every retry must fall inside.
    let max_attempts = raw.max_attempts.unwrap_or(5);
    if !(1..=10).contains(&max_attempts) {
        return Err(err("accounting.max_attempts", "must be 1 to 10"));
    }
    let timeout_ms = raw.timeout_ms.unwrap_or(1000);
    if !(1..=10_000).contains(&timeout_ms) {
        return Err(err("accounting.timeout_ms", "must be 1 to 10000"));
    }
    let health_poll_ms = raw.health_poll_ms.unwrap_or(1000);
    if health_poll_ms != 0 && !(100..=60_000).contains(&health_poll_ms) {
        return Err(err(
            "accounting.health_poll_ms",
            "must be 0 (off) or 100 to 60000",
        ));
    }
    Ok(Accounting {
        cluster: raw.cluster,
        domain: raw.domain,
        reservations,
        timeout_ms,
        max_attempts,
        flush_interval_ms: raw.flush_interval_ms.unwrap_or(50).clamp(1, 10_000),
        health_poll_ms,
    })
}

fn header_safe(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:@".contains(&b))
}

impl Config {
    /// Parses JSON or YAML (YAML is a superset of JSON).
    pub fn parse(text: &[u8]) -> Result<Config, ConfigError> {
        let text = std::str::from_utf8(text).map_err(|e| err("", format!("not UTF-8: {e}")))?;
        let raw: RawConfig = serde_yaml_ng::from_str(text).map_err(|e| err("", e.to_string()))?;
        Self::compile(raw)
    }

    fn compile(raw: RawConfig) -> Result<Config, ConfigError> {
        let mut keys = HashMap::new();
        for (i, k) in raw.keys.iter().enumerate() {
            let here = format!("keys[{i}]");
            let hash: [u8; 32] = hex::decode(k.sha256.trim())
                .ok()
                .and_then(|v| v.try_into().ok())
                .ok_or_else(|| {
                    err(
                        format!("{here}.sha256"),
                        format!(
                            "must be 64 hex digits (the SHA-256 of the key), got '{}'",
                            k.sha256
                        ),
                    )
                })?;
            for (field, v) in [("tenant", &k.tenant), ("tier", &k.tier)] {
                let optional_empty = field == "tier" && v.is_empty();
                if !optional_empty && !header_safe(v) {
                    return Err(err(
                        format!("{here}.{field}"),
                        format!("'{v}' must be non-empty letters, digits or - _ . : @"),
                    ));
                }
            }
            let who = Identity {
                tenant: k.tenant.clone(),
                tier: k.tier.clone(),
            };
            if keys.insert(hash, who).is_some() {
                return Err(err(
                    format!("{here}.sha256"),
                    "the same key is listed twice",
                ));
            }
        }
        let mut models = BTreeMap::new();
        for (name, m) in raw.models {
            let here = format!("models.{name}");
            let encoding = match m.tokenizer.as_deref() {
                None | Some("o200k") | Some("o200k_base") => Encoding::O200k,
                Some("cl100k") | Some("cl100k_base") => Encoding::Cl100k,
                Some(other) => {
                    return Err(err(
                        format!("{here}.tokenizer"),
                        format!("unknown tokenizer '{other}' (expected o200k or cl100k)"),
                    ));
                }
            };
            if m.deployments.is_empty() {
                return Err(err(
                    format!("{here}.deployments"),
                    "needs at least one deployment",
                ));
            }
            let mut names = HashSet::new();
            let mut deployments = Vec::new();
            for (j, d) in m.deployments.into_iter().enumerate() {
                let at = format!("{here}.deployments[{j}]");
                if !header_safe(&d.name) {
                    return Err(err(
                        format!("{at}.name"),
                        format!("'{}' must be letters, digits or - _ . : @", d.name),
                    ));
                }
                if !names.insert(d.name.clone()) {
                    return Err(err(
                        format!("{at}.name"),
                        format!("duplicate deployment '{}' for this model", d.name),
                    ));
                }
                if d.cluster.is_empty() {
                    return Err(err(format!("{at}.cluster"), "must not be empty"));
                }
                let provider = Provider::parse(&d.provider).ok_or_else(|| {
                    err(
                        format!("{at}.provider"),
                        format!(
                            "unknown provider '{}' (expected openai, azure-openai, anthropic or openai-compatible)",
                            d.provider
                        ),
                    )
                })?;
                if d.weight == 0 {
                    return Err(err(format!("{at}.weight"), "must be at least 1"));
                }
                deployments.push(Deployment {
                    model: d.model.unwrap_or_else(|| name.clone()),
                    name: d.name,
                    cluster: d.cluster,
                    provider,
                    weight: d.weight,
                    priority: d.priority,
                });
            }
            let price = match m.price {
                Some(p) => {
                    for (field, v) in [("prompt", p.prompt), ("completion", p.completion)] {
                        if !(v.is_finite() && v >= 0.0) {
                            return Err(err(
                                format!("{here}.price.{field}"),
                                format!(
                                    "must be a non-negative amount per million tokens, got {v}"
                                ),
                            ));
                        }
                    }
                    Some(Price {
                        prompt: p.prompt,
                        completion: p.completion,
                    })
                }
                None => None,
            };
            models.insert(
                name,
                Model {
                    encoding,
                    deployments,
                    price,
                },
            );
        }
        let accounting = raw.accounting.map(accounting).transpose()?;
        Ok(Config {
            accounting,
            keys,
            models,
            max_body_bytes: raw.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES),
            default_max_output_tokens: raw
                .default_max_output_tokens
                .unwrap_or(DEFAULT_MAX_OUTPUT_TOKENS),
            deployment_header: raw.deployment_header,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const KEY_HASH: &str = "4c5dc9b7708905f77f5e5d16316b5dfb425e68cb326dcd55a860e90a7707031e";

    fn parse(s: &str) -> Result<Config, String> {
        Config::parse(s.as_bytes()).map_err(|e| e.to_string())
    }

    #[test]
    fn parses_json_and_yaml_with_defaults() {
        let json = format!(
            r#"{{"keys":[{{"sha256":"{KEY_HASH}","tenant":"demo-free","tier":"free"}}],
               "models":{{"gpt-4o-mini":{{"deployments":[{{"name":"openai-a","cluster":"openai-a","provider":"openai","weight":3}}]}}}}}}"#
        );
        let c = parse(&json).unwrap();
        let d = &c.models["gpt-4o-mini"].deployments[0];
        assert_eq!(
            (d.model.as_str(), d.weight, d.priority),
            ("gpt-4o-mini", 3, 1)
        );
        assert_eq!(c.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        let yaml = "models:\n  claude:\n    tokenizer: cl100k\n    deployments:\n      - {name: a, cluster: c, provider: anthropic, model: claude-3-5-haiku-latest}\n";
        let c = parse(yaml).unwrap();
        assert_eq!(c.models["claude"].encoding, Encoding::Cl100k);
        assert!(
            c.models["claude"].deployments[0]
                .provider
                .speaks_anthropic()
        );
    }

    #[test]
    fn errors_name_the_place_and_value() {
        let cases = [
            (
                "keys: [{sha256: abc, tenant: t}]",
                "keys[0].sha256: must be 64 hex digits (the SHA-256 of the key), got 'abc'",
            ),
            (
                &format!("keys: [{{sha256: {KEY_HASH}, tenant: 'a b'}}]"),
                "keys[0].tenant: 'a b' must be non-empty letters, digits or - _ . : @",
            ),
            (
                &format!(
                    "keys: [{{sha256: {KEY_HASH}, tenant: a}}, {{sha256: {KEY_HASH}, tenant: b}}]"
                ),
                "keys[1].sha256: the same key is listed twice",
            ),
            (
                "models: {m: {deployments: []}}",
                "models.m.deployments: needs at least one deployment",
            ),
            (
                "models: {m: {deployments: [{name: a, cluster: c, provider: cohere}]}}",
                "models.m.deployments[0].provider: unknown provider 'cohere' (expected openai, azure-openai, anthropic or openai-compatible)",
            ),
            (
                "models: {m: {deployments: [{name: a, cluster: c, provider: openai, weight: 0}]}}",
                "models.m.deployments[0].weight: must be at least 1",
            ),
            (
                "models: {m: {deployments: [{name: a, cluster: c, provider: openai}, {name: a, cluster: d, provider: openai}]}}",
                "models.m.deployments[1].name: duplicate deployment 'a' for this model",
            ),
            (
                "models: {m: {tokenizer: p50k, deployments: [{name: a, cluster: c, provider: openai}]}}",
                "models.m.tokenizer: unknown tokenizer 'p50k' (expected o200k or cl100k)",
            ),
            (
                "models: {m: {price: {prompt: -1, completion: 2}, deployments: [{name: a, cluster: c, provider: openai}]}}",
                "models.m.price.prompt: must be a non-negative amount per million tokens, got -1",
            ),
            (
                "accounting: {cluster: '', domain: d}",
                "accounting.cluster: must not be empty",
            ),
            (
                "accounting: {cluster: r, domain: d, max_attempts: 11}",
                "accounting.max_attempts: must be 1 to 10",
            ),
            (
                "accounting: {cluster: r, domain: d, health_poll_ms: 5}",
                "accounting.health_poll_ms: must be 0 (off) or 100 to 60000",
            ),
            (
                "accounting: {cluster: r, domain: d, timeout_ms: 60000}",
                "accounting.timeout_ms: must be 1 to 10000",
            ),
            (
                "accounting: {cluster: r, domain: d, reservations: [{descriptor: [tenant], amount: tokens}]}",
                "accounting.reservations[0].descriptor[0]: 'tenant' must be key=value",
            ),
            (
                "accounting: {cluster: r, domain: d, reservations: [{descriptor: ['tenant={user}'], amount: tokens}]}",
                "accounting.reservations[0].descriptor[0]: unknown placeholder '{user}' (expected one of {tenant}, {tier}, {model}, {deployment})",
            ),
            (
                "accounting: {cluster: r, domain: d, reservations: [{descriptor: ['a=b'], amount: dollars}]}",
                "accounting.reservations[0].amount: unknown amount 'dollars' (expected tokens or cost)",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text).unwrap_err(), want, "{text}");
        }
        let unknown = parse("modles: {}").unwrap_err();
        assert!(unknown.starts_with("unknown field `modles`"), "{unknown}");
    }
}
