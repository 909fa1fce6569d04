//! Criterion benches: vec_dot per format and matmul (gemv n_tok=1, gemm n_tok=64) with
//! `Throughput::Bytes(weight bytes)` so results read as GB/s of weights streamed.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hologram_kernels::{matmul_isa, simd, vec_dot_f32, Pool, QuantType};
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

fn weights(t: QuantType, n: usize, rng: &mut StdRng) -> Vec<u8> {
    let mut v: Vec<u8> = (0..t.row_bytes(n).unwrap()).map(|_| rng.gen()).collect();
    if t.block_size() == 1 {
        let s = t.type_size();
        for c in v.chunks_exact_mut(s) {
            let x: f32 = rng.gen_range(-1.0..1.0);
            match t {
                QuantType::F32 => c.copy_from_slice(&x.to_le_bytes()),
                QuantType::F16 => c.copy_from_slice(&half::f16::from_f32(x).to_le_bytes()),
                _ => c.copy_from_slice(&half::bf16::from_f32(x).to_le_bytes()),
            }
        }
    } else {
        for b in v.chunks_exact_mut(t.type_size()) {
            b[..2].copy_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
        }
    }
    v
}

fn isas() -> Vec<simd::Isa> {
    // The scalar path is slow; bench it only on request.
    let all = std::env::var("HOLOGRAM_BENCH_SCALAR").is_ok();
    simd::available()
        .into_iter()
        .filter(|i| all || *i != simd::Isa::Scalar)
        .collect()
}

fn bench_vec_dot(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(1);
    let n = 4096;
    let x: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
    for isa in isas() {
        let mut g = c.benchmark_group(format!("vec_dot/{}", isa.name()));
        for t in TYPES {
            let w = weights(t, n, &mut rng);
            g.throughput(Throughput::Bytes(w.len() as u64));
            let mut scratch = Vec::new();
            g.bench_function(BenchmarkId::new(t.name(), n), |b| {
                b.iter(|| vec_dot_f32(isa, t, &w, &x, &mut scratch).unwrap())
            });
        }
        g.finish();
    }
}

fn bench_matmul(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(2);
    let shapes = [(576usize, 1536usize), (1536, 576), (4096, 4096)];
    let types = [
        QuantType::Q4_0,
        QuantType::Q4_1,
        QuantType::Q5_0,
        QuantType::Q8_0,
        QuantType::F16,
    ];
    let pools: Vec<Pool> = [1usize, 2].iter().map(|&n| Pool::new(n).unwrap()).collect();
    for isa in isas() {
        for n_tok in [1usize, 64] {
            let mut g = c.benchmark_group(format!("matmul/{}/ntok{n_tok}", isa.name()));
            for t in types {
                for &(rows, cols) in &shapes {
                    let w = weights(t, rows * cols, &mut rng);
                    let x: Vec<f32> = (0..n_tok * cols)
                        .map(|_| rng.gen_range(-1.0..1.0))
                        .collect();
                    let mut out = vec![0f32; n_tok * rows];
                    let mut scratch = Vec::new();
                    g.throughput(Throughput::Bytes(w.len() as u64));
                    for pool in &pools {
                        let id = format!("{}/{}x{}/t{}", t.name(), rows, cols, pool.n_threads());
                        g.bench_function(id, |b| {
                            b.iter(|| {
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
                                .unwrap()
                            })
                        });
                    }
                }
            }
            g.finish();
        }
    }
}

criterion_group!(benches, bench_vec_dot, bench_matmul);
criterion_main!(benches);
