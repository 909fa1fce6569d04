//! Development check of the BERT encoder and the WordPiece tokenizer on a converted
//! all-MiniLM-L6-v2 (`hologram convert <minilm dir> out.gguf --type f32|q8_0`), against the HF
//! golden file `shared/golden/all-minilm-l6-v2.json`:
//!
//!     HOLOGRAM_TEST_BERT_GGUF=/tmp/minilm.f32.gguf cargo test -p hologram-engine --test bert_dev -- --nocapture
//!
//! Skipped (with a message) when the variable is unset. The golden file is found through
//! `HOLOGRAM_SHARED` or as `../shared` next to the repository.

use std::path::{Path, PathBuf};
use std::time::Instant;

use hologram_engine::gguf::GgufFile;
use hologram_engine::model::bert::{BertModel, Pooling};
use hologram_engine::tokenizer::WordPieceTokenizer;
use hologram_kernels::Pool;

// ---- a minimal JSON reader (the engine crate has no JSON dependency)

#[derive(Debug)]
enum Json {
    Null,
    Bool(#[allow(dead_code)] bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn get(&self, k: &str) -> &Json {
        match self {
            Json::Obj(m) => m.iter().find(|(kk, _)| kk == k).map(|(_, v)| v).unwrap_or(&Json::Null),
            _ => &Json::Null,
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
    b: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.b.len() && self.b[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn value(&mut self) -> Json {
        self.ws();
        match self.b[self.i] {
            b'{' => {
                self.i += 1;
                let mut m = Vec::new();
                loop {
                    self.ws();
                    if self.b[self.i] == b'}' {
                        self.i += 1;
                        return Json::Obj(m);
                    }
                    let k = self.string();
                    self.ws();
                    assert_eq!(self.b[self.i], b':');
                    self.i += 1;
                    let v = self.value();
                    m.push((k, v));
                    self.ws();
                    if self.b[self.i] == b',' {
                        self.i += 1;
                    }
                }
            }
            b'[' => {
                self.i += 1;
                let mut a = Vec::new();
                loop {
                    self.ws();
                    if self.b[self.i] == b']' {
                        self.i += 1;
                        return Json::Arr(a);
                    }
                    a.push(self.value());
                    self.ws();
                    if self.b[self.i] == b',' {
                        self.i += 1;
                    }
                }
            }
            b'"' => Json::Str(self.string()),
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
                let s = self.i;
                while self.i < self.b.len() && b"+-0123456789.eE".contains(&self.b[self.i]) {
                    self.i += 1;
                }
                let t = std::str::from_utf8(&self.b[s..self.i]).unwrap();
                Json::Num(t.parse().unwrap_or_else(|_| panic!("bad number {t:?}")))
            }
        }
    }
    fn hex4(&mut self) -> u32 {
        let h = std::str::from_utf8(&self.b[self.i..self.i + 4]).unwrap();
        self.i += 4;
        u32::from_str_radix(h, 16).unwrap()
    }
    fn string(&mut self) -> String {
        assert_eq!(self.b[self.i], b'"');
        self.i += 1;
        let mut out: Vec<u8> = Vec::new();
        loop {
            let c = self.b[self.i];
            self.i += 1;
            match c {
                b'"' => return String::from_utf8(out).unwrap(),
                b'\\' => {
                    let e = self.b[self.i];
                    self.i += 1;
                    let ch = match e {
                        b'n' => '\n',
                        b't' => '\t',
                        b'r' => '\r',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'u' => {
                            let mut cp = self.hex4();
                            if (0xD800..0xDC00).contains(&cp) && self.b[self.i] == b'\\' {
                                self.i += 2;
                                let lo = self.hex4();
                                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                            }
                            char::from_u32(cp).unwrap_or('\u{FFFD}')
                        }
                        other => other as char,
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                _ => out.push(c),
            }
        }
    }
}

fn parse_json(text: &str) -> Json {
    Parser { b: text.as_bytes(), i: 0 }.value()
}

// ---- helpers

fn golden_path() -> PathBuf {
    let shared = std::env::var_os("HOLOGRAM_SHARED").map(PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared")
    });
    shared.join("golden").join("all-minilm-l6-v2.json")
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        ab += x as f64 * y as f64;
        aa += x as f64 * x as f64;
        bb += y as f64 * y as f64;
    }
    ab / (aa.sqrt() * bb.sqrt()).max(1e-30)
}

struct Setup {
    f: GgufFile,
    model: BertModel,
    tok: WordPieceTokenizer,
    cls: u32,
    sep: u32,
    items: Vec<(String, Vec<u32>, Vec<f32>)>,
    min_cos: f64,
}

fn setup() -> Option<Setup> {
    let Some(path) = std::env::var_os("HOLOGRAM_TEST_BERT_GGUF") else {
        println!("HOLOGRAM_TEST_BERT_GGUF is not set: skipping the BERT dev check");
        return None;
    };
    let f = GgufFile::open(Path::new(&path)).expect("open gguf");
    let tokens = f.get_str_array("tokenizer.ggml.tokens").unwrap().expect("tokens").to_vec();
    let unk = f.get_u64("tokenizer.ggml.unknown_token_id").unwrap().map(|v| v as u32);
    let lower = f.get_bool("hologram.tokenizer.do_lower_case").unwrap().unwrap_or(true);
    let strip = f.get_bool("hologram.tokenizer.strip_accents").unwrap().unwrap_or(true);
    let cls = f.get_u64("tokenizer.ggml.bos_token_id").unwrap().unwrap_or(101) as u32;
    let sep = f.get_u64("tokenizer.ggml.seperator_token_id").unwrap().unwrap_or(102) as u32;
    let tok = WordPieceTokenizer::new(&tokens, unk, lower, strip).expect("tokenizer");
    let model = BertModel::load(&f, tokens.len()).expect("load bert");
    // F32 conversions must match to 0.9999, quantized ones to 0.999.
    let min_cos = if f.get_u64("general.file_type").unwrap().unwrap_or(0) == 0 { 0.9999 } else { 0.999 };

    let golden = parse_json(&std::fs::read_to_string(golden_path()).expect("golden file"));
    let items = golden
        .get("items")
        .arr()
        .iter()
        .map(|it| {
            (
                it.get("text").str().to_string(),
                it.get("ids").arr().iter().map(|v| v.num() as u32).collect(),
                it.get("embedding").arr().iter().map(|v| v.num() as f32).collect(),
            )
        })
        .collect();
    Some(Setup { f, model, tok, cls, sep, items, min_cos })
}

#[test]
fn wordpiece_ids_match_hf() {
    let Some(s) = setup() else { return };
    let mut bad = 0;
    for (text, ids, _) in &s.items {
        let mut got = vec![s.cls];
        s.tok.encode_fragment(text, &mut got);
        got.push(s.sep);
        if &got != ids {
            println!("MISMATCH {text:?}: got {got:?}, want {ids:?}");
            bad += 1;
        }
    }
    assert_eq!(bad, 0, "{bad} strings tokenized differently from HF");
    println!("wordpiece: {} strings identical", s.items.len());
}

#[test]
fn embeddings_match_hf() {
    let Some(s) = setup() else { return };
    let pool = Pool::new(0).unwrap();
    let e = s.model.cfg.n_embd;
    let inputs: Vec<Vec<u32>> = s.items.iter().map(|(_, ids, _)| ids.clone()).collect();
    let mut out = vec![0f32; inputs.len() * e];
    s.model.embed(&s.f, &pool, &inputs, Pooling::Mean, true, &mut out).unwrap();
    let mut worst = 1.0f64;
    for ((text, _, want), got) in s.items.iter().zip(out.chunks_exact(e)) {
        let c = cosine(got, want);
        println!("cos {c:.7}  {text:?}");
        worst = worst.min(c);
    }
    println!("worst cosine {worst:.7} (required >= {})", s.min_cos);
    assert!(worst >= s.min_cos, "worst cosine {worst} < {}", s.min_cos);

    // A batch gives each input the vector it gets alone.
    for (i, ids) in inputs.iter().enumerate() {
        let mut one = vec![0f32; e];
        s.model.embed(&s.f, &pool, std::slice::from_ref(ids), Pooling::Mean, true, &mut one).unwrap();
        let c = cosine(&one, &out[i * e..(i + 1) * e]);
        assert!(c > 0.999_999, "input {i}: batched vs single cosine {c}");
    }

    // Errors, not panics.
    assert!(s.model.embed(&s.f, &pool, &[vec![]], Pooling::Mean, true, &mut vec![0.0; e]).is_err());
    let too_long = vec![101u32; s.model.cfg.n_ctx_train + 1];
    assert!(s.model.embed(&s.f, &pool, &[too_long], Pooling::Mean, true, &mut vec![0.0; e]).is_err());
    assert!(s.model.embed(&s.f, &pool, &[vec![u32::MAX]], Pooling::Mean, true, &mut vec![0.0; e]).is_err());
    assert!(s.model.embed(&s.f, &pool, &inputs, Pooling::Mean, true, &mut vec![0.0; e]).is_err());
}

/// Throughput for batches of 1, 32 and 256 sentences of ~16 tokens (timing only).
#[test]
fn embeddings_throughput() {
    let Some(s) = setup() else { return };
    let pool = Pool::new(0).unwrap();
    let e = s.model.cfg.n_embd;
    let base: Vec<Vec<u32>> = s
        .items
        .iter()
        .map(|(_, ids, _)| {
            let mut v = ids.clone();
            v.resize(16, 1996);
            v[15] = s.sep;
            v
        })
        .collect();
    for &n in &[1usize, 32, 256] {
        let inputs: Vec<Vec<u32>> = (0..n).map(|i| base[i % base.len()].clone()).collect();
        let mut out = vec![0f32; n * e];
        s.model.embed(&s.f, &pool, &inputs, Pooling::Mean, true, &mut out).unwrap();
        let reps = if n == 1 { 50 } else if n == 32 { 5 } else { 2 };
        let t = Instant::now();
        for _ in 0..reps {
            s.model.embed(&s.f, &pool, &inputs, Pooling::Mean, true, &mut out).unwrap();
        }
        let dt = t.elapsed().as_secs_f64() / reps as f64;
        println!(
            "batch {n:>3}: {:.1} ms/batch, {:.0} embeddings/s ({} threads)",
            dt * 1e3,
            n as f64 / dt,
            pool.n_threads()
        );
    }
}
