//! `cargo bench -p wasm-filter --bench estimate`: tokens/s of exact tiktoken-rs, this crate's
//! exact BPE, and the bounded estimator, on mixed text of 100 to 100,000 tokens (o200k).

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use llm_gateway_filter::estimate::{Encoding, EstimateConfig, Tokenizer, count_segments};

const CORPORA: [&str; 5] = [
    include_str!("../testdata/estimate/english.txt"),
    include_str!("../testdata/estimate/code.txt"),
    include_str!("../testdata/estimate/json.txt"),
    include_str!("../testdata/estimate/cjk.txt"),
    include_str!("../testdata/estimate/mixed.txt"),
];

/// About `tokens` tokens of the corpora concatenated (repeated as needed).
fn text_of(tok: &Tokenizer, tokens: usize) -> String {
    let all: String = CORPORA.concat();
    let mut out = String::new();
    while tok.count(&out) < tokens {
        let need = tokens - tok.count(&out);
        let mut end = (need * 7 / 2).min(all.len());
        while !all.is_char_boundary(end) {
            end -= 1;
        }
        out.push_str(&all[..end]);
    }
    out
}

fn bench(c: &mut Criterion) {
    let Ok(tok) = Tokenizer::load(Encoding::O200k) else {
        return;
    };
    let Ok(reference) = tiktoken_rs::o200k_base() else {
        return;
    };
    let cfg = EstimateConfig::default();
    let mut g = c.benchmark_group("o200k");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for n in [100usize, 1_000, 10_000, 100_000] {
        let text = text_of(&tok, n);
        g.throughput(Throughput::Elements(tok.count(&text) as u64));
        g.bench_with_input(BenchmarkId::new("tiktoken-rs exact", n), &text, |b, t| {
            b.iter(|| reference.encode_ordinary(t).len())
        });
        g.bench_with_input(BenchmarkId::new("ours exact", n), &text, |b, t| {
            b.iter(|| tok.count(t))
        });
        g.bench_with_input(BenchmarkId::new("estimator", n), &text, |b, t| {
            b.iter(|| count_segments(&tok, &[t.as_str()], &cfg))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
