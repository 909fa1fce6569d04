//! F32 / F16 / BF16 matmul with several tokens (the AVX2 register-tiled float GEMM) against the
//! scalar per-row path.

use half::{bf16, f16};
use hologram_kernels::{matmul_isa, Isa, Pool, QuantType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const TOKENS: [usize; 6] = [2, 3, 5, 8, 17, 64];

fn weights(t: QuantType, rows: usize, cols: usize, rng: &mut StdRng) -> (Vec<u8>, Vec<f32>) {
    let vals: Vec<f32> = (0..rows * cols)
        .map(|_| rng.gen_range(-1.0f32..1.0))
        .collect();
    let mut bytes = Vec::new();
    let mut exact = Vec::new();
    for &v in &vals {
        match t {
            QuantType::F32 => {
                bytes.extend_from_slice(&v.to_le_bytes());
                exact.push(v);
            }
            QuantType::F16 => {
                let h = f16::from_f32(v);
                bytes.extend_from_slice(&h.to_le_bytes());
                exact.push(h.to_f32());
            }
            QuantType::BF16 => {
                let h = bf16::from_f32(v);
                bytes.extend_from_slice(&h.to_le_bytes());
                exact.push(h.to_f32());
            }
            _ => unreachable!(),
        }
    }
    (bytes, exact)
}

fn check(t: QuantType, rows: usize, cols: usize, n_tok: usize, threads: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (w, wf) = weights(t, rows, cols, &mut rng);
    let x: Vec<f32> = (0..n_tok * cols)
        .map(|_| rng.gen_range(-2.0f32..2.0))
        .collect();
    let pool = Pool::new(threads).unwrap();
    let mut scratch = Vec::new();
    let mut want = vec![0.0f32; n_tok * rows];
    matmul_isa(
        Isa::Scalar,
        &pool,
        &w,
        t,
        rows,
        cols,
        &x,
        n_tok,
        &mut want,
        &mut scratch,
    )
    .unwrap();
    let mut got = vec![f32::NAN; n_tok * rows];
    matmul_isa(
        Isa::Avx2,
        &pool,
        &w,
        t,
        rows,
        cols,
        &x,
        n_tok,
        &mut got,
        &mut scratch,
    )
    .unwrap();
    for tk in 0..n_tok {
        for r in 0..rows {
            let i = tk * rows + r;
            // Error relative to sum |w| |x| (the scale of the rounding error of any order).
            let mag: f64 = (0..cols)
                .map(|k| (wf[r * cols + k] as f64 * x[tk * cols + k] as f64).abs())
                .sum();
            let err = (got[i] as f64 - want[i] as f64).abs() / mag.max(1e-30);
            assert!(
                err < 1e-5,
                "{t:?} rows {rows} cols {cols} n_tok {n_tok} threads {threads}: out[{tk},{r}] \
                 got {} want {} (rel {err:e})",
                got[i],
                want[i]
            );
        }
    }
}

#[test]
fn float_gemm_matches_scalar() {
    if !Isa::Avx2.is_available() {
        eprintln!("AVX2 not available; skipping");
        return;
    }
    let shapes: &[(usize, usize)] = &[
        (1, 1),
        (5, 3),
        (7, 17),
        (13, 64),
        (6, 100),
        (37, 389),
        (130, 384),
    ];
    let mut seed = 1;
    for t in [QuantType::F32, QuantType::F16, QuantType::BF16] {
        for &(rows, cols) in shapes {
            for n_tok in TOKENS {
                for threads in [1, 2] {
                    seed += 1;
                    check(t, rows, cols, n_tok, threads, seed);
                }
            }
        }
    }
}

#[test]
fn float_gemm_large_parallel() {
    if !Isa::Avx2.is_available() {
        return;
    }
    // Several token blocks and row chunks (cols 1536 -> 30-token blocks).
    for t in [QuantType::F32, QuantType::F16] {
        check(t, 389, 1536, 67, 2, 7);
        check(t, 1536, 384, 130, 2, 8);
        check(t, 1536, 384, 130, 1, 9);
    }
}

/// A token's outputs do not depend on the batch it is in (bitwise), for any tile position.
#[test]
fn float_gemm_batch_independent() {
    if !Isa::Avx2.is_available() {
        return;
    }
    let (rows, cols, n_tok) = (11, 203, 9);
    for t in [QuantType::F32, QuantType::F16] {
        let mut rng = StdRng::seed_from_u64(11);
        let (w, _) = weights(t, rows, cols, &mut rng);
        let x: Vec<f32> = (0..n_tok * cols)
            .map(|_| rng.gen_range(-2.0f32..2.0))
            .collect();
        let pool = Pool::new(1).unwrap();
        let mut scratch = Vec::new();
        let mut full = vec![0.0f32; n_tok * rows];
        matmul_isa(
            Isa::Avx2,
            &pool,
            &w,
            t,
            rows,
            cols,
            &x,
            n_tok,
            &mut full,
            &mut scratch,
        )
        .unwrap();
        for (a, b) in [(0, 2), (2, 5), (5, 9), (3, 9)] {
            let mut part = vec![0.0f32; (b - a) * rows];
            matmul_isa(
                Isa::Avx2,
                &pool,
                &w,
                t,
                rows,
                cols,
                &x[a * cols..b * cols],
                b - a,
                &mut part,
                &mut scratch,
            )
            .unwrap();
            assert_eq!(part, full[a * rows..b * rows], "{t:?} tokens {a}..{b}");
        }
    }
}
