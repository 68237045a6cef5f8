use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use ratelimit_service::metrics::Metrics;
use ratelimit_service::service::{FailureMode, State, system_clock};
use ratelimit_service::store::AnyStore;
use ratelimit_service::store::memory::MemoryStore;
use ratelimit_service::store::redis::RedisStore;
use ratelimit_service::store::redis_cluster::RedisClusterStore;
use ratelimit_service::{reload, server};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Envoy RateLimitService v3 server with request and token limits.
#[derive(Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Serve (the default).
    Run(RunArgs),
    /// Check a config file or directory; exit non-zero with a precise message when invalid.
    Validate {
        #[arg(long, env = "RLS_CONFIG")]
        config: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum StoreKind {
    Memory,
    Redis,
    RedisCluster,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args)]
struct RunArgs {
    /// YAML file, or directory of YAML files (one domain each).
    #[arg(long, env = "RLS_CONFIG")]
    config: Option<PathBuf>,
    #[arg(long, env = "RLS_GRPC_ADDR", default_value = "127.0.0.1:8081")]
    grpc_addr: SocketAddr,
    #[arg(long, env = "RLS_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    http_addr: SocketAddr,
    #[arg(long, env = "RLS_STORE", value_enum, default_value = "memory")]
    store: StoreKind,
    /// Redis URL; with `--store redis-cluster`, comma-separated seed node URLs
    /// (`redis://10.0.0.1:6379,redis://10.0.0.2:6379`).
    #[arg(long, env = "RLS_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Longest wait for one store call before it counts as failed.
    #[arg(long, env = "RLS_STORE_TIMEOUT_MS", default_value_t = 50)]
    store_timeout_ms: u64,
    #[arg(long, env = "RLS_FAILURE_MODE", value_enum, default_value = "open")]
    failure_mode: FailureMode,
    #[arg(long, env = "RLS_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// How often the config files are checked for changes.
    #[arg(long, env = "RLS_RELOAD_INTERVAL_MS", default_value_t = 1000)]
    reload_interval_ms: u64,
    /// Where the gateway's access log goes (one JSON line per request the filter reports):
    /// `-` for stdout, a file path (appended to), or `off`.
    #[arg(long, env = "RLS_ACCESS_LOG", default_value = "-")]
    access_log: String,
    /// Provider failures in a row (reported by any gateway) that open a deployment's circuit.
    #[arg(long, env = "RLS_CIRCUIT_FAILURES", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    circuit_failures: u32,
    /// How long an open circuit keeps a deployment out of every gateway's choice.
    #[arg(long, env = "RLS_CIRCUIT_OPEN_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    circuit_open_ms: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Validate { config }) => match ratelimit_service::config::load_path(&config) {
            Ok(loaded) => {
                for w in &loaded.warnings {
                    eprintln!("warning: {w}");
                }
                let mut domains: Vec<&String> = loaded.config.domains.keys().collect();
                domains.sort();
                println!("ok: {} file(s), domains: {domains:?}", loaded.files.len());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Run(args)) => serve(args),
        None => serve(cli.run),
    }
}

fn serve(args: RunArgs) -> ExitCode {
    init_logs(args.log_format);
    // On one CPU (a 1-CPU container, or `taskset -c 0`) a current-thread runtime: the
    // multi-thread scheduler's LIFO slot runs the connection task right after each call's task,
    // so every response is flushed on its own instead of with the others ready at that moment.
    let one_cpu = std::thread::available_parallelism().is_ok_and(|n| n.get() == 1);
    let mut builder = if one_cpu {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logs(format: LogFormat) {
    // The redis client logs every reconnect attempt while a cluster node is down; the store
    // reports an outage itself, once (`RUST_LOG=info,redis=warn` shows the client's view).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,redis=error"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn run(args: RunArgs) -> Result<(), String> {
    let config = args
        .config
        .clone()
        .ok_or("--config (or RLS_CONFIG) is required")?;
    let timeout = Duration::from_millis(args.store_timeout_ms);
    let store = match args.store {
        StoreKind::Memory => {
            let m = MemoryStore::new();
            let clock = system_clock();
            m.spawn_sweeper(Duration::from_secs(10), move || clock());
            AnyStore::Memory(m)
        }
        StoreKind::Redis => AnyStore::Redis(
            RedisStore::new(&args.redis_url, timeout).map_err(|e| format!("--redis-url: {e}"))?,
        ),
        StoreKind::RedisCluster => AnyStore::RedisCluster(
            RedisClusterStore::new(&args.redis_url, timeout)
                .map_err(|e| format!("--redis-url: {e}"))?,
        ),
    };
    let metrics = Metrics::new().map_err(|e| format!("metrics: {e}"))?;
    let name = store.name();
    let mut state = State::new(store, name, args.failure_mode, metrics, system_clock());
    state.health = ratelimit_service::health::Policy {
        failures_to_open: args.circuit_failures,
        open_for_ms: args.circuit_open_ms,
    };
    state.access_log = match args.access_log.as_str() {
        "off" => None,
        "-" => Some(Arc::new(parking_lot::Mutex::new(Box::new(
            std::io::stdout(),
        )))),
        path => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("cannot open --access-log {path}: {e}"))?;
            Some(Arc::new(parking_lot::Mutex::new(Box::new(
                std::io::LineWriter::new(file),
            ))))
        }
    };
    let state = Arc::new(state);
    reload::start(
        Arc::clone(&state),
        config,
        Duration::from_millis(args.reload_interval_ms.max(50)),
    );
    state.spawn_store_probe(Duration::from_secs(1));

    let grpc = TcpListener::bind(args.grpc_addr)
        .await
        .map_err(|e| format!("cannot listen on --grpc-addr {}: {e}", args.grpc_addr))?;
    let http = TcpListener::bind(args.http_addr)
        .await
        .map_err(|e| format!("cannot listen on --http-addr {}: {e}", args.http_addr))?;
    tracing::info!(grpc = %args.grpc_addr, http = %args.http_addr, store = name, "ratelimit-service listening");

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: draining in-flight calls");
        let _ = stop_tx.send(true);
    });
    server::serve(state, grpc, http, stop_rx).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
