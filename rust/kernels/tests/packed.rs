//! The packed matmul against the scalar references, batch invariance, and every kernel this CPU
//! runs (AVX2 and AVX-VNNI on 8-row panels, AVX-512 VNNI on 16-row panels) against each other,
//! bit for bit.

use half::f16;
use hologram_kernels::packed::{
    self, matmul_packed_with, PackedActs, PackedJob, PackedKernel, PackedMatrix,
};
use hologram_kernels::{dequantize_row_isa, Isa, Pool, QuantType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Every format the packed kernels take.
const PACKED_TYPES: [QuantType; 6] = [
    QuantType::Q4_0,
    QuantType::Q4_1,
    QuantType::Q8_0,
    QuantType::Q5_0,
    QuantType::Q4_K,
    QuantType::Q6_K,
];

fn random_weights(t: QuantType, rows: usize, cols: usize, rng: &mut StdRng) -> Vec<u8> {
    let rb = t.row_bytes(cols).unwrap();
    let mut v: Vec<u8> = (0..rows * rb).map(|_| rng.gen()).collect();
    for blk in v.chunks_exact_mut(t.type_size()) {
        let d: f32 = rng.gen_range(0.001..0.05) * if rng.gen_bool(0.3) { -1.0 } else { 1.0 };
        // Q6_K keeps its scale at the end of the block.
        let at = if t == QuantType::Q6_K { 208 } else { 0 };
        blk[at..at + 2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
        if t == QuantType::Q4_K {
            let dmin: f32 = rng.gen_range(0.0..0.02);
            blk[2..4].copy_from_slice(&f16::from_f32(dmin).to_le_bytes());
        }
        if t == QuantType::Q4_1 {
            blk[2..4].copy_from_slice(&f16::from_f32(rng.gen_range(-0.5..0.5)).to_le_bytes());
        }
    }
    v
}

/// Activations as the kernel quantizes them, dequantized in f64.
fn quantized(t: QuantType, x: &[f32]) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.len());
    if t.block_size() == 256 {
        // Q8_K semantics: the largest-magnitude value of 256 maps to -127.
        for blk in x.chunks_exact(256) {
            let max = blk
                .iter()
                .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
            let is = if max != 0.0 { -127.0 / max } else { 0.0 };
            let d = if max != 0.0 { 1.0 / is } else { 0.0 };
            for &v in blk {
                let q = (is * v).round_ties_even().clamp(-128.0, 127.0);
                out.push(f64::from(q) * f64::from(d));
            }
        }
        return out;
    }
    for blk in x.chunks_exact(32) {
        let amax = blk.iter().fold(0f32, |a, &v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        for &v in blk {
            let q = (v * id).round_ties_even().clamp(-127.0, 127.0);
            out.push(f64::from(q) * f64::from(f16::from_f32(d).to_f32()));
        }
    }
    out
}

fn run(pool: &Pool, m: &PackedMatrix, x: &[f32], n_tok: usize, k: PackedKernel) -> Vec<f32> {
    let mut acts = PackedActs::default();
    acts.quantize_for(m, x, n_tok).unwrap();
    // The pooled quantization gives the same bytes.
    let mut pooled = PackedActs::default();
    pooled.quantize_for_pool(pool, m, x, n_tok).unwrap();
    assert_eq!(format!("{acts:?}"), format!("{pooled:?}"));
    let mut out = vec![0f32; n_tok * m.rows()];
    matmul_packed_with(
        pool,
        &mut [PackedJob {
            w: m,
            out: &mut out,
        }],
        &acts,
        k,
    )
    .unwrap();
    out
}

#[test]
fn packed_matmul_matches_reference_and_is_batch_invariant() {
    if !packed::available() {
        eprintln!("no AVX2: the packed path is not used on this machine");
        return;
    }
    let mut rng = StdRng::seed_from_u64(7);
    let pools = [Pool::new(1).unwrap(), Pool::new(2).unwrap()];
    let mut tested = Vec::new();
    for t in PACKED_TYPES {
        // The first kernel that runs t is the one the others must equal bit for bit.
        let Some(first) = PackedKernel::all_available()
            .into_iter()
            .find(|&k| PackedMatrix::supports_kernel(t, k))
        else {
            continue;
        };
        tested.push(t);
        let shapes: &[(usize, usize)] = if t.block_size() == 256 {
            &[(77, 256), (16, 512), (133, 768)]
        } else {
            &[(77, 256), (8, 32), (16, 64), (133, 512), (1024, 576)]
        };
        for &(rows, cols) in shapes {
            let w = random_weights(t, rows, cols, &mut rng);
            let m = PackedMatrix::pack_for(&w, t, rows, cols, first).unwrap();
            let n_tok = 33;
            let x: Vec<f32> = (0..n_tok * cols)
                .map(|_| rng.gen_range(-1.0f32..1.0))
                .collect();
            // Reference: dequantized weights in f64 against the f32 activations.
            let rb = t.row_bytes(cols).unwrap();
            let mut wf = vec![0f32; cols];
            let mut refv = vec![0f64; n_tok * rows];
            let mut norm = vec![0f64; n_tok * rows];
            // And the exact result of the kernel's arithmetic: the same weights against the
            // activations quantized as the kernel does (32-value blocks, max|x|/127, ties to
            // even), in f64.
            let xq = quantized(t, &x);
            let mut exact = vec![0f64; n_tok * rows];
            for r in 0..rows {
                dequantize_row_isa(Isa::Scalar, t, &w[r * rb..(r + 1) * rb], &mut wf).unwrap();
                for tk in 0..n_tok {
                    let xr = &x[tk * cols..(tk + 1) * cols];
                    refv[tk * rows + r] =
                        wf.iter().zip(xr).map(|(&a, &b)| a as f64 * b as f64).sum();
                    exact[tk * rows + r] = wf
                        .iter()
                        .zip(&xq[tk * cols..(tk + 1) * cols])
                        .map(|(&a, &b)| a as f64 * b)
                        .sum();
                    norm[tk * rows + r] = wf
                        .iter()
                        .zip(xr)
                        .map(|(&a, &b)| (a as f64 * b as f64).abs())
                        .sum();
                }
            }
            let all = run(&pools[1], &m, &x, n_tok, first);
            for (i, (&g, (&r, &n))) in all.iter().zip(refv.iter().zip(&norm)).enumerate() {
                // Activation quantization (Q8_0) error only.
                assert!(
                    (g as f64 - r).abs() <= 0.01 * n + 1e-4,
                    "{t:?} {rows}x{cols} [{i}]: {g} vs {r}"
                );
                // f32 rounding only.
                assert!(
                    (g as f64 - exact[i]).abs() <= 1e-5 * n + 1e-6,
                    "{t:?} {rows}x{cols} [{i}]: {g} vs exact {}",
                    exact[i]
                );
            }
            for k in PackedKernel::all_available() {
                if !PackedMatrix::supports_kernel(t, k) {
                    continue;
                }
                let mk = PackedMatrix::pack_for(&w, t, rows, cols, k).unwrap();
                assert_eq!(mk.width(), k.width());
                for pool in &pools {
                    for (start, len) in [
                        (0, 1),
                        (5, 1),
                        (3, 2),
                        (1, 3),
                        (4, 4),
                        (7, 5),
                        (0, 9),
                        (9, 16),
                        (0, 33),
                    ] {
                        let got = run(pool, &mk, &x[start * cols..(start + len) * cols], len, k);
                        for tk in 0..len {
                            for r in 0..rows {
                                let a = got[tk * rows + r];
                                let b = all[(start + tk) * rows + r];
                                assert_eq!(
                                    a.to_bits(),
                                    b.to_bits(),
                                    "{t:?} {k:?} token {} row {r}",
                                    start + tk
                                );
                            }
                        }
                    }
                }
            }
        }
    }
    // Every format runs on every kernel this CPU has.
    assert_eq!(tested.len(), 6, "{tested:?}");
}

/// Weights at the top of their range (every quant bit set: Q5_0 value 31, Q6_K 63, Q4_K 15)
/// against activations that all quantize to +-127: the largest integer pair sums the AVX2
/// `vpmaddubsw` path meets. Every kernel must give the same bits (no i16 saturation) and the
/// value the f64 dot of the dequantized weights predicts.
#[test]
fn extreme_values_give_the_same_bits_on_every_kernel() {
    if !packed::available() {
        return;
    }
    let pool = Pool::new(2).unwrap();
    let mut rng = StdRng::seed_from_u64(11);
    for t in PACKED_TYPES {
        let (rows, cols) = (24, 512);
        let mut w = random_weights(t, rows, cols, &mut rng);
        // Every byte past the scales all ones, the scales kept (Q4_K: sub-block scales and
        // mins all 63; Q6_K: i8 scales of -1 in the 0xFF pattern, d at the end kept).
        for blk in w.chunks_exact_mut(t.type_size()) {
            let (from, to) = match t {
                QuantType::Q4_1 | QuantType::Q4_K => (4, blk.len()),
                QuantType::Q6_K => (0, 208),
                _ => (2, blk.len()),
            };
            blk[from..to].fill(0xFF);
        }
        for sign in [1.0f32, -1.0] {
            let n_tok = 5;
            let x = vec![0.75 * sign; n_tok * cols];
            let mut first: Option<Vec<f32>> = None;
            for k in PackedKernel::all_available() {
                let m = PackedMatrix::pack_for(&w, t, rows, cols, k).unwrap();
                let got = run(&pool, &m, &x, n_tok, k);
                match &first {
                    None => {
                        let rb = t.row_bytes(cols).unwrap();
                        let mut wf = vec![0f32; cols];
                        let xq = quantized(t, &x);
                        for r in 0..rows {
                            dequantize_row_isa(Isa::Scalar, t, &w[r * rb..(r + 1) * rb], &mut wf)
                                .unwrap();
                            let exact: f64 =
                                wf.iter().zip(&xq).map(|(&a, &b)| f64::from(a) * b).sum();
                            let norm: f64 = wf
                                .iter()
                                .zip(&xq)
                                .map(|(&a, &b)| (f64::from(a) * b).abs())
                                .sum();
                            for tk in 0..n_tok {
                                let g = f64::from(got[tk * rows + r]);
                                assert!(
                                    (g - exact).abs() <= 1e-5 * norm + 1e-6,
                                    "{t:?} {k:?} row {r}: {g} vs exact {exact}"
                                );
                            }
                        }
                        first = Some(got);
                    }
                    Some(f) => {
                        for (i, (a, b)) in got.iter().zip(f).enumerate() {
                            assert_eq!(a.to_bits(), b.to_bits(), "{t:?} {k:?} [{i}]");
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn packing_refuses_what_it_cannot_pack() {
    assert!(PackedMatrix::pack(&[0u8; 18], QuantType::Q2_K, 1, 32).is_err());
    assert!(
        PackedMatrix::pack_for(&[0u8; 84], QuantType::Q2_K, 1, 256, PackedKernel::Avx2).is_err()
    );
    assert!(PackedMatrix::pack(&[0u8; 17], QuantType::Q4_0, 1, 32).is_err());
    // K-quants need whole 256-value super-blocks, on 8-row panels as on 16-row ones.
    assert!(
        PackedMatrix::pack_for(&[0u8; 144], QuantType::Q4_K, 1, 128, PackedKernel::Avx2).is_err()
    );
    assert!(
        PackedMatrix::pack_for(&[0u8; 209], QuantType::Q6_K, 1, 256, PackedKernel::Avx2).is_err()
    );
    assert!(PackedMatrix::pack(&[0u8; 18], QuantType::Q4_0, 1, 31).is_err());
    let mut acts = PackedActs::default();
    assert!(acts.quantize(&[0.0; 31], 31, 1).is_err());
    // A kernel refuses panels of another width.
    if PackedKernel::Avx512Vnni.is_available() {
        let m =
            PackedMatrix::pack_for(&[0u8; 18], QuantType::Q4_0, 1, 32, PackedKernel::Avx2).unwrap();
        acts.quantize(&[0.5; 32], 32, 1).unwrap();
        let mut out = [0f32; 1];
        let r = matmul_packed_with(
            &Pool::new(1).unwrap(),
            &mut [PackedJob {
                w: &m,
                out: &mut out,
            }],
            &acts,
            PackedKernel::Avx512Vnni,
        );
        assert!(r.is_err());
    }
}

#[test]
fn packing_reports_progress_in_row_order() {
    let pool = Pool::new(1).unwrap();
    let k = PackedKernel::preferred();
    if !k.is_available() {
        return;
    }
    let mut rng = StdRng::seed_from_u64(77);
    // Not a multiple of PACK_PROGRESS_ROWS (nor of a panel): a partial last step.
    let (rows, cols) = (2 * packed::PACK_PROGRESS_ROWS + 40, 256);
    for t in PACKED_TYPES {
        let w = random_weights(t, rows, cols, &mut rng);
        let mut calls = Vec::new();
        let m =
            PackedMatrix::pack_with_progress(&w, t, rows, cols, &mut |r| calls.push(r)).unwrap();
        let step = packed::PACK_PROGRESS_ROWS;
        assert_eq!(calls, vec![step, 2 * step, rows], "{t:?}");
        // The same packing as without progress reports.
        let plain = PackedMatrix::pack(&w, t, rows, cols).unwrap();
        let x: Vec<f32> = (0..3 * cols)
            .map(|i| ((i % 23) as f32 - 11.0) * 0.1)
            .collect();
        let (a, b) = (run(&pool, &m, &x, 3, k), run(&pool, &plain, &x, 3, k));
        assert!(
            a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()),
            "{t:?}"
        );
    }
}

#[test]
fn rows_read_back_from_the_packed_copy() {
    let mut rng = StdRng::seed_from_u64(78);
    let (rows, cols) = (37, 256);
    for k in PackedKernel::all_available() {
        for t in PACKED_TYPES {
            let w = random_weights(t, rows, cols, &mut rng);
            let m = PackedMatrix::pack_for(&w, t, rows, cols, k).unwrap();
            let mut got = vec![f32::NAN; cols];
            if t != QuantType::Q8_0 {
                assert!(!m.dequantize_row(0, &mut got).unwrap(), "{t:?}");
                continue;
            }
            let rb = t.row_bytes(cols).unwrap();
            for r in 0..rows {
                let mut want = vec![0f32; cols];
                dequantize_row_isa(Isa::Scalar, t, &w[r * rb..(r + 1) * rb], &mut want).unwrap();
                assert!(m.dequantize_row(r, &mut got).unwrap());
                let same = got
                    .iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{k:?} row {r}");
            }
            assert!(m.dequantize_row(rows, &mut got).is_err());
            assert!(m.dequantize_row(0, &mut got[..cols - 1]).is_err());
        }
    }
}
