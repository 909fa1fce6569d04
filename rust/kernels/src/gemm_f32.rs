//! Packed f32 GEMM for dense layers with many rows (encoder batches):
//! `c[i * n + j] = sum_k a[i * k + kk] * W[j][kk] (+ bias[j])`.
//!
//! The weights `W` (`n x k`, row-major: one row per output, as in GGUF) are packed once into
//! column panels of [`PackedF32::width`] outputs: panel `p` holds, for every `kk` in order, the
//! `width` values `W[p * width + j][kk]` contiguously (the last panel zero-padded), 64-byte
//! aligned. The width follows the ISA the matrix is packed for: 32 (two 512-bit vectors) for
//! AVX-512, 16 (two 256-bit vectors) otherwise.
//!
//! Micro-kernel: [`mr`] rows of `a` (12 with AVX-512's 32 vector registers, else 6) x one
//! panel. The accumulators (rows x 2 vectors) stay in
//! registers over the whole `k` loop; each step loads the panel's two vectors at `kk` and
//! broadcasts `a[r][kk]` into one FMA per vector. The bias is added at the store.
//!
//! Task split: blocks of rows (about [`A_BLOCK_BYTES`] of `a`, L2-resident) x groups of panels;
//! inside a task the panels are the outer loop (a panel is reused by every row tile of the
//! block). Tasks run on the [`Pool`] with work stealing, or inline when there is little work.
//! The tiles prefetch into L2, one line per `k` step, what the next tiles will read: the next
//! panel slice (the weights do not fit in L2), and the next task's rows of `a` and `c` (in L3
//! at best): without it every panel's and every row block's first tiles wait on L3
//! (measured +10% for the all-MiniLM-L6-v2 shapes, one thread).
//!
//! **Bit-equal across tiers and splits:** every output element is one accumulator that starts
//! at 0 and takes `acc = fma(a[i][kk], W[j][kk], acc)` for `kk` ascending, then `acc + bias[j]`
//! (no bias: `acc`). AVX2, AVX-512 and the scalar reference (`f32::mul_add`) therefore give the
//! same bits, whatever the tile a row lands in, the thread count or the batch size
//! (`tests/gemm_f32.rs` checks this).

use crate::error::{check_len, KernelError};
use crate::matmul::OutPtr;
use crate::pool::Pool;
use crate::simd::{self, Isa};

/// Rows per micro-tile of `isa`'s kernel.
pub fn mr(isa: Isa) -> usize {
    match isa {
        Isa::Avx512 => 12,
        _ => 6,
    }
}
/// Target bytes of `a` per row block.
const A_BLOCK_BYTES: usize = 96 * 1024;
/// Most of `k` per K block (bounds the panel slice and the row block's part of `a` that the
/// block's tiles re-read).
const KC: usize = 384;
/// Minimum multiply-adds (m x n x k) before going parallel.
const MIN_PAR_MACS: usize = 1 << 18;
/// f32 values per 64 bytes.
const ALIGN_F32: usize = 16;

/// A weight matrix packed into column panels for [`gemm_f32`].
#[derive(Clone)]
pub struct PackedF32 {
    isa: Isa,
    n: usize,
    k: usize,
    width: usize,
    buf: Vec<f32>,
    /// Start of the 64-byte aligned panels in `buf`.
    off: usize,
}

impl std::fmt::Debug for PackedF32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedF32")
            .field("isa", &self.isa)
            .field("n", &self.n)
            .field("k", &self.k)
            .field("width", &self.width)
            .finish()
    }
}

impl PackedF32 {
    /// Panel width (outputs per panel) used for `isa`.
    pub fn width_for(isa: Isa) -> usize {
        match isa {
            Isa::Avx512 => 32,
            _ => 16,
        }
    }

    /// Pack `w` (`n x k`, row-major) for the active ISA.
    pub fn pack(w: &[f32], n: usize, k: usize) -> Result<PackedF32, KernelError> {
        Self::pack_isa(simd::active(), w, n, k)
    }

    /// Pack `w` (`n x k`, row-major) for `isa`.
    pub fn pack_isa(isa: Isa, w: &[f32], n: usize, k: usize) -> Result<PackedF32, KernelError> {
        check_len(
            "weight length",
            n.checked_mul(k).ok_or(KernelError::Overflow)?,
            w.len(),
        )?;
        Self::pack_rows(isa, n, k, |r, row| {
            row.copy_from_slice(&w[r * k..(r + 1) * k]);
            Ok::<(), KernelError>(())
        })
    }

    /// Pack an `n x k` matrix for `isa`, row `r` written by `row(r, dst)` (`dst` has `k`
    /// values), e.g. dequantized from a file.
    pub fn pack_rows<E: From<KernelError>>(
        isa: Isa,
        n: usize,
        k: usize,
        mut row: impl FnMut(usize, &mut [f32]) -> Result<(), E>,
    ) -> Result<PackedF32, E> {
        if !isa.is_available() {
            return Err(KernelError::UnsupportedIsa(isa).into());
        }
        let width = Self::width_for(isa);
        let len = n
            .div_ceil(width)
            .checked_mul(k)
            .and_then(|v| v.checked_mul(width))
            .and_then(|v| v.checked_add(ALIGN_F32))
            .ok_or(KernelError::Overflow)?;
        let mut buf = vec![0f32; len];
        let misalign = (buf.as_ptr() as usize / 4) % ALIGN_F32;
        let off = (ALIGN_F32 - misalign) % ALIGN_F32;
        let mut tmp = vec![0f32; k];
        for r in 0..n {
            row(r, &mut tmp)?;
            let (p, j) = (r / width, r % width);
            let base = off + p * k * width + j;
            for (kk, &v) in tmp.iter().enumerate() {
                buf[base + kk * width] = v;
            }
        }
        Ok(PackedF32 {
            isa,
            n,
            k,
            width,
            buf,
            off,
        })
    }

    /// The tier this matrix was packed for (the one [`gemm_f32`] runs).
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Outputs (rows of `W`).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Inputs (columns of `W`).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Outputs per panel.
    pub fn width(&self) -> usize {
        self.width
    }

    fn n_panels(&self) -> usize {
        self.n.div_ceil(self.width)
    }

    fn panel(&self, p: usize) -> &[f32] {
        let s = self.k * self.width;
        &self.buf[self.off + p * s..self.off + (p + 1) * s]
    }
}

/// `c = a W^T (+ bias)`: `a` is `m x k` row-major, `c` `m x n` row-major, `bias` `n` values.
/// Runs the kernel of the tier `w` was packed for.
pub fn gemm_f32(
    pool: &Pool,
    a: &[f32],
    m: usize,
    w: &PackedF32,
    bias: Option<&[f32]>,
    c: &mut [f32],
) -> Result<(), KernelError> {
    gemm_f32_post(pool, a, m, w, bias, c, None)
}

/// An element-wise operation applied to the output (an activation): called on every piece of
/// `c` (part of one row) a task wrote, right after the task's tiles, while it is in cache.
pub type PostOp<'a> = &'a (dyn Fn(&mut [f32]) + Sync);

/// An operation on finished output rows: `op(i, row)` gets row `i` of `c` (all `n` values)
/// once, right after the task that computed it (so while the row is in cache), e.g. a residual
/// add and a LayerNorm.
pub type RowOp<'a> = &'a (dyn Fn(usize, &mut [f32]) + Sync);

/// [`gemm_f32`], then `post` on the outputs (each output element exactly once), fused into the
/// tiles' stores.
pub fn gemm_f32_post(
    pool: &Pool,
    a: &[f32],
    m: usize,
    w: &PackedF32,
    bias: Option<&[f32]>,
    c: &mut [f32],
    post: Option<PostOp>,
) -> Result<(), KernelError> {
    let post = post.map_or(Post::None, Post::Piece);
    gemm_impl(pool, a, m, w, bias, c, post)
}

/// [`gemm_f32`], then `op` on every whole output row (once per row, in no particular order
/// between rows), right after the task that computed the row. The tasks split the rows only
/// (each computes whole rows).
pub fn gemm_f32_rows(
    pool: &Pool,
    a: &[f32],
    m: usize,
    w: &PackedF32,
    bias: Option<&[f32]>,
    c: &mut [f32],
    op: RowOp,
) -> Result<(), KernelError> {
    gemm_impl(pool, a, m, w, bias, c, Post::Rows(op))
}

/// What runs on a task's outputs after its tiles.
#[derive(Clone, Copy)]
enum Post<'a> {
    None,
    Piece(PostOp<'a>),
    Rows(RowOp<'a>),
}

fn gemm_impl(
    pool: &Pool,
    a: &[f32],
    m: usize,
    w: &PackedF32,
    bias: Option<&[f32]>,
    c: &mut [f32],
    post: Post,
) -> Result<(), KernelError> {
    let (n, k) = (w.n, w.k);
    check_len(
        "a length",
        m.checked_mul(k).ok_or(KernelError::Overflow)?,
        a.len(),
    )?;
    check_len(
        "c length",
        m.checked_mul(n).ok_or(KernelError::Overflow)?,
        c.len(),
    )?;
    if let Some(b) = bias {
        check_len("bias length", n, b.len())?;
    }
    if !w.isa.is_available() {
        return Err(KernelError::UnsupportedIsa(w.isa));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let width = w.width;
    let np = w.n_panels();
    let macs = m.saturating_mul(n).saturating_mul(k);
    let threads = pool.n_threads();
    let par = threads > 1 && macs >= MIN_PAR_MACS;
    let whole_rows = matches!(post, Post::Rows(_));
    let mut rb = (A_BLOCK_BYTES / (4 * k.clamp(1, KC)))
        .max(mr(w.isa))
        .next_multiple_of(mr(w.isa))
        .min(m.next_multiple_of(mr(w.isa)));
    if par && whole_rows {
        // Only the rows are split: enough row blocks for every thread.
        rb = rb.min(m.div_ceil(threads * 4).next_multiple_of(mr(w.isa)));
    }
    let n_rb = m.div_ceil(rb);
    let n_pg = if par && !whole_rows {
        (threads * 8).div_ceil(n_rb).clamp(1, np)
    } else {
        1
    };
    let pg = np.div_ceil(n_pg);
    let n_pg = np.div_ceil(pg);
    let c_ptr = OutPtr(c.as_mut_ptr());
    let isa = w.isa;
    let rows_per_tile = mr(isa);
    // K blocks of at most KC (the panel slice of a block stays in L1 across the row tiles).
    let n_kb = k.div_ceil(KC).max(1);
    let kc = k.div_ceil(n_kb).max(1);
    let run = |t: usize| {
        let (bi, gi) = (t / n_pg, t % n_pg);
        let (r0, r1) = (bi * rb, ((bi + 1) * rb).min(m));
        let (p0, p1) = (gi * pg, ((gi + 1) * pg).min(np));
        let tiles = (r1 - r0).div_ceil(rows_per_tile);
        // The next task (t + 1: the pool hands each thread consecutive tasks) needs the next
        // row block of `a` (and, with one panel group, of `c`) once this block's last group
        // is done: prefetched into L2 a part per tile, else its first tiles wait on L3.
        let (mut pf_a, mut pf_c) = (Spread::NONE, Spread::NONE);
        if gi + 1 == n_pg && r1 < m {
            let r2 = (r1 + rb).min(m);
            let calls = n_kb * (p1 - p0) * tiles;
            pf_a = Spread::new(a[r1 * k..r2 * k].as_ptr().cast(), (r2 - r1) * k * 4, calls);
            if n_pg == 1 {
                // Rows r1..r2 of `c`: an address for a hint, never dereferenced here.
                let cp = c_ptr.ptr().wrapping_add(r1 * n).cast_const();
                pf_c = Spread::new(cp.cast(), (r2 - r1) * n * 4, calls);
            }
        }
        let mut call = 0usize;
        for k0 in (0..k.max(1)).step_by(kc) {
            let kl = kc.min(k - k0);
            let last = k0 + kl >= k;
            for p in p0..p1 {
                let panel = &w.panel(p)[k0 * width..(k0 + kl) * width];
                let j0 = p * width;
                let ncols = width.min(n - j0);
                let pb = if last {
                    bias.map_or(std::ptr::null(), |b| b[j0..j0 + ncols].as_ptr())
                } else {
                    std::ptr::null()
                };
                // The panel slice the tiles after these use (the next panel, else the first
                // panel of the next K block, else of the first K block: the next task's, which
                // has the same panels or, with one group, all of them), prefetched into L2 a
                // part per tile (it is in L3 at best: the weights do not fit in L2).
                let next = if p + 1 < p1 {
                    (p + 1, k0, kl)
                } else if !last {
                    (p0, k0 + kl, kc.min(k - k0 - kl))
                } else {
                    (p0, 0, kc.min(k))
                };
                let pf_w = {
                    let (np_, nk0, nkl) = next;
                    let sl = &w.panel(np_)[nk0 * width..(nk0 + nkl) * width];
                    Spread::new(sl.as_ptr().cast(), nkl * width * 4, tiles)
                };
                let mut i = r0;
                while i < r1 {
                    let rows = rows_per_tile.min(r1 - i);
                    let ai = &a[i * k + k0..(i + rows - 1) * k + k0 + kl];
                    let args = Tile {
                        a: ai.as_ptr(),
                        lda: k,
                        b: panel.as_ptr(),
                        kc: kl,
                        // SAFETY: i < m and j0 < n: inside `c`.
                        c: unsafe { c_ptr.ptr().add(i * n + j0) },
                        ldc: n,
                        bias: pb,
                        ncols,
                        load: k0 > 0,
                        pf: [
                            pf_a.part(call),
                            pf_c.part(call),
                            pf_w.part((i - r0) / rows_per_tile),
                        ],
                    };
                    call += 1;
                    // SAFETY: the tier is available (checked above); `ai` spans `rows` rows of
                    // `kl` values at stride k, `panel` kl x width values (64-byte aligned:
                    // k0 * width is a multiple of 16), `pb` null or ncols values; c + i*n + j0
                    // .. + (rows-1)*n + ncols is inside `c` (length checked) and only this
                    // task touches rows r0..r1 x the columns of its panels.
                    unsafe { tile(isa, rows, width, &args) };
                    i += rows;
                }
            }
        }
        let (j0, j1) = (p0 * width, (p1 * width).min(n));
        let piece = |r: usize| {
            // SAFETY: row r < m, columns j0..j1 of `c`: inside `c`, written only by this task
            // (just now, so mostly still in L2), no other reference to them is live.
            unsafe { std::slice::from_raw_parts_mut(c_ptr.ptr().add(r * n + j0), j1 - j0) }
        };
        match post {
            Post::None => {}
            Post::Piece(op) => (r0..r1).for_each(|r| op(piece(r))),
            // One panel group (whole_rows): j0..j1 is the whole row.
            Post::Rows(op) => (r0..r1).for_each(|r| op(r, piece(r))),
        }
    };
    let n_tasks = n_rb * n_pg;
    if par && n_tasks > 1 {
        pool.for_each_chunk(n_tasks, run);
    } else {
        (0..n_tasks).for_each(run);
    }
    Ok(())
}

/// One micro-tile's operands: `rows` rows of `a` (`kc` values each, stride `lda`) x a panel
/// slice `b` (`kc` x width, 64-byte aligned), to `c` (stride `ldc`), columns `0..ncols`.
/// `load`: continue the accumulators from `c` (a later K block), else start at 0. `bias`
/// (null or `ncols` values) is added at the store (only on the last K block).
struct Tile {
    a: *const f32,
    lda: usize,
    b: *const f32,
    kc: usize,
    c: *mut f32,
    ldc: usize,
    bias: *const f32,
    ncols: usize,
    load: bool,
    /// Up to three byte ranges (first 64-byte line, number of lines) to prefetch into L2 while
    /// the tile runs, one line per `k` step: addresses for hints only, never dereferenced.
    pf: [(*const u8, usize); 3],
}

/// A byte range cut into consecutive parts of whole 64-byte lines, one part per call (for
/// spreading prefetches over the tiles of a task).
#[derive(Clone, Copy)]
struct Spread {
    start: *const u8,
    lines: usize,
    per: usize,
}

impl Spread {
    const NONE: Spread = Spread {
        start: std::ptr::null(),
        lines: 0,
        per: 0,
    };

    /// `bytes` from `start` in `calls` parts.
    fn new(start: *const u8, bytes: usize, calls: usize) -> Spread {
        let lines = bytes.div_ceil(64);
        Spread {
            start,
            lines,
            per: lines.div_ceil(calls.max(1)),
        }
    }

    /// Part `i`: (its first line's address, its number of lines; 0 past the end).
    fn part(&self, i: usize) -> (*const u8, usize) {
        let l0 = i.saturating_mul(self.per).min(self.lines);
        let n = self.per.min(self.lines - l0);
        (self.start.wrapping_add(l0 * 64), n)
    }
}

/// Prefetch line `kk` of each range of `pf` that has one, into L2.
#[inline(always)]
fn prefetch_step(pf: &[(*const u8, usize); 3], kk: usize) {
    for &(p, n) in pf {
        if kk < n {
            simd::prefetch_l2(p.wrapping_add(kk * 64));
        }
    }
}

/// Run one tile of `rows` (1..=mr(isa)) rows with `isa`'s kernel.
///
/// # Safety
/// `isa` is available; `width` is its panel width; every pointer of `t` is valid for the
/// extents [`Tile`] describes (`c` for reads and writes).
unsafe fn tile(isa: Isa, rows: usize, width: usize, t: &Tile) {
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! by_rows_12 {
            ($f:ident) => {
                // SAFETY: forwarded from this function's contract.
                unsafe {
                    match rows {
                        12 => $f::<12>(t),
                        11 => $f::<11>(t),
                        10 => $f::<10>(t),
                        9 => $f::<9>(t),
                        8 => $f::<8>(t),
                        7 => $f::<7>(t),
                        6 => $f::<6>(t),
                        5 => $f::<5>(t),
                        4 => $f::<4>(t),
                        3 => $f::<3>(t),
                        2 => $f::<2>(t),
                        _ => $f::<1>(t),
                    }
                }
            };
        }
        macro_rules! by_rows_6 {
            ($f:ident) => {
                // SAFETY: forwarded from this function's contract.
                unsafe {
                    match rows {
                        6 => $f::<6>(t),
                        5 => $f::<5>(t),
                        4 => $f::<4>(t),
                        3 => $f::<3>(t),
                        2 => $f::<2>(t),
                        _ => $f::<1>(t),
                    }
                }
            };
        }
        match isa {
            Isa::Avx512 => return by_rows_12!(tile_avx512),
            Isa::Avx2 => return by_rows_6!(tile_avx2),
            _ => {}
        }
        if std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: FMA is available; the rest is forwarded from this function's contract.
            return unsafe { tile_scalar_fma(rows, width, t) };
        }
    }
    // SAFETY: forwarded from this function's contract.
    unsafe { tile_scalar(rows, width, t) }
}

/// [`tile_scalar`] compiled with the FMA instruction (`f32::mul_add` is otherwise a libm call):
/// the same operations, so the same bits.
///
/// # Safety
/// FMA is available; as [`tile`] (any `width`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn tile_scalar_fma(rows: usize, width: usize, t: &Tile) {
    // SAFETY: forwarded.
    unsafe { tile_scalar(rows, width, t) }
}

/// The reference: one accumulator per output, `f32::mul_add` over `kk` ascending.
///
/// # Safety
/// As [`tile`] (any `width`).
#[inline(always)]
unsafe fn tile_scalar(rows: usize, width: usize, t: &Tile) {
    let mut accs = [0f32; 32];
    for r in 0..rows {
        // SAFETY: row r of `a` has kc values; the panel slice kc * width (contract).
        let (ar, panel) = unsafe {
            (
                std::slice::from_raw_parts(t.a.add(r * t.lda), t.kc),
                std::slice::from_raw_parts(t.b, t.kc * width),
            )
        };
        // One accumulator per column, kk ascending (columns side by side so that the loop
        // over them can use vector FMAs: the same operation per element).
        for j0 in (0..t.ncols).step_by(32) {
            let nc = (t.ncols - j0).min(32);
            let acc = &mut accs[..nc];
            for (jj, x) in acc.iter_mut().enumerate() {
                *x = if t.load {
                    // SAFETY: r < rows, j0 + jj < ncols (contract).
                    unsafe { *t.c.add(r * t.ldc + j0 + jj) }
                } else {
                    0.0
                };
            }
            for (kk, &av) in ar.iter().enumerate() {
                let b = &panel[kk * width + j0..kk * width + j0 + nc];
                for (x, &bv) in acc.iter_mut().zip(b) {
                    *x = av.mul_add(bv, *x);
                }
            }
            for (jj, &acc) in acc.iter().enumerate() {
                let j = j0 + jj;
                let v = if t.bias.is_null() {
                    acc
                } else {
                    // SAFETY: bias has ncols values.
                    acc + unsafe { *t.bias.add(j) }
                };
                // SAFETY: r < rows, j < ncols (contract).
                unsafe { *t.c.add(r * t.ldc + j) = v };
            }
        }
    }
}

/// AVX-512 tile: `R` rows x 32 columns (two zmm accumulators per row).
///
/// # Safety
/// As [`tile`] with width 32, `R == rows`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile_avx512<const R: usize>(t: &Tile) {
    use std::arch::x86_64::*;
    let (a, lda, b, c, ldc, ncols) = (t.a, t.lda, t.b, t.c, t.ldc, t.ncols);
    let mask = |lo: usize| -> __mmask16 {
        let n = ncols.saturating_sub(lo).min(16);
        ((1u32 << n) - 1) as __mmask16
    };
    let (m0, m1) = (mask(0), mask(16));
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    if t.load {
        for (r, ar) in acc.iter_mut().enumerate() {
            // SAFETY: masked loads of columns < ncols of row r < rows.
            unsafe {
                ar[0] = _mm512_maskz_loadu_ps(m0, c.add(r * ldc));
                ar[1] = _mm512_maskz_loadu_ps(m1, c.add(r * ldc + 16));
            }
        }
    }
    for kk in 0..t.kc {
        prefetch_step(&t.pf, kk);
        // SAFETY: kk < kc: inside the (aligned) panel slice and the rows of `a`.
        unsafe {
            let b0 = _mm512_load_ps(b.add(kk * 32));
            let b1 = _mm512_load_ps(b.add(kk * 32 + 16));
            for (r, ar) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*a.add(r * lda + kk));
                ar[0] = _mm512_fmadd_ps(av, b0, ar[0]);
                ar[1] = _mm512_fmadd_ps(av, b1, ar[1]);
            }
        }
    }
    let bias = t.bias;
    // SAFETY: masked loads/stores touch only columns < ncols (the contract's valid range).
    unsafe {
        let (bias0, bias1) = if bias.is_null() {
            (_mm512_setzero_ps(), _mm512_setzero_ps())
        } else {
            (
                _mm512_maskz_loadu_ps(m0, bias),
                _mm512_maskz_loadu_ps(m1, bias.add(16)),
            )
        };
        for (r, ar) in acc.iter().enumerate() {
            let (v0, v1) = if bias.is_null() {
                (ar[0], ar[1])
            } else {
                (_mm512_add_ps(ar[0], bias0), _mm512_add_ps(ar[1], bias1))
            };
            let cr = c.add(r * ldc);
            if ncols >= 32 {
                // Plain stores: a later load of these values can be store-forwarded.
                _mm512_storeu_ps(cr, v0);
                _mm512_storeu_ps(cr.add(16), v1);
            } else {
                _mm512_mask_storeu_ps(cr, m0, v0);
                _mm512_mask_storeu_ps(cr.add(16), m1, v1);
            }
        }
    }
}

/// AVX2 tile: `R` rows x 16 columns (two ymm accumulators per row).
///
/// # Safety
/// As [`tile`] with width 16, `R == rows`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2<const R: usize>(t: &Tile) {
    use std::arch::x86_64::*;
    let (a, lda, b, c, ldc, ncols) = (t.a, t.lda, t.b, t.c, t.ldc, t.ncols);
    let nc = ncols.min(16);
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    if t.load {
        for (r, ar) in acc.iter_mut().enumerate() {
            let mut tmp = [0f32; 16];
            // SAFETY: columns < ncols of row r < rows.
            unsafe {
                std::ptr::copy_nonoverlapping(c.add(r * ldc), tmp.as_mut_ptr(), nc);
                ar[0] = _mm256_loadu_ps(tmp.as_ptr());
                ar[1] = _mm256_loadu_ps(tmp.as_ptr().add(8));
            }
        }
    }
    for kk in 0..t.kc {
        prefetch_step(&t.pf, kk);
        // SAFETY: kk < kc: inside the (aligned) panel slice and the rows of `a`.
        unsafe {
            let b0 = _mm256_load_ps(b.add(kk * 16));
            let b1 = _mm256_load_ps(b.add(kk * 16 + 8));
            for (r, ar) in acc.iter_mut().enumerate() {
                let av = _mm256_set1_ps(*a.add(r * lda + kk));
                ar[0] = _mm256_fmadd_ps(av, b0, ar[0]);
                ar[1] = _mm256_fmadd_ps(av, b1, ar[1]);
            }
        }
    }
    let bias = t.bias;
    let mut bias_v = [0f32; 16];
    if !bias.is_null() {
        // SAFETY: bias has ncols values.
        unsafe { std::ptr::copy_nonoverlapping(bias, bias_v.as_mut_ptr(), nc) };
    }
    // SAFETY: full stores only when all 16 columns are valid, else through a buffer copying
    // the first ncols values.
    unsafe {
        let bias0 = _mm256_loadu_ps(bias_v.as_ptr());
        let bias1 = _mm256_loadu_ps(bias_v.as_ptr().add(8));
        for (r, ar) in acc.iter().enumerate() {
            let (v0, v1) = if bias.is_null() {
                (ar[0], ar[1])
            } else {
                (_mm256_add_ps(ar[0], bias0), _mm256_add_ps(ar[1], bias1))
            };
            let cr = c.add(r * ldc);
            if ncols >= 16 {
                _mm256_storeu_ps(cr, v0);
                _mm256_storeu_ps(cr.add(8), v1);
            } else {
                let mut tmp = [0f32; 16];
                _mm256_storeu_ps(tmp.as_mut_ptr(), v0);
                _mm256_storeu_ps(tmp.as_mut_ptr().add(8), v1);
                std::ptr::copy_nonoverlapping(tmp.as_ptr(), cr, nc);
            }
        }
    }
}
