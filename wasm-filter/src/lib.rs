//! The gateway's proxy-wasm filter. Everything but `plugin` is plain Rust, tested natively:
//! `config` (plugin configuration), `auth` (API keys), `errors` (the gateway's own answers),
//! `select` (deployment choice), `estimate` (token estimation), `translate` (OpenAI ↔
//! Anthropic requests, responses and streams), `meter` (real usage read from response bodies).
//! `plugin` is the thin proxy-wasm shell, built only for wasm32.

pub mod api;
pub mod auth;
pub mod config;
pub mod errors;
pub mod estimate;
pub mod flow;
pub mod health;
pub mod meter;
pub mod report;
pub mod select;
pub mod translate;

#[cfg(target_arch = "wasm32")]
mod plugin;
