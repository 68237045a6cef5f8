//! `gw-load`: HTTP/1.1 load generator for the gateway phases of `make bench` (bench/run.sh):
//! POSTs one JSON body (`--body FILE`) over keep-alive connections, each request with
//! `Authorization: Bearer <--key-prefix><i>`, `i` drawn uniformly from `0..--keys`.
//!
//! Two modes:
//! - open loop (`--rate R`, R > 0): requests are *generated* at a constant R per second by a
//!   timer thread (target instants `t0 + k/R`, so the rate does not drift) whatever the answers
//!   do, like wrk2. Each one takes a free connection from a pool of `--connections`; latency
//!   runs from the moment the request was generated to the last byte of the answer, so time
//!   spent waiting for a free connection (or for this process to get the CPU) counts: no
//!   coordinated omission. How many requests had to wait for a connection is reported.
//! - closed loop (`--rate 0`): `--connections` connections, one request in flight on each,
//!   the next sent as soon as the previous one is answered: the throughput at saturation.
//!
//! `--warmup` seconds run first in the same mode and are not recorded. One JSON object (one
//! line) goes to stdout, a human summary to stderr.

use std::collections::BTreeMap;
use std::error::Error;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

type BoxError = Box<dyn Error + Send + Sync>;

/// Open- or closed-loop HTTP/1.1 load against one URL.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// http://HOST:PORT/PATH (plain HTTP/1.1).
    #[arg(long)]
    url: String,
    /// The request body (sent as application/json).
    #[arg(long)]
    body: String,
    /// Number of API keys: each request carries `Authorization: Bearer <prefix><i>`, `i`
    /// uniform in 0..keys. 0: no Authorization header.
    #[arg(long, default_value_t = 1)]
    keys: u32,
    #[arg(long, default_value = "sk-bench-")]
    key_prefix: String,
    /// Requests per second, open loop; 0 = closed loop (one request in flight per connection).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Keep-alive connections (closed loop: requests in flight; open loop: the pool).
    #[arg(long, default_value_t = 50)]
    connections: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of the same load before, not recorded.
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// Free-form label copied into the JSON line.
    #[arg(long, default_value = "")]
    label: String,
    /// Seed of the key draws.
    #[arg(long, default_value_t = 0x5EED)]
    seed: u64,
    /// Per-request deadline in milliseconds (counted as an error).
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
}

struct Target {
    addr: SocketAddr,
    host: HeaderValue,
    path: String,
    body: Bytes,
    auth: Vec<HeaderValue>,
    timeout: Duration,
}

/// What the measured part of a run saw.
#[derive(Default)]
struct Record {
    latencies_ns: Vec<u64>,
    statuses: BTreeMap<u16, u64>,
    errors: u64,
    first_error: Option<String>,
    waited_for_conn: u64,
    first_sent: Option<Instant>,
    last_done: Option<Instant>,
}

impl Record {
    fn done(&mut self, generated: Instant, result: Result<u16, String>) {
        let now = Instant::now();
        match result {
            Ok(status) => {
                *self.statuses.entry(status).or_default() += 1;
                self.latencies_ns.push((now - generated).as_nanos() as u64);
            }
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert(e);
            }
        }
        self.first_sent = Some(self.first_sent.map_or(generated, |t| t.min(generated)));
        self.last_done = Some(self.last_done.map_or(now, |t| t.max(now)));
    }
}

type Shared = Arc<Mutex<Record>>;

fn main() {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gw-load: runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(&args)) {
        eprintln!("gw-load: {e}");
        std::process::exit(1);
    }
}

fn target(args: &Args) -> Result<Target, BoxError> {
    let rest = args
        .url
        .strip_prefix("http://")
        .ok_or("--url must start with http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr: SocketAddr = authority
        .parse()
        .map_err(|e| format!("--url: {authority}: {e} (give IP:PORT)"))?;
    let body = Bytes::from(std::fs::read(&args.body).map_err(|e| format!("{}: {e}", args.body))?);
    let auth = (0..args.keys)
        .map(|i| HeaderValue::try_from(format!("Bearer {}{i}", args.key_prefix)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Target {
        addr,
        host: HeaderValue::try_from(authority)?,
        path: path.to_owned(),
        body,
        auth,
        timeout: Duration::from_millis(args.timeout_ms),
    })
}

async fn connect(t: &Target) -> Result<SendRequest<Full<Bytes>>, BoxError> {
    let stream = TcpStream::connect(t.addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// One request on `conn`: its status, or what went wrong. The connection is reopened after an
/// error.
async fn send(
    t: &Target,
    conn: &mut Option<SendRequest<Full<Bytes>>>,
    key: usize,
) -> Result<u16, String> {
    let attempt = async {
        if conn.as_ref().is_none_or(|c| c.is_closed()) {
            *conn = Some(connect(t).await?);
        }
        let c = conn.as_mut().ok_or("no connection")?;
        c.ready().await?;
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(t.path.as_str())
            .header(HOST, t.host.clone())
            .header(CONTENT_TYPE, "application/json");
        if let Some(a) = t.auth.get(key) {
            req = req.header(AUTHORIZATION, a.clone());
        }
        let resp = c.send_request(req.body(Full::new(t.body.clone()))?).await?;
        let status = resp.status().as_u16();
        resp.into_body().collect().await?;
        Ok::<u16, BoxError>(status)
    };
    match tokio::time::timeout(t.timeout, attempt).await {
        Ok(Ok(status)) => Ok(status),
        Ok(Err(e)) => {
            *conn = None;
            Err(e.to_string())
        }
        Err(_) => {
            *conn = None;
            Err(format!("no answer within {:?}", t.timeout))
        }
    }
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        // xorshift64*
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1) as u64) as usize
    }
}

async fn closed_loop(
    t: &Arc<Target>,
    conns: Vec<Option<SendRequest<Full<Bytes>>>>,
    secs: f64,
    seed: u64,
) -> (Record, Vec<Option<SendRequest<Full<Bytes>>>>) {
    let rec: Shared = Arc::default();
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for (i, mut conn) in conns.into_iter().enumerate() {
        let (t, rec) = (t.clone(), rec.clone());
        let mut rng = Rng(seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let key = rng.below(t.auth.len());
                let started = Instant::now();
                let r = send(&t, &mut conn, key).await;
                if let Ok(mut rec) = rec.lock() {
                    rec.done(started, r);
                }
            }
            conn
        }));
    }
    let mut back = Vec::new();
    for task in tasks {
        back.push(task.await.ok().flatten());
    }
    let rec = Arc::try_unwrap(rec)
        .ok()
        .and_then(|m| m.into_inner().ok())
        .unwrap_or_default();
    (rec, back)
}

async fn open_loop(
    t: &Arc<Target>,
    conns: Vec<Option<SendRequest<Full<Bytes>>>>,
    rate: f64,
    secs: f64,
    seed: u64,
) -> (Record, Vec<Option<SendRequest<Full<Bytes>>>>) {
    let n = conns.len();
    let pool = Arc::new((Semaphore::new(n), Mutex::new(conns)));
    let rec: Shared = Arc::default();
    let total = (rate * secs).round() as u64;
    // The clock: a thread of its own (tokio's timers have millisecond granularity), sleeping
    // until each target instant and handing over the instant it woke at.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let clock = std::thread::spawn(move || {
        let t0 = Instant::now() + Duration::from_millis(5);
        for k in 0..total {
            let due = t0 + Duration::from_secs_f64(k as f64 / rate);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if tx.send(Instant::now()).is_err() {
                break;
            }
        }
    });
    let mut rng = Rng(seed);
    let mut tasks = Vec::with_capacity(total as usize);
    while let Some(generated) = rx.recv().await {
        let key = rng.below(t.auth.len());
        let (t, pool, rec) = (t.clone(), pool.clone(), rec.clone());
        tasks.push(tokio::spawn(async move {
            let (sem, conns) = &*pool;
            let waited = sem.available_permits() == 0;
            let Ok(permit) = sem.acquire().await else {
                return;
            };
            let mut conn = conns.lock().ok().and_then(|mut c| c.pop()).flatten();
            let r = send(&t, &mut conn, key).await;
            if let Ok(mut c) = conns.lock() {
                c.push(conn);
            }
            drop(permit);
            if let Ok(mut rec) = rec.lock() {
                rec.waited_for_conn += u64::from(waited);
                rec.done(generated, r);
            }
        }));
    }
    let _ = clock.join();
    for task in tasks {
        let _ = task.await;
    }
    let conns = pool
        .1
        .lock()
        .map(|mut c| std::mem::take(&mut *c))
        .unwrap_or_default();
    let rec = Arc::try_unwrap(rec)
        .ok()
        .and_then(|m| m.into_inner().ok())
        .unwrap_or_default();
    (rec, conns)
}

async fn run(args: &Args) -> Result<(), BoxError> {
    if args.connections == 0 {
        return Err("--connections must be at least 1".into());
    }
    let t = Arc::new(target(args)?);
    let mut conns = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        conns.push(Some(connect(&t).await?));
    }
    let phase = |secs: f64, seed: u64, conns| {
        let t = t.clone();
        async move {
            if args.rate > 0.0 {
                open_loop(&t, conns, args.rate, secs, seed).await
            } else {
                closed_loop(&t, conns, secs, seed).await
            }
        }
    };
    if args.warmup > 0.0 {
        let (_, back) = phase(args.warmup, args.seed.wrapping_add(1), conns).await;
        conns = back;
    }
    let cpu0 = own_cpu_ns();
    let (mut rec, _) = phase(args.duration, args.seed, conns).await;
    let cpu = match (cpu0, own_cpu_ns()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    rec.latencies_ns.sort_unstable();
    let lat = &rec.latencies_ns;
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        let i = ((p * lat.len() as f64).ceil() as usize).clamp(1, lat.len()) - 1;
        round(lat[i] as f64 / 1e3, 1)
    };
    let answered = lat.len() as u64;
    let ok: u64 = rec
        .statuses
        .iter()
        .filter(|(s, _)| (200..300).contains(*s))
        .map(|(_, n)| n)
        .sum();
    let wall = match (rec.first_sent, rec.last_done) {
        (Some(a), Some(b)) => (b - a).as_secs_f64(),
        _ => 0.0,
    };
    let rps = if wall > 0.0 {
        answered as f64 / wall
    } else {
        0.0
    };
    let mean = if answered > 0 {
        lat.iter().sum::<u64>() as f64 / answered as f64 / 1e3
    } else {
        0.0
    };
    let calls = answered + rec.errors;
    let out = json!({
        "label": args.label,
        "mode": if args.rate > 0.0 { "open" } else { "closed" },
        "rate": args.rate,
        "connections": args.connections,
        "keys": args.keys,
        "body_bytes": t.body.len(),
        "duration_s": round(wall, 3),
        "requests": answered,
        "ok": ok,
        "non2xx": answered - ok,
        "errors": rec.errors,
        "first_error": rec.first_error,
        "statuses": rec.statuses.iter().map(|(s, n)| (s.to_string(), *n)).collect::<BTreeMap<_, _>>(),
        "rps": round(rps, 1),
        "mean_us": round(mean, 1),
        "p50_us": pct(0.50),
        "p90_us": pct(0.90),
        "p99_us": pct(0.99),
        "p999_us": pct(0.999),
        "max_us": pct(1.0),
        "waited_for_conn": rec.waited_for_conn,
        "client_cpu_us_per_req": cpu.filter(|_| calls > 0).map(|ns| round(ns as f64 / 1e3 / calls as f64, 2)),
    });
    eprintln!(
        "gw-load {}: {} answered ({} 2xx, {} errors) in {:.2}s = {:.0}/s; p50 {} us, p99 {} us, max {} us{}",
        args.label,
        answered,
        ok,
        rec.errors,
        wall,
        rps,
        pct(0.5),
        pct(0.99),
        pct(1.0),
        rec.first_error
            .as_deref()
            .map(|e| format!("; first error: {e}"))
            .unwrap_or_default()
    );
    println!("{out}");
    Ok(())
}

/// CPU time of this process (every thread) in nanoseconds, from
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

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}
