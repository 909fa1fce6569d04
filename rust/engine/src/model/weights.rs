//! Weight views. Matrices stay in the mmap (borrowed at use, never copied); the small
//! per-channel vectors (norm weights) are dequantized to f32 once at load.

use crate::error::{EngineError, Result};
use crate::gguf::{GgufFile, TensorInfo};
use std::sync::Arc;

use hologram_kernels::packed::{self, PackedKernel, PackedMatrix};
use hologram_kernels::{Isa, QuantType};

/// A matrix `(rows, cols)` stored row-major in the file (GGUF `ne = [cols, rows]`).
#[derive(Clone, Debug)]
pub struct Linear {
    pub info: TensorInfo,
    pub ttype: QuantType,
    pub rows: usize,
    pub cols: usize,
    /// The matrix repacked into interleaved row panels (x86: 16 rows for AVX-512 VNNI, 8 for
    /// AVX2 / AVX-VNNI; the formats the packed kernel runs): then every matmul reads this
    /// copy, never the mapped bytes.
    pub packed: Option<Arc<PackedMatrix>>,
}

impl Linear {
    /// Look up `name` and check its shape is `[cols, rows]` and its type is one the kernels run.
    pub fn load(f: &GgufFile, name: &str, cols: usize, rows: usize) -> Result<Self> {
        let t = f.tensor(name).ok_or_else(|| {
            EngineError::invalid_model(format!("required tensor {name} is missing"))
        })?;
        Self::from_info(t, cols, rows)
    }

    pub fn load_opt(f: &GgufFile, name: &str, cols: usize, rows: usize) -> Result<Option<Self>> {
        f.tensor(name)
            .map(|t| Self::from_info(t, cols, rows))
            .transpose()
    }

    /// Rows `start..start + len` of the `(total_rows, cols)` matrix `name`, as a matrix of its
    /// own: the parts of a fused tensor (q, k, v of `attn_qkv`; gate and up of phi3's
    /// `ffn_up`). Zero-copy: the view's tensor info points at the rows' bytes in the file.
    pub fn load_rows(
        f: &GgufFile,
        name: &str,
        cols: usize,
        total_rows: usize,
        start: usize,
        len: usize,
    ) -> Result<Self> {
        let whole = Self::load(f, name, cols, total_rows)?;
        whole.rows_view(start, len)
    }

    fn rows_view(&self, start: usize, len: usize) -> Result<Self> {
        let bad = || {
            EngineError::invalid_model(format!(
                "tensor {}: rows {start}..{} of {} do not form a matrix",
                self.info.name,
                start.saturating_add(len),
                self.rows
            ))
        };
        let end = start.checked_add(len).ok_or_else(bad)?;
        if len == 0 || end > self.rows {
            return Err(bad());
        }
        let rb = self.ttype.row_bytes(self.cols).ok_or_else(bad)?;
        if rb.checked_mul(self.rows) != usize::try_from(self.info.nbytes).ok() {
            return Err(bad());
        }
        let mut info = self.info.clone();
        info.offset += (start * rb) as u64;
        info.nbytes = (len * rb) as u64;
        info.dims = vec![self.cols as u64, len as u64];
        info.name = format!("{}[{start}..{end}]", self.info.name);
        Ok(Linear {
            info,
            ttype: self.ttype,
            rows: len,
            cols: self.cols,
            packed: None,
        })
    }

    fn from_info(t: &TensorInfo, cols: usize, rows: usize) -> Result<Self> {
        let dims: Vec<u64> = t.dims.to_vec();
        let ok = dims.len() == 2 && dims[0] == cols as u64 && dims[1] == rows as u64
            || dims.len() == 1 && rows == 1 && dims[0] == cols as u64;
        if !ok {
            return Err(EngineError::invalid_model(format!(
                "tensor {} has shape {:?}, expected [{cols}, {rows}]",
                t.name, dims
            )));
        }
        if !supported(t.ttype) {
            return Err(EngineError::Unsupported(format!(
                "tensor {} has type {}, which hologram cannot compute with yet",
                t.name,
                t.ttype.name()
            )));
        }
        Ok(Linear {
            info: t.clone(),
            ttype: t.ttype,
            rows,
            cols,
            packed: None,
        })
    }

    /// Repack the matrix for the packed kernel when this machine runs it (AVX2 is the active
    /// kernel tier and the format is supported; `HOLOGRAM_NO_PACK` set turns packing off, for
    /// side-by-side measurements). The mapped pages are released afterwards: matmuls never
    /// read them again (row lookups of an embedding table fault in only the rows they read).
    pub fn pack(&mut self, f: &GgufFile) -> Result<()> {
        if self.packed.is_some()
            || !packing_enabled()
            || !PackedMatrix::supports_kernel(self.ttype, PackedKernel::preferred())
        {
            return Ok(());
        }
        // The source pages are dropped as the packing passes them (a large matrix, e.g. a
        // 262k-row embedding table, is then never resident twice).
        let rb = self.row_bytes();
        let mut released = 0usize;
        let mut done = |r: usize| {
            let upto = r.saturating_mul(rb);
            f.release_tensor_range(&self.info, released, upto);
            released = released.max(upto);
        };
        let m = PackedMatrix::pack_with_progress(
            self.bytes(f),
            self.ttype,
            self.rows,
            self.cols,
            &mut done,
        )
        .map_err(|e| EngineError::invalid_model(format!("{}: {e}", self.info.name)))?;
        self.packed = Some(Arc::new(m));
        f.release_tensor_pages(&self.info);
        Ok(())
    }

    #[inline]
    pub fn bytes<'f>(&self, f: &'f GgufFile) -> &'f [u8] {
        f.tensor_data(&self.info)
    }

    /// Bytes of one row.
    #[inline]
    pub fn row_bytes(&self) -> usize {
        self.info.nbytes as usize / self.rows.max(1)
    }

    /// Dequantize row `r` into `out` (embedding lookup).
    pub fn dequantize_row(&self, f: &GgufFile, r: usize, out: &mut [f32]) -> Result<()> {
        if let Some(pm) = &self.packed {
            // From the packed copy where its format allows (the source pages stay released).
            let err = |e| EngineError::InvalidArgument(format!("{}: {e}", self.info.name));
            if pm.dequantize_row(r, out).map_err(err)? {
                return Ok(());
            }
        }
        let rb = self.row_bytes();
        let data = self.bytes(f);
        let src = data.get(r * rb..(r + 1) * rb).ok_or_else(|| {
            EngineError::InvalidArgument(format!("row {r} out of range for {}", self.info.name))
        })?;
        hologram_kernels::dequantize_row(self.ttype, src, out)
            .map_err(|e| EngineError::InvalidArgument(format!("{}: {e}", self.info.name)))
    }
}

/// Whether weight matrices are repacked at load on this machine (see [`Linear::pack`]; which
/// formats: [`PackedMatrix::supports_kernel`] with [`PackedKernel::preferred`]): the packed
/// kernel runs here, the active tier is AVX2 or AVX-512 and `HOLOGRAM_NO_PACK` is unset.
pub fn packing_enabled() -> bool {
    std::env::var_os("HOLOGRAM_NO_PACK").is_none()
        && packed::available()
        && matches!(hologram_kernels::simd::active(), Isa::Avx2 | Isa::Avx512)
}

/// A vector of `n` values (norm weights, biases), dequantized to f32.
pub fn load_vector(f: &GgufFile, name: &str, n: usize) -> Result<Vec<f32>> {
    let t = f
        .tensor(name)
        .ok_or_else(|| EngineError::invalid_model(format!("required tensor {name} is missing")))?;
    load_vector_info(f, t, n)
}

pub fn load_vector_opt(f: &GgufFile, name: &str, n: usize) -> Result<Option<Vec<f32>>> {
    f.tensor(name)
        .map(|t| load_vector_info(f, t, n))
        .transpose()
}

fn load_vector_info(f: &GgufFile, t: &TensorInfo, n: usize) -> Result<Vec<f32>> {
    if t.n_elements() != n as u64 || t.dims.iter().filter(|&&d| d != 1).count() > 1 {
        return Err(EngineError::invalid_model(format!(
            "tensor {} has shape {:?}, expected [{n}]",
            t.name, t.dims
        )));
    }
    let mut out = vec![0f32; n];
    hologram_kernels::dequantize_row(t.ttype, f.tensor_data(t), &mut out)
        .map_err(|e| EngineError::invalid_model(format!("{}: {e}", t.name)))?;
    Ok(out)
}

/// Whether the kernels can compute with weights of type `t` (dequantize and matmul).
fn supported(t: QuantType) -> bool {
    hologram_kernels::supports(t)
}

/// Tensor lookups of one model load, remembering every tensor read so that the loader can
/// refuse a file with tensors its architecture does not use (llama.cpp's "wrong number of
/// tensors"): an unread tensor means a variant the code does not implement, which would
/// otherwise run silently wrong (e.g. a `rope_freqs.weight` nobody applies).
pub struct Tensors<'f> {
    pub f: &'f GgufFile,
    used: std::collections::HashSet<String>,
}

impl<'f> Tensors<'f> {
    pub fn new(f: &'f GgufFile) -> Self {
        Tensors {
            f,
            used: Default::default(),
        }
    }

    pub fn has(&self, name: &str) -> bool {
        self.f.tensor(name).is_some()
    }

    fn mark(&mut self, name: &str) {
        self.used.insert(name.to_string());
    }

    /// The `(rows, cols)` matrix `name`.
    pub fn matrix(&mut self, name: &str, cols: usize, rows: usize) -> Result<Linear> {
        self.mark(name);
        Linear::load(self.f, name, cols, rows)
    }

    pub fn matrix_opt(&mut self, name: &str, cols: usize, rows: usize) -> Result<Option<Linear>> {
        if !self.has(name) {
            return Ok(None);
        }
        self.matrix(name, cols, rows).map(Some)
    }

    /// Consecutive row blocks of the matrix `name` (`cols` wide, `parts` rows each), each a
    /// matrix of its own (see [`Linear::load_rows`]).
    pub fn matrix_parts<const K: usize>(
        &mut self,
        name: &str,
        cols: usize,
        parts: [usize; K],
    ) -> Result<[Linear; K]> {
        self.mark(name);
        let total: usize = parts.iter().sum();
        let whole = Linear::load(self.f, name, cols, total)?;
        let mut start = 0;
        let mut out = Vec::with_capacity(K);
        for len in parts {
            out.push(whole.rows_view(start, len)?);
            start += len;
        }
        out.try_into()
            .map_err(|_| EngineError::Internal(format!("{name}: split into {K} parts")))
    }

    /// A vector of `n` values (norm weights, biases), dequantized to f32.
    pub fn vector(&mut self, name: &str, n: usize) -> Result<Vec<f32>> {
        self.mark(name);
        load_vector(self.f, name, n)
    }

    pub fn vector_opt(&mut self, name: &str, n: usize) -> Result<Option<Vec<f32>>> {
        if !self.has(name) {
            return Ok(None);
        }
        self.vector(name, n).map(Some)
    }

    /// Error if the file holds a tensor that was never read.
    pub fn check_all_used(&self, arch: &str) -> Result<()> {
        let unused: Vec<&str> = self
            .f
            .tensors()
            .iter()
            .map(|t| t.name.as_str())
            .filter(|n| !self.used.contains(*n))
            .collect();
        if unused.is_empty() {
            return Ok(());
        }
        let shown = unused
            .iter()
            .take(4)
            .copied()
            .collect::<Vec<_>>()
            .join(", ");
        Err(EngineError::invalid_model(format!(
            "{} tensor(s) that the {arch} architecture does not use: {shown}{}",
            unused.len(),
            if unused.len() > 4 { ", ..." } else { "" }
        )))
    }
}
