//! Error bodies in each provider's own shape.
//!
//! - OpenAI: `{"error":{"message","type","param","code"}}`
//! - Azure OpenAI: the same for model errors; its gateway errors (auth, unknown resource) are
//!   `{"error":{"code":"401","message":…}}`
//! - Anthropic: `{"type":"error","error":{"type","message"}}`

use serde_json::{Value, json};

/// Which API a request speaks; decides the error shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    OpenAi,
    Azure,
    Anthropic,
}

/// An error answer: status, body, optional `retry-after` seconds.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub body: Value,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: u16, body: Value) -> Self {
        Self {
            status,
            body,
            retry_after: None,
        }
    }
}

pub fn openai_body(message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": kind, "param": param, "code": code}})
}

pub fn anthropic_body(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

pub fn azure_body(code: &str, message: &str) -> Value {
    json!({"error": {"code": code, "message": message}})
}

/// An OpenAI 400 `invalid_request_error`.
pub fn openai_invalid(message: &str, param: Option<&str>, code: Option<&str>) -> ApiError {
    ApiError::new(
        400,
        openai_body(message, "invalid_request_error", param, code),
    )
}

/// An Anthropic 400 `invalid_request_error`.
pub fn anthropic_invalid(message: &str) -> ApiError {
    ApiError::new(400, anthropic_body("invalid_request_error", message))
}

/// A 400 for the request's flavour (used where both APIs reject the same thing).
pub fn invalid(flavor: Flavor, message: &str) -> ApiError {
    match flavor {
        Flavor::Anthropic => anthropic_invalid(message),
        Flavor::OpenAi | Flavor::Azure => openai_invalid(message, None, None),
    }
}

/// OpenAI's answer to a body that is not JSON.
pub fn openai_bad_json() -> ApiError {
    openai_invalid(
        "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP \
         library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you \
         have trouble figuring out how to fix this, please contact us through our help center at help.openai.com.)",
        None,
        None,
    )
}

/// The key as OpenAI shows it in errors: its first 3 and last 4 characters, never more.
pub fn redact_key(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() < 8 {
        return "*".repeat(chars.len().max(3));
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}...{tail}")
}

/// 401 for a key that is not the configured one.
pub fn openai_invalid_key(key: &str) -> ApiError {
    let message = format!(
        "Incorrect API key provided: {}. You can find your API key at https://platform.openai.com/account/api-keys.",
        redact_key(key)
    );
    ApiError::new(
        401,
        openai_body(
            &message,
            "invalid_request_error",
            None,
            Some("invalid_api_key"),
        ),
    )
}

/// 401 when no `Authorization: Bearer` key came.
pub fn openai_missing_key() -> ApiError {
    ApiError::new(
        401,
        openai_body(
            "You didn't provide an API key. You need to provide your API key in an Authorization header using \
             Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank username) if \
             you're accessing the API from your browser and are prompted for a username and password. You can \
             obtain an API key from https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            None,
            None,
        ),
    )
}

pub fn azure_invalid_key() -> ApiError {
    ApiError::new(
        401,
        azure_body(
            "401",
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key \
             for an active subscription and use a correct regional API endpoint for your resource.",
        ),
    )
}

pub fn azure_missing_key() -> ApiError {
    ApiError::new(
        401,
        azure_body(
            "401",
            "Access denied due to missing subscription key. Make sure to include subscription key when making \
             requests to an API.",
        ),
    )
}

/// Azure's answer to an unknown resource, a wrong method, or a missing `api-version`.
pub fn azure_not_found() -> ApiError {
    ApiError::new(404, azure_body("404", "Resource not found"))
}

pub fn anthropic_invalid_key() -> ApiError {
    ApiError::new(
        401,
        anthropic_body("authentication_error", "invalid x-api-key"),
    )
}

pub fn anthropic_missing_key() -> ApiError {
    ApiError::new(
        401,
        anthropic_body("authentication_error", "x-api-key header is required"),
    )
}

/// OpenAI's 404 for a path/method it does not serve.
pub fn openai_invalid_url(method: &str, path: &str) -> ApiError {
    ApiError::new(
        404,
        openai_body(
            &format!("Invalid URL ({method} {path})"),
            "invalid_request_error",
            None,
            None,
        ),
    )
}

pub fn anthropic_not_found(method: &str, path: &str) -> ApiError {
    ApiError::new(
        404,
        anthropic_body("not_found_error", &format!("Not found: {method} {path}")),
    )
}

/// An error injected by a fault (`x-mock-status` or the control API), shaped like the
/// provider's own answer for that status.
pub fn injected(flavor: Flavor, status: u16, model: &str, retry_after: Option<u64>) -> ApiError {
    let body = match flavor {
        Flavor::OpenAi => {
            let (message, kind, code) = openai_status_text(status, model, retry_after);
            openai_body(&message, kind, None, code)
        }
        Flavor::Azure => {
            let (message, _, _) = openai_status_text(status, model, retry_after);
            azure_body(&status.to_string(), &message)
        }
        Flavor::Anthropic => {
            let (kind, message) = anthropic_status_text(status);
            anthropic_body(kind, message)
        }
    };
    ApiError {
        status,
        body,
        retry_after,
    }
}

fn openai_status_text(
    status: u16,
    model: &str,
    retry_after: Option<u64>,
) -> (String, &'static str, Option<&'static str>) {
    let model = if model.is_empty() {
        "this model"
    } else {
        model
    };
    match status {
        400 => ("Invalid request.".into(), "invalid_request_error", None),
        401 => (
            "Incorrect API key provided.".into(),
            "invalid_request_error",
            Some("invalid_api_key"),
        ),
        403 => (
            "You are not allowed to perform this request.".into(),
            "invalid_request_error",
            Some("permission_denied"),
        ),
        404 => (
            format!("The model `{model}` does not exist or you do not have access to it."),
            "invalid_request_error",
            Some("model_not_found"),
        ),
        429 => (
            format!(
                "Rate limit reached for {model} in organization org-mock on requests per min (RPM): Limit 3, Used 3, \
                 Requested 1. Please try again in {}s.",
                retry_after.unwrap_or(20)
            ),
            "requests",
            Some("rate_limit_exceeded"),
        ),
        500 => (
            "The server had an error while processing your request. Sorry about that!".into(),
            "server_error",
            None,
        ),
        502 => ("Bad gateway.".into(), "server_error", None),
        503 => (
            "The server is overloaded or not ready yet.".into(),
            "server_error",
            None,
        ),
        s if s >= 500 => (
            format!("The server returned an error ({s})."),
            "server_error",
            None,
        ),
        s => (
            format!("The request failed ({s})."),
            "invalid_request_error",
            None,
        ),
    }
}

fn anthropic_status_text(status: u16) -> (&'static str, &'static str) {
    match status {
        400 => ("invalid_request_error", "Invalid request."),
        401 => ("authentication_error", "invalid x-api-key"),
        403 => (
            "permission_error",
            "Your API key does not have permission to use the specified resource.",
        ),
        404 => (
            "not_found_error",
            "The requested resource could not be found.",
        ),
        413 => (
            "request_too_large",
            "Request exceeds the maximum allowed number of bytes.",
        ),
        429 => (
            "rate_limit_error",
            "Number of requests has exceeded your rate limit.",
        ),
        503 | 529 => ("overloaded_error", "Overloaded"),
        s if s >= 500 => ("api_error", "Internal server error"),
        _ => ("invalid_request_error", "Invalid request."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_keeps_three_and_four() {
        assert_eq!(redact_key("sk-test-0123456789abcd"), "sk-...abcd");
        assert_eq!(redact_key("short"), "*****");
        assert_eq!(redact_key(""), "***");
        assert_eq!(redact_key("ünïcödé-key-ok"), "ünï...y-ok");
    }

    #[test]
    fn openai_auth_bodies() {
        let e = openai_invalid_key("sk-wrong-key-9999");
        assert_eq!(e.status, 401);
        assert_eq!(e.body["error"]["type"], "invalid_request_error");
        assert_eq!(e.body["error"]["code"], "invalid_api_key");
        assert!(e.body["error"]["param"].is_null());
        let msg = e.body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            msg.starts_with("Incorrect API key provided: sk-...9999. "),
            "{msg}"
        );
        assert!(!msg.contains("wrong-key"));

        let e = openai_missing_key();
        assert_eq!(e.status, 401);
        assert!(e.body["error"]["code"].is_null());
        assert!(
            e.body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .starts_with("You didn't provide an API key")
        );
    }

    #[test]
    fn anthropic_bodies() {
        assert_eq!(
            anthropic_invalid_key().body,
            json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}})
        );
        assert_eq!(anthropic_invalid("max_tokens: Field required").status, 400);
    }

    #[test]
    fn injected_errors_per_flavor() {
        let e = injected(Flavor::OpenAi, 429, "gpt-4o", Some(2));
        assert_eq!((e.status, e.retry_after), (429, Some(2)));
        assert_eq!(e.body["error"]["code"], "rate_limit_exceeded");
        assert_eq!(e.body["error"]["type"], "requests");
        assert_eq!(
            injected(Flavor::OpenAi, 500, "m", None).body["error"]["type"],
            "server_error"
        );
        assert_eq!(
            injected(Flavor::OpenAi, 418, "m", None).body["error"]["type"],
            "invalid_request_error"
        );
        assert_eq!(
            injected(Flavor::Azure, 503, "d", None).body["error"]["code"],
            "503"
        );
        assert_eq!(
            injected(Flavor::Anthropic, 529, "c", None).body["error"]["type"],
            "overloaded_error"
        );
        assert_eq!(
            injected(Flavor::Anthropic, 500, "c", None).body["error"]["type"],
            "api_error"
        );
        assert_eq!(
            injected(Flavor::Anthropic, 429, "c", None).body["type"],
            "error"
        );
    }
}
