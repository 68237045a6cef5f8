//! The client-facing APIs the gateway understands, by request path.

/// An endpoint a client calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Api {
    /// OpenAI `POST /v1/chat/completions`
    Chat,
    /// OpenAI `POST /v1/completions`
    Completions,
    /// OpenAI `POST /v1/embeddings`
    Embeddings,
    /// Anthropic `POST /v1/messages`
    Messages,
}

impl Api {
    /// Classifies a request path (query string ignored).
    pub fn from_path(path: &str) -> Option<Api> {
        let path = path
            .split('?')
            .next()
            .unwrap_or_default()
            .trim_end_matches('/');
        Some(match path {
            "/v1/chat/completions" => Api::Chat,
            "/v1/completions" => Api::Completions,
            "/v1/embeddings" => Api::Embeddings,
            "/v1/messages" => Api::Messages,
            _ => return None,
        })
    }

    pub fn is_anthropic(self) -> bool {
        self == Api::Messages
    }

    /// Short name used in route keys (`<deployment>|<endpoint>`) and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Api::Chat => "chat",
            Api::Completions => "completions",
            Api::Embeddings => "embeddings",
            Api::Messages => "messages",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(Api::from_path("/v1/chat/completions"), Some(Api::Chat));
        assert_eq!(Api::from_path("/v1/chat/completions/?x=1"), Some(Api::Chat));
        assert_eq!(Api::from_path("/v1/messages"), Some(Api::Messages));
        assert_eq!(Api::from_path("/v1/models"), None);
    }
}
