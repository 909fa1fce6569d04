//! GFLOP/s of the packed f32 GEMM on the all-MiniLM-L6-v2 layer shapes (384 wide, FFN 1536)
//! for every tier this CPU has. Run under the bench lock:
//!
//!     flock /tmp/hologram-bench.lock cargo run --release -p hologram-kernels \
//!         --example gemm_f32_speed -- [threads] [tokens] [isa]

use std::time::Instant;

use hologram_kernels::simd::available;
use hologram_kernels::{gemm_f32, PackedF32, Pool};

fn main() {
    let mut args = std::env::args().skip(1);
    let threads: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(1);
    let m: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(512);
    let only = args.next();
    let pool = Pool::new(threads).expect("pool");
    for isa in available() {
        if only.as_deref().is_some_and(|o| o != isa.name()) {
            continue;
        }
        let mut total = 0f64;
        let mut flops = 0f64;
        for (n, k) in [(1152, 384), (384, 384), (1536, 384), (384, 1536)] {
            let w: Vec<f32> = (0..n * k)
                .map(|i| ((i % 97) as f32 - 48.0) * 0.01)
                .collect();
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i % 89) as f32 - 44.0) * 0.01)
                .collect();
            let bias = vec![0.1f32; n];
            let p = PackedF32::pack_isa(isa, &w, n, k).expect("pack");
            let mut c = vec![0f32; m * n];
            gemm_f32(&pool, &a, m, &p, Some(&bias), &mut c).expect("gemm");
            let reps = 20;
            let mut best = f64::MAX;
            for _ in 0..reps {
                let t0 = Instant::now();
                gemm_f32(&pool, &a, m, &p, Some(&bias), &mut c).expect("gemm");
                best = best.min(t0.elapsed().as_secs_f64());
            }
            let f = 2.0 * (m * n * k) as f64;
            println!(
                "{:>6} threads {threads} m {m} n {n:>4} k {k:>4}: {:7.3} ms  {:6.1} GFLOP/s",
                isa.name(),
                best * 1e3,
                f / best / 1e9
            );
            total += best;
            flops += f;
        }
        println!(
            "{:>6} all four: {:6.1} GFLOP/s",
            isa.name(),
            flops / total / 1e9
        );
    }
}
