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
    /// Extension: `requests` (default) or `tokens`: which OpenAI header family the limit feeds.
    pub kind: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReplaces {
    #[serde(default)]
    pub name: String,
}
