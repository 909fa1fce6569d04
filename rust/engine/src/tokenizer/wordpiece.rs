//! WordPiece (BERT) tokenizer: the Hugging Face `BertNormalizer` + `BertPreTokenizer` +
//! `WordPiece` pipeline, over the vocabulary as llama.cpp stores it in GGUF (tokenizer model
//! `bert`).
//!
//! GGUF vocabulary ("phantom space", llama.cpp `convert_hf_to_gguf.py` `BertModel.set_vocab`):
//! a word-start piece `word` is stored as `"\u{2581}word"`, a continuation piece `##iece` as
//! `"iece"`, bracketed tokens (`[CLS]`, `[unused0]`) unchanged. So the first piece of a word is
//! looked up with the `▁` prefix and every following piece bare, which is exactly HF's
//! "first piece plain, later pieces with `##`" on the original vocabulary.
//!
//! Pipeline for one text fragment (special tokens are cut out by the caller first; `[CLS]` /
//! `[SEP]` are added by the caller too), matching HF `tokenizers`:
//! 1. clean text: drop U+0000, U+FFFD and control/format characters (Cc, Cf, Co; but `\t`,
//!    `\n`, `\r` are whitespace), map whitespace to a space;
//! 2. put spaces around CJK ideographs;
//! 3. if `strip_accents`: NFD, then drop non-spacing marks (Mn);
//! 4. if `lowercase`: `char::to_lowercase` (after accent stripping, as HF does);
//! 5. split on whitespace, then split every punctuation character (ASCII punctuation and
//!    Unicode P*) into its own word;
//! 6. per word: more than 100 characters -> `[UNK]`; else greedy longest-match-first pieces,
//!    and if some position matches nothing the whole word becomes `[UNK]`.
//!
//! The category tables below are generated from the `unicode_categories` crate 0.1.1 that HF
//! `tokenizers` uses (so the same characters count as punctuation / marks / control), by
//! collapsing its `MARK_NONSPACING`, `PUNCTUATION_*`, `OTHER_CONTROL` and `OTHER_FORMAT` tables
//! into ranges.

use std::collections::HashMap;

use unicode_normalization::UnicodeNormalization;

/// The GGUF vocabulary's word-start marker (U+2581).
pub const PHANTOM_SPACE: char = '\u{2581}';

/// HF `WordPiece.max_input_chars_per_word`.
pub const MAX_INPUT_CHARS_PER_WORD: usize = 100;

#[derive(Clone, Debug)]
pub struct WordPieceTokenizer {
    /// Token text (phantom-space form) -> id.
    ids: HashMap<String, u32>,
    unk: u32,
    lowercase: bool,
    strip_accents: bool,
    /// Longest token in characters: no lookup of a longer candidate can succeed.
    max_token_chars: usize,
}

impl WordPieceTokenizer {
    /// `tokens[id]` in GGUF (phantom-space) form. `unk` is the `[UNK]` id; if None, the token
    /// `[UNK]` is looked up. When two ids share a text the lower id wins.
    pub fn new(
        tokens: &[String],
        unk: Option<u32>,
        lowercase: bool,
        strip_accents: bool,
    ) -> Result<Self, String> {
        if tokens.is_empty() {
            return Err("WordPiece vocabulary is empty".into());
        }
        if u32::try_from(tokens.len()).is_err() {
            return Err(format!(
                "WordPiece vocabulary has too many tokens ({})",
                tokens.len()
            ));
        }
        let mut ids = HashMap::with_capacity(tokens.len());
        let mut max_token_chars = 0;
        for (i, t) in tokens.iter().enumerate() {
            if t.is_empty() {
                continue;
            }
            ids.entry(t.clone()).or_insert(i as u32);
            max_token_chars = max_token_chars.max(t.chars().count());
        }
        let unk = match unk {
            Some(u) if (u as usize) < tokens.len() => u,
            Some(u) => {
                return Err(format!(
                    "unknown-token id {u} is out of range for a vocabulary of {}",
                    tokens.len()
                ))
            }
            None => *ids
                .get("[UNK]")
                .ok_or("WordPiece needs an unknown token: no unknown_token_id and no [UNK]")?,
        };
        Ok(WordPieceTokenizer {
            ids,
            unk,
            lowercase,
            strip_accents,
            max_token_chars,
        })
    }

    pub fn unk(&self) -> u32 {
        self.unk
    }

    /// The text a normal (non-special) token decodes to: llama.cpp replaces the phantom space
    /// with a space (`▁word` -> `" word"`; continuation pieces are unchanged).
    pub fn token_piece(token_text: &str) -> String {
        token_text.replace(PHANTOM_SPACE, " ")
    }

    /// Encode one text fragment (no special tokens added), appending ids to `out`.
    pub fn encode_fragment(&self, text: &str, out: &mut Vec<u32>) {
        let normalized = self.normalize(text);
        let mut word = String::new();
        let mut key = String::new();
        for c in normalized.chars() {
            if c.is_whitespace() {
                self.encode_word(&word, &mut key, out);
                word.clear();
            } else if is_bert_punctuation(c) {
                self.encode_word(&word, &mut key, out);
                word.clear();
                word.push(c);
                self.encode_word(&word, &mut key, out);
                word.clear();
            } else {
                word.push(c);
            }
        }
        self.encode_word(&word, &mut key, out);
    }

    /// Steps 1-4 of the pipeline (HF `BertNormalizer`).
    pub fn normalize(&self, text: &str) -> String {
        let mut s = String::with_capacity(text.len() + 8);
        for c in text.chars() {
            if c == '\0' || c == '\u{FFFD}' || is_control(c) {
                continue;
            }
            if is_bert_whitespace(c) {
                s.push(' ');
            } else if is_chinese_char(c) {
                s.push(' ');
                s.push(c);
                s.push(' ');
            } else {
                s.push(c);
            }
        }
        if self.strip_accents {
            s = s
                .chars()
                .nfd()
                .filter(|&c| !is_mark_nonspacing(c))
                .collect();
        }
        if self.lowercase {
            s = s.chars().flat_map(char::to_lowercase).collect();
        }
        s
    }

    /// Greedy longest-match-first WordPiece over one pre-tokenized word.
    fn encode_word(&self, word: &str, key: &mut String, out: &mut Vec<u32>) {
        if word.is_empty() {
            return;
        }
        // Char boundaries (byte offsets), including the end.
        let bounds: Vec<usize> = word
            .char_indices()
            .map(|(i, _)| i)
            .chain(std::iter::once(word.len()))
            .collect();
        let n_chars = bounds.len() - 1;
        if n_chars > MAX_INPUT_CHARS_PER_WORD {
            out.push(self.unk);
            return;
        }
        let mark = out.len();
        let mut start = 0;
        while start < n_chars {
            // The first piece carries the phantom space, which counts as one char of the token.
            let budget = if start == 0 {
                self.max_token_chars.saturating_sub(1)
            } else {
                self.max_token_chars
            };
            let mut end = n_chars.min(start + budget);
            let mut found = None;
            while end > start {
                key.clear();
                if start == 0 {
                    key.push(PHANTOM_SPACE);
                }
                key.push_str(&word[bounds[start]..bounds[end]]);
                if let Some(&id) = self.ids.get(key.as_str()) {
                    found = Some(id);
                    break;
                }
                end -= 1;
            }
            match found {
                Some(id) => {
                    out.push(id);
                    start = end;
                }
                None => {
                    out.truncate(mark);
                    out.push(self.unk);
                    return;
                }
            }
        }
    }
}

/// HF `bert.rs` `is_whitespace`: `\t`, `\n`, `\r` and Unicode White_Space.
fn is_bert_whitespace(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || c.is_whitespace()
}

/// HF `bert.rs` `is_control`: Cc, Cf, Co except `\t`, `\n`, `\r` (which are whitespace).
fn is_control(c: char) -> bool {
    if matches!(c, '\t' | '\n' | '\r') {
        return false;
    }
    let cp = c as u32;
    in_table(cp, CONTROL_FORMAT)
        || (0xE000..=0xF8FF).contains(&cp)
        || (0xF0000..=0xFFFFD).contains(&cp)
        || (0x100000..=0x10FFFD).contains(&cp)
}

/// HF `is_bert_punc`: ASCII punctuation or Unicode P*.
fn is_bert_punctuation(c: char) -> bool {
    c.is_ascii_punctuation() || in_table(c as u32, PUNCTUATION)
}

fn is_mark_nonspacing(c: char) -> bool {
    in_table(c as u32, MARK_NONSPACING)
}

/// HF `is_chinese_char` (the CJK Unified Ideographs blocks; `0x2B920` start as in HF's code).
fn is_chinese_char(c: char) -> bool {
    matches!(c as u32,
        0x4E00..=0x9FFF
        | 0x3400..=0x4DBF
        | 0x20000..=0x2A6DF
        | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F
        | 0x2B920..=0x2CEAF
        | 0xF900..=0xFAFF
        | 0x2F800..=0x2FA1F)
}

fn in_table(cp: u32, table: &[(u32, u32)]) -> bool {
    table
        .binary_search_by(|&(lo, hi)| {
            if hi < cp {
                std::cmp::Ordering::Less
            } else if lo > cp {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// General category Mn.
static MARK_NONSPACING: &[(u32, u32)] = &[
    (0x300, 0x36F),
    (0x483, 0x487),
    (0x591, 0x5BD),
    (0x5BF, 0x5BF),
    (0x5C1, 0x5C2),
    (0x5C4, 0x5C5),
    (0x5C7, 0x5C7),
    (0x610, 0x61A),
    (0x64B, 0x65F),
    (0x670, 0x670),
    (0x6D6, 0x6DC),
    (0x6DF, 0x6E4),
    (0x6E7, 0x6E8),
    (0x6EA, 0x6ED),
    (0x711, 0x711),
    (0x730, 0x74A),
    (0x7A6, 0x7B0),
    (0x7EB, 0x7F3),
    (0x816, 0x819),
    (0x81B, 0x823),
    (0x825, 0x827),
    (0x829, 0x82D),
    (0x859, 0x85B),
    (0x8E3, 0x902),
    (0x93A, 0x93A),
    (0x93C, 0x93C),
    (0x941, 0x948),
    (0x94D, 0x94D),
    (0x951, 0x957),
    (0x962, 0x963),
    (0x981, 0x981),
    (0x9BC, 0x9BC),
    (0x9C1, 0x9C4),
    (0x9CD, 0x9CD),
    (0x9E2, 0x9E3),
    (0xA01, 0xA02),
    (0xA3C, 0xA3C),
    (0xA41, 0xA42),
    (0xA47, 0xA48),
    (0xA4B, 0xA4D),
    (0xA51, 0xA51),
    (0xA70, 0xA71),
    (0xA75, 0xA75),
    (0xA81, 0xA82),
    (0xABC, 0xABC),
    (0xAC1, 0xAC5),
    (0xAC7, 0xAC8),
    (0xACD, 0xACD),
    (0xAE2, 0xAE3),
    (0xB01, 0xB01),
    (0xB3C, 0xB3C),
    (0xB3F, 0xB3F),
    (0xB41, 0xB44),
    (0xB4D, 0xB4D),
    (0xB56, 0xB56),
    (0xB62, 0xB63),
    (0xB82, 0xB82),
    (0xBC0, 0xBC0),
    (0xBCD, 0xBCD),
    (0xC00, 0xC00),
    (0xC3E, 0xC40),
    (0xC46, 0xC48),
    (0xC4A, 0xC4D),
    (0xC55, 0xC56),
    (0xC62, 0xC63),
    (0xC81, 0xC81),
    (0xCBC, 0xCBC),
    (0xCBF, 0xCBF),
    (0xCC6, 0xCC6),
    (0xCCC, 0xCCD),
    (0xCE2, 0xCE3),
    (0xD01, 0xD01),
    (0xD41, 0xD44),
    (0xD4D, 0xD4D),
    (0xD62, 0xD63),
    (0xDCA, 0xDCA),
    (0xDD2, 0xDD4),
    (0xDD6, 0xDD6),
    (0xE31, 0xE31),
    (0xE34, 0xE3A),
    (0xE47, 0xE4E),
    (0xEB1, 0xEB1),
    (0xEB4, 0xEB9),
    (0xEBB, 0xEBC),
    (0xEC8, 0xECD),
    (0xF18, 0xF19),
    (0xF35, 0xF35),
    (0xF37, 0xF37),
    (0xF39, 0xF39),
    (0xF71, 0xF7E),
    (0xF80, 0xF84),
    (0xF86, 0xF87),
    (0xF8D, 0xF97),
    (0xF99, 0xFBC),
    (0xFC6, 0xFC6),
    (0x102D, 0x1030),
    (0x1032, 0x1037),
    (0x1039, 0x103A),
    (0x103D, 0x103E),
    (0x1058, 0x1059),
    (0x105E, 0x1060),
    (0x1071, 0x1074),
    (0x1082, 0x1082),
    (0x1085, 0x1086),
    (0x108D, 0x108D),
    (0x109D, 0x109D),
    (0x135D, 0x135F),
    (0x1712, 0x1714),
    (0x1732, 0x1734),
    (0x1752, 0x1753),
    (0x1772, 0x1773),
    (0x17B4, 0x17B5),
    (0x17B7, 0x17BD),
    (0x17C6, 0x17C6),
    (0x17C9, 0x17D3),
    (0x17DD, 0x17DD),
    (0x180B, 0x180D),
    (0x18A9, 0x18A9),
    (0x1920, 0x1922),
    (0x1927, 0x1928),
    (0x1932, 0x1932),
    (0x1939, 0x193B),
    (0x1A17, 0x1A18),
    (0x1A1B, 0x1A1B),
    (0x1A56, 0x1A56),
    (0x1A58, 0x1A5E),
    (0x1A60, 0x1A60),
    (0x1A62, 0x1A62),
    (0x1A65, 0x1A6C),
    (0x1A73, 0x1A7C),
    (0x1A7F, 0x1A7F),
    (0x1AB0, 0x1ABD),
    (0x1B00, 0x1B03),
    (0x1B34, 0x1B34),
    (0x1B36, 0x1B3A),
    (0x1B3C, 0x1B3C),
    (0x1B42, 0x1B42),
    (0x1B6B, 0x1B73),
    (0x1B80, 0x1B81),
    (0x1BA2, 0x1BA5),
    (0x1BA8, 0x1BA9),
    (0x1BAB, 0x1BAD),
    (0x1BE6, 0x1BE6),
    (0x1BE8, 0x1BE9),
    (0x1BED, 0x1BED),
    (0x1BEF, 0x1BF1),
    (0x1C2C, 0x1C33),
    (0x1C36, 0x1C37),
    (0x1CD0, 0x1CD2),
    (0x1CD4, 0x1CE0),
    (0x1CE2, 0x1CE8),
    (0x1CED, 0x1CED),
    (0x1CF4, 0x1CF4),
    (0x1CF8, 0x1CF9),
    (0x1DC0, 0x1DF5),
    (0x1DFC, 0x1DFF),
    (0x20D0, 0x20DC),
    (0x20E1, 0x20E1),
    (0x20E5, 0x20F0),
    (0x2CEF, 0x2CF1),
    (0x2D7F, 0x2D7F),
    (0x2DE0, 0x2DFF),
    (0x302A, 0x302D),
    (0x3099, 0x309A),
    (0xA66F, 0xA66F),
    (0xA674, 0xA67D),
    (0xA69E, 0xA69F),
    (0xA6F0, 0xA6F1),
    (0xA802, 0xA802),
    (0xA806, 0xA806),
    (0xA80B, 0xA80B),
    (0xA825, 0xA826),
    (0xA8C4, 0xA8C4),
    (0xA8E0, 0xA8F1),
    (0xA926, 0xA92D),
    (0xA947, 0xA951),
    (0xA980, 0xA982),
    (0xA9B3, 0xA9B3),
    (0xA9B6, 0xA9B9),
    (0xA9BC, 0xA9BC),
    (0xA9E5, 0xA9E5),
    (0xAA29, 0xAA2E),
    (0xAA31, 0xAA32),
    (0xAA35, 0xAA36),
    (0xAA43, 0xAA43),
    (0xAA4C, 0xAA4C),
    (0xAA7C, 0xAA7C),
    (0xAAB0, 0xAAB0),
    (0xAAB2, 0xAAB4),
    (0xAAB7, 0xAAB8),
    (0xAABE, 0xAABF),
    (0xAAC1, 0xAAC1),
    (0xAAEC, 0xAAED),
    (0xAAF6, 0xAAF6),
    (0xABE5, 0xABE5),
    (0xABE8, 0xABE8),
    (0xABED, 0xABED),
    (0xFB1E, 0xFB1E),
    (0xFE00, 0xFE0F),
    (0xFE20, 0xFE2F),
    (0x101FD, 0x101FD),
    (0x102E0, 0x102E0),
    (0x10376, 0x1037A),
    (0x10A01, 0x10A03),
    (0x10A05, 0x10A06),
    (0x10A0C, 0x10A0F),
    (0x10A38, 0x10A3A),
    (0x10A3F, 0x10A3F),
    (0x10AE5, 0x10AE6),
    (0x11001, 0x11001),
    (0x11038, 0x11046),
    (0x1107F, 0x11081),
    (0x110B3, 0x110B6),
    (0x110B9, 0x110BA),
    (0x11100, 0x11102),
    (0x11127, 0x1112B),
    (0x1112D, 0x11134),
    (0x11173, 0x11173),
    (0x11180, 0x11181),
    (0x111B6, 0x111BE),
    (0x111CA, 0x111CC),
    (0x1122F, 0x11231),
    (0x11234, 0x11234),
    (0x11236, 0x11237),
    (0x112DF, 0x112DF),
    (0x112E3, 0x112EA),
    (0x11300, 0x11301),
    (0x1133C, 0x1133C),
    (0x11340, 0x11340),
    (0x11366, 0x1136C),
    (0x11370, 0x11374),
    (0x114B3, 0x114B8),
    (0x114BA, 0x114BA),
    (0x114BF, 0x114C0),
    (0x114C2, 0x114C3),
    (0x115B2, 0x115B5),
    (0x115BC, 0x115BD),
    (0x115BF, 0x115C0),
    (0x115DC, 0x115DD),
    (0x11633, 0x1163A),
    (0x1163D, 0x1163D),
    (0x1163F, 0x11640),
    (0x116AB, 0x116AB),
    (0x116AD, 0x116AD),
    (0x116B0, 0x116B5),
    (0x116B7, 0x116B7),
    (0x1171D, 0x1171F),
    (0x11722, 0x11725),
    (0x11727, 0x1172B),
    (0x16AF0, 0x16AF4),
    (0x16B30, 0x16B36),
    (0x16F8F, 0x16F92),
    (0x1BC9D, 0x1BC9E),
    (0x1D167, 0x1D169),
    (0x1D17B, 0x1D182),
    (0x1D185, 0x1D18B),
    (0x1D1AA, 0x1D1AD),
    (0x1D242, 0x1D244),
    (0x1DA00, 0x1DA36),
    (0x1DA3B, 0x1DA6C),
    (0x1DA75, 0x1DA75),
    (0x1DA84, 0x1DA84),
    (0x1DA9B, 0x1DA9F),
    (0x1DAA1, 0x1DAAF),
    (0x1E8D0, 0x1E8D6),
    (0xE0100, 0xE01EF),
];

/// General categories Pc, Pd, Pe, Pf, Pi, Po, Ps.
static PUNCTUATION: &[(u32, u32)] = &[
    (0x21, 0x23),
    (0x25, 0x2A),
    (0x2C, 0x2F),
    (0x3A, 0x3B),
    (0x3F, 0x40),
    (0x5B, 0x5D),
    (0x5F, 0x5F),
    (0x7B, 0x7B),
    (0x7D, 0x7D),
    (0xA1, 0xA1),
    (0xA7, 0xA7),
    (0xAB, 0xAB),
    (0xB6, 0xB7),
    (0xBB, 0xBB),
    (0xBF, 0xBF),
    (0x37E, 0x37E),
    (0x387, 0x387),
    (0x55A, 0x55F),
    (0x589, 0x58A),
    (0x5BE, 0x5BE),
    (0x5C0, 0x5C0),
    (0x5C3, 0x5C3),
    (0x5C6, 0x5C6),
    (0x5F3, 0x5F4),
    (0x609, 0x60A),
    (0x60C, 0x60D),
    (0x61B, 0x61B),
    (0x61E, 0x61F),
    (0x66A, 0x66D),
    (0x6D4, 0x6D4),
    (0x700, 0x70D),
    (0x7F7, 0x7F9),
    (0x830, 0x83E),
    (0x85E, 0x85E),
    (0x964, 0x965),
    (0x970, 0x970),
    (0xAF0, 0xAF0),
    (0xDF4, 0xDF4),
    (0xE4F, 0xE4F),
    (0xE5A, 0xE5B),
    (0xF04, 0xF12),
    (0xF14, 0xF14),
    (0xF3A, 0xF3D),
    (0xF85, 0xF85),
    (0xFD0, 0xFD4),
    (0xFD9, 0xFDA),
    (0x104A, 0x104F),
    (0x10FB, 0x10FB),
    (0x1360, 0x1368),
    (0x1400, 0x1400),
    (0x166D, 0x166E),
    (0x169B, 0x169C),
    (0x16EB, 0x16ED),
    (0x1735, 0x1736),
    (0x17D4, 0x17D6),
    (0x17D8, 0x17DA),
    (0x1800, 0x180A),
    (0x1944, 0x1945),
    (0x1A1E, 0x1A1F),
    (0x1AA0, 0x1AA6),
    (0x1AA8, 0x1AAD),
    (0x1B5A, 0x1B60),
    (0x1BFC, 0x1BFF),
    (0x1C3B, 0x1C3F),
    (0x1C7E, 0x1C7F),
    (0x1CC0, 0x1CC7),
    (0x1CD3, 0x1CD3),
    (0x2010, 0x2027),
    (0x2030, 0x2043),
    (0x2045, 0x2051),
    (0x2053, 0x205E),
    (0x207D, 0x207E),
    (0x208D, 0x208E),
    (0x2308, 0x230B),
    (0x2329, 0x232A),
    (0x2768, 0x2775),
    (0x27C5, 0x27C6),
    (0x27E6, 0x27EF),
    (0x2983, 0x2998),
    (0x29D8, 0x29DB),
    (0x29FC, 0x29FD),
    (0x2CF9, 0x2CFC),
    (0x2CFE, 0x2CFF),
    (0x2D70, 0x2D70),
    (0x2E00, 0x2E2E),
    (0x2E30, 0x2E42),
    (0x3001, 0x3003),
    (0x3008, 0x3011),
    (0x3014, 0x301F),
    (0x3030, 0x3030),
    (0x303D, 0x303D),
    (0x30A0, 0x30A0),
    (0x30FB, 0x30FB),
    (0xA4FE, 0xA4FF),
    (0xA60D, 0xA60F),
    (0xA673, 0xA673),
    (0xA67E, 0xA67E),
    (0xA6F2, 0xA6F7),
    (0xA874, 0xA877),
    (0xA8CE, 0xA8CF),
    (0xA8F8, 0xA8FA),
    (0xA8FC, 0xA8FC),
    (0xA92E, 0xA92F),
    (0xA95F, 0xA95F),
    (0xA9C1, 0xA9CD),
    (0xA9DE, 0xA9DF),
    (0xAA5C, 0xAA5F),
    (0xAADE, 0xAADF),
    (0xAAF0, 0xAAF1),
    (0xABEB, 0xABEB),
    (0xFD3E, 0xFD3F),
    (0xFE10, 0xFE19),
    (0xFE30, 0xFE52),
    (0xFE54, 0xFE61),
    (0xFE63, 0xFE63),
    (0xFE68, 0xFE68),
    (0xFE6A, 0xFE6B),
    (0xFF01, 0xFF03),
    (0xFF05, 0xFF0A),
    (0xFF0C, 0xFF0F),
    (0xFF1A, 0xFF1B),
    (0xFF1F, 0xFF20),
    (0xFF3B, 0xFF3D),
    (0xFF3F, 0xFF3F),
    (0xFF5B, 0xFF5B),
    (0xFF5D, 0xFF5D),
    (0xFF5F, 0xFF65),
    (0x10100, 0x10102),
    (0x1039F, 0x1039F),
    (0x103D0, 0x103D0),
    (0x1056F, 0x1056F),
    (0x10857, 0x10857),
    (0x1091F, 0x1091F),
    (0x1093F, 0x1093F),
    (0x10A50, 0x10A58),
    (0x10A7F, 0x10A7F),
    (0x10AF0, 0x10AF6),
    (0x10B39, 0x10B3F),
    (0x10B99, 0x10B9C),
    (0x11047, 0x1104D),
    (0x110BB, 0x110BC),
    (0x110BE, 0x110C1),
    (0x11140, 0x11143),
    (0x11174, 0x11175),
    (0x111C5, 0x111C9),
    (0x111CD, 0x111CD),
    (0x111DB, 0x111DB),
    (0x111DD, 0x111DF),
    (0x11238, 0x1123D),
    (0x112A9, 0x112A9),
    (0x114C6, 0x114C6),
    (0x115C1, 0x115D7),
    (0x11641, 0x11643),
    (0x1173C, 0x1173E),
    (0x12470, 0x12474),
    (0x16A6E, 0x16A6F),
    (0x16AF5, 0x16AF5),
    (0x16B37, 0x16B3B),
    (0x16B44, 0x16B44),
    (0x1BC9F, 0x1BC9F),
    (0x1DA87, 0x1DA8B),
];

/// General categories Cc and Cf (private use Co is matched separately).
static CONTROL_FORMAT: &[(u32, u32)] = &[
    (0x0, 0x1F),
    (0x7F, 0x9F),
    (0xAD, 0xAD),
    (0x600, 0x605),
    (0x61C, 0x61C),
    (0x6DD, 0x6DD),
    (0x70F, 0x70F),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// A vocabulary in GGUF (phantom) form, built from HF-style pieces.
    fn vocab(pieces: &[&str]) -> Vec<String> {
        pieces
            .iter()
            .map(|p| {
                if p.starts_with('[') && p.ends_with(']') {
                    p.to_string()
                } else if let Some(rest) = p.strip_prefix("##") {
                    rest.to_string()
                } else {
                    format!("{PHANTOM_SPACE}{p}")
                }
            })
            .collect()
    }

    fn tok(lower: bool, strip: bool) -> WordPieceTokenizer {
        let v = vocab(&[
            "[PAD]",
            "[UNK]",
            "[CLS]",
            "[SEP]",
            "hello",
            ",",
            "world",
            "!",
            "un",
            "##aff",
            "##able",
            "cafe",
            "caf",
            "##é",
            "日",
            "本",
            "の",
            "a",
            "##b",
            "Hello",
            "i",
            "\u{307}",
            "##\u{307}",
            "de",
            "##f",
            "(",
            ")",
            "[",
            "]",
        ]);
        WordPieceTokenizer::new(&v, Some(1), lower, strip).unwrap()
    }

    fn enc(t: &WordPieceTokenizer, s: &str) -> Vec<u32> {
        let mut out = Vec::new();
        t.encode_fragment(s, &mut out);
        out
    }

    #[test]
    fn basic_words_and_punctuation() {
        let t = tok(true, true);
        assert_eq!(enc(&t, "Hello, world!"), vec![4, 5, 6, 7]);
        assert_eq!(enc(&t, "unaffable"), vec![8, 9, 10]);
        assert_eq!(enc(&t, "  \t\n "), Vec::<u32>::new());
        assert_eq!(enc(&t, ""), Vec::<u32>::new());
        assert_eq!(enc(&t, "(a)[ab]"), vec![25, 17, 26, 27, 17, 18, 28]);
    }

    #[test]
    fn unknown_words_become_one_unk() {
        let t = tok(true, true);
        // "unaffx": un ##aff then nothing for "x" -> the whole word is [UNK].
        assert_eq!(enc(&t, "unaffx world"), vec![1, 6]);
        let long = "a".repeat(101);
        assert_eq!(enc(&t, &long), vec![1]);
        let ok = format!("a{}", "b".repeat(99));
        assert_eq!(enc(&t, &ok).len(), 100);
    }

    #[test]
    fn accents_and_case_follow_the_flags() {
        let t = tok(true, true);
        assert_eq!(enc(&t, "Café"), vec![11]);
        let cased = tok(false, false);
        assert_eq!(enc(&cased, "Hello"), vec![19]);
        assert_eq!(enc(&cased, "café"), vec![12, 13]);
        assert_eq!(enc(&cased, "cafe\u{301}"), vec![1]); // NFD input, not composed again
                                                         // HF strips accents before lower-casing: with stripping 'İ' (no decomposed dot left)
                                                         // is "i"; lower-casing alone turns it into "i\u{307}".
        assert_eq!(enc(&t, "\u{130}"), vec![20]);
        assert_eq!(enc(&tok(true, false), "\u{130}"), vec![20, 22]);
    }

    #[test]
    fn cjk_is_split_and_controls_dropped() {
        let t = tok(true, true);
        assert_eq!(enc(&t, "日本の"), vec![14, 15, 16]);
        assert_eq!(enc(&t, "de\u{200B}f"), vec![23, 24]); // ZWSP (Cf) removed inside the word
        assert_eq!(enc(&t, "a\u{0}\u{FFFD}\u{E000}b"), vec![17, 18]);
    }

    #[test]
    fn tables_are_sorted_and_disjoint() {
        for t in [MARK_NONSPACING, PUNCTUATION, CONTROL_FORMAT] {
            for w in t.windows(2) {
                assert!(w[0].0 <= w[0].1 && w[0].1 < w[1].0);
            }
        }
        assert!(is_bert_punctuation('\u{3002}') && is_bert_punctuation('$'));
        assert!(is_mark_nonspacing('\u{301}') && !is_mark_nonspacing('e'));
        assert!(is_control('\u{7F}') && !is_control('\n'));
    }

    #[test]
    fn constructor_validates() {
        assert!(WordPieceTokenizer::new(&[], None, true, true).is_err());
        let v = vocab(&["a"]);
        assert!(WordPieceTokenizer::new(&v, None, true, true).is_err());
        assert!(WordPieceTokenizer::new(&v, Some(5), true, true).is_err());
        assert_eq!(WordPieceTokenizer::token_piece("\u{2581}word"), " word");
    }
}
