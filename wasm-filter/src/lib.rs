//! The gateway's proxy-wasm filter. Everything but `plugin` is plain Rust, tested natively:
//! `config` (plugin configuration), `estimate` (token estimation), `translate` (OpenAI ↔
//! Anthropic requests, responses and streams). `plugin` is the thin proxy-wasm shell, built
//! only for wasm32.

pub mod estimate;
pub mod translate;
