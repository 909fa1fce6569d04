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

fn random_weights(t: QuantType, rows: usize, cols: usize, rng: &mut StdRng) -> Vec<u8> {
    let rb = t.row_bytes(cols).unwrap();
    let mut v: Vec<u8> = (0..rows * rb).map(|_| rng.gen()).collect();
    for blk in v.chunks_exact_mut(t.type_size()) {
        let d: f32 = rng.gen_range(0.001..0.05) * if rng.gen_bool(0.3) { -1.0 } else { 1.0 };
        blk[0..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
        if t == QuantType::Q4_1 {
            blk[2..4].copy_from_slice(&f16::from_f32(rng.gen_range(-0.5..0.5)).to_le_bytes());
        }
    }
    v
}

fn run(pool: &Pool, m: &PackedMatrix, x: &[f32], n_tok: usize, k: PackedKernel) -> Vec<f32> {
    let mut acts = PackedActs::default();
    acts.quantize(x, m.cols(), n_tok).unwrap();
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
    for t in [QuantType::Q4_0, QuantType::Q4_1, QuantType::Q8_0] {
        for &(rows, cols) in &[(77usize, 256usize), (8, 32), (16, 64), (133, 512), (1024, 576)] {
            let w = random_weights(t, rows, cols, &mut rng);
            let m = PackedMatrix::pack_for(&w, t, rows, cols, PackedKernel::Avx2).unwrap();
            let n_tok = 33;
            let x: Vec<f32> = (0..n_tok * cols)
                .map(|_| rng.gen_range(-1.0f32..1.0))
                .collect();
            // Reference: dequantized weights in f64 against the f32 activations.
            let rb = t.row_bytes(cols).unwrap();
            let mut wf = vec![0f32; cols];
            let mut refv = vec![0f64; n_tok * rows];
            let mut norm = vec![0f64; n_tok * rows];
            for r in 0..rows {
                dequantize_row_isa(Isa::Scalar, t, &w[r * rb..(r + 1) * rb], &mut wf).unwrap();
                for tk in 0..n_tok {
                    let xr = &x[tk * cols..(tk + 1) * cols];
                    refv[tk * rows + r] =
                        wf.iter().zip(xr).map(|(&a, &b)| a as f64 * b as f64).sum();
                    norm[tk * rows + r] = wf
                        .iter()
                        .zip(xr)
                        .map(|(&a, &b)| (a as f64 * b as f64).abs())
                        .sum();
                }
            }
            let all = run(&pools[1], &m, &x, n_tok, PackedKernel::Avx2);
            for (i, (&g, (&r, &n))) in all.iter().zip(refv.iter().zip(&norm)).enumerate() {
                // Activation quantization (Q8_0) error only.
                assert!(
                    (g as f64 - r).abs() <= 0.01 * n + 1e-4,
                    "{t:?} {rows}x{cols} [{i}]: {g} vs {r}"
                );
            }
            for k in PackedKernel::all_available() {
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
}

#[test]
fn packing_refuses_what_it_cannot_pack() {
    assert!(PackedMatrix::pack(&[0u8; 18], QuantType::Q4_K, 1, 32).is_err());
    assert!(PackedMatrix::pack(&[0u8; 17], QuantType::Q4_0, 1, 32).is_err());
    assert!(PackedMatrix::pack(&[0u8; 18], QuantType::Q4_0, 1, 31).is_err());
    let mut acts = PackedActs::default();
    assert!(acts.quantize(&[0.0; 31], 31, 1).is_err());
    // A kernel refuses panels of another width.
    if PackedKernel::Avx512Vnni.is_available() {
        let m = PackedMatrix::pack_for(&[0u8; 18], QuantType::Q4_0, 1, 32, PackedKernel::Avx2)
            .unwrap();
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
