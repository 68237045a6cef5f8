//! Bounded-cost token counting for text that may be huge.
//!
//! Up to [`EstimateConfig::exact_limit_bytes`] of text (summed over a request's strings) is
//! tokenized exactly. Above it, the count is a *sample-calibrated class model* (a ratio
//! estimator in survey-sampling terms):
//!
//! 1. one linear pass over all the bytes counts characters per class (ASCII letters, digits,
//!    punctuation, spaces, newlines, CJK, other 2-byte, other 3/4-byte) and turns the counts
//!    into a model token count `M(all)` with per-encoding weights fitted on test corpora;
//! 2. `windows` evenly spaced windows of `window_bytes` each (cut at whitespace) are
//!    tokenized exactly: `T(samples)`, and the model is evaluated on them: `M(samples)`;
//! 3. estimate = `M(all) × T(samples) / M(samples)`.
//!
//! The samples correct the model's scale for this particular text (random letters, base64,
//! an unusual script), while the full pass sees the text's composition, which evenly spaced
//! samples alone misjudge when a prompt mixes long stretches of different content. Measured
//! error and cost per corpus: `ESTIMATION.md`.

use super::bpe::Tokenizer;
use crate::config::Encoding;

/// Cost bounds of the estimator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EstimateConfig {
    /// Text up to this many bytes (summed over the request's strings) is counted exactly.
    pub exact_limit_bytes: usize,
    /// Number of evenly spaced windows tokenized exactly above the limit.
    pub windows: usize,
    /// Size of each window in bytes (cut at whitespace, so a little more or less).
    pub window_bytes: usize,
}

impl Default for EstimateConfig {
    /// Exact up to 32 KiB (≈ 8k tokens of English); above, 16 windows of 1 KiB.
    fn default() -> Self {
        EstimateConfig {
            exact_limit_bytes: 32 * 1024,
            windows: 16,
            window_bytes: 1024,
        }
    }
}

impl EstimateConfig {
    /// Samples never cover more than the exact limit, and there is at least one window.
    fn normalized(self) -> EstimateConfig {
        let windows = self.windows.max(1);
        let window_bytes = self
            .window_bytes
            .clamp(64, (self.exact_limit_bytes / windows).max(64));
        EstimateConfig {
            exact_limit_bytes: self.exact_limit_bytes,
            windows,
            window_bytes,
        }
    }
}

/// How far a window edge may move to reach whitespace.
const ALIGN_SLACK: usize = 64;

/// Character classes of the model.
const CLASSES: usize = 8;
const ALPHA: usize = 0;
const DIGIT: usize = 1;
const PUNCT: usize = 2;
const SPACE: usize = 3;
const NEWLINE: usize = 4;
const CJK: usize = 5;
const OTHER2: usize = 6;
const OTHER34: usize = 7;

/// Tokens per character of each class, fitted (weighted least squares on relative error) on
/// 2 KiB chunks of the test corpora as they were then, exact counts from tiktoken. The English
/// and code corpora have since been rebuilt from this project's own text; the weights were not
/// refitted (model-only error on the current corpora: `ESTIMATION.md`).
const O200K_WEIGHTS: [f64; CLASSES] = [0.205, 0.949, 0.512, 0.071, 0.772, 0.747, 0.368, 2.397];
const CL100K_WEIGHTS: [f64; CLASSES] = [0.204, 0.977, 0.508, 0.077, 0.740, 1.098, 0.722, 2.775];

/// Per-class character counts of a text.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ClassCounts([u64; CLASSES]);

impl ClassCounts {
    pub fn of(text: &str) -> ClassCounts {
        let mut counts = ClassCounts::default();
        counts.add(text);
        counts
    }

    /// Adds `text`'s characters. One pass; ASCII bytes by table.
    pub fn add(&mut self, text: &str) {
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if b < 0x80 {
                self.0[ASCII_CLASS[usize::from(b)]] += 1;
                i += 1;
                continue;
            }
            let (class, len) = match b {
                0xC0..=0xDF => (OTHER2, 2),
                0xE0..=0xEF => {
                    let c = bytes.get(i + 1).copied().unwrap_or(0);
                    // U+3000–U+9FFF (CJK punctuation, kana, ideographs), U+AC00–U+D7FF
                    // (Hangul), U+F900–U+FAFF and U+FF00–U+FFEF (compatibility, full width).
                    let cjk = matches!(b, 0xE3..=0xE9)
                        || (b == 0xEA && c >= 0xB0)
                        || matches!(b, 0xEB..=0xED)
                        || (b == 0xEF && (matches!(c, 0xA4..=0xAB) || matches!(c, 0xBC..=0xBF)));
                    (if cjk { CJK } else { OTHER34 }, 3)
                }
                0xF0..=0xF7 => (OTHER34, 4),
                _ => {
                    // A continuation byte: cannot start a char in valid UTF-8; skip it.
                    i += 1;
                    continue;
                }
            };
            self.0[class] += 1;
            i += len;
        }
    }

    pub fn merge(&mut self, other: &ClassCounts) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a += b;
        }
    }

    /// The model's token count for these characters.
    pub fn model_tokens(&self, encoding: Encoding) -> f64 {
        let weights = match encoding {
            Encoding::O200k => &O200K_WEIGHTS,
            Encoding::Cl100k => &CL100K_WEIGHTS,
        };
        self.0
            .iter()
            .zip(weights.iter())
            .map(|(&n, w)| n as f64 * w)
            .sum()
    }
}

const ASCII_CLASS: [usize; 128] = {
    let mut t = [PUNCT; 128];
    let mut b = 0;
    while b < 128 {
        t[b] = match b as u8 {
            b'a'..=b'z' | b'A'..=b'Z' => ALPHA,
            b'0'..=b'9' => DIGIT,
            b'\n' | b'\r' => NEWLINE,
            b' ' | b'\t' | 0x0B | 0x0C => SPACE,
            _ => PUNCT,
        };
        b += 1;
    }
    t
};

/// Token count of a request's strings, exact below the limit, estimated above it.
pub fn count_segments<S: AsRef<str>>(tok: &Tokenizer, segments: &[S], cfg: &EstimateConfig) -> u64 {
    let total: usize = segments.iter().map(|s| s.as_ref().len()).sum();
    if total <= cfg.exact_limit_bytes {
        return segments.iter().map(|s| tok.count(s.as_ref()) as u64).sum();
    }
    sampled(tok, segments, total, &cfg.normalized())
}

/// The model alone (no exact tokenization): for a request whose encoding has no tokenizer
/// loaded. Error on the corpora: ESTIMATION.md.
pub fn model_only<S: AsRef<str>>(encoding: Encoding, segments: &[S]) -> u64 {
    let mut counts = ClassCounts::default();
    for s in segments {
        counts.add(s.as_ref());
    }
    counts.model_tokens(encoding).round() as u64
}

/// What the windows of the sampled path saw.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SampleStats {
    /// Exact tokens in the windows.
    pub tokens: u64,
    /// Bytes in the windows.
    pub bytes: u64,
    /// The class model's tokens for the windows.
    pub model: f64,
}

fn sampled<S: AsRef<str>>(
    tok: &Tokenizer,
    segments: &[S],
    total: usize,
    cfg: &EstimateConfig,
) -> u64 {
    let encoding = tok.encoding();
    let mut all = ClassCounts::default();
    for s in segments {
        all.add(s.as_ref());
    }
    let model_all = all.model_tokens(encoding);
    let stats = sample_windows(tok, segments, total, cfg);
    if stats.model <= 0.0 || stats.tokens == 0 {
        return model_all.round() as u64;
    }
    (model_all * stats.tokens as f64 / stats.model).round() as u64
}

/// The alternative measured in ESTIMATION.md: the same windows, extrapolated by bytes only
/// (`total_bytes × window_tokens / window_bytes`), no class model. Exact below the limit.
pub fn count_segments_by_bytes<S: AsRef<str>>(
    tok: &Tokenizer,
    segments: &[S],
    cfg: &EstimateConfig,
) -> u64 {
    let total: usize = segments.iter().map(|s| s.as_ref().len()).sum();
    if total <= cfg.exact_limit_bytes {
        return segments.iter().map(|s| tok.count(s.as_ref()) as u64).sum();
    }
    let stats = sample_windows(tok, segments, total, &cfg.normalized());
    if stats.bytes == 0 {
        return 0;
    }
    (total as f64 * stats.tokens as f64 / stats.bytes as f64).round() as u64
}

/// Tokenizes `cfg.windows` evenly spaced windows of the virtual concatenation of `segments`
/// (`total` bytes): window `k` is centred in the `k`-th of `windows` equal strata, starts at
/// whitespace, and runs on into the following segments until it holds `window_bytes`.
fn sample_windows<S: AsRef<str>>(
    tok: &Tokenizer,
    segments: &[S],
    total: usize,
    cfg: &EstimateConfig,
) -> SampleStats {
    let encoding = tok.encoding();
    // Start offset of each segment in the virtual concatenation.
    let mut starts = Vec::with_capacity(segments.len());
    let mut at = 0usize;
    for s in segments {
        starts.push(at);
        at += s.as_ref().len();
    }
    let mut stats = SampleStats::default();
    let k = cfg.windows;
    for w in 0..k {
        let center = ((2 * w + 1) as u128 * total as u128 / (2 * k) as u128) as usize;
        let start = center.saturating_sub(cfg.window_bytes / 2);
        // The segment holding `start`, and the offset inside it.
        let mut seg = starts.partition_point(|&s| s <= start).saturating_sub(1);
        let mut offset = start - starts.get(seg).copied().unwrap_or(0);
        let mut budget = cfg.window_bytes;
        while budget > 0 && seg < segments.len() {
            let text = segments[seg].as_ref();
            let from = align_forward(text, offset);
            let to = if text.len() - from > budget {
                align_forward(text, from + budget)
            } else {
                text.len()
            };
            if let Some(piece) = text.get(from..to) {
                stats.tokens += tok.count(piece) as u64;
                stats.bytes += piece.len() as u64;
                stats.model += ClassCounts::of(piece).model_tokens(encoding);
                budget = budget.saturating_sub(piece.len().max(1));
            }
            offset = 0;
            seg += 1;
        }
    }
    stats
}

/// The first whitespace at or after `at` (within [`ALIGN_SLACK`] bytes), else the next char
/// boundary. Windows then start with a space-led piece, as the full tokenization would.
fn align_forward(text: &str, at: usize) -> usize {
    if at == 0 || at >= text.len() {
        return at.min(text.len());
    }
    let mut at = at;
    while !text.is_char_boundary(at) {
        at += 1;
    }
    let mut end = (at + ALIGN_SLACK).min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    match text[at..end].find(|c: char| c.is_whitespace()) {
        Some(i) => at + i,
        None => at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_counts() {
        let c = ClassCounts::of("Ab1 ,\n中あ한é😀€");
        assert_eq!(c.0, [2, 1, 1, 1, 1, 3, 1, 2]);
    }

    #[test]
    fn align() {
        let t = "hello world, 你好世界";
        assert_eq!(align_forward(t, 2), 5);
        assert_eq!(align_forward(t, 0), 0);
        assert_eq!(align_forward(t, 100), t.len());
        // Inside a CJK run with no whitespace: next char boundary.
        let at = align_forward(t, 15);
        assert!(t.is_char_boundary(at) && at >= 15);
    }

    #[test]
    fn normalized_config() {
        let c = EstimateConfig {
            exact_limit_bytes: 4096,
            windows: 0,
            window_bytes: 1 << 20,
        }
        .normalized();
        assert_eq!((c.windows, c.window_bytes), (1, 4096));
    }
}
