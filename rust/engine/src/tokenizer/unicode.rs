//! Unicode support for the tokenizers, reproducing llama.cpp's `unicode.cpp`:
//!
//! - code-point classification ([`flags`]): general-category flags from the same Unicode 15.1
//!   table llama.cpp ships (see `unicode_data.rs`) plus its White_Space set;
//! - the GPT-2 byte <-> unicode mapping ([`byte_to_char`], [`char_to_byte`]);
//! - [`Splitter`]: word splitting with a *list* of pre-tokenizer regexes applied in sequence, each
//!   one only splitting further the pieces produced by the previous one (`unicode_regex_split`).
//!
//! llama.cpp does not run the model's regexes on the raw text. The GPT-2 and LLaMA-3 patterns have
//! hand-written matchers (ported here as [`split_gpt2`] / [`split_llama3`]); every other pattern
//! runs on a "collapsed" copy of the text where each non-ASCII code point is replaced by one
//! placeholder per category (`\p{L}` -> one letter placeholder, ...) and the pattern's `\p{..}`
//! classes are rewritten to match those placeholders plus their ASCII members. We do the same with
//! `fancy-regex` (for the look-ahead in `\s+(?!\S)`), using private-use characters as placeholders,
//! so that category membership always comes from llama.cpp's table rather than the regex engine's.

use fancy_regex::Regex;

use super::unicode_data::CPT_FLAG_RANGES;

/// Category and helper flags of one code point (llama.cpp's `unicode_cpt_flags` bit layout).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Flags(u16);

impl Flags {
    pub const UNDEFINED: u16 = 0x0001;
    pub const NUMBER: u16 = 0x0002;
    pub const LETTER: u16 = 0x0004;
    #[allow(dead_code)] // listed for completeness
    pub const SEPARATOR: u16 = 0x0008;
    pub const ACCENT_MARK: u16 = 0x0010;
    pub const PUNCTUATION: u16 = 0x0020;
    pub const SYMBOL: u16 = 0x0040;
    #[allow(dead_code)]
    pub const CONTROL: u16 = 0x0080;
    pub const WHITESPACE: u16 = 0x0100;

    #[inline]
    pub fn is_number(self) -> bool {
        self.0 & Self::NUMBER != 0
    }
    #[inline]
    pub fn is_letter(self) -> bool {
        self.0 & Self::LETTER != 0
    }
    #[inline]
    pub fn is_whitespace(self) -> bool {
        self.0 & Self::WHITESPACE != 0
    }
    /// False only for the "outside the current piece" value `Flags::default()` (every real code
    /// point has a category, unassigned ones `UNDEFINED`) -- llama.cpp's `flags.as_uint() != 0`.
    #[inline]
    pub fn is_some(self) -> bool {
        self.0 != 0
    }
    #[inline]
    pub fn category(self) -> u16 {
        self.0 & 0x00FF
    }
}

/// White_Space code points (llama.cpp's `unicode_set_whitespace`).
#[inline]
fn is_white_space(cp: u32) -> bool {
    matches!(
        cp,
        0x09..=0x0D | 0x20 | 0x85 | 0xA0 | 0x1680 | 0x2000..=0x200A | 0x2028 | 0x2029 | 0x202F
            | 0x205F | 0x3000
    )
}

/// Flags of a code point.
pub(crate) fn flags(cp: u32) -> Flags {
    let cat = if cp >= 0x11_0000 {
        Flags::UNDEFINED
    } else {
        // The table starts at 0, so the partition point is at least 1.
        let i = CPT_FLAG_RANGES.partition_point(|&(start, _)| start <= cp);
        u16::from(CPT_FLAG_RANGES[i.saturating_sub(1)].1)
    };
    Flags(
        cat | if is_white_space(cp) {
            Flags::WHITESPACE
        } else {
            0
        },
    )
}

/// GPT-2 `bytes_to_unicode`: printable Latin-1 bytes map to themselves, the other 68 bytes to
/// U+0100.. in byte order.
pub(crate) const fn byte_to_char_table() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    let mut b = 0usize;
    while b < 256 {
        let printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        let cp = if printable {
            b as u32
        } else {
            n += 1;
            255 + n
        };
        table[b] = match char::from_u32(cp) {
            Some(c) => c,
            None => '\0',
        };
        b += 1;
    }
    table
}

pub(crate) static BYTE_TO_CHAR: [char; 256] = byte_to_char_table();

#[inline]
pub(crate) fn byte_to_char(b: u8) -> char {
    BYTE_TO_CHAR[b as usize]
}

/// Inverse of [`byte_to_char`].
pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    let cp = c as u32;
    match cp {
        0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF => Some(cp as u8),
        0x100..=0x143 => {
            // The n-th (0-based) byte that is not printable.
            let n = (cp - 0x100) as usize;
            (0u16..256)
                .map(|b| b as u8)
                .filter(|&b| byte_to_char(b) as u32 >= 0x100)
                .nth(n)
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Splitting
// ---------------------------------------------------------------------------------------------

/// The GPT-2 pattern, which llama.cpp matches with a hand-written splitter.
pub(crate) const GPT2_PATTERN: &str =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";
/// The LLaMA-3 pattern (as adapted for std::regex), also matched by hand.
pub(crate) const LLAMA3_PATTERN: &str = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const LLAMA3_PATTERN_ORIG: &str = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/// Placeholder used in the collapsed text for a non-ASCII code point of a category, and the ASCII
/// members of that category (llama.cpp's `k_ucat_cpt` / `k_ucat_map`).
const COLLAPSED_OTHER: char = '\u{E0D0}';
fn collapsed_placeholder(category: u16) -> char {
    match category {
        Flags::NUMBER => '\u{E0D1}',
        Flags::LETTER => '\u{E0D2}',
        Flags::PUNCTUATION => '\u{E0D3}',
        Flags::ACCENT_MARK => '\u{E0D4}',
        Flags::SYMBOL => '\u{E0D5}',
        _ => COLLAPSED_OTHER,
    }
}
fn category_class_body(category: u16) -> &'static str {
    match category {
        Flags::NUMBER => "\u{E0D1}0-9",
        Flags::LETTER => "\u{E0D2}A-Za-z",
        Flags::PUNCTUATION => {
            "\u{E0D3}\\x21-\\x23\\x25-\\x2A\\x2C-\\x2F\\x3A-\\x3B\\x3F-\\x40\\x5B-\\x5D\\x5F\\x7B\\x7D"
        }
        Flags::ACCENT_MARK => "\u{E0D4}",
        Flags::SYMBOL => "\u{E0D5}\\x24\\x2B\\x3C-\\x3E\\x5E\\x60\\x7C",
        _ => "",
    }
}
/// The `\p{..}` classes llama.cpp understands, and the category each stands for.
fn ucat(name: &str) -> Option<u16> {
    Some(match name {
        "\\p{N}" => Flags::NUMBER,
        "\\p{L}" | "\\p{Lu}" | "\\p{Ll}" | "\\p{Lt}" | "\\p{Lm}" | "\\p{Lo}" => Flags::LETTER,
        "\\p{P}" => Flags::PUNCTUATION,
        "\\p{M}" => Flags::ACCENT_MARK,
        "\\p{S}" => Flags::SYMBOL,
        _ => return None,
    })
}
fn uses_categories(pattern: &str) -> bool {
    ["\\p{N}", "\\p{L}", "\\p{P}", "\\p{M}", "\\p{S}"]
        .iter()
        .any(|c| pattern.contains(c))
}

/// Rewrites a pattern for the collapsed text (llama.cpp's `regex_expr_collapsed` loop, including
/// its simple tracking of whether we are inside `[...]`).
fn collapse_pattern(pattern: &str) -> Option<String> {
    if !pattern.is_ascii() {
        return None; // llama.cpp refuses category classes mixed with non-ASCII literals
    }
    let b = pattern.as_bytes();
    let mut out = String::with_capacity(pattern.len() * 2);
    let mut inside = false;
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'[' && (i == 0 || b[i - 1] != b'\\') {
            out.push('[');
            inside = true;
            i += 1;
            continue;
        }
        if inside && b[i] == b']' && b[i - 1] != b'\\' {
            out.push(']');
            inside = false;
            i += 1;
            continue;
        }
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1] == b'p' && b[i + 2] == b'{' {
            if let Some(close) = pattern[i + 3..].find('}').map(|k| k + i + 3) {
                if close <= i + 10 {
                    if let Some(cat) = ucat(&pattern[i..=close]) {
                        if !inside {
                            out.push('[');
                        }
                        out.push_str(category_class_body(cat));
                        if !inside {
                            out.push(']');
                        }
                        i = close + 1;
                        continue;
                    }
                }
            }
        }
        out.push(b[i] as char);
        i += 1;
    }
    Some(out)
}

/// One step of a pre-tokenizer.
#[derive(Debug)]
enum Stage {
    Gpt2,
    Llama3,
    /// A general regex, run on the collapsed text (`collapsed`) or on the text with non-ASCII
    /// whitespace replaced by U+000B (llama.cpp's `wregex` path).
    Regex {
        re: Box<Regex>,
        collapsed: bool,
    },
}

/// A compiled list of pre-tokenizer regexes.
#[derive(Debug)]
pub(crate) struct Splitter {
    stages: Vec<Stage>,
}

impl Splitter {
    /// Compiles `patterns` (llama.cpp's `regex_exprs` for a pre-tokenizer type).
    pub fn new(patterns: &[&str]) -> Result<Self, String> {
        let mut stages = Vec::with_capacity(patterns.len());
        for &p in patterns {
            let stage = if p == GPT2_PATTERN {
                Stage::Gpt2
            } else if p == LLAMA3_PATTERN || p == LLAMA3_PATTERN_ORIG {
                Stage::Llama3
            } else if uses_categories(p) {
                let collapsed = collapse_pattern(p)
                    .ok_or_else(|| format!("regex mixes unicode categories and non-ASCII: {p}"))?;
                let re = Regex::new(&collapsed).map_err(|e| format!("regex {p:?}: {e}"))?;
                Stage::Regex {
                    re: Box::new(re),
                    collapsed: true,
                }
            } else {
                let re = Regex::new(p).map_err(|e| format!("regex {p:?}: {e}"))?;
                Stage::Regex {
                    re: Box::new(re),
                    collapsed: false,
                }
            };
            stages.push(stage);
        }
        Ok(Self { stages })
    }

    /// Splits `text` into words; returns their byte ranges in `text`, in order, covering it.
    pub fn split(&self, text: &str) -> Vec<(usize, usize)> {
        let cps: Vec<char> = text.chars().collect();
        if cps.is_empty() {
            return Vec::new();
        }
        let fl: Vec<Flags> = cps.iter().map(|&c| flags(c as u32)).collect();
        let mut pieces = vec![cps.len()];
        let mut collapsed: Option<Haystack> = None;
        let mut plain: Option<Haystack> = None;
        for stage in &self.stages {
            let mut next = Vec::with_capacity(pieces.len() * 2);
            match stage {
                Stage::Gpt2 => split_gpt2(&cps, &fl, &pieces, &mut next),
                Stage::Llama3 => split_llama3(&cps, &fl, &pieces, &mut next),
                Stage::Regex {
                    re,
                    collapsed: true,
                } => {
                    let hay = collapsed.get_or_insert_with(|| Haystack::collapsed(&cps, &fl));
                    split_regex(re, hay, &pieces, &mut next);
                }
                Stage::Regex {
                    re,
                    collapsed: false,
                } => {
                    let hay = plain.get_or_insert_with(|| Haystack::plain(&cps, &fl));
                    split_regex(re, hay, &pieces, &mut next);
                }
            }
            pieces = next;
        }
        // Code-point lengths -> byte ranges of the original text.
        let mut out = Vec::with_capacity(pieces.len());
        let mut chars = text
            .char_indices()
            .map(|(i, _)| i)
            .chain(std::iter::once(text.len()));
        let mut start_byte = chars.next().unwrap_or(0);
        for len in pieces {
            let mut end_byte = start_byte;
            for _ in 0..len {
                end_byte = chars.next().unwrap_or(text.len());
            }
            if end_byte > start_byte {
                out.push((start_byte, end_byte));
            }
            start_byte = end_byte;
        }
        out
    }
}

/// The text a general regex runs on, with a code point -> byte offset map.
struct Haystack {
    text: String,
    /// `offsets[i]` = byte offset of code point `i`; one extra entry for the end.
    offsets: Vec<usize>,
}

impl Haystack {
    fn build(cps: &[char], map: impl Fn(char, Flags) -> char, fl: &[Flags]) -> Self {
        let mut text = String::with_capacity(cps.len());
        let mut offsets = Vec::with_capacity(cps.len() + 1);
        for (&c, &f) in cps.iter().zip(fl) {
            offsets.push(text.len());
            text.push(map(c, f));
        }
        offsets.push(text.len());
        Self { text, offsets }
    }
    fn collapsed(cps: &[char], fl: &[Flags]) -> Self {
        Self::build(
            cps,
            |c, f| {
                if c.is_ascii() {
                    c
                } else if f.is_whitespace() {
                    '\u{0B}'
                } else {
                    collapsed_placeholder(f.category())
                }
            },
            fl,
        )
    }
    fn plain(cps: &[char], fl: &[Flags]) -> Self {
        Self::build(
            cps,
            |c, f| {
                if !c.is_ascii() && f.is_whitespace() {
                    '\u{0B}'
                } else {
                    c
                }
            },
            fl,
        )
    }
    fn cp_index(&self, byte: usize) -> usize {
        self.offsets.partition_point(|&o| o < byte)
    }
}

/// llama.cpp's `unicode_regex_split_stl`: within each piece, every match and every gap between
/// matches becomes a piece.
fn split_regex(re: &Regex, hay: &Haystack, pieces: &[usize], out: &mut Vec<usize>) {
    let mut start = 0;
    for &len in pieces {
        let (ini, end) = (start, start + len);
        start = end;
        let base = hay.offsets[ini];
        let sub = &hay.text[base..hay.offsets[end]];
        let mut last = ini;
        for m in re.find_iter(sub) {
            // A matcher error (backtracking limit) leaves the rest of the piece unsplit.
            let Ok(m) = m else { break };
            let (ms, me) = (hay.cp_index(base + m.start()), hay.cp_index(base + m.end()));
            if ms > last {
                out.push(ms - last);
            }
            if me > ms {
                out.push(me - ms);
            }
            last = last.max(me);
        }
        if end > last {
            out.push(end - last);
        }
    }
}

const OUT_OF_RANGE: u32 = 0xFFFF_FFFF;

/// Emits piece lengths; `prev_end` always equals the scan position at the top of the loops below.
struct Emitter<'a> {
    prev_end: usize,
    out: &'a mut Vec<usize>,
}

impl Emitter<'_> {
    fn add(&mut self, end: usize) -> usize {
        let len = end - self.prev_end;
        if len > 0 {
            self.out.push(len);
        }
        self.prev_end = end;
        len
    }
}

/// One piece `[ini, end)` of code points, with out-of-piece positions reading as nothing.
struct Piece<'a> {
    cps: &'a [char],
    fl: &'a [Flags],
    ini: usize,
    end: usize,
}

impl Piece<'_> {
    #[inline]
    fn cpt(&self, pos: usize) -> u32 {
        if pos >= self.ini && pos < self.end {
            self.cps[pos] as u32
        } else {
            OUT_OF_RANGE
        }
    }
    #[inline]
    fn flags(&self, pos: usize) -> Flags {
        if pos >= self.ini && pos < self.end {
            self.fl[pos]
        } else {
            Flags::default()
        }
    }
}

const fn c(ch: char) -> u32 {
    ch as u32
}

/// Hand-written matcher for [`GPT2_PATTERN`] (llama.cpp's `unicode_regex_split_custom_gpt2`).
fn split_gpt2(cps: &[char], fl: &[Flags], pieces: &[usize], out: &mut Vec<usize>) {
    let mut start = 0;
    for &len in pieces {
        let p = Piece {
            cps,
            fl,
            ini: start,
            end: start + len,
        };
        start += len;
        let mut em = Emitter {
            prev_end: p.ini,
            out,
        };
        let mut pos = p.ini;
        while pos < p.end {
            let cpt = p.cpt(pos);
            let f = p.flags(pos);
            // 's|'t|'re|'ve|'m|'ll|'d
            if cpt == c('\'') && pos + 1 < p.end {
                let next = p.cpt(pos + 1);
                if [c('s'), c('t'), c('m'), c('d')].contains(&next) {
                    pos += em.add(pos + 2);
                    continue;
                }
                if pos + 2 < p.end {
                    let next2 = p.cpt(pos + 2);
                    if (next == c('r') && next2 == c('e'))
                        || (next == c('v') && next2 == c('e'))
                        || (next == c('l') && next2 == c('l'))
                    {
                        pos += em.add(pos + 3);
                        continue;
                    }
                }
            }
            let space = cpt == c(' ');
            let mut f2 = if space { p.flags(pos + 1) } else { f };
            // <space>?\p{L}+
            if f2.is_letter() {
                pos += usize::from(space);
                while f2.is_letter() {
                    pos += 1;
                    f2 = p.flags(pos);
                }
                em.add(pos);
                continue;
            }
            // <space>?\p{N}+
            if f2.is_number() {
                pos += usize::from(space);
                while f2.is_number() {
                    pos += 1;
                    f2 = p.flags(pos);
                }
                em.add(pos);
                continue;
            }
            // <space>?[^\s\p{L}\p{N}]+
            let other =
                |f: Flags| !(f.is_whitespace() || f.is_letter() || f.is_number()) && f.is_some();
            if other(f2) {
                pos += usize::from(space);
                while other(f2) {
                    pos += 1;
                    f2 = p.flags(pos);
                }
                em.add(pos);
                continue;
            }
            let mut n_ws = 0;
            while p.flags(pos + n_ws).is_whitespace() {
                n_ws += 1;
            }
            // \s+(?!\S)
            if n_ws > 1 && p.cpt(pos + n_ws) != OUT_OF_RANGE {
                pos += n_ws - 1;
                em.add(pos);
                continue;
            }
            // \s+
            if n_ws > 0 {
                pos += n_ws;
                em.add(pos);
                continue;
            }
            // no match
            pos += 1;
            em.add(pos);
        }
    }
}

#[inline]
fn ascii_lower(cp: u32) -> u32 {
    if (c('A')..=c('Z')).contains(&cp) {
        cp + 32
    } else {
        cp
    }
}

/// Hand-written matcher for [`LLAMA3_PATTERN`] (llama.cpp's `unicode_regex_split_custom_llama3`).
/// Its case-insensitive contractions only ever compare against ASCII letters, and no non-ASCII
/// code point lower-cases to one of those, so ASCII lower-casing is exact here.
fn split_llama3(cps: &[char], fl: &[Flags], pieces: &[usize], out: &mut Vec<usize>) {
    let mut start = 0;
    for &len in pieces {
        let p = Piece {
            cps,
            fl,
            ini: start,
            end: start + len,
        };
        start += len;
        let mut em = Emitter {
            prev_end: p.ini,
            out,
        };
        let mut pos = p.ini;
        while pos < p.end {
            let cpt = p.cpt(pos);
            let f = p.flags(pos);
            // (?i:'s|'t|'re|'ve|'m|'ll|'d)
            if cpt == c('\'') && pos + 1 < p.end {
                let next = ascii_lower(p.cpt(pos + 1));
                if [c('s'), c('t'), c('m'), c('d')].contains(&next) {
                    pos += em.add(pos + 2);
                    continue;
                }
                if pos + 2 < p.end {
                    let next2 = ascii_lower(p.cpt(pos + 2));
                    if (next == c('r') && next2 == c('e'))
                        || (next == c('v') && next2 == c('e'))
                        || (next == c('l') && next2 == c('l'))
                    {
                        pos += em.add(pos + 3);
                        continue;
                    }
                }
            }
            let is_rn = |cp: u32| cp == c('\r') || cp == c('\n');
            // [^\r\n\p{L}\p{N}]?\p{L}+
            if !(is_rn(cpt) || f.is_number()) && (f.is_letter() || p.flags(pos + 1).is_letter()) {
                pos += 1;
                while p.flags(pos).is_letter() {
                    pos += 1;
                }
                em.add(pos);
                continue;
            }
            // \p{N}{1,3}
            if f.is_number() {
                let mut ini = pos;
                while p.flags(pos).is_number() {
                    pos += 1;
                    if pos - ini >= 3 {
                        em.add(pos);
                        ini = pos;
                    }
                }
                em.add(pos);
                continue;
            }
            // <space>?[^\s\p{L}\p{N}]+[\r\n]*
            let space = cpt == c(' ');
            let mut f2 = if space { p.flags(pos + 1) } else { f };
            let other = |f: Flags| !(f.is_whitespace() || f.is_letter() || f.is_number());
            if other(f2) && f.is_some() {
                pos += usize::from(space);
                while other(f2) && f2.is_some() {
                    pos += 1;
                    f2 = p.flags(pos);
                }
                while is_rn(p.cpt(pos)) {
                    pos += 1;
                }
                em.add(pos);
                continue;
            }
            let mut n_ws = 0;
            let mut last_rn_end = 0;
            while p.flags(pos + n_ws).is_whitespace() {
                if is_rn(p.cpt(pos + n_ws)) {
                    last_rn_end = pos + n_ws + 1;
                }
                n_ws += 1;
            }
            // \s*[\r\n]+
            if last_rn_end > 0 {
                pos = last_rn_end;
                em.add(pos);
                continue;
            }
            // \s+(?!\S)
            if n_ws > 1 && p.cpt(pos + n_ws) != OUT_OF_RANGE {
                pos += n_ws - 1;
                em.add(pos);
                continue;
            }
            // \s+
            if n_ws > 0 {
                pos += n_ws;
                em.add(pos);
                continue;
            }
            pos += 1;
            em.add(pos);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(patterns: &[&str], text: &str) -> Vec<String> {
        let s = Splitter::new(patterns).unwrap();
        s.split(text)
            .into_iter()
            .map(|(a, b)| text[a..b].to_string())
            .collect()
    }

    #[test]
    fn flags_basics() {
        assert!(flags('a' as u32).is_letter());
        assert!(flags('7' as u32).is_number());
        assert!(flags(' ' as u32).is_whitespace());
        assert!(flags(0x3000).is_whitespace());
        assert!(flags('日' as u32).is_letter());
        assert!(flags('²' as u32).is_number());
        assert_eq!(flags('!' as u32).category(), Flags::PUNCTUATION);
        assert_eq!(flags('+' as u32).category(), Flags::SYMBOL);
        assert_eq!(flags(0x0301).category(), Flags::ACCENT_MARK);
        assert_eq!(flags(0x0378).category(), Flags::UNDEFINED);
        assert_eq!(flags(0x10FFFF).category(), Flags::UNDEFINED);
        assert_eq!(flags(0x11_0000).category(), Flags::UNDEFINED);
    }

    #[test]
    fn byte_mapping_round_trips() {
        let mut seen = std::collections::HashSet::new();
        for b in 0..=255u8 {
            let ch = byte_to_char(b);
            assert!(seen.insert(ch));
            assert_eq!(char_to_byte(ch), Some(b));
        }
        assert_eq!(byte_to_char(b' '), 'Ġ');
        assert_eq!(byte_to_char(b'\n'), 'Ċ');
        assert_eq!(char_to_byte('€'), None);
    }

    #[test]
    fn gpt2_split() {
        assert_eq!(
            words(&[GPT2_PATTERN], "Hello world's  end 123!!\n\n x"),
            ["Hello", " world", "'s", " ", " end", " 123", "!!", "\n\n", " x"]
        );
    }

    #[test]
    fn llama3_split() {
        assert_eq!(
            words(&[LLAMA3_PATTERN], "I'M 12345 ok?\r\n  done"),
            ["I", "'M", " ", "123", "45", " ok", "?\r\n", " ", " done"]
        );
    }

    #[test]
    fn smollm_digits_split_first() {
        assert_eq!(
            words(&["\\p{N}", GPT2_PATTERN], "a 2024b"),
            ["a", " ", "2", "0", "2", "4", "b"]
        );
    }

    #[test]
    fn regex_stage_uses_llama_categories() {
        let qwen = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
        assert_eq!(
            words(&[qwen], "café 42\u{3000}x"),
            ["café", " ", "4", "2", "\u{3000}x"]
        );
    }
}
