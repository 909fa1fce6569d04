//! Prompt-sized packed matmuls: one `matmul_packed` of `n_tok` tokens (default 512) on a
//! TinyLlama-shaped matrix, 1 thread, per packed format, printed as GOP/s (2 ops per
//! multiply-add) of the calling thread's wall time (minimum over rounds). For A/B comparisons of
//! the packed kernels; run under the bench lock:
//!
//!     flock /tmp/hologram-bench.lock cargo run --release -p hologram-kernels \
//!         --example packed_speed -- [TYPES] [n_tok]
//!
//! e.g. `-- Q4_K,Q6_K 512`. Weights are random bytes with sane f16 scales.

use hologram_kernels::packed::{matmul_packed, PackedActs, PackedJob, PackedKernel, PackedMatrix};
use hologram_kernels::{Pool, QuantType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Instant;

/// Byte offsets of the f16 scales of a block of `t`.
fn f16_fields(t: QuantType) -> &'static [usize] {
    match t {
        QuantType::Q4_1 | QuantType::Q4_K => &[0, 2],
        QuantType::Q6_K => &[208],
        _ => &[0],
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let types = args
        .next()
        .unwrap_or_else(|| "Q4_0,Q4_1,Q5_0,Q8_0,Q4_K,Q6_K".into());
    let n_tok: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(512);
    let pool = Pool::new(1).expect("pool");
    let mut rng = StdRng::seed_from_u64(7);
    let (rows, cols) = (2048usize, 2048usize);
    for name in types.split(',') {
        let t = QuantType::ALL
            .into_iter()
            .find(|q| q.name().eq_ignore_ascii_case(name))
            .expect("type");
        if !PackedMatrix::supports_kernel(t, PackedKernel::preferred()) {
            println!("{name}: not packed on this machine");
            continue;
        }
        let mut w: Vec<u8> = (0..rows * t.row_bytes(cols).unwrap())
            .map(|_| rng.gen())
            .collect();
        for b in w.chunks_exact_mut(t.type_size()) {
            for &o in f16_fields(t) {
                b[o..o + 2].copy_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
            }
        }
        let m = PackedMatrix::pack(&w, t, rows, cols).expect("pack");
        let x: Vec<f32> = (0..n_tok * cols)
            .map(|_| rng.gen_range(-1.0..1.0))
            .collect();
        let mut acts = PackedActs::default();
        acts.quantize_for(&m, &x, n_tok).expect("quantize");
        let mut out = vec![0f32; n_tok * rows];
        let mut best = f64::MAX;
        for _ in 0..7 {
            let t0 = Instant::now();
            matmul_packed(
                &pool,
                &mut [PackedJob {
                    w: &m,
                    out: &mut out,
                }],
                &acts,
            )
            .expect("mm");
            best = best.min(t0.elapsed().as_secs_f64());
        }
        let ops = 2.0 * (rows * cols * n_tok) as f64;
        println!(
            "{name:5} {} n_tok {n_tok}: {:7.3} ms {:7.1} GOP/s",
            m.kernel().name(),
            best * 1e3,
            ops / best / 1e9
        );
    }
}
