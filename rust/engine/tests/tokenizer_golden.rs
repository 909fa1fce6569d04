//! Dev harness: tokenizer ids against llama.cpp's golden ids.
//!
//! Needs a vocabulary dumped from the GGUF file as JSON (keys = the `Vocab` fields, `null` when
//! the file has no such key), e.g. with the `gguf` Python package, and the golden file:
//!
//! ```text
//! HOLOGRAM_TEST_VOCAB_JSON=/tmp/hologram/smollm2_vocab.json \
//! HOLOGRAM_TEST_GOLDEN_JSON=/work/shared/golden/smollm2-135m-instruct-q4_1.json \
//!     cargo test -p hologram-engine --test tokenizer_golden -- --nocapture
//! ```
//!
//! `HOLOGRAM_TEST_GOLDEN_JSON` defaults to the SmolLM2 golden file. Without
//! `HOLOGRAM_TEST_VOCAB_JSON` the test only prints that it was skipped (the permanent golden test
//! runs through the Python engine, which reads the GGUF itself).

use hologram_engine::tokenizer::{model_defaults, StreamDecoder, Tokenizer, Vocab};
use serde_json::Value;

const DEFAULT_GOLDEN: &str = "/work/shared/golden/smollm2-135m-instruct-q4_1.json";

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("id array")
        .iter()
        .map(|x| u32::try_from(x.as_u64().expect("id")).expect("u32 id"))
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().expect("string").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn opt_id(v: &Value, key: &str) -> Option<u32> {
    v.get(key)
        .and_then(Value::as_u64)
        .map(|x| u32::try_from(x).expect("u32 id"))
}

/// Builds the `Vocab` the way the engine's loader does: file keys first, llama.cpp defaults for
/// the flags the file does not set.
fn load_vocab(path: &str) -> Vocab {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let j: Value = serde_json::from_str(&text).expect("vocab json");
    let model = j["model"].as_str().expect("model").to_string();
    let pre = j.get("pre").and_then(Value::as_str).map(str::to_string);
    let d = model_defaults(&model, pre.as_deref());
    let flag = |key: &str, default: bool| j.get(key).and_then(Value::as_bool).unwrap_or(default);
    Vocab {
        tokens: strings(&j["tokens"]),
        token_types: j["token_types"]
            .as_array()
            .map(|a| a.iter().map(|x| x.as_i64().expect("type") as i32).collect())
            .unwrap_or_default(),
        scores: j["scores"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|x| x.as_f64().expect("score") as f32)
                    .collect()
            })
            .unwrap_or_default(),
        merges: strings(&j["merges"]),
        bos: opt_id(&j, "bos").or(d.bos),
        eos: opt_id(&j, "eos").or(d.eos),
        eot: opt_id(&j, "eot"),
        eom: opt_id(&j, "eom"),
        unk: opt_id(&j, "unk").or(d.unk),
        pad: opt_id(&j, "pad").or(d.pad),
        sep: opt_id(&j, "sep").or(d.sep),
        cls: opt_id(&j, "cls"),
        mask: opt_id(&j, "mask").or(d.mask),
        add_bos: flag("add_bos", d.add_bos),
        add_eos: flag("add_eos", d.add_eos),
        add_space_prefix: flag("add_space_prefix", d.add_space_prefix),
        model,
        pre,
    }
}

#[test]
fn golden_token_ids() {
    let Ok(vocab_path) = std::env::var("HOLOGRAM_TEST_VOCAB_JSON") else {
        println!("skipped: set HOLOGRAM_TEST_VOCAB_JSON to a vocab JSON dumped from the GGUF");
        return;
    };
    let golden_path =
        std::env::var("HOLOGRAM_TEST_GOLDEN_JSON").unwrap_or_else(|_| DEFAULT_GOLDEN.to_string());
    let vocab = load_vocab(&vocab_path);
    let t0 = std::time::Instant::now();
    let tok = Tokenizer::new(vocab).expect("tokenizer");
    println!(
        "built tokenizer ({} tokens) in {:?}",
        tok.n_vocab(),
        t0.elapsed()
    );

    let golden: Value = serde_json::from_str(
        &std::fs::read_to_string(&golden_path).unwrap_or_else(|e| panic!("{golden_path}: {e}")),
    )
    .expect("golden json");
    if let Some(flag) = golden.get("add_bos_token").and_then(Value::as_bool) {
        assert_eq!(tok.add_bos(), flag, "add_bos_token");
    }

    let cases = golden["tokenize"].as_array().expect("tokenize[]");
    let mut failures = Vec::new();
    let mut matched = 0;
    for case in cases {
        let text = case["text"].as_str().expect("text");
        for (key, parse_special) in [("ids", false), ("ids_parse_special", true)] {
            let want = ids(&case[key]);
            let got = tok.encode(text, false, parse_special);
            if got == want {
                matched += 1;
            } else {
                failures.push(format!("{key} {text:?}\n   want {want:?}\n    got {got:?}"));
            }
            // Round trip: special texts come back as text when rendered.
            assert_eq!(
                tok.decode(&got, true),
                text,
                "decode(encode({text:?}, {parse_special}))"
            );
        }
        // Streaming the pieces reproduces the text too.
        let mut dec = StreamDecoder::new();
        let mut streamed = String::new();
        for id in tok.encode(text, false, true) {
            streamed += &dec.push(tok.token_bytes(id));
        }
        streamed += &dec.finish();
        assert_eq!(streamed, text);
    }

    // Prompts of the greedy section, BOS included where the model's flag says so.
    for case in golden["greedy"].as_array().into_iter().flatten() {
        let (Some(prompt), Some(want)) = (case["prompt"].as_str(), case.get("prompt_ids")) else {
            continue;
        };
        let want = ids(want);
        let got = tok.encode(prompt, true, true);
        if got == want {
            matched += 1;
        } else {
            failures.push(format!(
                "prompt_ids {prompt:?}\n   want {want:?}\n    got {got:?}"
            ));
        }
    }

    println!(
        "{matched} token-id sequences identical, {} different",
        failures.len()
    );
    assert!(failures.is_empty(), "mismatches:\n{}", failures.join("\n"));
}

/// Pseudo-random text mixing ASCII, whitespace runs, digits, accents, CJK, emoji, control and
/// private-use characters, and special-token texts.
fn random_text(state: &mut u64, len: usize) -> String {
    const PARTS: &[&str] = &[
        " ",
        "  ",
        "   ",
        "\n",
        "\r\n",
        "\t",
        "\u{a0}",
        "\u{3000}",
        "\u{200b}",
        "a",
        "Z",
        "é",
        "ß",
        "日本",
        "😀",
        "👍🏽",
        "❤️",
        "7",
        "42",
        "١٢٣",
        "²",
        "'s",
        "'LL",
        "'",
        "!",
        "?!",
        ".",
        "...",
        ",",
        "-",
        "_",
        "$",
        "+=",
        "<|im_start|>",
        "<|im_end|>",
        "<|endoftext|>",
        "<|im",
        "\u{0}",
        "\u{7f}",
        "\u{e0d1}",
        "\u{10ffff}",
        "\u{301}",
        "word",
        "Word",
        "WORD",
        "x2",
    ];
    let mut s = String::new();
    for _ in 0..len {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        s.push_str(PARTS[(*state % PARTS.len() as u64) as usize]);
    }
    s
}

#[test]
fn round_trip_fuzz_all_pre_tokenizers() {
    let Ok(vocab_path) = std::env::var("HOLOGRAM_TEST_VOCAB_JSON") else {
        println!("skipped: set HOLOGRAM_TEST_VOCAB_JSON");
        return;
    };
    let base = load_vocab(&vocab_path);
    let pres = [
        "smollm",
        "default",
        "gpt-2",
        "llama-bpe",
        "qwen2",
        "qwen35",
        "deepseek-coder",
        "deepseek-v3",
        "falcon",
        "jais-2",
        "poro-chat",
        "viking",
        "tekken",
        "chameleon",
        "gpt-4o",
        "tiny_aya",
        "bailingmoe",
        "seed-coder",
        "exaone-moe",
        "minicpm5",
        "laguna",
        "spark2_5",
    ];
    for pre in pres {
        let mut v = base.clone();
        v.pre = Some(pre.to_string());
        v.add_bos = false;
        let tok = Tokenizer::new(v).unwrap_or_else(|e| panic!("{pre}: {e}"));
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for i in 0..300 {
            let text = random_text(&mut state, 1 + i % 40);
            for parse_special in [false, true] {
                let ids = tok.encode(&text, false, parse_special);
                assert_eq!(
                    tok.decode(&ids, true),
                    text,
                    "{pre} parse_special={parse_special}"
                );
            }
        }
    }
}

#[test]
fn encode_speed() {
    let Ok(vocab_path) = std::env::var("HOLOGRAM_TEST_VOCAB_JSON") else {
        println!("skipped: set HOLOGRAM_TEST_VOCAB_JSON");
        return;
    };
    let tok = Tokenizer::new(load_vocab(&vocab_path)).expect("tokenizer");
    let mut state = 12345u64;
    let text = random_text(&mut state, 40_000);
    let t0 = std::time::Instant::now();
    let ids = tok.encode(&text, false, true);
    let dt = t0.elapsed();
    println!(
        "encoded {} bytes -> {} tokens in {dt:?} ({:.1} MB/s)",
        text.len(),
        ids.len(),
        text.len() as f64 / dt.as_secs_f64() / 1e6
    );
    assert_eq!(tok.decode(&ids, true), text);
}
