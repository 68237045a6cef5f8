//! The request bodies of `make bench`'s gateway phases, sized with the filter's own tokenizer,
//! and the filter's per-request work timed natively on exactly those bodies:
//!
//! `cargo run --release -p rls-bench --example gateway-prompts -- --out DIR`
//!
//! For every size N (`--sizes`, tokens) it writes `DIR/chat-N.json`, an OpenAI chat request
//! for `gpt-4o-mini` whose one user message is the shortest prefix of the filter's estimation
//! corpora (wasm-filter/testdata/estimate: english, code, json, cjk, mixed concatenated, then
//! repeated, like `estimate_report`'s "mixed text") that counts N tokens exactly (o200k, the
//! encoding of gpt-4o-mini), with `max_tokens: 16`. For the sizes in `--shadow` it also writes
//! `DIR/shadow-N.json`: the same text in the top-level `user` field, which the estimator does
//! not read, and "hi" as the message: the same bytes to parse, copy and re-serialize, (almost)
//! nothing to estimate. The gateway's latency on chat-N minus shadow-N is what estimating N
//! tokens costs inside Envoy.
//!
//! Prints one JSON line per body: its tokens, the filter's reservation for it
//! (`Tokenizers::estimate`, what the filter puts in `wasm.llm_estimate`), and the median native
//! time of (a) the estimate alone and (b) the filter's whole body step (`flow::on_request_body`:
//! parse, estimate, choose, re-serialize).

use std::time::{Duration, Instant};

use llm_gateway_filter::api::Api;
use llm_gateway_filter::config::{Config, Encoding, Identity};
use llm_gateway_filter::estimate::Tokenizers;
use llm_gateway_filter::flow::{self, Pending};
use serde_json::{Value, json};

const CORPORA: [&str; 5] = ["english", "code", "json", "cjk", "mixed"];
const MODEL: &str = "gpt-4o-mini";
const MAX_TOKENS: u64 = 16;
/// Like envoy/demo.yaml's plugin configuration (keys do not matter to the body step).
const PLUGIN_CONFIG: &str = "
default_max_output_tokens: 256
models:
  gpt-4o-mini:
    deployments:
      - {name: openai-a, cluster: openai-a, provider: openai, weight: 3}
      - {name: openai-b, cluster: openai-b, provider: openai, weight: 1}
";

type BoxError = Box<dyn std::error::Error>;

fn main() -> Result<(), BoxError> {
    let mut out = None;
    let mut sizes = vec![100usize, 1_000, 10_000, 100_000];
    let mut shadow = vec![1_000usize, 10_000, 100_000];
    let mut corpora = format!(
        "{}/../wasm-filter/testdata/estimate",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut budget = Duration::from_millis(400);
    let mut args = std::env::args().skip(1);
    let list = |v: Option<String>| -> Result<Vec<usize>, BoxError> {
        let v = v.ok_or("missing value")?;
        if v.is_empty() {
            return Ok(Vec::new());
        }
        Ok(v.split(',')
            .map(|s| s.trim().parse())
            .collect::<Result<_, _>>()?)
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--out" => out = args.next(),
            "--sizes" => sizes = list(args.next())?,
            "--shadow" => shadow = list(args.next())?,
            "--corpora" => corpora = args.next().ok_or("--corpora needs a value")?,
            "--budget-ms" => {
                budget = Duration::from_millis(args.next().ok_or("--budget-ms")?.parse()?)
            }
            other => {
                return Err(format!(
                    "unknown argument {other}; usage: --out DIR [--sizes 100,1000] \
                     [--shadow 10000] [--corpora DIR] [--budget-ms 400]"
                )
                .into());
            }
        }
    }
    let out = out.ok_or("--out DIR is required")?;
    std::fs::create_dir_all(&out)?;

    // As the filter's VM does at on_vm_start.
    let tokenizers = Tokenizers::load(&[Encoding::O200k, Encoding::Cl100k])?;
    let tok = tokenizers.get(Encoding::O200k).ok_or("o200k not loaded")?;
    let config = Config::parse(PLUGIN_CONFIG.as_bytes())?;
    let pending = Pending {
        api: Api::Chat,
        who: Identity {
            tenant: "bench".into(),
            tier: "pro".into(),
        },
    };
    let mut all = String::new();
    for name in CORPORA {
        all.push_str(&std::fs::read_to_string(format!("{corpora}/{name}.txt"))?);
    }
    let default_max = config.default_max_output_tokens;

    for &n in &sizes {
        // Enough repetitions of the corpora, then the shortest prefix with n tokens.
        let mut source = all.clone();
        while tok.count(&source) < n {
            source.push('\n');
            source.push_str(&all);
        }
        let (mut lo, mut hi) = (0usize, source.len());
        while lo < hi {
            let mid = floor_boundary(&source, lo + (hi - lo) / 2);
            if mid <= lo {
                // No char boundary strictly inside (lo, hi): the next boundary is hi.
                if tok.count(&source[..ceil_boundary(&source, lo + 1)]) >= n {
                    hi = ceil_boundary(&source, lo + 1);
                }
                break;
            }
            if tok.count(&source[..mid]) >= n {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        let text = &source[..hi];
        let text_tokens = tok.count(text);

        let mut bodies = vec![(
            "prompt",
            format!("chat-{n}"),
            json!({"model": MODEL, "max_tokens": MAX_TOKENS,
                   "messages": [{"role": "user", "content": text}]}),
        )];
        if shadow.contains(&n) {
            bodies.push((
                "shadow",
                format!("shadow-{n}"),
                json!({"model": MODEL, "max_tokens": MAX_TOKENS, "user": text,
                       "messages": [{"role": "user", "content": "hi"}]}),
            ));
        }
        for (kind, name, body) in bodies {
            let bytes = serde_json::to_vec(&body)?;
            let file = format!("{out}/{name}.json");
            std::fs::write(&file, &bytes)?;
            let parsed: Value = serde_json::from_slice(&bytes)?;
            let estimate = tokenizers.estimate(Api::Chat, &parsed, Encoding::O200k, default_max);
            let prompt = tokenizers.prompt_tokens(Api::Chat, &parsed, Encoding::O200k);
            let est_us = median_us(budget, || {
                tokenizers.estimate(Api::Chat, &parsed, Encoding::O200k, default_max)
            });
            let step = || {
                flow::on_request_body(&config, &pending, &bytes, &tokenizers, |_| true, 0.5)
                    .map(|r| r.estimate)
            };
            let step_estimate =
                step().map_err(|e| format!("{name}: the body step failed: {e:?}"))?;
            let step_us = median_us(budget, step);
            if step_estimate != estimate {
                return Err(format!(
                    "{name}: flow::on_request_body estimated {step_estimate}, Tokenizers::estimate {estimate}"
                )
                .into());
            }
            println!(
                "{}",
                json!({
                    "name": name,
                    "body": kind,
                    "file": file,
                    "size": n,
                    "text_tokens": text_tokens,
                    "text_bytes": text.len(),
                    "body_bytes": bytes.len(),
                    "prompt_tokens": prompt,
                    "estimate": estimate,
                    "native_estimate_us": round(est_us, 2),
                    "native_body_step_us": round(step_us, 2),
                })
            );
        }
    }
    Ok(())
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_boundary(s: &str, mut i: usize) -> usize {
    while i < s.len() && !s.is_char_boundary(i) {
        i += 1;
    }
    i.min(s.len())
}

/// Median microseconds of `f` over at least 7 calls and about `budget` of time (after one
/// warm-up call).
fn median_us<T>(budget: Duration, mut f: impl FnMut() -> T) -> f64 {
    std::hint::black_box(f());
    let start = Instant::now();
    let mut v = Vec::new();
    while v.len() < 7 || (start.elapsed() < budget && v.len() < 5_000) {
        let t = Instant::now();
        std::hint::black_box(f());
        v.push(t.elapsed().as_secs_f64() * 1e6);
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}
