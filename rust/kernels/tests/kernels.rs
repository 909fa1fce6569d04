//! Every SIMD path against the scalar references, for every format and every available ISA.

use half::f16;
use hologram_kernels::{
    dequantize_row_isa, matmul_isa, matmul_multi_isa, quantize_row_isa, simd, vec_dot_f32, Isa,
    KernelError, MatmulJob, Pool, QuantType,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const TYPES: [QuantType; 8] = [
    QuantType::F32,
    QuantType::F16,
    QuantType::BF16,
    QuantType::Q4_0,
    QuantType::Q4_1,
    QuantType::Q5_0,
    QuantType::Q5_1,
    QuantType::Q8_0,
];

#[derive(Clone, Copy, Debug)]
enum Kind {
    Random,
    Zero,
    MaxQuants,
    NegScale,
    MinQuants,
}

fn put_f16(b: &mut [u8], v: f32) {
    b.copy_from_slice(&f16::from_f32(v).to_le_bytes());
}

/// `n` elements of type `t`: random bytes with sane scales, or an adversarial pattern.
fn make_row(t: QuantType, n: usize, kind: Kind, rng: &mut StdRng) -> Vec<u8> {
    let bytes = t.row_bytes(n).unwrap();
    let mut v: Vec<u8> = (0..bytes).map(|_| rng.gen()).collect();
    match t {
        QuantType::F32 => {
            for c in v.chunks_exact_mut(4) {
                let x: f32 = match kind {
                    Kind::Zero => 0.0,
                    _ => rng.gen_range(-2.0..2.0),
                };
                c.copy_from_slice(&x.to_le_bytes());
            }
        }
        QuantType::F16 | QuantType::BF16 => {
            for c in v.chunks_exact_mut(2) {
                let x: f32 = match kind {
                    Kind::Zero => 0.0,
                    _ => rng.gen_range(-2.0..2.0),
                };
                let b = if t == QuantType::F16 {
                    f16::from_f32(x).to_le_bytes()
                } else {
                    half::bf16::from_f32(x).to_le_bytes()
                };
                c.copy_from_slice(&b);
            }
        }
        _ => {
            let ts = t.type_size();
            let has_m = matches!(t, QuantType::Q4_1 | QuantType::Q5_1);
            for blk in v.chunks_exact_mut(ts) {
                let mut d: f32 = rng.gen_range(0.001..0.05);
                if matches!(kind, Kind::NegScale) || rng.gen_bool(0.3) {
                    d = -d;
                }
                put_f16(&mut blk[0..2], d);
                if has_m {
                    put_f16(&mut blk[2..4], rng.gen_range(-0.5..0.5));
                }
                let q0 = if has_m { 4 } else { 2 };
                match kind {
                    Kind::Zero => blk.fill(0),
                    Kind::MaxQuants => blk[q0..].fill(0xFF),
                    Kind::MinQuants => blk[q0..].fill(if t == QuantType::Q8_0 { 0x80 } else { 0 }),
                    _ => {}
                }
            }
        }
    }
    v
}

fn rand_x(n: usize, rng: &mut StdRng) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

fn sizes(t: QuantType) -> Vec<usize> {
    let bs = t.block_size();
    if bs == 1 {
        vec![1, 3, 7, 33, 100, 1056]
    } else {
        [1usize, 3, 7, 33].iter().map(|b| b * bs).collect()
    }
}

const KINDS: [Kind; 5] = [
    Kind::Random,
    Kind::Zero,
    Kind::MaxQuants,
    Kind::NegScale,
    Kind::MinQuants,
];

#[test]
fn isa_detection() {
    let av = simd::available();
    assert_eq!(av[0], Isa::Scalar);
    assert!(av.contains(&simd::detected()));
    assert!(av.contains(&simd::active()));
    for i in Isa::ALL {
        assert_eq!(Isa::from_name(i.name()), Some(i));
    }
    assert_eq!(Isa::from_name("sse"), None);
    eprintln!("available: {:?}, detected {:?}", av, simd::detected());
}

#[test]
fn dequantize_simd_equals_scalar_exactly() {
    let mut rng = StdRng::seed_from_u64(1);
    for isa in simd::available() {
        for t in TYPES {
            for n in sizes(t) {
                for kind in KINDS {
                    let w = make_row(t, n, kind, &mut rng);
                    let mut a = vec![0f32; n];
                    let mut b = vec![1f32; n];
                    dequantize_row_isa(Isa::Scalar, t, &w, &mut a).unwrap();
                    dequantize_row_isa(isa, t, &w, &mut b).unwrap();
                    let ab: Vec<u32> = a.iter().map(|v| v.to_bits()).collect();
                    let bb: Vec<u32> = b.iter().map(|v| v.to_bits()).collect();
                    assert_eq!(ab, bb, "{isa:?} {t:?} n={n} {kind:?}");
                    assert!(a.iter().all(|v| v.is_finite()));
                }
            }
        }
    }
}

#[test]
fn quantize_activations_simd_equals_scalar() {
    let mut rng = StdRng::seed_from_u64(2);
    for isa in simd::available() {
        for vt in [QuantType::Q8_0, QuantType::Q8_1] {
            for nb in [1usize, 3, 7, 33] {
                let mut x = rand_x(nb * 32, &mut rng);
                x[..32].fill(0.0); // all-zero block: d = 0
                if nb > 1 {
                    x[40] = 3.5;
                }
                let n = vt.row_bytes(x.len()).unwrap();
                let (mut a, mut b) = (vec![0u8; n], vec![0u8; n]);
                quantize_row_isa(Isa::Scalar, vt, &x, &mut a).unwrap();
                quantize_row_isa(isa, vt, &x, &mut b).unwrap();
                assert_eq!(a, b, "{isa:?} {vt:?} nb={nb}");
            }
        }
    }
}

fn f32_dot(t: QuantType, w: &[u8], x: &[f32]) -> (f32, f32) {
    let mut d = vec![0f32; x.len()];
    dequantize_row_isa(Isa::Scalar, t, w, &mut d).unwrap();
    let dot = d
        .iter()
        .zip(x)
        .map(|(a, b)| f64::from(*a) * f64::from(*b))
        .sum::<f64>();
    let mag = d
        .iter()
        .zip(x)
        .map(|(a, b)| (f64::from(*a) * f64::from(*b)).abs())
        .sum::<f64>();
    (dot as f32, mag as f32)
}

#[test]
fn vec_dot_simd_vs_scalar_and_vs_f32() {
    let mut rng = StdRng::seed_from_u64(3);
    let mut scratch = Vec::new();
    for isa in simd::available() {
        for t in TYPES {
            for n in sizes(t) {
                for kind in KINDS {
                    let w = make_row(t, n, kind, &mut rng);
                    let x = rand_x(n, &mut rng);
                    let r = vec_dot_f32(Isa::Scalar, t, &w, &x, &mut scratch).unwrap();
                    let s = vec_dot_f32(isa, t, &w, &x, &mut scratch).unwrap();
                    let (exact, mag) = f32_dot(t, &w, &x);
                    let tol = 1e-5 * mag + 1e-6;
                    assert!(
                        (r - s).abs() <= tol,
                        "{isa:?} {t:?} n={n} {kind:?}: simd {s} ref {r}"
                    );
                    // Activation quantization error (Q8: |dx| <= amax/254 per element).
                    let qtol = if t.block_size() == 1 {
                        1e-5 * mag
                    } else {
                        1e-2 * mag
                    } + 1e-5;
                    assert!(
                        (exact - s).abs() <= qtol,
                        "{isa:?} {t:?} n={n} {kind:?}: {s} vs f32 {exact}"
                    );
                }
            }
        }
    }
}

#[test]
fn ggml_synthetic_dot_error() {
    // ggml test-quantize-fns: dot product error threshold 0.02 on 0.1 + 2 cos(i + offset).
    // Here the weights are given (random sane blocks), activations are the synthetic vector.
    let mut rng = StdRng::seed_from_u64(4);
    let mut scratch = Vec::new();
    let n = 4096;
    let x: Vec<f32> = (0..n).map(|i| 0.1 + 2.0 * (i as f32 + 1.0).cos()).collect();
    for isa in simd::available() {
        for t in TYPES {
            let w = make_row(t, n, Kind::Random, &mut rng);
            let s = vec_dot_f32(isa, t, &w, &x, &mut scratch).unwrap();
            let (exact, _) = f32_dot(t, &w, &x);
            let err = (s - exact).abs() / n as f32;
            assert!(err < 0.02 / 32.0, "{isa:?} {t:?}: err/n {err}");
        }
    }
}

#[test]
fn matmul_equals_per_row_vec_dot() {
    let mut rng = StdRng::seed_from_u64(5);
    let pools = [Pool::new(1).unwrap(), Pool::new(2).unwrap()];
    let mut scratch = Vec::new();
    let mut s2 = Vec::new();
    for isa in simd::available() {
        for t in TYPES {
            for &(rows, cols) in &[(1usize, 32usize), (17, 64), (33, 96), (50, 576)] {
                let w: Vec<u8> = (0..rows)
                    .flat_map(|_| make_row(t, cols, Kind::Random, &mut rng))
                    .collect();
                let rb = t.row_bytes(cols).unwrap();
                for n_tok in [1usize, 3, 4, 17, 64] {
                    let x = rand_x(n_tok * cols, &mut rng);
                    for pool in &pools {
                        let mut out = vec![f32::NAN; n_tok * rows];
                        matmul_isa(
                            isa,
                            pool,
                            &w,
                            t,
                            rows,
                            cols,
                            &x,
                            n_tok,
                            &mut out,
                            &mut scratch,
                        )
                        .unwrap();
                        for tk in 0..n_tok {
                            let xr = &x[tk * cols..(tk + 1) * cols];
                            for r in 0..rows {
                                let wr = &w[r * rb..(r + 1) * rb];
                                let e = vec_dot_f32(isa, t, wr, xr, &mut s2).unwrap();
                                let (_, mag) = f32_dot(t, wr, xr);
                                let got = out[tk * rows + r];
                                assert!(
                                    (got - e).abs() <= 2e-5 * mag + 1e-6,
                                    "{isa:?} {t:?} {rows}x{cols} n_tok={n_tok} t={tk} r={r}: {got} vs {e}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The tiled AVX2 kernels against the scalar reference: every tile remainder (rows % 4,
/// tokens % 4), several row panels, the parallel and inline paths.
#[test]
fn tiled_matmul_vs_scalar_reference() {
    let mut rng = StdRng::seed_from_u64(7);
    let pools = [Pool::new(1).unwrap(), Pool::new(2).unwrap()];
    let mut scratch = Vec::new();
    let mut s2 = Vec::new();
    let qtypes = [
        QuantType::Q4_0,
        QuantType::Q4_1,
        QuantType::Q5_0,
        QuantType::Q5_1,
        QuantType::Q8_0,
    ];
    for isa in simd::available() {
        for t in qtypes {
            for &(rows, cols) in &[(7usize, 64usize), (130, 1536), (301, 96)] {
                let w: Vec<u8> = (0..rows)
                    .flat_map(|_| make_row(t, cols, Kind::Random, &mut rng))
                    .collect();
                let rb = t.row_bytes(cols).unwrap();
                for n_tok in [1usize, 2, 5, 7, 9] {
                    let x = rand_x(n_tok * cols, &mut rng);
                    for pool in &pools {
                        let mut out = vec![f32::NAN; n_tok * rows];
                        matmul_isa(
                            isa,
                            pool,
                            &w,
                            t,
                            rows,
                            cols,
                            &x,
                            n_tok,
                            &mut out,
                            &mut scratch,
                        )
                        .unwrap();
                        for tk in 0..n_tok {
                            let xr = &x[tk * cols..(tk + 1) * cols];
                            for r in 0..rows {
                                let wr = &w[r * rb..(r + 1) * rb];
                                let e = vec_dot_f32(Isa::Scalar, t, wr, xr, &mut s2).unwrap();
                                let (_, mag) = f32_dot(t, wr, xr);
                                let got = out[tk * rows + r];
                                assert!(
                                    (got - e).abs() <= 2e-5 * mag + 1e-6,
                                    "{isa:?} {t:?} {rows}x{cols} n_tok={n_tok} t={tk} r={r}: {got} vs {e}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn matmul_multi_equals_separate_matmuls() {
    let mut rng = StdRng::seed_from_u64(8);
    let pools = [Pool::new(1).unwrap(), Pool::new(2).unwrap()];
    let cols = 576;
    let specs = [
        (QuantType::Q4_1, 64usize),
        (QuantType::Q8_0, 24),
        (QuantType::Q5_0, 33),
        (QuantType::Q4_0, 8),
        (QuantType::F16, 5),
    ];
    let ws: Vec<Vec<u8>> = specs
        .iter()
        .map(|&(t, rows)| make_row(t, rows * cols, Kind::Random, &mut rng))
        .collect();
    let mut scratch = Vec::new();
    for isa in simd::available() {
        for n_tok in [1usize, 3, 20] {
            let x = rand_x(n_tok * cols, &mut rng);
            for pool in &pools {
                // With and without the float job (which takes the per-job fallback).
                for n_jobs in [4usize, 5] {
                    let mut outs: Vec<Vec<f32>> = specs[..n_jobs]
                        .iter()
                        .map(|&(_, r)| vec![f32::NAN; n_tok * r])
                        .collect();
                    let mut jobs: Vec<MatmulJob<'_>> = specs[..n_jobs]
                        .iter()
                        .zip(&ws)
                        .zip(outs.iter_mut())
                        .map(|((&(wt, rows), w), out)| MatmulJob { w, wt, rows, out })
                        .collect();
                    matmul_multi_isa(isa, pool, &mut jobs, cols, &x, n_tok, &mut scratch).unwrap();
                    for ((&(wt, rows), w), got) in specs.iter().zip(&ws).zip(&outs) {
                        let mut e = vec![0f32; n_tok * rows];
                        matmul_isa(
                            isa,
                            pool,
                            w,
                            wt,
                            rows,
                            cols,
                            &x,
                            n_tok,
                            &mut e,
                            &mut scratch,
                        )
                        .unwrap();
                        assert_eq!(got, &e, "{isa:?} {wt:?} n_tok={n_tok}");
                    }
                }
            }
        }
    }
}

#[test]
fn avx512_is_chosen_when_present() {
    // Run-time detection picks the AVX-512 tier whenever the CPU has its features.
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as f;
        let has = f!("avx512f") && f!("avx512bw") && f!("avx512vl") && f!("avx512vnni");
        assert_eq!(simd::available().contains(&Isa::Avx512), has);
        if has {
            assert_eq!(simd::detected(), Isa::Avx512);
        }
    }
}

#[test]
fn scratch_is_reused() {
    let mut rng = StdRng::seed_from_u64(6);
    let pool = Pool::new(2).unwrap();
    let (rows, cols, n_tok) = (64, 256, 8);
    let t = QuantType::Q4_1;
    let w = make_row(t, rows * cols, Kind::Random, &mut rng);
    let x = rand_x(n_tok * cols, &mut rng);
    let mut out = vec![0f32; n_tok * rows];
    let mut scratch = Vec::new();
    matmul_isa(
        simd::active(),
        &pool,
        &w,
        t,
        rows,
        cols,
        &x,
        n_tok,
        &mut out,
        &mut scratch,
    )
    .unwrap();
    let (p, c) = (scratch.as_ptr(), scratch.capacity());
    for _ in 0..3 {
        matmul_isa(
            simd::active(),
            &pool,
            &w,
            t,
            rows,
            cols,
            &x,
            n_tok,
            &mut out,
            &mut scratch,
        )
        .unwrap();
    }
    assert_eq!((p, c), (scratch.as_ptr(), scratch.capacity()));
}

#[test]
fn bad_inputs_are_errors() {
    let pool = Pool::new(1).unwrap();
    let mut scratch = Vec::new();
    let mut out = vec![0f32; 32];
    let t = QuantType::Q4_0;
    // Not a whole block.
    assert!(matches!(
        dequantize_row_isa(Isa::Scalar, t, &[0u8; 18], &mut [0f32; 31]),
        Err(KernelError::NotBlockAligned { .. })
    ));
    // Wrong src length.
    assert!(matches!(
        dequantize_row_isa(Isa::Scalar, t, &[0u8; 17], &mut [0f32; 32]),
        Err(KernelError::LengthMismatch { .. })
    ));
    // Unsupported types.
    assert!(matches!(
        dequantize_row_isa(Isa::Scalar, QuantType::Q8_K, &[0u8; 292], &mut [0f32; 256]),
        Err(KernelError::UnsupportedType(_))
    ));
    assert!(matches!(
        vec_dot_f32(
            Isa::Scalar,
            QuantType::Q8_1,
            &[0u8; 36],
            &[0f32; 32],
            &mut scratch
        ),
        Err(KernelError::UnsupportedType(_))
    ));
    // Shape mismatches.
    let w = vec![0u8; 18];
    assert!(matmul_isa(
        Isa::Scalar,
        &pool,
        &w,
        t,
        1,
        32,
        &[0.0; 31],
        1,
        &mut out[..1],
        &mut scratch
    )
    .is_err());
    assert!(matmul_isa(
        Isa::Scalar,
        &pool,
        &w,
        t,
        2,
        32,
        &[0.0; 32],
        1,
        &mut out[..2],
        &mut scratch
    )
    .is_err());
    assert!(matmul_isa(
        Isa::Scalar,
        &pool,
        &w,
        t,
        1,
        32,
        &[0.0; 32],
        1,
        &mut out[..2],
        &mut scratch
    )
    .is_err());
    assert!(matmul_isa(
        Isa::Scalar,
        &pool,
        &w,
        t,
        1,
        33,
        &[0.0; 33],
        1,
        &mut out[..1],
        &mut scratch
    )
    .is_err());
    // Unavailable ISA.
    if let Some(i) = Isa::ALL.into_iter().find(|i| !i.is_available()) {
        assert_eq!(
            dequantize_row_isa(i, t, &w, &mut out),
            Err(KernelError::UnsupportedIsa(i))
        );
    }
    // Empty is fine.
    assert!(matmul_isa(
        Isa::Scalar,
        &pool,
        &[],
        t,
        0,
        32,
        &[0.0; 32],
        1,
        &mut [],
        &mut scratch
    )
    .is_ok());
}

/// Q4_0 / Q5_0 with many tokens convert each row panel to Q8_0 first: several panels, a row
/// count that is not a multiple of the tile, token counts around the conversion threshold,
/// against per-row scalar reference dots, 1 and 2 threads.
#[test]
fn converted_panel_matmul_vs_scalar_reference() {
    let mut rng = StdRng::seed_from_u64(9);
    let pools = [Pool::new(1).unwrap(), Pool::new(2).unwrap()];
    let mut scratch = Vec::new();
    let mut s2 = Vec::new();
    let (rows, cols) = (401usize, 640usize);
    for isa in simd::available() {
        for t in [QuantType::Q4_0, QuantType::Q5_0] {
            let w: Vec<u8> = (0..rows)
                .flat_map(|_| make_row(t, cols, Kind::Random, &mut rng))
                .collect();
            let rb = t.row_bytes(cols).unwrap();
            for n_tok in [8usize, 9, 13, 64] {
                let x = rand_x(n_tok * cols, &mut rng);
                for pool in &pools {
                    let mut out = vec![f32::NAN; n_tok * rows];
                    matmul_isa(
                        isa,
                        pool,
                        &w,
                        t,
                        rows,
                        cols,
                        &x,
                        n_tok,
                        &mut out,
                        &mut scratch,
                    )
                    .unwrap();
                    for tk in 0..n_tok {
                        let xr = &x[tk * cols..(tk + 1) * cols];
                        for r in 0..rows {
                            let wr = &w[r * rb..(r + 1) * rb];
                            let e = vec_dot_f32(Isa::Scalar, t, wr, xr, &mut s2).unwrap();
                            let (_, mag) = f32_dot(t, wr, xr);
                            let got = out[tk * rows + r];
                            assert!(
                                (got - e).abs() <= 1e-5 * mag + 1e-30,
                                "{isa:?} {t:?} n_tok={n_tok} t={tk} r={r}: {got} vs {e}"
                            );
                        }
                    }
                }
            }
        }
    }
}
