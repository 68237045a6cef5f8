//! Regenerates `assets/{o200k_base,cl100k_base}.bpe` from tiktoken-rs's vocabularies:
//! `cargo run -p wasm-filter --example gen_vocab`.
//!
//! Format: for each rank 0, 1, 2, … in order, one length byte then the token's bytes. Special
//! tokens are not included (user text is counted as ordinary text).

use std::io::Write;

fn dump(name: &str, bpe: &tiktoken_rs::CoreBPE) -> std::io::Result<()> {
    let specials = bpe.special_tokens();
    let mut out = Vec::new();
    let mut rank = 0u32;
    while let Ok(bytes) = bpe.decode_bytes(&[rank]) {
        if specials.iter().any(|s| s.as_bytes() == bytes.as_slice()) {
            break;
        }
        let len = u8::try_from(bytes.len()).map_err(std::io::Error::other)?;
        out.push(len);
        out.extend_from_slice(&bytes);
        rank += 1;
    }
    let path = format!("{}/assets/{name}.bpe", env!("CARGO_MANIFEST_DIR"));
    std::fs::File::create(&path)?.write_all(&out)?;
    println!("{path}: {rank} tokens, {} bytes", out.len());
    Ok(())
}

fn main() -> std::io::Result<()> {
    let o200k = tiktoken_rs::o200k_base().map_err(std::io::Error::other)?;
    dump("o200k_base", &o200k)?;
    let cl100k = tiktoken_rs::cl100k_base().map_err(std::io::Error::other)?;
    dump("cl100k_base", &cl100k)
}
