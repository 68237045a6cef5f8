//! Generates the data `estimate::bpe` embeds, from the tiktoken-rs crate (a build dependency
//! only: nothing of it is linked into the filter). Writes into `OUT_DIR`:
//!
//! * `o200k_base.bpe`, `cl100k_base.bpe`: the vocabularies in a compact form: for each rank
//!   0, 1, 2, … in order, one length byte, then the token's bytes. Special tokens are left out
//!   (user text is counted as ordinary text).
//! * `o200k_pattern.txt`: the pre-tokenization pattern of `o200k_base` (tiktoken-rs's
//!   `O200K_BASE_PAT_STR`), rewritten for `regex-automata`, which has no look-around: see
//!   [`o200k_pattern`].

use std::error::Error;
use std::path::Path;

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo::rerun-if-changed=build.rs");
    let out = std::env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?;
    let out = Path::new(&out);
    std::fs::write(
        out.join("o200k_base.bpe"),
        vocabulary(&tiktoken_rs::o200k_base()?)?,
    )?;
    std::fs::write(
        out.join("cl100k_base.bpe"),
        vocabulary(&tiktoken_rs::cl100k_base()?)?,
    )?;
    std::fs::write(
        out.join("o200k_pattern.txt"),
        o200k_pattern(tiktoken_rs::O200K_BASE_PAT_STR)?,
    )?;
    Ok(())
}

/// Ordinary tokens in rank order (ranks are dense from 0 up to the first special token).
fn vocabulary(bpe: &tiktoken_rs::CoreBPE) -> Result<Vec<u8>, Box<dyn Error>> {
    let specials = bpe.special_tokens();
    let mut table = Vec::with_capacity(2 << 20);
    for rank in 0.. {
        let Ok(token) = bpe.decode_bytes(&[rank]) else {
            break;
        };
        if specials.iter().any(|s| s.as_bytes() == token) {
            break;
        }
        let len = u8::try_from(token.len())
            .ok()
            .filter(|&len| len > 0)
            .ok_or_else(|| {
                format!(
                    "rank {rank}: {} bytes do not fit a length byte",
                    token.len()
                )
            })?;
        table.push(len);
        table.extend_from_slice(&token);
    }
    Ok(table)
}

/// The o200k pattern ends in the alternatives `\s+(?!\S)|\s+`. The tokenizer runs them as two
/// patterns of their own after this one (the look-ahead emulated by `\s+\s` minus its last
/// character, see `bpe.rs`), which needs `\s+$` here: at the end of the text the emulation
/// cannot give a character back, and `\s+(?!\S)` takes the whole run.
fn o200k_pattern(pattern: &str) -> Result<String, Box<dyn Error>> {
    let head = pattern
        .strip_suffix(r"|\s+(?!\S)|\s+")
        .filter(|head| !head.contains("(?!") && !head.contains("(?="))
        .ok_or("tiktoken-rs's O200K_BASE_PAT_STR changed shape: update build.rs and bpe.rs")?;
    Ok(format!(r"{head}|\s+$"))
}
