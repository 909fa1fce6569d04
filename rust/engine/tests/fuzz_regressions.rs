//! Replays the fuzzers' committed inputs under a normal `cargo test`: every crash the fuzz targets
//! in `fuzz/` found (`fuzz/regressions/<target>/`, each fixed) and their seed corpora
//! (`fuzz/corpus/<target>/`), through the very checks the targets run (`fuzz/harness.rs`, included
//! below). A regression panics here exactly as it crashed the fuzzer.

#[path = "../../../fuzz/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};

use harness::Stage;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The committed inputs of `target`: its crash regressions, then its seeds.
fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for kind in ["regressions", "corpus"] {
        let dir = fuzz_dir().join(kind).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        paths.sort();
        for p in paths {
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            out.push((p, bytes));
        }
    }
    out
}

fn replay(target: &str, run: impl Fn(&[u8])) {
    let all = inputs(target);
    assert!(!all.is_empty(), "no committed inputs for {target}");
    for (path, bytes) in &all {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(bytes)));
        assert!(r.is_ok(), "{target}: {} fails", path.display());
    }
}

#[test]
fn gguf_bytes_inputs() {
    replay("gguf_bytes", |b| {
        harness::gguf(b);
    });
}

#[test]
fn gguf_patch_inputs() {
    replay("gguf_patch", |b| {
        harness::gguf_patch(b);
    });
}

#[test]
fn tokenize_bpe_inputs() {
    replay("tokenize_bpe", |b| {
        harness::tokenize(harness::bpe_tokenizers(), b)
    });
}

#[test]
fn tokenize_spm_inputs() {
    replay("tokenize_spm", |b| {
        harness::tokenize(harness::spm_tokenizers(), b)
    });
}

#[test]
fn tokenize_wordpiece_inputs() {
    replay("tokenize_wordpiece", |b| {
        harness::tokenize(harness::wordpiece_tokenizers(), b)
    });
}

/// The model seeds load completely, so the fuzzers start from files that reach the weights.
#[test]
fn gguf_model_seeds_load() {
    for name in ["llama-bpe", "llama-spm-f16", "gemma3-spm", "bert-wpm"] {
        let b = std::fs::read(fuzz_dir().join("corpus/gguf_bytes").join(name)).unwrap();
        let (stage, err) = harness::gguf(&b);
        assert_eq!(stage, Stage::Weights, "{name}: {err:?}");
    }
    for name in ["vocab-bpe", "vocab-spm", "vocab-wpm"] {
        let b = std::fs::read(fuzz_dir().join("corpus/gguf_bytes").join(name)).unwrap();
        let (stage, err) = harness::gguf(&b);
        assert!(stage >= Stage::Tokenizer, "{name}: {stage:?} {err:?}");
    }
    for b in harness::GGUF_BASES {
        let (stage, err) = harness::gguf(b);
        assert!(stage >= Stage::Container, "{err:?}");
    }
}
