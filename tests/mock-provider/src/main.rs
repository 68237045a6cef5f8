//! mock-provider: a deterministic, controllable stand-in for the OpenAI, Azure OpenAI and
//! Anthropic HTTP APIs, faithful enough for the official Python SDKs (streaming included).
//!
//! Prints exactly one line, `listening on ADDR`, to stdout once it accepts connections; logs go
//! to stderr. See `tests/mock-provider/README.md` for the endpoints, the token arithmetic, the
//! fault headers and the `/_mock/*` control API.

mod api;
mod errors;
mod faults;
#[cfg(test)]
mod http_tests;
mod ledger;
mod server;
mod sse;
mod tokens;

use std::io::Write as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use clap::Parser;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, error, info, warn};

#[derive(Parser, Debug)]
#[command(
    name = "mock-provider",
    version,
    about = "Mock OpenAI / Azure OpenAI / Anthropic API server for tests"
)]
struct Cli {
    /// Address to listen on (port 0: any free port; the chosen one is printed).
    #[arg(long, env = "MOCK_LISTEN", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The only accepted OpenAI key (`Authorization: Bearer`); unset: any non-empty key.
    #[arg(long, env = "MOCK_OPENAI_KEY", hide_env_values = true)]
    openai_key: Option<String>,
    /// The only accepted Anthropic key (`x-api-key`); unset: any non-empty key.
    #[arg(long, env = "MOCK_ANTHROPIC_KEY", hide_env_values = true)]
    anthropic_key: Option<String>,
    /// The only accepted Azure OpenAI key (`api-key`); unset: any non-empty key.
    #[arg(long, env = "MOCK_AZURE_KEY", hide_env_values = true)]
    azure_key: Option<String>,
    /// Deployment name: sent as `x-mock-provider` and used in ids and `system_fingerprint`.
    #[arg(long, env = "MOCK_NAME", default_value = "mock")]
    name: String,
}

/// The connection's socket; closes with RST instead of FIN when the service injected a reset.
struct ResettableIo {
    stream: TcpStream,
    reset: Arc<AtomicBool>,
}

impl Drop for ResettableIo {
    fn drop(&mut self) {
        if self.reset.load(Ordering::SeqCst)
            && let Err(e) = self.stream.set_zero_linger()
        {
            debug!(error = %e, "SO_LINGER 0 failed; the connection closes with FIN");
        }
    }
}

impl AsyncRead for ResettableIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResettableIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

async fn serve_connection(app: Arc<server::App>, stream: TcpStream, peer: SocketAddr) {
    if let Err(e) = stream.set_nodelay(true) {
        debug!(%peer, error = %e, "TCP_NODELAY failed");
    }
    let reset = Arc::new(AtomicBool::new(false));
    let io = TokioIo::new(ResettableIo {
        stream,
        reset: reset.clone(),
    });
    let svc = service_fn(move |req| server::handle(app.clone(), req, reset.clone()));
    if let Err(e) = http1::Builder::new().serve_connection(io, svc).await {
        debug!(%peer, error = %e, "connection ended with an error");
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the server");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let keys = server::Keys {
        openai: cli.openai_key,
        azure: cli.azure_key,
        anthropic: cli.anthropic_key,
    };
    let app = Arc::new(server::App::new(cli.name.clone(), keys)?);
    let listener = TcpListener::bind(cli.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", cli.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("local address: {e}"))?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {addr}")
            .and_then(|()| out.flush())
            .map_err(|e| format!("writing to stdout: {e}"))?;
    }
    info!(%addr, name = %cli.name, "mock-provider ready");

    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tokio::spawn(serve_connection(app.clone(), stream, peer));
                }
                Err(e) => {
                    // e.g. EMFILE: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = &mut shutdown => {
                info!("shutting down");
                return Ok(());
            }
        }
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::env::var_os("NO_COLOR").is_none())
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start the runtime");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}
