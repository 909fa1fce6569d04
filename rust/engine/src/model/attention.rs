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

/// Per-thread buffers: one block of values as f32, and per query its running max and sum.
#[derive(Default)]
struct Scratch {
    v: Vec<f32>,
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
    let window = a.window;
    let softcap = a.softcap.map(|cap| (cap, 1.0 / cap));
    let (hd, hdv, nh, nkv) = (c.head_dim, c.head_dim_v, c.n_head, c.n_head_kv);
    let group = nh / nkv;
    let scale = a.scale;
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
            s.v.resize(BLOCK_SIZE * hdv, 0.0);
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
                    for h in g * group..(g + 1) * group {
                        let qi = (r - ra) * group + (h - g * group);
                        let qv = &q[(r * nh + h) * hd..(r * nh + h + 1) * hd];
                        // SAFETY: as above.
                        let o = unsafe {
                            std::slice::from_raw_parts_mut(optr.get().add((r * nh + h) * hdv), hdv)
                        };
                        let (mut m, mut l) = (s.m[qi], s.l[qi]);
                        let kq = &kb[s0 * hd..s1 * hd];
                        let vq = &s.v[s0 * hdv..s1 * hdv];
                        query_block(qv, kq, vq, scale, softcap, &mut m, &mut l, o, &mut sc);
                        s.m[qi] = m;
                        s.l[qi] = l;
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
        // SAFETY: the CPU has AVX2, FMA and F16C (checked once at run time).
        return unsafe { query_block_avx2(q, k, v, scale, softcap, m, l, o, sc) };
    }
    query_block_body(q, k, v, scale, softcap, m, l, o, sc)
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
