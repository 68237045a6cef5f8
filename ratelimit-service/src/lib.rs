//! Envoy RateLimitService v3 with request and token limits.
//!
//! Layout: `config` (YAML → validated tree), `window` (window arithmetic), `store` (atomic
//! check-and-charge: memory, Redis, Redis Cluster), `limiter` (request → decisions → response),
//! `headers` (OpenAI-style headers and bodies), `service` (the gRPC edge), `usage` (the
//! gateway's usage reports: corrections, LLM metrics, access log), `http` (health, metrics).

pub mod config;
pub mod headers;
pub mod health;
pub mod http;
pub mod keys;
pub mod limiter;
pub mod metrics;
pub mod reload;
pub mod server;
pub mod service;
pub mod store;
pub mod usage;
pub mod window;
