#[allow(dead_code)]
#[path = "../src/tokenizer/spm.rs"]
mod spm;
#[test]
fn scaling() {
    let mut toks: Vec<String> = (1..=48).map(|k| "a".repeat(k)).collect();
    toks.push("b".into());
    let scores: Vec<f32> = (0..toks.len()).map(|i| i as f32).collect();
    let t = spm::SpmTokenizer::new(&toks, &scores, &[], None, false).unwrap();
    for n in [100_000usize, 1_000_000, 4_000_000] {
        let s = "a".repeat(n);
        let t0 = std::time::Instant::now();
        let mut ids = Vec::new();
        t.encode_fragment(&s, false, &mut ids);
        println!("{n}: {} ids {:?}", ids.len(), t0.elapsed());
    }
}
