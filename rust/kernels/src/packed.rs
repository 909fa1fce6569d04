//! Weights repacked at load into 8-row interleaved panels, for the x86 integer matmul that
//! serves every token count with one kernel (llama.cpp's "repack" idea, our own layout).
//!
//! Why: in the row-major formats one SIMD dot covers one weight row, so every (row, token,
//! block) pays its own int-to-float conversion and scale multiply, and a batch of B decode rows
//! costs about B single rows. Interleaving 8 rows puts the same 4 values of 8 rows in one
//! 32-byte vector: one `vpdpbusd` (AVX-VNNI) or `vpmaddubsw`+`vpmaddwd` (AVX2) advances 8 rows
//! at once against a broadcast of 4 activation bytes, the integer sums of a whole block stay
//! in one register, and the float work (convert, scale, accumulate) is done once per block for
//! 8 rows. The unpacked weights of a block are reused by up to 4 tokens.
//!
//! Layout of one panel (8 rows; the last panel of a matrix is padded with zero rows), block
//! after block (32 values per row per block):
//! - 8 f16 scales `d`, then 8 f16 minimums `m` (Q4_1; zero otherwise): 32 bytes;
//! - Q4_0 / Q4_1: 4 chunks of 32 bytes; chunk `c`, dword `r` = row r's values `4c..4c+4`
//!   (low nibbles) and `4c+16..4c+20` (high nibbles), as unsigned 0..15;
//! - Q8_0: 8 chunks of 32 bytes; chunk `k`, dword `r` = row r's values `4k..4k+4` (i8).
//!
//! Activations are quantized per token to 32-value blocks: i8 quants (values `4k..4k+4` of a
//! block in dword k), the f32 scale and the i32 sum of the quants.
//!
//! Every (row, token) result is the same whatever the batch: integer block sums are exact and
//! the float accumulation runs over blocks in order, the same instructions for any token
//! count, tile position or thread split (the AVX-VNNI and AVX2 variants give identical integer
//! sums, hence identical results).

use crate::error::{check_len, KernelError};
use crate::pool::Pool;
use crate::quant::QuantType;

/// Rows per panel.
pub const PANEL_ROWS: usize = 8;
/// Most matrices of one `matmul_packed` call done in one parallel region.
const MAX_JOBS: usize = 4;
/// Tokens per register tile.
const TILE_TOK: usize = 4;
/// Values per block.
const QK: usize = 32;
/// Below this much work (weight bytes x tokens) a matmul runs inline on the caller's thread.
const MIN_PAR_WORK: usize = 160 * 1024;

/// A weight matrix repacked into panels.
#[derive(Debug)]
pub struct PackedMatrix {
    t: QuantType,
    rows: usize,
    cols: usize,
    data: Vec<u8>,
}

fn block_bytes(t: QuantType) -> usize {
    32 + if t == QuantType::Q8_0 { 256 } else { 128 }
}

/// Whether this machine runs packed matmuls (x86 with AVX2, FMA and F16C).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as f;
        f!("avx2") && f!("fma") && f!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the packed matmul runs its AVX-VNNI (`vpdpbusd`) variant on this machine (the CPU
/// has AVX-VNNI and `HOLOGRAM_NO_VNNI` is unset); false where packed matmuls do not run.
pub fn uses_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        available() && has_vnni()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(target_arch = "x86_64")]
fn has_vnni() -> bool {
    use std::sync::OnceLock;
    static V: OnceLock<bool> = OnceLock::new();
    *V.get_or_init(|| {
        std::env::var("HOLOGRAM_NO_VNNI").is_err() && std::arch::is_x86_feature_detected!("avxvnni")
    })
}

impl PackedMatrix {
    /// Weight types that can be packed.
    pub fn supports(t: QuantType) -> bool {
        matches!(t, QuantType::Q4_0 | QuantType::Q4_1 | QuantType::Q8_0)
    }

    /// Repack `rows x cols` weights `w` of type `t` (row-major, whole blocks).
    pub fn pack(w: &[u8], t: QuantType, rows: usize, cols: usize) -> Result<Self, KernelError> {
        if !Self::supports(t) {
            return Err(KernelError::UnsupportedType(t));
        }
        if !cols.is_multiple_of(QK) {
            return Err(KernelError::NotBlockAligned { t, n: cols });
        }
        let nb = cols / QK;
        let src_bb = t.type_size();
        let rb = nb * src_bb;
        check_len(
            "weight bytes",
            rows.checked_mul(rb).ok_or(KernelError::Overflow)?,
            w.len(),
        )?;
        let n_panels = rows.div_ceil(PANEL_ROWS);
        let bb = block_bytes(t);
        let mut data = vec![0u8; n_panels * nb * bb];
        for p in 0..n_panels {
            for b in 0..nb {
                let dst = &mut data[(p * nb + b) * bb..(p * nb + b + 1) * bb];
                for r in 0..PANEL_ROWS {
                    let row = p * PANEL_ROWS + r;
                    if row >= rows {
                        break; // zero padding
                    }
                    let src = &w[row * rb + b * src_bb..row * rb + (b + 1) * src_bb];
                    dst[2 * r..2 * r + 2].copy_from_slice(&src[0..2]);
                    let mut q = [0u8; QK];
                    match t {
                        QuantType::Q8_0 => q.copy_from_slice(&src[2..34]),
                        _ => {
                            if t == QuantType::Q4_1 {
                                dst[16 + 2 * r..16 + 2 * r + 2].copy_from_slice(&src[2..4]);
                            }
                            let qs = &src[src_bb - 16..];
                            for i in 0..16 {
                                q[i] = qs[i] & 0x0F;
                                q[i + 16] = qs[i] >> 4;
                            }
                        }
                    }
                    let quants = &mut dst[32..];
                    if t == QuantType::Q8_0 {
                        for k in 0..8 {
                            quants[k * 32 + 4 * r..k * 32 + 4 * r + 4]
                                .copy_from_slice(&q[4 * k..4 * k + 4]);
                        }
                    } else {
                        for c in 0..4 {
                            for j in 0..4 {
                                quants[c * 32 + 4 * r + j] =
                                    q[4 * c + j] | (q[4 * c + 16 + j] << 4);
                            }
                        }
                    }
                }
            }
        }
        Ok(PackedMatrix {
            t,
            rows,
            cols,
            data,
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    pub fn quant_type(&self) -> QuantType {
        self.t
    }
    pub fn bytes(&self) -> usize {
        self.data.len()
    }
}

/// Quantized activations: per token and block, 32 i8 quants, the f32 scale and the i32 sum.
#[derive(Debug, Default)]
pub struct PackedActs {
    q: Vec<i8>,
    d: Vec<f32>,
    s: Vec<i32>,
    nb: usize,
    n_tok: usize,
}

impl PackedActs {
    /// Quantize `n_tok` rows of `cols` values (Q8_0 rounding: scale max|x|/127, round to
    /// nearest). Reuses its buffers.
    pub fn quantize(&mut self, x: &[f32], cols: usize, n_tok: usize) -> Result<(), KernelError> {
        if !cols.is_multiple_of(QK) {
            return Err(KernelError::NotBlockAligned {
                t: QuantType::Q8_0,
                n: cols,
            });
        }
        check_len(
            "x length",
            n_tok.checked_mul(cols).ok_or(KernelError::Overflow)?,
            x.len(),
        )?;
        let nb = cols / QK;
        self.nb = nb;
        self.n_tok = n_tok;
        self.q.resize(n_tok * nb * QK, 0);
        self.d.resize(n_tok * nb, 0.0);
        self.s.resize(n_tok * nb, 0);
        let (q, d, s) = (
            &mut self.q[..n_tok * nb * QK],
            &mut self.d[..n_tok * nb],
            &mut self.s[..n_tok * nb],
        );
        #[cfg(target_arch = "x86_64")]
        if available() {
            // SAFETY: AVX2/FMA checked by `available()`; the slices have matching lengths.
            unsafe { quantize_blocks_avx2(x, q, d, s) };
            return Ok(());
        }
        quantize_blocks(x, q, d, s);
        Ok(())
    }
}

/// Q8_0-style quantization of whole 32-value blocks (round half to even, as ggml's AVX path):
/// quants, scale and quant sum per block.
#[inline(always)]
fn quantize_blocks(x: &[f32], q: &mut [i8], d: &mut [f32], s: &mut [i32]) {
    for (i, blk) in x.chunks_exact(QK).enumerate() {
        let amax = blk.iter().fold(0f32, |a, &v| a.max(v.abs()));
        let scale = amax / 127.0;
        let id = if scale > 0.0 { 1.0 / scale } else { 0.0 };
        let mut sum = 0i32;
        for (o, &v) in q[i * QK..(i + 1) * QK].iter_mut().zip(blk) {
            let r = (v * id).round_ties_even().clamp(-127.0, 127.0) as i8;
            *o = r;
            sum += i32::from(r);
        }
        d[i] = scale;
        s[i] = sum;
    }
}

/// [`quantize_blocks`] compiled for AVX2 (rounding becomes one instruction, the loops vector
/// code); the same results.
///
/// # Safety
/// AVX2 and FMA must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_blocks_avx2(x: &[f32], q: &mut [i8], d: &mut [f32], s: &mut [i32]) {
    quantize_blocks(x, q, d, s)
}

use crate::matmul::OutPtr;

/// One packed matrix of a [`matmul_packed`] call and its output (`n_tok x rows`).
pub struct PackedJob<'a> {
    pub w: &'a PackedMatrix,
    pub out: &'a mut [f32],
}

/// `out[t * rows + r] = dot(W[r], x[t])` for every job, all sharing the activations `acts`
/// (quantized from `n_tok` rows of the jobs' common `cols`).
pub fn matmul_packed(
    pool: &Pool,
    jobs: &mut [PackedJob<'_>],
    acts: &PackedActs,
) -> Result<(), KernelError> {
    #[cfg(target_arch = "x86_64")]
    let vnni = has_vnni();
    #[cfg(not(target_arch = "x86_64"))]
    let vnni = false;
    matmul_packed_variant(pool, jobs, acts, vnni)
}

/// [`matmul_packed`] with the integer dot chosen by the caller: `vnni` uses AVX-VNNI (refused
/// when the CPU lacks it), else AVX2. Both give identical results; tests run both.
pub fn matmul_packed_variant(
    pool: &Pool,
    jobs: &mut [PackedJob<'_>],
    acts: &PackedActs,
    vnni: bool,
) -> Result<(), KernelError> {
    #[cfg(target_arch = "x86_64")]
    if vnni && !std::arch::is_x86_feature_detected!("avxvnni") {
        return Err(KernelError::UnsupportedIsa(crate::Isa::Avx2));
    }
    if !available() {
        return Err(KernelError::UnsupportedIsa(crate::Isa::Avx2));
    }
    let n_tok = acts.n_tok;
    let mut work = 0usize;
    for j in jobs.iter() {
        if j.w.cols / QK != acts.nb {
            return Err(KernelError::LengthMismatch {
                what: "activation blocks",
                expected: j.w.cols / QK,
                got: acts.nb,
            });
        }
        check_len(
            "out length",
            n_tok.checked_mul(j.w.rows).ok_or(KernelError::Overflow)?,
            j.out.len(),
        )?;
        work = work.saturating_add(j.w.data.len().saturating_mul(n_tok.max(1)));
    }
    if n_tok == 0 {
        return Ok(());
    }
    // Tasks: runs of panels, about 4 per thread when parallel.
    let par = pool.n_threads() > 1 && work >= MIN_PAR_WORK;
    let total_panels: usize = jobs.iter().map(|j| j.w.rows.div_ceil(PANEL_ROWS)).sum();
    let target = if par {
        (pool.n_threads() * 4).min(total_panels).max(1)
    } else {
        1
    };
    let per = total_panels.div_ceil(target).max(1);
    // Per job (at most MAX_JOBS per call: q/k/v or gate/up): its matrix, output and task count.
    // Fixed arrays: a matmul in the decode loop allocates nothing.
    if jobs.len() > MAX_JOBS {
        let (a, b) = jobs.split_at_mut(MAX_JOBS);
        matmul_packed_variant(pool, a, acts, vnni)?;
        return matmul_packed_variant(pool, b, acts, vnni);
    }
    let nj = jobs.len();
    let mut mats: [Option<&PackedMatrix>; MAX_JOBS] = [None; MAX_JOBS];
    let mut outs = [OutPtr(std::ptr::null_mut()); MAX_JOBS];
    let mut ntasks = [0usize; MAX_JOBS];
    for (k, j) in jobs.iter_mut().enumerate() {
        mats[k] = Some(j.w);
        outs[k] = OutPtr(j.out.as_mut_ptr());
        ntasks[k] = j.w.rows.div_ceil(PANEL_ROWS).div_ceil(per);
    }
    let n_tasks: usize = ntasks[..nj].iter().sum();
    let run = |mut i: usize| {
        // Task i: the job it falls in, and its run of that job's panels.
        let mut ji = 0;
        while i >= ntasks[ji] {
            i -= ntasks[ji];
            ji += 1;
        }
        let Some(m) = mats[ji] else { return };
        let p0 = i * per;
        let p1 = (p0 + per).min(m.rows.div_ceil(PANEL_ROWS));
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2/FMA/F16C checked by `available()`; panels p0..p1 exist in m.data; acts
        // holds n_tok tokens of m.cols / 32 blocks; out + t*rows + r (r < rows) is inside the
        // job's output and only this task writes rows of panels p0..p1.
        unsafe {
            x86::panels(m, p0, p1, acts, outs[ji].ptr(), vnni)
        };
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (m, p0, p1, vnni, &outs);
    };
    if par && n_tasks > 1 {
        pool.for_each_chunk(n_tasks, run);
    } else {
        (0..n_tasks).for_each(run);
    }
    Ok(())
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{PackedActs, PackedMatrix, PANEL_ROWS, QK, TILE_TOK};
    use crate::quant::QuantType;
    use std::arch::x86_64::*;

    /// Panels `p0..p1` of `m` against every token of `acts`, into `out` (`n_tok x rows`).
    ///
    /// # Safety
    /// AVX2+FMA+F16C (+AVX-VNNI when `vnni`); see `matmul_packed`.
    pub(super) unsafe fn panels(
        m: &PackedMatrix,
        p0: usize,
        p1: usize,
        acts: &PackedActs,
        out: *mut f32,
        vnni: bool,
    ) {
        // SAFETY: forwarded contract; the variants differ only in the integer dot instruction.
        unsafe {
            match (m.quant_type(), vnni) {
                (QuantType::Q4_0, true) => run::<0, true>(m, p0, p1, acts, out),
                (QuantType::Q4_0, false) => run::<0, false>(m, p0, p1, acts, out),
                (QuantType::Q4_1, true) => run::<1, true>(m, p0, p1, acts, out),
                (QuantType::Q4_1, false) => run::<1, false>(m, p0, p1, acts, out),
                (_, true) => run::<8, true>(m, p0, p1, acts, out),
                (_, false) => run::<8, false>(m, p0, p1, acts, out),
            }
        }
    }

    /// # Safety
    /// As `panels`; `F` is 0 (Q4_0), 1 (Q4_1) or 8 (Q8_0) matching `m`.
    unsafe fn run<const F: u32, const V: bool>(
        m: &PackedMatrix,
        p0: usize,
        p1: usize,
        acts: &PackedActs,
        out: *mut f32,
    ) {
        let n_tok = acts.n_tok;
        for p in p0..p1 {
            let mut t0 = 0;
            while t0 < n_tok {
                let c = (n_tok - t0).min(TILE_TOK);
                // SAFETY: forwarded; tokens t0..t0+c exist; V only when AVX-VNNI is present.
                unsafe {
                    match (c, V) {
                        (1, false) => tile_avx2::<F, 1>(m, p, acts, t0, out),
                        (2, false) => tile_avx2::<F, 2>(m, p, acts, t0, out),
                        (3, false) => tile_avx2::<F, 3>(m, p, acts, t0, out),
                        (_, false) => tile_avx2::<F, 4>(m, p, acts, t0, out),
                        (1, true) => tile_vnni::<F, 1>(m, p, acts, t0, out),
                        (2, true) => tile_vnni::<F, 2>(m, p, acts, t0, out),
                        (3, true) => tile_vnni::<F, 3>(m, p, acts, t0, out),
                        (_, true) => tile_vnni::<F, 4>(m, p, acts, t0, out),
                    }
                }
                t0 += c;
            }
        }
    }

    /// # Safety
    /// AVX2+FMA+F16C; see `tile`.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn tile_avx2<const F: u32, const C: usize>(
        m: &PackedMatrix,
        p: usize,
        acts: &PackedActs,
        t0: usize,
        out: *mut f32,
    ) {
        // SAFETY: forwarded.
        unsafe { tile::<F, false, C>(m, p, acts, t0, out) }
    }

    /// # Safety
    /// AVX2+FMA+F16C+AVX-VNNI; see `tile`.
    #[target_feature(enable = "avx2,fma,f16c,avxvnni")]
    unsafe fn tile_vnni<const F: u32, const C: usize>(
        m: &PackedMatrix,
        p: usize,
        acts: &PackedActs,
        t0: usize,
        out: *mut f32,
    ) {
        // SAFETY: forwarded.
        unsafe { tile::<F, true, C>(m, p, acts, t0, out) }
    }

    /// Integer dot of unsigned weight bytes `w` with signed activation bytes `x`, added to
    /// the 8 i32 lanes of `acc` (exact: no intermediate saturates for our operands). Inlined
    /// into `tile_vnni` / `tile_avx2`, which enable the instructions.
    #[inline(always)]
    unsafe fn dot<const V: bool>(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
        // SAFETY: the enclosing function enables AVX-VNNI when V, AVX2 always.
        unsafe {
            if V {
                _mm256_dpbusd_avx_epi32(acc, w, x)
            } else {
                let p16 = _mm256_maddubs_epi16(w, x);
                _mm256_add_epi32(acc, _mm256_madd_epi16(p16, _mm256_set1_epi16(1)))
            }
        }
    }

    /// One panel x `C` tokens.
    ///
    /// # Safety
    /// Inlined into `tile_avx2` / `tile_vnni` only (they enable the instructions); panel `p`
    /// and tokens `t0..t0 + C` exist; `out` as in `matmul_packed`.
    #[inline(always)]
    unsafe fn tile<const F: u32, const V: bool, const C: usize>(
        m: &PackedMatrix,
        p: usize,
        acts: &PackedActs,
        t0: usize,
        out: *mut f32,
    ) {
        // SAFETY: the caller enables the instructions (inlined into tile_avx2 / tile_vnni) and
        // guarantees the bounds: panel p has nb blocks of bb bytes inside m.data, tokens
        // t0..t0 + C have nb blocks of quants/d/s inside acts, and the rows written below are
        // inside the job's output.
        unsafe {
            let nb = acts.nb;
            let bb = super::block_bytes(m.quant_type());
            // SAFETY (whole function): panel p has nb blocks of bb bytes inside m.data; tokens
            // t0..t0+C have nb blocks of quants/d/s inside acts; out rows are checked below.
            let base = m.data.as_ptr().add(p * nb * bb);
            let mask = _mm256_set1_epi8(0x0F);
            let mut facc = [_mm256_setzero_ps(); C];
            for b in 0..nb {
                let blk = base.add(b * bb);
                let d8 = _mm256_cvtph_ps(_mm_loadu_si128(blk.cast()));
                let q = blk.add(32);
                let mut iacc = [_mm256_setzero_si256(); C];
                // Dword k of block b of token t0 + t is at xs + t * xstride + 4k (inside acts.q).
                let xs = acts.q.as_ptr().add((t0 * nb + b) * QK);
                let xstride = nb * QK;
                if F == 8 {
                    for k in 0..8 {
                        let w = _mm256_loadu_si256(q.add(32 * k).cast());
                        // i8 weights: |w| as unsigned, the sign moved onto the activations.
                        let aw = _mm256_sign_epi8(w, w);
                        for (t, ia) in iacc.iter_mut().enumerate() {
                            let x = _mm256_set1_epi32(
                                xs.add(t * xstride + 4 * k).cast::<i32>().read_unaligned(),
                            );
                            *ia = dot::<V>(*ia, aw, _mm256_sign_epi8(x, w));
                        }
                    }
                } else {
                    for c in 0..4 {
                        let w = _mm256_loadu_si256(q.add(32 * c).cast());
                        let lo = _mm256_and_si256(w, mask);
                        let hi = _mm256_and_si256(_mm256_srli_epi16(w, 4), mask);
                        for (t, ia) in iacc.iter_mut().enumerate() {
                            let xl = xs.add(t * xstride + 4 * c).cast::<i32>().read_unaligned();
                            let xh = xs
                                .add(t * xstride + 4 * c + 16)
                                .cast::<i32>()
                                .read_unaligned();
                            *ia = dot::<V>(*ia, lo, _mm256_set1_epi32(xl));
                            *ia = dot::<V>(*ia, hi, _mm256_set1_epi32(xh));
                        }
                    }
                }
                for (t, (fa, ia)) in facc.iter_mut().zip(iacc).enumerate() {
                    let ai = (t0 + t) * nb + b;
                    let (dx, sx) = (*acts.d.get_unchecked(ai), *acts.s.get_unchecked(ai));
                    let isum = if F == 0 {
                        // Q4_0 values are q - 8.
                        _mm256_sub_epi32(ia, _mm256_set1_epi32(8 * sx))
                    } else {
                        ia
                    };
                    let scale = _mm256_mul_ps(d8, _mm256_set1_ps(dx));
                    *fa = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(isum), *fa);
                    if F == 1 {
                        let m8 = _mm256_cvtph_ps(_mm_loadu_si128(blk.add(16).cast()));
                        *fa = _mm256_fmadd_ps(m8, _mm256_set1_ps(dx * sx as f32), *fa);
                    }
                }
            }
            let rows = m.rows();
            let r0 = p * PANEL_ROWS;
            let nr = (rows - r0).min(PANEL_ROWS);
            for (t, fa) in facc.iter().enumerate() {
                let mut v = [0f32; PANEL_ROWS];
                _mm256_storeu_ps(v.as_mut_ptr(), *fa);
                for (r, &x) in v.iter().enumerate().take(nr) {
                    // SAFETY: t0 + t < n_tok and r0 + r < rows: inside the job's output.
                    *out.add((t0 + t) * rows + r0 + r) = x;
                }
            }
        }
    }
}
