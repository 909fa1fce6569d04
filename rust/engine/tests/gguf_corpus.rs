//! Runs the GGUF reader over the malformed-GGUF corpus written by `tests/gguf_corpus.py`
//! (RELIABILITY.md §1.4). Set HOLOGRAM_GGUF_CORPUS to the directory it wrote:
//!
//! ```text
//! python tests/gguf_corpus.py /tmp/gguf-corpus
//! HOLOGRAM_GGUF_CORPUS=/tmp/gguf-corpus cargo test -p hologram-engine --test gguf_corpus
//! ```
//!
//! `manifest.tsv` lists `file<TAB>class<TAB>substrings`: class `ok` must open; `GGUFError` must
//! fail with an `EngineError::Gguf` whose text contains every `|`-separated substring
//! (case-insensitive), within a second; `ModelLoadError` files are valid containers describing an
//! invalid model (the loader's job), so here they only have to parse or fail without panicking.
//! Skipped (with a message) when the variable is unset.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use hologram_engine::gguf::GgufFile;
use hologram_engine::EngineError;

#[test]
fn gguf_corpus() {
    let Some(dir) = std::env::var_os("HOLOGRAM_GGUF_CORPUS").map(PathBuf::from) else {
        println!("HOLOGRAM_GGUF_CORPUS not set; skipping (run python tests/gguf_corpus.py DIR)");
        return;
    };
    let manifest = std::fs::read_to_string(dir.join("manifest.tsv")).expect("manifest.tsv");
    let (mut n_ok, mut n_rejected, mut n_model) = (0, 0, 0);
    let mut failures = Vec::new();
    for line in manifest.lines().filter(|l| !l.trim().is_empty()) {
        let mut cols = line.split('\t');
        let (file, class, subs) = (
            cols.next().unwrap_or_default(),
            cols.next().unwrap_or_default(),
            cols.next().unwrap_or_default(),
        );
        let t0 = Instant::now();
        let r = GgufFile::open(&dir.join(file));
        let elapsed = t0.elapsed();
        if elapsed > Duration::from_secs(1) {
            failures.push(format!("{file}: took {elapsed:?}"));
        }
        match (class, r) {
            ("ok", Ok(f)) => {
                n_ok += 1;
                assert!(!f.tensors().is_empty());
                for t in f.tensors() {
                    assert_eq!(f.tensor_data(t).len() as u64, t.nbytes);
                }
            }
            ("ok", Err(e)) => failures.push(format!("{file}: valid file rejected: {e}")),
            ("GGUFError", Ok(_)) => failures.push(format!("{file}: malformed file accepted")),
            ("GGUFError", Err(e @ EngineError::Gguf { .. })) => {
                n_rejected += 1;
                let text = e.to_string();
                let lower = text.to_lowercase();
                for s in subs.split('|').filter(|s| !s.is_empty()) {
                    if !lower.contains(&s.to_lowercase()) {
                        failures.push(format!("{file}: message lacks {s:?}: {text}"));
                    }
                }
                println!("{file}: {text}");
            }
            ("GGUFError", Err(e)) => failures.push(format!("{file}: not a Gguf error: {e}")),
            ("ModelLoadError", r) => {
                n_model += 1;
                if let Err(e) = r {
                    println!("{file}: (container) {e}");
                }
            }
            (other, _) => failures.push(format!("{file}: unknown class {other}")),
        }
    }
    println!("{n_ok} valid opened, {n_rejected} malformed rejected, {n_model} model-level parsed");
    assert!(
        failures.is_empty(),
        "corpus failures:\n{}",
        failures.join("\n")
    );
    assert!(n_ok >= 1 && n_rejected >= 100, "corpus looks incomplete");
}

/// Optional: HOLOGRAM_GGUF_REAL=path to a real model (e.g. gemma-3-270m) must open, and every
/// tensor's data must be in bounds.
#[test]
fn real_model_opens() {
    let Some(path) = std::env::var_os("HOLOGRAM_GGUF_REAL").map(PathBuf::from) else {
        println!("HOLOGRAM_GGUF_REAL not set; skipping");
        return;
    };
    let t0 = Instant::now();
    let f = GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    println!(
        "{}: v{} {} kv, {} tensors, data at {}, opened in {:?}",
        path.display(),
        f.version(),
        f.metadata().len(),
        f.tensors().len(),
        f.data_offset(),
        t0.elapsed()
    );
    for t in f.tensors() {
        assert_eq!(f.tensor_data(t).len() as u64, t.nbytes);
    }
}
