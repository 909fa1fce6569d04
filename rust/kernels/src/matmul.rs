//! Public kernel entry points: row dequantization, activation quantization, single dots and the
//! quantized matmul. All argument checking happens here; the kernels behind the dispatch tables
//! (`crate::simd`) trust these checks.
//!
//! `matmul` flow (ggml `ggml_compute_forward_mul_mat`, without the barrier): quantize all tokens
//! of `x` once into `scratch` (the weight type's `vec_dot_type`), then split the weight rows into
//! more chunks than threads and let the pool's work stealing run them. Inside a chunk every
//! token is processed while the chunk's weight rows are cache-resident.
//!
//! With AVX2 and the 32-block formats (Q4_0/Q4_1/Q5_0/Q5_1/Q8_0) everything goes through the
//! register-tiled kernels of `simd::x86_avx2` (gemv for one token, gemm for several): the
//! activations are quantized and "prepared" once, row chunks run on the pool, and matmuls with
//! little work run inline on the caller's thread (no hand-off). [`matmul_multi`] runs several
//! matrices that share one input (q/k/v, gate/up) in one parallel region with one activation
//! quantization. With AVX2 and several tokens, Q4_K / Q6_K go through the register-tiled
//! K-quant kernels of `simd::x86_avx2_kquants` (Q8_K activations quantized once, 1 row x up to
//! 8 tokens per tile); Q4_0 / Q5_0 with more than 16 tokens convert each row panel to Q8_0
//! once. With AVX2, F32 / F16 / BF16 go through `simd::x86_avx2_float` for any token count.
//!
//! **Batch invariance** (continuous batching): `out[t * rows + r]` depends only on W row r and
//! x row t: never on `n_tok`, on t's position in the batch, on how rows are split into chunks,
//! panels or tiles, nor on the thread count. Every path computes each (row, token) output with
//! the same operations in the same order: activations are quantized per row (deterministic);
//! the integer block dots are exact; and the f32 accumulation of one (row, token) is the same
//! whichever kernel runs it (gemv tile, gemm tile of any shape, converted-panel tile, or the
//! one-token vec_dot that shares the K-quant tile's order). `tests/batch_invariance.rs` checks
//! this bit for bit for every format on every tier; a new kernel or path must keep it.
//!
//! The AVX-512 tier runs these same AVX2 paths (a verified, batch-invariant superset) for the
//! row-major formats; its 512-bit kernels are the 16-row packed matmul (`crate::packed`,
//! Q4_0/Q4_1/Q8_0 weights repacked at load), which wins at every token count.

use rayon::prelude::*;

use crate::error::{check_len, KernelError};
use crate::pool::Pool;
use crate::quant::QuantType;
use crate::simd::{self, Isa};

/// Minimum weight bytes x tokens per chunk in the per-row path (keeps per-chunk overhead small).
const MIN_CHUNK_WORK: usize = 16 * 1024;

fn ensure_isa(isa: Isa) -> Result<(), KernelError> {
    if isa.is_available() {
        Ok(())
    } else {
        Err(KernelError::UnsupportedIsa(isa))
    }
}

fn row_bytes(t: QuantType, n: usize) -> Result<usize, KernelError> {
    if !n.is_multiple_of(t.block_size()) {
        return Err(KernelError::NotBlockAligned { t, n });
    }
    t.row_bytes(n).ok_or(KernelError::Overflow)
}

/// Dequantize `dst.len()` values of type `t` from `src` with the active ISA.
pub fn dequantize_row(t: QuantType, src: &[u8], dst: &mut [f32]) -> Result<(), KernelError> {
    dequantize_row_isa(simd::active(), t, src, dst)
}

/// Dequantize `dst.len()` values of type `t` from `src` with an explicit ISA.
pub fn dequantize_row_isa(
    isa: Isa,
    t: QuantType,
    src: &[u8],
    dst: &mut [f32],
) -> Result<(), KernelError> {
    ensure_isa(isa)?;
    let f = simd::dequant_fn(isa, t).ok_or(KernelError::UnsupportedType(t))?;
    check_len("dequantize src bytes", row_bytes(t, dst.len())?, src.len())?;
    // SAFETY: isa is available (checked) and src holds exactly the whole blocks for dst.
    unsafe { f(src, dst) };
    Ok(())
}

/// Quantize f32 activations `x` into `dst` in activation format `vt` (Q8_0 or Q8_1).
pub fn quantize_row_isa(
    isa: Isa,
    vt: QuantType,
    x: &[f32],
    dst: &mut [u8],
) -> Result<(), KernelError> {
    ensure_isa(isa)?;
    let f = simd::quantize_fn(isa, vt).ok_or(KernelError::UnsupportedType(vt))?;
    check_len("quantize dst bytes", row_bytes(vt, x.len())?, dst.len())?;
    // SAFETY: isa is available (checked); x is whole blocks and dst has their exact size.
    unsafe { f(x, dst) };
    Ok(())
}

/// Kernels resolved once per call.
struct Plan {
    vec_dot: simd::VecDotFn,
    quantize: Option<simd::QuantizeFn>,
    vt: QuantType,
}

fn plan(isa: Isa, wt: QuantType) -> Result<Plan, KernelError> {
    ensure_isa(isa)?;
    let vec_dot = simd::vec_dot_fn(isa, wt).ok_or(KernelError::UnsupportedType(wt))?;
    let vt = wt.vec_dot_type();
    let quantize = if vt == QuantType::F32 {
        None
    } else {
        Some(simd::quantize_fn(isa, vt).ok_or(KernelError::UnsupportedType(wt))?)
    };
    Ok(Plan {
        vec_dot,
        quantize,
        vt,
    })
}

/// Dot of one weight row (`x.len()` values of type `t`) with f32 `x`, through the production
/// path: `x` is first quantized into `scratch` in `t`'s activation format.
pub fn vec_dot_f32(
    isa: Isa,
    t: QuantType,
    w_row: &[u8],
    x: &[f32],
    scratch: &mut Vec<u8>,
) -> Result<f32, KernelError> {
    let p = plan(isa, t)?;
    check_len("weight row bytes", row_bytes(t, x.len())?, w_row.len())?;
    let xq: &[u8] = match p.quantize {
        None => bytemuck::cast_slice(x),
        Some(q) => {
            let n = row_bytes(p.vt, x.len())?;
            if scratch.len() < n {
                scratch.resize(n, 0);
            }
            // SAFETY: isa available; x is whole blocks (same block size 32 as t) and the
            // destination has exactly their size.
            unsafe { q(x, &mut scratch[..n]) };
            &scratch[..n]
        }
    };
    // SAFETY: isa available; w_row and xq hold the same number of blocks/elements.
    Ok(unsafe { (p.vec_dot)(w_row, xq) })
}

/// `out[t * rows + r] = dot(W[r], x[t])` with the active ISA; see [`matmul_isa`].
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    pool: &Pool,
    w: &[u8],
    wt: QuantType,
    rows: usize,
    cols: usize,
    x: &[f32],
    n_tok: usize,
    out: &mut [f32],
    scratch: &mut Vec<u8>,
) -> Result<(), KernelError> {
    matmul_isa(
        simd::active(),
        pool,
        w,
        wt,
        rows,
        cols,
        x,
        n_tok,
        out,
        scratch,
    )
}

/// The output of a parallel matmul, shared by its tasks (every kernel module uses this one).
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(pub(crate) *mut f32);
// SAFETY: OutPtr is only used to write disjoint output elements from different chunks (each
// (token, row) pair belongs to exactly one chunk) while the owning `&mut [f32]` is borrowed.
unsafe impl Send for OutPtr {}
// SAFETY: as above; no two threads write the same element and nobody reads during the call.
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// Method access so closures capture the whole (Sync) wrapper, not the raw field.
    pub(crate) fn ptr(self) -> *mut f32 {
        self.0
    }
}

/// Quantized matmul with an explicit ISA.
///
/// `w`: `rows x cols` row-major in `wt` (GGUF ne0 = cols, ne1 = rows); `x`: `n_tok x cols` f32
/// row-major; `out`: `n_tok x rows`, `out[t * rows + r] = dot(W[r], x[t])`. `scratch` holds
/// the quantized activations; it only grows, so repeated calls of a size allocate nothing.
#[allow(clippy::too_many_arguments)]
pub fn matmul_isa(
    isa: Isa,
    pool: &Pool,
    w: &[u8],
    wt: QuantType,
    rows: usize,
    cols: usize,
    x: &[f32],
    n_tok: usize,
    out: &mut [f32],
    scratch: &mut Vec<u8>,
) -> Result<(), KernelError> {
    let p = plan(isa, wt)?;
    let rb = row_bytes(wt, cols)?;
    check_len(
        "weight bytes",
        rows.checked_mul(rb).ok_or(KernelError::Overflow)?,
        w.len(),
    )?;
    check_len(
        "x length",
        n_tok.checked_mul(cols).ok_or(KernelError::Overflow)?,
        x.len(),
    )?;
    check_len(
        "out length",
        n_tok.checked_mul(rows).ok_or(KernelError::Overflow)?,
        out.len(),
    )?;
    if rows == 0 || n_tok == 0 {
        return Ok(());
    }
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx2 | Isa::Avx512) && simd::x86_avx2::gemm_fn(wt).is_some() {
        let mut jobs = [MatmulJob { w, wt, rows, out }];
        return tiled_avx2(pool, &mut jobs, cols, x, n_tok, scratch);
    }
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx2 | Isa::Avx512)
        && simd::x86_avx2_float::supports(wt)
        && simd::x86_avx2_float::matmul(pool, w, wt, rows, cols, x, n_tok, out)
    {
        return Ok(());
    }
    let out_ptr = OutPtr(out.as_mut_ptr());

    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx2 | Isa::Avx512) && n_tok > 1 {
        if let (Some(g), Some(q)) = (simd::x86_avx2_kquants::gemm_fn(wt), p.quantize) {
            return ktiled_avx2(
                pool, g, q, p.vt, w, rb, rows, cols, x, n_tok, out_ptr, scratch,
            );
        }
    }

    // Per-row path: quantize x, then chunks of rows x all tokens.
    let xrb = row_bytes(p.vt, cols)?;
    let xq: &[u8] = match p.quantize {
        None => bytemuck::cast_slice(x),
        Some(q) => {
            let n = n_tok * xrb;
            if scratch.len() < n {
                scratch.resize(n, 0);
            }
            quantize_all(pool, q, x, cols, &mut scratch[..n], xrb);
            &scratch[..n]
        }
    };
    let group = 16;
    let min_rows = (MIN_CHUNK_WORK / (rb * n_tok).max(1))
        .max(1)
        .next_multiple_of(group);
    let n_chunks = rows.div_ceil(min_rows).min(pool.n_threads() * 8).max(1);
    let chunk_rows = rows.div_ceil(n_chunks).next_multiple_of(group);
    let n_chunks = rows.div_ceil(chunk_rows);
    let vd = p.vec_dot;
    pool.for_each_chunk(n_chunks, |c| {
        let (r0, r1) = (c * chunk_rows, ((c + 1) * chunk_rows).min(rows));
        for t in 0..n_tok {
            let xr = &xq[t * xrb..(t + 1) * xrb];
            for r in r0..r1 {
                // SAFETY: isa available; W row r and token row t hold the same number of blocks.
                let v = unsafe { vd(&w[r * rb..(r + 1) * rb], xr) };
                // SAFETY: t < n_tok, r < rows, so the index is inside `out`; only this chunk
                // writes rows r0..r1 (see OutPtr).
                unsafe { *out_ptr.ptr().add(t * rows + r) = v };
            }
        }
    });
    Ok(())
}

/// Quantize `n_tok` rows of `cols` into `dst` (rows of `xrb` bytes), in parallel if large.
fn quantize_all(
    pool: &Pool,
    q: simd::QuantizeFn,
    x: &[f32],
    cols: usize,
    dst: &mut [u8],
    xrb: usize,
) {
    let n_tok = x.len() / cols;
    if n_tok >= 16 && pool.n_threads() > 1 {
        pool.install(|| {
            dst.par_chunks_mut(xrb)
                .zip(x.par_chunks(cols))
                .for_each(|(d, s)| {
                    // SAFETY: the plan's isa is available; each x row is whole blocks and each dst
                    // row exactly their quantized size.
                    unsafe { q(s, d) }
                })
        });
    } else {
        for (d, s) in dst.chunks_mut(xrb).zip(x.chunks(cols)) {
            // SAFETY: see above.
            unsafe { q(s, d) };
        }
    }
}

/// The AVX2 register-tiled K-quant path (several tokens): quantize all tokens to Q8_K once,
/// then row chunks x all tokens on the pool, or inline if little work.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn ktiled_avx2(
    pool: &Pool,
    gemm: simd::x86_avx2_kquants::KGemmFn,
    q: simd::QuantizeFn,
    vt: QuantType,
    w: &[u8],
    rb: usize,
    rows: usize,
    cols: usize,
    x: &[f32],
    n_tok: usize,
    out: OutPtr,
    scratch: &mut Vec<u8>,
) -> Result<(), KernelError> {
    let xrb = row_bytes(vt, cols)?;
    let nb = cols / vt.block_size();
    let n = n_tok.checked_mul(xrb).ok_or(KernelError::Overflow)?;
    if scratch.len() < n {
        scratch.resize(n, 0);
    }
    quantize_all(pool, q, x, cols, &mut scratch[..n], xrb);
    let xq: &[u8] = &scratch[..n];
    let work = w.len().saturating_mul(n_tok);
    let par = pool.n_threads() > 1 && work >= MIN_PAR_WORK;
    let target = if par {
        (pool.n_threads() * 4).min(rows.div_ceil(2)).max(1)
    } else {
        1
    };
    let chunk = rows.div_ceil(target).next_multiple_of(2);
    let n_chunks = rows.div_ceil(chunk);
    let run = |c: usize| {
        let (r0, r1) = (c * chunk, ((c + 1) * chunk).min(rows));
        // SAFETY: Avx2 is available (checked by plan()); rows r0..r1 of w are whole blocks; xq
        // holds n_tok Q8_K rows of nb blocks at stride xrb; out + t*rows + r for r in r0..r1,
        // t < n_tok is inside `out` and written only by this chunk.
        unsafe {
            gemm(
                &w[r0 * rb..r1 * rb],
                rb,
                r1 - r0,
                xq,
                xrb,
                n_tok,
                nb,
                out.ptr().add(r0),
                rows,
            )
        };
    };
    if par && n_chunks > 1 {
        pool.for_each_chunk(n_chunks, run);
    } else {
        (0..n_chunks).for_each(run);
    }
    Ok(())
}

/// One matrix of a [`matmul_multi`] call: `rows x cols` weights `w` of type `wt` and its output
/// (`n_tok x rows`, token-major like [`matmul`]).
#[derive(Debug)]
pub struct MatmulJob<'a> {
    pub w: &'a [u8],
    pub wt: QuantType,
    pub rows: usize,
    pub out: &'a mut [f32],
}

/// Several matmuls over the same input `x` (`n_tok x cols`), e.g. q/k/v or gate/up, with the
/// active ISA: one activation quantization and one parallel region for all jobs. Same result
/// as calling [`matmul`] per job.
pub fn matmul_multi(
    pool: &Pool,
    jobs: &mut [MatmulJob<'_>],
    cols: usize,
    x: &[f32],
    n_tok: usize,
    scratch: &mut Vec<u8>,
) -> Result<(), KernelError> {
    matmul_multi_isa(simd::active(), pool, jobs, cols, x, n_tok, scratch)
}

/// [`matmul_multi`] with an explicit ISA.
pub fn matmul_multi_isa(
    isa: Isa,
    pool: &Pool,
    jobs: &mut [MatmulJob<'_>],
    cols: usize,
    x: &[f32],
    n_tok: usize,
    scratch: &mut Vec<u8>,
) -> Result<(), KernelError> {
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx2 | Isa::Avx512)
        && jobs.iter().all(|j| simd::x86_avx2::gemm_fn(j.wt).is_some())
    {
        ensure_isa(isa)?;
        return tiled_avx2(pool, jobs, cols, x, n_tok, scratch);
    }
    for j in jobs.iter_mut() {
        matmul_isa(isa, pool, j.w, j.wt, j.rows, cols, x, n_tok, j.out, scratch)?;
    }
    Ok(())
}

/// Below this much work (weight bytes x tokens) a matmul runs inline on the caller's thread:
/// handing it to the pool costs more than it saves (and the other vCPU is often busy).
const MIN_PAR_WORK: usize = 160 * 1024;

/// Which prepared-activation layout a weight type needs (index into the prep regions).
#[cfg(target_arch = "x86_64")]
fn prep_kind(t: QuantType) -> usize {
    match t {
        QuantType::Q4_0 => 0,
        QuantType::Q5_0 => 1,
        QuantType::Q8_0 => 2,
        _ => 3, // Q4_1, Q5_1 (Q8_1 activations, no correction)
    }
}

/// The AVX2 tiled path for jobs whose types all have `x86_avx2::gemm_fn`.
///
/// Scratch layout, per token: one prepared row (`nb * ABLK` bytes) per needed prep kind, then
/// a quantized-row buffer; tokens are quantized + prepared in parallel when there are many.
#[cfg(target_arch = "x86_64")]
fn tiled_avx2(
    pool: &Pool,
    jobs: &mut [MatmulJob<'_>],
    cols: usize,
    x: &[f32],
    n_tok: usize,
    scratch: &mut Vec<u8>,
) -> Result<(), KernelError> {
    use simd::x86_avx2::{gemm_fn, quantize_fn, PrepFn, ABLK};
    check_len(
        "x length",
        n_tok.checked_mul(cols).ok_or(KernelError::Overflow)?,
        x.len(),
    )?;
    if !cols.is_multiple_of(32) {
        return Err(KernelError::NotBlockAligned {
            t: jobs.first().map_or(QuantType::Q8_0, |j| j.wt),
            n: cols,
        });
    }
    // (prep fn, activation type) per kind, and each kind's slot in a token's prepared rows.
    let mut kinds: [Option<(PrepFn, QuantType)>; 4] = [None; 4];
    let mut work = 0usize;
    for j in jobs.iter() {
        let rb = row_bytes(j.wt, cols)?;
        check_len(
            "weight bytes",
            j.rows.checked_mul(rb).ok_or(KernelError::Overflow)?,
            j.w.len(),
        )?;
        check_len(
            "out length",
            n_tok.checked_mul(j.rows).ok_or(KernelError::Overflow)?,
            j.out.len(),
        )?;
        let (_, prep) = gemm_fn(j.wt).ok_or(KernelError::UnsupportedType(j.wt))?;
        kinds[prep_kind(j.wt)] = Some((prep, j.wt.vec_dot_type()));
        work = work.saturating_add(j.w.len().saturating_mul(n_tok));
    }
    if n_tok == 0 || jobs.iter().all(|j| j.rows == 0) {
        return Ok(());
    }
    let nb = cols / 32;
    let arb = nb * ABLK;
    let mut slot = [0usize; 4];
    let mut used: Vec<(PrepFn, QuantType)> = Vec::with_capacity(4);
    for (k, kind) in kinds.iter().enumerate() {
        if let Some(kd) = kind {
            slot[k] = used.len();
            used.push(*kd);
        }
    }
    let qrb = 36 * nb; // room for one Q8_0 or Q8_1 row
    let tstride = used.len() * arb + qrb;
    let need = n_tok.checked_mul(tstride).ok_or(KernelError::Overflow)?;
    if scratch.len() < need {
        scratch.resize(need, 0);
    }
    let buf = &mut scratch[..need];
    let quant_tok = |xr: &[f32], tb: &mut [u8]| {
        let (rows, qrow) = tb.split_at_mut(used.len() * arb);
        for (&(prep, vt), dst) in used.iter().zip(rows.chunks_exact_mut(arb)) {
            let xrb = vt.type_size() * nb;
            let q = quantize_fn(vt).expect("Q8_0/Q8_1 quantizer");
            // SAFETY: Avx2 availability was checked by the callers; xr is nb whole blocks,
            // qrow[..xrb] exactly their quantized size and dst nb prepared records.
            unsafe {
                q(xr, &mut qrow[..xrb]);
                prep(&qrow[..xrb], dst);
            }
        }
    };
    if n_tok >= 16 && pool.n_threads() > 1 {
        pool.install(|| {
            buf.par_chunks_mut(tstride)
                .zip(x.par_chunks(cols))
                .for_each(|(tb, xr)| quant_tok(xr, tb))
        });
    } else {
        for (tb, xr) in buf.chunks_mut(tstride).zip(x.chunks(cols)) {
            quant_tok(xr, tb);
        }
    }
    let buf: &[u8] = buf;

    // Row chunks over all jobs: multiples of 4 rows, about 4 per thread when parallel.
    let par = pool.n_threads() > 1 && work >= MIN_PAR_WORK;
    let total_rows: usize = jobs.iter().map(|j| j.rows).sum();
    let target = if par {
        (pool.n_threads() * 4).min(total_rows.div_ceil(4)).max(1)
    } else {
        1
    };
    let chunk = total_rows.div_ceil(target).next_multiple_of(4);
    struct Desc<'w> {
        gemm: simd::x86_avx2::GemmFn,
        w: &'w [u8],
        rb: usize,
        act: &'w [u8],
        out: OutPtr,
        rows: usize,
    }
    let descs: Vec<Desc<'_>> = jobs
        .iter_mut()
        .map(|j| Desc {
            gemm: gemm_fn(j.wt).expect("checked above").0,
            w: j.w,
            rb: j.wt.type_size() * nb,
            act: &buf[slot[prep_kind(j.wt)] * arb..],
            out: OutPtr(j.out.as_mut_ptr()),
            rows: j.rows,
        })
        .collect();
    let mut tasks: Vec<(usize, usize, usize)> = Vec::new();
    for (ji, d) in descs.iter().enumerate() {
        let mut r0 = 0;
        while r0 < d.rows {
            let r1 = (r0 + chunk).min(d.rows);
            tasks.push((ji, r0, r1));
            r0 = r1;
        }
    }
    let run = |i: usize| {
        let (ji, r0, r1) = tasks[i];
        let d = &descs[ji];
        // SAFETY: Avx2 is available (checked by the callers); rows r0..r1 of w are whole
        // blocks; act holds n_tok prepared rows of nb records at stride tstride; out +
        // t*rows + r for r in r0..r1, t < n_tok is inside the job's output, written only here.
        unsafe {
            (d.gemm)(
                &d.w[r0 * d.rb..r1 * d.rb],
                d.rb,
                r1 - r0,
                d.act,
                tstride,
                n_tok,
                nb,
                d.out.ptr().add(r0),
                d.rows,
            )
        };
    };
    if par && tasks.len() > 1 {
        pool.for_each_chunk(tasks.len(), run);
    } else {
        (0..tasks.len()).for_each(run);
    }
    Ok(())
}
