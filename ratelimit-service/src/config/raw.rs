//! The YAML as written: the reference service's format plus this project's additive keys.
//! Unknown keys are errors, so a typo never silently disables a limit.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    #[serde(default)]
    pub domain: String,
    #[serde(default)]
    pub descriptors: Vec<RawDescriptor>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDescriptor {
    #[serde(default)]
    pub key: String,
    pub value: Option<String>,
    pub rate_limit: Option<RawRateLimit>,
    #[serde(default)]
    pub descriptors: Vec<RawDescriptor>,
    #[serde(default)]
    pub shadow_mode: bool,
    #[serde(default)]
    pub quota_mode: bool,
    #[serde(default)]
    pub detailed_metric: bool,
    #[serde(default)]
    pub value_to_metric: bool,
    #[serde(default)]
    pub share_threshold: bool,
    pub metadata: Option<serde_yaml_ng::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub unit: Option<String>,
    pub requests_per_unit: Option<u64>,
    #[serde(default)]
    pub unlimited: bool,
    pub name: Option<String>,
    #[serde(default)]
    pub replaces: Vec<RawReplaces>,
    /// Extension: `sliding` (default) or `fixed`.
    pub algorithm: Option<String>,
    /// Extension: `requests` (default), `tokens` or `budget`: what the limit counts and which
    /// `x-ratelimit-*` header family it feeds.
    pub kind: Option<String>,
    /// Extension: a spend limit in currency units per `unit` (e.g. `5.00`), instead of
    /// `requests_per_unit`; implies `kind: budget`. Counted in millionths.
    pub budget: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReplaces {
    #[serde(default)]
    pub name: String,
}
