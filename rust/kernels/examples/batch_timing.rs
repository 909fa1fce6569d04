//! Small-batch decode timing: one `matmul` at n_tok = 1, 2, 4, 8, 16, 32 on memory-bound
//! shapes (several weight copies, cycled, so the weights do not stay in L3), 1 and 2 threads.
//!
//! `cargo run --release -p hologram-kernels --example batch_timing [-- TYPES [SHAPES]]`,
//! e.g. `-- Q4_0,Q4_K 2048x5632`. Defaults: Q4_0,Q4_1,Q8_0,Q4_K,Q6_K on 2048x5632 and
//! 5632x2048 (rows x cols). `HOLOGRAM_ISA` picks the ISA as usual; `HOLOGRAM_NTOK=1,8` and
//! `HOLOGRAM_THREADS=1` restrict the sweep.
//!
//! 1-thread numbers are the calling thread's CPU time (the 1-thread pool runs everything
//! inline), so preemption by other work on a shared VM does not count; 2-thread numbers are
//! wall time (`HOLOGRAM_COPIES=1` with a small shape: weights cache-resident). Both are the minimum over rounds of the mean per call.

use hologram_kernels::{matmul, simd, Pool, QuantType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Instant;

/// CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`) in ns; wall time elsewhere.
fn thread_cpu_ns() -> u64 {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        let mut ts = [0i64; 2];
        // SAFETY: clock_gettime(CLOCK_THREAD_CPUTIME_ID = 3, &ts) via the x86-64 Linux syscall
        // ABI (number 228); ts is a valid, writable `struct timespec`; rcx/r11 are clobbered.
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
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    {
        static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        T0.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }
}

/// Byte offsets of the f16 scales of a block of `t`.
fn f16_fields(t: QuantType) -> &'static [usize] {
    match t {
        QuantType::Q4_1 | QuantType::Q5_1 | QuantType::Q4_K | QuantType::Q5_K => &[0, 2],
        QuantType::Q2_K => &[80, 82],
        QuantType::Q3_K => &[108],
        QuantType::Q6_K => &[208],
        _ => &[0],
    }
}

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
            for &o in f16_fields(t) {
                b[o..o + 2].copy_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
            }
        }
    }
    v
}

fn parse_type(s: &str) -> QuantType {
    QuantType::ALL
        .into_iter()
        .find(|t| t.name().eq_ignore_ascii_case(s))
        .unwrap_or_else(|| panic!("unknown type {s}"))
}

fn list(var: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(var).map_or_else(
        |_| default.to_vec(),
        |s| s.split(',').map(|v| v.trim().parse().unwrap()).collect(),
    )
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let types: Vec<QuantType> = args
        .first()
        .map_or("Q4_0,Q4_1,Q8_0,Q4_K,Q6_K", |s| s.as_str())
        .split(',')
        .map(parse_type)
        .collect();
    let shapes: Vec<(usize, usize)> = args
        .get(1)
        .map_or("2048x5632,5632x2048", |s| s.as_str())
        .split(',')
        .map(|s| {
            let (r, c) = s.split_once('x').expect("ROWSxCOLS");
            (r.parse().unwrap(), c.parse().unwrap())
        })
        .collect();
    let n_toks = list("HOLOGRAM_NTOK", &[1, 2, 4, 8, 16, 32]);
    let threads = list("HOLOGRAM_THREADS", &[1, 2]);
    let rounds = 7;
    println!("isa {}", simd::active().name());
    println!(
        "{:<5} {:>10} {:>3} | {} | n8/n1",
        "type",
        "shape",
        "thr",
        n_toks
            .iter()
            .map(|n| format!("{:>9}", format!("n={n} us")))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut rng = StdRng::seed_from_u64(7);
    for &t in &types {
        for &(rows, cols) in &shapes {
            let one = weights(t, rows * cols, &mut rng);
            // Enough copies for ~96 MB: 3x the L3, so every call streams from DRAM.
            // HOLOGRAM_COPIES=1 with a small shape measures compute (weights cache-resident).
            let copies = std::env::var("HOLOGRAM_COPIES")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| (96usize << 20).div_ceil(one.len()).max(2));
            let mut ws = vec![one];
            for _ in 1..copies {
                ws.push(weights(t, rows * cols, &mut rng));
            }
            let nmax = n_toks.iter().copied().max().unwrap_or(1);
            let x: Vec<f32> = (0..nmax * cols).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let mut out = vec![0f32; nmax * rows];
            let mut scratch = Vec::new();
            for &th in &threads {
                let pool = Pool::new(th).unwrap();
                let mut us = Vec::new();
                for &n in &n_toks {
                    let mut call = |w: &[u8]| {
                        matmul(
                            &pool,
                            w,
                            t,
                            rows,
                            cols,
                            &x[..n * cols],
                            n,
                            &mut out[..n * rows],
                            &mut scratch,
                        )
                        .unwrap()
                    };
                    let t0 = Instant::now();
                    for w in &ws {
                        call(w);
                    }
                    // Rounds of at least ~20 ms (and every copy at least twice).
                    let per = t0.elapsed().as_secs_f64() / copies as f64;
                    let calls = ((0.02 / per).ceil() as usize).max(2 * copies);
                    let mut best = f64::INFINITY;
                    for _ in 0..rounds {
                        let (c0, w0) = (thread_cpu_ns(), Instant::now());
                        for i in 0..calls {
                            call(&ws[i % copies]);
                        }
                        let ns = if th == 1 {
                            (thread_cpu_ns() - c0) as f64
                        } else {
                            w0.elapsed().as_nanos() as f64
                        };
                        best = best.min(ns / calls as f64 / 1e3);
                    }
                    us.push(best);
                }
                let ratio = n_toks
                    .iter()
                    .position(|&n| n == 8)
                    .zip(n_toks.iter().position(|&n| n == 1))
                    .map_or(String::new(), |(i8, i1)| format!("{:.2}", us[i8] / us[i1]));
                println!(
                    "{:<5} {:>10} {:>3} | {} | {ratio}",
                    t.name(),
                    format!("{rows}x{cols}"),
                    th,
                    us.iter()
                        .map(|u| format!("{u:>9.1}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                );
            }
        }
    }
}
