//! The estimator alone, as the filter's VM would hold it: loads both tokenizers and estimates
//! one request body (a JSON file, `--api chat|completions|embeddings|messages`). Built for
//! wasm32-wasip1 it shows what the tokenizers add to a .wasm (ESTIMATION.md).

use std::time::Instant;

use llm_gateway_filter::api::Api;
use llm_gateway_filter::estimate::{Encoding, Tokenizers};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let t = Instant::now();
    let tokenizers = Tokenizers::load(&[Encoding::O200k, Encoding::Cl100k])?;
    let load = t.elapsed();
    let api = match args
        .iter()
        .position(|a| a == "--api")
        .and_then(|i| args.get(i + 1))
    {
        Some(a) => Api::from_path(&format!("/v1/{}", a.replace("chat", "chat/completions")))
            .ok_or("unknown api")?,
        None => Api::Chat,
    };
    let body: serde_json::Value = match args.get(1).filter(|a| !a.starts_with("--")) {
        Some(path) => serde_json::from_str(&std::fs::read_to_string(path)?)?,
        None => serde_json::json!({"messages": [{"role": "user", "content": "hello world"}]}),
    };
    let t = Instant::now();
    let estimate = tokenizers.estimate(api, &body, Encoding::O200k, 1024);
    println!(
        "load {load:?}; estimate {estimate} tokens in {:?}",
        t.elapsed()
    );
    Ok(())
}
