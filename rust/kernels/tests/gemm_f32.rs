//! The packed f32 GEMM (`gemm_f32`): every tier this CPU has against the scalar reference bit
//! for bit, and against a naive f64 product within tolerance, for shapes that are not
//! multiples of the blocking, with and without bias, on 1 and 2 threads.

use hologram_kernels::simd::available;
use hologram_kernels::{gemm_f32, gemm_f32_post, gemm_f32_rows, Isa, KernelError, PackedF32, Pool};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// (m, n, k): odd sizes around the tile (6 / 12 rows), panel (16 / 32 columns) and K block
/// (192) sizes, plus the MiniLM layer shapes.
const SHAPES: [(usize, usize, usize); 11] = [
    (29, 45, 401),
    (1, 1, 1),
    (1, 384, 384),
    (5, 17, 3),
    (7, 33, 19),
    (13, 100, 64),
    (6, 32, 384),
    (50, 70, 129),
    (97, 48, 31),
    (64, 1536, 384),
    (37, 384, 1536),
];

fn rand_vec(rng: &mut StdRng, n: usize, lim: f32) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-lim..lim)).collect()
}

fn naive(a: &[f32], w: &[f32], bias: Option<&[f32]>, m: usize, n: usize, k: usize) -> Vec<f64> {
    let mut out = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0f64;
            for kk in 0..k {
                s += a[i * k + kk] as f64 * w[j * k + kk] as f64;
            }
            out[i * n + j] = s + bias.map_or(0.0, |b| b[j] as f64);
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn run(
    isa: Isa,
    pool: &Pool,
    a: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    m: usize,
    n: usize,
    k: usize,
) -> Vec<f32> {
    let p = PackedF32::pack_isa(isa, w, n, k).unwrap();
    assert_eq!(p.isa(), isa);
    assert_eq!((p.n(), p.k()), (n, k));
    // Poison the output: every element must be written.
    let mut c = vec![f32::NAN; m * n];
    gemm_f32(pool, a, m, &p, bias, &mut c).unwrap();
    c
}

#[test]
fn every_tier_is_bit_equal_to_scalar_and_close_to_f64() {
    let tiers = available();
    assert!(tiers.contains(&Isa::Scalar));
    let pools = [Pool::new(1).unwrap(), Pool::new(2).unwrap()];
    for (si, &(m, n, k)) in SHAPES.iter().enumerate() {
        let mut rng = StdRng::seed_from_u64(1000 + si as u64);
        let a = rand_vec(&mut rng, m * k, 2.0);
        let w = rand_vec(&mut rng, n * k, 1.0);
        let b = rand_vec(&mut rng, n, 0.5);
        for bias in [None, Some(&b[..])] {
            let want = run(Isa::Scalar, &pools[0], &a, &w, bias, m, n, k);
            let exact = naive(&a, &w, bias, m, n, k);
            for (i, (&g, &e)) in want.iter().zip(&exact).enumerate() {
                // |error| of an f32 FMA chain: about k ulps of the sum of |terms|.
                let tol = 1e-6 * (k as f64).sqrt() * 4.0 * (1.0 + e.abs()) + 1e-5;
                assert!(
                    (g as f64 - e).abs() <= tol,
                    "scalar ({m},{n},{k}) [{i}]: {g} vs {e}"
                );
            }
            for &isa in &tiers {
                for pool in &pools {
                    let got = run(isa, pool, &a, &w, bias, m, n, k);
                    for (i, (g, s)) in got.iter().zip(&want).enumerate() {
                        assert_eq!(
                            g.to_bits(),
                            s.to_bits(),
                            "{isa:?} threads {} ({m},{n},{k}) bias {} [{i}]: {g} vs {s}",
                            pool.max_threads(),
                            bias.is_some()
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn rows_do_not_depend_on_the_batch() {
    // A row's outputs are the same bits alone or anywhere in a larger batch.
    let (n, k) = (70, 45);
    let mut rng = StdRng::seed_from_u64(7);
    let w = rand_vec(&mut rng, n * k, 1.0);
    let b = rand_vec(&mut rng, n, 0.5);
    let pool = Pool::new(2).unwrap();
    for &isa in &available() {
        let p = PackedF32::pack_isa(isa, &w, n, k).unwrap();
        let m = 41;
        let a = rand_vec(&mut rng, m * k, 2.0);
        let mut all = vec![0f32; m * n];
        gemm_f32(&pool, &a, m, &p, Some(&b), &mut all).unwrap();
        for i in [0, 5, 6, 23, 40] {
            let mut one = vec![0f32; n];
            gemm_f32(&pool, &a[i * k..(i + 1) * k], 1, &p, Some(&b), &mut one).unwrap();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&one),
                bits(&all[i * n..(i + 1) * n]),
                "{isa:?} row {i}"
            );
        }
    }
}

#[test]
fn bad_lengths_are_errors() {
    let pool = Pool::new(1).unwrap();
    let w = vec![1f32; 6];
    assert!(matches!(
        PackedF32::pack(&w, 4, 2),
        Err(KernelError::LengthMismatch { .. })
    ));
    let p = PackedF32::pack(&w, 3, 2).unwrap();
    let mut c = vec![0f32; 6];
    assert!(gemm_f32(&pool, &[1.0; 3], 2, &p, None, &mut c).is_err());
    assert!(gemm_f32(&pool, &[1.0; 4], 2, &p, None, &mut c[..5]).is_err());
    assert!(gemm_f32(&pool, &[1.0; 4], 2, &p, Some(&[0.0; 2]), &mut c).is_err());
    gemm_f32(&pool, &[1.0, 2.0, 3.0, 4.0], 2, &p, Some(&[0.5; 3]), &mut c).unwrap();
    assert_eq!(c, vec![3.5, 3.5, 3.5, 7.5, 7.5, 7.5]);
    // Empty batch: nothing to do.
    gemm_f32(&pool, &[], 0, &p, None, &mut []).unwrap();
}

#[test]
fn post_op_runs_once_on_every_output() {
    let pools = [Pool::new(1).unwrap(), Pool::new(2).unwrap()];
    for (si, &(m, n, k)) in SHAPES.iter().enumerate() {
        let mut rng = StdRng::seed_from_u64(500 + si as u64);
        let a = rand_vec(&mut rng, m * k, 2.0);
        let w = rand_vec(&mut rng, n * k, 1.0);
        let b = rand_vec(&mut rng, n, 0.5);
        for &isa in &available() {
            let p = PackedF32::pack_isa(isa, &w, n, k).unwrap();
            for pool in &pools {
                let mut plain = vec![0f32; m * n];
                gemm_f32(pool, &a, m, &p, Some(&b), &mut plain).unwrap();
                // Not idempotent: applied twice (or missed) it would show.
                let op = |v: &mut [f32]| v.iter_mut().for_each(|x| *x = *x * 2.0 + 1.0);
                let mut fused = vec![f32::NAN; m * n];
                gemm_f32_post(pool, &a, m, &p, Some(&b), &mut fused, Some(&op)).unwrap();
                for (i, (f, x)) in fused.iter().zip(&plain).enumerate() {
                    assert_eq!(
                        f.to_bits(),
                        (x * 2.0 + 1.0).to_bits(),
                        "{isa:?} ({m},{n},{k}) [{i}]"
                    );
                }
            }
        }
    }
}

#[test]
fn row_op_gets_every_whole_row_once() {
    let pools = [Pool::new(1).unwrap(), Pool::new(2).unwrap()];
    for (si, &(m, n, k)) in SHAPES.iter().enumerate() {
        let mut rng = StdRng::seed_from_u64(700 + si as u64);
        let a = rand_vec(&mut rng, m * k, 2.0);
        let w = rand_vec(&mut rng, n * k, 1.0);
        let b = rand_vec(&mut rng, n, 0.5);
        for &isa in &available() {
            let p = PackedF32::pack_isa(isa, &w, n, k).unwrap();
            for pool in &pools {
                let mut plain = vec![0f32; m * n];
                gemm_f32(pool, &a, m, &p, Some(&b), &mut plain).unwrap();
                let calls = std::sync::Mutex::new(vec![0u32; m]);
                // Depends on the whole row and its index: a partial row, a wrong index or a
                // second call would show.
                let op = |i: usize, row: &mut [f32]| {
                    assert_eq!(row.len(), n);
                    calls.lock().unwrap()[i] += 1;
                    let s: f32 = row.iter().sum();
                    row.iter_mut().for_each(|x| *x = *x * 2.0 + s + i as f32);
                };
                let mut fused = vec![f32::NAN; m * n];
                gemm_f32_rows(pool, &a, m, &p, Some(&b), &mut fused, &op).unwrap();
                assert!(calls.into_inner().unwrap().iter().all(|&c| c == 1));
                for (i, (fr, xr)) in fused.chunks(n).zip(plain.chunks(n)).enumerate() {
                    let s: f32 = xr.iter().sum();
                    for (j, (f, x)) in fr.iter().zip(xr).enumerate() {
                        assert_eq!(
                            f.to_bits(),
                            (x * 2.0 + s + i as f32).to_bits(),
                            "{isa:?} ({m},{n},{k}) [{i},{j}]"
                        );
                    }
                }
            }
        }
    }
}
