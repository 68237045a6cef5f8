//! HTTP handling: routing, auth, faults, the control API, the request log, streaming bodies,
//! the usage ledger's charges.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body as HttpBody, Frame, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::http::request::Parts;
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::{debug, info};

use crate::api::{self, Answer};
use crate::errors::{self, ApiError, Flavor};
use crate::faults::{self, Fault};
use crate::ledger::Ledger;
use crate::sse;

pub type Body = BoxBody<Bytes, Infallible>;

/// Request bodies above this are refused (413).
const MAX_BODY: usize = 32 * 1024 * 1024;
/// The request log keeps this many entries (the oldest go first), so a long demo run stays small.
const MAX_RECORDED: usize = 10_000;

/// The configured keys; `None` accepts any non-empty key (a missing one is still a 401).
#[derive(Clone, Debug, Default)]
pub struct Keys {
    pub openai: Option<String>,
    pub azure: Option<String>,
    pub anthropic: Option<String>,
}

pub struct App {
    name: String,
    name_header: HeaderValue,
    keys: Keys,
    faults: Mutex<faults::Queue>,
    requests: Mutex<VecDeque<Value>>,
    seq: AtomicU64,
    ledger: Arc<Ledger>,
}

impl App {
    pub fn new(name: String, keys: Keys) -> Result<Self, String> {
        let name_header = HeaderValue::from_str(&name)
            .map_err(|_| format!("--name {name:?} is not a valid header value"))?;
        Ok(Self {
            name,
            name_header,
            keys,
            faults: Mutex::default(),
            requests: Mutex::default(),
            seq: AtomicU64::new(0),
            ledger: Arc::default(),
        })
    }
}

/// Returned by the service to make hyper drop the connection without answering; the
/// connection's socket then closes with RST (see `main::ResettableIo`).
#[derive(Debug)]
pub struct InjectedReset;

impl std::fmt::Display for InjectedReset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection reset injected by mock-provider")
    }
}

impl std::error::Error for InjectedReset {}

// ---------------------------------------------------------------------------------------------
// bodies

/// One event of a streamed answer, tagged with what it means for the bill.
struct Event {
    bytes: Bytes,
    /// A completion token event.
    token: bool,
    /// The stream's final event (`[DONE]`, `message_stop`): the answer is complete.
    last: bool,
}

/// What a stream still has to charge, and the token events handed to hyper so far.
struct StreamBill {
    ledger: Arc<Ledger>,
    model: String,
    prompt: u64,
    written: u64,
}

/// A streamed body fed by a channel; ends when the sender is dropped. Dropped by hyper when the
/// client goes away, which the producer notices (`Sender::closed`).
///
/// It keeps the bill, not the producer: a sent event may sit in the channel and never reach the
/// socket, so tokens count only when hyper takes them from here. The final event charges the
/// whole answer before it is written (a client that read it all sees itself counted); dropping
/// the body before that charges a cut stream.
struct ChannelBody {
    rx: mpsc::Receiver<Event>,
    bill: Option<StreamBill>,
}

impl HttpBody for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        let Some(ev) = std::task::ready!(this.rx.poll_recv(cx)) else {
            return Poll::Ready(None);
        };
        if let Some(b) = &mut this.bill {
            b.written += u64::from(ev.token);
            if ev.last {
                b.ledger.charge(&b.model, b.prompt, b.written, false);
                this.bill = None;
            }
        }
        Poll::Ready(Some(Ok(Frame::data(ev.bytes))))
    }
}

impl Drop for ChannelBody {
    fn drop(&mut self) {
        if let Some(b) = self.bill.take() {
            debug!(
                sent_tokens = b.written,
                "stream cut: charging what was sent"
            );
            b.ledger.charge(&b.model, b.prompt, b.written, true);
        }
    }
}

fn response(status: u16, content_type: &'static str, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

pub fn json_response(status: u16, v: &Value) -> Response<Body> {
    response(
        status,
        "application/json",
        Full::new(Bytes::from(v.to_string())).boxed(),
    )
}

fn error_response(e: &ApiError) -> Response<Body> {
    let mut r = json_response(e.status, &e.body);
    if let Some(s) = e.retry_after {
        r.headers_mut()
            .insert(hyper::header::RETRY_AFTER, HeaderValue::from(s));
    }
    r
}

/// Starts the producer task of a streamed answer and returns the response carrying it.
fn stream_response(s: api::Stream, fault: &Fault, ledger: Arc<Ledger>) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Event>(1);
    let bill = StreamBill {
        ledger,
        model: s.model.clone(),
        prompt: s.prompt_tokens,
        written: 0,
    };
    let stall_after = fault
        .stall_after
        .map(|k| usize::try_from(k).unwrap_or(usize::MAX));
    let delay = fault
        .chunk_delay_ms
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis);
    tokio::spawn(pump(tx, s, stall_after, delay));
    let body = ChannelBody {
        rx,
        bill: Some(bill),
    };
    let mut r = response(200, sse::CONTENT_TYPE, body.boxed());
    r.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    r
}

/// Sends the events one by one (each is its own chunk, written as soon as it is produced);
/// with `stall_after = K` sends the head and K token events, then waits for the client to leave.
async fn pump(
    tx: mpsc::Sender<Event>,
    s: api::Stream,
    stall_after: Option<usize>,
    delay: Option<Duration>,
) {
    let api::Stream {
        head, tokens, tail, ..
    } = s;
    let keep = stall_after.map_or(tokens.len(), |k| k.min(tokens.len()));
    let tail = if stall_after.is_some() {
        Vec::new()
    } else {
        tail
    };
    let event = |token| {
        move |bytes| Event {
            bytes,
            token,
            last: false,
        }
    };
    let mut events: Vec<Event> = head
        .into_iter()
        .map(event(false))
        .chain(tokens.into_iter().take(keep).map(event(true)))
        .chain(tail.into_iter().map(event(false)))
        .collect();
    if stall_after.is_none()
        && let Some(ev) = events.last_mut()
    {
        ev.last = true;
    }
    for (i, ev) in events.into_iter().enumerate() {
        if i > 0
            && let Some(d) = delay
        {
            tokio::time::sleep(d).await;
        }
        if tx.send(ev).await.is_err() {
            debug!("stream: the client went away");
            return;
        }
    }
    if stall_after.is_some() {
        debug!(
            sent_tokens = keep,
            "stream: stalling until the client goes away"
        );
        tx.closed().await;
        debug!("stream: the stalled client went away");
    }
}

// ---------------------------------------------------------------------------------------------
// routing

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Chat,
    Completions,
    Embeddings,
}

#[derive(Debug, PartialEq, Eq)]
enum Route {
    OpenAi(Op),
    Models,
    Model(String),
    Azure { deployment: String, op: Op },
    Messages,
    CountTokens,
    NotFound(Flavor),
}

impl Route {
    fn flavor(&self) -> Flavor {
        match self {
            Route::OpenAi(_) | Route::Models | Route::Model(_) => Flavor::OpenAi,
            Route::Azure { .. } => Flavor::Azure,
            Route::Messages | Route::CountTokens => Flavor::Anthropic,
            Route::NotFound(f) => *f,
        }
    }

    /// Model calls take the control API's programmed faults (listing models does not).
    fn is_model_call(&self) -> bool {
        matches!(
            self,
            Route::OpenAi(_) | Route::Azure { .. } | Route::Messages
        )
    }
}

fn op(s: &str) -> Option<Op> {
    match s {
        "chat/completions" => Some(Op::Chat),
        "completions" => Some(Op::Completions),
        "embeddings" => Some(Op::Embeddings),
        _ => None,
    }
}

fn route(method: &Method, path: &str) -> Route {
    let path = if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    };
    let post = method == Method::POST;
    let get = method == Method::GET;
    if let Some(rest) = path.strip_prefix("/openai/deployments/") {
        return match rest.split_once('/') {
            Some((dep, tail)) if post && !dep.is_empty() => match op(tail) {
                Some(op) => Route::Azure {
                    deployment: dep.to_owned(),
                    op,
                },
                None => Route::NotFound(Flavor::Azure),
            },
            _ => Route::NotFound(Flavor::Azure),
        };
    }
    if path.starts_with("/openai/") {
        return Route::NotFound(Flavor::Azure);
    }
    match path {
        "/v1/messages" if post => Route::Messages,
        "/v1/messages/count_tokens" if post => Route::CountTokens,
        "/v1/messages" | "/v1/messages/count_tokens" => Route::NotFound(Flavor::Anthropic),
        "/v1/models" if get => Route::Models,
        _ => {
            if let Some(id) = path
                .strip_prefix("/v1/models/")
                .filter(|id| get && !id.is_empty())
            {
                return Route::Model(id.to_owned());
            }
            match path.strip_prefix("/v1/").and_then(op) {
                Some(op) if post => Route::OpenAi(op),
                _ => Route::NotFound(Flavor::OpenAi),
            }
        }
    }
}

fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

// ---------------------------------------------------------------------------------------------
// auth

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

fn bearer(h: &HeaderMap) -> Option<&str> {
    let v = header(h, "authorization")?;
    let (scheme, key) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
}

fn key_ok(want: Option<&str>, got: &str) -> bool {
    want.is_none_or(|w| w == got)
}

fn check_auth(keys: &Keys, flavor: Flavor, h: &HeaderMap) -> Result<(), ApiError> {
    match flavor {
        Flavor::OpenAi => match bearer(h).filter(|k| !k.is_empty()) {
            None => Err(errors::openai_missing_key()),
            Some(k) if key_ok(keys.openai.as_deref(), k) => Ok(()),
            Some(k) => Err(errors::openai_invalid_key(k)),
        },
        Flavor::Azure => match header(h, "api-key")
            .or_else(|| bearer(h))
            .filter(|k| !k.is_empty())
        {
            None => Err(errors::azure_missing_key()),
            Some(k) if key_ok(keys.azure.as_deref(), k) => Ok(()),
            Some(_) => Err(errors::azure_invalid_key()),
        },
        // The SDKs send `x-api-key` (0.x) or `Authorization: Bearer <api key>` (2.x); both are
        // accepted, `x-api-key` first.
        Flavor::Anthropic => match header(h, "x-api-key")
            .or_else(|| bearer(h))
            .filter(|k| !k.is_empty())
        {
            None => Err(errors::anthropic_missing_key()),
            Some(k) if key_ok(keys.anthropic.as_deref(), k) => Ok(()),
            Some(_) => Err(errors::anthropic_invalid_key()),
        },
    }
}

// ---------------------------------------------------------------------------------------------
// the request log

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

fn headers_json(h: &HeaderMap) -> Value {
    let mut out = serde_json::Map::new();
    for name in h.keys() {
        let joined = h
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join(", ");
        out.insert(name.as_str().to_owned(), Value::String(joined));
    }
    Value::Object(out)
}

impl App {
    fn record(&self, parts: &Parts, body: &Bytes) {
        let parsed: Option<Value> = if body.is_empty() {
            None
        } else {
            serde_json::from_slice(body).ok()
        };
        let mut entry = json!({
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query(),
            "headers": headers_json(&parts.headers),
            "body": parsed,
            "time": unix_now().as_secs_f64(),
        });
        if parsed.is_none() && !body.is_empty() {
            entry["body_text"] = Value::String(String::from_utf8_lossy(body).into_owned());
        }
        let mut log = self.requests.lock();
        if log.len() >= MAX_RECORDED {
            log.pop_front();
        }
        log.push_back(entry);
    }
}

// ---------------------------------------------------------------------------------------------
// handling

/// The hyper service: every response carries `x-mock-provider: NAME`; `Err` drops the
/// connection without an answer (an injected reset).
pub async fn handle(
    app: Arc<App>,
    req: Request<Incoming>,
    reset: Arc<AtomicBool>,
) -> Result<Response<Body>, InjectedReset> {
    let (parts, body) = req.into_parts();
    let started = std::time::Instant::now();
    let method = parts.method.clone();
    let path = parts.uri.path().to_owned();
    let result = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => {
            let bytes = b.to_bytes();
            if let Some(rest) = path.strip_prefix("/_mock/") {
                Ok(control(&app, &parts.method, rest, &bytes))
            } else {
                app.record(&parts, &bytes);
                provider(&app, &parts, bytes, &reset).await
            }
        }
        Err(e) => {
            debug!(error = %e, "reading the request body failed");
            let status = if e.is::<http_body_util::LengthLimitError>() {
                413
            } else {
                400
            };
            Ok(json_response(
                status,
                &json!({"error": {"message": format!("could not read the request body: {e}"),
                "type": "invalid_request_error", "param": null, "code": null}}),
            ))
        }
    };
    match result {
        Ok(mut r) => {
            r.headers_mut().insert(
                HeaderName::from_static("x-mock-provider"),
                app.name_header.clone(),
            );
            info!(%method, %path, status = r.status().as_u16(), ms = started.elapsed().as_millis() as u64, "request");
            Ok(r)
        }
        Err(e) => {
            info!(%method, %path, "request: connection reset (injected)");
            Err(e)
        }
    }
}

async fn provider(
    app: &App,
    parts: &Parts,
    bytes: Bytes,
    reset: &AtomicBool,
) -> Result<Response<Body>, InjectedReset> {
    let route = route(&parts.method, parts.uri.path());
    let flavor = route.flavor();
    let model_call = route.is_model_call();
    if let Route::NotFound(_) = route {
        let (method, path) = (parts.method.as_str(), parts.uri.path());
        let e = match flavor {
            Flavor::OpenAi => errors::openai_invalid_url(method, path),
            Flavor::Azure => errors::azure_not_found(),
            Flavor::Anthropic => errors::anthropic_not_found(method, path),
        };
        return Ok(error_response(&e));
    }

    let header_fault = match Fault::from_headers(&parts.headers) {
        Ok(f) => f,
        Err(e) => return Ok(error_response(&errors::invalid(flavor, &e))),
    };
    let fault = if model_call {
        app.faults
            .lock()
            .take()
            .unwrap_or_default()
            .overlaid(header_fault)
    } else {
        header_fault
    };
    if let Some(ms) = fault.latency_ms.filter(|ms| *ms > 0) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if fault.reset {
        reset.store(true, Ordering::SeqCst);
        return Err(InjectedReset);
    }
    let parsed: Result<Value, _> = serde_json::from_slice(&bytes);
    if let Some(status) = fault.status {
        let model = match &route {
            Route::Azure { deployment, .. } => deployment.clone(),
            _ => parsed
                .as_ref()
                .ok()
                .and_then(|b| b.get("model")?.as_str().map(str::to_owned))
                .unwrap_or_default(),
        };
        return Ok(error_response(&errors::injected(
            flavor,
            status,
            &model,
            fault.retry_after,
        )));
    }

    Ok(match answer(app, parts, route, parsed, &fault) {
        Ok(Answer::Json(v)) => {
            // Charged before the response exists, so before its last byte goes out.
            if model_call {
                app.ledger.charge_answer(&v);
            }
            json_response(200, &v)
        }
        Ok(Answer::Stream(s)) => stream_response(s, &fault, app.ledger.clone()),
        Err(e) => error_response(&e),
    })
}

fn answer(
    app: &App,
    parts: &Parts,
    route: Route,
    parsed: Result<Value, serde_json::Error>,
    fault: &Fault,
) -> Result<Answer, ApiError> {
    let flavor = route.flavor();
    if flavor == Flavor::Azure
        && query_param(parts.uri.query(), "api-version").is_none_or(str::is_empty)
    {
        return Err(errors::azure_not_found());
    }
    check_auth(&app.keys, flavor, &parts.headers)?;
    let created = unix_now().as_secs();
    match route {
        Route::Models => return Ok(Answer::Json(api::models(created))),
        Route::Model(id) => {
            return if api::MODELS.contains(&id.as_str()) {
                Ok(Answer::Json(api::model_object(&id, created)))
            } else {
                Err(ApiError::new(
                    404,
                    errors::openai_body(
                        &format!("The model '{id}' does not exist"),
                        "invalid_request_error",
                        Some("model"),
                        Some("model_not_found"),
                    ),
                ))
            };
        }
        _ => {}
    }
    if flavor == Flavor::Anthropic
        && header(&parts.headers, "anthropic-version").is_none_or(str::is_empty)
    {
        return Err(errors::anthropic_invalid(
            "anthropic-version: header is required",
        ));
    }
    let body = parsed.map_err(|e| match flavor {
        Flavor::Anthropic => errors::anthropic_invalid(&format!(
            "There was an error parsing the body of your request: {e}"
        )),
        Flavor::OpenAi | Flavor::Azure => errors::openai_bad_json(),
    })?;
    let ctx = api::Ctx {
        name: &app.name,
        seq: app.seq.fetch_add(1, Ordering::Relaxed) + 1,
        created,
        forced_tokens: fault.completion_tokens,
    };
    match route {
        Route::OpenAi(Op::Chat) => api::chat(&ctx, &body, None),
        Route::OpenAi(Op::Completions) => api::completions(&ctx, &body, None),
        Route::OpenAi(Op::Embeddings) => api::embeddings(&body, None),
        Route::Azure { deployment, op } => match op {
            Op::Chat => api::chat(&ctx, &body, Some(&deployment)),
            Op::Completions => api::completions(&ctx, &body, Some(&deployment)),
            Op::Embeddings => api::embeddings(&body, Some(&deployment)),
        },
        Route::Messages => api::messages(&ctx, &body),
        Route::CountTokens => api::count_tokens(&body),
        Route::Models | Route::Model(_) | Route::NotFound(_) => {
            Err(errors::invalid(flavor, "unreachable route")) // handled above
        }
    }
}

// ---------------------------------------------------------------------------------------------
// the control API

fn control(app: &App, method: &Method, rest: &str, body: &Bytes) -> Response<Body> {
    let bad = |status: u16, msg: String| json_response(status, &json!({"error": msg}));
    match (method.as_str(), rest.trim_end_matches('/')) {
        ("GET", "health") => json_response(200, &json!({"status": "ok", "name": app.name})),
        ("GET", "faults") => json_response(200, &json!({"faults": app.faults.lock().pending()})),
        ("POST", "faults") => match faults::parse_program(body) {
            Ok(items) => {
                let mut q = app.faults.lock();
                for p in items {
                    info!(fault = %json!(p), "fault programmed");
                    q.push(p);
                }
                json_response(200, &json!({"faults": q.pending()}))
            }
            Err(e) => bad(400, e),
        },
        ("DELETE", "faults") => json_response(200, &json!({"cleared": app.faults.lock().clear()})),
        ("GET", "requests") => json_response(
            200,
            &Value::Array(app.requests.lock().iter().cloned().collect()),
        ),
        ("DELETE", "requests") => {
            let mut log = app.requests.lock();
            let n = log.len();
            log.clear();
            json_response(200, &json!({"cleared": n}))
        }
        ("GET", "usage") => json_response(200, &app.ledger.snapshot()),
        ("DELETE", "usage") => {
            app.ledger.clear();
            json_response(200, &json!({"cleared": true}))
        }
        (m, p) => bad(404, format!("no control endpoint {m} /_mock/{p}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let p = Method::POST;
        let g = Method::GET;
        assert_eq!(route(&p, "/v1/chat/completions"), Route::OpenAi(Op::Chat));
        assert_eq!(route(&p, "/v1/chat/completions/"), Route::OpenAi(Op::Chat));
        assert_eq!(route(&p, "/v1/completions"), Route::OpenAi(Op::Completions));
        assert_eq!(route(&p, "/v1/embeddings"), Route::OpenAi(Op::Embeddings));
        assert_eq!(
            route(&g, "/v1/chat/completions"),
            Route::NotFound(Flavor::OpenAi)
        );
        assert_eq!(route(&g, "/v1/models"), Route::Models);
        assert_eq!(
            route(&g, "/v1/models/gpt-4o"),
            Route::Model("gpt-4o".into())
        );
        assert_eq!(route(&p, "/v1/messages"), Route::Messages);
        assert_eq!(route(&p, "/v1/messages/count_tokens"), Route::CountTokens);
        assert_eq!(
            route(&g, "/v1/messages"),
            Route::NotFound(Flavor::Anthropic)
        );
        assert_eq!(
            route(&p, "/openai/deployments/gpt4o-east/chat/completions"),
            Route::Azure {
                deployment: "gpt4o-east".into(),
                op: Op::Chat
            }
        );
        assert_eq!(
            route(&p, "/openai/deployments/emb/embeddings"),
            Route::Azure {
                deployment: "emb".into(),
                op: Op::Embeddings
            }
        );
        assert_eq!(
            route(&p, "/openai/deployments//chat/completions"),
            Route::NotFound(Flavor::Azure)
        );
        assert_eq!(route(&p, "/openai/models"), Route::NotFound(Flavor::Azure));
        assert_eq!(route(&p, "/"), Route::NotFound(Flavor::OpenAi));
    }

    #[test]
    fn query_params() {
        assert_eq!(
            query_param(Some("api-version=2024-10-21"), "api-version"),
            Some("2024-10-21")
        );
        assert_eq!(
            query_param(Some("a=1&api-version="), "api-version"),
            Some("")
        );
        assert_eq!(query_param(Some("a=1"), "api-version"), None);
        assert_eq!(query_param(None, "api-version"), None);
    }

    fn hm(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn auth_per_flavor() {
        let keys = Keys {
            openai: Some("sk-good".into()),
            azure: Some("az-good".into()),
            anthropic: Some("ak-good".into()),
        };
        let status = |r: Result<(), ApiError>| r.err().map(|e| (e.status, e.body));
        assert_eq!(
            status(check_auth(
                &keys,
                Flavor::OpenAi,
                &hm(&[("authorization", "Bearer sk-good")])
            )),
            None
        );
        assert_eq!(
            status(check_auth(
                &keys,
                Flavor::OpenAi,
                &hm(&[("authorization", "bearer sk-good")])
            )),
            None
        );
        let e = check_auth(
            &keys,
            Flavor::OpenAi,
            &hm(&[("authorization", "Bearer sk-bad-key-1234")]),
        )
        .err();
        assert_eq!(
            e.as_ref().map(|e| e.body["error"]["code"].clone()),
            Some(json!("invalid_api_key"))
        );
        let e = check_auth(&keys, Flavor::OpenAi, &hm(&[])).err();
        assert_eq!(
            e.as_ref().map(|e| e.body["error"]["code"].is_null()),
            Some(true)
        );
        let e = check_auth(
            &keys,
            Flavor::OpenAi,
            &hm(&[("authorization", "Basic abc")]),
        )
        .err();
        assert_eq!(e.map(|e| e.status), Some(401));

        assert_eq!(
            status(check_auth(
                &keys,
                Flavor::Azure,
                &hm(&[("api-key", "az-good")])
            )),
            None
        );
        assert_eq!(
            status(check_auth(
                &keys,
                Flavor::Azure,
                &hm(&[("authorization", "Bearer az-good")])
            )),
            None
        );
        assert_eq!(
            check_auth(&keys, Flavor::Azure, &hm(&[("api-key", "nope")]))
                .err()
                .map(|e| e.status),
            Some(401)
        );

        assert_eq!(
            status(check_auth(
                &keys,
                Flavor::Anthropic,
                &hm(&[("x-api-key", "ak-good")])
            )),
            None
        );
        assert_eq!(
            status(check_auth(
                &keys,
                Flavor::Anthropic,
                &hm(&[("authorization", "Bearer ak-good")])
            )),
            None
        );
        let e = check_auth(
            &keys,
            Flavor::Anthropic,
            &hm(&[("authorization", "Bearer sk-good")]),
        )
        .err();
        assert_eq!(e.map(|e| e.status), Some(401));
        let e = check_auth(&keys, Flavor::Anthropic, &hm(&[("x-api-key", "sk-good")])).err();
        assert_eq!(
            e.map(|e| e.body["error"]["message"].clone()),
            Some(json!("invalid x-api-key"))
        );

        // No key configured: any non-empty key, but not none.
        let open = Keys::default();
        assert_eq!(
            status(check_auth(
                &open,
                Flavor::OpenAi,
                &hm(&[("authorization", "Bearer whatever")])
            )),
            None
        );
        assert!(check_auth(&open, Flavor::Anthropic, &hm(&[])).is_err());
    }

    #[test]
    fn headers_are_recorded_joined() {
        let v = headers_json(&hm(&[("x-a", "1"), ("x-a", "2"), ("x-b", "3")]));
        assert_eq!(v, json!({"x-a": "1, 2", "x-b": "3"}));
    }
}
