//! K-quants (Q2_K..Q6_K, Q8_K activations): every SIMD path against the scalar references, the
//! references against f64 dots of dequantized values, and the matmul against per-row dots.

use half::f16;
use hologram_kernels::quant::q8_k;
use hologram_kernels::{
    dequantize_row_isa, matmul_isa, quantize_row_isa, simd, vec_dot_f32, Isa, KernelError, Pool,
    QuantType,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const K_TYPES: [QuantType; 5] = [
    QuantType::Q2_K,
    QuantType::Q3_K,
    QuantType::Q4_K,
    QuantType::Q5_K,
    QuantType::Q6_K,
];

const QK: usize = 256;

#[derive(Clone, Copy, Debug)]
enum Kind {
    Random,
    Zero,
    /// Every quant / scale / mask byte 0xFF (largest unsigned quants, Q6_K scales -1).
    AllOnes,
    /// Every quant / scale / mask byte 0 (Q3_K: all high bits clear -> -4 offsets).
    AllZeroBits,
    /// Random bits, negative super-block scales.
    NegScale,
    /// Extreme sub-block scales (6-bit 63 / Q6_K -128) with random quants.
    MaxScales,
}

const KINDS: [Kind; 6] = [
    Kind::Random,
    Kind::Zero,
    Kind::AllOnes,
    Kind::AllZeroBits,
    Kind::NegScale,
    Kind::MaxScales,
];

/// Byte offsets of the f16 super-block scales (d, then dmin if any) in a block of `t`.
fn f16_fields(t: QuantType) -> &'static [usize] {
    match t {
        QuantType::Q2_K => &[80, 82],
        QuantType::Q3_K => &[108],
        QuantType::Q4_K | QuantType::Q5_K => &[0, 2],
        QuantType::Q6_K => &[208],
        _ => unreachable!(),
    }
}

/// Byte range of the sub-block scales of `t`.
fn scale_bytes(t: QuantType) -> std::ops::Range<usize> {
    match t {
        QuantType::Q2_K => 0..16,
        QuantType::Q3_K => 96..108,
        QuantType::Q4_K | QuantType::Q5_K => 4..16,
        QuantType::Q6_K => 192..208,
        _ => unreachable!(),
    }
}

fn put_f16(b: &mut [u8], v: f32) {
    b.copy_from_slice(&f16::from_f32(v).to_le_bytes());
}

/// `nb` blocks of `t`.
fn make_row(t: QuantType, nb: usize, kind: Kind, rng: &mut StdRng) -> Vec<u8> {
    let ts = t.type_size();
    let mut v: Vec<u8> = (0..nb * ts).map(|_| rng.gen()).collect();
    for blk in v.chunks_exact_mut(ts) {
        match kind {
            Kind::Zero | Kind::AllZeroBits => blk.fill(0),
            Kind::AllOnes => blk.fill(0xFF),
            Kind::MaxScales => {
                let fill = if t == QuantType::Q6_K { 0x80 } else { 0xFF };
                blk[scale_bytes(t)].fill(fill);
            }
            _ => {}
        }
        for (i, &off) in f16_fields(t).iter().enumerate() {
            let mut s: f32 = rng.gen_range(0.0005..0.02);
            if matches!(kind, Kind::NegScale) || (i == 0 && rng.gen_bool(0.2)) {
                s = -s;
            }
            if matches!(kind, Kind::Zero) {
                s = 0.0;
            }
            put_f16(&mut blk[off..off + 2], s);
        }
    }
    v
}

fn rand_x(n: usize, rng: &mut StdRng) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

/// Adversarial activations: outliers, ties of +-amax, zero blocks, constant blocks, tiny values.
fn adversarial_x(n: usize, case: usize, rng: &mut StdRng) -> Vec<f32> {
    let mut x = rand_x(n, rng);
    match case {
        0 => {}
        1 => x[..QK].fill(0.0),
        2 => {
            // tie between +amax and -amax: the first one sets the sign
            x[5] = -3.0;
            x[77] = 3.0;
        }
        3 => x.iter_mut().for_each(|v| *v = 0.75),
        4 => {
            // one huge outlier per block: everything else rounds to 0 / +-1
            for b in x.chunks_exact_mut(QK) {
                b[17] = 1.0e4;
            }
        }
        5 => x.iter_mut().for_each(|v| *v *= 1e-30),
        6 => {
            // values exactly at rounding ties: amax 127 -> iscale -1, x = k + 0.5
            for (i, v) in x.iter_mut().enumerate() {
                *v = (i % 64) as f32 - 31.5;
            }
            x[0] = 127.0;
        }
        _ => x.iter_mut().for_each(|v| *v = -v.abs()),
    }
    x
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn dispatch_covers_k_quants() {
    for t in K_TYPES {
        assert!(hologram_kernels::supports(t), "{t:?}");
        assert_eq!(t.vec_dot_type(), QuantType::Q8_K);
    }
    assert!(!hologram_kernels::supports(QuantType::Q8_K));
}

#[test]
fn dequantize_simd_equals_scalar_exactly() {
    let mut rng = StdRng::seed_from_u64(11);
    for isa in simd::available() {
        for t in K_TYPES {
            for nb in [1usize, 3, 7] {
                for kind in KINDS {
                    let w = make_row(t, nb, kind, &mut rng);
                    let mut a = vec![0f32; nb * QK];
                    let mut b = vec![f32::NAN; nb * QK];
                    dequantize_row_isa(Isa::Scalar, t, &w, &mut a).unwrap();
                    dequantize_row_isa(isa, t, &w, &mut b).unwrap();
                    assert_eq!(bits(&a), bits(&b), "{isa:?} {t:?} nb={nb} {kind:?}");
                    assert!(a.iter().all(|v| v.is_finite()), "{t:?} {kind:?}");
                }
            }
        }
    }
}

#[test]
fn dequantize_known_values() {
    // Q4_K: d = 1, dmin = 0.5, all scales/mins bytes 0x41 -> sc = 1 (j < 4), m = 1 (j < 4)
    // and sc = (0x41 & 15) | ((0x41 >> 2) & 0x30) = 0x11 = 17, m = 4 | 0x10 = 20 (j >= 4).
    let mut b = vec![0u8; 144];
    put_f16(&mut b[0..2], 1.0);
    put_f16(&mut b[2..4], 0.5);
    b[4..16].fill(0x41);
    b[16..144].fill(0x73); // low nibble 3, high nibble 7
    let mut y = vec![0f32; QK];
    dequantize_row_isa(Isa::Scalar, QuantType::Q4_K, &b, &mut y).unwrap();
    assert_eq!(y[0], 1.0 * 3.0 - 0.5); // sub-block 0, low nibble
    assert_eq!(y[32], 1.0 * 7.0 - 0.5); // sub-block 1, high nibble
    assert_eq!(y[128], 17.0 * 3.0 - 10.0); // sub-block 4
    assert_eq!(y[255], 17.0 * 7.0 - 10.0); // sub-block 7

    // Q6_K: ql = 0xFF, qh = 0 -> q = 15 - 32 = -17; scales[j] = j - 8; d = 0.25.
    let mut b = vec![0u8; 210];
    b[..128].fill(0xFF);
    for j in 0..16 {
        b[192 + j] = (j as i8 - 8) as u8;
    }
    put_f16(&mut b[208..210], 0.25);
    dequantize_row_isa(Isa::Scalar, QuantType::Q6_K, &b, &mut y).unwrap();
    for (i, v) in y.iter().enumerate() {
        assert_eq!(*v, 0.25 * ((i / 16) as f32 - 8.0) * -17.0, "i={i}");
    }
}

#[test]
fn quantize_q8_k_simd_equals_scalar() {
    let mut rng = StdRng::seed_from_u64(12);
    for isa in simd::available() {
        for nb in [1usize, 3, 7] {
            for case in 0..8 {
                let x = adversarial_x(nb * QK, case, &mut rng);
                let n = QuantType::Q8_K.row_bytes(x.len()).unwrap();
                let (mut a, mut b) = (vec![0u8; n], vec![0xAAu8; n]);
                quantize_row_isa(Isa::Scalar, QuantType::Q8_K, &x, &mut a).unwrap();
                quantize_row_isa(isa, QuantType::Q8_K, &x, &mut b).unwrap();
                assert_eq!(a, b, "{isa:?} nb={nb} case={case}");
            }
        }
        // Non-finite input must not panic and must give the same bytes on every ISA.
        let mut x = rand_x(2 * QK, &mut rng);
        x[3] = f32::NAN;
        x[QK + 9] = f32::INFINITY;
        let n = QuantType::Q8_K.row_bytes(x.len()).unwrap();
        let (mut a, mut b) = (vec![0u8; n], vec![0u8; n]);
        quantize_row_isa(Isa::Scalar, QuantType::Q8_K, &x, &mut a).unwrap();
        quantize_row_isa(isa, QuantType::Q8_K, &x, &mut b).unwrap();
        assert_eq!(a, b, "{isa:?} non-finite");
    }
}

#[test]
fn quantize_q8_k_matches_ggml_semantics() {
    let mut rng = StdRng::seed_from_u64(13);
    for case in 0..8 {
        let x = adversarial_x(3 * QK, case, &mut rng);
        let mut q = vec![0u8; 3 * 292];
        quantize_row_isa(Isa::Scalar, QuantType::Q8_K, &x, &mut q).unwrap();
        for (xb, qb) in x.chunks_exact(QK).zip(q.chunks_exact(292)) {
            let b: q8_k::BlockQ8_K = bytemuck::pod_read_unaligned(qb);
            for j in 0..16 {
                let s: i32 = b.qs[16 * j..16 * j + 16]
                    .iter()
                    .map(|&v| i32::from(v))
                    .sum();
                assert_eq!(i32::from(b.bsums[j]), s);
            }
            let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
            if amax == 0.0 {
                assert_eq!(b.d, 0.0);
                assert!(b.qs.iter().all(|&v| v == 0));
                continue;
            }
            // The first maximal |x| maps to -127 exactly.
            let first = xb.iter().position(|v| v.abs() == amax).unwrap();
            assert_eq!(b.qs[first], -127, "case={case}");
            assert!(b.qs.iter().all(|&v| v >= -127));
            for (&v, &qv) in xb.iter().zip(b.qs.iter()) {
                let err = (b.d * f32::from(qv) - v).abs();
                assert!(err <= b.d.abs() * 0.5001 + 1e-30, "case={case} {v} {qv}");
            }
        }
    }
}

/// f64 dot of dequantized weights with `x`, and sum |w*x|.
fn f64_dot(t: QuantType, w: &[u8], x: &[f32]) -> (f64, f64) {
    let mut d = vec![0f32; x.len()];
    dequantize_row_isa(Isa::Scalar, t, w, &mut d).unwrap();
    let dot = d
        .iter()
        .zip(x)
        .map(|(a, b)| f64::from(*a) * f64::from(*b))
        .sum();
    let mag = d
        .iter()
        .zip(x)
        .map(|(a, b)| (f64::from(*a) * f64::from(*b)).abs())
        .sum();
    (dot, mag)
}

/// The scalar references compute exactly the dot of dequantized weights with dequantized Q8_K
/// activations (up to f32 rounding of the final products).
#[test]
fn scalar_reference_equals_dequantized_dot() {
    let mut rng = StdRng::seed_from_u64(14);
    let mut scratch = Vec::new();
    for t in K_TYPES {
        for nb in [1usize, 3, 7] {
            for kind in KINDS {
                for case in 0..8 {
                    let w = make_row(t, nb, kind, &mut rng);
                    let x = adversarial_x(nb * QK, case, &mut rng);
                    let mut xq = vec![0u8; nb * 292];
                    quantize_row_isa(Isa::Scalar, QuantType::Q8_K, &x, &mut xq).unwrap();
                    let mut xd = vec![0f32; nb * QK];
                    q8_k::dequantize(&xq, &mut xd);
                    let (exact, mag) = f64_dot(t, &w, &xd);
                    let got = vec_dot_f32(Isa::Scalar, t, &w, &x, &mut scratch).unwrap();
                    assert!(
                        (f64::from(got) - exact).abs() <= 1e-5 * mag + 1e-30,
                        "{t:?} nb={nb} {kind:?} case={case}: {got} vs {exact}"
                    );
                }
            }
        }
    }
}

#[test]
fn vec_dot_simd_vs_scalar_and_vs_f32() {
    let mut rng = StdRng::seed_from_u64(15);
    let mut scratch = Vec::new();
    for isa in simd::available() {
        for t in K_TYPES {
            for nb in [1usize, 3, 7] {
                for kind in KINDS {
                    for case in 0..8 {
                        let w = make_row(t, nb, kind, &mut rng);
                        let x = adversarial_x(nb * QK, case, &mut rng);
                        let r = vec_dot_f32(Isa::Scalar, t, &w, &x, &mut scratch).unwrap();
                        let s = vec_dot_f32(isa, t, &w, &x, &mut scratch).unwrap();
                        let (exact, mag) = f64_dot(t, &w, &x);
                        let tol = 1e-5 * mag as f32 + 1e-30;
                        assert!(
                            (r - s).abs() <= tol,
                            "{isa:?} {t:?} nb={nb} {kind:?} case={case}: simd {s} ref {r}"
                        );
                        // Q8_K rounding: |dx| <= amax / 254 per element.
                        if case != 4 {
                            let qtol = 1e-2 * mag + 1e-30;
                            assert!(
                                (exact - f64::from(s)).abs() <= qtol,
                                "{isa:?} {t:?} nb={nb} {kind:?} case={case}: {s} vs f32 {exact}"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn ggml_synthetic_dot_error() {
    // ggml test-quantize-fns: dot product error threshold on 0.1 + 2 cos(i + offset); per
    // element error < 0.02 / 32 relative to the f32 dot of the dequantized weights.
    let mut rng = StdRng::seed_from_u64(16);
    let mut scratch = Vec::new();
    let n = 4096;
    let x: Vec<f32> = (0..n).map(|i| 0.1 + 2.0 * (i as f32 + 1.0).cos()).collect();
    // One row per type, shared by every ISA (so each tier is judged on the same weights).
    let rows: Vec<_> = K_TYPES
        .iter()
        .map(|&t| make_row(t, n / QK, Kind::Random, &mut rng))
        .collect();
    for isa in simd::available() {
        for (&t, w) in K_TYPES.iter().zip(&rows) {
            let s = vec_dot_f32(isa, t, w, &x, &mut scratch).unwrap();
            let (exact, _) = f64_dot(t, w, &x);
            let err = (f64::from(s) - exact).abs() / n as f64;
            assert!(err < 0.02 / 32.0, "{isa:?} {t:?}: err/n {err}");
        }
    }
}

#[test]
fn matmul_equals_per_row_vec_dot() {
    let mut rng = StdRng::seed_from_u64(17);
    let pools = [Pool::new(1).unwrap(), Pool::new(2).unwrap()];
    let mut scratch = Vec::new();
    let mut s2 = Vec::new();
    for isa in simd::available() {
        for t in K_TYPES {
            for &(rows, cols) in &[(1usize, 256usize), (17, 768), (40, 1792)] {
                let w = make_row(t, rows * cols / QK, Kind::Random, &mut rng);
                let rb = t.row_bytes(cols).unwrap();
                for n_tok in [1usize, 3, 17] {
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
                                let (_, mag) = f64_dot(t, wr, xr);
                                let got = out[tk * rows + r];
                                assert!(
                                    (got - e).abs() <= 2e-5 * mag as f32 + 1e-6,
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
fn bad_inputs_are_errors() {
    let mut scratch = Vec::new();
    for isa in simd::available() {
        for t in K_TYPES {
            let ts = t.type_size();
            // Not a whole super-block.
            assert!(matches!(
                dequantize_row_isa(isa, t, &vec![0u8; ts], &mut [0f32; 32]),
                Err(KernelError::NotBlockAligned { .. })
            ));
            assert!(matches!(
                vec_dot_f32(isa, t, &vec![0u8; ts], &[0f32; 128], &mut scratch),
                Err(KernelError::NotBlockAligned { .. })
            ));
            // Wrong byte length.
            assert!(matches!(
                dequantize_row_isa(isa, t, &vec![0u8; ts - 1], &mut [0f32; 256]),
                Err(KernelError::LengthMismatch { .. })
            ));
            assert!(matches!(
                vec_dot_f32(isa, t, &vec![0u8; 2 * ts], &[0f32; 256], &mut scratch),
                Err(KernelError::LengthMismatch { .. })
            ));
        }
        assert!(matches!(
            quantize_row_isa(isa, QuantType::Q8_K, &[0f32; 32], &mut [0u8; 292]),
            Err(KernelError::NotBlockAligned { .. })
        ));
    }
}

/// The AVX2 register-tiled K-quant matmul (n_tok > 1) against per-row scalar reference dots:
/// token counts around the 2x4 tile, row counts not multiples of the tile, every weight kind,
/// inline and pooled runs (1 and 2 threads).
#[test]
fn tiled_matmul_equals_scalar_per_row() {
    let mut rng = StdRng::seed_from_u64(18);
    let pools = [Pool::new(1).unwrap(), Pool::new(2).unwrap()];
    let mut scratch = Vec::new();
    let mut s2 = Vec::new();
    let isas: Vec<Isa> = simd::available()
        .into_iter()
        .filter(|&i| i != Isa::Scalar)
        .collect();
    let shapes = [
        (1usize, 256usize),
        (3, 512),
        (17, 1024),
        (33, 256),
        (130, 2048),
    ];
    for isa in isas {
        for t in [QuantType::Q4_K, QuantType::Q6_K, QuantType::Q5_K] {
            for (si, &(rows, cols)) in shapes.iter().enumerate() {
                for (ki, kind) in KINDS.into_iter().enumerate() {
                    // The large shape (pooled path) with two weight kinds only, to keep it quick.
                    if si == shapes.len() - 1 && ki > 1 {
                        continue;
                    }
                    let w = make_row(t, rows * cols / QK, kind, &mut rng);
                    let rb = t.row_bytes(cols).unwrap();
                    for n_tok in [2usize, 3, 4, 5, 8, 17, 64] {
                        let x: Vec<f32> = (0..n_tok)
                            .flat_map(|k| adversarial_x(cols, (k + ki) % 8, &mut rng))
                            .collect();
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
                                    let (_, mag) = f64_dot(t, wr, xr);
                                    let got = out[tk * rows + r];
                                    assert!(
                                        (f64::from(got) - f64::from(e)).abs() <= 1e-5 * mag + 1e-30,
                                        "{isa:?} {t:?} {kind:?} {rows}x{cols} n_tok={n_tok} \
                                         t={tk} r={r}: {got} vs {e}"
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
