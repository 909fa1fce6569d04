//! Criterion benches for the K-quants most used by real models (Q4_K, Q6_K): vec_dot of one row
//! and gemv (matmul, n_tok = 1) on Gemma 3 270M shapes, 1 and 2 threads. Throughput is the
//! weight bytes streamed, so results read as GB/s.
//!
//! Shapes are rows x cols (GGUF ne1 x ne0): 640x2048 is `ffn_down` (Q6_K / Q4_K in Q4_K_M),
//! 640x1024 is `attn_output` (Q4_K). K-quant rows must be multiples of 256 values, so the
//! transposed 2048x640 (`ffn_up` / `ffn_gate`) cannot be a K-quant (Q4_K_M stores it as Q5_0).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hologram_kernels::{matmul_isa, simd, vec_dot_f32, Pool, QuantType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const TYPES: [QuantType; 2] = [QuantType::Q4_K, QuantType::Q6_K];
const SHAPES: [(usize, usize); 2] = [(640, 2048), (640, 1024)];

/// Random K-quant blocks with sane f16 super-block scales.
fn weights(t: QuantType, n: usize, rng: &mut StdRng) -> Vec<u8> {
    let mut v: Vec<u8> = (0..t.row_bytes(n).unwrap()).map(|_| rng.gen()).collect();
    let fields: &[usize] = match t {
        QuantType::Q4_K => &[0, 2],
        _ => &[208],
    };
    for b in v.chunks_exact_mut(t.type_size()) {
        for &o in fields {
            b[o..o + 2].copy_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
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
    for isa in isas() {
        let mut g = c.benchmark_group(format!("kquants/vec_dot/{}", isa.name()));
        for t in TYPES {
            for n in [1024usize, 2048] {
                let x: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
                let w = weights(t, n, &mut rng);
                g.throughput(Throughput::Bytes(w.len() as u64));
                let mut scratch = Vec::new();
                g.bench_function(BenchmarkId::new(t.name(), n), |b| {
                    b.iter(|| vec_dot_f32(isa, t, &w, &x, &mut scratch).unwrap())
                });
            }
        }
        g.finish();
    }
}

fn bench_gemv(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(2);
    let pools: Vec<Pool> = [1usize, 2].iter().map(|&n| Pool::new(n).unwrap()).collect();
    for isa in isas() {
        let mut g = c.benchmark_group(format!("kquants/gemv/{}", isa.name()));
        for t in TYPES {
            for &(rows, cols) in &SHAPES {
                let w = weights(t, rows * cols, &mut rng);
                let x: Vec<f32> = (0..cols).map(|_| rng.gen_range(-1.0..1.0)).collect();
                let mut out = vec![0f32; rows];
                let mut scratch = Vec::new();
                g.throughput(Throughput::Bytes(w.len() as u64));
                for pool in &pools {
                    let id = format!("{}/{}x{}/t{}", t.name(), rows, cols, pool.n_threads());
                    g.bench_function(id, |b| {
                        b.iter(|| {
                            matmul_isa(isa, pool, &w, t, rows, cols, &x, 1, &mut out, &mut scratch)
                                .unwrap()
                        })
                    });
                }
            }
        }
        g.finish();
    }
}

criterion_group!(benches, bench_vec_dot, bench_gemv);
criterion_main!(benches);
