//! One request through the gateway, as pure steps the proxy-wasm shell drives:
//! [`on_request_headers`] (authenticate, strip what clients must not set, set the tenant
//! headers the rate-limit descriptors read) and [`on_request_body`] (parse, estimate, choose a
//! deployment, rewrite the body). Each step returns what to do; the shell only performs it.

use serde_json::Value;

use crate::api::Api;
use crate::auth::{AuthError, authenticate};
use crate::config::{Config, Deployment, Encoding, Identity, Price, Provider};
use crate::errors::GatewayError;
use crate::estimate::max_output_tokens;
use crate::meter::{Format, Meter};
use crate::select::choose;

/// Headers the filter sets for the filters after it. Clients' copies are always removed first,
/// so a client cannot pick its own tenant, tier or limits.
pub const TENANT_HEADER: &str = "x-llm-tenant";
pub const TIER_HEADER: &str = "x-llm-tier";
pub const INTERNAL_HEADERS: [&str; 6] = [
    TENANT_HEADER,
    TIER_HEADER,
    "x-llm-deployment",
    "x-llm-estimate",
    "x-llm-route",
    "x-llm-model",
];
/// Client credentials for the gateway: never forwarded to a provider (providers get their own
/// key from Envoy's credential injector).
pub const CLIENT_KEY_HEADERS: [&str; 3] = crate::auth::KEY_HEADERS;

/// Estimates a request's prompt tokens; the output reservation is the request's own limit.
pub trait Estimator {
    fn prompt_tokens(&self, api: Api, body: &Value, encoding: Encoding) -> u64;
}

impl Estimator for crate::estimate::Tokenizers {
    fn prompt_tokens(&self, api: Api, body: &Value, encoding: Encoding) -> u64 {
        crate::estimate::Tokenizers::prompt_tokens(self, api, body, encoding)
    }
}

/// What the shell does after the request headers.
#[derive(Debug, PartialEq)]
pub enum HeadersStep {
    /// Remove `remove`, set `set`, continue; the body step follows.
    Proceed {
        pending: Pending,
        remove: Vec<&'static str>,
        set: Vec<(&'static str, String)>,
    },
    /// Answer locally with this status and JSON body.
    Reply { status: u32, body: String },
}

/// A request whose headers passed, waiting for its body.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub api: Api,
    pub who: Identity,
}

/// Request headers as the shell reads them (lower-case names).
pub trait RequestHeaders {
    fn get(&self, name: &str) -> Option<String>;
}

impl<F: Fn(&str) -> Option<String>> RequestHeaders for F {
    fn get(&self, name: &str) -> Option<String> {
        self(name)
    }
}

fn reply(e: GatewayError) -> HeadersStep {
    HeadersStep::Reply {
        status: e.status,
        body: e.body(),
    }
}

pub fn on_request_headers(
    config: &Config,
    headers: &impl RequestHeaders,
    end_of_stream: bool,
) -> HeadersStep {
    let who = match authenticate(config, |h| headers.get(h)) {
        Ok(who) => who.clone(),
        Err(AuthError::Missing) => return reply(GatewayError::missing_key()),
        Err(AuthError::Unknown) => return reply(GatewayError::unknown_key()),
    };
    let path = headers.get(":path").unwrap_or_default();
    let method = headers.get(":method").unwrap_or_default();
    if method == "GET" && path.split('?').next() == Some("/v1/models") {
        return HeadersStep::Reply {
            status: 200,
            body: models_list(config),
        };
    }
    let Some(api) = Api::from_path(&path) else {
        return reply(GatewayError {
            status: 404,
            message: format!(
                "Unknown endpoint {method} {path}. This gateway serves POST /v1/chat/completions, /v1/completions, /v1/embeddings and /v1/messages."
            ),
            kind: "invalid_request_error",
            code: "unknown_url",
        });
    };
    if method != "POST" {
        return reply(GatewayError {
            status: 405,
            message: format!("{path} takes POST, not {method}."),
            kind: "invalid_request_error",
            code: "method_not_allowed",
        });
    }
    if end_of_stream {
        return reply(GatewayError::malformed(
            "The request has no body; send a JSON object.",
        ));
    }
    let mut remove: Vec<&'static str> = INTERNAL_HEADERS.to_vec();
    remove.extend(CLIENT_KEY_HEADERS);
    // The body may be rewritten (model name, translation): Envoy recomputes the length.
    remove.push("content-length");
    // The answer must come back uncompressed: the filter reads its usage and may translate it
    // (a compressor filter after this one can still compress it for the client).
    remove.push("accept-encoding");
    let mut set = vec![(TENANT_HEADER, who.tenant.clone())];
    if !who.tier.is_empty() {
        set.push((TIER_HEADER, who.tier.clone()));
    }
    HeadersStep::Proceed {
        pending: Pending { api, who },
        remove,
        set,
    }
}

/// The `GET /v1/models` answer, OpenAI-shaped.
fn models_list(config: &Config) -> String {
    let data: Vec<Value> = config
        .models
        .keys()
        .map(|id| serde_json::json!({"id": id, "object": "model", "created": 0, "owned_by": "llm-gateway"}))
        .collect();
    serde_json::json!({"object": "list", "data": data}).to_string()
}

/// How the response must be rewritten for the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseShape {
    /// Same API both sides.
    AsIs,
    /// Anthropic upstream, OpenAI client.
    AnthropicToOpenAi,
    /// OpenAI upstream, Anthropic client.
    OpenAiToAnthropic,
}

/// Where and how a request goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Routed {
    /// Route key Envoy matches on (filter state `wasm.llm_route`): `<deployment>|<endpoint>`.
    pub route: String,
    pub deployment: String,
    pub provider: Provider,
    /// The new request body, or `None` when the client's body goes upstream unchanged.
    pub body: Option<Vec<u8>>,
    /// Tokens to reserve (filter state `wasm.llm_estimate`, the token limits' hits_addend):
    /// `prompt_estimate + output_estimate`.
    pub estimate: u64,
    pub prompt_estimate: u64,
    /// The request's output limit (or the configured default).
    pub output_estimate: u64,
    /// Spend to reserve, millionths of the currency unit (filter state
    /// `wasm.llm_cost_estimate`); 0 for a model without a price.
    pub cost_estimate: u64,
    pub price: Option<Price>,
    pub encoding: Encoding,
    /// The deployment speaks Anthropic's API (where its usage is in the response).
    pub upstream_anthropic: bool,
    /// The gateway asked the provider for a usage chunk the client did not ask for: it is
    /// removed from the stream the client gets.
    pub hide_usage: bool,
    pub response: ResponseShape,
    /// The model the client asked for (answers carry it back).
    pub client_model: String,
    pub stream: bool,
    /// The client asked for a final usage chunk (`stream_options.include_usage`).
    pub include_usage: bool,
}

/// Parses, estimates, chooses and rewrites. `healthy` says whether a deployment may take
/// traffic; `draw` is uniform in [0, 1).
pub fn on_request_body(
    config: &Config,
    pending: &Pending,
    body: &[u8],
    estimator: &impl Estimator,
    healthy: impl Fn(&str) -> bool,
    draw: f64,
) -> Result<Routed, GatewayError> {
    if body.len() > config.max_body_bytes {
        return Err(GatewayError::too_large(config.max_body_bytes));
    }
    let json: Value = serde_json::from_slice(body).map_err(|e| {
        GatewayError::malformed(format!("The request body is not valid JSON: {e}."))
    })?;
    if !json.is_object() {
        return Err(GatewayError::malformed(
            "The request body must be a JSON object.",
        ));
    }
    let model_name = match json.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(_) => {
            return Err(GatewayError::malformed(
                "'model' must be a non-empty string.",
            ));
        }
        None => {
            return Err(GatewayError::malformed(
                "You must provide a model parameter.",
            ));
        }
    };
    let model = config
        .models
        .get(&model_name)
        .ok_or_else(|| GatewayError::unknown_model(&model_name))?;
    let api = pending.api;
    let compatible: Vec<Deployment> = model
        .deployments
        .iter()
        .filter(|d| upstream_api(api, d.provider).is_some())
        .cloned()
        .collect();
    if compatible.is_empty() {
        return Err(GatewayError::malformed(format!(
            "The model '{model_name}' is not available on /v1/{}.",
            match api {
                Api::Chat => "chat/completions",
                Api::Completions => "completions",
                Api::Embeddings => "embeddings",
                Api::Messages => "messages",
            }
        )));
    }
    let prompt_estimate = estimator.prompt_tokens(api, &json, model.encoding);
    let output_estimate = max_output_tokens(api, &json, config.default_max_output_tokens);
    let estimate = prompt_estimate.saturating_add(output_estimate);
    let cost_estimate = model
        .price
        .map_or(0, |p| p.micros(prompt_estimate, output_estimate));
    let dep = choose(&compatible, healthy, draw)
        .ok_or_else(|| GatewayError::no_deployment(&model_name))?;
    let target = upstream_api(api, dep.provider).unwrap_or(api);
    let stream = json.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let include_usage = json
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    // An OpenAI stream reports usage only when asked; accounting needs it, so the gateway asks
    // and hides the answer from a client that did not.
    let hide_usage = config.accounting.is_some()
        && stream
        && !include_usage
        && matches!(
            (api, target),
            (Api::Chat, Api::Chat) | (Api::Completions, Api::Completions)
        );
    let (upstream, response) = match (api.is_anthropic(), target.is_anthropic()) {
        // Same API and model name: forward the client's bytes, no re-serialization.
        (a, b) if a == b && dep.model == model_name && !hide_usage => (None, ResponseShape::AsIs),
        (false, true) => (
            crate::translate::openai_to_anthropic_request(
                &json,
                &dep.model,
                config.default_max_output_tokens,
            )
            .map(Some)
            .map_err(|e| GatewayError::malformed(e.to_string()))?,
            ResponseShape::AnthropicToOpenAi,
        ),
        (true, false) => (
            crate::translate::anthropic_to_openai_request(&json, &dep.model)
                .map(Some)
                .map_err(|e| GatewayError::malformed(e.to_string()))?,
            ResponseShape::OpenAiToAnthropic,
        ),
        _ => {
            let mut j = json;
            if let Some(m) = j.get_mut("model") {
                *m = Value::String(dep.model.clone());
            }
            if hide_usage && let Some(o) = j.as_object_mut() {
                let options = o
                    .entry("stream_options")
                    .or_insert_with(|| Value::Object(Default::default()));
                if let Some(opts) = options.as_object_mut() {
                    opts.insert("include_usage".into(), Value::Bool(true));
                } else {
                    *options = serde_json::json!({"include_usage": true});
                }
            }
            (Some(j), ResponseShape::AsIs)
        }
    };
    let body = match upstream {
        Some(v) => Some(serde_json::to_vec(&v).map_err(|_| GatewayError::internal())?),
        None => None,
    };
    Ok(Routed {
        route: format!("{}|{}", dep.name, target.name()),
        deployment: dep.name.clone(),
        provider: dep.provider,
        body,
        estimate,
        prompt_estimate,
        output_estimate,
        cost_estimate,
        price: model.price,
        encoding: model.encoding,
        upstream_anthropic: target.is_anthropic(),
        hide_usage,
        response,
        client_model: model_name,
        stream,
        include_usage,
    })
}

/// The endpoint a deployment is called on for a client API, or `None` when it can't serve it
/// (Anthropic has no completions or embeddings).
pub fn upstream_api(client: Api, provider: Provider) -> Option<Api> {
    match (client, provider.speaks_anthropic()) {
        (Api::Chat | Api::Messages, true) => Some(Api::Messages),
        (Api::Messages, false) => Some(Api::Chat),
        (Api::Completions | Api::Embeddings, true) => None,
        (api, false) => Some(api),
    }
}

/// How the response body is handled.
pub enum ResponseBody {
    /// Untouched.
    PassThrough,
    /// Buffer it whole, then translate the JSON (success or error shape).
    Json(JsonTranslation),
    /// Translate SSE chunk by chunk as it streams.
    Stream(Box<StreamTranslation>),
}

pub struct JsonTranslation {
    shape: ResponseShape,
    status: u16,
    client_model: String,
    created: u64,
}

impl JsonTranslation {
    pub fn translate(&self, body: &[u8]) -> Vec<u8> {
        use crate::translate as t;
        let ok = (200..300).contains(&self.status);
        let value = match (self.shape, ok) {
            (ResponseShape::AnthropicToOpenAi, true) => serde_json::from_slice(body)
                .map(|v| t::anthropic_to_openai_response(&v, &self.client_model, self.created))
                .unwrap_or_else(|_| t::anthropic_error_to_openai(502, body)),
            (ResponseShape::OpenAiToAnthropic, true) => serde_json::from_slice(body)
                .map(|v| t::openai_to_anthropic_response(&v, &self.client_model))
                .unwrap_or_else(|_| t::openai_error_to_anthropic(502, body)),
            (ResponseShape::AnthropicToOpenAi, false) => {
                t::anthropic_error_to_openai(self.status, body)
            }
            (ResponseShape::OpenAiToAnthropic, false) => {
                t::openai_error_to_anthropic(self.status, body)
            }
            (ResponseShape::AsIs, _) => return body.to_vec(),
        };
        serde_json::to_vec(&value).unwrap_or_else(|_| body.to_vec())
    }
}

pub enum StreamTranslation {
    AnthropicToOpenAi(crate::translate::AnthropicToOpenAiStream),
    OpenAiToAnthropic(crate::translate::OpenAiToAnthropicStream),
}

impl StreamTranslation {
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        match self {
            StreamTranslation::AnthropicToOpenAi(s) => s.push(chunk),
            StreamTranslation::OpenAiToAnthropic(s) => s.push(chunk),
        }
    }

    pub fn finish(&mut self) -> Vec<u8> {
        match self {
            StreamTranslation::AnthropicToOpenAi(s) => s.finish(),
            StreamTranslation::OpenAiToAnthropic(s) => s.finish(),
        }
    }
}

/// What the shell does with the response headers and body.
pub struct ResponseStep {
    pub remove: Vec<&'static str>,
    pub set: Vec<(&'static str, String)>,
    pub body: ResponseBody,
    /// Reads the real usage from the provider's body (before any translation); `None` for an
    /// error answer, which used nothing.
    pub meter: Option<Meter>,
}

/// The meter for a provider's answer: where its usage is depends on its API and on whether it
/// streams.
fn meter_for(routed: &Routed, status: u16, sse: bool) -> Option<Meter> {
    if !(200..300).contains(&status) {
        return None;
    }
    Some(Meter::new(match (sse, routed.upstream_anthropic) {
        (false, _) => Format::Json,
        (true, true) => Format::AnthropicSse,
        (true, false) => Format::OpenAiSse {
            // Translated streams are rebuilt by the translator, which drops it itself.
            hide_usage: routed.hide_usage && routed.response == ResponseShape::AsIs,
        },
    }))
}

/// Decides the response handling from the upstream status and content type. `id` makes
/// translated stream ids unique; `now_secs` fills OpenAI's `created`.
pub fn on_response_headers(
    config: &Config,
    routed: &Routed,
    status: u16,
    content_type: Option<&str>,
    id: &str,
    now_secs: u64,
) -> ResponseStep {
    let mut set = Vec::new();
    if config.deployment_header {
        set.push(("x-llm-deployment", routed.deployment.clone()));
    }
    let sse = content_type.is_some_and(|c| c.starts_with("text/event-stream"));
    let meter = meter_for(routed, status, sse);
    if routed.response == ResponseShape::AsIs {
        return ResponseStep {
            // The stream may lose its usage chunk: its length changes.
            remove: if routed.hide_usage && sse {
                vec!["content-length"]
            } else {
                Vec::new()
            },
            set,
            body: ResponseBody::PassThrough,
            meter,
        };
    }
    let body = if sse && (200..300).contains(&status) {
        ResponseBody::Stream(Box::new(match routed.response {
            ResponseShape::AnthropicToOpenAi => StreamTranslation::AnthropicToOpenAi(
                crate::translate::AnthropicToOpenAiStream::new(
                    format!("chatcmpl-{id}"),
                    routed.client_model.clone(),
                    now_secs,
                    routed.include_usage,
                ),
            ),
            _ => StreamTranslation::OpenAiToAnthropic(
                crate::translate::OpenAiToAnthropicStream::new(
                    format!("msg_{id}"),
                    routed.client_model.clone(),
                ),
            ),
        }))
    } else {
        set.push(("content-type", "application/json".into()));
        ResponseBody::Json(JsonTranslation {
            shape: routed.response,
            status,
            client_model: routed.client_model.clone(),
            created: now_secs,
        })
    };
    ResponseStep {
        remove: vec!["content-length"],
        set,
        body,
        meter,
    }
}

/// A reply Envoy made instead of the provider's, after the body step (the rate limit's 429): the
/// gateway's own OpenAI-shaped answer. It is passed through untranslated (translating it as if
/// the provider had sent it garbles it) and names no deployment, since none answered.
pub fn on_local_reply_headers() -> ResponseStep {
    ResponseStep {
        remove: Vec::new(),
        set: Vec::new(),
        body: ResponseBody::PassThrough,
        meter: None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    /// sha256("sk-demo-free")
    const CONFIG: &str = r#"
keys: [{sha256: e47e4ba5a43e2315c5dacac8bb11b346f061d4cd69e59ec04cc41ac3971fc825, tenant: demo-free, tier: free}]
max_body_bytes: 1000
models:
  gpt-4o-mini:
    deployments:
      - {name: openai-a, cluster: openai-a, provider: openai, weight: 3}
      - {name: openai-b, cluster: openai-b, provider: openai, model: gpt-4o-mini-2024-07-18}
  claude-haiku:
    deployments:
      - {name: anthropic, cluster: anthropic, provider: anthropic, model: claude-3-5-haiku-latest}
  gpt-4o:
    deployments:
      - {name: openai-a, cluster: openai-a, provider: openai, priority: 1}
      - {name: anthropic, cluster: anthropic, provider: anthropic, model: claude-sonnet, priority: 2}
"#;

    struct Fixed(u64);
    impl Estimator for Fixed {
        fn prompt_tokens(&self, _: Api, _: &Value, _: Encoding) -> u64 {
            self.0
        }
    }

    fn config() -> Config {
        Config::parse(CONFIG.as_bytes()).unwrap()
    }

    fn headers(list: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let owned: Vec<(String, String)> = list
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name: &str| {
            owned
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    fn status_of(step: HeadersStep) -> u32 {
        match step {
            HeadersStep::Reply { status, .. } => status,
            HeadersStep::Proceed { .. } => 0,
        }
    }

    fn pending(api: Api) -> Pending {
        Pending {
            api,
            who: Identity {
                tenant: "demo-free".into(),
                tier: "free".into(),
            },
        }
    }

    fn body(
        api: Api,
        json: Value,
        healthy: impl Fn(&str) -> bool,
        draw: f64,
    ) -> Result<Routed, GatewayError> {
        on_request_body(
            &config(),
            &pending(api),
            &serde_json::to_vec(&json).unwrap(),
            &Fixed(42),
            healthy,
            draw,
        )
    }

    #[test]
    fn headers_authenticate_and_strip_spoofable_headers() {
        let c = config();
        let h = headers(&[
            (":method", "POST"),
            (":path", "/v1/chat/completions"),
            ("authorization", "Bearer sk-demo-free"),
            ("x-llm-tenant", "someone-else"),
        ]);
        let HeadersStep::Proceed {
            pending,
            remove,
            set,
        } = on_request_headers(&c, &h, false)
        else {
            panic!("should proceed")
        };
        assert_eq!(pending.who.tenant, "demo-free");
        assert_eq!(pending.api, Api::Chat);
        for h in [
            "x-llm-tenant",
            "x-llm-tier",
            "authorization",
            "x-api-key",
            "api-key",
            "content-length",
            "accept-encoding",
        ] {
            assert!(remove.contains(&h), "{h} removed");
        }
        assert_eq!(
            set,
            vec![
                (TENANT_HEADER, "demo-free".to_string()),
                (TIER_HEADER, "free".to_string())
            ]
        );
    }

    #[test]
    fn header_errors() {
        let c = config();
        let post = |path: &str, key: Option<&str>| {
            let mut h = vec![(":method", "POST"), (":path", path)];
            if let Some(k) = key {
                h.push(("x-api-key", k));
            }
            status_of(on_request_headers(&c, &headers(&h), false))
        };
        assert_eq!(post("/v1/chat/completions", None), 401);
        assert_eq!(post("/v1/chat/completions", Some("sk-wrong")), 401);
        assert_eq!(post("/v1/nope", Some("sk-demo-free")), 404);
        let get = headers(&[
            (":method", "GET"),
            (":path", "/v1/chat/completions"),
            ("x-api-key", "sk-demo-free"),
        ]);
        assert_eq!(status_of(on_request_headers(&c, &get, false)), 405);
        let no_body = headers(&[
            (":method", "POST"),
            (":path", "/v1/messages"),
            ("x-api-key", "sk-demo-free"),
        ]);
        assert_eq!(status_of(on_request_headers(&c, &no_body, true)), 400);
        let models = headers(&[
            (":method", "GET"),
            (":path", "/v1/models"),
            ("api-key", "sk-demo-free"),
        ]);
        let HeadersStep::Reply { status: 200, body } = on_request_headers(&c, &models, true) else {
            panic!("models list")
        };
        assert!(body.contains("\"claude-haiku\"") && body.contains("\"gpt-4o-mini\""));
    }

    #[test]
    fn body_errors_have_the_right_status() {
        let all = |_: &str| true;
        let m = |v: Value| body(Api::Chat, v, all, 0.0).unwrap_err().status;
        assert_eq!(m(serde_json::json!({"messages": []})), 400);
        assert_eq!(m(serde_json::json!({"model": 7})), 400);
        assert_eq!(
            m(serde_json::json!({"model": "gpt-9", "messages": []})),
            404
        );
        let raw = |b: &[u8]| {
            on_request_body(&config(), &pending(Api::Chat), b, &Fixed(1), all, 0.0).unwrap_err()
        };
        let e = raw(b"{not json");
        assert_eq!(e.status, 400);
        assert!(
            e.message.starts_with("The request body is not valid JSON"),
            "{}",
            e.message
        );
        assert_eq!(raw(b"[1]").status, 400);
        assert_eq!(raw(&[b' '; 1001]).status, 413);
        let e = body(
            Api::Embeddings,
            serde_json::json!({"model": "claude-haiku", "input": "x"}),
            all,
            0.0,
        )
        .unwrap_err();
        assert_eq!(
            (e.status, e.message.as_str()),
            (
                400,
                "The model 'claude-haiku' is not available on /v1/embeddings."
            )
        );
        let e = body(
            Api::Chat,
            serde_json::json!({"model": "gpt-4o-mini", "messages": []}),
            |_| false,
            0.0,
        )
        .unwrap_err();
        assert_eq!(e.status, 503);
    }

    #[test]
    fn accounting_asks_openai_streams_for_usage_and_hides_it() {
        let text = format!("{CONFIG}\naccounting: {{cluster: ratelimit, domain: llm}}\n");
        let mut c = Config::parse(text.as_bytes()).unwrap();
        if let Some(m) = c.models.get_mut("gpt-4o-mini") {
            m.price = Some(Price {
                prompt: 0.5,
                completion: 2.0,
            });
        }
        let run = |req: Value| {
            on_request_body(
                &c,
                &pending(Api::Chat),
                &serde_json::to_vec(&req).unwrap(),
                &Fixed(10),
                |_| true,
                0.1,
            )
            .unwrap()
        };
        let quiet = run(
            serde_json::json!({"model": "gpt-4o-mini", "stream": true, "max_tokens": 20,
            "stream_options": {"other": 1}, "messages": [{"role": "user", "content": "hi"}]}),
        );
        assert!(quiet.hide_usage);
        let sent: Value = serde_json::from_slice(quiet.body.as_deref().unwrap()).unwrap();
        assert_eq!(
            sent["stream_options"],
            serde_json::json!({"other": 1, "include_usage": true})
        );
        assert_eq!(quiet.cost_estimate, 45); // 10 * 0.5 + 20 * 2.0
        let step = on_response_headers(&c, &quiet, 200, Some("text/event-stream"), "1", 0);
        assert!(step.remove.contains(&"content-length") && step.meter.is_some());
        assert!(
            on_response_headers(&c, &quiet, 500, None, "1", 0)
                .meter
                .is_none()
        );

        let asked = run(serde_json::json!({"model": "gpt-4o-mini", "stream": true,
            "stream_options": {"include_usage": true}, "messages": []}));
        assert!(!asked.hide_usage && asked.body.is_none());
        let plain = run(serde_json::json!({"model": "gpt-4o-mini", "messages": []}));
        assert!(!plain.hide_usage && plain.body.is_none());
        // Without accounting nothing is added.
        let off = on_request_body(
            &config(),
            &pending(Api::Chat),
            br#"{"model": "gpt-4o-mini", "stream": true, "messages": []}"#,
            &Fixed(10),
            |_| true,
            0.1,
        )
        .unwrap();
        assert!(!off.hide_usage && off.body.is_none());
    }

    #[test]
    fn routes_by_weight_and_rewrites_the_model() {
        let req = serde_json::json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
        let a = body(Api::Chat, req.clone(), |_| true, 0.1).unwrap();
        // Prompt (42 from the fixed estimator) + the default output reservation.
        assert_eq!(
            (a.route.as_str(), a.estimate, a.response),
            ("openai-a|chat", 42 + 1024, ResponseShape::AsIs)
        );
        assert_eq!((a.prompt_estimate, a.output_estimate), (42, 1024));
        assert!(
            a.body.is_none(),
            "same model name: the client's bytes go upstream as they are"
        );
        let b = body(Api::Chat, req, |_| true, 0.9).unwrap();
        assert_eq!(b.route, "openai-b|chat");
        let sent: Value = serde_json::from_slice(b.body.as_deref().unwrap()).unwrap();
        assert_eq!(sent["model"], "gpt-4o-mini-2024-07-18");
        assert_eq!(b.client_model, "gpt-4o-mini");
    }

    #[test]
    fn priority_two_only_when_priority_one_is_down_and_translation_follows() {
        let req = serde_json::json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
        let r = body(Api::Chat, req.clone(), |_| true, 0.99).unwrap();
        assert_eq!(r.route, "openai-a|chat");
        let r = body(Api::Chat, req, |n| n != "openai-a", 0.0).unwrap();
        assert_eq!(
            (r.route.as_str(), r.response, r.stream),
            ("anthropic|messages", ResponseShape::AnthropicToOpenAi, true)
        );
        let sent: Value = serde_json::from_slice(r.body.as_deref().unwrap()).unwrap();
        assert_eq!(sent["model"], "claude-sonnet");
        assert!(sent["max_tokens"].is_u64(), "Anthropic needs max_tokens");
        // An Anthropic client on an OpenAI deployment.
        let msg = serde_json::json!({"model": "gpt-4o-mini", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
        let r = body(Api::Messages, msg, |_| true, 0.0).unwrap();
        assert_eq!(
            (r.route.as_str(), r.response),
            ("openai-a|chat", ResponseShape::OpenAiToAnthropic)
        );
    }

    #[test]
    fn responses_are_translated_back_to_the_clients_api() {
        let c = config();
        let req = serde_json::json!({"model": "claude-haiku", "messages": [{"role": "user", "content": "hi"}]});
        let routed = body(Api::Chat, req, |_| true, 0.0).unwrap();
        let step = on_response_headers(
            &c,
            &routed,
            200,
            Some("application/json"),
            "1",
            1_700_000_000,
        );
        let ResponseBody::Json(t) = step.body else {
            panic!("json")
        };
        assert!(step.remove.contains(&"content-length"));
        let upstream = serde_json::json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-3-5-haiku-latest",
            "content": [{"type": "text", "text": "tok0 tok1"}], "stop_reason": "end_turn",
            "usage": {"input_tokens": 4, "output_tokens": 2}
        });
        let out: Value =
            serde_json::from_slice(&t.translate(&serde_json::to_vec(&upstream).unwrap())).unwrap();
        assert_eq!(out["object"], "chat.completion");
        assert_eq!(out["model"], "claude-haiku");
        assert_eq!(out["choices"][0]["message"]["content"], "tok0 tok1");
        assert_eq!(out["usage"]["total_tokens"], 6);

        let streamed = serde_json::json!({"model": "claude-haiku", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
        let routed = body(Api::Chat, streamed, |_| true, 0.0).unwrap();
        let step = on_response_headers(
            &c,
            &routed,
            200,
            Some("text/event-stream"),
            "2",
            1_700_000_000,
        );
        let ResponseBody::Stream(mut s) = step.body else {
            panic!("stream")
        };
        let mut out = s.push(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"x\",\"content\":[],\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n");
        out.extend(s.finish());
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("chat.completion.chunk") && text.ends_with("data: [DONE]\n\n"),
            "{text}"
        );

        let same = body(
            Api::Chat,
            serde_json::json!({"model": "gpt-4o-mini", "messages": []}),
            |_| true,
            0.0,
        )
        .unwrap();
        let step = on_response_headers(&c, &same, 200, Some("application/json"), "3", 0);
        assert!(matches!(step.body, ResponseBody::PassThrough));

        let local = on_local_reply_headers();
        assert!(matches!(local.body, ResponseBody::PassThrough));
        assert!(local.set.is_empty() && local.remove.is_empty());
    }
}
