//! Dev harness: the SentencePiece tokenizer (`src/tokenizer/spm.rs`, compiled standalone here)
//! against llama.cpp's ids for Gemma 3 270M (`/work/shared/golden/gemma-3-270m-q4_k_m.json`).
//!
//! Needs the vocabulary dumped from the GGUF as JSON (`tokens`, `scores`, `token_types`,
//! `add_space_prefix`, `unk`), e.g. with `gguf.GGUFReader`:
//!
//! ```text
//! HOLOGRAM_TEST_SPM_VOCAB=/tmp/gemma3_spm_vocab.json \
//!     cargo test -p hologram-engine --test spm_golden -- --nocapture
//! ```
//!
//! `HOLOGRAM_TEST_SPM_GOLDEN` overrides the golden file. Skipped (with a message) when the vocab
//! variable is unset. Special-token partitioning is emulated here as llama.cpp does it
//! (user-defined tokens always, control/unknown only when parsing specials; longest text first),
//! with the space prefix on the first fragment and on every fragment after a special token.

#[allow(dead_code)]
#[path = "../src/tokenizer/spm.rs"]
mod spm;

use std::collections::BTreeMap;
use std::time::Instant;

use spm::SpmTokenizer;

// ---------------------------------------------------------------------------------------------
// A minimal JSON reader (the engine has no serde_json dev-dependency).

#[derive(Debug, Clone)]
enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(BTreeMap<String, Json>),
}

impl Json {
    fn get(&self, k: &str) -> Option<&Json> {
        match self {
            Json::Obj(m) => m.get(k),
            _ => None,
        }
    }
    fn arr(&self) -> &[Json] {
        match self {
            Json::Arr(a) => a,
            _ => &[],
        }
    }
    fn str(&self) -> &str {
        match self {
            Json::Str(s) => s,
            _ => panic!("not a string: {self:?}"),
        }
    }
    fn num(&self) -> f64 {
        match self {
            Json::Num(n) => *n,
            _ => panic!("not a number: {self:?}"),
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn value(&mut self) -> Json {
        self.ws();
        match self.s[self.i] {
            b'{' => {
                self.i += 1;
                let mut m = BTreeMap::new();
                loop {
                    self.ws();
                    if self.s[self.i] == b'}' {
                        self.i += 1;
                        return Json::Obj(m);
                    }
                    let Json::Str(k) = self.value() else {
                        panic!("object key")
                    };
                    self.ws();
                    assert_eq!(self.s[self.i], b':');
                    self.i += 1;
                    let v = self.value();
                    m.insert(k, v);
                    self.ws();
                    if self.s[self.i] == b',' {
                        self.i += 1;
                    }
                }
            }
            b'[' => {
                self.i += 1;
                let mut a = Vec::new();
                loop {
                    self.ws();
                    if self.s[self.i] == b']' {
                        self.i += 1;
                        return Json::Arr(a);
                    }
                    a.push(self.value());
                    self.ws();
                    if self.s[self.i] == b',' {
                        self.i += 1;
                    }
                }
            }
            b'"' => {
                self.i += 1;
                let mut out = String::new();
                loop {
                    let c = self.s[self.i];
                    self.i += 1;
                    match c {
                        b'"' => return Json::Str(out),
                        b'\\' => {
                            let e = self.s[self.i];
                            self.i += 1;
                            match e {
                                b'n' => out.push('\n'),
                                b't' => out.push('\t'),
                                b'r' => out.push('\r'),
                                b'b' => out.push('\u{8}'),
                                b'f' => out.push('\u{c}'),
                                b'u' => {
                                    let mut cp = self.hex4();
                                    if (0xD800..0xDC00).contains(&cp)
                                        && self.s[self.i..].starts_with(b"\\u")
                                    {
                                        self.i += 2;
                                        let lo = self.hex4();
                                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                                    }
                                    out.push(char::from_u32(cp).unwrap_or('\u{FFFD}'));
                                }
                                other => out.push(char::from(other)),
                            }
                        }
                        _ => {
                            // Copy one UTF-8 sequence.
                            let start = self.i - 1;
                            let len = match c {
                                0..=0x7F => 1,
                                0xC0..=0xDF => 2,
                                0xE0..=0xEF => 3,
                                _ => 4,
                            };
                            self.i = start + len;
                            out.push_str(std::str::from_utf8(&self.s[start..self.i]).unwrap());
                        }
                    }
                }
            }
            b't' => {
                self.i += 4;
                Json::Bool(true)
            }
            b'f' => {
                self.i += 5;
                Json::Bool(false)
            }
            b'n' => {
                self.i += 4;
                Json::Null
            }
            _ => {
                let start = self.i;
                while self.i < self.s.len() && b"+-0123456789.eE".contains(&self.s[self.i]) {
                    self.i += 1;
                }
                let t = std::str::from_utf8(&self.s[start..self.i]).unwrap();
                Json::Num(t.parse().unwrap_or_else(|_| panic!("number {t:?}")))
            }
        }
    }
    fn hex4(&mut self) -> u32 {
        let h = std::str::from_utf8(&self.s[self.i..self.i + 4]).unwrap();
        self.i += 4;
        u32::from_str_radix(h, 16).unwrap()
    }
}

fn parse_json(path: &str) -> Json {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    Parser { s: &bytes, i: 0 }.value()
}

// ---------------------------------------------------------------------------------------------

struct Model {
    spm: SpmTokenizer,
    tokens: Vec<String>,
    types: Vec<i32>,
    add_space_prefix: bool,
}

enum Frag<'a> {
    Text(&'a str),
    Token(u32),
}

impl Model {
    /// llama.cpp's `tokenizer_st_partition` + the SPM branch of `tokenize` (no BOS/EOS).
    fn encode(&self, text: &str, parse_special: bool) -> Vec<u32> {
        let mut specials: Vec<u32> = (0..self.tokens.len() as u32)
            .filter(|&id| match self.types[id as usize] {
                4 => true,
                2 | 3 => parse_special,
                _ => false,
            })
            .collect();
        specials.sort_by_key(|&id| std::cmp::Reverse(self.tokens[id as usize].len()));
        let mut frags = if text.is_empty() {
            vec![]
        } else {
            vec![Frag::Text(text)]
        };
        for id in specials {
            let needle = self.tokens[id as usize].as_str();
            let mut next = Vec::with_capacity(frags.len());
            for f in frags {
                match f {
                    Frag::Token(_) => next.push(f),
                    Frag::Text(mut t) => {
                        while let Some(p) = t.find(needle) {
                            if p > 0 {
                                next.push(Frag::Text(&t[..p]));
                            }
                            next.push(Frag::Token(id));
                            t = &t[p + needle.len()..];
                        }
                        if !t.is_empty() {
                            next.push(Frag::Text(t));
                        }
                    }
                }
            }
            frags = next;
        }
        let mut out = Vec::new();
        let mut prev_special = true;
        for f in frags {
            match f {
                Frag::Text(t) => {
                    self.spm.encode_fragment(t, prev_special, &mut out);
                    prev_special = false;
                }
                Frag::Token(id) => {
                    out.push(id);
                    prev_special = true;
                }
            }
        }
        out
    }

    /// llama.cpp's `detokenize(ids, remove_special = false, unparse_special)` for a sequence
    /// without BOS: control/unknown tokens as their text only when `render_special`.
    fn decode(&self, ids: &[u32], render_special: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut strip = self.add_space_prefix;
        for &id in ids {
            let mut piece = self.spm.token_bytes(id);
            if render_special && matches!(self.types[id as usize], 2 | 3) {
                piece = self.tokens[id as usize].as_bytes();
            }
            if strip {
                piece = piece.strip_prefix(b" ").unwrap_or(piece);
                strip = false;
            }
            out.extend_from_slice(piece);
        }
        out
    }
}

fn load_model(path: &str) -> Model {
    let v = parse_json(path);
    let tokens: Vec<String> = v
        .get("tokens")
        .expect("tokens")
        .arr()
        .iter()
        .map(|t| t.str().to_string())
        .collect();
    let scores: Vec<f32> = v
        .get("scores")
        .map_or(&[][..], Json::arr)
        .iter()
        .map(|s| s.num() as f32)
        .collect();
    let types: Vec<i32> = v
        .get("token_types")
        .map_or(&[][..], Json::arr)
        .iter()
        .map(|s| s.num() as i32)
        .collect();
    let add_space_prefix = !matches!(v.get("add_space_prefix"), Some(Json::Bool(false)));
    let unk = match v.get("unk") {
        Some(Json::Num(n)) => Some(*n as u32),
        _ => None,
    };
    let t0 = Instant::now();
    let spm = SpmTokenizer::new(&tokens, &scores, &types, unk, add_space_prefix).expect("new");
    println!(
        "built SpmTokenizer over {} tokens in {:?} (add_space_prefix = {add_space_prefix})",
        tokens.len(),
        t0.elapsed()
    );
    let types = if types.is_empty() {
        vec![1; tokens.len()]
    } else {
        types
    };
    Model {
        spm,
        tokens,
        types,
        add_space_prefix,
    }
}

#[test]
fn spm_golden() {
    let Ok(vocab_path) = std::env::var("HOLOGRAM_TEST_SPM_VOCAB") else {
        println!("HOLOGRAM_TEST_SPM_VOCAB not set; skipping (dump the GGUF vocab to JSON first)");
        return;
    };
    let golden_path = std::env::var("HOLOGRAM_TEST_SPM_GOLDEN")
        .unwrap_or_else(|_| "/work/shared/golden/gemma-3-270m-q4_k_m.json".into());
    let m = load_model(&vocab_path);
    let golden = parse_json(&golden_path);
    let ids_of = |j: &Json| -> Vec<u32> { j.arr().iter().map(|x| x.num() as u32).collect() };

    let cases = golden.get("tokenize").expect("tokenize[]").arr();
    let (mut plain_ok, mut special_ok, mut roundtrip_ok) = (0, 0, 0);
    let mut failures = Vec::new();
    for case in cases {
        let text = case.get("text").expect("text").str();
        let want = ids_of(case.get("ids").expect("ids"));
        let want_special = ids_of(case.get("ids_parse_special").expect("ids_parse_special"));

        let got = m.encode(text, false);
        if got == want {
            plain_ok += 1;
        } else {
            failures.push(format!("ids {text:?}: got {got:?}, want {want:?}"));
        }
        let got_special = m.encode(text, true);
        if got_special == want_special {
            special_ok += 1;
        } else {
            failures.push(format!(
                "ids_parse_special {text:?}: got {got_special:?}, want {want_special:?}"
            ));
        }
        // Round trips: plain ids decode to the text; parsed specials render as their text.
        let back = m.decode(&want, false);
        let back_special = m.decode(&want_special, true);
        if back == text.as_bytes() && back_special == text.as_bytes() {
            roundtrip_ok += 1;
        } else {
            failures.push(format!(
                "decode {text:?}: got {:?} / {:?}",
                String::from_utf8_lossy(&back),
                String::from_utf8_lossy(&back_special)
            ));
        }
    }
    let n = cases.len();
    println!(
        "golden: ids {plain_ok}/{n}, ids_parse_special {special_ok}/{n}, decode round trip \
         {roundtrip_ok}/{n}"
    );
    for f in &failures {
        println!("FAIL {f}");
    }
    assert!(failures.is_empty(), "{} golden mismatches", failures.len());

    // No quadratic behaviour: 100 KB of one character, and of mixed text, encode quickly.
    for (name, s) in [
        ("100 KB of 'a'", "a".repeat(100_000)),
        ("100 KB of ' '", " ".repeat(100_000)),
        ("100 KB of '日'", "日".repeat(100_000 / 3)),
        (
            "~100 KB of prose",
            "The quick brown fox jumps over the lazy dog. ".repeat(2_300),
        ),
    ] {
        let t0 = Instant::now();
        let mut ids = Vec::new();
        m.spm.encode_fragment(&s, true, &mut ids);
        let dt = t0.elapsed();
        println!("{name}: {} ids in {dt:?}", ids.len());
        assert!(dt.as_secs_f64() < 2.0, "{name} took {dt:?}");
        let mut back = Vec::new();
        m.spm.decode_into(&ids, &mut back);
        assert_eq!(back, s.as_bytes(), "{name} round trip");
    }
}
