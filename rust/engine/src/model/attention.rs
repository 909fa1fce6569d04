//! Causal (optionally sliding-window) attention over the paged KV cache.
//!
//! Work is split into tasks of (run of up to 32 consecutive rows of one sequence, KV head): a
//! decode row is its own run. A task converts each f16 value block it needs to f32 once and
//! serves every query of the run and of the KV head's query-head group from it (up to
//! 32 x group queries per conversion instead of one), while the block's keys stay hot in L1.
//! Scores are computed against the f16 keys directly (`dot_f32_f16`: the same arithmetic as
//! before this split; Gemma 3's logits move by up to 0.25 in log-probability at sensitive
//! positions when only the summation order of the scores changes). Each query keeps a
//! streaming softmax (running max, sum and output), so there is no score matrix.
//!
//! With AVX2 (or AVX-512) and enough queries per task, the task also converts each key block
//! to f32 once, transposed, and the [`TKernel`] kernels compute a query's scores for a vector
//! of keys at a time with `dot_f32_f16`'s per-lane order and reduction tree as vertical adds
//! (F16C's conversion is exact, so the products are the same); the AVX-512 kernel takes two
//! heads of the group at once (each key and value vector loaded once for both). Every score,
//! exponential and accumulation is still the same operation, so the results are the same bits
//! as the per-query kernel's (tested), whichever kernel a task uses.
//!
//! Batch invariance: a query's result depends only on its own row: blocks are visited in
//! ascending order with the same key range per block, and every score, exponential and
//! accumulation is the same operation whatever else is in the task.

use std::cell::RefCell;

use half::f16;
use hologram_kernels::{ops, Pool};
use rayon::prelude::*;

use crate::kv::{KvPool, BLOCK_SIZE};
use crate::model::blocks::Attention;
use crate::model::config::ModelConfig;
use crate::model::decoder::Row;

/// Per-thread buffers: one block of values as f32, (for the transposed kernels) one block of
/// keys as f32 transposed, and per query its running max and sum.
#[derive(Default)]
struct Scratch {
    v: Vec<f32>,
    kt: Vec<f32>,
    m: Vec<f32>,
    l: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
    /// The calling thread's list of row runs, reused so a decode step allocates nothing.
    static RUNS: RefCell<Vec<(usize, usize)>> = const { RefCell::new(Vec::new()) };
}

#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint (row, head) slices of the output (see `attention`).
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The pointer (a method, so closures capture the whole `Sync` wrapper).
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// `out` (`rows.len() x n_head*head_dim_v`) = softmax(q k^T * scale) v for every row and head,
/// keys limited to the row's causal range (and `a.window` positions back when set), scores
/// soft-capped when `a.softcap` is set (ggml: scaled by 1/cap, tanh, scaled by cap).
#[allow(clippy::too_many_arguments)]
pub fn attention(
    c: &ModelConfig,
    a: &Attention,
    kv: &KvPool,
    il: usize,
    rows: &[Row],
    q: &[f32],
    out: &mut [f32],
    pool: &Pool,
) {
    let shape = Shape {
        hd: c.head_dim,
        hdv: c.head_dim_v,
        nh: c.n_head,
        nkv: c.n_head_kv,
    };
    let softcap = a.softcap.map(|cap| (cap, 1.0 / cap));
    attention_rows(
        shape, a.scale, softcap, a.window, kv, il, rows, q, out, pool,
    );
}

/// Head sizes and counts.
#[derive(Clone, Copy)]
struct Shape {
    hd: usize,
    hdv: usize,
    nh: usize,
    nkv: usize,
}

/// [`attention`] with the model's settings spelled out (`softcap`: the cap and its inverse).
#[allow(clippy::too_many_arguments)]
fn attention_rows(
    shape: Shape,
    scale: f32,
    softcap: Option<(f32, f32)>,
    window: Option<usize>,
    kv: &KvPool,
    il: usize,
    rows: &[Row],
    q: &[f32],
    out: &mut [f32],
    pool: &Pool,
) {
    let Shape { hd, hdv, nh, nkv } = shape;
    let group = nh / nkv;
    assert!(q.len() >= rows.len() * nh * hd && out.len() >= rows.len() * nh * hdv);
    // Runs of consecutive rows of one sequence at consecutive positions, at most RUN rows
    // each (so a long prompt chunk still spreads over the threads when there are few KV heads).
    const RUN: usize = 32;
    let mut runs = RUNS.with(|r| std::mem::take(&mut *r.borrow_mut()));
    runs.clear();
    let mut r0 = 0;
    for r in 1..=rows.len() {
        if r == rows.len()
            || r - r0 == RUN
            || rows[r].seq != rows[r - 1].seq
            || rows[r].pos != rows[r - 1].pos + 1
        {
            runs.push((r0, r));
            r0 = r;
        }
    }
    let n_tasks = runs.len() * nkv;
    let optr = OutPtr(out.as_mut_ptr());
    let task = |ti: usize| {
        let (ra, rb) = runs[ti / nkv];
        let g = ti % nkv;
        SCRATCH.with(|s| {
            let s = &mut *s.borrow_mut();
            let nq = (rb - ra) * group;
            // The transposed kernels when the tier has them and enough queries share each
            // converted key block (a decode row of a small group keeps the per-query kernel).
            let tkern = if nq >= TRANSPOSED_MIN_QUERIES {
                TKernel::pick(hd, hdv)
            } else {
                None
            };
            s.v.resize(BLOCK_SIZE * hdv, 0.0);
            if tkern.is_some() {
                s.kt.resize(hd * KT_STRIDE + KT_PAD, 0.0);
            }
            s.m.clear();
            s.m.resize(nq, f32::NEG_INFINITY);
            s.l.clear();
            s.l.resize(nq, 0.0);
            // Zero this task's outputs.
            for r in ra..rb {
                for h in g * group..(g + 1) * group {
                    // SAFETY: (r, h) is inside out (checked above) and only this task (run of
                    // r, kv head g = h / group) writes it.
                    let o = unsafe {
                        std::slice::from_raw_parts_mut(optr.get().add((r * nh + h) * hdv), hdv)
                    };
                    o.fill(0.0);
                }
            }
            let seq = rows[ra].seq;
            let blocks = kv.blocks(seq);
            let first_start = match window {
                Some(w) => (rows[ra].pos + 1).saturating_sub(w),
                None => 0,
            };
            let last_end = rows[rb - 1].pos + 1;
            let mut sc = [0f32; BLOCK_SIZE];
            let mut sct = [[0f32; SC_LEN]; 2];
            for (bi, &blk) in blocks
                .iter()
                .enumerate()
                .take(last_end.div_ceil(BLOCK_SIZE))
                .skip(first_start / BLOCK_SIZE)
            {
                let blk = blk as usize;
                let base = bi * BLOCK_SIZE;
                let kb = kv.k_block(il, blk, g);
                let vb = kv.v_block(il, blk, g);
                // Keys and values of this block that some query of the run reads.
                let lo = first_start.max(base) - base;
                let hi = last_end.min(base + BLOCK_SIZE) - base;
                f16_to_f32(&vb[lo * hdv..hi * hdv], &mut s.v[lo * hdv..hi * hdv]);
                if let Some(tk) = tkern {
                    tk.transpose(kb, hd, lo, hi, &mut s.kt);
                }
                for r in ra..rb {
                    let end = rows[r].pos + 1;
                    let start = match window {
                        Some(w) => end.saturating_sub(w),
                        None => 0,
                    };
                    if end <= base || start >= base + BLOCK_SIZE {
                        continue;
                    }
                    let s0 = start.max(base) - base;
                    let s1 = end.min(base + BLOCK_SIZE) - base;
                    let vq = &s.v[s0 * hdv..s1 * hdv];
                    let qv = |h: usize| &q[(r * nh + h) * hd..(r * nh + h + 1) * hd];
                    let ov = |h: usize| {
                        // SAFETY: as above.
                        unsafe {
                            std::slice::from_raw_parts_mut(optr.get().add((r * nh + h) * hdv), hdv)
                        }
                    };
                    let (h0, h1) = (g * group, (g + 1) * group);
                    let mut h = h0;
                    while h < h1 {
                        let qi = (r - ra) * group + (h - h0);
                        let Some(tk) = tkern else {
                            let (mut m, mut l) = (s.m[qi], s.l[qi]);
                            let kq = &kb[s0 * hd..s1 * hd];
                            let o = ov(h);
                            query_block(qv(h), kq, vq, scale, softcap, &mut m, &mut l, o, &mut sc);
                            (s.m[qi], s.l[qi]) = (m, l);
                            h += 1;
                            continue;
                        };
                        if h + 2 <= h1 {
                            // Two heads of the group at once (same keys).
                            let [sa, sb] = &mut sct;
                            let (ma, mb) = s.m[qi..qi + 2].split_at_mut(1);
                            let (la, lb) = s.l[qi..qi + 2].split_at_mut(1);
                            let st = [
                                TState {
                                    m: &mut ma[0],
                                    l: &mut la[0],
                                    o: ov(h),
                                    sc: sa,
                                },
                                TState {
                                    m: &mut mb[0],
                                    l: &mut lb[0],
                                    o: ov(h + 1),
                                    sc: sb,
                                },
                            ];
                            tk.query_block_x2(
                                [qv(h), qv(h + 1)],
                                &s.kt,
                                s0,
                                vq,
                                scale,
                                softcap,
                                st,
                            );
                            h += 2;
                        } else {
                            let st = TState {
                                m: &mut s.m[qi],
                                l: &mut s.l[qi],
                                o: ov(h),
                                sc: &mut sct[0],
                            };
                            tk.query_block(qv(h), &s.kt, s0, vq, scale, softcap, st);
                            h += 1;
                        }
                    }
                }
            }
            for r in ra..rb {
                for h in g * group..(g + 1) * group {
                    let l = s.l[(r - ra) * group + (h - g * group)];
                    if l > 0.0 {
                        // SAFETY: as above.
                        let o = unsafe {
                            std::slice::from_raw_parts_mut(optr.get().add((r * nh + h) * hdv), hdv)
                        };
                        let inv = 1.0 / l;
                        o.iter_mut().for_each(|v| *v *= inv);
                    }
                }
            }
        });
    };
    if n_tasks > 1 && pool.n_threads() > 1 {
        pool.install(|| (0..n_tasks).into_par_iter().for_each(task));
    } else {
        (0..n_tasks).for_each(task);
    }
    RUNS.with(|r| *r.borrow_mut() = runs);
}

/// One query against keys `k` (f16, rows of `q.len()`) and values `v` (f32, rows of
/// `o.len()`) of one block: scores, then the streaming-softmax update of `m`, `l` and `o`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn query_block_body(
    q: &[f32],
    k: &[f16],
    v: &[f32],
    scale: f32,
    softcap: Option<(f32, f32)>,
    m: &mut f32,
    l: &mut f32,
    o: &mut [f32],
    sc: &mut [f32; BLOCK_SIZE],
) {
    let (hd, hdv) = (q.len(), o.len());
    let n = k.len() / hd;
    let mut bmax = f32::NEG_INFINITY;
    for (t, st) in sc.iter_mut().enumerate().take(n) {
        let mut x = ops::dot_f32_f16(q, &k[t * hd..(t + 1) * hd]) * scale;
        if let Some((cap, inv)) = softcap {
            x = (x * inv).tanh() * cap;
        }
        *st = x;
        bmax = bmax.max(x);
    }
    let m_new = m.max(bmax);
    if *m != f32::NEG_INFINITY && m_new > *m {
        let corr = (*m - m_new).exp();
        *l *= corr;
        o.iter_mut().for_each(|x| *x *= corr);
    }
    *m = m_new;
    for (t, &st) in sc.iter().enumerate().take(n) {
        let p = (st - m_new).exp();
        *l += p;
        ops::axpy(p, &v[t * hdv..(t + 1) * hdv], o);
    }
}

/// [`query_block_body`] compiled for AVX2 (its element-wise loops in 256-bit vectors; no
/// reduction is reordered, so the results are the same).
///
/// # Safety
/// AVX2, FMA and F16C must be available.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn query_block_avx2(
    q: &[f32],
    k: &[f16],
    v: &[f32],
    scale: f32,
    softcap: Option<(f32, f32)>,
    m: &mut f32,
    l: &mut f32,
    o: &mut [f32],
    sc: &mut [f32; BLOCK_SIZE],
) {
    query_block_body(q, k, v, scale, softcap, m, l, o, sc)
}

#[allow(clippy::too_many_arguments)]
#[inline]
fn query_block(
    q: &[f32],
    k: &[f16],
    v: &[f32],
    scale: f32,
    softcap: Option<(f32, f32)>,
    m: &mut f32,
    l: &mut f32,
    o: &mut [f32],
    sc: &mut [f32; BLOCK_SIZE],
) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        if q.len().is_multiple_of(16) && o.len().is_multiple_of(8) {
            // SAFETY: the CPU has AVX2, FMA and F16C (checked once at run time); the head
            // sizes are the multiples the kernel needs.
            return unsafe { query_block_regs(q, k, v, scale, softcap, m, l, o, sc) };
        }
        // SAFETY: the CPU has AVX2, FMA and F16C (checked once at run time).
        return unsafe { query_block_avx2(q, k, v, scale, softcap, m, l, o, sc) };
    }
    query_block_body(q, k, v, scale, softcap, m, l, o, sc)
}

/// [`query_block_body`] with the same operations in the same order, written so the operands
/// stay in registers: two keys share each load of the query, and the output is updated 64
/// lanes at a time with those lanes held in registers across all keys of the block (the
/// generic version loads and stores the whole output row once per key). Every score is
/// reduced with `dot_f32_f16`'s tree and every output lane takes the same fused multiply-adds
/// in the same order, so the results are identical bit for bit.
///
/// # Safety
/// AVX2, FMA and F16C must be available; `q.len()` must be a multiple of 16 and `o.len()` a
/// multiple of 8; `k` and `v` hold the same number of rows (of `q.len()` and `o.len()`).
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn query_block_regs(
    q: &[f32],
    k: &[f16],
    v: &[f32],
    scale: f32,
    softcap: Option<(f32, f32)>,
    m: &mut f32,
    l: &mut f32,
    o: &mut [f32],
    sc: &mut [f32; BLOCK_SIZE],
) {
    use std::arch::x86_64::*;
    let (hd, hdv) = (q.len(), o.len());
    let n = (k.len() / hd).min(v.len() / hdv).min(BLOCK_SIZE);
    #[inline(always)]
    fn reduce(acc0: __m256, acc1: __m256) -> f32 {
        // SAFETY: register-only AVX operations (the caller runs with AVX2 enabled).
        unsafe {
            let acc = _mm256_add_ps(acc0, acc1);
            let hi = _mm256_extractf128_ps(acc, 1);
            let lo = _mm256_castps256_ps128(acc);
            let s4 = _mm_add_ps(hi, lo);
            let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
            let s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
            _mm_cvtss_f32(s1)
        }
    }
    let finish = |d: f32| {
        let mut x = d * scale;
        if let Some((cap, inv)) = softcap {
            x = (x * inv).tanh() * cap;
        }
        x
    };
    let qp = q.as_ptr();
    let mut bmax = f32::NEG_INFINITY;
    let mut t = 0;
    while t + 2 <= n {
        // SAFETY: keys t and t + 1 are inside k (t + 2 <= n); i + 16 <= hd bounds q and each
        // key row; unaligned loads.
        let (d0, d1) = unsafe {
            let k0 = k.as_ptr().add(t * hd);
            let k1 = k0.add(hd);
            let (mut a0, mut a1, mut b0, mut b1) = (
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
            );
            let mut i = 0;
            while i + 16 <= hd {
                let x0 = _mm256_loadu_ps(qp.add(i));
                let x1 = _mm256_loadu_ps(qp.add(i + 8));
                let y0 = _mm256_cvtph_ps(_mm_loadu_si128(k0.add(i) as *const __m128i));
                let y1 = _mm256_cvtph_ps(_mm_loadu_si128(k0.add(i + 8) as *const __m128i));
                let z0 = _mm256_cvtph_ps(_mm_loadu_si128(k1.add(i) as *const __m128i));
                let z1 = _mm256_cvtph_ps(_mm_loadu_si128(k1.add(i + 8) as *const __m128i));
                a0 = _mm256_fmadd_ps(x0, y0, a0);
                a1 = _mm256_fmadd_ps(x1, y1, a1);
                b0 = _mm256_fmadd_ps(x0, z0, b0);
                b1 = _mm256_fmadd_ps(x1, z1, b1);
                i += 16;
            }
            (reduce(a0, a1), reduce(b0, b1))
        };
        let (x0, x1) = (finish(d0), finish(d1));
        sc[t] = x0;
        sc[t + 1] = x1;
        bmax = bmax.max(x0);
        bmax = bmax.max(x1);
        t += 2;
    }
    if t < n {
        // SAFETY: key t is inside k; i + 16 <= hd bounds q and the key row.
        let d = unsafe {
            let k0 = k.as_ptr().add(t * hd);
            let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            let mut i = 0;
            while i + 16 <= hd {
                let x0 = _mm256_loadu_ps(qp.add(i));
                let x1 = _mm256_loadu_ps(qp.add(i + 8));
                let y0 = _mm256_cvtph_ps(_mm_loadu_si128(k0.add(i) as *const __m128i));
                let y1 = _mm256_cvtph_ps(_mm_loadu_si128(k0.add(i + 8) as *const __m128i));
                a0 = _mm256_fmadd_ps(x0, y0, a0);
                a1 = _mm256_fmadd_ps(x1, y1, a1);
                i += 16;
            }
            reduce(a0, a1)
        };
        let x = finish(d);
        sc[t] = x;
        bmax = bmax.max(x);
    }
    let m_new = m.max(bmax);
    let corr = if *m != f32::NEG_INFINITY && m_new > *m {
        Some((*m - m_new).exp())
    } else {
        None
    };
    if let Some(c) = corr {
        *l *= c;
    }
    *m = m_new;
    // SAFETY: AVX2 and FMA are available (this function's contract).
    unsafe { exp_shifted_avx2(&mut sc[..n], m_new) };
    for &p in sc.iter().take(n) {
        *l += p;
    }
    // The output, 64 lanes (8 registers) at a time, then 8 at a time.
    let op = o.as_mut_ptr();
    let vp = v.as_ptr();
    let mut c0 = 0;
    while c0 + 64 <= hdv {
        // SAFETY: c0 + 64 <= hdv bounds the output row and each value row (t < n rows).
        unsafe {
            let mut r = [_mm256_setzero_ps(); 8];
            for (j, rj) in r.iter_mut().enumerate() {
                *rj = _mm256_loadu_ps(op.add(c0 + 8 * j));
            }
            if let Some(c) = corr {
                let vc = _mm256_set1_ps(c);
                for rj in r.iter_mut() {
                    *rj = _mm256_mul_ps(*rj, vc);
                }
            }
            for (tt, &p) in sc.iter().enumerate().take(n) {
                let vpp = _mm256_set1_ps(p);
                let row = vp.add(tt * hdv + c0);
                for (j, rj) in r.iter_mut().enumerate() {
                    *rj = _mm256_fmadd_ps(vpp, _mm256_loadu_ps(row.add(8 * j)), *rj);
                }
            }
            for (j, rj) in r.iter().enumerate() {
                _mm256_storeu_ps(op.add(c0 + 8 * j), *rj);
            }
        }
        c0 += 64;
    }
    while c0 + 8 <= hdv {
        // SAFETY: c0 + 8 <= hdv bounds the output row and each value row.
        unsafe {
            let mut r = _mm256_loadu_ps(op.add(c0));
            if let Some(c) = corr {
                r = _mm256_mul_ps(r, _mm256_set1_ps(c));
            }
            for (tt, &p) in sc.iter().enumerate().take(n) {
                r = _mm256_fmadd_ps(_mm256_set1_ps(p), _mm256_loadu_ps(vp.add(tt * hdv + c0)), r);
            }
            _mm256_storeu_ps(op.add(c0), r);
        }
        c0 += 8;
    }
}

/// Row stride of a transposed key block: `kt[d * KT_STRIDE + t]` is dimension `d` of key `t`.
const KT_STRIDE: usize = BLOCK_SIZE;
/// Floats after the last row of a transposed key block: the kernels read whole vectors of
/// keys from a query's first key on (up to 31 keys past the block's end, discarded).
const KT_PAD: usize = 32;
/// Length of the transposed kernels' score buffer (whole vectors are stored, then trimmed).
const SC_LEN: usize = BLOCK_SIZE + 32;
/// Queries per task (rows of the run x query heads of the group) from which the transposed
/// kernels are used: each key block is converted and transposed once per task, which pays for
/// itself when several queries read it (a decode row of a small group keeps
/// [`query_block_regs`]; both give the same bits, so batch invariance holds either way).
const TRANSPOSED_MIN_QUERIES: usize = 8;

/// The largest key head size for which the AVX2 tier uses the transposed kernel.
const AVX2_TRANSPOSED_MAX_HD: usize = 128;

/// A query's streaming-softmax state and the score buffer, for the transposed kernels.
struct TState<'a> {
    m: &'a mut f32,
    l: &'a mut f32,
    o: &'a mut [f32],
    sc: &'a mut [f32; SC_LEN],
}

/// The transposed kernels: the task converts each key block to f32 once, transposed (F16C's
/// conversion is exact, so the keys are the values `dot_f32_f16` multiplies), and a query's
/// scores are computed for a vector of keys at a time: lane `t` of accumulator `j` takes the
/// products of dimensions `16c + j` of key `t` (c = 0, 1, ...) in the same order as lane `j`
/// of `dot_f32_f16`'s two accumulators (j < 8: the first, else the second), and the
/// accumulators are then added with that function's reduction tree (the first accumulator
/// plus the second, then lanes j + 4 and j, then j + 2, then j + 1) as vertical adds. Each
/// score is therefore the same sequence of roundings with no horizontal reduction per key;
/// the softmax and the output update are [`query_block_body`]'s operations, lane for lane.
#[derive(Clone, Copy)]
enum TKernel {
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl TKernel {
    /// The kernel for the active tier and these head sizes, if there is one.
    fn pick(hd: usize, hdv: usize) -> Option<TKernel> {
        if !hd.is_multiple_of(16) || !hdv.is_multiple_of(8) || hd == 0 || hdv == 0 {
            return None;
        }
        #[cfg(target_arch = "x86_64")]
        {
            use hologram_kernels::simd::{self, Isa};
            match simd::active() {
                Isa::Avx512 => Some(TKernel::Avx512),
                // With 8-lane vectors each multiply-add of the scores needs a key load and a
                // query broadcast: against the per-query kernel that wins up to 128 dimensions
                // (64: 5.9 vs 7.0 ns per query and key, 128: 12.0 vs 13.4) and loses at 256
                // (33 vs 26).
                Isa::Avx2 if hd <= AVX2_TRANSPOSED_MAX_HD => Some(TKernel::Avx2),
                _ => None,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        None
    }

    /// Keys `lo..hi` of block `k` (`BLOCK_SIZE x hd` f16) -> `kt` as f32, transposed
    /// (whole groups of 8 keys around `lo..hi` are converted).
    fn transpose(self, k: &[f16], hd: usize, lo: usize, hi: usize, kt: &mut [f32]) {
        assert!(
            hd.is_multiple_of(8)
                && lo <= hi
                && hi <= BLOCK_SIZE
                && k.len() >= BLOCK_SIZE * hd
                && kt.len() >= hd * KT_STRIDE
        );
        match self {
            // SAFETY: both tiers include AVX2, FMA and F16C (simd::active only returns
            // available tiers); the sizes were checked above.
            #[cfg(target_arch = "x86_64")]
            TKernel::Avx2 | TKernel::Avx512 => unsafe { transpose_keys_avx2(k, hd, lo, hi, kt) },
        }
    }

    /// One query (`q`, `hd` floats) against keys `s0..s0 + n` of the transposed block `kt` and
    /// their values `v` (`n x hdv` f32): scores, then the streaming-softmax update of `st`.
    #[allow(clippy::too_many_arguments)]
    fn query_block(
        self,
        q: &[f32],
        kt: &[f32],
        s0: usize,
        v: &[f32],
        scale: f32,
        softcap: Option<(f32, f32)>,
        st: TState<'_>,
    ) {
        let (hd, hdv) = (q.len(), st.o.len());
        assert!(hd.is_multiple_of(16) && hdv.is_multiple_of(8) && hdv > 0);
        let n = v.len() / hdv;
        assert!(v.len() == n * hdv && s0 + n <= BLOCK_SIZE && kt.len() >= hd * KT_STRIDE + KT_PAD);
        match self {
            // SAFETY: the tier is available (simd::active only returns available tiers);
            // sizes checked above.
            #[cfg(target_arch = "x86_64")]
            TKernel::Avx2 => unsafe { query_block_t256(q, kt, s0, v, scale, softcap, st) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            TKernel::Avx512 => unsafe { query_block_t512(q, kt, s0, v, scale, softcap, st) },
        }
    }
}

impl TKernel {
    /// [`TKernel::query_block`] for two queries with the same keys (two heads of a group,
    /// same row); the same results as two single calls.
    #[allow(clippy::too_many_arguments)]
    fn query_block_x2(
        self,
        q: [&[f32]; 2],
        kt: &[f32],
        s0: usize,
        v: &[f32],
        scale: f32,
        softcap: Option<(f32, f32)>,
        st: [TState<'_>; 2],
    ) {
        match self {
            #[cfg(target_arch = "x86_64")]
            TKernel::Avx512 => {
                let (hd, hdv) = (q[0].len(), st[0].o.len());
                assert!(hd.is_multiple_of(16) && hdv.is_multiple_of(8) && hdv > 0);
                assert!(q[1].len() == hd && st[1].o.len() == hdv);
                let n = v.len() / hdv;
                assert!(
                    v.len() == n * hdv
                        && s0 + n <= BLOCK_SIZE
                        && kt.len() >= hd * KT_STRIDE + KT_PAD
                );
                // SAFETY: the tier is available (simd::active only returns available
                // tiers); sizes checked above.
                unsafe { query_block_t512_x2(q, kt, s0, v, scale, softcap, st) }
            }
            #[allow(unreachable_patterns)]
            _ => {
                let [a, b] = st;
                self.query_block(q[0], kt, s0, v, scale, softcap, a);
                self.query_block(q[1], kt, s0, v, scale, softcap, b);
            }
        }
    }
}

/// See [`TKernel::transpose`].
///
/// # Safety
/// AVX2 and F16C must be available; `hd` a multiple of 8, `lo <= hi <= BLOCK_SIZE`,
/// `k.len() >= BLOCK_SIZE * hd`, `kt.len() >= hd * KT_STRIDE`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn transpose_keys_avx2(k: &[f16], hd: usize, lo: usize, hi: usize, kt: &mut [f32]) {
    use std::arch::x86_64::*;
    let mut t0 = lo & !7;
    while t0 < hi {
        let mut d = 0;
        while d + 8 <= hd {
            // SAFETY: t0 is a multiple of 8 below hi <= BLOCK_SIZE (a multiple of 8), so
            // rows t0..t0 + 8 are inside k; d + 8 <= hd; the stores go to rows d..d + 8 of kt,
            // columns t0..t0 + 8 <= KT_STRIDE.
            unsafe {
                let kp = k.as_ptr().add(t0 * hd + d);
                let r: [__m256; 8] = std::array::from_fn(|i| {
                    _mm256_cvtph_ps(_mm_loadu_si128(kp.add(i * hd) as *const __m128i))
                });
                let t: [__m256; 8] = [
                    _mm256_unpacklo_ps(r[0], r[1]),
                    _mm256_unpackhi_ps(r[0], r[1]),
                    _mm256_unpacklo_ps(r[2], r[3]),
                    _mm256_unpackhi_ps(r[2], r[3]),
                    _mm256_unpacklo_ps(r[4], r[5]),
                    _mm256_unpackhi_ps(r[4], r[5]),
                    _mm256_unpacklo_ps(r[6], r[7]),
                    _mm256_unpackhi_ps(r[6], r[7]),
                ];
                let u: [__m256; 8] = [
                    _mm256_shuffle_ps::<0x44>(t[0], t[2]),
                    _mm256_shuffle_ps::<0xee>(t[0], t[2]),
                    _mm256_shuffle_ps::<0x44>(t[1], t[3]),
                    _mm256_shuffle_ps::<0xee>(t[1], t[3]),
                    _mm256_shuffle_ps::<0x44>(t[4], t[6]),
                    _mm256_shuffle_ps::<0xee>(t[4], t[6]),
                    _mm256_shuffle_ps::<0x44>(t[5], t[7]),
                    _mm256_shuffle_ps::<0xee>(t[5], t[7]),
                ];
                let op = kt.as_mut_ptr().add(d * KT_STRIDE + t0);
                for i in 0..4 {
                    let lo4 = _mm256_permute2f128_ps::<0x20>(u[i], u[i + 4]);
                    let hi4 = _mm256_permute2f128_ps::<0x31>(u[i], u[i + 4]);
                    _mm256_storeu_ps(op.add(i * KT_STRIDE), lo4);
                    _mm256_storeu_ps(op.add((i + 4) * KT_STRIDE), hi4);
                }
            }
            d += 8;
        }
        t0 += 8;
    }
}

/// The first half of the softmax part of a transposed kernel, once `st.sc[..n]` holds the
/// scaled scores: soft cap, block max and running-max correction of `st.l` and `st.m`, as in
/// [`query_block_body`]. Returns the correction factor to apply to the output, if any; the
/// exponentials and the sum follow ([`softmax_update`]).
///
/// # Safety
/// AVX2 must be available; `n <= BLOCK_SIZE`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn softmax_max(n: usize, softcap: Option<(f32, f32)>, st: &mut TState<'_>) -> Option<f32> {
    use std::arch::x86_64::*;
    if let Some((cap, inv)) = softcap {
        for x in st.sc.iter_mut().take(n) {
            *x = (*x * inv).tanh() * cap;
        }
    }
    // The block max, 8 lanes at a time over the scores padded with -inf. maxps returns its
    // second operand when either is NaN, so NaN scores are skipped as `f32::max` skips them,
    // and the max of the remaining values is exact in any order; only the sign of a zero
    // maximum could differ, so that case takes the sequential loop.
    st.sc[n..n.next_multiple_of(8)].fill(f32::NEG_INFINITY);
    // SAFETY: register operations and loads inside sc (n.next_multiple_of(8) <= SC_LEN).
    let mut bmax = unsafe {
        let mut acc = _mm256_set1_ps(f32::NEG_INFINITY);
        let mut t = 0;
        while t < n {
            acc = _mm256_max_ps(_mm256_loadu_ps(st.sc.as_ptr().add(t)), acc);
            t += 8;
        }
        let m4 = _mm_max_ps(_mm256_extractf128_ps(acc, 1), _mm256_castps256_ps128(acc));
        let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        _mm_cvtss_f32(_mm_max_ss(m2, _mm_shuffle_ps(m2, m2, 1)))
    };
    if bmax == 0.0 {
        bmax = f32::NEG_INFINITY;
        for &x in st.sc.iter().take(n) {
            bmax = bmax.max(x);
        }
    }
    let m = *st.m;
    let m_new = m.max(bmax);
    let corr = if m != f32::NEG_INFINITY && m_new > m {
        Some((m - m_new).exp())
    } else {
        None
    };
    if let Some(c) = corr {
        *st.l *= c;
    }
    *st.m = m_new;
    corr
}

/// The softmax part of a transposed kernel for one query: [`softmax_max`], the exponentials
/// (`x512`: 8 lanes with AVX-512F, else 4) and the sum.
///
/// # Safety
/// AVX2 and FMA (and AVX-512F when `x512`) must be available; `n <= BLOCK_SIZE`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn softmax_update(
    n: usize,
    softcap: Option<(f32, f32)>,
    st: &mut TState<'_>,
    x512: bool,
) -> Option<f32> {
    // SAFETY: this function's contract.
    unsafe {
        let corr = softmax_max(n, softcap, st);
        exp_block(&mut st.sc[..n], *st.m, x512);
        let mut l = *st.l;
        for &p in st.sc.iter().take(n) {
            l += p;
        }
        *st.l = l;
        corr
    }
}

/// `x[i] = expf(x[i] - m)` with [`exp_shifted_avx512`] or [`exp_shifted_avx2`].
///
/// # Safety
/// AVX2 and FMA (and AVX-512F when `x512`) must be available.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn exp_block(x: &mut [f32], m: f32, x512: bool) {
    // SAFETY: this function's contract.
    unsafe {
        if x512 {
            exp_shifted_avx512(x, m)
        } else {
            exp_shifted_avx2(x, m)
        }
    }
}

/// The f32 vector operations the transposed kernels use, for 8-lane (AVX) and 16-lane
/// (AVX-512F) registers: one body of each kernel serves both widths.
///
/// # Safety
/// Every method is an intrinsic of its width: callable only where that width is enabled (the
/// kernels are inlined into `#[target_feature]` functions); pointers valid for `N` values.
#[cfg(target_arch = "x86_64")]
trait Lanes {
    type V: Copy;
    const N: usize;
    unsafe fn zero() -> Self::V;
    unsafe fn load(p: *const f32) -> Self::V;
    unsafe fn store(p: *mut f32, v: Self::V);
    unsafe fn splat(x: f32) -> Self::V;
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    /// `a * b + c`, fused.
    unsafe fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
}

/// 8 lanes (AVX + FMA).
#[cfg(target_arch = "x86_64")]
struct Ymm;
/// 16 lanes (AVX-512F).
#[cfg(target_arch = "x86_64")]
struct Zmm;

#[cfg(target_arch = "x86_64")]
macro_rules! impl_lanes {
    ($t:ty, $v:ty, $n:expr, $zero:ident, $load:ident, $store:ident, $set1:ident, $add:ident,
     $mul:ident, $fmadd:ident) => {
        impl Lanes for $t {
            type V = $v;
            const N: usize = $n;
            #[inline(always)]
            unsafe fn zero() -> $v {
                // SAFETY: the trait's contract (the width is enabled).
                unsafe { std::arch::x86_64::$zero() }
            }
            #[inline(always)]
            unsafe fn load(p: *const f32) -> $v {
                // SAFETY: the trait's contract (N readable values).
                unsafe { std::arch::x86_64::$load(p) }
            }
            #[inline(always)]
            unsafe fn store(p: *mut f32, v: $v) {
                // SAFETY: the trait's contract (N writable values).
                unsafe { std::arch::x86_64::$store(p, v) }
            }
            #[inline(always)]
            unsafe fn splat(x: f32) -> $v {
                // SAFETY: the trait's contract.
                unsafe { std::arch::x86_64::$set1(x) }
            }
            #[inline(always)]
            unsafe fn add(a: $v, b: $v) -> $v {
                // SAFETY: the trait's contract.
                unsafe { std::arch::x86_64::$add(a, b) }
            }
            #[inline(always)]
            unsafe fn mul(a: $v, b: $v) -> $v {
                // SAFETY: the trait's contract.
                unsafe { std::arch::x86_64::$mul(a, b) }
            }
            #[inline(always)]
            unsafe fn fmadd(a: $v, b: $v, c: $v) -> $v {
                // SAFETY: the trait's contract.
                unsafe { std::arch::x86_64::$fmadd(a, b, c) }
            }
        }
    };
}
#[cfg(target_arch = "x86_64")]
impl_lanes!(
    Ymm,
    std::arch::x86_64::__m256,
    8,
    _mm256_setzero_ps,
    _mm256_loadu_ps,
    _mm256_storeu_ps,
    _mm256_set1_ps,
    _mm256_add_ps,
    _mm256_mul_ps,
    _mm256_fmadd_ps
);
#[cfg(target_arch = "x86_64")]
impl_lanes!(
    Zmm,
    std::arch::x86_64::__m512,
    16,
    _mm512_setzero_ps,
    _mm512_loadu_ps,
    _mm512_storeu_ps,
    _mm512_set1_ps,
    _mm512_add_ps,
    _mm512_mul_ps,
    _mm512_fmadd_ps
);

/// Output lanes `0..L::N * R` of `op`: times `corr`, then `+= p_t * v_t` for every key `t` in
/// order (`vp` rows of `hdv`), the lanes held in R registers.
///
/// # Safety
/// `L`'s width must be enabled; `L::N * R` lanes inside the output row and every value row.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn out_vec<L: Lanes, const R: usize>(
    op: *mut f32,
    vp: *const f32,
    hdv: usize,
    p: &[f32],
    corr: Option<f32>,
) {
    // SAFETY: the caller's contract.
    unsafe {
        let mut r: [L::V; R] = std::array::from_fn(|j| L::load(op.add(L::N * j)));
        if let Some(c) = corr {
            let vc = L::splat(c);
            r.iter_mut().for_each(|rj| *rj = L::mul(*rj, vc));
        }
        for (t, &pt) in p.iter().enumerate() {
            let vpp = L::splat(pt);
            let row = vp.add(t * hdv);
            for (j, rj) in r.iter_mut().enumerate() {
                *rj = L::fmadd(vpp, L::load(row.add(L::N * j)), *rj);
            }
        }
        for (j, rj) in r.iter().enumerate() {
            L::store(op.add(L::N * j), *rj);
        }
    }
}

/// Scores of `L::N * NV` keys: `sp[..L::N * NV]` = scale x (q . key t) for the keys whose
/// transposed dimensions start at `kp` (see [`TKernel`] for the order of the operations).
///
/// # Safety
/// `L`'s width must be enabled; `hd` a multiple of 16; `qp[..hd]`,
/// `kp[d * KT_STRIDE..+L::N * NV]` for d < hd and `sp[..L::N * NV]` valid.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn scores_vec<L: Lanes, const NV: usize>(
    qp: *const f32,
    hd: usize,
    kp: *const f32,
    scale: L::V,
    sp: *mut f32,
) {
    // SAFETY: the caller's contract.
    unsafe {
        let mut a = [[L::zero(); NV]; 8];
        for h in 0..2 {
            let mut acc = [[L::zero(); NV]; 8];
            let mut c = 8 * h;
            while c < hd {
                for (j, aj) in acc.iter_mut().enumerate() {
                    let x = L::splat(*qp.add(c + j));
                    let row = kp.add((c + j) * KT_STRIDE);
                    for (u, aju) in aj.iter_mut().enumerate() {
                        *aju = L::fmadd(x, L::load(row.add(L::N * u)), *aju);
                    }
                }
                c += 16;
            }
            for (aj, accj) in a.iter_mut().zip(acc) {
                for (aju, accju) in aj.iter_mut().zip(accj) {
                    *aju = if h == 0 { accju } else { L::add(*aju, accju) };
                }
            }
        }
        #[allow(clippy::needless_range_loop)]
        for u in 0..NV {
            let s4: [L::V; 4] = std::array::from_fn(|j| L::add(a[j + 4][u], a[j][u]));
            let s2 = [L::add(s4[0], s4[2]), L::add(s4[1], s4[3])];
            let s = L::add(s2[0], s2[1]);
            L::store(sp.add(L::N * u), L::mul(s, scale));
        }
    }
}

/// The AVX2 transposed kernel (see [`TKernel::query_block`]).
///
/// # Safety
/// AVX2, FMA and F16C must be available; the sizes [`TKernel::query_block`] checks.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn query_block_t256(
    q: &[f32],
    kt: &[f32],
    s0: usize,
    v: &[f32],
    scale: f32,
    softcap: Option<(f32, f32)>,
    mut st: TState<'_>,
) {
    use std::arch::x86_64::*;
    let (hd, hdv) = (q.len(), st.o.len());
    let n = v.len() / hdv;
    let vs = _mm256_set1_ps(scale);
    let mut g = 0;
    while g < n {
        // SAFETY: keys s0 + g..s0 + g + 8 < s0 + n + 8 <= BLOCK_SIZE + 8 of every row of kt
        // (KT_PAD covers the last row); g + 8 <= SC_LEN.
        unsafe {
            scores_vec::<Ymm, 1>(
                q.as_ptr(),
                hd,
                kt.as_ptr().add(s0 + g),
                vs,
                st.sc.as_mut_ptr().add(g),
            )
        };
        g += 8;
    }
    // SAFETY: AVX2 and FMA are available; n <= BLOCK_SIZE.
    let corr = unsafe { softmax_update(n, softcap, &mut st, false) };
    let (op, vp) = (st.o.as_mut_ptr(), v.as_ptr());
    let p = &st.sc[..n];
    let mut c0 = 0;
    while c0 + 64 <= hdv {
        // SAFETY: c0 + 64 <= hdv bounds the output row and the n value rows.
        unsafe { out_vec::<Ymm, 8>(op.add(c0), vp.add(c0), hdv, p, corr) };
        c0 += 64;
    }
    while c0 + 8 <= hdv {
        // SAFETY: c0 + 8 <= hdv, as above.
        unsafe { out_vec::<Ymm, 1>(op.add(c0), vp.add(c0), hdv, p, corr) };
        c0 += 8;
    }
}

/// The AVX-512 transposed kernel (see [`TKernel::query_block`]): the same operations as
/// [`query_block_t256`] on 16-lane registers.
///
/// # Safety
/// AVX-512F, AVX2, FMA and F16C must be available; the sizes [`TKernel::query_block`] checks.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn query_block_t512(
    q: &[f32],
    kt: &[f32],
    s0: usize,
    v: &[f32],
    scale: f32,
    softcap: Option<(f32, f32)>,
    mut st: TState<'_>,
) {
    use std::arch::x86_64::*;
    let (hd, hdv) = (q.len(), st.o.len());
    let n = v.len() / hdv;
    let vs = _mm512_set1_ps(scale);
    let (qp, sp) = (q.as_ptr(), st.sc.as_mut_ptr());
    // SAFETY: keys s0..s0 + 32 (or + 16) of every row of kt: s0 + 32 <= BLOCK_SIZE + 31
    // (KT_PAD covers the last row); scores 0..32 <= SC_LEN.
    unsafe {
        let kp = kt.as_ptr().add(s0);
        if n > 16 {
            scores_vec::<Zmm, 2>(qp, hd, kp, vs, sp);
        } else if n > 0 {
            scores_vec::<Zmm, 1>(qp, hd, kp, vs, sp);
        }
    }
    // SAFETY: AVX2 and FMA are available; n <= BLOCK_SIZE.
    let corr = unsafe { softmax_update(n, softcap, &mut st, true) };
    let (op, vp) = (st.o.as_mut_ptr(), v.as_ptr());
    let p = &st.sc[..n];
    let mut c0 = 0;
    while c0 + 128 <= hdv {
        // SAFETY: c0 + 128 <= hdv bounds the output row and the n value rows.
        unsafe { out_vec::<Zmm, 8>(op.add(c0), vp.add(c0), hdv, p, corr) };
        c0 += 128;
    }
    if c0 + 64 <= hdv {
        // SAFETY: c0 + 64 <= hdv, as above.
        unsafe { out_vec::<Zmm, 4>(op.add(c0), vp.add(c0), hdv, p, corr) };
        c0 += 64;
    }
    while c0 + 16 <= hdv {
        // SAFETY: c0 + 16 <= hdv, as above.
        unsafe { out_vec::<Zmm, 1>(op.add(c0), vp.add(c0), hdv, p, corr) };
        c0 += 16;
    }
    if c0 + 8 <= hdv {
        // SAFETY: c0 + 8 <= hdv, as above.
        unsafe { out_vec::<Ymm, 1>(op.add(c0), vp.add(c0), hdv, p, corr) };
    }
}

/// Scores of 16 keys for two queries at once (each key vector loaded once for both); per
/// query the operations of [`scores_vec`].
///
/// # Safety
/// AVX-512F must be available; `hd` a multiple of 16; `qp[i][..hd]`,
/// `kp[d * KT_STRIDE..+16]` for d < hd and `sp[i][..16]` valid.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn scores_zmm_x2(
    qp: [*const f32; 2],
    hd: usize,
    kp: *const f32,
    scale: std::arch::x86_64::__m512,
    sp: [*mut f32; 2],
) {
    use std::arch::x86_64::*;
    // SAFETY: the caller's contract.
    unsafe {
        let mut a = [[_mm512_setzero_ps(); 2]; 8];
        for h in 0..2 {
            let mut acc = [[_mm512_setzero_ps(); 2]; 8];
            let mut c = 8 * h;
            while c < hd {
                for (j, aj) in acc.iter_mut().enumerate() {
                    let kv = _mm512_loadu_ps(kp.add((c + j) * KT_STRIDE));
                    for (u, aju) in aj.iter_mut().enumerate() {
                        *aju = _mm512_fmadd_ps(_mm512_set1_ps(*qp[u].add(c + j)), kv, *aju);
                    }
                }
                c += 16;
            }
            for (aj, accj) in a.iter_mut().zip(acc) {
                for (aju, accju) in aj.iter_mut().zip(accj) {
                    *aju = if h == 0 {
                        accju
                    } else {
                        _mm512_add_ps(*aju, accju)
                    };
                }
            }
        }
        for u in 0..2 {
            let s4: [__m512; 4] = std::array::from_fn(|j| _mm512_add_ps(a[j + 4][u], a[j][u]));
            let s2 = [_mm512_add_ps(s4[0], s4[2]), _mm512_add_ps(s4[1], s4[3])];
            let s = _mm512_add_ps(s2[0], s2[1]);
            _mm512_storeu_ps(sp[u], _mm512_mul_ps(s, scale));
        }
    }
}

/// [`out_vec`] for two queries at once: each value vector is loaded once for both, and the
/// two queries' lanes are independent chains of fused multiply-adds. With `SUM`, also
/// `l[i] += p[i][t]` for every key in order (the softmax sum: a chain of dependent adds, as
/// long per key as the multiply-add chains it runs alongside).
///
/// # Safety
/// AVX-512F must be available; `16 * R` lanes inside both output rows and every value row;
/// `p[i]` holds the value rows' weights for query i (the same count for both).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn out_zmm_x2<const R: usize, const SUM: bool>(
    op: [*mut f32; 2],
    vp: *const f32,
    hdv: usize,
    p: [&[f32]; 2],
    corr: [Option<f32>; 2],
    l: &mut [f32; 2],
) {
    use std::arch::x86_64::*;
    // SAFETY: the caller's contract.
    unsafe {
        let mut r: [[__m512; R]; 2] =
            std::array::from_fn(|u| std::array::from_fn(|j| _mm512_loadu_ps(op[u].add(16 * j))));
        for (ru, cu) in r.iter_mut().zip(corr) {
            if let Some(c) = cu {
                let vc = _mm512_set1_ps(c);
                ru.iter_mut().for_each(|rj| *rj = _mm512_mul_ps(*rj, vc));
            }
        }
        let n = p[0].len().min(p[1].len());
        for t in 0..n {
            let row = vp.add(t * hdv);
            let vr: [__m512; R] = std::array::from_fn(|j| _mm512_loadu_ps(row.add(16 * j)));
            if SUM {
                l[0] += *p[0].get_unchecked(t);
                l[1] += *p[1].get_unchecked(t);
            }
            for (ru, pu) in r.iter_mut().zip(p) {
                let vpp = _mm512_set1_ps(*pu.get_unchecked(t));
                for (rj, vj) in ru.iter_mut().zip(vr) {
                    *rj = _mm512_fmadd_ps(vpp, vj, *rj);
                }
            }
        }
        for (ru, opu) in r.iter().zip(op) {
            for (j, rj) in ru.iter().enumerate() {
                _mm512_storeu_ps(opu.add(16 * j), *rj);
            }
        }
    }
}

/// [`query_block_t512`] for two queries with the same keys (two heads of a group, same row):
/// each key and value vector is loaded once for both, and the two queries' dependency chains
/// (output lanes, the sum) interleave. Per query, the same operations in the same order.
///
/// # Safety
/// As [`query_block_t512`], for both queries (same head sizes).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn query_block_t512_x2(
    q: [&[f32]; 2],
    kt: &[f32],
    s0: usize,
    v: &[f32],
    scale: f32,
    softcap: Option<(f32, f32)>,
    st: [TState<'_>; 2],
) {
    use std::arch::x86_64::*;
    let [mut sa, mut sb] = st;
    let (hd, hdv) = (q[0].len(), sa.o.len());
    let n = v.len() / hdv;
    let vs = _mm512_set1_ps(scale);
    let qp = [q[0].as_ptr(), q[1].as_ptr()];
    let mut g = 0;
    while g < n {
        // SAFETY: keys s0 + g..s0 + g + 16 of every row of kt: s0 + g + 16 <= BLOCK_SIZE + 15
        // (KT_PAD covers the last row); scores g..g + 16 <= SC_LEN.
        unsafe {
            let sp = [sa.sc.as_mut_ptr().add(g), sb.sc.as_mut_ptr().add(g)];
            scores_zmm_x2(qp, hd, kt.as_ptr().add(s0 + g), vs, sp);
        }
        g += 16;
    }
    // SAFETY: AVX-512F, AVX2 and FMA are available; n <= BLOCK_SIZE.
    let corr = unsafe {
        let ca = softmax_max(n, softcap, &mut sa);
        let cb = softmax_max(n, softcap, &mut sb);
        exp_shifted_avx512(&mut sa.sc[..n], *sa.m);
        exp_shifted_avx512(&mut sb.sc[..n], *sb.m);
        [ca, cb]
    };
    // The sums run inside the first output chunk (the same adds in the same order).
    let mut l = [*sa.l, *sb.l];
    let op = [sa.o.as_mut_ptr(), sb.o.as_mut_ptr()];
    let vp = v.as_ptr();
    let p = [&sa.sc[..n], &sb.sc[..n]];
    let at = |c0: usize| [op[0].wrapping_add(c0), op[1].wrapping_add(c0)];
    let mut c0 = 0;
    if hdv >= 64 {
        // SAFETY: 64 <= hdv bounds both output rows and the n value rows.
        unsafe { out_zmm_x2::<4, true>(at(0), vp, hdv, p, corr, &mut l) };
        c0 = 64;
    } else if hdv >= 16 {
        // SAFETY: 16 <= hdv, as above.
        unsafe { out_zmm_x2::<1, true>(at(0), vp, hdv, p, corr, &mut l) };
        c0 = 16;
    } else {
        for (lu, pu) in l.iter_mut().zip(p) {
            for &pt in pu {
                *lu += pt;
            }
        }
    }
    (*sa.l, *sb.l) = (l[0], l[1]);
    while c0 + 64 <= hdv {
        // SAFETY: c0 + 64 <= hdv bounds both output rows and the n value rows.
        unsafe { out_zmm_x2::<4, false>(at(c0), vp.add(c0), hdv, p, corr, &mut l) };
        c0 += 64;
    }
    while c0 + 16 <= hdv {
        // SAFETY: c0 + 16 <= hdv, as above.
        unsafe { out_zmm_x2::<1, false>(at(c0), vp.add(c0), hdv, p, corr, &mut l) };
        c0 += 16;
    }
    if c0 + 8 <= hdv {
        for u in 0..2 {
            // SAFETY: c0 + 8 <= hdv, as above.
            unsafe { out_vec::<Ymm, 1>(op[u].add(c0), vp.add(c0), hdv, p[u], corr[u]) };
        }
    }
}

/// glibc's `expf` table: `2^(i/32)` as f64 bits, less `i << 47` (the exponent adjustment
/// the algorithm adds back), for i in 0..32.
#[cfg(target_arch = "x86_64")]
const EXP2F_TAB: [u64; 32] = [
    0x3ff0000000000000,
    0x3fefd9b0d3158574,
    0x3fefb5586cf9890f,
    0x3fef9301d0125b51,
    0x3fef72b83c7d517b,
    0x3fef54873168b9aa,
    0x3fef387a6e756238,
    0x3fef1e9df51fdee1,
    0x3fef06fe0a31b715,
    0x3feef1a7373aa9cb,
    0x3feedea64c123422,
    0x3feece086061892d,
    0x3feebfdad5362a27,
    0x3feeb42b569d4f82,
    0x3feeab07dd485429,
    0x3feea47eb03a5585,
    0x3feea09e667f3bcd,
    0x3fee9f75e8ec5f74,
    0x3feea11473eb0187,
    0x3feea589994cce13,
    0x3feeace5422aa0db,
    0x3feeb737b0cdc5e5,
    0x3feec49182a3f090,
    0x3feed503b23e255d,
    0x3feee89f995ad3ad,
    0x3feeff76f2fb5e47,
    0x3fef199bdd85529c,
    0x3fef3720dcef9069,
    0x3fef5818dcfba487,
    0x3fef7c97337b9b5f,
    0x3fefa4afa2a490da,
    0x3fefd0765b6e4540,
];

/// `x[i] = expf(x[i] - m)`, four lanes at a time, with glibc's `expf` algorithm (its FMA
/// build, the one glibc picks on any CPU with AVX2 and FMA) carried out step for step in f64
/// lanes: the same table, constants, fused operations and final rounding, so every result has
/// the bits the scalar call gives (checked against `f32::exp` in the tests). Lanes outside
/// the algorithm's main range (|x - m| above about 88, infinities, NaN) take the scalar call.
///
/// # Safety
/// AVX2 and FMA must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_shifted_avx2(x: &mut [f32], m: f32) {
    use std::arch::x86_64::*;
    let inv_ln2_n = _mm256_set1_pd(f64::from_bits(0x40471547652b82fe));
    let shift = _mm256_set1_pd(f64::from_bits(0x4338000000000000));
    let c0 = _mm256_set1_pd(f64::from_bits(0x3ebc6af84b912394));
    let c1 = _mm256_set1_pd(f64::from_bits(0x3f2ebfce50fac4f3));
    let c2 = _mm256_set1_pd(f64::from_bits(0x3f962e42ff0c52d6));
    let one = _mm256_set1_pd(1.0);
    let vm = _mm_set1_ps(m);
    let limit = _mm_set1_epi32(0x42a);
    let mask = _mm_set1_epi32(0x7ff);
    let mut i = 0;
    while i + 4 <= x.len() {
        // SAFETY: i + 4 <= x.len(); unaligned load and store; the table index is masked to
        // 0..32.
        unsafe {
            let p = x.as_mut_ptr().add(i);
            let xs = _mm_sub_ps(_mm_loadu_ps(p), vm);
            let abstop = _mm_and_si128(_mm_srli_epi32(_mm_castps_si128(xs), 20), mask);
            if _mm_movemask_epi8(_mm_cmpgt_epi32(abstop, limit)) != 0 {
                let mut lanes = [0f32; 4];
                _mm_storeu_ps(lanes.as_mut_ptr(), xs);
                for (j, v) in lanes.iter().enumerate() {
                    *p.add(j) = v.exp();
                }
            } else {
                let xd = _mm256_cvtps_pd(xs);
                let kd = _mm256_fmadd_pd(inv_ln2_n, xd, shift);
                let ki = _mm256_castpd_si256(kd);
                let kd = _mm256_sub_pd(kd, shift);
                let r = _mm256_fmsub_pd(inv_ln2_n, xd, kd);
                let idx = _mm256_and_si256(ki, _mm256_set1_epi64x(31));
                let t = _mm256_i64gather_epi64::<8>(EXP2F_TAB.as_ptr() as *const i64, idx);
                let s = _mm256_castsi256_pd(_mm256_add_epi64(t, _mm256_slli_epi64::<47>(ki)));
                let z = _mm256_fmadd_pd(r, c0, c1);
                let r2 = _mm256_mul_pd(r, r);
                let y = _mm256_fmadd_pd(r, c2, one);
                let y = _mm256_fmadd_pd(z, r2, y);
                _mm_storeu_ps(p, _mm256_cvtpd_ps(_mm256_mul_pd(y, s)));
            }
        }
        i += 4;
    }
    for v in x[i..].iter_mut() {
        *v = (*v - m).exp();
    }
}

/// [`exp_shifted_avx2`] with 8 lanes per step, the table lookup done with two-table permutes
/// of the 32 entries held in registers instead of a gather (the same entries, so the same
/// bits).
///
/// # Safety
/// AVX-512F, AVX2 and FMA must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn exp_shifted_avx512(x: &mut [f32], m: f32) {
    use std::arch::x86_64::*;
    let inv_ln2_n = _mm512_set1_pd(f64::from_bits(0x40471547652b82fe));
    let shift = _mm512_set1_pd(f64::from_bits(0x4338000000000000));
    let c0 = _mm512_set1_pd(f64::from_bits(0x3ebc6af84b912394));
    let c1 = _mm512_set1_pd(f64::from_bits(0x3f2ebfce50fac4f3));
    let c2 = _mm512_set1_pd(f64::from_bits(0x3f962e42ff0c52d6));
    let one = _mm512_set1_pd(1.0);
    let vm = _mm256_set1_ps(m);
    let limit = _mm256_set1_epi32(0x42a);
    let mask = _mm256_set1_epi32(0x7ff);
    // SAFETY: EXP2F_TAB holds 32 u64s: four unaligned 8-lane loads.
    let tab: [__m512i; 4] = std::array::from_fn(|i| unsafe {
        _mm512_loadu_si512(EXP2F_TAB.as_ptr().add(8 * i) as *const __m512i)
    });
    let idx_mask = _mm512_set1_epi64(31);
    let bit4 = _mm512_set1_epi64(16);
    let mut i = 0;
    while i + 8 <= x.len() {
        // SAFETY: i + 8 <= x.len(); unaligned load and store.
        unsafe {
            let p = x.as_mut_ptr().add(i);
            let xs = _mm256_sub_ps(_mm256_loadu_ps(p), vm);
            let abstop = _mm256_and_si256(_mm256_srli_epi32(_mm256_castps_si256(xs), 20), mask);
            if _mm256_movemask_epi8(_mm256_cmpgt_epi32(abstop, limit)) != 0 {
                let mut lanes = [0f32; 8];
                _mm256_storeu_ps(lanes.as_mut_ptr(), xs);
                for (j, v) in lanes.iter().enumerate() {
                    *p.add(j) = v.exp();
                }
            } else {
                let xd = _mm512_cvtps_pd(xs);
                let kd = _mm512_fmadd_pd(inv_ln2_n, xd, shift);
                let ki = _mm512_castpd_si512(kd);
                let kd = _mm512_sub_pd(kd, shift);
                let r = _mm512_fmsub_pd(inv_ln2_n, xd, kd);
                let idx = _mm512_and_si512(ki, idx_mask);
                let lo = _mm512_permutex2var_epi64(tab[0], idx, tab[1]);
                let hi = _mm512_permutex2var_epi64(tab[2], idx, tab[3]);
                let t = _mm512_mask_blend_epi64(_mm512_test_epi64_mask(idx, bit4), lo, hi);
                let s = _mm512_castsi512_pd(_mm512_add_epi64(t, _mm512_slli_epi64::<47>(ki)));
                let z = _mm512_fmadd_pd(r, c0, c1);
                let r2 = _mm512_mul_pd(r, r);
                let y = _mm512_fmadd_pd(r, c2, one);
                let y = _mm512_fmadd_pd(z, r2, y);
                _mm256_storeu_ps(p, _mm512_cvtpd_ps(_mm512_mul_pd(y, s)));
            }
        }
        i += 8;
    }
    // SAFETY: AVX2 and FMA are available.
    unsafe { exp_shifted_avx2(&mut x[i..], m) };
}

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    })
}

fn f16_to_f32(src: &[f16], dst: &mut [f32]) {
    half::slice::HalfFloatSliceExt::convert_to_f32_slice(src, dst);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift) for test data in [-1, 1).
    fn fill(seed: &mut u64, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// The vector exponential gives glibc's `expf` bits on every input class.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_exp_matches_libm_bitwise() {
        if !has_avx2() {
            return;
        }
        let mut seed = 0x1234_5678_9abc_def1u64;
        let mut xs: Vec<f32> = fill(&mut seed, 1 << 20).iter().map(|x| x * 120.0).collect();
        xs.extend(fill(&mut seed, 1 << 16).iter().map(|x| x * 1e-3));
        xs.extend([
            0.0, -0.0, 1e-30, -88.0, -87.9, -103.0, -104.0, -110.0, 88.7, 89.0,
        ]);
        xs.extend([f32::INFINITY, f32::NEG_INFINITY, f32::MIN, f32::MAX]);
        for m in [0.0f32, 3.5, -7.25] {
            let want: Vec<f32> = xs.iter().map(|&x| (x - m).exp()).collect();
            let mut got = xs.clone();
            // SAFETY: AVX2 and FMA were checked above.
            unsafe { exp_shifted_avx2(&mut got, m) };
            for (k, (a, b)) in want.iter().zip(&got).enumerate() {
                assert_eq!(a.to_bits(), b.to_bits(), "x {} m {m}", xs[k]);
            }
        }
        let mut nan = vec![f32::NAN; 5];
        // SAFETY: as above.
        unsafe { exp_shifted_avx2(&mut nan, 0.0) };
        assert!(nan.iter().all(|v| v.is_nan()));
        if !hologram_kernels::simd::Isa::Avx512.is_available() {
            return;
        }
        // The 8-lane version, with lengths that leave 4- and 1-lane tails.
        for m in [0.0f32, 3.5, -7.25] {
            for len in [xs.len(), xs.len() - 3, xs.len() - 5] {
                let want: Vec<f32> = xs[..len].iter().map(|&x| (x - m).exp()).collect();
                let mut got = xs[..len].to_vec();
                // SAFETY: the AVX-512 tier includes AVX-512F, AVX2 and FMA.
                unsafe { exp_shifted_avx512(&mut got, m) };
                for (k, (a, b)) in want.iter().zip(&got).enumerate() {
                    assert_eq!(a.to_bits(), b.to_bits(), "x {} m {m}", xs[k]);
                }
            }
        }
        let mut nan = vec![f32::NAN; 13];
        // SAFETY: as above.
        unsafe { exp_shifted_avx512(&mut nan, 0.0) };
        assert!(nan.iter().all(|v| v.is_nan()));
    }

    /// The register-resident kernel gives the generic kernel's bits, over two blocks (so the
    /// running-max correction runs), with and without a soft cap, odd key counts included.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn register_kernel_matches_generic_bitwise() {
        if !has_avx2() {
            return;
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for &(hd, hdv) in &[
            (64usize, 64usize),
            (128, 128),
            (256, 256),
            (16, 8),
            (80, 72),
        ] {
            for &n in &[1usize, 2, 7, BLOCK_SIZE] {
                for softcap in [None, Some((50.0f32, 1.0 / 50.0))] {
                    let q = fill(&mut seed, hd);
                    let (mut m0, mut l0, mut m1, mut l1) =
                        (f32::NEG_INFINITY, 0.0f32, f32::NEG_INFINITY, 0.0f32);
                    let mut o0 = vec![0f32; hdv];
                    let mut o1 = vec![0f32; hdv];
                    let mut sc = [0f32; BLOCK_SIZE];
                    for blk in 0..3 {
                        // Later blocks scaled up so the running max moves.
                        let gain = 1.0 + blk as f32;
                        let k: Vec<f16> = fill(&mut seed, n * hd)
                            .into_iter()
                            .map(|x| f16::from_f32(x * 4.0 * gain))
                            .collect();
                        let v = fill(&mut seed, n * hdv);
                        query_block_body(
                            &q, &k, &v, 0.125, softcap, &mut m0, &mut l0, &mut o0, &mut sc,
                        );
                        // SAFETY: AVX2/FMA/F16C checked above; sizes are multiples of 16 and 8.
                        unsafe {
                            query_block_regs(
                                &q, &k, &v, 0.125, softcap, &mut m1, &mut l1, &mut o1, &mut sc,
                            )
                        };
                        assert_eq!(m0.to_bits(), m1.to_bits());
                        assert_eq!(l0.to_bits(), l1.to_bits());
                        for (a, b) in o0.iter().zip(&o1) {
                            assert_eq!(a.to_bits(), b.to_bits(), "hd {hd} hdv {hdv} n {n}");
                        }
                    }
                }
            }
        }
    }

    /// Every tier's transposed kernels (one query, two queries) give the generic kernel's
    /// bits: head sizes of the supported models and odd ones, key counts 1 to a whole block
    /// at several offsets in the block, with and without a soft cap, over three blocks (so
    /// the running-max correction runs); the transposed buffer and the score buffers start
    /// out as NaN, so a lane read outside a query's keys would show.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn transposed_kernels_match_generic_bitwise() {
        use hologram_kernels::simd::Isa;
        let mut kernels = Vec::new();
        if Isa::Avx2.is_available() {
            kernels.push(TKernel::Avx2);
        }
        if Isa::Avx512.is_available() {
            kernels.push(TKernel::Avx512);
        }
        /// m, l and o of one query.
        struct Q {
            m: f32,
            l: f32,
            o: Vec<f32>,
        }
        let new = |hdv: usize| Q {
            m: f32::NEG_INFINITY,
            l: 0.0,
            o: vec![0.0; hdv],
        };
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for tk in kernels {
            for &(hd, hdv) in &[
                (64usize, 64usize),
                (128, 128),
                (256, 256),
                (16, 8),
                (80, 72),
                (48, 200),
            ] {
                for &n in &[1usize, 2, 7, 8, 9, 16, 17, 24, BLOCK_SIZE] {
                    for s0 in [0, (BLOCK_SIZE - n) / 2, BLOCK_SIZE - n] {
                        for softcap in [None, Some((50.0f32, 1.0 / 50.0))] {
                            let qs = [fill(&mut seed, hd), fill(&mut seed, hd)];
                            // Per query: generic, transposed alone, transposed in a pair.
                            let mut st: Vec<[Q; 3]> =
                                (0..2).map(|_| [new(hdv), new(hdv), new(hdv)]).collect();
                            let mut sc = [0f32; BLOCK_SIZE];
                            let mut sct = [[f32::NAN; SC_LEN]; 2];
                            let mut kt = vec![f32::NAN; hd * KT_STRIDE + KT_PAD];
                            for blk in 0..3 {
                                let gain = 1.0 + blk as f32;
                                let k: Vec<f16> = fill(&mut seed, BLOCK_SIZE * hd)
                                    .into_iter()
                                    .map(|x| f16::from_f32(x * 4.0 * gain))
                                    .collect();
                                let v = fill(&mut seed, BLOCK_SIZE * hdv);
                                let (kq, vq) =
                                    (&k[s0 * hd..(s0 + n) * hd], &v[s0 * hdv..(s0 + n) * hdv]);
                                tk.transpose(&k, hd, s0, s0 + n, &mut kt);
                                for (qv, [g, t1, _]) in qs.iter().zip(st.iter_mut()) {
                                    query_block_body(
                                        qv, kq, vq, 0.125, softcap, &mut g.m, &mut g.l, &mut g.o,
                                        &mut sc,
                                    );
                                    let one = TState {
                                        m: &mut t1.m,
                                        l: &mut t1.l,
                                        o: &mut t1.o,
                                        sc: &mut sct[0],
                                    };
                                    tk.query_block(qv, &kt, s0, vq, 0.125, softcap, one);
                                }
                                let (s_a, s_b) = st.split_at_mut(1);
                                let (pa, pb) = (&mut s_a[0][2], &mut s_b[0][2]);
                                let [sa, sb] = &mut sct;
                                let pair = [
                                    TState {
                                        m: &mut pa.m,
                                        l: &mut pa.l,
                                        o: &mut pa.o,
                                        sc: sa,
                                    },
                                    TState {
                                        m: &mut pb.m,
                                        l: &mut pb.l,
                                        o: &mut pb.o,
                                        sc: sb,
                                    },
                                ];
                                let qp = [&qs[0][..], &qs[1][..]];
                                tk.query_block_x2(qp, &kt, s0, vq, 0.125, softcap, pair);
                                for [g, t1, t2] in &st {
                                    for t in [t1, t2] {
                                        let what = format!("hd {hd} hdv {hdv} n {n} s0 {s0}");
                                        assert_eq!(g.m.to_bits(), t.m.to_bits(), "{what}");
                                        assert_eq!(g.l.to_bits(), t.l.to_bits(), "{what}");
                                        for (a, b) in g.o.iter().zip(&t.o) {
                                            assert_eq!(a.to_bits(), b.to_bits(), "{what}");
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The transposition puts dimension d of key t at `kt[d * KT_STRIDE + t]` for the keys
    /// asked for (and leaves rows of other dimensions alone).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn transpose_places_every_key() {
        use hologram_kernels::simd::Isa;
        if !Isa::Avx2.is_available() {
            return;
        }
        let mut seed = 0x1357_9bdf_2468_ace0u64;
        for hd in [8usize, 64, 72] {
            let k: Vec<f16> = fill(&mut seed, BLOCK_SIZE * hd)
                .into_iter()
                .map(f16::from_f32)
                .collect();
            for (lo, hi) in [(0, BLOCK_SIZE), (3, 5), (7, 9), (13, 32), (31, 32), (0, 1)] {
                let mut kt = vec![f32::NAN; hd * KT_STRIDE + KT_PAD];
                TKernel::Avx2.transpose(&k, hd, lo, hi, &mut kt);
                for t in lo..hi {
                    for d in 0..hd {
                        assert_eq!(
                            kt[d * KT_STRIDE + t].to_bits(),
                            k[t * hd + d].to_f32().to_bits()
                        );
                    }
                }
                assert!(kt[hd * KT_STRIDE..].iter().all(|x| x.is_nan()));
            }
        }
    }

    /// The whole attention: a prompt in one call (runs of up to 32 rows: the transposed
    /// kernels where the tier has them) gives the bits of the same rows one call each (a
    /// single row of a group below `TRANSPOSED_MIN_QUERIES` heads: the per-query kernel), for
    /// even and odd groups, several head sizes, a sliding window and a soft cap, and prompts
    /// that end inside a block.
    #[test]
    fn prompt_matches_row_by_row_bitwise() {
        use crate::kv::KvPool;
        let pool = Pool::new(2).expect("pool");
        let mut seed = 0x0bad_5eed_1234_5678u64;
        for &(hd, hdv, nh, nkv, window, softcap) in &[
            (64usize, 64usize, 8usize, 2usize, None, None),
            (64, 64, 9, 3, None, None),
            (256, 256, 4, 1, Some(45usize), Some(50.0f32)),
            (128, 128, 6, 2, Some(33), None),
            (80, 72, 5, 1, None, Some(30.0)),
        ] {
            assert!(nh / nkv < TRANSPOSED_MIN_QUERIES);
            let n = 101;
            let mut kv = KvPool::new(1, nkv, hd, hdv, 128, 1, 128).expect("kv");
            let seq = kv.seq_new().expect("seq");
            kv.seq_append(seq, n).expect("append");
            for pos in 0..n {
                let k: Vec<f32> = fill(&mut seed, nkv * hd).iter().map(|x| x * 3.0).collect();
                let v = fill(&mut seed, nkv * hdv);
                kv.write(0, seq, pos, &k, &v);
            }
            let rows: Vec<Row> = (0..n).map(|pos| Row { seq, pos, token: 0 }).collect();
            let q = fill(&mut seed, n * nh * hd);
            let shape = Shape { hd, hdv, nh, nkv };
            let softcap = softcap.map(|c| (c, 1.0 / c));
            let mut all = vec![0f32; n * nh * hdv];
            attention_rows(
                shape, 0.125, softcap, window, &kv, 0, &rows, &q, &mut all, &pool,
            );
            for (r, row) in rows.iter().enumerate() {
                let mut one = vec![0f32; nh * hdv];
                let qr = &q[r * nh * hd..(r + 1) * nh * hd];
                let rr = std::slice::from_ref(row);
                attention_rows(
                    shape, 0.125, softcap, window, &kv, 0, rr, qr, &mut one, &pool,
                );
                for (a, b) in all[r * nh * hdv..(r + 1) * nh * hdv].iter().zip(&one) {
                    assert_eq!(
                        a.to_bits(),
                        b.to_bits(),
                        "hd {hd} nh {nh} nkv {nkv} row {r}"
                    );
                }
            }
        }
    }
}
