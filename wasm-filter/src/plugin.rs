//! The proxy-wasm shell: reads what Envoy gives, calls `flow`, performs what it returns. No
//! decision is made here. Built only for wasm32.
//!
//! Body routing inside stock Envoy: the headers phase must end with Continue (a Pause becomes
//! StopAllIteration and the body callback never runs), and headers can't change after it. So
//! the headers phase sets the tenant headers; the body phase buffers the body, then stores the
//! route key and the token estimate as filter state (`wasm.llm_route`, `wasm.llm_estimate`)
//! and clears the route cache. `envoy.filters.http.buffer` after this filter holds the request
//! until then, so the rate-limit filter and the router see the final state.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use prost::Message;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType};
use rls_proto::llmgateway::usage::v1::{
    HealthRequest, HealthResponse, ProviderOutcome, ReportRequest,
};

use crate::config::{Config, Encoding};
use crate::errors::GatewayError;
use crate::estimate::{self, Tokenizers};
use crate::flow::{self, HeadersStep, Pending, ResponseBody, Routed};
use crate::health;
use crate::meter::Meter;
use crate::report::{self, Finished, Outbox, Reserved, Subject};

/// Response header ratelimit-service adds when it reserved tokens or spend: when (Unix ms).
const RESERVED_AT_HEADER: &str = "x-llm-reserved-at";
const USAGE_SERVICE: &str = "llmgateway.usage.v1.UsageService";
/// Batches one timer tick sends at most; the rest wait for the next tick.
const BATCHES_PER_TICK: usize = 8;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

#[derive(Default)]
struct Root {
    config: Option<Rc<Config>>,
    metrics: Option<Rc<Metrics>>,
    /// Usage reports of this VM's (this worker's) requests, sent on the timer.
    outbox: Rc<RefCell<Outbox>>,
    /// Makes request ids unique across workers and restarts.
    nonce: u64,
    /// The last attempt to send a batch failed locally (logged once until one succeeds).
    dispatch_failing: bool,
    /// The service's `Health` request for every deployment of the config, encoded once
    /// (empty: no deployment to ask about).
    health_request: Vec<u8>,
    /// The `Health` call in flight.
    health_call: Option<u32>,
    /// When the next `Health` call is due (Unix ms).
    next_health_poll_ms: u64,
}

struct Metrics {
    internal_errors: u32,
    local_replies: u32,
    reports_dropped: u32,
    reports_failed: u32,
    health_polls: u32,
    health_polls_failed: u32,
}

impl Metrics {
    fn define() -> Option<Metrics> {
        Some(Metrics {
            internal_errors: proxy_wasm::hostcalls::define_metric(
                MetricType::Counter,
                "llm_gateway.internal_errors",
            )
            .ok()?,
            local_replies: proxy_wasm::hostcalls::define_metric(
                MetricType::Counter,
                "llm_gateway.local_replies",
            )
            .ok()?,
            reports_dropped: proxy_wasm::hostcalls::define_metric(
                MetricType::Counter,
                "llm_gateway.usage_reports_dropped",
            )
            .ok()?,
            reports_failed: proxy_wasm::hostcalls::define_metric(
                MetricType::Counter,
                "llm_gateway.usage_report_calls_failed",
            )
            .ok()?,
            health_polls: proxy_wasm::hostcalls::define_metric(
                MetricType::Counter,
                "llm_gateway.health_polls",
            )
            .ok()?,
            health_polls_failed: proxy_wasm::hostcalls::define_metric(
                MetricType::Counter,
                "llm_gateway.health_polls_failed",
            )
            .ok()?,
        })
    }
}

impl Root {
    /// Asks the service for the shared circuits when a poll is due and none is in flight.
    fn poll_health(&mut self, cluster: &str, every_ms: u64, timeout_ms: u64, now: u64) {
        if every_ms == 0
            || self.health_request.is_empty()
            || self.health_call.is_some()
            || now < self.next_health_poll_ms
        {
            return;
        }
        self.next_health_poll_ms = now + every_ms;
        // A failed dispatch is the reports' failure too, which they log; the next poll retries.
        if let Ok(token) = self.dispatch_grpc_call(
            cluster,
            USAGE_SERVICE,
            "Health",
            Vec::new(),
            Some(&self.health_request),
            Duration::from_millis(timeout_ms),
        ) {
            self.health_call = Some(token);
        }
    }

    /// Keeps the service's answer beside this Envoy's own circuits. Without an answer the
    /// shared circuits stay as last seen: an open one still closes at its time.
    fn on_health(&mut self, status: u32, size: usize) {
        let answer = (status == 0)
            .then(|| self.get_grpc_call_response_body(0, size))
            .flatten()
            .and_then(|b| HealthResponse::decode(b.as_slice()).ok());
        let Some(answer) = answer else {
            if let Some(m) = &self.metrics {
                proxy_wasm::hostcalls::increment_metric(m.health_polls_failed, 1).ok();
            }
            return;
        };
        let now = self.now_ms();
        for d in answer.deployments {
            health::record_shared(&d.deployment, d.open_for_ms, now);
        }
        if let Some(m) = &self.metrics {
            proxy_wasm::hostcalls::increment_metric(m.health_polls, 1).ok();
        }
    }

    fn now_ms(&self) -> u64 {
        self.get_current_time()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }

    fn count_dropped(&self) {
        let dropped = self.outbox.borrow_mut().take_dropped();
        if dropped > 0 {
            if let Some(m) = &self.metrics {
                proxy_wasm::hostcalls::increment_metric(m.reports_dropped, dropped as i64).ok();
            }
            proxy_wasm::hostcalls::log(
                LogLevel::Warn,
                &format!(
                    "llm-gateway: dropped {dropped} usage report(s): ratelimit-service unreachable"
                ),
            )
            .ok();
        }
    }
}

impl Context for Root {
    fn on_grpc_call_response(&mut self, token: u32, status: u32, size: usize) {
        if self.health_call == Some(token) {
            self.health_call = None;
            self.on_health(status, size);
            return;
        }
        let Some(acc) = self.config.as_ref().and_then(|c| c.accounting.as_ref()) else {
            return;
        };
        if status != 0
            && let Some(m) = &self.metrics
        {
            proxy_wasm::hostcalls::increment_metric(m.reports_failed, 1).ok();
        }
        let now = self.now_ms();
        self.outbox
            .borrow_mut()
            .answered(token, status == 0, now, acc.max_attempts);
        self.count_dropped();
    }
}

impl RootContext for Root {
    fn on_tick(&mut self) {
        // An Rc clone: the tick runs every flush interval on every worker.
        let Some(config) = self.config.clone() else {
            return;
        };
        let Some(acc) = config.accounting.as_ref() else {
            return;
        };
        let now = self.now_ms();
        for _ in 0..BATCHES_PER_TICK {
            let Some(batch) = self.outbox.borrow_mut().next(now) else {
                break;
            };
            let bytes = ReportRequest {
                reports: batch.reports.clone(),
            }
            .encode_to_vec();
            match self.dispatch_grpc_call(
                &acc.cluster,
                USAGE_SERVICE,
                "Report",
                Vec::new(),
                Some(&bytes),
                Duration::from_millis(acc.timeout_ms),
            ) {
                Ok(token) => {
                    self.dispatch_failing = false;
                    self.outbox.borrow_mut().sent(token, batch);
                }
                Err(e) => {
                    // Once per outage, not once per tick (e.g. a cluster name that is wrong).
                    if !std::mem::replace(&mut self.dispatch_failing, true) {
                        proxy_wasm::hostcalls::log(
                            LogLevel::Warn,
                            &format!(
                                "llm-gateway: cannot call {} on cluster '{}': {e:?}",
                                USAGE_SERVICE, acc.cluster
                            ),
                        )
                        .ok();
                    }
                    self.outbox
                        .borrow_mut()
                        .not_sent(batch, now, acc.max_attempts);
                    break;
                }
            }
        }
        self.count_dropped();
        self.poll_health(&acc.cluster, acc.health_poll_ms, acc.timeout_ms, now);
    }

    fn on_vm_start(&mut self, _: usize) -> bool {
        // WASI's random source seeds RandomState: a per-VM nonce for request ids.
        self.nonce = std::hash::BuildHasher::hash_one(
            &std::collections::hash_map::RandomState::new(),
            self.now_ms(),
        );
        // Tokenizer tables load once per VM, never on the request path.
        match estimate::init_global(&[Encoding::O200k, Encoding::Cl100k]) {
            Ok(_) => true,
            Err(e) => {
                proxy_wasm::hostcalls::log(
                    LogLevel::Critical,
                    &format!("llm-gateway: cannot load tokenizers: {e}"),
                )
                .ok();
                false
            }
        }
    }

    fn on_configure(&mut self, _: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        match Config::parse(&bytes) {
            Ok(c) => {
                if let Some(acc) = &c.accounting {
                    self.set_tick_period(Duration::from_millis(acc.flush_interval_ms));
                }
                let mut names: Vec<String> = c
                    .models
                    .values()
                    .flat_map(|m| m.deployments.iter().map(|d| d.name.clone()))
                    .collect();
                names.sort();
                names.dedup();
                self.health_request = if names.is_empty() {
                    Vec::new()
                } else {
                    HealthRequest { deployments: names }.encode_to_vec()
                };
                self.config = Some(Rc::new(c));
                self.metrics = Metrics::define().map(Rc::new);
                true
            }
            Err(e) => {
                // Returning false makes Envoy reject the configuration with this line in its log.
                proxy_wasm::hostcalls::log(
                    LogLevel::Critical,
                    &format!("llm-gateway: invalid plugin configuration: {e}"),
                )
                .ok();
                false
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Request {
            id,
            config: self.config.clone(),
            metrics: self.metrics.clone(),
            outbox: Rc::clone(&self.outbox),
            request_id: format!("{:016x}-{id:x}", self.nonce),
            started_ms: 0,
            first_byte_ms: 0,
            status: 0,
            provider_outcome: ProviderOutcome::None,
            reserved_at: None,
            meter: None,
            pending: None,
            routed: None,
            response: None,
            done: false,
        }))
    }
}

struct Request {
    id: u32,
    config: Option<Rc<Config>>,
    metrics: Option<Rc<Metrics>>,
    outbox: Rc<RefCell<Outbox>>,
    request_id: String,
    started_ms: u64,
    /// When the first byte of the response body came (0: none yet).
    first_byte_ms: u64,
    /// The response status (0: none).
    status: u32,
    /// What the response said about the deployment (`health::outcome`).
    provider_outcome: ProviderOutcome,
    /// `x-llm-reserved-at`: tokens and spend were reserved then.
    reserved_at: Option<u64>,
    meter: Option<Meter>,
    pending: Option<Pending>,
    routed: Option<Routed>,
    response: Option<ResponseBody>,
    /// A local reply was sent: later callbacks pass.
    done: bool,
}

static NO_TOKENIZERS: std::sync::OnceLock<Tokenizers> = std::sync::OnceLock::new();

impl Request {
    fn now(&self) -> Duration {
        self.get_current_time()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
    }

    fn reply(&mut self, status: u32, body: &str) -> Action {
        self.done = true;
        self.status = status;
        if let Some(m) = &self.metrics {
            proxy_wasm::hostcalls::increment_metric(m.local_replies, 1).ok();
        }
        self.send_http_response(
            status,
            vec![("content-type", "application/json")],
            Some(body.as_bytes()),
        );
        Action::Pause
    }

    fn fail(&mut self, e: GatewayError) -> Action {
        self.reply(e.status, &e.body())
    }

    fn internal_error(&mut self, what: &str) -> Action {
        if let Some(m) = &self.metrics {
            proxy_wasm::hostcalls::increment_metric(m.internal_errors, 1).ok();
        }
        proxy_wasm::hostcalls::log(LogLevel::Error, &format!("llm-gateway: {what}")).ok();
        self.fail(GatewayError::internal())
    }

    /// A uniform draw in [0, 1) from the clock and the context id (splitmix64).
    fn draw(&self) -> f64 {
        let mut z = (self.now().as_nanos() as u64) ^ (u64::from(self.id) << 32);
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Request {
    /// Feeds a response chunk to the meter; returns the bytes to send instead, if any.
    fn meter_chunk(&mut self, chunk: &[u8], end_of_stream: bool) -> Option<Vec<u8>> {
        let encoding = self.routed.as_ref().map(|r| r.encoding)?;
        let meter = self.meter.as_mut()?;
        let tokenizers =
            estimate::global().unwrap_or_else(|| NO_TOKENIZERS.get_or_init(Tokenizers::default));
        let count = |text: &str| tokenizers.count_text(encoding, text);
        let mut out = meter.push(chunk, &count);
        if end_of_stream && let Some(rest) = meter.finish(&count) {
            let mut all = out.unwrap_or_else(|| chunk.to_vec());
            all.extend(rest);
            out = Some(all);
        }
        out
    }

    /// The usage report of this request, once it is over.
    fn finished(&self) -> Option<rls_proto::llmgateway::usage::v1::UsageReport> {
        let config = self.config.as_ref()?;
        let acc = config.accounting.as_ref()?;
        let now = self.now().as_millis() as u64;
        let who = self.pending.as_ref().map(|p| &p.who);
        let r = self.routed.as_ref();
        let f = Finished {
            request_id: self.request_id.clone(),
            subject: Subject {
                tenant: who.map(|w| w.tenant.clone()).unwrap_or_default(),
                tier: who.map(|w| w.tier.clone()).unwrap_or_default(),
                model: r.map(|r| r.client_model.clone()).unwrap_or_default(),
                deployment: r.map(|r| r.deployment.clone()).unwrap_or_default(),
            },
            status: self.status,
            stream: r.is_some_and(|r| r.stream),
            duration_ms: now.saturating_sub(self.started_ms),
            first_byte_ms: if self.first_byte_ms > 0 {
                self.first_byte_ms.saturating_sub(self.started_ms)
            } else {
                0
            },
            estimated_tokens: r.map_or(0, |r| r.estimate),
            estimated_cost_micros: r.map_or(0, |r| r.cost_estimate),
            provider_outcome: self.provider_outcome,
        };
        let reserved = match (r, self.reserved_at) {
            (Some(r), Some(at_ms)) => Some(Reserved {
                at_ms,
                tokens: r.estimate,
                cost_micros: r.cost_estimate,
            }),
            _ => None,
        };
        let used = r.map(|r| {
            report::settle(
                self.status,
                self.meter.as_ref(),
                r.stream,
                (r.prompt_estimate, r.output_estimate),
            )
        });
        Some(report::report(
            acc,
            &f,
            reserved,
            used,
            r.and_then(|r| r.price.as_ref()),
        ))
    }
}

impl Context for Request {}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        self.started_ms = self.now().as_millis() as u64;
        let Some(config) = self.config.clone() else {
            return self.internal_error("no configuration");
        };
        // One host call for all headers instead of one per lookup and per removal: Envoy's
        // header names are lower-case, as `flow` asks for them.
        let headers = self.get_http_request_headers();
        let get = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        match flow::on_request_headers(&config, &get, end_of_stream) {
            HeadersStep::Proceed {
                pending,
                remove,
                set,
            } => {
                for h in remove.into_iter().filter(|h| get(h).is_some()) {
                    self.set_http_request_header(h, None);
                }
                for (h, v) in set {
                    self.set_http_request_header(h, Some(&v));
                }
                self.pending = Some(pending);
                Action::Continue
            }
            HeadersStep::Reply { status, body } => self.reply(status, &body),
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.done {
            return Action::Continue;
        }
        let (Some(config), Some(pending)) = (self.config.clone(), self.pending.clone()) else {
            return Action::Continue;
        };
        if body_size > config.max_body_bytes {
            return self.fail(GatewayError::too_large(config.max_body_bytes));
        }
        if !end_of_stream {
            return Action::Pause; // buffered by Envoy until the whole body is here
        }
        let body = self.get_http_request_body(0, body_size).unwrap_or_default();
        let tokenizers =
            estimate::global().unwrap_or_else(|| NO_TOKENIZERS.get_or_init(Tokenizers::default));
        let now_ms = self.now().as_millis() as u64;
        let draw = self.draw();
        let routed = match flow::on_request_body(
            &config,
            &pending,
            &body,
            tokenizers,
            |name| health::is_healthy(name, now_ms),
            draw,
        ) {
            Ok(r) => r,
            Err(e) => return self.fail(e),
        };
        if let Some(new_body) = &routed.body {
            self.set_http_request_body(0, body_size, new_body);
        }
        let state = [
            ("llm_route", routed.route.clone()),
            ("llm_deployment", routed.deployment.clone()),
            ("llm_model", routed.client_model.clone()),
            ("llm_estimate", routed.estimate.to_string()),
            ("llm_cost_estimate", routed.cost_estimate.to_string()),
        ];
        for (key, value) in state {
            if let Err(e) = proxy_wasm::hostcalls::set_property(vec![key], Some(value.as_bytes())) {
                return self.internal_error(&format!("set_property({key}): {e:?}"));
            }
        }
        if let Err(e) = proxy_wasm::hostcalls::call_foreign_function("clear_route_cache", None) {
            return self.internal_error(&format!("clear_route_cache: {e:?}"));
        }
        self.routed = Some(routed);
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        let (Some(config), Some(routed)) = (self.config.clone(), self.routed.as_ref()) else {
            return Action::Continue;
        };
        // One host call for the headers this step reads.
        let headers = self.get_http_response_headers();
        let get = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let status: u16 = get(":status").and_then(|s| s.parse().ok()).unwrap_or(0);
        self.status = u32::from(status);
        let content_type = get("content-type");
        if let Some(at) = get(RESERVED_AT_HEADER) {
            self.reserved_at = at.parse().ok();
            self.set_http_response_header(RESERVED_AT_HEADER, None);
        }
        let now = self.now();
        // Only what the provider (or Envoy trying to reach it) answered counts for its health
        // and is translated: not the rate limit's 429 for a tenant over its own limit.
        let details = self
            .get_property(vec!["response", "code_details"])
            .and_then(|b| String::from_utf8(b).ok());
        self.provider_outcome = health::outcome(status, details.as_deref());
        let step = if self.provider_outcome != ProviderOutcome::None {
            health::record(&routed.deployment, status, now.as_millis() as u64);
            flow::on_response_headers(
                &config,
                routed,
                status,
                content_type.as_deref(),
                &format!("{}{}", now.as_millis(), self.id),
                now.as_secs(),
            )
        } else {
            flow::on_local_reply_headers()
        };
        for h in step.remove {
            self.set_http_response_header(h, None);
        }
        for (h, v) in step.set {
            self.set_http_response_header(h, Some(&v));
        }
        self.response = Some(step.body);
        if config.accounting.is_some() {
            self.meter = step.meter;
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        if let Some(report) = self.finished() {
            self.outbox.borrow_mut().push(report);
        }
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.first_byte_ms == 0 && body_size > 0 {
            self.first_byte_ms = self.now().as_millis() as u64;
        }
        let Some(mode) = self.response.as_ref() else {
            return Action::Continue;
        };
        let pass_through = matches!(mode, ResponseBody::PassThrough);
        // A body Envoy buffers for translation is read (metered, translated) whole at its end.
        if matches!(mode, ResponseBody::Json(_)) && !end_of_stream {
            return Action::Pause;
        }
        if pass_through && self.meter.is_none() {
            return Action::Continue;
        }
        // One read of the chunk for the meter and the translator.
        let chunk = proxy_wasm::hostcalls::get_buffer(
            proxy_wasm::types::BufferType::HttpResponseBody,
            0,
            body_size,
        )
        .ok()
        .flatten()
        .unwrap_or_default();
        let metered = self.meter_chunk(&chunk, end_of_stream);
        let out = match self.response.as_mut() {
            Some(ResponseBody::Json(t)) => Some(t.translate(&chunk)),
            Some(ResponseBody::Stream(s)) => {
                let mut out = s.push(&chunk);
                if end_of_stream {
                    out.extend(s.finish());
                }
                Some(out)
            }
            // Only a pass-through body's meter rewrites it (the usage chunk the client did
            // not ask for).
            _ => metered,
        };
        if let Some(out) = out {
            self.set_http_response_body(0, body_size, &out);
        }
        Action::Continue
    }
}
