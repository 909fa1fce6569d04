//! GGUF container reader (versions 2 and 3, little-endian) over a read-only memory map.
//!
//! May import: std, memmap2, hologram-kernels (`QuantType`), the engine error type.
//! Upstream reference: ggml-org/llama.cpp `ggml/src/gguf.cpp` (`gguf_init_from_file_impl`) and the
//! file-bounds check of `src/llama-model-loader.cpp` (`llama_tensor_weight`); the format is
//! `ggml/docs/gguf.md`. The hardening follows docs RELIABILITY.md §1:
//!
//! * every count and length read from the file is bounded by the bytes that remain *before*
//!   anything is allocated for it (so allocation is proportional to the input, never to a declared
//!   size), and every size computation is checked arithmetic;
//! * nothing here panics or aborts on file data: all failures are `EngineError::Gguf` naming the
//!   field and the byte offset where it was read;
//! * tensor data ranges are validated against the file size taken at open time; the mapping and the
//!   file descriptor are kept for the life of the `GgufFile`.
//!
//! Tensor layout policy (decided here, RELIABILITY.md G30): the relative offsets must be exactly the
//! running sum of the previous tensors' sizes, each padded to `general.alignment`, in file order —
//! the rule llama.cpp's `gguf.cpp` enforces. Overlaps, gaps and out-of-order tensors are all
//! rejected, so every file this accepts is one llama.cpp accepts and no two tensors alias.
//!
//! Known limitation (not fixable in a reader): if another process truncates the file after it was
//! mapped, touching the lost pages raises SIGBUS.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use hologram_kernels::QuantType;
use memmap2::Mmap;

use super::keys;
use crate::{EngineError, Result};

/// The four magic bytes every GGUF file starts with.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of the data section and of every tensor when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Longest string value or key accepted (llama.cpp's cap).
pub const MAX_STRING_LEN: u64 = 1 << 30;
/// Most elements accepted in one metadata array (llama.cpp's cap).
pub const MAX_ARRAY_LEN: u64 = 1 << 30;
/// Longest tensor name in bytes (`GGML_MAX_NAME` - 1 for the NUL).
pub const MAX_TENSOR_NAME_LEN: u64 = 63;
/// Most dimensions a tensor may have (`GGML_MAX_DIMS`).
pub const MAX_DIMS: u32 = 4;
/// Magic, version, n_tensors, n_kv.
pub const HEADER_LEN: u64 = 24;

/// Fewest bytes one metadata entry can occupy: key length, one key byte, value type, one value byte.
const MIN_KV_BYTES: u64 = 8 + 1 + 4 + 1;
/// Fewest bytes one tensor info can occupy: name length, one name byte, n_dims, type, offset.
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 1 + 4 + 4 + 8;
/// Cap on what is reserved up front for a vector of file-declared length; beyond it vectors grow
/// only as elements are actually parsed.
const MAX_PREALLOC: usize = 1 << 16;

/// GGUF metadata value type ids (`enum gguf_type`).
mod vtype {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

fn vtype_name(t: u32) -> String {
    match t {
        vtype::U8 => "UINT8".into(),
        vtype::I8 => "INT8".into(),
        vtype::U16 => "UINT16".into(),
        vtype::I16 => "INT16".into(),
        vtype::U32 => "UINT32".into(),
        vtype::I32 => "INT32".into(),
        vtype::F32 => "FLOAT32".into(),
        vtype::BOOL => "BOOL".into(),
        vtype::STRING => "STRING".into(),
        vtype::ARRAY => "ARRAY".into(),
        vtype::U64 => "UINT64".into(),
        vtype::I64 => "INT64".into(),
        vtype::F64 => "FLOAT64".into(),
        other => format!("unknown type {other}"),
    }
}

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    U64(u64),
    I64(i64),
    F64(f64),
    Array(Array),
}

/// A metadata array: a typed vector (GGUF has no nested arrays; they are rejected).
#[derive(Clone, Debug, PartialEq)]
pub enum Array {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    Bool(Vec<bool>),
    Str(Vec<String>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F64(Vec<f64>),
}

impl Value {
    /// The GGUF type name ("UINT32", "STRING", "ARRAY[FLOAT32]", ...), for messages.
    pub fn type_name(&self) -> String {
        match self {
            Value::U8(_) => vtype_name(vtype::U8),
            Value::I8(_) => vtype_name(vtype::I8),
            Value::U16(_) => vtype_name(vtype::U16),
            Value::I16(_) => vtype_name(vtype::I16),
            Value::U32(_) => vtype_name(vtype::U32),
            Value::I32(_) => vtype_name(vtype::I32),
            Value::F32(_) => vtype_name(vtype::F32),
            Value::Bool(_) => vtype_name(vtype::BOOL),
            Value::Str(_) => vtype_name(vtype::STRING),
            Value::U64(_) => vtype_name(vtype::U64),
            Value::I64(_) => vtype_name(vtype::I64),
            Value::F64(_) => vtype_name(vtype::F64),
            Value::Array(a) => format!("ARRAY[{}]", a.elem_type_name()),
        }
    }

    /// The value as f64 if it is any number type (integer or float; not bool).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => self.as_int().map(|i| i as f64),
        }
    }

    /// The value as a signed 128-bit integer if it is any integer type (not bool).
    fn as_int(&self) -> Option<i128> {
        Some(match *self {
            Value::U8(v) => v.into(),
            Value::I8(v) => v.into(),
            Value::U16(v) => v.into(),
            Value::I16(v) => v.into(),
            Value::U32(v) => v.into(),
            Value::I32(v) => v.into(),
            Value::U64(v) => v.into(),
            Value::I64(v) => v.into(),
            _ => return None,
        })
    }
}

impl Array {
    pub fn len(&self) -> usize {
        match self {
            Array::U8(v) => v.len(),
            Array::I8(v) => v.len(),
            Array::U16(v) => v.len(),
            Array::I16(v) => v.len(),
            Array::U32(v) => v.len(),
            Array::I32(v) => v.len(),
            Array::F32(v) => v.len(),
            Array::Bool(v) => v.len(),
            Array::Str(v) => v.len(),
            Array::U64(v) => v.len(),
            Array::I64(v) => v.len(),
            Array::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The GGUF name of the element type ("FLOAT32", "STRING", ...).
    pub fn elem_type_name(&self) -> String {
        vtype_name(match self {
            Array::U8(_) => vtype::U8,
            Array::I8(_) => vtype::I8,
            Array::U16(_) => vtype::U16,
            Array::I16(_) => vtype::I16,
            Array::U32(_) => vtype::U32,
            Array::I32(_) => vtype::I32,
            Array::F32(_) => vtype::F32,
            Array::Bool(_) => vtype::BOOL,
            Array::Str(_) => vtype::STRING,
            Array::U64(_) => vtype::U64,
            Array::I64(_) => vtype::I64,
            Array::F64(_) => vtype::F64,
        })
    }
}

/// One tensor's description. `offset` is absolute in the file and `offset + nbytes` has been
/// checked to lie within it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// Shape, innermost (contiguous) dimension first, as in ggml's `ne`.
    pub dims: Vec<u64>,
    pub ttype: QuantType,
    /// Absolute byte offset of the data in the file.
    pub offset: u64,
    /// Size of the data in bytes.
    pub nbytes: u64,
}

impl TensorInfo {
    /// Number of elements (the product of `dims`; checked at parse time to fit in i64).
    pub fn n_elements(&self) -> u64 {
        self.dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .unwrap_or(0)
    }
}

/// The bytes the file was parsed from: a read-only map of the file (kept with its descriptor), or
/// an owned buffer (`from_bytes`, and files too short to hold a header).
enum Storage {
    Mmap { map: Mmap, _file: File },
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mmap { map, .. } => map,
            Storage::Owned(v) => v,
        }
    }
}

/// A parsed, validated GGUF file. Tensor data stays in the mapping; `tensor_data` borrows it.
pub struct GgufFile {
    storage: Storage,
    version: u32,
    alignment: u64,
    data_offset: u64,
    file_size: u64,
    metadata: Vec<(String, Value)>,
    /// Byte offset of each metadata value, parallel to `metadata` (for typed-getter errors).
    value_offsets: Vec<u64>,
    metadata_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version)
            .field("alignment", &self.alignment)
            .field("data_offset", &self.data_offset)
            .field("file_size", &self.file_size)
            .field("n_kv", &self.metadata.len())
            .field("n_tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Open and validate a GGUF file. The file is memory-mapped read-only; its size is taken once
    /// here and every tensor range is checked against it.
    pub fn open(path: &Path) -> Result<Self> {
        let io = |source: std::io::Error| EngineError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(EngineError::gguf(
                "file",
                0,
                format!("{} is not a regular file", path.display()),
            ));
        }
        let size = meta.len();
        if size < HEADER_LEN {
            // Too short for a header: read what is there (at most HEADER_LEN bytes) so the parser
            // reports which header field is cut, without mapping an empty or tiny file.
            let mut buf = Vec::new();
            file.take(HEADER_LEN).read_to_end(&mut buf).map_err(io)?;
            return Self::parse(Storage::Owned(buf));
        }
        // SAFETY: the map is read-only and private to this struct, which also keeps the file open.
        // Mapping a file is only unsound if it is modified while mapped; hologram never writes model
        // files, every range handed out is checked against the size taken above, and the remaining
        // risk (another process truncating the file → SIGBUS on access) is documented above.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        if map.len() as u64 != size {
            return Err(EngineError::gguf(
                "file",
                0,
                format!(
                    "file size changed while opening ({size} bytes, then {} mapped)",
                    map.len()
                ),
            ));
        }
        Self::parse(Storage::Mmap { map, _file: file })
    }

    /// Parse a GGUF image held in memory (same parser and checks as `open`).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        Self::parse(Storage::Owned(bytes))
    }

    fn parse(storage: Storage) -> Result<Self> {
        let p = parse(storage.bytes())?;
        let file_size = storage.bytes().len() as u64;
        Ok(GgufFile {
            storage,
            version: p.version,
            alignment: p.alignment,
            data_offset: p.data_offset,
            file_size,
            metadata: p.metadata,
            value_offsets: p.value_offsets,
            metadata_index: p.metadata_index,
            tensors: p.tensors,
            tensor_index: p.tensor_index,
        })
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    /// `general.alignment`, or 32 when absent.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute byte offset where the tensor data section starts.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// File size taken at open (the length of the parsed image).
    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    /// All metadata entries, in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata_index
            .get(key)
            .and_then(|&i| self.metadata.get(i))
            .map(|(_, v)| v)
    }

    /// Error for a key that is present with the wrong type: names the key and its value's offset.
    fn wrong_type(&self, key: &str, expected: &str, found: &Value) -> EngineError {
        let offset = self
            .metadata_index
            .get(key)
            .and_then(|&i| self.value_offsets.get(i))
            .copied()
            .unwrap_or(0);
        EngineError::gguf(
            key,
            offset,
            format!("expected {expected}, found {}", found.type_name()),
        )
    }

    pub fn get_str(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Str(s)) => Ok(Some(s)),
            Some(v) => Err(self.wrong_type(key, "STRING", v)),
        }
    }

    /// Any integer type with a non-negative value.
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_int() {
                Some(i) => u64::try_from(i).map(Some).map_err(|_| {
                    let offset = self
                        .metadata_index
                        .get(key)
                        .and_then(|&i| self.value_offsets.get(i))
                        .copied()
                        .unwrap_or(0);
                    EngineError::gguf(key, offset, format!("must not be negative, found {i}"))
                }),
                None => Err(self.wrong_type(key, "an integer", v)),
            },
        }
    }

    /// FLOAT32, or FLOAT64 narrowed to f32.
    pub fn get_f32(&self, key: &str) -> Result<Option<f32>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::F32(x)) => Ok(Some(*x)),
            Some(Value::F64(x)) => Ok(Some(*x as f32)),
            Some(v) => Err(self.wrong_type(key, "FLOAT32 or FLOAT64", v)),
        }
    }

    pub fn get_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.wrong_type(key, "BOOL", v)),
        }
    }

    pub fn get_str_array(&self, key: &str) -> Result<Option<&[String]>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(Array::Str(a))) => Ok(Some(a)),
            Some(v) => Err(self.wrong_type(key, "ARRAY[STRING]", v)),
        }
    }

    pub fn get_f32_array(&self, key: &str) -> Result<Option<&[f32]>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(Array::F32(a))) => Ok(Some(a)),
            Some(v) => Err(self.wrong_type(key, "ARRAY[FLOAT32]", v)),
        }
    }

    pub fn get_i32_array(&self, key: &str) -> Result<Option<&[i32]>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(Array::I32(a))) => Ok(Some(a)),
            Some(v) => Err(self.wrong_type(key, "ARRAY[INT32]", v)),
        }
    }

    /// All tensor infos, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index
            .get(name)
            .and_then(|&i| self.tensors.get(i))
    }

    /// The tensor's bytes, borrowed from the mapping (no copy). The range was validated at open;
    /// a `TensorInfo` that does not come from this file and does not fit yields an empty slice.
    /// The slice starts `offset` bytes into a page-aligned map, so it is aligned to
    /// `gcd(alignment, page size)`; cast with a checked cast (bytemuck::try_cast_slice).
    /// Tell the kernel that the tensor's mapped pages will not be read again (its data were
    /// copied elsewhere, e.g. repacked): they leave this process's resident set and the page
    /// cache may drop them. Reading them later is still valid (they are read back from the
    /// file). No-op for owned buffers.
    pub fn release_tensor_pages(&self, t: &TensorInfo) {
        self.release_tensor_range(t, 0, usize::MAX);
    }

    /// [`Self::release_tensor_pages`] for bytes `from..to` of the tensor's data (clamped to
    /// it): only whole pages inside both the range and the tensor are dropped.
    pub fn release_tensor_range(&self, t: &TensorInfo, from: usize, to: usize) {
        if let Storage::Mmap { map, .. } = &self.storage {
            let page = 4096usize;
            let (Ok(off), Ok(nbytes)) = (usize::try_from(t.offset), usize::try_from(t.nbytes))
            else {
                return;
            };
            let to = to.min(nbytes);
            if from >= to {
                return;
            }
            let (Some(start), len) = (off.checked_add(from), to - from) else {
                return;
            };
            // Whole pages strictly inside the tensor only.
            let first = start.div_ceil(page) * page;
            let end = (start + len) / page * page;
            if end > first && end <= map.len() {
                // SAFETY: the range lies inside the read-only file mapping, which stays mapped;
                // MADV_DONTNEED on a shared file mapping only drops resident pages, which are
                // read back from the file if touched again.
                let _ = unsafe {
                    map.unchecked_advise_range(
                        memmap2::UncheckedAdvice::DontNeed,
                        first,
                        end - first,
                    )
                };
            }
        }
    }

    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        let bytes = self.storage.bytes();
        let range = usize::try_from(t.offset).ok().and_then(|start| {
            let len = usize::try_from(t.nbytes).ok()?;
            Some(start..start.checked_add(len)?)
        });
        range.and_then(|r| bytes.get(r)).unwrap_or(&[])
    }
}

// ---------------------------------------------------------------------------------------------
// Parser

struct Parsed {
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Vec<(String, Value)>,
    value_offsets: Vec<u64>,
    metadata_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

type Field<'f> = &'f dyn Fn() -> String;

/// A bounds-checked little-endian reader. `pos <= buf.len()` always holds.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn pos(&self) -> u64 {
        self.pos as u64
    }

    fn remaining(&self) -> u64 {
        self.buf.len().saturating_sub(self.pos) as u64
    }

    fn take(&mut self, n: u64, field: Field) -> Result<&'a [u8]> {
        let rem = self.remaining();
        if n > rem {
            return Err(EngineError::gguf(
                field(),
                self.pos(),
                format!("needs {n} bytes but only {rem} remain in the file (truncated or corrupt)"),
            ));
        }
        let end = usize::try_from(n)
            .ok()
            .and_then(|n| self.pos.checked_add(n));
        let slice = end.and_then(|end| self.buf.get(self.pos..end).map(|s| (s, end)));
        match slice {
            Some((s, end)) => {
                self.pos = end;
                Ok(s)
            }
            None => Err(EngineError::gguf(field(), self.pos(), "read out of range")),
        }
    }

    fn array<const N: usize>(&mut self, field: Field) -> Result<[u8; N]> {
        let at = self.pos();
        let s = self.take(N as u64, field)?;
        <[u8; N]>::try_from(s).map_err(|_| EngineError::gguf(field(), at, "read out of range"))
    }

    fn u32(&mut self, field: Field) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    fn u64(&mut self, field: Field) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    /// A length-prefixed UTF-8 string; the length is checked against the cap and the remaining
    /// bytes before anything is allocated.
    fn string(&mut self, field: Field) -> Result<String> {
        let at = self.pos();
        let len = self.u64(&|| format!("{} length", field()))?;
        if len > MAX_STRING_LEN {
            return Err(EngineError::gguf(
                format!("{} length", field()),
                at,
                format!("string length {len} exceeds the {MAX_STRING_LEN}-byte cap"),
            ));
        }
        let rem = self.remaining();
        if len > rem {
            return Err(EngineError::gguf(
                format!("{} length", field()),
                at,
                format!("string length {len} exceeds the {rem} bytes remaining in the file"),
            ));
        }
        let bytes = self.take(len, field)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => Err(EngineError::gguf(
                field(),
                at + 8,
                format!(
                    "string is not valid UTF-8 (invalid byte at index {})",
                    e.valid_up_to()
                ),
            )),
        }
    }
}

/// A file-provided name for an error message, cut to 80 characters so a hostile 1 GiB key does
/// not become a 1 GiB message.
fn show(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        format!("{}...", s.chars().take(MAX).collect::<String>())
    }
}

/// Round `x` up to a multiple of `align` (a power of two); None on overflow.
fn pad(x: u64, align: u64) -> Option<u64> {
    let rem = x % align;
    if rem == 0 {
        Some(x)
    } else {
        x.checked_add(align - rem)
    }
}

fn le_vec<T, const N: usize>(bytes: &[u8], conv: fn([u8; N]) -> T) -> Vec<T> {
    bytes
        .chunks_exact(N)
        .filter_map(|c| <[u8; N]>::try_from(c).ok())
        .map(conv)
        .collect()
}

fn read_bool(c: &mut Cursor, field: Field) -> Result<bool> {
    let at = c.pos();
    let [b] = c.array::<1>(field)?;
    match b {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(EngineError::gguf(
            field(),
            at,
            format!("BOOL must be 0 or 1, found {other}"),
        )),
    }
}

fn read_value(c: &mut Cursor, ty: u32, type_at: u64, field: Field) -> Result<Value> {
    Ok(match ty {
        vtype::U8 => Value::U8(u8::from_le_bytes(c.array(field)?)),
        vtype::I8 => Value::I8(i8::from_le_bytes(c.array(field)?)),
        vtype::U16 => Value::U16(u16::from_le_bytes(c.array(field)?)),
        vtype::I16 => Value::I16(i16::from_le_bytes(c.array(field)?)),
        vtype::U32 => Value::U32(u32::from_le_bytes(c.array(field)?)),
        vtype::I32 => Value::I32(i32::from_le_bytes(c.array(field)?)),
        vtype::F32 => Value::F32(f32::from_le_bytes(c.array(field)?)),
        vtype::BOOL => Value::Bool(read_bool(c, field)?),
        vtype::STRING => Value::Str(c.string(field)?),
        vtype::U64 => Value::U64(u64::from_le_bytes(c.array(field)?)),
        vtype::I64 => Value::I64(i64::from_le_bytes(c.array(field)?)),
        vtype::F64 => Value::F64(f64::from_le_bytes(c.array(field)?)),
        vtype::ARRAY => Value::Array(read_array(c, field)?),
        other => {
            return Err(EngineError::gguf(
                format!("{} type", field()),
                type_at,
                format!("unknown metadata value type {other} (valid: 0..=12)"),
            ))
        }
    })
}

fn read_array(c: &mut Cursor, field: Field) -> Result<Array> {
    let et_at = c.pos();
    let et = c.u32(&|| format!("{} array element type", field()))?;
    let n_at = c.pos();
    let n = c.u64(&|| format!("{} array length", field()))?;
    // Bytes each element needs at least (for strings: the 8-byte length prefix).
    let elem_size: u64 = match et {
        vtype::U8 | vtype::I8 | vtype::BOOL => 1,
        vtype::U16 | vtype::I16 => 2,
        vtype::U32 | vtype::I32 | vtype::F32 => 4,
        vtype::U64 | vtype::I64 | vtype::F64 | vtype::STRING => 8,
        vtype::ARRAY => {
            return Err(EngineError::gguf(
                format!("{} array element type", field()),
                et_at,
                "nested arrays are not allowed",
            ))
        }
        other => {
            return Err(EngineError::gguf(
                format!("{} array element type", field()),
                et_at,
                format!("unknown array element type {other} (valid: 0..=12 except 9)"),
            ))
        }
    };
    let len_field = || format!("{} array length", field());
    if n > MAX_ARRAY_LEN {
        return Err(EngineError::gguf(
            len_field(),
            n_at,
            format!("array length {n} exceeds the cap of {MAX_ARRAY_LEN} elements"),
        ));
    }
    let rem = c.remaining();
    let need = n
        .checked_mul(elem_size)
        .filter(|&need| need <= rem)
        .ok_or_else(|| {
            EngineError::gguf(
                len_field(),
                n_at,
                format!(
                    "array of {n} {} elements needs at least {} bytes but only {rem} remain",
                    vtype_name(et),
                    n.saturating_mul(elem_size)
                ),
            )
        })?;
    if et == vtype::STRING {
        // n <= remaining / 8 here; reserve at most MAX_PREALLOC and grow as strings are read.
        let cap = usize::try_from(n).unwrap_or(usize::MAX).min(MAX_PREALLOC);
        let mut v = Vec::with_capacity(cap);
        for j in 0..n {
            v.push(c.string(&|| format!("{}[{j}]", field()))?);
        }
        return Ok(Array::Str(v));
    }
    if et == vtype::BOOL {
        let cap = usize::try_from(n).unwrap_or(usize::MAX).min(MAX_PREALLOC);
        let mut v = Vec::with_capacity(cap);
        for j in 0..n {
            v.push(read_bool(c, &|| format!("{}[{j}]", field()))?);
        }
        return Ok(Array::Bool(v));
    }
    // Fixed-size elements: `need` bytes are present, so the vector is bounded by the input.
    let bytes = c.take(need, field)?;
    Ok(match et {
        vtype::U8 => Array::U8(bytes.to_vec()),
        vtype::I8 => Array::I8(le_vec(bytes, i8::from_le_bytes)),
        vtype::U16 => Array::U16(le_vec(bytes, u16::from_le_bytes)),
        vtype::I16 => Array::I16(le_vec(bytes, i16::from_le_bytes)),
        vtype::U32 => Array::U32(le_vec(bytes, u32::from_le_bytes)),
        vtype::I32 => Array::I32(le_vec(bytes, i32::from_le_bytes)),
        vtype::F32 => Array::F32(le_vec(bytes, f32::from_le_bytes)),
        vtype::U64 => Array::U64(le_vec(bytes, u64::from_le_bytes)),
        vtype::I64 => Array::I64(le_vec(bytes, i64::from_le_bytes)),
        _ => Array::F64(le_vec(bytes, f64::from_le_bytes)),
    })
}

fn parse_header(c: &mut Cursor) -> Result<(u32, u64, u64)> {
    let magic = c.array::<4>(&|| "header magic".into())?;
    if magic != GGUF_MAGIC {
        return Err(EngineError::gguf(
            "header magic",
            0,
            format!(
                "expected \"GGUF\", found {:?} (not a GGUF file)",
                magic.escape_ascii().to_string()
            ),
        ));
    }
    let version = c.u32(&|| "header version".into())?;
    if version == 0 {
        return Err(EngineError::gguf(
            "header version",
            4,
            "version 0 is invalid",
        ));
    }
    if version & 0xFFFF == 0 {
        return Err(EngineError::gguf(
            "header version",
            4,
            format!(
                "version {version:#010x} looks byte-swapped: this is a big-endian GGUF, and only \
                 little-endian files are supported (endianness mismatch)"
            ),
        ));
    }
    if version == 1 {
        return Err(EngineError::gguf(
            "header version",
            4,
            "GGUF version 1 is no longer supported (supported versions: 2, 3)",
        ));
    }
    if version > 3 {
        return Err(EngineError::gguf(
            "header version",
            4,
            format!("unsupported GGUF version {version} (supported versions: 2, 3)"),
        ));
    }
    let n_tensors = c.u64(&|| "header n_tensors".into())?;
    let n_kv = c.u64(&|| "header n_kv".into())?;
    let rem = c.remaining();
    if n_kv > rem / MIN_KV_BYTES {
        return Err(EngineError::gguf(
            "header n_kv",
            16,
            format!(
                "{n_kv} metadata entries declared but the remaining {rem} bytes can hold at most {}",
                rem / MIN_KV_BYTES
            ),
        ));
    }
    let kv_min = n_kv * MIN_KV_BYTES; // cannot overflow: n_kv <= rem / MIN_KV_BYTES
    if n_tensors > (rem - kv_min) / MIN_TENSOR_INFO_BYTES {
        return Err(EngineError::gguf(
            "header n_tensors",
            8,
            format!(
                "{n_tensors} tensors declared but the remaining {rem} bytes can hold at most {}",
                (rem - kv_min) / MIN_TENSOR_INFO_BYTES
            ),
        ));
    }
    Ok((version, n_tensors, n_kv))
}

/// Reserve for `n` file-declared items that already passed the remaining-bytes bound.
fn prealloc(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX).min(MAX_PREALLOC)
}

fn parse(buf: &[u8]) -> Result<Parsed> {
    let mut c = Cursor { buf, pos: 0 };
    let file_size = buf.len() as u64;
    let (version, n_tensors, n_kv) = parse_header(&mut c)?;

    // ---- metadata
    let mut metadata: Vec<(String, Value)> = Vec::with_capacity(prealloc(n_kv));
    let mut value_offsets = Vec::with_capacity(prealloc(n_kv));
    let mut metadata_index: HashMap<String, usize> = HashMap::with_capacity(prealloc(n_kv));
    let mut alignment = DEFAULT_ALIGNMENT;
    for i in 0..n_kv {
        let key_at = c.pos();
        let key = c.string(&|| format!("metadata[{i}] key"))?;
        if key.is_empty() {
            return Err(EngineError::gguf(
                format!("metadata[{i}] key"),
                key_at,
                "empty key",
            ));
        }
        if key.contains('\0') {
            return Err(EngineError::gguf(
                format!("metadata[{i}] key"),
                key_at,
                format!("key {:?} contains a NUL byte", show(&key)),
            ));
        }
        if let Some(&first) = metadata_index.get(&key) {
            return Err(EngineError::gguf(
                format!("metadata[{i}] key '{}'", show(&key)),
                key_at,
                format!("duplicate key (first defined at metadata[{first}])"),
            ));
        }
        let type_at = c.pos();
        let shown = show(&key);
        let field = || format!("metadata[{i}] '{shown}'");
        let ty = c.u32(&|| format!("{} type", field()))?;
        let value_at = c.pos();
        let value = read_value(&mut c, ty, type_at, &field)?;
        if key == keys::GENERAL_ALIGNMENT {
            alignment = match value {
                Value::U32(a) if a != 0 && a.is_power_of_two() => u64::from(a),
                Value::U32(a) => {
                    return Err(EngineError::gguf(
                        keys::GENERAL_ALIGNMENT,
                        value_at,
                        format!("must be a non-zero power of two, found {a}"),
                    ))
                }
                ref v => {
                    return Err(EngineError::gguf(
                        keys::GENERAL_ALIGNMENT,
                        type_at,
                        format!("must be UINT32, found {}", v.type_name()),
                    ))
                }
            };
        }
        metadata_index.insert(key.clone(), metadata.len());
        metadata.push((key, value));
        value_offsets.push(value_at);
    }

    // ---- tensor infos (relative offsets for now)
    let mut tensors: Vec<TensorInfo> = Vec::with_capacity(prealloc(n_tensors));
    let mut offset_fields: Vec<u64> = Vec::with_capacity(prealloc(n_tensors));
    let mut tensor_index: HashMap<String, usize> = HashMap::with_capacity(prealloc(n_tensors));
    for i in 0..n_tensors {
        let name_at = c.pos();
        let name_field = || format!("tensor[{i}] name");
        // Bound the name length before reading it (also catches 2^64-1 without a long read).
        let name_len = {
            let mut peek = Cursor { buf, pos: c.pos };
            peek.u64(&|| format!("{} length", name_field()))?
        };
        if name_len == 0 {
            return Err(EngineError::gguf(
                name_field(),
                name_at,
                "empty tensor name",
            ));
        }
        if name_len > MAX_TENSOR_NAME_LEN {
            return Err(EngineError::gguf(
                format!("{} length", name_field()),
                name_at,
                format!("tensor name is {name_len} bytes; the limit is {MAX_TENSOR_NAME_LEN}"),
            ));
        }
        let name = c.string(&name_field)?;
        if name.contains('\0') {
            return Err(EngineError::gguf(
                name_field(),
                name_at,
                format!("tensor name {name:?} contains a NUL byte"),
            ));
        }
        if let Some(&first) = tensor_index.get(&name) {
            return Err(EngineError::gguf(
                format!("tensor '{name}' name"),
                name_at,
                format!("duplicate tensor name (first at tensor[{first}])"),
            ));
        }
        let tf = |what: &str| format!("tensor '{name}' {what}");
        let ndims_at = c.pos();
        let n_dims = c.u32(&|| tf("n_dims"))?;
        if n_dims > MAX_DIMS {
            return Err(EngineError::gguf(
                tf("n_dims"),
                ndims_at,
                format!("{n_dims} dimensions; at most {MAX_DIMS} are allowed"),
            ));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        let mut n_elements: u64 = 1;
        for d in 0..n_dims {
            let at = c.pos();
            let ne = c.u64(&|| tf(&format!("ne[{d}]")))?;
            if ne > i64::MAX as u64 {
                return Err(EngineError::gguf(
                    tf(&format!("ne[{d}]")),
                    at,
                    format!("dimension is negative ({} as int64)", ne as i64),
                ));
            }
            n_elements = n_elements
                .checked_mul(ne)
                .filter(|&n| n <= i64::MAX as u64)
                .ok_or_else(|| {
                    EngineError::gguf(
                        tf("shape"),
                        ndims_at,
                        format!("element count of shape {dims:?} x {ne} overflows int64"),
                    )
                })?;
            dims.push(ne);
        }
        let type_at = c.pos();
        let type_id = c.u32(&|| tf("type"))?;
        let ttype = QuantType::from_ggml_id(type_id).ok_or_else(|| {
            let known: Vec<&str> = QuantType::ALL.iter().map(|t| t.name()).collect();
            EngineError::gguf(
                tf("type"),
                type_at,
                format!(
                    "unknown or unsupported GGML type id {type_id} ({}supported: {})",
                    if type_id == 4 || type_id == 5 {
                        "id removed from ggml; "
                    } else {
                        ""
                    },
                    known.join(", ")
                ),
            )
        })?;
        let ne0 = dims.first().copied().unwrap_or(1);
        let block = ttype.block_size() as u64;
        if ne0 % block != 0 {
            return Err(EngineError::gguf(
                tf("ne[0]"),
                ndims_at + 4,
                format!(
                    "ne[0] = {ne0} is not a multiple of the {} block size {block}",
                    ttype.name()
                ),
            ));
        }
        let nbytes = dims
            .iter()
            .skip(1)
            .try_fold(
                (ne0 / block).checked_mul(ttype.type_size() as u64),
                |acc, &d| Some(acc.and_then(|a| a.checked_mul(d))),
            )
            .flatten()
            .ok_or_else(|| {
                EngineError::gguf(
                    tf("shape"),
                    ndims_at,
                    format!(
                        "byte size of {} tensor with shape {dims:?} overflows u64",
                        ttype.name()
                    ),
                )
            })?;
        let off_at = c.pos();
        let rel = c.u64(&|| tf("offset"))?;
        if rel % alignment != 0 {
            return Err(EngineError::gguf(
                tf("offset"),
                off_at,
                format!("offset {rel} is not a multiple of general.alignment = {alignment}"),
            ));
        }
        tensor_index.insert(name.clone(), tensors.len());
        tensors.push(TensorInfo {
            name,
            dims,
            ttype,
            offset: rel,
            nbytes,
        });
        offset_fields.push(off_at);
    }

    // ---- data section
    let infos_end = c.pos();
    let data_offset = pad(infos_end, alignment).ok_or_else(|| {
        EngineError::gguf(
            "data section",
            infos_end,
            "data section offset overflows u64",
        )
    })?;
    if !tensors.is_empty() && data_offset > file_size {
        return Err(EngineError::gguf(
            "data section",
            infos_end,
            format!(
                "data section would start at byte {data_offset} (end of tensor infos padded to \
                 general.alignment = {alignment}), past the end of the {file_size}-byte file"
            ),
        ));
    }

    // ---- tensor data ranges: in bounds, then the exact running padded sum (no overlap, no gap).
    let mut expected: u64 = 0;
    let mut abs_offsets: Vec<u64> = Vec::with_capacity(tensors.len());
    for (i, (t, &off_at)) in tensors.iter().zip(&offset_fields).enumerate() {
        let rel = t.offset;
        let tf = |what: &str| format!("tensor '{}' {what}", t.name);
        let abs = data_offset.checked_add(rel).ok_or_else(|| {
            EngineError::gguf(
                tf("offset"),
                off_at,
                format!("offset {rel} + data section start overflows u64"),
            )
        })?;
        let end = abs.checked_add(t.nbytes).ok_or_else(|| {
            EngineError::gguf(
                tf("offset"),
                off_at,
                format!("offset {rel} + size {} overflows u64", t.nbytes),
            )
        })?;
        if end > file_size {
            return Err(EngineError::gguf(
                tf("data"),
                off_at,
                format!(
                    "data [{abs}, {end}) is not within the {file_size}-byte file (truncated or \
                     corrupt)"
                ),
            ));
        }
        if rel != expected {
            let after = match i.checked_sub(1).and_then(|p| tensors.get(p)) {
                Some(p) => format!("tensor '{}'", p.name),
                None => "the start of the data section".to_string(),
            };
            let what = if rel < expected {
                "overlaps the previous tensor"
            } else {
                "leaves a gap or is out of order"
            };
            return Err(EngineError::gguf(
                tf("offset"),
                off_at,
                format!(
                    "offset {rel} {what}: expected {expected} (right after {after}, padded to \
                     general.alignment = {alignment}); tensors must be stored back to back in order"
                ),
            ));
        }
        expected = pad(t.nbytes, alignment)
            .and_then(|p| rel.checked_add(p))
            .ok_or_else(|| {
                EngineError::gguf(
                    tf("data"),
                    off_at,
                    "sum of padded tensor sizes overflows u64",
                )
            })?;
        abs_offsets.push(abs);
    }
    for (t, abs) in tensors.iter_mut().zip(abs_offsets) {
        t.offset = abs;
    }

    Ok(Parsed {
        version,
        alignment,
        data_offset,
        metadata,
        value_offsets,
        metadata_index,
        tensors,
        tensor_index,
    })
}
