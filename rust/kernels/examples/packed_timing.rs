//! Prompt-processing timing of the packed matmul: every packed kernel this CPU runs (AVX2,
//! AVX-VNNI on 8-row panels, AVX-512 VNNI on 16-row panels) on one weight shape, many tokens,
//! one thread, so the kernels can be compared on one machine.
//!
//! `cargo run --release -p hologram-kernels --example packed_timing [-- TYPES [ROWSxCOLS]]`,
//! e.g. `-- Q4_K,Q6_K 2048x2048`. Defaults: Q4_0,Q8_0,Q5_0,Q4_K,Q6_K on 2048x2048, 64 tokens
//! (`HOLOGRAM_NTOK`). Prints the minimum over rounds of the calling thread's CPU time per call
//! (the 1-thread pool runs inline, so preemption on a shared VM does not count) and the
//! multiply-adds (weight values x tokens) per second.

use hologram_kernels::packed::PackedMatrix;
use hologram_kernels::packed::{matmul_packed_with, PackedActs, PackedJob, PackedKernel};
use hologram_kernels::{Pool, QuantType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// CPU time of the calling thread in seconds.
fn thread_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID is a valid clock.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn weights(t: QuantType, rows: usize, cols: usize, rng: &mut StdRng) -> Vec<u8> {
    let mut v: Vec<u8> = (0..rows * t.row_bytes(cols).unwrap())
        .map(|_| rng.gen())
        .collect();
    let at = if t == QuantType::Q6_K { 208 } else { 0 };
    for b in v.chunks_exact_mut(t.type_size()) {
        b[at..at + 2].copy_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
        if t == QuantType::Q4_K {
            b[2..4].copy_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
        }
    }
    v
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let types: Vec<QuantType> = args
        .first()
        .map_or("Q4_0,Q8_0,Q5_0,Q4_K,Q6_K", |s| s.as_str())
        .split(',')
        .map(|s| {
            QuantType::ALL
                .into_iter()
                .find(|t| t.name().eq_ignore_ascii_case(s))
                .unwrap_or_else(|| panic!("unknown type {s}"))
        })
        .collect();
    let (rows, cols) = args.get(1).map_or((2048, 2048), |s| {
        let (a, b) = s.split_once('x').expect("ROWSxCOLS");
        (a.parse().unwrap(), b.parse().unwrap())
    });
    let n_tok: usize = std::env::var("HOLOGRAM_NTOK").map_or(64, |s| s.parse().unwrap());
    let pool = Pool::new(1).unwrap();
    let mut rng = StdRng::seed_from_u64(1);
    let x: Vec<f32> = (0..n_tok * cols)
        .map(|_| rng.gen_range(-1.0..1.0))
        .collect();
    let mut out = vec![0f32; n_tok * rows];
    for t in types {
        let w = weights(t, rows, cols, &mut rng);
        for k in PackedKernel::all_available() {
            let Ok(m) = PackedMatrix::pack_for(&w, t, rows, cols, k) else {
                continue;
            };
            let mut acts = PackedActs::default();
            acts.quantize_for(&m, &x, n_tok).unwrap();
            let mut best = f64::INFINITY;
            for _ in 0..5 {
                let t0 = thread_cpu();
                let reps = 3;
                for _ in 0..reps {
                    matmul_packed_with(
                        &pool,
                        &mut [PackedJob {
                            w: &m,
                            out: &mut out,
                        }],
                        &acts,
                        k,
                    )
                    .unwrap();
                }
                best = best.min((thread_cpu() - t0) / reps as f64);
            }
            let rate = (rows * cols * n_tok) as f64 / best / 1e9;
            println!(
                "{:5} {:12} {rows}x{cols} n_tok={n_tok}: {:8.3} ms  {rate:6.2} G MAC/s",
                t.name(),
                k.name(),
                best * 1e3
            );
        }
    }
}
