//! Criterion benches: vec_dot per format (GB/s of weights), matmul (gemv n_tok=1 as GB/s of
//! weights; gemm n_tok=64/512 as elements/s = MAC/s) and matmul_multi, each with 1 and 2 threads.
//!
//! `HOLOGRAM_BENCH_CPUTIME=1` measures the calling thread's CPU time instead of wall time: on
//! a loaded shared VM this gives the kernel's own speed (meaningful for 1-thread runs only,
//! since pool workers' time is not counted).

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{BenchmarkId, Criterion, Throughput};
use hologram_kernels::{
    matmul, matmul_isa, matmul_multi, simd, vec_dot_f32, MatmulJob, Pool, QuantType,
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

fn bench_vec_dot<M: Measurement>(c: &mut Criterion<M>) {
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

/// gemv (n_tok = 1) reads as GB/s of weights; gemm (n_tok = 64, 512) as elements/s = MAC/s.
/// `HOLOGRAM_BENCH_FULL` adds Q5_1/F16 and n_tok 512 for every shape.
fn bench_matmul<M: Measurement>(c: &mut Criterion<M>) {
    let mut rng = StdRng::seed_from_u64(2);
    let full = std::env::var("HOLOGRAM_BENCH_FULL").is_ok();
    // SmolLM2-135M: ffn down / gate+up / attn q,o / k,v; lm_head (Q8_0 only).
    let shapes = [
        (576usize, 1536usize),
        (1536, 576),
        (576, 576),
        (192, 576),
        (49152, 576),
    ];
    let mut types = vec![
        QuantType::Q4_0,
        QuantType::Q4_1,
        QuantType::Q5_0,
        QuantType::Q8_0,
    ];
    if full {
        types.extend([QuantType::Q5_1, QuantType::F16]);
    }
    let pools: Vec<Pool> = [1usize, 2].iter().map(|&n| Pool::new(n).unwrap()).collect();
    for isa in isas() {
        for n_tok in [1usize, 64, 512] {
            let mut g = c.benchmark_group(format!("matmul/{}/ntok{n_tok}", isa.name()));
            if n_tok > 1 {
                g.sample_size(10);
            }
            for &t in &types {
                for &(rows, cols) in &shapes {
                    let big = rows * cols > 4_000_000;
                    if big && (t != QuantType::Q8_0 || n_tok > 1) {
                        continue;
                    }
                    if n_tok == 512 && !full && (rows, cols) != (1536, 576) {
                        continue;
                    }
                    let w = weights(t, rows * cols, &mut rng);
                    let x: Vec<f32> = (0..n_tok * cols)
                        .map(|_| rng.gen_range(-1.0..1.0))
                        .collect();
                    let mut out = vec![0f32; n_tok * rows];
                    let mut scratch = Vec::new();
                    if n_tok == 1 {
                        g.throughput(Throughput::Bytes(w.len() as u64));
                    } else {
                        g.throughput(Throughput::Elements((rows * cols * n_tok) as u64));
                    }
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

/// q/k/v (576 + 192 + 192 rows) and gate/up (2 x 1536 rows) of SmolLM2 through one
/// `matmul_multi` call vs separate `matmul` calls; reads as GB/s of weights (one token).
fn bench_matmul_multi<M: Measurement>(c: &mut Criterion<M>) {
    let mut rng = StdRng::seed_from_u64(3);
    let t = QuantType::Q4_1;
    let cols = 576;
    let pools: Vec<Pool> = [1usize, 2].iter().map(|&n| Pool::new(n).unwrap()).collect();
    let mut g = c.benchmark_group("matmul_multi/ntok1");
    for (name, rows) in [
        ("qkv", vec![576usize, 192, 192]),
        ("gateup", vec![1536, 1536]),
    ] {
        let ws: Vec<Vec<u8>> = rows
            .iter()
            .map(|&r| weights(t, r * cols, &mut rng))
            .collect();
        let x: Vec<f32> = (0..cols).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let mut outs: Vec<Vec<f32>> = rows.iter().map(|&r| vec![0f32; r]).collect();
        let mut scratch = Vec::new();
        g.throughput(Throughput::Bytes(ws.iter().map(|w| w.len() as u64).sum()));
        for pool in &pools {
            g.bench_function(format!("{name}/multi/t{}", pool.n_threads()), |b| {
                b.iter(|| {
                    let mut jobs: Vec<MatmulJob<'_>> = ws
                        .iter()
                        .zip(outs.iter_mut())
                        .zip(&rows)
                        .map(|((w, out), &rows)| MatmulJob {
                            w,
                            wt: t,
                            rows,
                            out,
                        })
                        .collect();
                    matmul_multi(pool, &mut jobs, cols, &x, 1, &mut scratch).unwrap()
                })
            });
            g.bench_function(format!("{name}/separate/t{}", pool.n_threads()), |b| {
                b.iter(|| {
                    for ((w, out), &r) in ws.iter().zip(outs.iter_mut()).zip(&rows) {
                        matmul(pool, w, t, r, cols, &x, 1, out, &mut scratch).unwrap()
                    }
                })
            });
        }
    }
    g.finish();
}

/// CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`), in ns.
struct CpuTime;

fn thread_cpu_ns() -> u64 {
    let mut ts = [0i64; 2];
    // SAFETY: clock_gettime(CLOCK_THREAD_CPUTIME_ID = 3, &ts) via the x86-64 Linux syscall ABI
    // (number 228); ts is a valid, writable `struct timespec`; rcx/r11 are clobbered.
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") 228i64 => _,
            in("rdi") 3i64,
            in("rsi") ts.as_mut_ptr(),
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack)
        );
    }
    (ts[0] as u64) * 1_000_000_000 + ts[1] as u64
}

static WALL: WallTime = WallTime;

impl Measurement for CpuTime {
    type Intermediate = u64;
    type Value = u64;
    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, i: u64) -> u64 {
        thread_cpu_ns() - i
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        WALL.formatter()
    }
}

fn run<M: Measurement>(mut c: Criterion<M>) {
    bench_vec_dot(&mut c);
    bench_matmul(&mut c);
    bench_matmul_multi(&mut c);
    c.final_summary();
}

fn main() {
    if std::env::var("HOLOGRAM_BENCH_CPUTIME").is_ok() {
        run(Criterion::default()
            .with_measurement(CpuTime)
            .configure_from_args());
    } else {
        run(Criterion::default().configure_from_args());
    }
}
