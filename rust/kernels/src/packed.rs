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
//! - Q5_0 (as Q4_0, values q + 16), Q4_K and Q6_K (per 256-value super-block: a header of
//!   scales, then 32-value blocks of nibble chunks and 1- or 2-bit planes, see `sb_bytes_w`):
//!   the same layouts on 8-row and 16-row panels, scaled by the width.
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
    /// Rows per panel: 8 (AVX2 / AVX-VNNI, 256-bit) or 16 (AVX-512 VNNI).
    width: usize,
    data: Vec<u8>,
}

/// Bytes of one block of one panel of `width` rows: `width` f16 scales, `width` f16 minimums,
/// then the quants (4 bits or 8 bits per value).
fn block_bytes(t: QuantType, width: usize) -> usize {
    4 * width
        + match t {
            QuantType::Q8_0 => 32 * width,
            QuantType::Q5_0 => 20 * width, // nibbles + the fifth-bit plane
            _ => 16 * width,
        }
}

/// Which kernel runs a packed matmul.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackedKernel {
    /// 8-row panels, `vpmaddubsw` + `vpmaddwd` (AVX2).
    Avx2,
    /// 8-row panels, 256-bit `vpdpbusd` (AVX-VNNI).
    AvxVnni,
    /// 16-row panels, 512-bit `vpdpbusd` (AVX-512 F/BW + VNNI).
    Avx512Vnni,
}

impl PackedKernel {
    /// Rows per panel this kernel reads.
    pub fn width(self) -> usize {
        match self {
            PackedKernel::Avx512Vnni => 16,
            _ => PANEL_ROWS,
        }
    }

    /// Whether this CPU runs the kernel.
    pub fn is_available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as f;
            available()
                && match self {
                    PackedKernel::Avx2 => true,
                    PackedKernel::AvxVnni => f!("avxvnni"),
                    PackedKernel::Avx512Vnni => f!("avx512f") && f!("avx512bw") && f!("avx512vnni"),
                }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// Every kernel this CPU runs.
    pub fn all_available() -> Vec<PackedKernel> {
        [
            PackedKernel::Avx2,
            PackedKernel::AvxVnni,
            PackedKernel::Avx512Vnni,
        ]
        .into_iter()
        .filter(|k| k.is_available())
        .collect()
    }

    /// The kernel for new packed matrices: AVX-512 VNNI when the CPU has it and the active
    /// tier is AVX-512 (`HOLOGRAM_ISA=avx2` forces 8-row panels), else AVX-VNNI when present
    /// (`HOLOGRAM_NO_VNNI` turns it off), else AVX2.
    pub fn preferred() -> PackedKernel {
        use std::sync::OnceLock;
        static K: OnceLock<PackedKernel> = OnceLock::new();
        *K.get_or_init(|| {
            if crate::simd::active() == crate::Isa::Avx512
                && PackedKernel::Avx512Vnni.is_available()
            {
                PackedKernel::Avx512Vnni
            } else if has_vnni() {
                PackedKernel::AvxVnni
            } else {
                PackedKernel::Avx2
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            PackedKernel::Avx2 => "avx2",
            PackedKernel::AvxVnni => "avx-vnni",
            PackedKernel::Avx512Vnni => "avx512-vnni",
        }
    }
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

fn has_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::env::var("HOLOGRAM_NO_VNNI").is_err() && std::arch::is_x86_feature_detected!("avxvnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

impl PackedMatrix {
    /// Weight types packed in 32-value blocks with one scale per block (Q4_0, Q4_1, Q8_0);
    /// [`Self::supports_kernel`] lists every packed type.
    pub fn supports(t: QuantType) -> bool {
        matches!(t, QuantType::Q4_0 | QuantType::Q4_1 | QuantType::Q8_0)
    }

    /// Weight types kernel `k` runs: Q4_0 / Q4_1 / Q8_0 and Q5_0, Q4_K, Q6_K on every kernel
    /// (8-row AVX2 / AVX-VNNI and 16-row AVX-512 VNNI panels alike).
    pub fn supports_kernel(t: QuantType, _k: PackedKernel) -> bool {
        Self::supports(t) || matches!(t, QuantType::Q5_0 | QuantType::Q4_K | QuantType::Q6_K)
    }

    /// Repack `rows x cols` weights `w` of type `t` (row-major, whole blocks) for this
    /// machine's [`PackedKernel::preferred`] kernel.
    pub fn pack(w: &[u8], t: QuantType, rows: usize, cols: usize) -> Result<Self, KernelError> {
        Self::pack_for(w, t, rows, cols, PackedKernel::preferred())
    }

    /// Repack for kernel `k` (its panel width).
    pub fn pack_for(
        w: &[u8],
        t: QuantType,
        rows: usize,
        cols: usize,
        k: PackedKernel,
    ) -> Result<Self, KernelError> {
        Self::pack_for_with(w, t, rows, cols, k, &mut |_| {})
    }

    /// [`Self::pack`], calling `done(r)` as the rows `..r` of `w` have been read for the last
    /// time (every [`PACK_PROGRESS_ROWS`] rows or so, and at the end): a caller can then drop
    /// those source pages (a file mapping) while the rest is packed, so that the source and
    /// its packed copy are never both resident in full.
    pub fn pack_with_progress(
        w: &[u8],
        t: QuantType,
        rows: usize,
        cols: usize,
        done: &mut dyn FnMut(usize),
    ) -> Result<Self, KernelError> {
        Self::pack_for_with(w, t, rows, cols, PackedKernel::preferred(), done)
    }

    fn pack_for_with(
        w: &[u8],
        t: QuantType,
        rows: usize,
        cols: usize,
        k: PackedKernel,
        done: &mut dyn FnMut(usize),
    ) -> Result<Self, KernelError> {
        let width = k.width();
        if !Self::supports_kernel(t, k) {
            return Err(KernelError::UnsupportedType(t));
        }
        if !Self::supports(t) {
            return pack_wide(w, t, rows, cols, width, done);
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
        let n_panels = rows.div_ceil(width);
        let bb = block_bytes(t, width);
        let mut data = zeroed_huge(n_panels * nb * bb);
        // 16-row panels keep Q8_0 quants as unsigned bytes (q + 128), for `vpdpbusd` without a
        // sign fix-up (the kernel subtracts 128 x the activation sum).
        let flip = if width == 16 { 0x80 } else { 0 };
        for p in 0..n_panels {
            progress(p, width, rows, done);
            for b in 0..nb {
                let dst = &mut data[(p * nb + b) * bb..(p * nb + b + 1) * bb];
                for r in 0..width {
                    let row = p * width + r;
                    if row >= rows {
                        break; // zero padding
                    }
                    let src = &w[row * rb + b * src_bb..row * rb + (b + 1) * src_bb];
                    dst[2 * r..2 * r + 2].copy_from_slice(&src[0..2]);
                    let mut q = [0u8; QK];
                    match t {
                        QuantType::Q8_0 => {
                            for (o, &v) in q.iter_mut().zip(&src[2..34]) {
                                *o = v ^ flip;
                            }
                        }
                        _ => {
                            if t == QuantType::Q4_1 {
                                dst[2 * width + 2 * r..2 * width + 2 * r + 2]
                                    .copy_from_slice(&src[2..4]);
                            }
                            let qs = &src[src_bb - 16..];
                            for i in 0..16 {
                                q[i] = qs[i] & 0x0F;
                                q[i + 16] = qs[i] >> 4;
                            }
                        }
                    }
                    let quants = &mut dst[4 * width..];
                    let cw = 4 * width; // bytes per chunk
                    if t == QuantType::Q8_0 {
                        for k in 0..8 {
                            quants[k * cw + 4 * r..k * cw + 4 * r + 4]
                                .copy_from_slice(&q[4 * k..4 * k + 4]);
                        }
                    } else {
                        for c in 0..4 {
                            for j in 0..4 {
                                quants[c * cw + 4 * r + j] =
                                    q[4 * c + j] | (q[4 * c + 16 + j] << 4);
                            }
                        }
                    }
                }
            }
        }
        done(rows);
        Ok(PackedMatrix {
            t,
            rows,
            cols,
            width,
            data,
        })
    }

    /// Rows per panel.
    pub fn width(&self) -> usize {
        self.width
    }

    /// The kernel that runs this matrix on this machine.
    pub fn kernel(&self) -> PackedKernel {
        if self.width == 16 {
            PackedKernel::Avx512Vnni
        } else if has_vnni() {
            PackedKernel::AvxVnni
        } else {
            PackedKernel::Avx2
        }
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

    /// Row `r` dequantized from the packed copy into `out` (`cols` values): the values
    /// `dequantize_row` gives for the source row, so that a table packed for its matmul (a tied
    /// token embedding) can serve its row lookups without touching the source pages again.
    /// Q8_0 only: `Ok(false)` (nothing written) for the other formats.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) -> Result<bool, KernelError> {
        if self.t != QuantType::Q8_0 {
            return Ok(false);
        }
        check_len("row length", self.cols, out.len())?;
        if r >= self.rows {
            return Err(KernelError::LengthMismatch {
                what: "row index",
                expected: self.rows,
                got: r,
            });
        }
        let w = self.width;
        let nb = self.cols / QK;
        let bb = block_bytes(self.t, w);
        let (p, ri) = (r / w, r % w);
        // As `pack_for` stores them: 16-row panels keep the quants as q + 128.
        let flip = if w == 16 { 0x80 } else { 0 };
        let cw = 4 * w;
        for (b, o) in out.chunks_exact_mut(QK).enumerate() {
            let blk = &self.data[(p * nb + b) * bb..(p * nb + b + 1) * bb];
            let d = half::f16::from_le_bytes([blk[2 * ri], blk[2 * ri + 1]]).to_f32();
            let q = &blk[4 * w..];
            for (k, o4) in o.chunks_exact_mut(4).enumerate() {
                for (j, v) in o4.iter_mut().enumerate() {
                    *v = f32::from((q[k * cw + 4 * ri + j] ^ flip) as i8) * d;
                }
            }
        }
        Ok(true)
    }
}

/// Rows between two progress calls of [`PackedMatrix::pack_with_progress`].
pub const PACK_PROGRESS_ROWS: usize = 1024;

/// Before panel `p` of `width` rows: report the rows before it as done every
/// [`PACK_PROGRESS_ROWS`] rows.
fn progress(p: usize, width: usize, rows: usize, done: &mut dyn FnMut(usize)) {
    let r = p * width;
    if r > 0 && r.is_multiple_of(PACK_PROGRESS_ROWS) {
        done(r.min(rows));
    }
}

/// A zeroed buffer for packed weights, backed by transparent huge pages where the kernel allows
/// (`madvise(MADV_HUGEPAGE)` before the pages are first written): matmuls stream these
/// buffers, and 2 MiB pages spare the TLB misses of 4 KiB ones.
fn zeroed_huge(n: usize) -> Vec<u8> {
    let v = vec![0u8; n];
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let start = v.as_ptr() as usize;
        let aligned = start.next_multiple_of(PAGE);
        let end = start + n;
        if end > aligned + PAGE {
            let len = (end - aligned) / PAGE * PAGE;
            // SAFETY: [aligned, aligned + len) lies inside v's allocation, which stays alive;
            // MADV_HUGEPAGE only changes how the kernel backs the pages, never their contents
            // (zero), and an error (no THP support) is harmless.
            unsafe {
                libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
            }
        }
    }
    v
}

/// Bytes of one super-block (256 values) of one 16-row panel (see `sb_bytes_w`).
fn sb_bytes(t: QuantType) -> usize {
    sb_bytes_w(t, 16)
}

/// Bytes of one super-block (256 values) of one panel of `width` (W) rows. Q4_K: W f16 `d`,
/// W f16 `dmin`, then 8 x W sub-block scales and 8 x W mins as bytes (sub-block j, row r at
/// `4W + W j + r` and `12W + W j + r`), then from `20W` 8 blocks of 4 nibble chunks (16W bytes
/// each). Q6_K: W f16 `d`, 16 x W i8 sub-block scales (`2W + W k + r`), then from `18W` 8
/// blocks of 4 nibble chunks + two 2-bit planes (24W bytes each).
fn sb_bytes_w(t: QuantType, width: usize) -> usize {
    match t {
        QuantType::Q4_K => 148 * width,
        _ => 210 * width,
    }
}

/// Write row `r`'s 32 unsigned values `u` (each < 64) of one block into a block area of a
/// `width`-row panel: nibble chunks at `q` (chunk c, 4 x width bytes, dword r: values 4c..4c+4
/// low | 4c+16..4c+20 high), and, when `hbits` is 1 or 2, the bits above the nibble into the
/// plane(s) at `h`: one plane of 4 x width bytes for 1 bit (byte 4r+j: bit c = value 4c+j, bit
/// 4+c = value 16+4c+j) or two for 2 bits (plane 0 byte 4r+j: bits 2c..2c+2 = value 4c+j;
/// plane 1 the same for 16+4c+j).
fn put_values(q: &mut [u8], h: &mut [u8], r: usize, u: &[u8; QK], hbits: u32, width: usize) {
    let cw = 4 * width; // bytes per chunk / plane
    for c in 0..4 {
        for j in 0..4 {
            let (a, b) = (u[4 * c + j], u[4 * c + 16 + j]);
            q[c * cw + 4 * r + j] = (a & 0x0F) | ((b & 0x0F) << 4);
            match hbits {
                1 => h[4 * r + j] |= ((a >> 4) << c) | ((b >> 4) << (4 + c)),
                2 => {
                    h[4 * r + j] |= (a >> 4) << (2 * c);
                    h[cw + 4 * r + j] |= (b >> 4) << (2 * c);
                }
                _ => {}
            }
        }
    }
}

/// Pack Q5_0 / Q4_K / Q6_K into panels of `width` rows (8: AVX2 / AVX-VNNI, 16: AVX-512).
fn pack_wide(
    w: &[u8],
    t: QuantType,
    rows: usize,
    cols: usize,
    width: usize,
    done: &mut dyn FnMut(usize),
) -> Result<PackedMatrix, KernelError> {
    use crate::quant::{q4_k, q5_0, q6_k};
    #[allow(non_snake_case)]
    let W = width;
    let bs = t.block_size();
    if !cols.is_multiple_of(bs) {
        return Err(KernelError::NotBlockAligned { t, n: cols });
    }
    let nbs = cols / bs; // source blocks per row
    let src_bb = t.type_size();
    let rb = nbs * src_bb;
    check_len(
        "weight bytes",
        rows.checked_mul(rb).ok_or(KernelError::Overflow)?,
        w.len(),
    )?;
    let n_panels = rows.div_ceil(W);
    let pb = if t == QuantType::Q5_0 {
        block_bytes(t, W)
    } else {
        sb_bytes_w(t, W)
    }; // bytes per source block
    let mut data = zeroed_huge(n_panels * nbs * pb);
    for p in 0..n_panels {
        progress(p, W, rows, done);
        for b in 0..nbs {
            let dst = &mut data[(p * nbs + b) * pb..(p * nbs + b + 1) * pb];
            for r in 0..W {
                let row = p * W + r;
                if row >= rows {
                    break; // zero padding
                }
                let src = &w[row * rb + b * src_bb..row * rb + (b + 1) * src_bb];
                match t {
                    QuantType::Q5_0 => {
                        let blk: q5_0::BlockQ5_0 = bytemuck::pod_read_unaligned(src);
                        dst[2 * r..2 * r + 2].copy_from_slice(&src[0..2]);
                        let mut u = [0u8; QK];
                        for (o, &v) in u.iter_mut().zip(blk.quants().iter()) {
                            *o = (v + 16) as u8;
                        }
                        let (q, h) = dst[4 * W..].split_at_mut(16 * W);
                        put_values(q, h, r, &u, 1, W);
                    }
                    QuantType::Q4_K => {
                        let blk: q4_k::BlockQ4_K = bytemuck::pod_read_unaligned(src);
                        dst[2 * r..2 * r + 2].copy_from_slice(&src[0..2]);
                        dst[2 * W + 2 * r..2 * W + 2 * r + 2].copy_from_slice(&src[2..4]);
                        let (sc, mn) = q4_k::scales_mins(&blk.scales);
                        for j in 0..8 {
                            dst[4 * W + W * j + r] = sc[j];
                            dst[12 * W + W * j + r] = mn[j];
                        }
                        let all = blk.quants();
                        for j in 0..8 {
                            let mut u = [0u8; QK];
                            u.copy_from_slice(&all[32 * j..32 * j + 32]);
                            let area = &mut dst[20 * W + 16 * W * j..20 * W + 16 * W * (j + 1)];
                            put_values(area, &mut [], r, &u, 0, W);
                        }
                    }
                    _ => {
                        let blk: q6_k::BlockQ6_K = bytemuck::pod_read_unaligned(src);
                        dst[2 * r..2 * r + 2].copy_from_slice(&blk.d.to_le_bytes());
                        for k in 0..16 {
                            dst[2 * W + W * k + r] = blk.scales[k] as u8;
                        }
                        let all = blk.quants();
                        for j in 0..8 {
                            let mut u = [0u8; QK];
                            for (o, &v) in u.iter_mut().zip(&all[32 * j..32 * j + 32]) {
                                *o = (v + 32) as u8;
                            }
                            let area = &mut dst[18 * W + 24 * W * j..18 * W + 24 * W * (j + 1)];
                            let (q, h) = area.split_at_mut(16 * W);
                            put_values(q, h, r, &u, 2, W);
                        }
                    }
                }
            }
        }
    }
    done(rows);
    Ok(PackedMatrix {
        t,
        rows,
        cols,
        width: W,
        data,
    })
}

/// Quantized activations: per token and block, 32 i8 quants, the f32 scale and the i32 sum.
#[derive(Debug, Default)]
pub struct PackedActs {
    q: Vec<i8>,
    d: Vec<f32>,
    s: Vec<i32>,
    /// Sum of the first 16 quants of each block (Q6_K's 16-value sub-blocks).
    h: Vec<i32>,
    nb: usize,
    n_tok: usize,
}

impl PackedActs {
    /// Quantize `n_tok` rows of `cols` values (Q8_0 rounding: scale max|x|/127, round to
    /// nearest, the scale kept as llama.cpp's f16). Reuses its buffers.
    pub fn quantize(&mut self, x: &[f32], cols: usize, n_tok: usize) -> Result<(), KernelError> {
        self.fill(x, cols, n_tok, false, None)
    }

    /// Quantize for K-quant weights as llama.cpp does (Q8_K, ggml `quantize_row_q8_K_ref`):
    /// one scale per 256 values (the value of largest magnitude maps to -127), so the packed
    /// K-quant kernels see the activations llama.cpp's K-quant dots see. `cols` must be a
    /// multiple of 256. Scales and sums are kept per 32-value block as [`Self::quantize`] does.
    pub fn quantize_k(&mut self, x: &[f32], cols: usize, n_tok: usize) -> Result<(), KernelError> {
        self.fill(x, cols, n_tok, true, None)
    }

    /// Quantize `x` (`n_tok` rows of `m.cols()`) the way `m`'s format expects: Q8_K-style for
    /// K-quants, else 32-value blocks.
    pub fn quantize_for(
        &mut self,
        m: &PackedMatrix,
        x: &[f32],
        n_tok: usize,
    ) -> Result<(), KernelError> {
        let kq = m.quant_type().block_size() == 256;
        self.fill(x, m.cols(), n_tok, kq, None)
    }

    /// [`Self::quantize_for`] with the tokens split over `pool` when there are many (prompt
    /// chunks); the same results.
    pub fn quantize_for_pool(
        &mut self,
        pool: &Pool,
        m: &PackedMatrix,
        x: &[f32],
        n_tok: usize,
    ) -> Result<(), KernelError> {
        const MIN_TOK: usize = 32;
        let kq = m.quant_type().block_size() == 256;
        let par = (n_tok >= MIN_TOK && pool.n_threads() > 1).then_some(pool);
        self.fill(x, m.cols(), n_tok, kq, par)
    }

    /// Check the shape, size the buffers and quantize (`kq`: Q8_K-style), over `pool` if given.
    fn fill(
        &mut self,
        x: &[f32],
        cols: usize,
        n_tok: usize,
        kq: bool,
        pool: Option<&Pool>,
    ) -> Result<(), KernelError> {
        let (bs, t) = if kq {
            (256, QuantType::Q8_K)
        } else {
            (QK, QuantType::Q8_0)
        };
        if !cols.is_multiple_of(bs) {
            return Err(KernelError::NotBlockAligned { t, n: cols });
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
        self.h.resize(n_tok * nb, 0);
        let (q, d, s, h) = (
            &mut self.q[..n_tok * nb * QK],
            &mut self.d[..n_tok * nb],
            &mut self.s[..n_tok * nb],
            &mut self.h[..n_tok * nb],
        );
        let Some(pool) = pool else {
            quantize_rows(kq, x, q, d, s, h);
            return Ok(());
        };
        let rows_per = n_tok.div_ceil(pool.n_threads() * 2).max(1);
        use rayon::prelude::*;
        pool.install(|| {
            x.par_chunks(rows_per * cols)
                .zip(q.par_chunks_mut(rows_per * nb * QK))
                .zip(d.par_chunks_mut(rows_per * nb))
                .zip(s.par_chunks_mut(rows_per * nb))
                .zip(h.par_chunks_mut(rows_per * nb))
                .for_each(|((((x, q), d), s), h)| quantize_rows(kq, x, q, d, s, h))
        });
        Ok(())
    }
}

/// Quantize whole rows (`kq`: Q8_K-style, else 32-value blocks) with the best code this CPU
/// runs (the same results either way).
fn quantize_rows(kq: bool, x: &[f32], q: &mut [i8], d: &mut [f32], s: &mut [i32], h: &mut [i32]) {
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: AVX2/FMA checked by `available()`; the slices hold the same whole rows.
        unsafe {
            if kq {
                quantize_k_avx2(x, q, d, s, h)
            } else {
                quantize_blocks_avx2(x, q, d, s, h)
            }
        };
        return;
    }
    if kq {
        quantize_k_blocks(x, q, d, s, h)
    } else {
        quantize_blocks(x, q, d, s, h)
    }
}

/// Q8_K's (quantization scale, stored scale) for a super-block whose value of largest magnitude
/// `amax` is `max`: that value maps to -127.
#[inline(always)]
fn q8k_scales(amax: f32, max: f32) -> (f32, f32) {
    if amax != 0.0 {
        let is = -127.0 / max;
        (is, 1.0 / is)
    } else {
        (0.0, 0.0)
    }
}

/// Q8_K-style quantization (see [`PackedActs::quantize_k`]) of whole 256-value blocks, with
/// scales, sums and half sums per 32-value block.
#[inline(always)]
fn quantize_k_blocks(x: &[f32], q: &mut [i8], d: &mut [f32], s: &mut [i32], h: &mut [i32]) {
    const QKK: usize = 256;
    for (sbi, xs) in x.chunks_exact(QKK).enumerate() {
        let (mut amax, mut max) = (0.0f32, 0.0f32);
        for &v in xs {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        let (iscale, dd) = q8k_scales(amax, max);
        for j in 0..QKK / QK {
            let bi = sbi * (QKK / QK) + j;
            let (mut sum, mut half) = (0i32, 0i32);
            for k in 0..QK {
                // ggml `nearest_int` then `MIN(127, ...)`; the largest value maps to -127.
                let v = (iscale * xs[j * QK + k])
                    .round_ties_even()
                    .clamp(-128.0, 127.0) as i8;
                q[bi * QK + k] = v;
                sum += i32::from(v);
                if k == QK / 2 - 1 {
                    half = sum;
                }
            }
            d[bi] = dd;
            s[bi] = sum;
            h[bi] = half;
        }
    }
}

/// [`quantize_k_blocks`] compiled for AVX2 (vector rounding); the same results.
///
/// # Safety
/// AVX2 and FMA must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_k_avx2(x: &[f32], q: &mut [i8], d: &mut [f32], s: &mut [i32], h: &mut [i32]) {
    use std::arch::x86_64::*;
    const QKK: usize = 256;
    let n_sb = (x.len() / QKK).min(q.len() / QKK).min(d.len() / 8);
    let n_sb = n_sb.min(s.len() / 8).min(h.len() / 8);
    for sbi in 0..n_sb {
        let xs = &x[sbi * QKK..(sbi + 1) * QKK];
        // SAFETY: AVX2 is enabled for this function; every load reads inside `xs` (256
        // values, 8 at a time).
        let amax = unsafe {
            let sign = _mm256_set1_ps(-0.0);
            let mut acc = _mm256_setzero_ps();
            for c in 0..QKK / 8 {
                let v = _mm256_andnot_ps(sign, _mm256_loadu_ps(xs.as_ptr().add(8 * c)));
                // The accumulator second: a NaN lane of `v` is skipped, as the scalar `>` does.
                acc = _mm256_max_ps(v, acc);
            }
            hmax8(acc)
        };
        // The first value of largest magnitude (the scalar loop's strict `>` keeps the first).
        let max = xs.iter().copied().find(|v| v.abs() == amax).unwrap_or(0.0);
        let (iscale, dd) = q8k_scales(amax, max);
        for j in 0..QKK / QK {
            let bi = sbi * (QKK / QK) + j;
            // SAFETY: AVX2 is enabled; block j's 32 values are inside `xs` and its 32 quants
            // inside `q` (bi < n_sb * 8).
            let (sum, half) = unsafe {
                quant_block_avx2(
                    xs.as_ptr().add(j * QK),
                    iscale,
                    -128.0,
                    q.as_mut_ptr().add(bi * QK),
                )
            };
            d[bi] = dd;
            s[bi] = sum;
            h[bi] = half;
        }
    }
}

/// Horizontal maximum of 8 lanes (no NaN lanes).
///
/// # Safety
/// AVX must be available (inlined into AVX2 functions).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn hmax8(v: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    // SAFETY: register-only operations; the caller enables AVX.
    unsafe {
        let m4 = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        let m1 = _mm_max_ss(m2, _mm_shuffle_ps(m2, m2, 1));
        _mm_cvtss_f32(m1)
    }
}

/// Sum of 8 i32 lanes.
///
/// # Safety
/// AVX2 must be available (inlined into AVX2 functions).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn hsum8_epi32(v: std::arch::x86_64::__m256i) -> i32 {
    use std::arch::x86_64::*;
    // SAFETY: register-only operations; the caller enables AVX2.
    unsafe {
        let s4 = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let s2 = _mm_add_epi32(s4, _mm_unpackhi_epi64(s4, s4));
        let s1 = _mm_add_epi32(s2, _mm_shuffle_epi32(s2, 1));
        _mm_cvtsi128_si32(s1)
    }
}

/// Quantize 32 values at `x` to `q`: `round_ties_even(v * scale)` clamped to `[lo, 127]`, as
/// the scalar loops do; returns (sum of the 32 quants, sum of the first 16).
///
/// # Safety
/// AVX2 must be available (inlined into AVX2 functions); `x` and `q` hold 32 values.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn quant_block_avx2(x: *const f32, scale: f32, lo: f32, q: *mut i8) -> (i32, i32) {
    use std::arch::x86_64::*;
    // SAFETY: the caller's contract: 32 readable floats at x, 32 writable bytes at q, AVX2.
    unsafe {
        let vs = _mm256_set1_ps(scale);
        let (vlo, vhi) = (_mm256_set1_ps(lo), _mm256_set1_ps(127.0));
        let mut iv = [_mm256_setzero_si256(); 4];
        for (c, o) in iv.iter_mut().enumerate() {
            let v = _mm256_mul_ps(_mm256_loadu_ps(x.add(8 * c)), vs);
            let r = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            *o = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(r, vlo), vhi));
        }
        let half = hsum8_epi32(_mm256_add_epi32(iv[0], iv[1]));
        let sum = half + hsum8_epi32(_mm256_add_epi32(iv[2], iv[3]));
        // i32 -> i16 -> i8 (saturation never triggers: the values are in [-128, 127]); the
        // packs interleave 128-bit lanes, the permute puts the dwords back in order.
        let p01 = _mm256_packs_epi32(iv[0], iv[1]);
        let p23 = _mm256_packs_epi32(iv[2], iv[3]);
        let b = _mm256_packs_epi16(p01, p23);
        let b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256(q.cast(), b);
        (sum, half)
    }
}

/// Q8_0-style quantization of whole 32-value blocks (round half to even, as ggml's AVX path):
/// quants, scale and quant sum per block.
#[inline(always)]
fn quantize_blocks(x: &[f32], q: &mut [i8], d: &mut [f32], s: &mut [i32], h: &mut [i32]) {
    for (i, blk) in x.chunks_exact(QK).enumerate() {
        let amax = blk.iter().fold(0f32, |a, &v| a.max(v.abs()));
        let scale = amax / 127.0;
        let id = if scale > 0.0 { 1.0 / scale } else { 0.0 };
        // The scale as llama.cpp's Q8_0 activations store it (f16); the quants use the f32.
        let scale = half::f16::from_f32(scale).to_f32();
        let mut sum = 0i32;
        let mut half = 0i32;
        for (k, (o, &v)) in q[i * QK..(i + 1) * QK].iter_mut().zip(blk).enumerate() {
            let r = (v * id).round_ties_even().clamp(-127.0, 127.0) as i8;
            *o = r;
            sum += i32::from(r);
            if k == QK / 2 - 1 {
                half = sum;
            }
        }
        d[i] = scale;
        s[i] = sum;
        h[i] = half;
    }
}

/// [`quantize_blocks`] compiled for AVX2 (rounding becomes one instruction, the loops vector
/// code); the same results.
///
/// # Safety
/// AVX2 and FMA must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_blocks_avx2(
    x: &[f32],
    q: &mut [i8],
    d: &mut [f32],
    s: &mut [i32],
    h: &mut [i32],
) {
    use std::arch::x86_64::*;
    let nb = (x.len() / QK).min(q.len() / QK).min(d.len());
    let nb = nb.min(s.len()).min(h.len());
    for i in 0..nb {
        // SAFETY: AVX2 is enabled for this function; block i's 32 values are inside `x` and
        // its 32 quants inside `q` (i < nb).
        unsafe {
            let xp = x.as_ptr().add(i * QK);
            let sign = _mm256_set1_ps(-0.0);
            let mut acc = _mm256_setzero_ps();
            for c in 0..QK / 8 {
                let v = _mm256_andnot_ps(sign, _mm256_loadu_ps(xp.add(8 * c)));
                acc = _mm256_max_ps(v, acc);
            }
            let amax = hmax8(acc);
            let scale = amax / 127.0;
            let id = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            let (sum, half) = quant_block_avx2(xp, id, -127.0, q.as_mut_ptr().add(i * QK));
            d[i] = half::f16::from_f32(scale).to_f32();
            s[i] = sum;
            h[i] = half;
        }
    }
}

use crate::matmul::OutPtr;

/// One packed matrix of a [`matmul_packed`] call and its output (`n_tok x rows`).
pub struct PackedJob<'a> {
    pub w: &'a PackedMatrix,
    pub out: &'a mut [f32],
}

/// `out[t * rows + r] = dot(W[r], x[t])` for every job, all sharing the activations `acts`
/// (quantized from `n_tok` rows of the jobs' common `cols`). Each matrix runs its own
/// [`PackedMatrix::kernel`].
pub fn matmul_packed(
    pool: &Pool,
    jobs: &mut [PackedJob<'_>],
    acts: &PackedActs,
) -> Result<(), KernelError> {
    let k = match jobs.first() {
        Some(j) => j.w.kernel(),
        None => return Ok(()),
    };
    matmul_packed_with(pool, jobs, acts, k)
}

/// [`matmul_packed`] with the kernel chosen by the caller (refused when the CPU lacks it or a
/// matrix's panel width does not match it). All kernels give identical results; tests run
/// each one.
pub fn matmul_packed_with(
    pool: &Pool,
    jobs: &mut [PackedJob<'_>],
    acts: &PackedActs,
    kernel: PackedKernel,
) -> Result<(), KernelError> {
    if !kernel.is_available() {
        return Err(KernelError::UnsupportedIsa(
            if kernel == PackedKernel::Avx512Vnni {
                crate::Isa::Avx512
            } else {
                crate::Isa::Avx2
            },
        ));
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
        if j.w.width != kernel.width() {
            return Err(KernelError::LengthMismatch {
                what: "panel width",
                expected: kernel.width(),
                got: j.w.width,
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
    let width = kernel.width();
    // Tasks: runs of panels, about 4 per thread when parallel.
    let par = pool.n_threads() > 1 && work >= MIN_PAR_WORK;
    let total_panels: usize = jobs.iter().map(|j| j.w.rows.div_ceil(width)).sum();
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
        matmul_packed_with(pool, a, acts, kernel)?;
        return matmul_packed_with(pool, b, acts, kernel);
    }
    let nj = jobs.len();
    let mut mats: [Option<&PackedMatrix>; MAX_JOBS] = [None; MAX_JOBS];
    let mut outs = [OutPtr(std::ptr::null_mut()); MAX_JOBS];
    let mut ntasks = [0usize; MAX_JOBS];
    for (k, j) in jobs.iter_mut().enumerate() {
        mats[k] = Some(j.w);
        outs[k] = OutPtr(j.out.as_mut_ptr());
        ntasks[k] = j.w.rows.div_ceil(width).div_ceil(per);
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
        let p1 = (p0 + per).min(m.rows.div_ceil(width));
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the kernel's features were checked (`is_available`) and match the panel
        // width; panels p0..p1 exist in m.data; acts holds n_tok tokens of m.cols / 32 blocks;
        // out + t*rows + r (r < rows) is inside the job's output and only this task writes
        // rows of panels p0..p1.
        unsafe {
            match kernel {
                PackedKernel::Avx512Vnni => x86_512::panels(m, p0, p1, acts, outs[ji].ptr()),
                _ => x86::panels(
                    m,
                    p0,
                    p1,
                    acts,
                    outs[ji].ptr(),
                    kernel == PackedKernel::AvxVnni,
                ),
            }
        };
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (m, p0, p1, &outs);
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

    const W: usize = PANEL_ROWS;

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
        // SAFETY: forwarded contract; the variants differ only in the integer dot instructions.
        unsafe {
            match (m.quant_type(), vnni) {
                (QuantType::Q4_0, true) => run::<0, true>(m, p0, p1, acts, out),
                (QuantType::Q4_0, false) => run::<0, false>(m, p0, p1, acts, out),
                (QuantType::Q4_1, true) => run::<1, true>(m, p0, p1, acts, out),
                (QuantType::Q4_1, false) => run::<1, false>(m, p0, p1, acts, out),
                (QuantType::Q5_0, true) => run::<5, true>(m, p0, p1, acts, out),
                (QuantType::Q5_0, false) => run::<5, false>(m, p0, p1, acts, out),
                (QuantType::Q4_K, true) => run::<40, true>(m, p0, p1, acts, out),
                (QuantType::Q4_K, false) => run::<40, false>(m, p0, p1, acts, out),
                (QuantType::Q6_K, true) => run::<60, true>(m, p0, p1, acts, out),
                (QuantType::Q6_K, false) => run::<60, false>(m, p0, p1, acts, out),
                (_, true) => run::<8, true>(m, p0, p1, acts, out),
                (_, false) => run::<8, false>(m, p0, p1, acts, out),
            }
        }
    }

    /// # Safety
    /// As `panels`; `F` is 0 (Q4_0), 1 (Q4_1), 5 (Q5_0), 8 (Q8_0), 40 (Q4_K) or 60 (Q6_K)
    /// matching `m`.
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
        unsafe { dispatch::<F, false, C>(m, p, acts, t0, out) }
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
        unsafe { dispatch::<F, true, C>(m, p, acts, t0, out) }
    }

    /// # Safety
    /// As `tile`.
    #[inline(always)]
    unsafe fn dispatch<const F: u32, const V: bool, const C: usize>(
        m: &PackedMatrix,
        p: usize,
        acts: &PackedActs,
        t0: usize,
        out: *mut f32,
    ) {
        // SAFETY: forwarded.
        unsafe {
            match F {
                40 => tile_q4k::<V, C>(m, p, acts, t0, out),
                60 => tile_q6k::<V, C>(m, p, acts, t0, out),
                _ => tile::<F, V, C>(m, p, acts, t0, out),
            }
        }
    }

    /// Integer dot of unsigned weight bytes `w` with signed activation bytes `x`, added to
    /// the 8 i32 lanes of `acc` (exact: no intermediate saturates for our operands, weights
    /// below 64 and activations in -128..=127 give `vpmaddubsw` pair sums of at most
    /// 2 x 63 x 128 = 16128). Inlined into `tile_vnni` / `tile_avx2`, which enable the
    /// instructions.
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

    /// One chunk's two dots (`lo` against the broadcast dword `xl`, `hi` against `xh`): with
    /// AVX-VNNI into the i32 lanes of `ia`; with AVX2 the `vpmaddubsw` pair sums are added into
    /// the i16 lanes of `pa` (exact while the caller flushes in time: 4-bit weights give pair
    /// sums of at most 2 x 15 x 128 = 3840, 8 of them fit i16; 5-bit ones 7936, 4 fit), then
    /// `flush` widens them once (one `vpmaddwd` per block instead of one per dot).
    #[inline(always)]
    unsafe fn dot2<const V: bool>(
        ia: &mut __m256i,
        pa: &mut __m256i,
        lo: __m256i,
        hi: __m256i,
        xl: i32,
        xh: i32,
    ) {
        // SAFETY: the enclosing function enables AVX-VNNI when V, AVX2 always.
        unsafe {
            let (xl, xh) = (_mm256_set1_epi32(xl), _mm256_set1_epi32(xh));
            if V {
                *ia = _mm256_dpbusd_avx_epi32(*ia, lo, xl);
                *ia = _mm256_dpbusd_avx_epi32(*ia, hi, xh);
            } else {
                let p =
                    _mm256_add_epi16(_mm256_maddubs_epi16(lo, xl), _mm256_maddubs_epi16(hi, xh));
                *pa = _mm256_add_epi16(*pa, p);
            }
        }
    }

    /// Add the i16 pair sums of `pa` into the i32 lanes of `ia` and clear `pa` (AVX2 only).
    #[inline(always)]
    unsafe fn flush<const V: bool>(ia: &mut __m256i, pa: &mut __m256i) {
        if !V {
            // SAFETY: the enclosing function enables AVX2.
            unsafe {
                *ia = _mm256_add_epi32(*ia, _mm256_madd_epi16(*pa, _mm256_set1_epi16(1)));
                *pa = _mm256_setzero_si256();
            }
        }
    }

    /// `(v << 4 - c) & 0x10` for c in 0..4 (a 1-bit plane's bit c to bit 4), `(v >> c) & 0x10`
    /// with `HI` (bit 4 + c to bit 4); per byte (16-bit shifts, bits crossing bytes masked).
    #[inline(always)]
    unsafe fn bit5<const HI: bool>(v: __m256i, c: usize) -> __m256i {
        // SAFETY: the enclosing tile function enables AVX2.
        unsafe {
            let m = _mm256_set1_epi8(0x10);
            let s = match (HI, c) {
                (false, 0) => _mm256_slli_epi16(v, 4),
                (false, 1) => _mm256_slli_epi16(v, 3),
                (false, 2) => _mm256_slli_epi16(v, 2),
                (false, _) => _mm256_slli_epi16(v, 1),
                (true, 0) => v,
                (true, 1) => _mm256_srli_epi16(v, 1),
                (true, 2) => _mm256_srli_epi16(v, 2),
                (true, _) => _mm256_srli_epi16(v, 3),
            };
            _mm256_and_si256(s, m)
        }
    }

    /// Bits `2c..2c+2` of each byte moved to bits 4..6 (a 2-bit plane), others zero.
    #[inline(always)]
    unsafe fn bits56(v: __m256i, c: usize) -> __m256i {
        // SAFETY: the enclosing tile function enables AVX2.
        unsafe {
            let m = _mm256_set1_epi8(0x30);
            let s = match c {
                0 => _mm256_slli_epi16(v, 4),
                1 => _mm256_slli_epi16(v, 2),
                2 => v,
                _ => _mm256_srli_epi16(v, 2),
            };
            _mm256_and_si256(s, m)
        }
    }

    /// Store `C` tokens' 8 row results of panel `p`.
    ///
    /// # Safety
    /// AVX enabled by the caller; tokens t0..t0 + C exist and `out` is the job's
    /// `n_tok x rows` output.
    #[inline(always)]
    unsafe fn store<const C: usize>(
        m: &PackedMatrix,
        p: usize,
        t0: usize,
        facc: &[__m256; C],
        out: *mut f32,
    ) {
        let rows = m.rows();
        let r0 = p * W;
        let nr = (rows - r0).min(W);
        for (t, fa) in facc.iter().enumerate() {
            let mut v = [0f32; W];
            // SAFETY: v holds 8 floats; the enclosing function enables AVX.
            unsafe { _mm256_storeu_ps(v.as_mut_ptr(), *fa) };
            for (r, &x) in v.iter().enumerate().take(nr) {
                // SAFETY: t0 + t < n_tok and r0 + r < rows: inside the job's output.
                unsafe { *out.add((t0 + t) * rows + r0 + r) = x };
            }
        }
    }

    /// One panel x `C` tokens (Q4_0, Q4_1, Q5_0, Q8_0).
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
        // t0..t0 + C have nb blocks of quants/d/s inside acts, and `store` writes inside the
        // job's output.
        unsafe {
            let nb = acts.nb;
            let bb = super::block_bytes(m.quant_type(), W);
            let base = m.data.as_ptr().add(p * nb * bb);
            let mask = _mm256_set1_epi8(0x0F);
            let mut facc = [_mm256_setzero_ps(); C];
            for b in 0..nb {
                let blk = base.add(b * bb);
                let d8 = _mm256_cvtph_ps(_mm_loadu_si128(blk.cast()));
                let q = blk.add(4 * W);
                let mut iacc = [_mm256_setzero_si256(); C];
                // Dword k of block b of token t0 + t is at xs + t * xstride + 4k (inside acts.q).
                let xs = acts.q.as_ptr().add((t0 * nb + b) * QK);
                let xstride = nb * QK;
                if F == 8 {
                    for k in 0..8 {
                        let w = _mm256_loadu_si256(q.add(4 * W * k).cast());
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
                    // Q5_0: the fifth bits, one 32-byte plane after the 4 nibble chunks.
                    let hp = if F == 5 {
                        _mm256_loadu_si256(q.add(16 * W).cast())
                    } else {
                        _mm256_setzero_si256()
                    };
                    let mut pacc = [_mm256_setzero_si256(); C];
                    for c in 0..4 {
                        let w = _mm256_loadu_si256(q.add(4 * W * c).cast());
                        let mut lo = _mm256_and_si256(w, mask);
                        let mut hi = _mm256_and_si256(_mm256_srli_epi16(w, 4), mask);
                        if F == 5 {
                            lo = _mm256_or_si256(lo, bit5::<false>(hp, c));
                            hi = _mm256_or_si256(hi, bit5::<true>(hp, c));
                        }
                        for (t, (ia, pa)) in iacc.iter_mut().zip(&mut pacc).enumerate() {
                            let xl = xs.add(t * xstride + 4 * c).cast::<i32>().read_unaligned();
                            let xh = xs
                                .add(t * xstride + 4 * c + 16)
                                .cast::<i32>()
                                .read_unaligned();
                            dot2::<V>(ia, pa, lo, hi, xl, xh);
                            // 5-bit values: widen after every 2 chunks (4 pair sums).
                            if c == 3 || (F == 5 && c == 1) {
                                flush::<V>(ia, pa);
                            }
                        }
                    }
                }
                for (t, (fa, ia)) in facc.iter_mut().zip(iacc).enumerate() {
                    let ai = (t0 + t) * nb + b;
                    let (dx, sx) = (*acts.d.get_unchecked(ai), *acts.s.get_unchecked(ai));
                    let isum = match F {
                        // Q4_0 values are q - 8, Q5_0 q - 16.
                        0 => _mm256_sub_epi32(ia, _mm256_set1_epi32(8 * sx)),
                        5 => _mm256_sub_epi32(ia, _mm256_set1_epi32(16 * sx)),
                        _ => ia,
                    };
                    let scale = _mm256_mul_ps(d8, _mm256_set1_ps(dx));
                    *fa = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(isum), *fa);
                    if F == 1 {
                        let m8 = _mm256_cvtph_ps(_mm_loadu_si128(blk.add(2 * W).cast()));
                        *fa = _mm256_fmadd_ps(m8, _mm256_set1_ps(dx * sx as f32), *fa);
                    }
                }
            }
            store::<C>(m, p, t0, &facc, out);
        }
    }

    /// Q4_K: per super-block `d`, `dmin` and 8 (scale, min) bytes per row; the float work per
    /// 32-value sub-block is `(d * sc) * dx * isum - (dmin * m) * dx * sum(x)`, the same
    /// operations in the same order as the 16-row kernel.
    ///
    /// # Safety
    /// As `tile`.
    #[inline(always)]
    unsafe fn tile_q4k<const V: bool, const C: usize>(
        m: &PackedMatrix,
        p: usize,
        acts: &PackedActs,
        t0: usize,
        out: *mut f32,
    ) {
        // SAFETY: panel p has nb / 8 super-blocks of sb_bytes_w inside m.data; tokens
        // t0..t0 + C have nb blocks inside acts; `store` writes inside the job's output; the
        // caller enables the instructions.
        unsafe {
            let nb = acts.nb;
            let nsb = nb / 8;
            let sbb = super::sb_bytes_w(QuantType::Q4_K, W);
            let base = m.data.as_ptr().add(p * nsb * sbb);
            let mask = _mm256_set1_epi8(0x0F);
            let mut facc = [_mm256_setzero_ps(); C];
            let xstride = nb * QK;
            for sb in 0..nsb {
                let hdr = base.add(sb * sbb);
                let d8 = _mm256_cvtph_ps(_mm_loadu_si128(hdr.cast()));
                let m8 = _mm256_cvtph_ps(_mm_loadu_si128(hdr.add(2 * W).cast()));
                for j in 0..8 {
                    let b = sb * 8 + j;
                    let scj = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(
                        hdr.add(4 * W + W * j).cast(),
                    )));
                    let mnj = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(
                        hdr.add(12 * W + W * j).cast(),
                    )));
                    let dd = _mm256_mul_ps(d8, scj);
                    let mm = _mm256_mul_ps(m8, mnj);
                    let q = hdr.add(20 * W + 16 * W * j);
                    let xs = acts.q.as_ptr().add((t0 * nb + b) * QK);
                    let mut iacc = [_mm256_setzero_si256(); C];
                    let mut pacc = [_mm256_setzero_si256(); C];
                    for c in 0..4 {
                        let w = _mm256_loadu_si256(q.add(4 * W * c).cast());
                        let lo = _mm256_and_si256(w, mask);
                        let hi = _mm256_and_si256(_mm256_srli_epi16(w, 4), mask);
                        for (t, (ia, pa)) in iacc.iter_mut().zip(&mut pacc).enumerate() {
                            let xl = xs.add(t * xstride + 4 * c).cast::<i32>().read_unaligned();
                            let xh = xs
                                .add(t * xstride + 4 * c + 16)
                                .cast::<i32>()
                                .read_unaligned();
                            dot2::<V>(ia, pa, lo, hi, xl, xh);
                            if c == 3 {
                                flush::<V>(ia, pa);
                            }
                        }
                    }
                    for (t, (fa, ia)) in facc.iter_mut().zip(iacc).enumerate() {
                        let ai = (t0 + t) * nb + b;
                        let (dx, sx) = (*acts.d.get_unchecked(ai), *acts.s.get_unchecked(ai));
                        let scale = _mm256_mul_ps(dd, _mm256_set1_ps(dx));
                        *fa = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(ia), *fa);
                        *fa = _mm256_fnmadd_ps(mm, _mm256_set1_ps(dx * sx as f32), *fa);
                    }
                }
            }
            store::<C>(m, p, t0, &facc, out);
        }
    }

    /// Q6_K: per super-block `d` and 16 i8 sub-block scales per row; values `q - 32` with q in
    /// 0..64 (nibble chunks + a 2-bit plane per half block). The super-block's integer sum
    /// `sum_k sc_k * (dot_k - 32 * sum(x_k))` over its 16-value sub-blocks is exact in i32 (the
    /// same value as the 16-row kernel's, however it is grouped), then one float step.
    ///
    /// AVX-VNNI: `vpdpbusd` sums per 16-value sub-block, scaled with `vpmulld` per block. AVX2:
    /// the `vpmaddubsw` pair sums (exact i16) are scaled by `vpmaddwd` against the sub-block
    /// scale instead of ones, so the scaling costs no extra instruction.
    ///
    /// # Safety
    /// As `tile`.
    #[inline(always)]
    unsafe fn tile_q6k<const V: bool, const C: usize>(
        m: &PackedMatrix,
        p: usize,
        acts: &PackedActs,
        t0: usize,
        out: *mut f32,
    ) {
        // SAFETY: as tile_q4k.
        unsafe {
            let nb = acts.nb;
            let nsb = nb / 8;
            let sbb = super::sb_bytes_w(QuantType::Q6_K, W);
            let base = m.data.as_ptr().add(p * nsb * sbb);
            let mask = _mm256_set1_epi8(0x0F);
            let mut facc = [_mm256_setzero_ps(); C];
            let xstride = nb * QK;
            for sb in 0..nsb {
                let hdr = base.add(sb * sbb);
                let d8 = _mm256_cvtph_ps(_mm_loadu_si128(hdr.cast()));
                let mut sacc = [_mm256_setzero_si256(); C];
                for j in 0..8 {
                    let b = sb * 8 + j;
                    // Row r's scales of the block's two 16-value halves, as bytes.
                    let sa = _mm_loadl_epi64(hdr.add(2 * W + 2 * W * j).cast());
                    let sb8 = _mm_loadl_epi64(hdr.add(3 * W + 2 * W * j).cast());
                    // i16 pairs (sa_r, sb_r) in dword r: `vpmaddwd` against the pairs
                    // (sum of the first half's x, of the second half's) gives the offset term.
                    let sab = _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(sa, sb8));
                    let area = hdr.add(18 * W + 24 * W * j);
                    let h0 = _mm256_loadu_si256(area.add(16 * W).cast());
                    let h1 = _mm256_loadu_si256(area.add(20 * W).cast());
                    let xs = acts.q.as_ptr().add((t0 * nb + b) * QK);
                    if V {
                        let sca = _mm256_cvtepi8_epi32(sa);
                        let scb = _mm256_cvtepi8_epi32(sb8);
                        let mut ia = [_mm256_setzero_si256(); C];
                        let mut ib = [_mm256_setzero_si256(); C];
                        for c in 0..4 {
                            let w = _mm256_loadu_si256(area.add(4 * W * c).cast());
                            let lo = _mm256_or_si256(_mm256_and_si256(w, mask), bits56(h0, c));
                            let hi = _mm256_or_si256(
                                _mm256_and_si256(_mm256_srli_epi16(w, 4), mask),
                                bits56(h1, c),
                            );
                            for t in 0..C {
                                let xl = xs.add(t * xstride + 4 * c).cast::<i32>().read_unaligned();
                                let xh = xs
                                    .add(t * xstride + 4 * c + 16)
                                    .cast::<i32>()
                                    .read_unaligned();
                                ia[t] = dot::<true>(ia[t], lo, _mm256_set1_epi32(xl));
                                ib[t] = dot::<true>(ib[t], hi, _mm256_set1_epi32(xh));
                            }
                        }
                        for t in 0..C {
                            let s = _mm256_add_epi32(
                                _mm256_mullo_epi32(sca, ia[t]),
                                _mm256_mullo_epi32(scb, ib[t]),
                            );
                            sacc[t] = _mm256_add_epi32(sacc[t], s);
                        }
                    } else {
                        // Each row's scale in both i16 halves of its dword.
                        let sa16 = _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(sa, sa));
                        let sb16 = _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(sb8, sb8));
                        // Two chunks at a time: two pair sums of 6-bit values (at most
                        // 2 x 16128 = 32256) still fit i16, so one `vpmaddwd` widens both.
                        for c in [0, 2] {
                            let w0 = _mm256_loadu_si256(area.add(4 * W * c).cast());
                            let w1 = _mm256_loadu_si256(area.add(4 * W * (c + 1)).cast());
                            let lo0 = _mm256_or_si256(_mm256_and_si256(w0, mask), bits56(h0, c));
                            let lo1 =
                                _mm256_or_si256(_mm256_and_si256(w1, mask), bits56(h0, c + 1));
                            let hi0 = _mm256_or_si256(
                                _mm256_and_si256(_mm256_srli_epi16(w0, 4), mask),
                                bits56(h1, c),
                            );
                            let hi1 = _mm256_or_si256(
                                _mm256_and_si256(_mm256_srli_epi16(w1, 4), mask),
                                bits56(h1, c + 1),
                            );
                            for (t, sa_t) in sacc.iter_mut().enumerate() {
                                let x = |o: usize| {
                                    _mm256_set1_epi32(
                                        xs.add(t * xstride + o).cast::<i32>().read_unaligned(),
                                    )
                                };
                                let pl = _mm256_add_epi16(
                                    _mm256_maddubs_epi16(lo0, x(4 * c)),
                                    _mm256_maddubs_epi16(lo1, x(4 * c + 4)),
                                );
                                let ph = _mm256_add_epi16(
                                    _mm256_maddubs_epi16(hi0, x(4 * c + 16)),
                                    _mm256_maddubs_epi16(hi1, x(4 * c + 20)),
                                );
                                *sa_t = _mm256_add_epi32(
                                    *sa_t,
                                    _mm256_add_epi32(
                                        _mm256_madd_epi16(pl, sa16),
                                        _mm256_madd_epi16(ph, sb16),
                                    ),
                                );
                            }
                        }
                    }
                    // The values are q - 32: subtract 32 x (sa * sum(x of the first half)
                    // + sb * sum(x of the second half)), exact in i32.
                    for (t, sa_t) in sacc.iter_mut().enumerate() {
                        let ai = (t0 + t) * nb + b;
                        let (sx, hx) = (*acts.s.get_unchecked(ai), *acts.h.get_unchecked(ai));
                        // Both half sums fit i16 (|sum| <= 16 x 128).
                        let xp = (hx as u32 & 0xFFFF) | (((sx - hx) as u32) << 16);
                        let off = _mm256_madd_epi16(sab, _mm256_set1_epi32(xp as i32));
                        *sa_t = _mm256_sub_epi32(*sa_t, _mm256_slli_epi32(off, 5));
                    }
                }
                // One float step per super-block (Q8_K: one activation scale per 256 values).
                for (t, (fa, sa_t)) in facc.iter_mut().zip(sacc).enumerate() {
                    let dx = *acts.d.get_unchecked((t0 + t) * nb + sb * 8);
                    let scale = _mm256_mul_ps(d8, _mm256_set1_ps(dx));
                    *fa = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(sa_t), *fa);
                }
            }
            store::<C>(m, p, t0, &facc, out);
        }
    }
}

/// 16-row panels with 512-bit `vpdpbusd`: the 8-row kernel's arithmetic on twice the rows per
/// instruction. The integer block sums are the same exact values (Q8_0 weights are stored as
/// `q + 128` and the kernel subtracts `128 * sum(x)`), and the float work per (row, token,
/// block) is the same instruction sequence, so results equal the 8-row kernels' bit for bit.
#[cfg(target_arch = "x86_64")]
mod x86_512 {
    use super::{PackedActs, PackedMatrix, QK};
    use crate::quant::QuantType;
    use std::arch::x86_64::*;

    const W: usize = 16;
    /// Tokens per register tile (32 zmm registers: 2 x 8 accumulators, weights, scales).
    const TILE: usize = 8;

    /// Panels `p0..p1` of `m` (16-row panels) against every token of `acts`.
    ///
    /// # Safety
    /// AVX-512 F/BW/VNNI + AVX2/FMA/F16C present; bounds as in `matmul_packed_with`.
    pub(super) unsafe fn panels(
        m: &PackedMatrix,
        p0: usize,
        p1: usize,
        acts: &PackedActs,
        out: *mut f32,
    ) {
        // SAFETY: forwarded contract.
        unsafe {
            match m.quant_type() {
                QuantType::Q4_0 => run::<0, TILE>(m, p0, p1, acts, out),
                QuantType::Q4_1 => run::<1, TILE>(m, p0, p1, acts, out),
                QuantType::Q5_0 => run::<5, TILE>(m, p0, p1, acts, out),
                QuantType::Q4_K => run::<40, TILE>(m, p0, p1, acts, out),
                QuantType::Q6_K => run::<60, 4>(m, p0, p1, acts, out),
                _ => run::<8, TILE>(m, p0, p1, acts, out),
            }
        }
    }

    /// # Safety
    /// As `panels`; `F` is 0 (Q4_0), 1 (Q4_1), 5 (Q5_0), 8 (Q8_0), 40 (Q4_K) or 60 (Q6_K)
    /// matching `m`; `T` (<= 8) tokens per tile at most.
    unsafe fn run<const F: u32, const T: usize>(
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
                let c = (n_tok - t0).min(T);
                // SAFETY: forwarded; tokens t0..t0+c exist.
                unsafe {
                    match c {
                        1 => dispatch::<F, 1>(m, p, acts, t0, out),
                        2 => dispatch::<F, 2>(m, p, acts, t0, out),
                        3 => dispatch::<F, 3>(m, p, acts, t0, out),
                        4 => dispatch::<F, 4>(m, p, acts, t0, out),
                        5 => dispatch::<F, 5>(m, p, acts, t0, out),
                        6 => dispatch::<F, 6>(m, p, acts, t0, out),
                        7 => dispatch::<F, 7>(m, p, acts, t0, out),
                        _ => dispatch::<F, 8>(m, p, acts, t0, out),
                    }
                }
                t0 += c;
            }
        }
    }

    /// # Safety
    /// As `tile`.
    #[inline(always)]
    unsafe fn dispatch<const F: u32, const C: usize>(
        m: &PackedMatrix,
        p: usize,
        acts: &PackedActs,
        t0: usize,
        out: *mut f32,
    ) {
        // SAFETY: forwarded.
        unsafe {
            match F {
                40 => tile_q4k::<C>(m, p, acts, t0, out),
                60 => tile_q6k::<C>(m, p, acts, t0, out),
                _ => tile::<F, C>(m, p, acts, t0, out),
            }
        }
    }

    /// `(v << 4 - c) & 0x10` for c in 0..4 (a 1-bit plane's bit c to bit 4), `(v >> c) & 0x10`
    /// with `HI` (bit 4 + c to bit 4); per byte (16-bit shifts, bits crossing bytes masked).
    #[inline(always)]
    unsafe fn bit5<const HI: bool>(v: __m512i, c: usize) -> __m512i {
        // SAFETY: the enclosing tile function enables AVX-512 BW.
        unsafe {
            let m = _mm512_set1_epi8(0x10);
            let s = match (HI, c) {
                (false, 0) => _mm512_slli_epi16(v, 4),
                (false, 1) => _mm512_slli_epi16(v, 3),
                (false, 2) => _mm512_slli_epi16(v, 2),
                (false, _) => _mm512_slli_epi16(v, 1),
                (true, 0) => v,
                (true, 1) => _mm512_srli_epi16(v, 1),
                (true, 2) => _mm512_srli_epi16(v, 2),
                (true, _) => _mm512_srli_epi16(v, 3),
            };
            _mm512_and_si512(s, m)
        }
    }

    /// Bits `2c..2c+2` of each byte moved to bits 4..6 (a 2-bit plane), others zero.
    #[inline(always)]
    unsafe fn bits56(v: __m512i, c: usize) -> __m512i {
        // SAFETY: the enclosing tile function enables AVX-512 BW.
        unsafe {
            let m = _mm512_set1_epi8(0x30);
            let s = match c {
                0 => _mm512_slli_epi16(v, 4),
                1 => _mm512_slli_epi16(v, 2),
                2 => v,
                _ => _mm512_srli_epi16(v, 2),
            };
            _mm512_and_si512(s, m)
        }
    }

    /// One 16-row panel x `C` tokens.
    ///
    /// # Safety
    /// AVX-512 F/BW/VNNI + AVX2/FMA/F16C; panel `p` and tokens `t0..t0 + C` exist; `out` as in
    /// `matmul_packed_with`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    unsafe fn tile<const F: u32, const C: usize>(
        m: &PackedMatrix,
        p: usize,
        acts: &PackedActs,
        t0: usize,
        out: *mut f32,
    ) {
        // SAFETY: panel p has nb blocks of bb bytes inside m.data; tokens t0..t0 + C have nb
        // blocks of quants/d/s inside acts; the rows written are inside the job's output.
        unsafe {
            let nb = acts.nb;
            let bb = super::block_bytes(m.quant_type(), W);
            let base = m.data.as_ptr().add(p * nb * bb);
            let mask = _mm512_set1_epi8(0x0F);
            let mut facc = [_mm512_setzero_ps(); C];
            let xstride = nb * QK;
            for b in 0..nb {
                let blk = base.add(b * bb);
                let d16 = _mm512_cvtph_ps(_mm256_loadu_si256(blk.cast()));
                let q = blk.add(4 * W);
                let mut iacc = [_mm512_setzero_si512(); C];
                // Dword k of block b of token t0 + t is at xs + t * xstride + 4k.
                let xs = acts.q.as_ptr().add((t0 * nb + b) * QK);
                if F == 8 {
                    for k in 0..8 {
                        let w = _mm512_loadu_si512(q.add(4 * W * k).cast());
                        for (t, ia) in iacc.iter_mut().enumerate() {
                            let x = _mm512_set1_epi32(
                                xs.add(t * xstride + 4 * k).cast::<i32>().read_unaligned(),
                            );
                            *ia = _mm512_dpbusd_epi32(*ia, w, x);
                        }
                    }
                } else {
                    let hp = if F == 5 {
                        _mm512_loadu_si512(q.add(256).cast())
                    } else {
                        _mm512_setzero_si512()
                    };
                    for c in 0..4 {
                        let w = _mm512_loadu_si512(q.add(4 * W * c).cast());
                        let (lo, hi) = if F == 5 {
                            // (w & 0x0F) | fifth bit, via one ternary-logic op each.
                            (
                                _mm512_ternarylogic_epi32::<0xEA>(w, mask, bit5::<false>(hp, c)),
                                _mm512_ternarylogic_epi32::<0xEA>(
                                    _mm512_srli_epi16(w, 4),
                                    mask,
                                    bit5::<true>(hp, c),
                                ),
                            )
                        } else {
                            (
                                _mm512_and_si512(w, mask),
                                _mm512_and_si512(_mm512_srli_epi16(w, 4), mask),
                            )
                        };
                        for (t, ia) in iacc.iter_mut().enumerate() {
                            let xl = xs.add(t * xstride + 4 * c).cast::<i32>().read_unaligned();
                            let xh = xs
                                .add(t * xstride + 4 * c + 16)
                                .cast::<i32>()
                                .read_unaligned();
                            *ia = _mm512_dpbusd_epi32(*ia, lo, _mm512_set1_epi32(xl));
                            *ia = _mm512_dpbusd_epi32(*ia, hi, _mm512_set1_epi32(xh));
                        }
                    }
                }
                for (t, (fa, ia)) in facc.iter_mut().zip(iacc).enumerate() {
                    let ai = (t0 + t) * nb + b;
                    let (dx, sx) = (*acts.d.get_unchecked(ai), *acts.s.get_unchecked(ai));
                    let isum = match F {
                        // Q4_0 values are q - 8, Q5_0 q - 16; Q8_0 quants are stored as q + 128.
                        0 => _mm512_sub_epi32(ia, _mm512_set1_epi32(8 * sx)),
                        5 => _mm512_sub_epi32(ia, _mm512_set1_epi32(16 * sx)),
                        8 => _mm512_sub_epi32(ia, _mm512_set1_epi32(128 * sx)),
                        _ => ia,
                    };
                    let scale = _mm512_mul_ps(d16, _mm512_set1_ps(dx));
                    *fa = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(isum), *fa);
                    if F == 1 {
                        let m16 = _mm512_cvtph_ps(_mm256_loadu_si256(blk.add(2 * W).cast()));
                        *fa = _mm512_fmadd_ps(m16, _mm512_set1_ps(dx * sx as f32), *fa);
                    }
                }
            }
            let rows = m.rows();
            let r0 = p * W;
            let nr = (rows - r0).min(W);
            for (t, fa) in facc.iter().enumerate() {
                let mut v = [0f32; W];
                _mm512_storeu_ps(v.as_mut_ptr(), *fa);
                for (r, &x) in v.iter().enumerate().take(nr) {
                    // SAFETY: t0 + t < n_tok and r0 + r < rows: inside the job's output.
                    *out.add((t0 + t) * rows + r0 + r) = x;
                }
            }
        }
    }
    /// Store `C` tokens' 16 row results of panel `p`.
    ///
    /// # Safety
    /// Tokens t0..t0 + C exist and `out` is the job's `n_tok x rows` output.
    #[inline(always)]
    unsafe fn store<const C: usize>(
        m: &PackedMatrix,
        p: usize,
        t0: usize,
        facc: &[__m512; C],
        out: *mut f32,
    ) {
        let rows = m.rows();
        let r0 = p * W;
        let nr = (rows - r0).min(W);
        for (t, fa) in facc.iter().enumerate() {
            let mut v = [0f32; W];
            // SAFETY: v holds 16 floats; the enclosing function enables AVX-512 F.
            unsafe { _mm512_storeu_ps(v.as_mut_ptr(), *fa) };
            for (r, &x) in v.iter().enumerate().take(nr) {
                // SAFETY: t0 + t < n_tok and r0 + r < rows: inside the job's output.
                unsafe { *out.add((t0 + t) * rows + r0 + r) = x };
            }
        }
    }

    /// Q4_K: per super-block `d`, `dmin` and 8 (scale, min) bytes per row; the float work per
    /// 32-value sub-block is `(d * sc) * dx * isum - (dmin * m) * dx * sum(x)`.
    ///
    /// # Safety
    /// As `tile`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    unsafe fn tile_q4k<const C: usize>(
        m: &PackedMatrix,
        p: usize,
        acts: &PackedActs,
        t0: usize,
        out: *mut f32,
    ) {
        // SAFETY: panel p has nb / 8 super-blocks of sb_bytes inside m.data; tokens t0..t0 + C
        // have nb blocks inside acts; `store` writes inside the job's output.
        unsafe {
            let nb = acts.nb;
            let nsb = nb / 8;
            let sbb = super::sb_bytes(QuantType::Q4_K);
            let base = m.data.as_ptr().add(p * nsb * sbb);
            let mask = _mm512_set1_epi8(0x0F);
            let mut facc = [_mm512_setzero_ps(); C];
            let xstride = nb * QK;
            for sb in 0..nsb {
                let hdr = base.add(sb * sbb);
                let d16 = _mm512_cvtph_ps(_mm256_loadu_si256(hdr.cast()));
                let m16 = _mm512_cvtph_ps(_mm256_loadu_si256(hdr.add(32).cast()));
                for j in 0..8 {
                    let b = sb * 8 + j;
                    let scj = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(
                        hdr.add(64 + 16 * j).cast(),
                    )));
                    let mnj = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(
                        hdr.add(192 + 16 * j).cast(),
                    )));
                    let dd = _mm512_mul_ps(d16, scj);
                    let mm = _mm512_mul_ps(m16, mnj);
                    let q = hdr.add(320 + 256 * j);
                    let xs = acts.q.as_ptr().add((t0 * nb + b) * QK);
                    let mut iacc = [_mm512_setzero_si512(); C];
                    for c in 0..4 {
                        let w = _mm512_loadu_si512(q.add(64 * c).cast());
                        let lo = _mm512_and_si512(w, mask);
                        let hi = _mm512_and_si512(_mm512_srli_epi16(w, 4), mask);
                        for (t, ia) in iacc.iter_mut().enumerate() {
                            let xl = xs.add(t * xstride + 4 * c).cast::<i32>().read_unaligned();
                            let xh = xs
                                .add(t * xstride + 4 * c + 16)
                                .cast::<i32>()
                                .read_unaligned();
                            *ia = _mm512_dpbusd_epi32(*ia, lo, _mm512_set1_epi32(xl));
                            *ia = _mm512_dpbusd_epi32(*ia, hi, _mm512_set1_epi32(xh));
                        }
                    }
                    for (t, (fa, ia)) in facc.iter_mut().zip(iacc).enumerate() {
                        let ai = (t0 + t) * nb + b;
                        let (dx, sx) = (*acts.d.get_unchecked(ai), *acts.s.get_unchecked(ai));
                        let scale = _mm512_mul_ps(dd, _mm512_set1_ps(dx));
                        *fa = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(ia), *fa);
                        *fa = _mm512_fnmadd_ps(mm, _mm512_set1_ps(dx * sx as f32), *fa);
                    }
                }
            }
            store::<C>(m, p, t0, &facc, out);
        }
    }

    /// Q6_K: per super-block `d` and 16 i8 sub-block scales per row; values `q - 32` with q in
    /// 0..64 (nibble chunks + a 2-bit plane per half block). Per 32-value block the two 16-value
    /// sub-blocks' integer sums are scaled and added exactly in i32, then one float step.
    ///
    /// # Safety
    /// As `tile`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    unsafe fn tile_q6k<const C: usize>(
        m: &PackedMatrix,
        p: usize,
        acts: &PackedActs,
        t0: usize,
        out: *mut f32,
    ) {
        // SAFETY: as tile_q4k.
        unsafe {
            let nb = acts.nb;
            let nsb = nb / 8;
            let sbb = super::sb_bytes(QuantType::Q6_K);
            let base = m.data.as_ptr().add(p * nsb * sbb);
            let mask = _mm512_set1_epi8(0x0F);
            let mut facc = [_mm512_setzero_ps(); C];
            let xstride = nb * QK;
            for sb in 0..nsb {
                let hdr = base.add(sb * sbb);
                let d16 = _mm512_cvtph_ps(_mm256_loadu_si256(hdr.cast()));
                let mut sacc = [_mm512_setzero_si512(); C];
                for j in 0..8 {
                    let b = sb * 8 + j;
                    let sca = _mm512_cvtepi8_epi32(_mm_loadu_si128(hdr.add(32 + 32 * j).cast()));
                    let scb = _mm512_cvtepi8_epi32(_mm_loadu_si128(hdr.add(48 + 32 * j).cast()));
                    let area = hdr.add(288 + 384 * j);
                    let h0 = _mm512_loadu_si512(area.add(256).cast());
                    let h1 = _mm512_loadu_si512(area.add(320).cast());
                    let xs = acts.q.as_ptr().add((t0 * nb + b) * QK);
                    let mut ia = [_mm512_setzero_si512(); C];
                    let mut ib = [_mm512_setzero_si512(); C];
                    for c in 0..4 {
                        let w = _mm512_loadu_si512(area.add(64 * c).cast());
                        let lo = _mm512_ternarylogic_epi32::<0xEA>(w, mask, bits56(h0, c));
                        let hi = _mm512_ternarylogic_epi32::<0xEA>(
                            _mm512_srli_epi16(w, 4),
                            mask,
                            bits56(h1, c),
                        );
                        for t in 0..C {
                            let xl = xs.add(t * xstride + 4 * c).cast::<i32>().read_unaligned();
                            let xh = xs
                                .add(t * xstride + 4 * c + 16)
                                .cast::<i32>()
                                .read_unaligned();
                            ia[t] = _mm512_dpbusd_epi32(ia[t], lo, _mm512_set1_epi32(xl));
                            ib[t] = _mm512_dpbusd_epi32(ib[t], hi, _mm512_set1_epi32(xh));
                        }
                    }
                    for t in 0..C {
                        let ai = (t0 + t) * nb + b;
                        let (sx, hx) = (*acts.s.get_unchecked(ai), *acts.h.get_unchecked(ai));
                        let a = _mm512_sub_epi32(ia[t], _mm512_set1_epi32(32 * hx));
                        let bb = _mm512_sub_epi32(ib[t], _mm512_set1_epi32(32 * (sx - hx)));
                        sacc[t] = _mm512_add_epi32(
                            sacc[t],
                            _mm512_add_epi32(
                                _mm512_mullo_epi32(sca, a),
                                _mm512_mullo_epi32(scb, bb),
                            ),
                        );
                    }
                }
                // One float step per super-block (Q8_K: one activation scale per 256 values).
                for t in 0..C {
                    let dx = *acts.d.get_unchecked((t0 + t) * nb + sb * 8);
                    let scale = _mm512_mul_ps(d16, _mm512_set1_ps(dx));
                    facc[t] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(sacc[t]), facc[t]);
                }
            }
            store::<C>(m, p, t0, &facc, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of activations with the cases the quantizers must agree on: ties at .5 after
    /// scaling, zero blocks, the largest magnitude repeated with both signs, tiny values.
    fn rows(n: usize, seed: u64) -> Vec<f32> {
        let mut st = seed;
        let mut next = || {
            st = st
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((st >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
        };
        let mut x: Vec<f32> = (0..n).map(|_| next() * 3.0).collect();
        // A zero block, a block of exact halves, +/-max pairs, denormal-sized values.
        x[..32].fill(0.0);
        for (i, v) in x[32..64].iter_mut().enumerate() {
            *v = (i as f32 - 16.0) + 0.5;
        }
        x[70] = 5.0;
        x[71] = -5.0;
        x[300] = -7.25;
        x[301] = 7.25;
        for v in &mut x[512..544] {
            *v *= 1e-30;
        }
        x
    }

    #[test]
    fn vector_quantizers_match_scalar_bitwise() {
        if !available() {
            return;
        }
        let cols = 1024;
        for seed in 1..6u64 {
            let x = rows(cols * 3, seed);
            let nb = x.len() / QK;
            for kq in [false, true] {
                let (mut q1, mut d1, mut s1, mut h1) = (
                    vec![0i8; nb * QK],
                    vec![0f32; nb],
                    vec![0i32; nb],
                    vec![0i32; nb],
                );
                let (mut q2, mut d2, mut s2, mut h2) =
                    (q1.clone(), d1.clone(), s1.clone(), h1.clone());
                quantize_rows(kq, &x, &mut q1, &mut d1, &mut s1, &mut h1);
                if kq {
                    quantize_k_blocks(&x, &mut q2, &mut d2, &mut s2, &mut h2);
                } else {
                    quantize_blocks(&x, &mut q2, &mut d2, &mut s2, &mut h2);
                }
                assert_eq!(q1, q2, "quants kq={kq} seed={seed}");
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&d1), bits(&d2), "scales kq={kq} seed={seed}");
                assert_eq!(s1, s2, "sums kq={kq} seed={seed}");
                assert_eq!(h1, h2, "half sums kq={kq} seed={seed}");
            }
        }
    }
}
