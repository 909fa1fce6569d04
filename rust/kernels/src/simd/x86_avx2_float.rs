//! AVX2+FMA register-tiled f32 GEMM for F32 / F16 / BF16 weights against f32 activations.
//!
//! `out[t * rows + r] = dot(W[r], x[t])`. Work is split into tasks of (token block x row chunk):
//! a token block (about [`X_BLOCK_BYTES`] of activations) and a row chunk (about
//! [`W_CHUNK_BYTES`] of f32 weights) stay in L2. F32: for each tile of [`NR`] tokens (in L1)
//! the chunk's rows are walked [`MR`] at a time. F16/BF16: each tile of `MR` rows is converted
//! to f32 once per task (F16C / shifts) into a small buffer, then walked against the block's
//! tokens `NR` at a time. The 3-row x 4-token micro-kernel keeps 12 8-wide FMA accumulators
//! over `cols` in registers and reduces them horizontally at the end (columns past the last
//! multiple of 8 are added in scalar). Tasks of up to [`SMALL_BATCH`] tokens (decode, small
//! batches) go through the [`gemv`] tiles instead, straight from the F16/BF16 bytes with
//! software prefetch. Tasks run on the pool with work stealing, or inline when there is little work.
//!
//! Batch invariance: every kernel here computes each (row, token) output with the same f32
//! operations in the same order: one 8-lane FMA accumulator over the columns in steps of 8,
//! the horizontal sum of [`hsum4`], then the columns past the last multiple of 8 added one by
//! one. So a token's outputs are bit-identical whatever the batch size, the token's position,
//! the tile it lands in, the task split or the thread count.

use std::arch::x86_64::*;
use std::cell::RefCell;

use half::f16;

use crate::pool::Pool;
use crate::quant::QuantType;
use crate::simd::Isa;

/// Rows per micro-tile.
const MR: usize = 3;
/// Most tokens of a small-batch tile ([`gemv`], which reads the weights directly).
const SMALL_TOK: usize = 4;
/// Tasks of up to this many tokens use the small-batch tiles (in groups of `SMALL_TOK`).
const SMALL_BATCH: usize = 2 * SMALL_TOK;
/// Tokens per micro-tile.
const NR: usize = 4;
/// Target activation bytes per token block (L2-resident).
const X_BLOCK_BYTES: usize = 96 * 1024;
/// Target weight bytes (as f32) per row chunk.
const W_CHUNK_BYTES: usize = 256 * 1024;
/// Minimum multiply-adds (rows x cols x tokens) before going parallel.
const MIN_PAR_MACS: usize = 1 << 17;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    F32,
    F16,
    BF16,
}

impl Kind {
    fn of(t: QuantType) -> Option<Kind> {
        match t {
            QuantType::F32 => Some(Kind::F32),
            QuantType::F16 => Some(Kind::F16),
            QuantType::BF16 => Some(Kind::BF16),
            _ => None,
        }
    }

    fn size(self) -> usize {
        match self {
            Kind::F32 => 4,
            Kind::F16 | Kind::BF16 => 2,
        }
    }
}

/// Whether [`matmul`] handles weight type `t`.
pub(crate) fn supports(t: QuantType) -> bool {
    Kind::of(t).is_some()
}

use crate::matmul::OutPtr;

thread_local! {
    static TILE_BUF: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `out[t * rows + r] = dot(W[r], x[t])` for F32/F16/BF16 `w` (`rows x cols`, row-major,
/// little-endian) and f32 `x` (`n_tok x cols`). Returns false (and does nothing) if the type is
/// not supported, AVX2/FMA/F16C is not available, or a length does not match.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    pool: &Pool,
    w: &[u8],
    wt: QuantType,
    rows: usize,
    cols: usize,
    x: &[f32],
    n_tok: usize,
    out: &mut [f32],
) -> bool {
    let Some(kind) = Kind::of(wt) else {
        return false;
    };
    if !Isa::Avx2.is_available() {
        return false;
    }
    let Some(rb) = cols.checked_mul(kind.size()) else {
        return false;
    };
    let (Some(wn), Some(xn), Some(on)) = (
        rows.checked_mul(rb),
        n_tok.checked_mul(cols),
        n_tok.checked_mul(rows),
    ) else {
        return false;
    };
    if w.len() != wn || x.len() != xn || out.len() != on {
        return false;
    }
    if rows == 0 || n_tok == 0 {
        return true;
    }
    if cols == 0 {
        out.fill(0.0);
        return true;
    }

    // Token blocks: a multiple of NR tokens, about X_BLOCK_BYTES of activations.
    let tb = (X_BLOCK_BYTES / (cols * 4)).max(NR) / NR * NR;
    let tb = tb.min(n_tok);
    let n_tb = n_tok.div_ceil(tb);
    let macs = rows.saturating_mul(cols).saturating_mul(n_tok);
    let par = pool.n_threads() > 1 && macs >= MIN_PAR_MACS;
    // Row chunks: multiples of MR rows, about W_CHUNK_BYTES each, and when parallel enough
    // tasks for ~4 per thread.
    let max_rc = rows.div_ceil(MR);
    let mut n_rc = (rows.saturating_mul(cols).saturating_mul(4)).div_ceil(W_CHUNK_BYTES);
    if par {
        n_rc = n_rc.max((pool.n_threads() * 4).div_ceil(n_tb));
    }
    let n_rc = n_rc.clamp(1, max_rc);
    let rc = rows
        .div_ceil(n_rc)
        .next_multiple_of(if n_tok <= SMALL_BATCH { 12 } else { MR });
    let n_rc = rows.div_ceil(rc);
    let n_tasks = n_tb * n_rc;

    // Task order: with few token blocks (decode batches; wide rows give blocks of only NR
    // tokens) all blocks of a row chunk run back to back, so the chunk's weights come from
    // DRAM once and then from L2; with many (prefill) the token block stays in L2 instead.
    let row_major = n_tb <= 8;
    let out_ptr = OutPtr(out.as_mut_ptr());
    let run = |c: usize| {
        let (b, r) = if row_major {
            (c % n_tb, c / n_tb)
        } else {
            (c / n_rc, c % n_rc)
        };
        let (t0, t1) = (b * tb, ((b + 1) * tb).min(n_tok));
        let (r0, r1) = (r * rc, ((r + 1) * rc).min(rows));
        let w_chunk = &w[r0 * rb..r1 * rb];
        let x_blk = &x[t0 * cols..t1 * cols];
        let go = |buf: &mut Vec<f32>| {
            if kind != Kind::F32 && buf.len() < MR * cols {
                buf.resize(MR * cols, 0.0);
            }
            // SAFETY: AVX2+FMA+F16C are available (checked above). w_chunk holds r1 - r0 whole
            // rows of rb bytes, x_blk t1 - t0 rows of cols floats, buf (if used) MR * cols
            // floats; out + t * rows + r for t in t0..t1, r in r0..r1 is inside `out` (its length
            // was checked) and written only by this task.
            unsafe {
                task(
                    kind,
                    w_chunk,
                    r1 - r0,
                    x_blk,
                    t1 - t0,
                    cols,
                    buf,
                    out_ptr.ptr().add(t0 * rows + r0),
                    rows,
                )
            }
        };
        TILE_BUF.with(|b| match b.try_borrow_mut() {
            Ok(mut buf) => go(&mut buf),
            Err(_) => go(&mut Vec::new()),
        });
    };
    if par && n_tasks > 1 {
        pool.for_each_chunk(n_tasks, run);
    } else {
        (0..n_tasks).for_each(run);
    }
    true
}

/// One task: `nrows` rows of `w` (`cols` elements each) x `ntok` tokens of `x`; results to
/// `out[t * ldo + r]`.
///
/// # Safety
/// AVX2+FMA+F16C available; `w.len() == nrows * cols * kind.size()`, `x.len() == ntok * cols`,
/// `buf.len() >= MR * cols` unless `kind == F32`; `out + t * ldo + r` is valid for writes for
/// `t < ntok`, `r < nrows`.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn task(
    kind: Kind,
    w: &[u8],
    nrows: usize,
    x: &[f32],
    ntok: usize,
    cols: usize,
    buf: &mut [f32],
    out: *mut f32,
    ldo: usize,
) {
    let rb = cols * kind.size();
    if ntok <= SMALL_BATCH {
        // Token groups of at most SMALL_TOK (as even as possible, largest first); each row
        // tile runs all groups back to back, so its weights are read from DRAM once.
        let groups = ntok.div_ceil(SMALL_TOK);
        let rt = gemv_rows(ntok.div_ceil(groups));
        let mut r = 0;
        while r < nrows {
            let nr = rt.min(nrows - r);
            let mut t0 = 0;
            for g in 0..groups {
                let c = ntok / groups + usize::from(g < ntok % groups);
                // SAFETY: rows r..r+nr < nrows of rb bytes are inside w, x holds tokens
                // t0..t0+c <= ntok of cols floats, and out + t * ldo + r is writable for nr
                // rows x those tokens (caller's contract); nr <= gemv_rows(c) since c is at
                // most the largest group.
                unsafe {
                    gemv_dyn(
                        kind,
                        nr,
                        c,
                        w.as_ptr().add(r * rb),
                        rb,
                        x.as_ptr().add(t0 * cols),
                        cols,
                        out.add(t0 * ldo + r),
                        ldo,
                    )
                };
                t0 += c;
            }
            r += nr;
        }
        return;
    }
    if kind == Kind::F32 {
        // Token tiles outer (the tile's activations stay in L1), row tiles inner (the chunk's
        // rows stream from L2).
        let wp: *const f32 = w.as_ptr().cast();
        let mut t = 0;
        while t < ntok {
            let nt = NR.min(ntok - t);
            let mut r = 0;
            while r < nrows {
                let nr = MR.min(nrows - r);
                // SAFETY: wp + r * cols points at nr rows of cols f32s (possibly unaligned:
                // only read with unaligned loads), x + t * cols at nt rows of cols f32s, and
                // out + t * ldo + r is writable for nt tokens x nr rows (caller's contract).
                unsafe {
                    tile_dyn(
                        nr,
                        nt,
                        wp.add(r * cols),
                        x.as_ptr().add(t * cols),
                        cols,
                        out.add(t * ldo + r),
                        ldo,
                    )
                };
                r += nr;
            }
            t += nt;
        }
        return;
    }
    let mut r = 0;
    while r < nrows {
        let nr = MR.min(nrows - r);
        let rows_bytes = &w[r * rb..(r + nr) * rb];
        let wp: *const f32 = match kind {
            Kind::F32 => rows_bytes.as_ptr().cast(),
            Kind::F16 => {
                convert_f16(rows_bytes, &mut buf[..nr * cols]);
                buf.as_ptr()
            }
            Kind::BF16 => {
                convert_bf16(rows_bytes, &mut buf[..nr * cols]);
                buf.as_ptr()
            }
        };
        let mut t = 0;
        while t < ntok {
            let nt = NR.min(ntok - t);
            // SAFETY: wp points at nr rows of cols f32s (possibly unaligned for F32: only read
            // with unaligned loads), x + t * cols at nt rows of cols f32s (t + nt <= ntok), and
            // out + t * ldo + r is writable for nt tokens x nr rows (caller's contract).
            unsafe {
                tile_dyn(
                    nr,
                    nt,
                    wp,
                    x.as_ptr().add(t * cols),
                    cols,
                    out.add(t * ldo + r),
                    ldo,
                )
            };
            t += nt;
        }
        r += nr;
    }
}

/// 8 weights of kind `K` (0 F32, 1 F16, 2 BF16) at element `i` of the row at `p`, as f32
/// (exact conversions, the same values as [`convert_f16`] / [`convert_bf16`]).
///
/// # Safety
/// Elements i..i+8 of the row are readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load8<const K: u8>(p: *const u8, i: usize) -> __m256 {
    // SAFETY: the caller guarantees 8 readable elements at i.
    unsafe {
        match K {
            0 => _mm256_loadu_ps(p.cast::<f32>().add(i)),
            1 => _mm256_cvtph_ps(_mm_loadu_si128(p.add(2 * i).cast())),
            _ => _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(
                _mm_loadu_si128(p.add(2 * i).cast()),
            ))),
        }
    }
}

/// Weight `i` of kind `K` of the row at `p` as f32 (scalar tail).
///
/// # Safety
/// Element i of the row is readable.
#[inline]
unsafe fn load1<const K: u8>(p: *const u8, i: usize) -> f32 {
    // SAFETY: the caller guarantees element i is readable (any alignment).
    unsafe {
        match K {
            0 => p.cast::<f32>().add(i).read_unaligned(),
            1 => f16::from_bits(p.cast::<u16>().add(i).read_unaligned()).to_f32(),
            _ => f32::from_bits(u32::from(p.cast::<u16>().add(i).read_unaligned()) << 16),
        }
    }
}

/// Small-batch tile of `R` rows x `C` tokens straight from the weight bytes (each 8-weight
/// vector converted once, used for the C tokens): `out[t * ldo + r] = dot(W[r], x[t])`, in
/// exactly the per-(row, token) order of [`tile`] / [`tile34`]. Prefetches the tile after next
/// (the rows are contiguous), `R` steps' worth per step: decode streams the weights from DRAM
/// and the hardware prefetchers follow `R` interleaved rows poorly. Prefetches never fault;
/// `wrapping_add` keeps the address computation defined.
///
/// # Safety
/// AVX2+FMA+F16C; `R` rows of `cols` elements at `w + r * rb` and `C` rows of `cols` floats at
/// `x + t * cols` are readable; `out + t * ldo + r` writable for r < R, t < C.
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemv<const K: u8, const R: usize, const C: usize>(
    w: *const u8,
    rb: usize,
    x: *const f32,
    cols: usize,
    out: *mut f32,
    ldo: usize,
) {
    let es = if K == 0 { 4 } else { 2 };
    let mut acc = [[_mm256_setzero_ps(); C]; R];
    let n8 = cols & !7;
    let mut k = 0;
    while k < n8 {
        let pf = w.wrapping_add(2 * R * rb + R * es * k);
        let mut o = 0;
        while o < R * es * 8 {
            _mm_prefetch::<_MM_HINT_T0>(pf.wrapping_add(o).cast());
            o += 64;
        }
        let mut xv = [_mm256_setzero_ps(); C];
        for (t, v) in xv.iter_mut().enumerate() {
            // SAFETY: k + 8 <= cols: inside token t's row.
            *v = unsafe { _mm256_loadu_ps(x.add(t * cols + k)) };
        }
        for r in 0..R {
            // SAFETY: as above, row r < R.
            let wv = unsafe { load8::<K>(w.add(r * rb), k) };
            for t in 0..C {
                acc[r][t] = _mm256_fmadd_ps(wv, xv[t], acc[r][t]);
            }
        }
        k += 8;
    }
    for (r, row) in acc.iter().enumerate() {
        for (t, a) in row.iter().enumerate() {
            let mut s = hsum(*a);
            for kk in n8..cols {
                // SAFETY: kk < cols: inside row r and token t's row.
                s += unsafe { load1::<K>(w.add(r * rb), kk) * *x.add(t * cols + kk) };
            }
            // SAFETY: r < R, t < C: writable per the caller.
            unsafe { *out.add(t * ldo + r) = s };
        }
    }
}

/// Rows of the small-batch tile for `c` tokens (at most [`SMALL_TOK`]).
const fn gemv_rows(c: usize) -> usize {
    match c {
        1 | 2 => 4,
        3 => 3,
        _ => 2,
    }
}

/// Dispatch to the small-batch tile of `kind` with `1 <= nr <= gemv_rows(nt)` rows and
/// `1 <= nt <= SMALL_TOK` tokens.
///
/// # Safety
/// As [`gemv`].
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemv_dyn(
    kind: Kind,
    nr: usize,
    nt: usize,
    w: *const u8,
    rb: usize,
    x: *const f32,
    cols: usize,
    out: *mut f32,
    ldo: usize,
) {
    const { assert!(SMALL_TOK == 4) };
    macro_rules! tiles {
        ($k:expr) => {
            match (nr, nt) {
                (4, 1) => gemv::<$k, 4, 1>(w, rb, x, cols, out, ldo),
                (3, 1) => gemv::<$k, 3, 1>(w, rb, x, cols, out, ldo),
                (2, 1) => gemv::<$k, 2, 1>(w, rb, x, cols, out, ldo),
                (1, 1) => gemv::<$k, 1, 1>(w, rb, x, cols, out, ldo),
                (4, 2) => gemv::<$k, 4, 2>(w, rb, x, cols, out, ldo),
                (3, 2) => gemv::<$k, 3, 2>(w, rb, x, cols, out, ldo),
                (2, 2) => gemv::<$k, 2, 2>(w, rb, x, cols, out, ldo),
                (1, 2) => gemv::<$k, 1, 2>(w, rb, x, cols, out, ldo),
                (3, 3) => gemv::<$k, 3, 3>(w, rb, x, cols, out, ldo),
                (2, 3) => gemv::<$k, 2, 3>(w, rb, x, cols, out, ldo),
                (1, 3) => gemv::<$k, 1, 3>(w, rb, x, cols, out, ldo),
                (2, 4) => gemv::<$k, 2, 4>(w, rb, x, cols, out, ldo),
                (1, 4) => gemv::<$k, 1, 4>(w, rb, x, cols, out, ldo),
                (r, t) => unreachable!("no {r} x {t} small-batch tile"),
            }
        };
    }
    // SAFETY: forwarded caller contract; the arms only fix K, R = nr and C = nt.
    unsafe {
        match kind {
            Kind::F32 => tiles!(0),
            Kind::F16 => tiles!(1),
            Kind::BF16 => tiles!(2),
        }
    }
}

/// F16 bytes (little-endian) -> f32 with F16C.
#[target_feature(enable = "avx2,f16c")]
fn convert_f16(src: &[u8], dst: &mut [f32]) {
    let n = dst.len().min(src.len() / 2);
    let n8 = n & !7;
    let mut i = 0;
    while i < n8 {
        // SAFETY: i + 8 <= n, so 16 source bytes at 2 * i and 8 destination floats at i are in
        // bounds; both accesses are unaligned-tolerant.
        unsafe {
            let h = _mm_loadu_si128(src.as_ptr().add(2 * i).cast());
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
        }
        i += 8;
    }
    for j in n8..n {
        dst[j] = f16::from_le_bytes([src[2 * j], src[2 * j + 1]]).to_f32();
    }
}

/// BF16 bytes (little-endian) -> f32 (exact: the upper 16 bits of an f32).
#[target_feature(enable = "avx2")]
fn convert_bf16(src: &[u8], dst: &mut [f32]) {
    let n = dst.len().min(src.len() / 2);
    let n8 = n & !7;
    let mut i = 0;
    while i < n8 {
        // SAFETY: as in convert_f16.
        unsafe {
            let h = _mm_loadu_si128(src.as_ptr().add(2 * i).cast());
            let v = _mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h));
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_castsi256_ps(v));
        }
        i += 8;
    }
    for j in n8..n {
        dst[j] = f32::from_bits(u32::from(u16::from_le_bytes([src[2 * j], src[2 * j + 1]])) << 16);
    }
}

/// Dispatch to the `nr x nt` micro-kernel (`1 <= nr <= MR`, `1 <= nt <= NR`).
///
/// # Safety
/// As [`tile`].
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_dyn(
    nr: usize,
    nt: usize,
    w: *const f32,
    x: *const f32,
    cols: usize,
    out: *mut f32,
    ldo: usize,
) {
    // SAFETY: forwarded caller contract; the arms only fix R = nr and T = nt.
    unsafe {
        match (nr, nt) {
            (3, 4) => tile34(w, x, cols, out, ldo),
            (3, 3) => tile::<3, 3>(w, x, cols, out, ldo),
            (3, 2) => tile::<3, 2>(w, x, cols, out, ldo),
            (3, 1) => tile::<3, 1>(w, x, cols, out, ldo),
            (2, 4) => tile::<2, 4>(w, x, cols, out, ldo),
            (2, 3) => tile::<2, 3>(w, x, cols, out, ldo),
            (2, 2) => tile::<2, 2>(w, x, cols, out, ldo),
            (2, 1) => tile::<2, 1>(w, x, cols, out, ldo),
            (1, 4) => tile::<1, 4>(w, x, cols, out, ldo),
            (1, 3) => tile::<1, 3>(w, x, cols, out, ldo),
            (1, 2) => tile::<1, 2>(w, x, cols, out, ldo),
            (1, 1) => tile::<1, 1>(w, x, cols, out, ldo),
            _ => {}
        }
    }
}

/// The 3-row x 4-token main micro-kernel, written out so that the 12 accumulators, 3 weight
/// vectors and one activation vector fill exactly the 16 ymm registers (no spills).
///
/// # Safety
/// As [`tile`] with `R = 3`, `T = 4`.
#[target_feature(enable = "avx2,fma")]
#[inline(never)]
unsafe fn tile34(w: *const f32, x: *const f32, cols: usize, out: *mut f32, ldo: usize) {
    let z = _mm256_setzero_ps();
    let (mut a00, mut a01, mut a02, mut a03) = (z, z, z, z);
    let (mut a10, mut a11, mut a12, mut a13) = (z, z, z, z);
    let (mut a20, mut a21, mut a22, mut a23) = (z, z, z, z);
    let n8 = cols & !7;
    // SAFETY: rows 0..3 of w and 0..4 of x start cols floats apart; every load below is at
    // k + 8 <= n8 <= cols inside its row (unaligned loads).
    let (w0, w1, w2, x0, x1, x2, x3) = unsafe {
        (
            w,
            w.add(cols),
            w.add(2 * cols),
            x,
            x.add(cols),
            x.add(2 * cols),
            x.add(3 * cols),
        )
    };
    let mut k = 0;
    while k < n8 {
        // SAFETY: see above.
        unsafe {
            let v0 = _mm256_loadu_ps(w0.add(k));
            let v1 = _mm256_loadu_ps(w1.add(k));
            let v2 = _mm256_loadu_ps(w2.add(k));
            let xv = _mm256_loadu_ps(x0.add(k));
            a00 = _mm256_fmadd_ps(v0, xv, a00);
            a10 = _mm256_fmadd_ps(v1, xv, a10);
            a20 = _mm256_fmadd_ps(v2, xv, a20);
            let xv = _mm256_loadu_ps(x1.add(k));
            a01 = _mm256_fmadd_ps(v0, xv, a01);
            a11 = _mm256_fmadd_ps(v1, xv, a11);
            a21 = _mm256_fmadd_ps(v2, xv, a21);
            let xv = _mm256_loadu_ps(x2.add(k));
            a02 = _mm256_fmadd_ps(v0, xv, a02);
            a12 = _mm256_fmadd_ps(v1, xv, a12);
            a22 = _mm256_fmadd_ps(v2, xv, a22);
            let xv = _mm256_loadu_ps(x3.add(k));
            a03 = _mm256_fmadd_ps(v0, xv, a03);
            a13 = _mm256_fmadd_ps(v1, xv, a13);
            a23 = _mm256_fmadd_ps(v2, xv, a23);
        }
        k += 8;
    }
    let acc = [
        [a00, a01, a02, a03],
        [a10, a11, a12, a13],
        [a20, a21, a22, a23],
    ];
    for (i, row) in acc.iter().enumerate() {
        let mut s = [0.0f32; 4];
        // SAFETY: s holds 4 floats (unaligned store).
        unsafe { _mm_storeu_ps(s.as_mut_ptr(), hsum4(row[0], row[1], row[2], row[3])) };
        for (j, sj) in s.iter_mut().enumerate() {
            for kk in n8..cols {
                // SAFETY: kk < cols: inside row i of w / token j of x; w may be unaligned.
                *sj += unsafe { w.add(i * cols + kk).read_unaligned() * *x.add(j * cols + kk) };
            }
            // SAFETY: i < 3, j < 4: writable by the caller's contract.
            unsafe { *out.add(j * ldo + i) = *sj };
        }
    }
}

/// The horizontal sums of four vectors, in order.
#[target_feature(enable = "avx2")]
#[inline]
fn hsum4(a: __m256, b: __m256, c: __m256, d: __m256) -> __m128 {
    let ab = _mm256_hadd_ps(a, b); // a01 a23 b01 b23 | a45 a67 b45 b67
    let cd = _mm256_hadd_ps(c, d);
    let abcd = _mm256_hadd_ps(ab, cd); // a0-3 b0-3 c0-3 d0-3 | a4-7 b4-7 c4-7 d4-7
    _mm_add_ps(
        _mm256_castps256_ps128(abcd),
        _mm256_extractf128_ps::<1>(abcd),
    )
}

/// `R x T` micro-kernel: `out[j * ldo + i] = dot(w[i * cols..], x[j * cols..])` over `cols`.
///
/// # Safety
/// AVX2+FMA available; `w` readable (any alignment) for `R * cols` f32s, `x` for `T * cols`;
/// `out + j * ldo + i` writable for `i < R`, `j < T`.
#[target_feature(enable = "avx2,fma")]
#[inline]
#[allow(clippy::needless_range_loop)]
unsafe fn tile<const R: usize, const T: usize>(
    w: *const f32,
    x: *const f32,
    cols: usize,
    out: *mut f32,
    ldo: usize,
) {
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    let n8 = cols & !7;
    let mut k = 0;
    while k < n8 {
        let mut wv = [_mm256_setzero_ps(); R];
        for (i, v) in wv.iter_mut().enumerate() {
            // SAFETY: k + 8 <= cols, so row i's 8 floats at k are inside w (unaligned load).
            *v = unsafe { _mm256_loadu_ps(w.add(i * cols + k)) };
        }
        for j in 0..T {
            // SAFETY: k + 8 <= cols, inside token j's row of x.
            let xv = unsafe { _mm256_loadu_ps(x.add(j * cols + k)) };
            for i in 0..R {
                acc[i][j] = _mm256_fmadd_ps(wv[i], xv, acc[i][j]);
            }
        }
        k += 8;
    }
    for (i, row) in acc.iter().enumerate() {
        for (j, &a) in row.iter().enumerate() {
            let mut s = hsum(a);
            for kk in n8..cols {
                // SAFETY: kk < cols: inside row i of w / token j of x; w may be unaligned.
                s += unsafe { w.add(i * cols + kk).read_unaligned() * *x.add(j * cols + kk) };
            }
            // SAFETY: i < R, j < T: writable by the caller's contract.
            unsafe { *out.add(j * ldo + i) = s };
        }
    }
}

/// Horizontal sum in the same order as [`hsum4`] (so a token's result does not depend on
/// which micro-kernel computed it, e.g. on the batch it is in).
#[target_feature(enable = "avx2")]
#[inline]
fn hsum(v: __m256) -> f32 {
    let z = _mm256_setzero_ps();
    _mm_cvtss_f32(hsum4(v, z, z, z))
}
