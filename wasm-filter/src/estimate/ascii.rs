//! The pre-tokenizer's fast path: where a piece is decided by ASCII bytes alone, its end is
//! computed here from a byte-class table instead of by the split regex, which costs more than
//! half of an English prompt's exact count (and more in the wasm VM).
//!
//! Each function follows its encoding's split pattern alternative by alternative, with the
//! regex's leftmost-first semantics (the first alternative that matches wins, quantifiers
//! greedy with backtracking), and returns `None` ("ask the regex") as soon as it would have to
//! look at a non-ASCII character whose class could change the answer: a non-ASCII letter,
//! digit, mark, space or punctuation continues or ends a piece the way only the Unicode tables
//! know. ASCII classes are disjoint here: upper-case and lower-case letters (the `Lm`, `Lo`
//! and `M` classes the o200k pattern accepts in both are all non-ASCII), digits, `\r` `\n`,
//! the other white space (space, tab, vertical tab, form feed), and everything else.
//! The tests compare it with the regex at every offset of random and real texts.

use crate::config::Encoding;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Class {
    Upper,
    Lower,
    Digit,
    /// `\r` or `\n`.
    Newline,
    /// The rest of ASCII white space: space, `\t`, `\x0B`, `\x0C`.
    Space,
    /// ASCII punctuation, symbols and control characters: not a letter, digit or space.
    Other,
    NonAscii,
}

const fn class_of(b: u8) -> Class {
    match b {
        b'A'..=b'Z' => Class::Upper,
        b'a'..=b'z' => Class::Lower,
        b'0'..=b'9' => Class::Digit,
        b'\r' | b'\n' => Class::Newline,
        b' ' | b'\t' | 0x0B | 0x0C => Class::Space,
        0x80.. => Class::NonAscii,
        _ => Class::Other,
    }
}

static CLASS: [Class; 256] = {
    let mut table = [Class::Other; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = class_of(b as u8);
        b += 1;
    }
    table
};

/// The non-ASCII character at the position we must look at: only the regex can tell.
struct AskRegex;

type Step = Result<usize, AskRegex>;

/// The end of the piece starting `text` (non-empty), or `None` if the regex must decide.
pub(super) fn piece_end(encoding: Encoding, text: &[u8]) -> Option<usize> {
    match encoding {
        Encoding::O200k => o200k(text).ok(),
        Encoding::Cl100k => cl100k(text).ok(),
    }
}

fn class(text: &[u8], at: usize) -> Option<Class> {
    text.get(at).map(|&b| CLASS[usize::from(b)])
}

/// The end of the run of `want` bytes from `at`. A run that stops at a non-ASCII character
/// asks the regex: that character may belong to the run's Unicode class.
fn run(text: &[u8], mut at: usize, want: impl Fn(Class) -> bool) -> Step {
    while let Some(c) = class(text, at) {
        if want(c) {
            at += 1;
        } else if c == Class::NonAscii {
            return Err(AskRegex);
        } else {
            break;
        }
    }
    Ok(at)
}

/// `[^\r\n\p{L}\p{N}]`: the optional one-character prefix of a word.
fn is_word_prefix(c: Class) -> bool {
    matches!(c, Class::Space | Class::Other)
}

fn is_space(c: Class) -> bool {
    matches!(c, Class::Space | Class::Newline)
}

/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)` at `at`: its length, 0 if none.
fn contraction(text: &[u8], at: usize) -> Step {
    if text.get(at) != Some(&b'\'') {
        return Ok(0);
    }
    let letter = |i: usize| match text.get(at + i) {
        // Case folding maps some non-ASCII letters onto these (`ſ` onto `s`).
        Some(&b) if b >= 0x80 => Err(AskRegex),
        b => Ok(b.map(u8::to_ascii_lowercase)),
    };
    Ok(match letter(1)? {
        Some(b's' | b't' | b'm' | b'd') => 2,
        Some(first @ (b'r' | b'v' | b'l')) => {
            let second = if first == b'l' { b'l' } else { b'e' };
            if letter(2)? == Some(second) { 3 } else { 0 }
        }
        _ => 0,
    })
}

/// `\p{N}{1,3}` from 0, `text[0]` a digit.
fn digits(text: &[u8]) -> Step {
    let mut end = 1;
    while end < 3 {
        match class(text, end) {
            Some(Class::Digit) => end += 1,
            Some(Class::NonAscii) => return Err(AskRegex),
            _ => break,
        }
    }
    Ok(end)
}

/// ` ?[^\s\p{L}\p{N}]+` followed by the run of `tail` bytes (`[\r\n]*` or `[\r\n/]*`, which
/// no non-ASCII character can continue). `None` if the alternative does not match.
fn punctuation(text: &[u8], tail: impl Fn(u8) -> bool) -> Result<Option<usize>, AskRegex> {
    let start = usize::from(text[0] == b' ');
    let end = run(text, start, |c| c == Class::Other)?;
    if end == start {
        return Ok(None);
    }
    Ok(Some(
        end + text[end..].iter().take_while(|&&b| tail(b)).count(),
    ))
}

/// The white-space alternatives shared by both patterns, in their order:
/// `\s*[\r\n]+ | \s+$ | \s+(?!\S) | \s+`, `text[0]` white space. (`\s+(?!\S)` is run as
/// `\s+\s` minus its last character, as `bpe.rs` does.)
fn whitespace(text: &[u8]) -> Step {
    let end = run(text, 0, is_space)?;
    // `\s*` gives back characters until `[\r\n]+` can match: up to the run's last newline.
    if let Some(last) = text[..end].iter().rposition(|&b| b == b'\r' || b == b'\n') {
        return Ok(last + 1);
    }
    Ok(if end == text.len() || end == 1 {
        end
    } else {
        end - 1
    })
}

/// `o200k_base`: `[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|…)?`
/// `| [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|…)?`
/// `| \p{N}{1,3} | ?[^\s\p{L}\p{N}]+[\r\n/]* | \s*[\r\n]+ | \s+(?!\S) | \s+`
fn o200k(text: &[u8]) -> Step {
    let first = class(text, 0).ok_or(AskRegex)?;
    if first == Class::NonAscii {
        return Err(AskRegex);
    }
    // The word alternatives try the prefix first, then none.
    let starts: &[usize] = if is_word_prefix(first) { &[1, 0] } else { &[0] };
    // Upper-case run, then at least one lower-case letter.
    for &start in starts {
        let upper = run(text, start, |c| c == Class::Upper)?;
        if class(text, upper) == Some(Class::Lower) {
            let end = run(text, upper, |c| c == Class::Lower)?;
            return Ok(end + contraction(text, end)?);
        }
    }
    // At least one upper-case letter (the lower-case run is then empty).
    for &start in starts {
        let upper = run(text, start, |c| c == Class::Upper)?;
        if upper > start {
            return Ok(upper + contraction(text, upper)?);
        }
    }
    if first == Class::Digit {
        return digits(text);
    }
    if let Some(end) = punctuation(text, |b| matches!(b, b'\r' | b'\n' | b'/'))? {
        return Ok(end);
    }
    if is_space(first) {
        return whitespace(text);
    }
    Err(AskRegex) // unreachable: every ASCII class is handled above
}

/// `cl100k_base`: `(?i:'s|'t|'re|'ve|'m|'ll|'d) | [^\r\n\p{L}\p{N}]?\p{L}+ | \p{N}{1,3}`
/// `| ?[^\s\p{L}\p{N}]+[\r\n]* | \s*[\r\n]+ | \s+(?!\S) | \s+`
fn cl100k(text: &[u8]) -> Step {
    let first = class(text, 0).ok_or(AskRegex)?;
    if first == Class::NonAscii {
        return Err(AskRegex);
    }
    let apostrophe = contraction(text, 0)?;
    if apostrophe > 0 {
        return Ok(apostrophe);
    }
    let letter = |c| matches!(c, Class::Upper | Class::Lower);
    // Without the prefix the word would have to start at a non-letter: only one try.
    let start = usize::from(is_word_prefix(first));
    let end = run(text, start, letter)?;
    if end > start {
        return Ok(end);
    }
    if first == Class::Digit {
        return digits(text);
    }
    if let Some(end) = punctuation(text, |b| matches!(b, b'\r' | b'\n'))? {
        return Ok(end);
    }
    if is_space(first) {
        return whitespace(text);
    }
    Err(AskRegex)
}
