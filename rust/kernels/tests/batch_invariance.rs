//! Batch invariance (continuous batching): the output of one activation row must be
//! bit-for-bit the same whatever else is in the batch. For every weight type and every
//! non-opt-in ISA (Scalar, Avx2), `out[t * rows + r]` of `matmul` / `matmul_multi` must depend
//! only on W row r and x row t: not on `n_tok`, on t's position in the batch, on how rows are
//! chunked/tiled, nor on the thread count.

use half::f16;
use hologram_kernels::{matmul_isa, matmul_multi_isa, simd, Isa, MatmulJob, Pool, QuantType};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// Activation rows per test case.
const N_X: usize = 33;
/// Batch sizes tried (each at several offsets).
const BATCHES: [usize; 11] = [2, 3, 4, 5, 7, 8, 9, 16, 17, 32, 33];

/// The ISAs under test: every tier this CPU runs.
fn isas() -> Vec<Isa> {
    simd::available()
}

fn put_f16(b: &mut [u8], v: f32) {
    b.copy_from_slice(&f16::from_f32(v).to_le_bytes());
}

/// Byte offsets of the f16 scales (d, then the min if any) in a block of `t`.
fn f16_fields(t: QuantType) -> &'static [usize] {
    match t {
        QuantType::Q4_0 | QuantType::Q5_0 | QuantType::Q8_0 => &[0],
        QuantType::Q4_1 | QuantType::Q5_1 => &[0, 2],
        QuantType::Q2_K => &[80, 82],
        QuantType::Q3_K => &[108],
        QuantType::Q4_K | QuantType::Q5_K => &[0, 2],
        QuantType::Q6_K => &[208],
        _ => &[],
    }
}

/// `rows x cols` random weights of type `t` (random quant bits, sane scales of both signs).
fn weights(t: QuantType, rows: usize, cols: usize, rng: &mut StdRng) -> Vec<u8> {
    let n = rows * cols;
    let mut v: Vec<u8> = (0..t.row_bytes(n).unwrap()).map(|_| rng.gen()).collect();
    match t {
        QuantType::F32 => {
            for c in v.chunks_exact_mut(4) {
                c.copy_from_slice(&rng.gen_range(-2.0f32..2.0).to_le_bytes());
            }
        }
        QuantType::F16 => {
            for c in v.chunks_exact_mut(2) {
                put_f16(c, rng.gen_range(-2.0f32..2.0));
            }
        }
        QuantType::BF16 => {
            for c in v.chunks_exact_mut(2) {
                let b = half::bf16::from_f32(rng.gen_range(-2.0f32..2.0));
                c.copy_from_slice(&b.to_le_bytes());
            }
        }
        _ => {
            for blk in v.chunks_exact_mut(t.type_size()) {
                for (i, &off) in f16_fields(t).iter().enumerate() {
                    let mut s: f32 = if i == 0 {
                        rng.gen_range(0.0005..0.05)
                    } else {
                        rng.gen_range(0.0005..0.5)
                    };
                    if rng.gen_bool(0.3) {
                        s = -s;
                    }
                    put_f16(&mut blk[off..off + 2], s);
                }
            }
        }
    }
    v
}

/// `N_X` activation rows: mostly uniform, some with outliers, a large-magnitude row and a zero
/// row (so the per-row activation scales differ a lot).
fn activations(cols: usize, rng: &mut StdRng) -> Vec<f32> {
    let mut x: Vec<f32> = (0..N_X * cols).map(|_| rng.gen_range(-1.0..1.0)).collect();
    for (t, row) in x.chunks_exact_mut(cols).enumerate() {
        match t % 11 {
            3 => row[cols / 3] = 40.0,
            5 => row.iter_mut().for_each(|v| *v *= 300.0),
            7 => row.fill(0.0),
            9 => row.iter_mut().for_each(|v| *v *= 1e-3),
            _ => {}
        }
    }
    x
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|f| f.to_bits()).collect()
}

/// `matmul_isa` of the tokens `toks` (gathered in that order); returns `toks.len() x rows`.
#[allow(clippy::too_many_arguments)]
fn run(
    isa: Isa,
    pool: &Pool,
    w: &[u8],
    t: QuantType,
    rows: usize,
    cols: usize,
    x: &[f32],
    toks: &[usize],
    scratch: &mut Vec<u8>,
) -> Vec<f32> {
    let xb: Vec<f32> = toks
        .iter()
        .flat_map(|&k| x[k * cols..(k + 1) * cols].iter().copied())
        .collect();
    let mut out = vec![f32::NAN; toks.len() * rows];
    matmul_isa(
        isa,
        pool,
        w,
        t,
        rows,
        cols,
        &xb,
        toks.len(),
        &mut out,
        scratch,
    )
    .unwrap();
    out
}

/// The batches to try: every size at offsets 0, 1, the last possible and a middle one, plus
/// all tokens reversed and shuffled.
fn batches(rng: &mut StdRng) -> Vec<Vec<usize>> {
    let mut v: Vec<Vec<usize>> = Vec::new();
    for b in BATCHES {
        let mut offs = vec![0, 1.min(N_X - b), N_X - b, (N_X - b) / 2];
        offs.sort_unstable();
        offs.dedup();
        for o in offs {
            v.push((o..o + b).collect());
        }
    }
    v.push((0..N_X).rev().collect());
    let mut s: Vec<usize> = (0..N_X).collect();
    s.shuffle(rng);
    v.push(s);
    // A batch holding the same token several times.
    v.push(vec![4, 4, 9, 4, 30, 9, 4]);
    v
}

/// Compare a batch result against the per-token references; describe the first mismatch.
fn compare(got: &[f32], want: &[Vec<u32>], toks: &[usize], rows: usize) -> Option<String> {
    let mut bad = 0usize;
    let mut first = None;
    for (i, &k) in toks.iter().enumerate() {
        let g = bits(&got[i * rows..(i + 1) * rows]);
        for r in 0..rows {
            if g[r] != want[k][r] {
                bad += 1;
                first.get_or_insert_with(|| {
                    format!(
                        "token {k} (batch pos {i}) row {r}: {} vs alone {}",
                        f32::from_bits(g[r]),
                        f32::from_bits(want[k][r])
                    )
                });
            }
        }
    }
    first.map(|f| format!("{bad} outputs differ, first {f}"))
}

/// Shapes: rows not a multiple of any tile (2, 3, 4, 12, 16, ...); 1337 x 256 also spans
/// several row panels of the tiled kernels and goes parallel on 2 threads even for one
/// token; float types also get odd column counts (vector tails), one wide enough that the
/// f32 GEMM splits the batch into token blocks of 4.
fn shapes(t: QuantType) -> Vec<(usize, usize)> {
    let mut s = vec![(77, 256), (133, 512), (1337, 256)];
    if t.block_size() == 1 {
        s.extend([(37, 100), (13, 6150)]);
    }
    s
}

fn check_type(t: QuantType) {
    let mut rng = StdRng::seed_from_u64(0xBA7C4 + t as u64);
    let pools = [Pool::new(1).unwrap(), Pool::new(2).unwrap()];
    let mut scratch = Vec::new();
    let mut fails: Vec<String> = Vec::new();
    for isa in isas() {
        for (rows, cols) in shapes(t) {
            let w = weights(t, rows, cols, &mut rng);
            let x = activations(cols, &mut rng);
            // Reference: each token alone, 1-thread pool.
            let alone: Vec<Vec<u32>> = (0..N_X)
                .map(|k| {
                    bits(&run(
                        isa,
                        &pools[0],
                        &w,
                        t,
                        rows,
                        cols,
                        &x,
                        &[k],
                        &mut scratch,
                    ))
                })
                .collect();
            let mut cases = batches(&mut rng);
            cases.extend((0..N_X).map(|k| vec![k]));
            for pool in &pools {
                for toks in &cases {
                    let got = run(isa, pool, &w, t, rows, cols, &x, toks, &mut scratch);
                    if let Some(m) = compare(&got, &alone, toks, rows) {
                        fails.push(format!(
                            "{t:?} {isa:?} {rows}x{cols} {}-thread batch of {} starting at {}: {m}",
                            pool.n_threads(),
                            toks.len(),
                            toks[0]
                        ));
                    }
                }
            }
        }
    }
    report(&fails);
}

/// Fail with the first few mismatching cases (the full list can be thousands of lines).
fn report(fails: &[String]) {
    assert!(
        fails.is_empty(),
        "{} batch-dependent cases, first ones:\n{}",
        fails.len(),
        fails[..fails.len().min(16)].join("\n")
    );
}

macro_rules! type_tests {
    ($($name:ident: $t:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                check_type(QuantType::$t);
            }
        )*
    };
}

type_tests! {
    invariant_f32: F32,
    invariant_f16: F16,
    invariant_bf16: BF16,
    invariant_q4_0: Q4_0,
    invariant_q4_1: Q4_1,
    invariant_q5_0: Q5_0,
    invariant_q5_1: Q5_1,
    invariant_q8_0: Q8_0,
    invariant_q2_k: Q2_K,
    invariant_q3_k: Q3_K,
    invariant_q4_k: Q4_K,
    invariant_q5_k: Q5_K,
    invariant_q6_k: Q6_K,
}

/// `matmul_multi` (jobs sharing x, one activation quantization, one parallel region) gives
/// every job exactly what a single-token `matmul` gives, for any batch.
#[test]
fn matmul_multi_matches_single_token_matmul() {
    use QuantType as T;
    let groups: [&[(QuantType, usize)]; 6] = [
        // q/k/v-like, all in the AVX2 tiled path.
        &[(T::Q4_0, 77), (T::Q4_0, 21), (T::Q4_0, 21)],
        // gate/up-like, mixed 32-block formats (several activation preparations).
        &[(T::Q4_1, 133), (T::Q8_0, 77)],
        &[(T::Q5_0, 45), (T::Q5_1, 77), (T::Q8_0, 9)],
        // K-quants and floats (per-job fallback) and a mix with the tiled types.
        &[(T::Q4_K, 77), (T::Q6_K, 33)],
        &[(T::Q4_K, 37), (T::Q4_0, 77), (T::Q6_K, 21)],
        &[(T::F16, 45), (T::BF16, 21), (T::F32, 13)],
    ];
    let cols = 512;
    let mut rng = StdRng::seed_from_u64(0x3017);
    let pools = [Pool::new(1).unwrap(), Pool::new(2).unwrap()];
    let mut scratch = Vec::new();
    let mut fails: Vec<String> = Vec::new();
    for isa in isas() {
        for g in groups {
            let ws: Vec<Vec<u8>> = g
                .iter()
                .map(|&(t, rows)| weights(t, rows, cols, &mut rng))
                .collect();
            let x = activations(cols, &mut rng);
            let alone: Vec<Vec<Vec<u32>>> = g
                .iter()
                .zip(&ws)
                .map(|(&(t, rows), w)| {
                    (0..N_X)
                        .map(|k| {
                            bits(&run(
                                isa,
                                &pools[0],
                                w,
                                t,
                                rows,
                                cols,
                                &x,
                                &[k],
                                &mut scratch,
                            ))
                        })
                        .collect()
                })
                .collect();
            let mut cases = batches(&mut rng);
            cases.extend((0..N_X).map(|k| vec![k]));
            for pool in &pools {
                for toks in &cases {
                    let xb: Vec<f32> = toks
                        .iter()
                        .flat_map(|&k| x[k * cols..(k + 1) * cols].iter().copied())
                        .collect();
                    let mut outs: Vec<Vec<f32>> = g
                        .iter()
                        .map(|&(_, rows)| vec![f32::NAN; toks.len() * rows])
                        .collect();
                    let mut jobs: Vec<MatmulJob<'_>> = g
                        .iter()
                        .zip(&ws)
                        .zip(outs.iter_mut())
                        .map(|((&(wt, rows), w), out)| MatmulJob { w, wt, rows, out })
                        .collect();
                    matmul_multi_isa(isa, pool, &mut jobs, cols, &xb, toks.len(), &mut scratch)
                        .unwrap();
                    for (j, (&(t, rows), out)) in g.iter().zip(&outs).enumerate() {
                        if let Some(m) = compare(out, &alone[j], toks, rows) {
                            fails.push(format!(
                                "multi {g:?} job {j} ({t:?}) {isa:?} {}-thread batch of {} \
                                 starting at {}: {m}",
                                pool.n_threads(),
                                toks.len(),
                                toks[0]
                            ));
                        }
                    }
                }
            }
        }
    }
    report(&fails);
}
