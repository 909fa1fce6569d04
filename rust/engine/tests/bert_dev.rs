//! Development check of the BERT encoder and the WordPiece tokenizer on a converted
//! all-MiniLM-L6-v2 (`hologram convert <minilm dir> out.gguf --type f32|q8_0`), against the HF
//! golden file `shared/golden/all-minilm-l6-v2.json`:
//!
//!     HOLOGRAM_TEST_BERT_GGUF=/tmp/minilm.f32.gguf cargo test -p hologram-engine --test bert_dev -- --nocapture
//!
//! Skipped (with a message) when the variable is unset. The golden file is found through
//! `HOLOGRAM_SHARED` or as `shared/` next to the repository.

use std::path::{Path, PathBuf};
use std::time::Instant;

use hologram_engine::gguf::GgufFile;
use hologram_engine::model::bert::{BertModel, Pooling};
use hologram_engine::tokenizer::WordPieceTokenizer;
use hologram_kernels::Pool;

// ---- helpers

fn golden_path() -> PathBuf {
    let shared = std::env::var_os("HOLOGRAM_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
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
    let tokens = f
        .get_str_array("tokenizer.ggml.tokens")
        .unwrap()
        .expect("tokens")
        .to_vec();
    let unk = f
        .get_u64("tokenizer.ggml.unknown_token_id")
        .unwrap()
        .map(|v| v as u32);
    let lower = f
        .get_bool("hologram.tokenizer.do_lower_case")
        .unwrap()
        .unwrap_or(true);
    let strip = f
        .get_bool("hologram.tokenizer.strip_accents")
        .unwrap()
        .unwrap_or(true);
    let cls = f
        .get_u64("tokenizer.ggml.bos_token_id")
        .unwrap()
        .unwrap_or(101) as u32;
    let sep = f
        .get_u64("tokenizer.ggml.seperator_token_id")
        .unwrap()
        .unwrap_or(102) as u32;
    let tok = WordPieceTokenizer::new(&tokens, unk, lower, strip).expect("tokenizer");
    let model = BertModel::load(&f, tokens.len()).expect("load bert");
    // F32 conversions must match to 0.9999, quantized ones to 0.999.
    let min_cos = if f.get_u64("general.file_type").unwrap().unwrap_or(0) == 0 {
        0.9999
    } else {
        0.999
    };

    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(golden_path()).expect("golden file"))
            .expect("golden JSON");
    let nums = |v: &serde_json::Value| -> Vec<f64> {
        v.as_array()
            .expect("array")
            .iter()
            .map(|x| x.as_f64().expect("number"))
            .collect()
    };
    let items = golden["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|it| {
            (
                it["text"].as_str().expect("text").to_string(),
                nums(&it["ids"]).into_iter().map(|v| v as u32).collect(),
                nums(&it["embedding"])
                    .into_iter()
                    .map(|v| v as f32)
                    .collect(),
            )
        })
        .collect();
    Some(Setup {
        f,
        model,
        tok,
        cls,
        sep,
        items,
        min_cos,
    })
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
    s.model
        .embed(&s.f, &pool, &inputs, Pooling::Mean, true, &mut out)
        .unwrap();
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
        s.model
            .embed(
                &s.f,
                &pool,
                std::slice::from_ref(ids),
                Pooling::Mean,
                true,
                &mut one,
            )
            .unwrap();
        let c = cosine(&one, &out[i * e..(i + 1) * e]);
        assert!(c > 0.999_999, "input {i}: batched vs single cosine {c}");
    }

    // Errors, not panics.
    assert!(s
        .model
        .embed(
            &s.f,
            &pool,
            &[vec![]],
            Pooling::Mean,
            true,
            &mut vec![0.0; e]
        )
        .is_err());
    let too_long = vec![101u32; s.model.cfg.n_ctx_train + 1];
    assert!(s
        .model
        .embed(
            &s.f,
            &pool,
            &[too_long],
            Pooling::Mean,
            true,
            &mut vec![0.0; e]
        )
        .is_err());
    assert!(s
        .model
        .embed(
            &s.f,
            &pool,
            &[vec![u32::MAX]],
            Pooling::Mean,
            true,
            &mut vec![0.0; e]
        )
        .is_err());
    assert!(s
        .model
        .embed(&s.f, &pool, &inputs, Pooling::Mean, true, &mut vec![0.0; e])
        .is_err());
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
        s.model
            .embed(&s.f, &pool, &inputs, Pooling::Mean, true, &mut out)
            .unwrap();
        let reps = if n == 1 {
            50
        } else if n == 32 {
            5
        } else {
            2
        };
        let t = Instant::now();
        for _ in 0..reps {
            s.model
                .embed(&s.f, &pool, &inputs, Pooling::Mean, true, &mut out)
                .unwrap();
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
