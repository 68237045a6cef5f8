//! `rls-load`: a closed-loop gRPC load generator for `ShouldRateLimit`, shaped like one Envoy
//! worker: ONE HTTP/2 connection with `--concurrency` calls in flight (each task sends its next
//! call as soon as the previous one answers), for `--duration` seconds or `--requests` calls,
//! whichever ends first. `--connections N` opens N such connections (N workers).
//!
//! Modes:
//! - `mixed` (default): a realistic LLM-gateway check, three descriptors per call:
//!   `[tenant=T]` (1 hit), `[tenant=T, kind=tokens]` (per-descriptor `hits_addend` = the
//!   request's tokens, 50..=4000), `[tier=free|pro]` (1 hit), with `T` drawn uniformly from
//!   `--tenants` tenants (`--tenants 1` is a single hot tenant).
//! - `exact`: every call is `[exact=R]` (1 hit), `[tenant=R, kind=tokens]`, `[tier=pro]` for
//!   one fresh run id `R`, meant for a config where `exact` has a small fixed-window limit `L`.
//!   The number admitted must be exactly `L`; `--expect-admitted L` turns a mismatch into
//!   exit status 2.
//!
//! Calls are drawn from a pool of 8192 prebuilt requests. `--client h2` (default) frames gRPC
//! by hand on the `h2` crate, `--client tonic` uses the generated tonic client; both use one
//! HTTP/2 connection. With one connection the two ends mostly take turns (the server answers
//! a batch, the client sends the next one), so decisions/s is close to
//! 1 / (service CPU per call + client CPU per call): a cheap client is what lets the number
//! describe the service. The client's own CPU per call is reported.
//!
//! A human summary goes to stderr and one JSON object (one line) to stdout.

use std::collections::BTreeMap;
use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use clap::{Parser, ValueEnum};
use prost::Message;
use rls_proto::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use rls_proto::rate_limit_descriptor::Entry;
use rls_proto::rate_limit_response::Code;
use rls_proto::{RateLimitDescriptor, RateLimitRequest, RateLimitResponse};
use serde_json::json;
use tonic::transport::{Channel, Endpoint};

type BoxError = Box<dyn Error + Send + Sync>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Client {
    /// gRPC framed by hand on the `h2` crate: the cheapest client, so the numbers are the
    /// service's, not the load generator's.
    H2,
    /// tonic's generated client over one `Channel` (tower buffer, hyper, h2).
    Tonic,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Three descriptors per call, tenants drawn from `--tenants`.
    Mixed,
    /// One fresh counter hammered by every call: counts admissions against a limit.
    Exact,
}

/// Closed-loop load against an Envoy RateLimitService v3 server.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// gRPC endpoint of the service.
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    addr: String,
    /// Rate-limit domain of every call.
    #[arg(long, default_value = "bench")]
    domain: String,
    /// Calls in flight on each HTTP/2 connection.
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// HTTP/2 connections (1 = one Envoy worker; more = several workers or Envoys).
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Stop after this many seconds (calls already in flight finish).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many calls.
    #[arg(long, default_value_t = 100_000_000)]
    requests: u64,
    #[arg(long, value_enum, default_value = "mixed")]
    mode: Mode,
    /// Distinct tenants in `mixed` mode (1 = a single hot tenant).
    #[arg(long, default_value_t = 1000)]
    tenants: u32,
    /// `exact` mode: exit with status 2 unless exactly this many calls were admitted.
    #[arg(long)]
    expect_admitted: Option<u64>,
    /// Free-form label copied into the JSON line.
    #[arg(long, default_value = "")]
    label: String,
    /// Seed of the tenant/token draws (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Runtime threads; 1 (default) is a current-thread runtime, like one Envoy worker.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Which gRPC client sends the calls (both use one HTTP/2 connection).
    #[arg(long, value_enum, default_value = "h2")]
    client: Client,
    /// Per-call deadline in milliseconds.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
}

fn main() {
    let args = Args::parse();
    match run(&args) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("rls-load: {e}");
            std::process::exit(1);
        }
    }
}

fn run(args: &Args) -> Result<i32, BoxError> {
    if args.concurrency == 0 || args.connections == 0 {
        return Err("--concurrency and --connections must be at least 1".into());
    }
    if args.tenants == 0 {
        return Err("--tenants must be at least 1".into());
    }
    if !(args.duration > 0.0 && args.duration.is_finite()) {
        return Err("--duration must be a positive number of seconds".into());
    }
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    let report = runtime.block_on(load(args))?;
    let line = report.to_json(args);
    eprintln!("{}", report.human(args));
    println!("{line}");
    if let Some(want) = args.expect_admitted
        && report.ok != want
    {
        eprintln!(
            "rls-load: EXACTNESS FAILED: admitted {} calls, the limit is {want}",
            report.ok
        );
        return Ok(2);
    }
    Ok(0)
}

/// What one task saw.
#[derive(Default)]
struct TaskStats {
    ok: u64,
    over_limit: u64,
    unknown_code: u64,
    errors: BTreeMap<String, u64>,
    first_error: Option<String>,
    latencies_ns: Vec<u64>,
}

struct Report {
    elapsed: Duration,
    calls: u64,
    ok: u64,
    over_limit: u64,
    unknown_code: u64,
    errors: u64,
    errors_by_code: BTreeMap<String, u64>,
    first_error: Option<String>,
    /// p50, p90, p99, p99.9, max in microseconds.
    percentiles_us: [f64; 5],
    mean_us: f64,
    /// CPU time this process used during the run (all threads), from /proc/self/task/*/schedstat.
    client_cpu_ns: Option<u64>,
    run_id: String,
    /// `exact` mode: the fixed window's hour changed during the run (a second window opened,
    /// so more than the limit may legitimately have been admitted).
    crossed_hour: bool,
}

async fn load(args: &Args) -> Result<Report, BoxError> {
    let mut callers = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        callers.push(Caller::connect(args).await?);
    }
    let tasks = args.concurrency * args.connections;
    let seed = match args.seed {
        Some(s) => s,
        None => unix_nanos(),
    };
    let run_id = format!("r{:x}{:x}", unix_nanos(), std::process::id());
    let pool = Arc::new(request_pool(args, seed, &run_id)?);
    let issued = Arc::new(AtomicU64::new(0));
    let hour_before = unix_millis() / 3_600_000;
    let cpu_before = own_cpu_ns();
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.duration);
    let per_task_capacity = {
        // Room for a rough guess of the calls each task makes, capped so a long run does not
        // reserve gigabytes up front.
        let guess = (args.duration * 200_000.0) as u64 / tasks as u64;
        guess.min(args.requests).min(4_000_000) as usize
    };

    let mut handles = Vec::with_capacity(tasks);
    for task in 0..tasks {
        let Some(caller) = callers.get(task % args.connections) else {
            break;
        };
        let mut caller = caller.clone();
        let issued = Arc::clone(&issued);
        let pool = Arc::clone(&pool);
        let mut rng = Rng::new(seed ^ ((task as u64 + 7).wrapping_mul(0x9E37_79B9_7F4A_7C15)));
        let max = args.requests;
        let timeout = Duration::from_millis(args.timeout_ms);
        handles.push(tokio::spawn(async move {
            let mut stats = TaskStats {
                latencies_ns: Vec::with_capacity(per_task_capacity),
                ..TaskStats::default()
            };
            loop {
                if Instant::now() >= deadline || issued.fetch_add(1, Ordering::Relaxed) >= max {
                    break;
                }
                let Some(request) = pool.get(rng.below(pool.len() as u64) as usize) else {
                    break;
                };
                let t0 = Instant::now();
                let result = match tokio::time::timeout(timeout, caller.call(request)).await {
                    Ok(r) => r,
                    Err(_) => Err(CallError::new("DeadlineExceeded", "client-side timeout")),
                };
                let ns = t0.elapsed().as_nanos();
                stats
                    .latencies_ns
                    .push(u64::try_from(ns).unwrap_or(u64::MAX));
                match result {
                    Ok(code) => match Code::try_from(code) {
                        Ok(Code::Ok) => stats.ok += 1,
                        Ok(Code::OverLimit) => stats.over_limit += 1,
                        _ => stats.unknown_code += 1,
                    },
                    Err(e) => {
                        *stats.errors.entry(e.kind).or_insert(0) += 1;
                        if stats.first_error.is_none() {
                            stats.first_error = Some(e.message);
                        }
                    }
                }
            }
            stats
        }));
    }

    let mut all = TaskStats::default();
    for h in handles {
        let s = h.await?;
        all.ok += s.ok;
        all.over_limit += s.over_limit;
        all.unknown_code += s.unknown_code;
        for (k, v) in s.errors {
            *all.errors.entry(k).or_insert(0) += v;
        }
        if all.first_error.is_none() {
            all.first_error = s.first_error;
        }
        all.latencies_ns.extend_from_slice(&s.latencies_ns);
    }
    let elapsed = started.elapsed();
    let client_cpu_ns = match (cpu_before, own_cpu_ns()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let hour_after = unix_millis() / 3_600_000;

    let mut lat = all.latencies_ns;
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        let rank = ((p * lat.len() as f64).ceil() as usize).clamp(1, lat.len());
        lat[rank - 1] as f64 / 1000.0
    };
    let mean_us = if lat.is_empty() {
        0.0
    } else {
        lat.iter().map(|&n| n as f64).sum::<f64>() / lat.len() as f64 / 1000.0
    };
    let errors = all.errors.values().sum();
    Ok(Report {
        elapsed,
        calls: lat.len() as u64,
        ok: all.ok,
        over_limit: all.over_limit,
        unknown_code: all.unknown_code,
        errors,
        errors_by_code: all.errors,
        first_error: all.first_error,
        percentiles_us: [pct(0.50), pct(0.90), pct(0.99), pct(0.999), pct(1.0)],
        mean_us,
        client_cpu_ns,
        run_id,
        crossed_hour: hour_before != hour_after,
    })
}

impl Report {
    fn rate(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn client_cpu_us_per_call(&self) -> Option<f64> {
        let ns = self.client_cpu_ns?;
        (self.calls > 0).then(|| ns as f64 / 1000.0 / self.calls as f64)
    }

    fn to_json(&self, args: &Args) -> serde_json::Value {
        let [p50, p90, p99, p999, max] = self.percentiles_us;
        let mut v = json!({
            "label": args.label,
            "mode": format!("{:?}", args.mode).to_lowercase(),
            "client": format!("{:?}", args.client).to_lowercase(),
            "addr": args.addr,
            "concurrency": args.concurrency,
            "connections": args.connections,
            "tenants": args.tenants,
            "elapsed_s": round(self.elapsed.as_secs_f64(), 3),
            "calls": self.calls,
            "decisions_per_s": round(self.rate(), 1),
            "ok": self.ok,
            "over_limit": self.over_limit,
            "unknown_code": self.unknown_code,
            "errors": self.errors,
            "errors_by_code": self.errors_by_code,
            "first_error": self.first_error,
            "mean_us": round(self.mean_us, 1),
            "p50_us": round(p50, 1),
            "p90_us": round(p90, 1),
            "p99_us": round(p99, 1),
            "p999_us": round(p999, 1),
            "max_us": round(max, 1),
            "client_cpu_us_per_call": self.client_cpu_us_per_call().map(|x| round(x, 2)),
        });
        if args.mode == Mode::Exact {
            v["run_id"] = json!(self.run_id);
            v["admitted"] = json!(self.ok);
            v["expect_admitted"] = json!(args.expect_admitted);
            v["crossed_hour"] = json!(self.crossed_hour);
            v["exact"] = json!(args.expect_admitted.map(|want| want == self.ok));
        }
        v
    }

    fn human(&self, args: &Args) -> String {
        let [p50, p90, p99, p999, max] = self.percentiles_us;
        let mut s = format!(
            "rls-load {label}: {calls} calls in {secs:.2} s = {rate:.0} decisions/s \
             ({conc} in flight on each of {conns} connection(s), {client:?} client)\n  \
             OK {ok}, OVER_LIMIT {over}, other codes {unknown}, errors {errors}\n  \
             latency us: mean {mean:.0}, p50 {p50:.0}, p90 {p90:.0}, p99 {p99:.0}, \
             p99.9 {p999:.0}, max {max:.0}\n  \
             load generator CPU: {client_cpu} us per call",
            label = args.label,
            calls = self.calls,
            secs = self.elapsed.as_secs_f64(),
            rate = self.rate(),
            conc = args.concurrency,
            conns = args.connections,
            client = args.client,
            ok = self.ok,
            over = self.over_limit,
            unknown = self.unknown_code,
            errors = self.errors,
            mean = self.mean_us,
            client_cpu = self
                .client_cpu_us_per_call()
                .map_or("?".to_string(), |x| format!("{x:.1}")),
        );
        if !self.errors_by_code.is_empty() {
            s.push_str(&format!(
                "\n  errors by code: {:?}; first: {}",
                self.errors_by_code,
                self.first_error.as_deref().unwrap_or("")
            ));
        }
        if args.mode == Mode::Exact {
            s.push_str(&format!(
                "\n  exactness: admitted {} of {} calls (run id {}), expected {}{}",
                self.ok,
                self.calls,
                self.run_id,
                args.expect_admitted
                    .map_or("(not given)".to_string(), |w| w.to_string()),
                if self.crossed_hour {
                    " -- WARNING: the run crossed an hour boundary"
                } else {
                    ""
                }
            ));
        }
        s
    }
}

/// Why a call failed: `kind` groups errors in the report (a gRPC code, or h2/http).
struct CallError {
    kind: String,
    message: String,
}

impl CallError {
    fn new(kind: &str, message: impl Into<String>) -> CallError {
        CallError {
            kind: kind.to_string(),
            message: message.into(),
        }
    }
}

const PATH: &str = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";

/// One HTTP/2 connection; clones share it.
#[derive(Clone)]
enum Caller {
    Tonic(RateLimitServiceClient<Channel>),
    H2 {
        send: h2::client::SendRequest<Bytes>,
        uri: http::Uri,
    },
}

impl Caller {
    async fn connect(args: &Args) -> Result<Caller, BoxError> {
        let cannot = |e: &dyn std::fmt::Display| format!("cannot connect to {}: {e}", args.addr);
        match args.client {
            Client::Tonic => {
                let channel = Endpoint::from_shared(args.addr.clone())?
                    .tcp_nodelay(true)
                    .connect_timeout(Duration::from_secs(3))
                    .connect()
                    .await
                    .map_err(|e| cannot(&e))?;
                Ok(Caller::Tonic(RateLimitServiceClient::new(channel)))
            }
            Client::H2 => {
                let base: http::Uri = args.addr.parse()?;
                let authority = base
                    .authority()
                    .ok_or("--addr needs a host and port, e.g. http://127.0.0.1:8081")?
                    .clone();
                let tcp = tokio::time::timeout(
                    Duration::from_secs(3),
                    tokio::net::TcpStream::connect(authority.as_str()),
                )
                .await
                .map_err(|e| cannot(&e))?
                .map_err(|e| cannot(&e))?;
                tcp.set_nodelay(true)?;
                let (send, connection) = h2::client::Builder::new()
                    .initial_window_size(1 << 20)
                    .initial_connection_window_size(1 << 24)
                    .handshake::<_, Bytes>(tcp)
                    .await
                    .map_err(|e| cannot(&e))?;
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        eprintln!("rls-load: connection closed: {e}");
                    }
                });
                let uri = http::Uri::builder()
                    .scheme("http")
                    .authority(authority)
                    .path_and_query(PATH)
                    .build()?;
                Ok(Caller::H2 { send, uri })
            }
        }
    }

    /// One `ShouldRateLimit`: the response's `overall_code`.
    async fn call(&mut self, request: &PooledRequest) -> Result<i32, CallError> {
        match self {
            Caller::Tonic(client) => client
                .should_rate_limit(request.message.clone())
                .await
                .map(|r| r.get_ref().overall_code)
                .map_err(|s| CallError::new(&format!("{:?}", s.code()), s.to_string())),
            Caller::H2 { send, uri } => {
                let h2_err = |e: h2::Error| CallError::new("h2", e.to_string());
                let mut ready = send.clone().ready().await.map_err(h2_err)?;
                let head = http::Request::builder()
                    .method(http::Method::POST)
                    .uri(uri.clone())
                    .header("content-type", "application/grpc")
                    .header("te", "trailers")
                    .body(())
                    .map_err(|e| CallError::new("http", e.to_string()))?;
                let (response, mut body_tx) = ready.send_request(head, false).map_err(h2_err)?;
                body_tx
                    .send_data(request.frame.clone(), true)
                    .map_err(h2_err)?;
                let response = response.await.map_err(h2_err)?;
                if response.status() != http::StatusCode::OK {
                    return Err(CallError::new(
                        "http",
                        format!("HTTP status {}", response.status()),
                    ));
                }
                let (head, mut body) = response.into_parts();
                let mut message = BytesMut::new();
                while let Some(chunk) = body.data().await {
                    let chunk = chunk.map_err(h2_err)?;
                    let _ = body.flow_control().release_capacity(chunk.len());
                    message.extend_from_slice(&chunk);
                }
                // grpc-status is in the trailers, or in the headers of a trailers-only reply.
                let trailers = body.trailers().await.map_err(h2_err)?;
                let status = trailers
                    .as_ref()
                    .and_then(|t| t.get("grpc-status"))
                    .or_else(|| head.headers.get("grpc-status"))
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if status != "0" {
                    let grpc_message = trailers
                        .as_ref()
                        .and_then(|t| t.get("grpc-message"))
                        .or_else(|| head.headers.get("grpc-message"))
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    let code = tonic::Code::from_bytes(status.as_bytes());
                    return Err(CallError::new(
                        &format!("{code:?}"),
                        format!("grpc-status {status}: {grpc_message}"),
                    ));
                }
                let mut frame = message.freeze();
                if frame.len() < 5 || frame.get_u8() != 0 {
                    return Err(CallError::new("grpc", "short or compressed response frame"));
                }
                let len = frame.get_u32() as usize;
                if frame.len() != len {
                    return Err(CallError::new("grpc", "response frame length mismatch"));
                }
                RateLimitResponse::decode(frame)
                    .map(|r| r.overall_code)
                    .map_err(|e| CallError::new("grpc", format!("bad response: {e}")))
            }
        }
    }
}

/// One call, ready to send either way: the message (for tonic) and its gRPC frame (for h2).
struct PooledRequest {
    message: RateLimitRequest,
    frame: Bytes,
}

/// Calls are drawn at random from a pool built before the clock starts, so the load generator
/// spends its time on the wire, not on building messages. The pool is large enough (8192
/// calls, tenants and tokens drawn uniformly) that the service sees the same spread of counters
/// as with calls built one by one.
fn request_pool(args: &Args, seed: u64, run_id: &str) -> Result<Vec<PooledRequest>, BoxError> {
    const POOL: usize = 8192;
    let mut rng = Rng::new(seed);
    let tenants: Vec<String> = (0..args.tenants).map(|i| format!("t{i}")).collect();
    let mut pool = Vec::with_capacity(POOL);
    for _ in 0..POOL {
        let tokens = 50 + rng.below(3951);
        let (first, tenant, tier) = match args.mode {
            Mode::Mixed => {
                let i = rng.below(tenants.len() as u64) as usize;
                let tenant = tenants.get(i).cloned().unwrap_or_default();
                // One tenant in ten is on the pro tier.
                let tier = if i.is_multiple_of(10) { "pro" } else { "free" };
                (descriptor(&[("tenant", &tenant)], None), tenant, tier)
            }
            Mode::Exact => (
                descriptor(&[("exact", run_id)], None),
                run_id.to_string(),
                "pro",
            ),
        };
        let message = RateLimitRequest {
            domain: args.domain.clone(),
            descriptors: vec![
                first,
                descriptor(&[("tenant", &tenant), ("kind", "tokens")], Some(tokens)),
                descriptor(&[("tier", tier)], None),
            ],
            hits_addend: 0,
        };
        // gRPC length-prefixed message: uncompressed flag, u32 big-endian length, protobuf.
        let len = message.encoded_len();
        let mut frame = BytesMut::with_capacity(5 + len);
        frame.put_u8(0);
        frame.put_u32(u32::try_from(len)?);
        message.encode(&mut frame)?;
        pool.push(PooledRequest {
            message,
            frame: frame.freeze(),
        });
    }
    Ok(pool)
}

fn descriptor(entries: &[(&str, &str)], hits: Option<u64>) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(k, v)| Entry {
                key: (*k).to_string(),
                value: (*v).to_string(),
            })
            .collect(),
        limit: None,
        hits_addend: hits,
    }
}

/// xorshift64*: plenty for picking tenants, and no dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform enough in `0..n` for `n` far below 2^64.
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// CPU time of this process (every thread) in nanoseconds: the first field of each thread's
/// `/proc/self/task/<tid>/schedstat`. `None` where procfs is not there.
fn own_cpu_ns() -> Option<u64> {
    let mut total = 0u64;
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let path = entry.ok()?.path().join("schedstat");
        let text = std::fs::read_to_string(path).ok()?;
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn unix_millis() -> u64 {
    unix_nanos() / 1_000_000
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}
