//! Exact byte-pair encoding for OpenAI's `o200k_base` and `cl100k_base`, lean enough to load
//! into every Envoy worker's wasm VM.
//!
//! * Vocabularies: `assets/*.bpe` (each rank's bytes in rank order, generated from tiktoken-rs by
//!   `examples/gen_vocab.rs`), embedded with `include_bytes!` and indexed once at load into a
//!   hash map that borrows the embedded bytes (no per-token allocation).
//! * Pre-tokenization: OpenAI's split regexes on `regex-automata` (linear time, no
//!   backtracking). The negative look-ahead `\s+(?!\S)` is emulated as in GitHub's `bpe-openai`
//!   (MIT): a second pattern `\s+\s` whose last character is given back.
//! * Merging: tiktoken's algorithm (MIT): repeatedly merge the adjacent pair with the lowest
//!   rank; a heap-based variant for long pieces keeps it O(n log n).
//!
//! The tests check this against tiktoken-rs token for token. Special tokens (`<|endoftext|>`…)
//! are counted as ordinary text, as the provider does for text inside messages.

use std::collections::BinaryHeap;
use std::fmt;

use regex_automata::meta::Regex;
use regex_automata::{Anchored, Input};
use rustc_hash::FxHashMap;

use crate::config::Encoding;

/// A token id.
pub type Rank = u32;

static O200K_VOCAB: &[u8] = include_bytes!("../../assets/o200k_base.bpe");
static CL100K_VOCAB: &[u8] = include_bytes!("../../assets/cl100k_base.bpe");
const O200K_TOKENS: usize = 199_998;
const CL100K_TOKENS: usize = 100_256;

const CL100K_PATTERN: &str = concat!(
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}",
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+$",
);
const O200K_PATTERN: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+$",
);
/// `\s+(?!\S)`: match `\s+\s` and give the last character back.
const LOOKAHEAD_PATTERN: &str = r"\s+\s";
const WHITESPACE_PATTERN: &str = r"\s+";
/// Which of the three patterns ends in one look-ahead character.
const LOOKAHEAD: [bool; 3] = [false, true, false];

/// Pieces longer than this use the heap-based merge (as tiktoken does).
const LARGE_PIECE: usize = 100;

/// The tokenizer could not be built (a corrupt embedded vocabulary: a build problem, never an
/// input problem).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LoadError {
    #[error("{encoding}: vocabulary is corrupt at byte {at}")]
    CorruptVocabulary { encoding: &'static str, at: usize },
    #[error("{encoding}: vocabulary has {found} tokens, expected {expected}")]
    TokenCount {
        encoding: &'static str,
        found: usize,
        expected: usize,
    },
    #[error("{encoding}: pre-tokenizer regex: {message}")]
    Regex {
        encoding: &'static str,
        message: String,
    },
}

/// The tiktoken name of an encoding.
pub fn encoding_name(encoding: Encoding) -> &'static str {
    match encoding {
        Encoding::O200k => "o200k_base",
        Encoding::Cl100k => "cl100k_base",
    }
}

/// An exact BPE tokenizer for one encoding. Build it once per VM ([`Tokenizer::load`]); counting
/// is `&self` and allocation-light.
pub struct Tokenizer {
    encoding: Encoding,
    ranks: FxHashMap<&'static [u8], Rank>,
    /// Ranks of all two-byte tokens by `b0 << 8 | b1` (`Rank::MAX`: not a token): the first
    /// step of every merge looks up every adjacent byte pair.
    pairs: Box<[Rank]>,
    split: Regex,
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer")
            .field("encoding", &encoding_name(self.encoding))
            .field("tokens", &self.ranks.len())
            .finish()
    }
}

impl Tokenizer {
    /// Indexes the embedded vocabulary and compiles the split regex. Takes tens of
    /// milliseconds (see ESTIMATION.md): call it when the VM starts, never per request.
    pub fn load(encoding: Encoding) -> Result<Tokenizer, LoadError> {
        let name = encoding_name(encoding);
        let (vocab, expected, pattern) = match encoding {
            Encoding::O200k => (O200K_VOCAB, O200K_TOKENS, O200K_PATTERN),
            Encoding::Cl100k => (CL100K_VOCAB, CL100K_TOKENS, CL100K_PATTERN),
        };
        let mut ranks = FxHashMap::with_capacity_and_hasher(expected, Default::default());
        let mut at = 0usize;
        let mut rank: Rank = 0;
        while at < vocab.len() {
            let len = usize::from(vocab[at]);
            let token = vocab.get(at + 1..at + 1 + len).filter(|t| !t.is_empty());
            let Some(token) = token else {
                return Err(LoadError::CorruptVocabulary { encoding: name, at });
            };
            if ranks.insert(token, rank).is_some() {
                return Err(LoadError::CorruptVocabulary { encoding: name, at });
            }
            at += 1 + len;
            rank += 1;
        }
        if ranks.len() != expected {
            return Err(LoadError::TokenCount {
                encoding: name,
                found: ranks.len(),
                expected,
            });
        }
        let mut pairs = vec![Rank::MAX; 1 << 16].into_boxed_slice();
        for (token, &rank) in &ranks {
            if let [a, b] = token {
                pairs[usize::from(*a) << 8 | usize::from(*b)] = rank;
            }
        }
        let split =
            Regex::new_many(&[pattern, LOOKAHEAD_PATTERN, WHITESPACE_PATTERN]).map_err(|e| {
                LoadError::Regex {
                    encoding: name,
                    message: e.to_string(),
                }
            })?;
        Ok(Tokenizer {
            encoding,
            ranks,
            pairs,
            split,
        })
    }

    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Number of tokens in the vocabulary (special tokens excluded).
    pub fn vocabulary_size(&self) -> usize {
        self.ranks.len()
    }

    /// Exact token count of `text` (what tiktoken's `encode_ordinary(text).len()` returns).
    /// Cost is linear-ish in `text.len()`; callers on the request path go through the bounded
    /// estimator instead.
    pub fn count(&self, text: &str) -> usize {
        self.pieces(text)
            .map(|piece| self.count_piece(piece.as_bytes()))
            .sum()
    }

    /// The token ids of `text` (tiktoken's `encode_ordinary`).
    pub fn encode(&self, text: &str) -> Vec<Rank> {
        let mut out = Vec::with_capacity(text.len() / 3);
        for piece in self.pieces(text) {
            let piece = piece.as_bytes();
            if let Some(&rank) = self.ranks.get(piece) {
                out.push(rank);
                continue;
            }
            let bounds = self.merge(piece);
            for w in bounds.windows(2) {
                // Every merged part is a token by construction (single bytes always are).
                out.push(self.rank(&piece[w[0]..w[1]]).unwrap_or(Rank::MAX));
            }
        }
        out
    }

    /// The pre-tokenized pieces of `text`.
    pub fn pieces<'a>(&'a self, text: &'a str) -> Pieces<'a> {
        Pieces {
            split: &self.split,
            text,
            at: 0,
        }
    }

    fn rank(&self, bytes: &[u8]) -> Option<Rank> {
        if let [a, b] = bytes {
            let r = self
                .pairs
                .get(usize::from(*a) << 8 | usize::from(*b))
                .copied();
            return r.filter(|&r| r != Rank::MAX);
        }
        self.ranks.get(bytes).copied()
    }

    fn count_piece(&self, piece: &[u8]) -> usize {
        if piece.len() <= 1 || self.ranks.contains_key(piece) {
            return usize::from(!piece.is_empty());
        }
        self.merge(piece).len().saturating_sub(1)
    }

    /// Token boundaries of one piece (first 0, last `piece.len()`).
    fn merge(&self, piece: &[u8]) -> Vec<usize> {
        if piece.len() < 2 {
            return vec![0, piece.len()];
        }
        if piece.len() < LARGE_PIECE {
            self.merge_small(piece)
        } else {
            self.merge_large(piece)
        }
    }

    /// tiktoken's `_byte_pair_merge`: O(n·m), fast for the short pieces that dominate.
    fn merge_small(&self, piece: &[u8]) -> Vec<usize> {
        let rank_of = |parts: &[(usize, Rank)], i: usize| -> Rank {
            if i + 3 < parts.len() {
                self.rank(&piece[parts[i].0..parts[i + 3].0])
                    .unwrap_or(Rank::MAX)
            } else {
                Rank::MAX
            }
        };
        let mut parts: Vec<(usize, Rank)> = Vec::with_capacity(piece.len() + 1);
        let mut min = (Rank::MAX, usize::MAX);
        for i in 0..piece.len() - 1 {
            let rank = self.rank(&piece[i..i + 2]).unwrap_or(Rank::MAX);
            if rank < min.0 {
                min = (rank, i);
            }
            parts.push((i, rank));
        }
        parts.push((piece.len() - 1, Rank::MAX));
        parts.push((piece.len(), Rank::MAX));
        while min.0 != Rank::MAX {
            let i = min.1;
            if i > 0 {
                parts[i - 1].1 = rank_of(&parts, i - 1);
            }
            parts[i].1 = rank_of(&parts, i);
            parts.remove(i + 1);
            min = (Rank::MAX, usize::MAX);
            for (i, &(_, rank)) in parts[..parts.len() - 1].iter().enumerate() {
                if rank < min.0 {
                    min = (rank, i);
                }
            }
        }
        parts.into_iter().map(|(start, _)| start).collect()
    }

    /// tiktoken's `_byte_pair_merge_large`: a heap of candidate merges with lazy invalidation.
    fn merge_large(&self, piece: &[u8]) -> Vec<usize> {
        struct State {
            prev: usize,
            end: usize,
            next_end: usize,
            next_rank: Rank,
        }
        #[derive(PartialEq, Eq)]
        struct Merge {
            start: usize,
            rank: Rank,
        }
        impl Ord for Merge {
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                other
                    .rank
                    .cmp(&self.rank)
                    .then_with(|| other.start.cmp(&self.start))
            }
        }
        impl PartialOrd for Merge {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }

        let n = piece.len();
        let mut state: Vec<State> = (0..n)
            .map(|i| State {
                prev: i.wrapping_sub(1),
                end: i + 1,
                next_end: i + 2,
                next_rank: Rank::MAX,
            })
            .collect();
        let mut heap = BinaryHeap::with_capacity(n);
        for (i, s) in state.iter_mut().enumerate().take(n - 1) {
            if let Some(rank) = self.rank(&piece[i..i + 2]) {
                heap.push(Merge { start: i, rank });
                s.next_rank = rank;
            }
        }
        let potential = |state: &mut [State], heap: &mut BinaryHeap<Merge>, start, next_end| {
            let s: &mut State = &mut state[start];
            s.next_end = next_end;
            s.next_rank = Rank::MAX;
            if next_end <= n
                && let Some(rank) = self.rank(&piece[start..next_end])
            {
                heap.push(Merge { start, rank });
                s.next_rank = rank;
            }
        };
        while let Some(left) = heap.pop() {
            if left.rank != state[left.start].next_rank {
                continue; // invalidated
            }
            let left_start = left.start;
            let right_start = state[left_start].end;
            let right_end = state[left_start].next_end;
            let right_next_end = state[right_start].next_end;
            state[left_start].end = right_end;
            potential(&mut state, &mut heap, left_start, right_next_end);
            if right_end < n {
                state[right_end].prev = left_start;
            }
            if left_start > 0 {
                let prev_start = state[left_start].prev;
                potential(&mut state, &mut heap, prev_start, right_end);
            }
            state[right_start].next_rank = Rank::MAX;
        }
        let mut bounds = vec![0];
        let mut i = 0;
        while i < n {
            i = state[i].end;
            bounds.push(i);
        }
        bounds
    }
}

/// Iterator over the pre-tokenized pieces of a text. Never stalls: a position no pattern
/// matches (impossible with these patterns) yields one character.
pub struct Pieces<'a> {
    split: &'a Regex,
    text: &'a str,
    at: usize,
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.text.get(self.at..).filter(|r| !r.is_empty())?;
        let one_char = rest.chars().next().map_or(rest.len(), char::len_utf8);
        let input = Input::new(rest).anchored(Anchored::Yes);
        let mut end = match self.split.find(input) {
            Some(m) if m.end() > 0 => {
                let mut end = m.end();
                if LOOKAHEAD.get(m.pattern().as_usize()) == Some(&true)
                    && let Some(last) = rest[..end].chars().next_back()
                    && end > last.len_utf8()
                {
                    end -= last.len_utf8();
                }
                end
            }
            _ => one_char,
        };
        if !rest.is_char_boundary(end) {
            end = one_char;
        }
        self.at += end;
        Some(&rest[..end])
    }
}
