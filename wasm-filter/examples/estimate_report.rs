//! Prints the accuracy and cost tables of ESTIMATION.md.
//!
//! Native: `cargo run -p wasm-filter --release --example estimate_report`
//! In a wasm VM: build with `--target wasm32-wasip1` and run the .wasm under a WASI runtime
//! (wasmtime), with `testdata/estimate` pre-opened as `/data` and `/data` as first argument.
//! `--no-reference` skips tiktoken-rs.

use std::time::Instant;

use llm_gateway_filter::estimate::{
    Encoding, EstimateConfig, Tokenizer, count_segments, count_segments_by_bytes, model_only,
};

const CORPORA: [&str; 5] = ["english", "code", "json", "cjk", "mixed"];

/// Median microseconds of `runs` calls (after one warm-up).
fn time_us<T>(runs: usize, mut f: impl FnMut() -> T) -> (T, f64) {
    let mut out = f();
    let mut v = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        out = std::hint::black_box(f());
        v.push(t.elapsed().as_secs_f64() * 1e6);
    }
    v.sort_by(f64::total_cmp);
    (out, v[v.len() / 2])
}

fn pct(est: u64, exact: u64) -> f64 {
    (est as f64 - exact as f64) / exact as f64 * 100.0
}

/// About `tokens` tokens of mixed text: all corpora concatenated (repeated as needed).
fn text_of(tok: &Tokenizer, all: &str, tokens: usize) -> String {
    let mut out = String::new();
    let mut approx = 0;
    while approx < tokens {
        let need = tokens - approx;
        let mut end = (need * 7 / 2).min(all.len());
        while !all.is_char_boundary(end) {
            end -= 1;
        }
        out.push_str(&all[..end]);
        approx = tok.count(&out);
    }
    out
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let dir = args
        .get(1)
        .filter(|a| !a.starts_with("--"))
        .cloned()
        .unwrap_or_else(|| format!("{}/testdata/estimate", env!("CARGO_MANIFEST_DIR")));
    let reference = !args.iter().any(|a| a == "--no-reference");
    let texts: Vec<(&str, String)> = CORPORA
        .iter()
        .map(|n| Ok((*n, std::fs::read_to_string(format!("{dir}/{n}.txt"))?)))
        .collect::<Result<_, std::io::Error>>()?;
    let cfg = EstimateConfig::default();

    println!("## Load (once per VM)\n");
    for e in [Encoding::O200k, Encoding::Cl100k] {
        let t = Instant::now();
        let tok = Tokenizer::load(e)?;
        let ours = t.elapsed().as_secs_f64() * 1e3;
        let theirs = if reference {
            let t = Instant::now();
            let r = match e {
                Encoding::O200k => tiktoken_rs::o200k_base(),
                Encoding::Cl100k => tiktoken_rs::cl100k_base(),
            }?;
            drop(std::hint::black_box(r));
            format!("{:.0} ms", t.elapsed().as_secs_f64() * 1e3)
        } else {
            "-".into()
        };
        println!(
            "- {e:?}: {ours:.0} ms ({} tokens); tiktoken-rs: {theirs}",
            tok.vocabulary_size()
        );
    }

    for e in [Encoding::O200k, Encoding::Cl100k] {
        let tok = Tokenizer::load(e)?;
        let reference_bpe = match (reference, e) {
            (false, _) => None,
            (true, Encoding::O200k) => Some(tiktoken_rs::o200k_base()?),
            (true, Encoding::Cl100k) => Some(tiktoken_rs::cl100k_base()?),
        };
        println!("\n## {e:?}: accuracy (% vs exact) and cost (µs, median)\n");
        println!(
            "| corpus | bytes | tokens | exact µs | tiktoken-rs µs | sampled+model | µs | sampled by bytes | µs | model only | µs |"
        );
        println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        for (name, text) in &texts {
            let seg = [text.as_str()];
            let (exact, t_exact) = time_us(7, || tok.count(text) as u64);
            let t_ref = match &reference_bpe {
                Some(r) => format!("{:.0}", time_us(7, || r.encode_ordinary(text).len()).1),
                None => "-".into(),
            };
            let (s, t_s) = time_us(15, || count_segments(&tok, &seg, &cfg));
            let (b, t_b) = time_us(15, || count_segments_by_bytes(&tok, &seg, &cfg));
            let (m, t_m) = time_us(15, || model_only(e, &seg));
            println!(
                "| {name} | {} | {exact} | {t_exact:.0} | {t_ref} | {:+.2}% | {t_s:.0} | {:+.2}% | {t_b:.0} | {:+.2}% | {t_m:.0} |",
                text.len(),
                pct(s, exact),
                pct(b, exact),
                pct(m, exact)
            );
        }
    }

    println!("\n## Text unlike the corpora (100,000 chars; % vs exact)\n");
    println!("| text | encoding | tokens | sampled+model | by bytes | model only |");
    println!("| --- | --- | ---: | ---: | ---: | ---: |");
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b64: String = (0..100_000)
        .map(|_| char::from(B64[(next() % 64) as usize]))
        .collect();
    let words: String = (0..100_000)
        .map(|i| {
            if i % 9 == 8 {
                ' '
            } else {
                char::from(b'a' + (next() % 26) as u8)
            }
        })
        .collect();
    for (name, text) in [("random base64", &b64), ("random words", &words)] {
        for e in [Encoding::O200k, Encoding::Cl100k] {
            let tok = Tokenizer::load(e)?;
            let seg = [text.as_str()];
            let exact = tok.count(text) as u64;
            println!(
                "| {name} | {e:?} | {exact} | {:+.2}% | {:+.2}% | {:+.2}% |",
                pct(count_segments(&tok, &seg, &cfg), exact),
                pct(count_segments_by_bytes(&tok, &seg, &cfg), exact),
                pct(model_only(e, &seg), exact)
            );
        }
    }

    let all: String = texts.iter().map(|(_, t)| t.as_str()).collect();
    let tok = Tokenizer::load(Encoding::O200k)?;
    let reference_bpe = if reference {
        Some(tiktoken_rs::o200k_base()?)
    } else {
        None
    };
    println!("\n## o200k throughput on mixed text (million tokens/s; µs per call)\n");
    println!("| tokens | bytes | exact (ours) | tiktoken-rs | estimator (default config) |");
    println!("| ---: | ---: | ---: | ---: | ---: |");
    for n in [100usize, 1_000, 10_000, 100_000] {
        let text = text_of(&tok, &all, n);
        let tokens = tok.count(&text) as f64;
        let runs = (2_000_000 / text.len().max(1)).clamp(5, 200);
        let (_, t_exact) = time_us(runs, || tok.count(&text));
        let t_ref = match &reference_bpe {
            Some(r) => {
                let (_, t) = time_us(runs, || r.encode_ordinary(&text).len());
                format!("{:.1} ({t:.0} µs)", tokens / t)
            }
            None => "-".into(),
        };
        let (_, t_est) = time_us(runs, || count_segments(&tok, &[text.as_str()], &cfg));
        println!(
            "| {tokens} | {} | {:.1} ({t_exact:.0} µs) | {t_ref} | {:.1} ({t_est:.0} µs) |",
            text.len(),
            tokens / t_exact,
            tokens / t_est
        );
    }
    Ok(())
}
