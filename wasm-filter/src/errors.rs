//! Errors the gateway answers itself: OpenAI-shaped JSON with the status a client expects.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayError {
    pub status: u32,
    pub message: String,
    /// OpenAI's `type`.
    pub kind: &'static str,
    /// OpenAI's `code`.
    pub code: &'static str,
}

impl GatewayError {
    pub fn malformed(message: impl Into<String>) -> Self {
        Self {
            status: 400,
            message: message.into(),
            kind: "invalid_request_error",
            code: "invalid_request",
        }
    }
    pub fn missing_key() -> Self {
        Self {
            status: 401,
            message: "You didn't provide an API key. Send it as 'Authorization: Bearer <key>', 'x-api-key' or 'api-key'."
                .into(),
            kind: "invalid_request_error",
            code: "missing_api_key",
        }
    }
    pub fn unknown_key() -> Self {
        Self {
            status: 401,
            message: "Incorrect API key provided.".into(),
            kind: "invalid_request_error",
            code: "invalid_api_key",
        }
    }
    pub fn unknown_model(model: &str) -> Self {
        Self {
            status: 404,
            message: format!("The model '{model}' does not exist or you do not have access to it."),
            kind: "invalid_request_error",
            code: "model_not_found",
        }
    }
    pub fn too_large(limit: usize) -> Self {
        Self {
            status: 413,
            message: format!("Request body is larger than the gateway's limit of {limit} bytes."),
            kind: "invalid_request_error",
            code: "request_too_large",
        }
    }
    pub fn no_deployment(model: &str) -> Self {
        Self {
            status: 503,
            message: format!(
                "No healthy deployment is available for model '{model}'. Retry later."
            ),
            kind: "server_error",
            code: "no_deployment_available",
        }
    }
    pub fn internal() -> Self {
        Self {
            status: 500,
            message: "The gateway failed to handle this request.".into(),
            kind: "server_error",
            code: "internal_error",
        }
    }

    /// `{"error":{"message","type","param":null,"code"}}`
    pub fn body(&self) -> String {
        serde_json::json!({
            "error": { "message": self.message, "type": self.kind, "param": null, "code": self.code }
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn bodies_are_openai_shaped() {
        let v: serde_json::Value =
            serde_json::from_str(&GatewayError::unknown_model("gpt-9").body()).unwrap();
        assert_eq!(v["error"]["code"], "model_not_found");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(v["error"]["param"].is_null());
        assert_eq!(GatewayError::too_large(10).status, 413);
        assert_eq!(GatewayError::no_deployment("m").status, 503);
    }
}
