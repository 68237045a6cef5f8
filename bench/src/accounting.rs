//! `rls-accounting` (`make bench` phase g): how far three ways of accounting LLM tokens let a
//! tenant past its token limit when a burst of concurrent requests arrives, measured in one run
//! against one running ratelimit-service (config: bench/accounting-limits.yaml).
//!
//! Each simulated request is shaped like one the gateway's filter handles: a prompt of P tokens
//! (uniform in 50..=1500), `max_tokens` M (uniform in 50..=1000), a real completion of R tokens
//! (uniform in 1..=M, so the real P + R never exceeds the estimate P + M) and a provider that
//! takes 50..=400 ms to answer. Every mode gets the same sequence of requests (one seed) on its
//! own tenant (its own counter, descriptor `[tenant=<mode>, kind=tokens]`):
//!
//! - `estimate-only`: `ShouldRateLimit` charges P + M; if admitted, the provider is called and
//!   nothing is ever corrected.
//! - `usage-only` (charge after the response, as some gateways do): `ShouldRateLimit` with 0
//!   hits (admitted while the counter is within the limit); if admitted, the provider is called,
//!   then a usage report charges the real P + R (a correction from 0 to P + R).
//! - `reconcile` (reserve-then-reconcile, what the gateway does): `ShouldRateLimit` reserves
//!   P + M; after the response a usage report corrects the reservation to the real P + R in the
//!   window that held the reservation (`x-llm-reserved-at`).
//!
//! `--requests` requests are issued by `--concurrency` workers sharing one HTTP/2 connection,
//! each worker sending its next request as soon as the previous one is done. A refused request
//! is retried after `--retry-ms` (clients honouring `retry-after`), so the burst keeps pressing
//! on the limit for `--burst-secs` per mode: long enough for refunds to matter. Per mode:
//! requests admitted and refusals, tokens admitted (the real P + R of the admitted requests: what the provider
//! bills), over-admission = tokens admitted / limit, and the counter the service holds at the
//! end (`GET /v1/usage`), which must equal the real tokens charged (usage-only, reconcile) or
//! the estimates charged (estimate-only).
//!
//! Output: one JSON line per mode on stdout, a human summary on stderr. Exit status 2 when
//! reserve-then-reconcile admitted more than `--target` times its limit, 1 on errors.

use std::error::Error;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rls_proto::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use rls_proto::llmgateway::usage::v1::report_response::Result as Outcome;
use rls_proto::llmgateway::usage::v1::usage_service_client::UsageServiceClient;
use rls_proto::llmgateway::usage::v1::{
    Correction, Entry as UsageEntry, ReportRequest, UsageReport,
};
use rls_proto::rate_limit_descriptor::Entry;
use rls_proto::rate_limit_response::Code;
use rls_proto::{RateLimitDescriptor, RateLimitRequest};
use serde_json::json;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tonic::transport::{Channel, Endpoint};

type BoxError = Box<dyn Error + Send + Sync>;

/// The response header that carries the instant of a token reservation (Unix ms).
const RESERVED_AT: &str = "x-llm-reserved-at";
const PROMPT: (u64, u64) = (50, 1500);
const MAX_TOKENS: (u64, u64) = (50, 1000);
const LATENCY_MS: (u64, u64) = (50, 400);
const DAY_MS: u64 = 86_400_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Charge the estimate (prompt + max_tokens) at admission, never correct it.
    EstimateOnly,
    /// Check only at admission, charge the real usage after the response.
    UsageOnly,
    /// Reserve the estimate at admission, correct it to the real usage after the response.
    Reconcile,
}

impl Mode {
    /// Also the tenant of the mode's counter (bench/accounting-limits.yaml).
    fn name(self) -> &'static str {
        match self {
            Mode::EstimateOnly => "estimate-only",
            Mode::UsageOnly => "usage-only",
            Mode::Reconcile => "reconcile",
        }
    }
}

/// Over-admission of a token limit under a concurrent burst, per accounting mode.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// gRPC endpoint of the service (RateLimitService and UsageService).
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    grpc: String,
    /// HTTP endpoint of the service (`GET /v1/usage` reads the counters).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    http: String,
    /// Rate-limit domain of bench/accounting-limits.yaml.
    #[arg(long, default_value = "bench-acct")]
    domain: String,
    /// Requests of the burst, per mode.
    #[arg(long, default_value_t = 3000)]
    requests: usize,
    /// Concurrent workers (requests in flight), per mode.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// Seed of the simulated requests (the same sequence for every mode).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// The token limit of each tenant; must equal the config's (default: read from the service).
    #[arg(long)]
    limit: Option<u64>,
    /// Modes to run, one after another.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "estimate-only,usage-only,reconcile"
    )]
    modes: Vec<Mode>,
    /// No new request starts after this many seconds from the start of the run (all modes).
    #[arg(long, default_value_t = 120.0)]
    timeout_secs: f64,
    /// Deadline of every gRPC and HTTP call, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    call_timeout_ms: u64,
    /// Per mode, no request starts after this many seconds.
    #[arg(long, default_value_t = 4.0)]
    burst_secs: f64,
    /// A refused request is sent again after this many milliseconds.
    #[arg(long, default_value_t = 20)]
    retry_ms: u64,
    /// Exit with status 2 when reserve-then-reconcile's over-admission is above this.
    #[arg(long, default_value_t = 1.01)]
    target: f64,
}

fn main() {
    let args = Args::parse();
    match run(&args) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("rls-accounting: {e}");
            std::process::exit(1);
        }
    }
}

fn run(args: &Args) -> Result<i32, BoxError> {
    if args.requests == 0 || args.concurrency == 0 {
        return Err("--requests and --concurrency must be at least 1".into());
    }
    if !(args.timeout_secs > 0.0 && args.timeout_secs.is_finite()) {
        return Err("--timeout-secs must be a positive number of seconds".into());
    }
    if args.modes.is_empty() {
        return Err("--modes needs at least one mode".into());
    }
    // One thread, like one Envoy worker: the load generator is mostly asleep (the provider).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(burst_all(args))
}

/// One simulated LLM request.
#[derive(Clone, Copy, Debug)]
struct Sim {
    prompt: u64,
    max_tokens: u64,
    completion: u64,
    latency_ms: u64,
}

impl Sim {
    /// What the gateway reserves at admission: prompt + max_tokens.
    fn estimate(&self) -> u64 {
        self.prompt + self.max_tokens
    }
    /// What the provider bills: prompt + the real completion.
    fn actual(&self) -> u64 {
        self.prompt + self.completion
    }
}

/// splitmix64: tiny, seeded, deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in lo..=hi (the modulo bias is negligible for these ranges).
    fn between(&mut self, (lo, hi): (u64, u64)) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

fn simulate(seed: u64, n: usize) -> Vec<Sim> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|_| {
            let prompt = rng.between(PROMPT);
            let max_tokens = rng.between(MAX_TOKENS);
            let completion = rng.between((1, max_tokens));
            let latency_ms = rng.between(LATENCY_MS);
            Sim {
                prompt,
                max_tokens,
                completion,
                latency_ms,
            }
        })
        .collect()
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What the workers share for one mode.
struct Shared {
    mode: Mode,
    domain: String,
    run_id: String,
    sims: Arc<Vec<Sim>>,
    next: AtomicUsize,
    deadline: Instant,
    /// End of this mode's burst: no request starts after it.
    burst_end: Instant,
    retry: Duration,
    rls: RateLimitServiceClient<Channel>,
    usage: UsageServiceClient<Channel>,
}

/// What one worker saw.
#[derive(Default)]
struct Tally {
    admitted: u64,
    refused: u64,
    errors: u64,
    report_errors: u64,
    /// Real tokens (P + R) of the admitted requests.
    tokens_admitted: u64,
    /// Estimates (P + M) of the admitted requests.
    estimates_admitted: u64,
    timed_out: bool,
    first_error: Option<String>,
}

impl Tally {
    fn error(&mut self, e: String) {
        if self.first_error.is_none() {
            self.first_error = Some(e);
        }
    }
    fn add(&mut self, o: Tally) {
        self.admitted += o.admitted;
        self.refused += o.refused;
        self.errors += o.errors;
        self.report_errors += o.report_errors;
        self.tokens_admitted += o.tokens_admitted;
        self.estimates_admitted += o.estimates_admitted;
        self.timed_out |= o.timed_out;
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
    }
}

fn descriptor_entries(mode: Mode) -> Vec<Entry> {
    vec![
        Entry {
            key: "tenant".into(),
            value: mode.name().into(),
        },
        Entry {
            key: "kind".into(),
            value: "tokens".into(),
        },
    ]
}

/// Requests back to back until the burst is used up or the deadline passes.
async fn worker(s: Arc<Shared>) -> Tally {
    let mut t = Tally::default();
    let mut rls = s.rls.clone();
    let mut usage = s.usage.clone();
    // A refused request, to send again.
    let mut again: Option<(usize, Sim)> = None;
    loop {
        if Instant::now() >= s.deadline {
            t.timed_out = true;
            break;
        }
        if Instant::now() >= s.burst_end {
            break;
        }
        let (i, sim) = match again.take() {
            Some(x) => x,
            None => {
                let i = s.next.fetch_add(1, Ordering::Relaxed);
                let Some(sim) = s.sims.get(i).copied() else {
                    break;
                };
                (i, sim)
            }
        };
        let hits = match s.mode {
            Mode::EstimateOnly | Mode::Reconcile => sim.estimate(),
            Mode::UsageOnly => 0,
        };
        let req = RateLimitRequest {
            domain: s.domain.clone(),
            descriptors: vec![RateLimitDescriptor {
                entries: descriptor_entries(s.mode),
                hits_addend: Some(hits),
                ..Default::default()
            }],
            ..Default::default()
        };
        let resp = match rls.should_rate_limit(req).await {
            Ok(r) => r.into_inner(),
            Err(e) => {
                t.errors += 1;
                t.error(format!("ShouldRateLimit: {}: {}", e.code(), e.message()));
                continue;
            }
        };
        match Code::try_from(resp.overall_code) {
            Ok(Code::Ok) => {}
            Ok(Code::OverLimit) => {
                t.refused += 1;
                again = Some((i, sim));
                tokio::time::sleep(s.retry).await;
                continue;
            }
            _ => {
                t.errors += 1;
                t.error(format!(
                    "ShouldRateLimit: overall_code {}",
                    resp.overall_code
                ));
                continue;
            }
        }
        t.admitted += 1;
        t.tokens_admitted += sim.actual();
        t.estimates_admitted += sim.estimate();
        let reserved_at_ms = resp
            .response_headers_to_add
            .iter()
            .find(|h| h.key.eq_ignore_ascii_case(RESERVED_AT))
            .and_then(|h| h.value.parse::<u64>().ok())
            .unwrap_or_else(unix_millis);
        // The provider answers.
        tokio::time::sleep(Duration::from_millis(sim.latency_ms)).await;
        if s.mode == Mode::EstimateOnly {
            continue;
        }
        let report = UsageReport {
            request_id: format!("{}-{}-{i}", s.run_id, s.mode.name()),
            domain: s.domain.clone(),
            reserved_at_ms,
            corrections: vec![Correction {
                entries: descriptor_entries(s.mode)
                    .into_iter()
                    .map(|e| UsageEntry {
                        key: e.key,
                        value: e.value,
                    })
                    .collect(),
                reserved: hits,
                actual: sim.actual(),
            }],
            tenant: s.mode.name().into(),
            model: "bench-model".into(),
            status: 200,
            estimated_tokens: sim.estimate(),
            prompt_tokens: sim.prompt,
            completion_tokens: sim.completion,
            usage_source: "provider".into(),
            duration_ms: sim.latency_ms,
            reserved: true,
            ..Default::default()
        };
        match usage
            .report(ReportRequest {
                reports: vec![report],
            })
            .await
        {
            Ok(r) if r.get_ref().results.first() == Some(&(Outcome::Applied as i32)) => {}
            Ok(r) => {
                t.report_errors += 1;
                t.error(format!("Report: results {:?}", r.get_ref().results));
            }
            Err(e) => {
                t.report_errors += 1;
                t.error(format!("Report: {}: {}", e.code(), e.message()));
            }
        }
    }
    t
}

/// `GET /v1/usage` of `[tenant=<mode>, kind=tokens]`: (limit, used).
async fn read_counter(args: &Args, mode: Mode) -> Result<(u64, u64), BoxError> {
    let authority = args
        .http
        .strip_prefix("http://")
        .unwrap_or(&args.http)
        .trim_end_matches('/');
    let addr: SocketAddr = tokio::net::lookup_host(authority)
        .await?
        .next()
        .ok_or_else(|| format!("--http {}: no address", args.http))?;
    let path = format!(
        "/v1/usage?domain={}&entry=tenant%3D{}&entry=kind%3Dtokens",
        args.domain,
        mode.name()
    );
    let fetch = async {
        let stream = TcpStream::connect(addr).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = http::Request::get(path.as_str())
            .header(http::header::HOST, authority)
            .body(Empty::<Bytes>::new())?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok::<_, BoxError>((status, body))
    };
    let (status, body) = tokio::time::timeout(Duration::from_millis(args.call_timeout_ms), fetch)
        .await
        .map_err(|_| format!("GET {path}: timed out"))??;
    let text = String::from_utf8_lossy(&body);
    if !status.is_success() {
        return Err(format!("GET {path}: {status}: {text}").into());
    }
    let v: serde_json::Value = serde_json::from_str(&text)?;
    let field = |name: &str| {
        v.get(name)
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| format!("GET {path}: no {name} in {text}"))
    };
    Ok((field("limit")?, field("used")?))
}

/// The result of one mode.
struct ModeResult {
    mode: Mode,
    limit: u64,
    tally: Tally,
    counter: u64,
    elapsed: Duration,
    crossed_window: bool,
}

impl ModeResult {
    fn over_admission(&self) -> f64 {
        self.tally.tokens_admitted as f64 / self.limit as f64
    }
    /// What the counter must hold once every report is applied.
    fn counter_expected(&self) -> u64 {
        match self.mode {
            Mode::EstimateOnly => self.tally.estimates_admitted,
            Mode::UsageOnly | Mode::Reconcile => self.tally.tokens_admitted,
        }
    }
}

async fn burst(
    args: &Args,
    mode: Mode,
    sims: &Arc<Vec<Sim>>,
    channel: &Channel,
    run_id: &str,
    deadline: Instant,
) -> Result<ModeResult, BoxError> {
    let (limit, used) = read_counter(args, mode).await?;
    if used != 0 {
        return Err(format!(
            "the counter of tenant={} already holds {used} tokens: run against a fresh service",
            mode.name()
        )
        .into());
    }
    if let Some(want) = args.limit
        && want != limit
    {
        return Err(format!(
            "--limit {want}, but the service's limit of tenant={} is {limit}",
            mode.name()
        )
        .into());
    }
    if limit == 0 {
        return Err(format!("the limit of tenant={} is 0", mode.name()).into());
    }
    let shared = Arc::new(Shared {
        mode,
        domain: args.domain.clone(),
        run_id: run_id.to_owned(),
        sims: Arc::clone(sims),
        next: AtomicUsize::new(0),
        deadline,
        burst_end: Instant::now() + Duration::from_secs_f64(args.burst_secs),
        retry: Duration::from_millis(args.retry_ms),
        rls: RateLimitServiceClient::new(channel.clone()),
        usage: UsageServiceClient::new(channel.clone()),
    });
    let day_before = unix_millis() / DAY_MS;
    let started = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..args.concurrency {
        set.spawn(worker(Arc::clone(&shared)));
    }
    // Workers stop starting requests at the deadline; one in flight then takes at most two
    // calls and a provider latency.
    let bound = deadline.saturating_duration_since(Instant::now())
        + Duration::from_millis(2 * args.call_timeout_ms + LATENCY_MS.1 + 1000);
    let mut tally = Tally::default();
    let joined = tokio::time::timeout(bound, async {
        while let Some(r) = set.join_next().await {
            match r {
                Ok(t) => tally.add(t),
                Err(e) => return Err(format!("a worker failed: {e}")),
            }
        }
        Ok(())
    })
    .await;
    match joined {
        Ok(r) => r?,
        Err(_) => return Err(format!("{}: workers did not finish in time", mode.name()).into()),
    }
    let elapsed = started.elapsed();
    let (_, counter) = read_counter(args, mode).await?;
    Ok(ModeResult {
        mode,
        limit,
        tally,
        counter,
        elapsed,
        crossed_window: unix_millis() / DAY_MS != day_before,
    })
}

async fn burst_all(args: &Args) -> Result<i32, BoxError> {
    let run_started = Instant::now();
    let deadline = run_started + Duration::from_secs_f64(args.timeout_secs);
    let sims = Arc::new(simulate(args.seed, args.requests));
    let demand: u64 = sims.iter().map(Sim::actual).sum();
    let demand_estimate: u64 = sims.iter().map(Sim::estimate).sum();
    let channel = Endpoint::from_shared(args.grpc.clone())?
        .connect_timeout(Duration::from_millis(args.call_timeout_ms))
        .timeout(Duration::from_millis(args.call_timeout_ms))
        .tcp_nodelay(true)
        .connect()
        .await?;
    let run_id = format!("acct{:x}{:x}", unix_millis(), std::process::id());
    let mut status = 0;
    let mut summary = vec![format!(
        "rls-accounting: {} requests, {} in flight, seed {}, demand {demand} real tokens \
         ({demand_estimate} estimated)",
        args.requests, args.concurrency, args.seed
    )];
    for &mode in &args.modes {
        let r = burst(args, mode, &sims, &channel, &run_id, deadline).await?;
        let t = &r.tally;
        let mut warnings = Vec::new();
        if demand < 3 * r.limit {
            warnings.push(format!(
                "demand {demand} < 3 x limit {}: the burst may not reach the limit, the ratio \
                 says little (raise --requests)",
                r.limit
            ));
        }
        if t.timed_out {
            warnings.push(format!(
                "timed out after {:.0} s: not every request was issued",
                args.timeout_secs
            ));
        }
        if t.errors + t.report_errors > 0 {
            warnings.push(format!(
                "{} call errors, {} report errors (first: {})",
                t.errors,
                t.report_errors,
                t.first_error.as_deref().unwrap_or("?")
            ));
        }
        if r.counter != r.counter_expected() {
            warnings.push(format!(
                "the counter holds {}, expected {}",
                r.counter,
                r.counter_expected()
            ));
        }
        if r.crossed_window {
            warnings.push("the run crossed a UTC day: the daily counter was reset".into());
        }
        let ratio = r.over_admission();
        let line = json!({
            "phase": "g",
            "kind": "accounting",
            "id": format!("g-{}", mode.name()),
            "mode": mode.name(),
            "limit": r.limit,
            "requests": args.requests,
            "concurrency": args.concurrency,
            "seed": args.seed,
            "admitted": t.admitted,
            "refused": t.refused,
            "errors": t.errors,
            "report_errors": t.report_errors,
            "tokens_admitted": t.tokens_admitted,
            "estimates_admitted": t.estimates_admitted,
            "over_admission": (ratio * 10_000.0).round() / 10_000.0,
            "counter": r.counter,
            "counter_expected": r.counter_expected(),
            "demand": demand,
            "demand_estimate": demand_estimate,
            "elapsed_s": (r.elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
            "timed_out": t.timed_out,
            "crossed_window": r.crossed_window,
            "first_error": t.first_error,
            "warnings": warnings,
        });
        println!("{line}");
        summary.push(format!(
            "  {:<13} admitted {:>5}, refused {:>5}, errors {}/{} (calls/reports); tokens \
             admitted {:>7} / limit {} = {ratio:.3}; counter {} (expected {}); {:.1} s",
            mode.name(),
            t.admitted,
            t.refused,
            t.errors,
            t.report_errors,
            t.tokens_admitted,
            r.limit,
            r.counter,
            r.counter_expected(),
            r.elapsed.as_secs_f64()
        ));
        summary.extend(warnings.iter().map(|w| format!("    WARNING: {w}")));
        if mode == Mode::Reconcile && ratio > args.target {
            summary.push(format!(
                "    TARGET MISSED: reserve-then-reconcile admitted {ratio:.3} x its limit (target <= {})",
                args.target
            ));
            status = 2;
        }
    }
    eprintln!("{}", summary.join("\n"));
    Ok(status)
}
