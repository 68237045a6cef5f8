//! Gateway API keys: where clients put them, and who they are. Keys are compared by SHA-256,
//! so the config holds no usable secret.

use sha2::{Digest, Sha256};

use crate::config::{Config, Identity};

/// Request headers a client may carry its key in, in order of precedence: OpenAI SDKs send
/// `authorization: Bearer`, Anthropic's `x-api-key` (or Bearer in newer SDKs), Azure's `api-key`.
pub const KEY_HEADERS: [&str; 3] = ["authorization", "x-api-key", "api-key"];

/// The key from a header's value (`Bearer <key>` for `authorization`).
pub fn key_from(header: &str, value: &str) -> Option<String> {
    let value = value.trim();
    let key = if header == "authorization" {
        let (scheme, rest) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        rest.trim()
    } else {
        value
    };
    (!key.is_empty()).then(|| key.to_string())
}

#[derive(Debug, PartialEq, Eq)]
pub enum AuthError {
    Missing,
    Unknown,
}

/// Finds the caller among the configured keys. `get` reads a request header.
pub fn authenticate(
    config: &Config,
    get: impl Fn(&str) -> Option<String>,
) -> Result<&Identity, AuthError> {
    let key = KEY_HEADERS
        .iter()
        .find_map(|h| get(h).and_then(|v| key_from(h, &v)))
        .ok_or(AuthError::Missing)?;
    let hash: [u8; 32] = Sha256::digest(key.as_bytes()).into();
    config.keys.get(&hash).ok_or(AuthError::Unknown)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn config() -> Config {
        // sha256("sk-demo-free")
        Config::parse(
            b"keys: [{sha256: e47e4ba5a43e2315c5dacac8bb11b346f061d4cd69e59ec04cc41ac3971fc825, tenant: demo-free, tier: free}]",
        )
        .unwrap()
    }

    #[test]
    fn finds_the_key_in_any_supported_header() {
        let c = config();
        for (h, v) in [
            ("authorization", "Bearer sk-demo-free"),
            ("authorization", "bearer  sk-demo-free "),
            ("x-api-key", "sk-demo-free"),
            ("api-key", "sk-demo-free"),
        ] {
            let who = authenticate(&c, |name| (name == h).then(|| v.to_string())).unwrap();
            assert_eq!(who.tenant, "demo-free", "{h}: {v}");
        }
    }

    #[test]
    fn missing_and_unknown_keys() {
        let c = config();
        assert_eq!(authenticate(&c, |_| None), Err(AuthError::Missing));
        assert_eq!(
            authenticate(&c, |h| (h == "authorization").then(|| "Basic abc".into())),
            Err(AuthError::Missing)
        );
        assert_eq!(
            authenticate(&c, |h| (h == "x-api-key").then(|| "sk-nope".into())),
            Err(AuthError::Unknown)
        );
    }
}
