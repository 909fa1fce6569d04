//! Unit tests of the GGUF reader on in-memory images built by a tiny writer below.

use super::keys;
use super::*;
use crate::{EngineError, Result};
use hologram_kernels::QuantType;
use rand::{Rng, SeedableRng};

// ---- a minimal GGUF writer (little-endian), with hooks to corrupt any field

const T_U8: u32 = 0;
const T_I8: u32 = 1;
const T_U16: u32 = 2;
const T_I16: u32 = 3;
const T_U32: u32 = 4;
const T_I32: u32 = 5;
const T_F32: u32 = 6;
const T_BOOL: u32 = 7;
const T_STR: u32 = 8;
const T_ARR: u32 = 9;
const T_U64: u32 = 10;
const T_I64: u32 = 11;
const T_F64: u32 = 12;

fn s(b: &[u8]) -> Vec<u8> {
    let mut v = (b.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(b);
    v
}

fn kv(key: &str, ty: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = s(key.as_bytes());
    v.extend_from_slice(&ty.to_le_bytes());
    v.extend_from_slice(payload);
    v
}

fn arr(et: u32, n: u64, payload: &[u8]) -> Vec<u8> {
    let mut v = et.to_le_bytes().to_vec();
    v.extend_from_slice(&n.to_le_bytes());
    v.extend_from_slice(payload);
    v
}

#[derive(Clone)]
struct Ti {
    name: Vec<u8>,
    dims: Vec<u64>,
    ty: u32,
    /// Relative offset override; None = running padded sum.
    offset: Option<u64>,
    /// Data bytes to emit (computed from dims/type when None).
    nbytes: Option<u64>,
}

fn ti(name: &str, dims: &[u64], ty: QuantType) -> Ti {
    Ti {
        name: name.as_bytes().to_vec(),
        dims: dims.to_vec(),
        ty: ty as u32,
        offset: None,
        nbytes: None,
    }
}

#[derive(Clone)]
struct Builder {
    magic: [u8; 4],
    version: u32,
    n_tensors: Option<u64>,
    n_kv: Option<u64>,
    kvs: Vec<Vec<u8>>,
    tensors: Vec<Ti>,
    alignment: u64,
}

impl Builder {
    fn new() -> Self {
        Builder {
            magic: *b"GGUF",
            version: 3,
            n_tensors: None,
            n_kv: None,
            kvs: vec![],
            tensors: vec![],
            alignment: 32,
        }
    }

    /// The valid reference file: every value type, three tensors.
    fn valid() -> Self {
        let mut b = Builder::new();
        b.kvs
            .push(kv(keys::GENERAL_ARCHITECTURE, T_STR, &s(b"llama")));
        b.kvs.push(kv("t.u8", T_U8, &[200]));
        b.kvs.push(kv("t.i8", T_I8, &(-5i8).to_le_bytes()));
        b.kvs.push(kv("t.u16", T_U16, &600u16.to_le_bytes()));
        b.kvs.push(kv("t.i16", T_I16, &(-600i16).to_le_bytes()));
        b.kvs.push(kv("t.u32", T_U32, &70000u32.to_le_bytes()));
        b.kvs.push(kv("t.i32", T_I32, &(-70000i32).to_le_bytes()));
        b.kvs.push(kv("t.f32", T_F32, &1.5f32.to_le_bytes()));
        b.kvs.push(kv("t.bool", T_BOOL, &[1]));
        b.kvs.push(kv("t.u64", T_U64, &(1u64 << 40).to_le_bytes()));
        b.kvs.push(kv("t.i64", T_I64, &(-1i64).to_le_bytes()));
        b.kvs.push(kv("t.f64", T_F64, &2.25f64.to_le_bytes()));
        let mut strs = s(b"a");
        strs.extend(s("é".as_bytes()));
        strs.extend(s(b""));
        b.kvs.push(kv("t.astr", T_ARR, &arr(T_STR, 3, &strs)));
        let f: Vec<u8> = [0.5f32, -1.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        b.kvs.push(kv("t.af32", T_ARR, &arr(T_F32, 2, &f)));
        let i: Vec<u8> = [1i32, -2, 3].iter().flat_map(|x| x.to_le_bytes()).collect();
        b.kvs.push(kv("t.ai32", T_ARR, &arr(T_I32, 3, &i)));
        b.kvs.push(kv("t.au8", T_ARR, &arr(T_U8, 3, &[1, 2, 3])));
        b.kvs.push(kv("t.abool", T_ARR, &arr(T_BOOL, 2, &[0, 1])));
        b.kvs
            .push(kv("t.au64", T_ARR, &arr(T_U64, 1, &7u64.to_le_bytes())));
        b.kvs.push(kv("t.aempty", T_ARR, &arr(T_F64, 0, &[])));
        b.tensors
            .push(ti("token_embd.weight", &[64, 3], QuantType::F32));
        b.tensors
            .push(ti("blk.0.attn_q.weight", &[64, 2], QuantType::Q8_0));
        b.tensors
            .push(ti("blk.0.ffn_up.weight", &[32, 1, 1, 3], QuantType::Q4_0));
        b
    }

    fn nbytes(t: &Ti) -> u64 {
        if let Some(n) = t.nbytes {
            return n;
        }
        let q = match QuantType::from_ggml_id(t.ty) {
            Some(q) => q,
            None => return 0,
        };
        let mut n =
            t.dims.first().copied().unwrap_or(1) / q.block_size() as u64 * q.type_size() as u64;
        for d in t.dims.iter().skip(1) {
            n = n.wrapping_mul(*d);
        }
        n
    }

    fn bytes(&self) -> Vec<u8> {
        let a = self.alignment;
        let padded = |x: u64| x.div_ceil(a) * a;
        let mut v = self.magic.to_vec();
        v.extend_from_slice(&self.version.to_le_bytes());
        v.extend_from_slice(
            &self
                .n_tensors
                .unwrap_or(self.tensors.len() as u64)
                .to_le_bytes(),
        );
        v.extend_from_slice(&self.n_kv.unwrap_or(self.kvs.len() as u64).to_le_bytes());
        for e in &self.kvs {
            v.extend_from_slice(e);
        }
        let mut running = 0u64;
        for t in &self.tensors {
            v.extend(s(&t.name));
            v.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                v.extend_from_slice(&d.to_le_bytes());
            }
            v.extend_from_slice(&t.ty.to_le_bytes());
            v.extend_from_slice(&t.offset.unwrap_or(running).to_le_bytes());
            running = running.wrapping_add(padded(Self::nbytes(t).min(1 << 20)));
        }
        if !self.tensors.is_empty() {
            v.resize(padded(v.len() as u64) as usize, 0);
        }
        for (k, t) in self.tensors.iter().enumerate() {
            let n = Self::nbytes(t).min(1 << 20) as usize;
            let start = v.len();
            v.extend((0..n).map(|j| (j as u8).wrapping_add(k as u8)));
            if k + 1 < self.tensors.len() {
                v.resize(start + padded(n as u64) as usize, 0);
            }
        }
        v
    }

    fn parse(&self) -> Result<GgufFile> {
        GgufFile::from_bytes(self.bytes())
    }
}

/// Parse must fail with a Gguf error whose field contains `field` and message contains `msg`.
#[track_caller]
fn expect_err<T: std::fmt::Debug>(r: Result<T>, field: &str, msg: &str) -> (String, u64, String) {
    match r {
        Ok(f) => panic!("expected an error on {field:?}, got Ok({f:?})"),
        Err(EngineError::Gguf {
            field: f,
            offset,
            msg: m,
        }) => {
            assert!(
                f.contains(field),
                "field {f:?} should contain {field:?} (msg {m:?})"
            );
            assert!(
                m.contains(msg),
                "msg {m:?} should contain {msg:?} (field {f:?})"
            );
            (f, offset, m)
        }
        Err(e) => panic!("expected a Gguf error, got {e}"),
    }
}

// ---- valid files

#[test]
fn valid_file_roundtrip() {
    let b = Builder::valid();
    let bytes = b.bytes();
    let f = GgufFile::from_bytes(bytes.clone()).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), 32);
    assert_eq!(f.file_size(), bytes.len() as u64);
    assert_eq!(f.data_offset() % 32, 0);
    assert_eq!(f.metadata().len(), b.kvs.len());
    assert_eq!(f.metadata()[0].0, keys::GENERAL_ARCHITECTURE);
    assert_eq!(
        f.get_str(keys::GENERAL_ARCHITECTURE).unwrap(),
        Some("llama")
    );
    assert_eq!(f.get("t.u8"), Some(&Value::U8(200)));
    assert_eq!(f.get("t.i8"), Some(&Value::I8(-5)));
    assert_eq!(f.get("t.u16"), Some(&Value::U16(600)));
    assert_eq!(f.get("t.i16"), Some(&Value::I16(-600)));
    assert_eq!(f.get("t.i32"), Some(&Value::I32(-70000)));
    assert_eq!(f.get("t.i64"), Some(&Value::I64(-1)));
    assert_eq!(f.get("t.f64"), Some(&Value::F64(2.25)));
    assert_eq!(f.get_u64("t.u32").unwrap(), Some(70000));
    assert_eq!(f.get_u64("t.u64").unwrap(), Some(1 << 40));
    assert_eq!(f.get_u64("t.u8").unwrap(), Some(200));
    assert_eq!(f.get_u64("missing").unwrap(), None);
    assert_eq!(f.get_f32("t.f32").unwrap(), Some(1.5));
    assert_eq!(f.get_f32("t.f64").unwrap(), Some(2.25));
    assert_eq!(f.get_bool("t.bool").unwrap(), Some(true));
    assert_eq!(f.get_str_array("t.astr").unwrap().unwrap(), ["a", "é", ""]);
    assert_eq!(f.get_f32_array("t.af32").unwrap().unwrap(), [0.5, -1.0]);
    assert_eq!(f.get_i32_array("t.ai32").unwrap().unwrap(), [1, -2, 3]);
    assert_eq!(
        f.get("t.au8"),
        Some(&Value::Array(Array::U8(vec![1, 2, 3])))
    );
    assert_eq!(
        f.get("t.abool"),
        Some(&Value::Array(Array::Bool(vec![false, true])))
    );
    assert_eq!(f.get("t.au64"), Some(&Value::Array(Array::U64(vec![7]))));
    assert_eq!(f.get("t.aempty"), Some(&Value::Array(Array::F64(vec![]))));

    assert_eq!(f.tensors().len(), 3);
    let e = f.tensor("token_embd.weight").unwrap();
    assert_eq!(e.dims, [64, 3]);
    assert_eq!(e.ttype, QuantType::F32);
    assert_eq!(e.n_elements(), 192);
    assert_eq!(e.nbytes, 768);
    assert_eq!(e.offset, f.data_offset());
    let q = f.tensor("blk.0.attn_q.weight").unwrap();
    assert_eq!(q.nbytes, 4 * 34);
    assert_eq!(q.offset, f.data_offset() + 768);
    let u = f.tensor("blk.0.ffn_up.weight").unwrap();
    assert_eq!(u.n_elements(), 96);
    assert_eq!(u.nbytes, 3 * 18);
    assert_eq!(u.offset, f.data_offset() + 768 + 160);
    for (k, t) in f.tensors().iter().enumerate() {
        let d = f.tensor_data(t);
        assert_eq!(d.len() as u64, t.nbytes);
        assert!(d
            .iter()
            .enumerate()
            .all(|(j, &x)| x == (j as u8).wrapping_add(k as u8)));
    }
    assert!(f.tensor("nope").is_none());
    // A foreign TensorInfo out of range gives an empty slice, not a panic.
    let foreign = TensorInfo {
        offset: u64::MAX - 1,
        nbytes: 10,
        ..e.clone()
    };
    assert!(f.tensor_data(&foreign).is_empty());
}

#[test]
fn version_2_and_custom_alignment_accepted() {
    let mut b = Builder::valid();
    b.version = 2;
    assert_eq!(b.parse().unwrap().version(), 2);
    for a in [1u32, 8, 64, 4096] {
        let mut b = Builder::valid();
        b.alignment = a as u64;
        b.kvs
            .push(kv(keys::GENERAL_ALIGNMENT, T_U32, &a.to_le_bytes()));
        let f = b.parse().unwrap();
        assert_eq!(f.alignment(), a as u64);
        assert_eq!(f.data_offset() % a as u64, 0);
    }
}

#[test]
fn empty_model_and_zero_element_tensor() {
    let b = Builder::new();
    let f = b.parse().unwrap();
    assert!(f.tensors().is_empty() && f.metadata().is_empty());
    let mut b = Builder::valid();
    b.tensors.insert(1, ti("empty", &[0, 5], QuantType::Q4_0));
    let f = b.parse().unwrap();
    assert_eq!(f.tensor("empty").unwrap().nbytes, 0);
    assert!(f.tensor_data(f.tensor("empty").unwrap()).is_empty());
}

#[test]
fn typed_getters_name_the_key() {
    let f = Builder::valid().parse().unwrap();
    let (field, _, msg) = expect_err(f.get_str("t.u32"), "t.u32", "STRING");
    assert_eq!(field, "t.u32");
    assert!(msg.contains("UINT32"));
    expect_err(f.get_u64("t.i8"), "t.i8", "negative");
    expect_err(f.get_u64("t.f32"), "t.f32", "integer");
    expect_err(f.get_f32("t.u8"), "t.u8", "FLOAT32");
    expect_err(f.get_bool("t.u8"), "t.u8", "BOOL");
    expect_err(f.get_str_array("t.af32"), "t.af32", "ARRAY[FLOAT32]");
    expect_err(f.get_f32_array("t.au8"), "t.au8", "ARRAY[UINT8]");
    expect_err(f.get_i32_array("t.astr"), "t.astr", "ARRAY[STRING]");
    // The offset is the value's position in the file.
    let (_, off, _) = expect_err(f.get_str("t.u8"), "t.u8", "");
    let bytes = Builder::valid().bytes();
    assert_eq!(bytes[off as usize], 200);
}

#[test]
fn open_from_disk() {
    let dir = std::env::temp_dir().join(format!("hologram-gguf-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("ok.gguf");
    std::fs::write(&p, Builder::valid().bytes()).unwrap();
    let f = GgufFile::open(&p).unwrap();
    let t = f.tensor("blk.0.attn_q.weight").unwrap();
    assert_eq!(f.tensor_data(t).len(), 136);
    for (name, content) in [("empty", &b""[..]), ("three", b"GGU"), ("magic", b"GGUF")] {
        let p = dir.join(name);
        std::fs::write(&p, content).unwrap();
        expect_err(GgufFile::open(&p), "header", "remain");
    }
    assert!(matches!(
        GgufFile::open(&dir.join("missing")),
        Err(EngineError::Io { .. })
    ));
    expect_err(GgufFile::open(&dir), "file", "regular");
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---- header (G01-G07)

#[test]
fn header_truncated_everywhere() {
    let bytes = Builder::valid().bytes();
    for n in 0..24 {
        let r = GgufFile::from_bytes(bytes[..n].to_vec());
        let field = if n < 4 {
            "magic"
        } else if n < 8 {
            "version"
        } else if n < 16 {
            "n_tensors"
        } else {
            "n_kv"
        };
        expect_err(r, field, "remain");
    }
}

#[test]
fn every_truncation_and_corruption_is_an_error_not_a_panic() {
    let bytes = Builder::valid().bytes();
    for n in 0..bytes.len() {
        assert!(
            GgufFile::from_bytes(bytes[..n].to_vec()).is_err(),
            "truncated at {n}"
        );
    }
    // Deterministic byte-flip fuzzing: any outcome but a panic is fine.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..20_000 {
        let mut v = bytes.clone();
        for _ in 0..rng.gen_range(1..4) {
            let i = rng.gen_range(0..v.len());
            v[i] = match rng.gen_range(0..4) {
                0 => 0xFF,
                1 => 0,
                2 => v[i] ^ (1 << rng.gen_range(0..8)),
                _ => rng.gen(),
            };
        }
        let _ = GgufFile::from_bytes(v);
    }
}

#[test]
fn bad_magic_and_versions() {
    for m in [b"FUGG", b"GGML", b"GGJT", b"lmgg"] {
        let mut b = Builder::valid();
        b.magic = *m;
        expect_err(b.parse(), "header magic", "GGUF");
    }
    for (v, msg) in [
        (0u32, "version 0"),
        (1, "version 1 is no longer supported"),
        (4, "unsupported GGUF version 4"),
        (0xFFFF_FFFF, "unsupported"),
        (0x0300_0000, "big-endian"),
        (0x0200_0000, "endianness"),
    ] {
        let mut b = Builder::valid();
        b.version = v;
        let (_, off, _) = expect_err(b.parse(), "header version", msg);
        assert_eq!(off, 4);
    }
}

#[test]
fn huge_counts_rejected_before_allocation() {
    for n in [u64::MAX, 1 << 63, 1_000_000_000, 1000] {
        let mut b = Builder::valid();
        b.n_tensors = Some(n);
        expect_err(b.parse(), "header n_tensors", "declared");
        let mut b = Builder::valid();
        b.n_kv = Some(n);
        expect_err(b.parse(), "header n_kv", "declared");
    }
    // A count that fits the bytes but overstates the entries fails on the first missing one.
    let mut b = Builder::valid();
    b.n_kv = Some(b.kvs.len() as u64 + 1);
    assert!(b.parse().is_err());
}

// ---- metadata (G08-G18)

#[test]
fn bad_keys() {
    for len in [u64::MAX, 1 << 48, 1 << 31, 10_000] {
        let mut b = Builder::valid();
        let mut e = len.to_le_bytes().to_vec();
        e.extend_from_slice(b"abc");
        b.kvs.insert(2, e);
        let (_, off, _) = expect_err(b.parse(), "metadata[2] key length", "");
        assert!(off > 24);
    }
    let mut b = Builder::valid();
    b.kvs.insert(1, kv("", T_U8, &[1]));
    expect_err(b.parse(), "metadata[1] key", "empty key");
    let mut b = Builder::valid();
    let mut e = s(b"bad\xFFkey");
    e.extend_from_slice(&T_U8.to_le_bytes());
    e.push(1);
    b.kvs.insert(1, e);
    expect_err(b.parse(), "metadata[1] key", "UTF-8");
    let mut b = Builder::valid();
    b.kvs.insert(1, kv("a\0b", T_U8, &[1]));
    expect_err(b.parse(), "metadata[1] key", "NUL");
    let mut b = Builder::valid();
    b.kvs.push(kv("t.u8", T_U8, &[7]));
    let n = b.kvs.len() - 1;
    expect_err(
        b.parse(),
        &format!("metadata[{n}] key 't.u8'"),
        "duplicate key",
    );
}

#[test]
fn bad_value_types_and_arrays() {
    for ty in [13u32, 0x7FFF_FFFF, u32::MAX] {
        let mut b = Builder::valid();
        b.kvs.insert(1, kv("x", ty, &[0; 8]));
        expect_err(
            b.parse(),
            "metadata[1] 'x' type",
            "unknown metadata value type",
        );
    }
    let mut b = Builder::valid();
    b.kvs
        .insert(1, kv("x", T_ARR, &arr(T_ARR, 1, &arr(T_U8, 1, &[1]))));
    expect_err(b.parse(), "'x' array element type", "nested");
    let mut b = Builder::valid();
    b.kvs.insert(1, kv("x", T_ARR, &arr(77, 1, &[1])));
    expect_err(
        b.parse(),
        "'x' array element type",
        "unknown array element type 77",
    );
    for (et, n) in [
        (T_U8, 1u64 << 63),
        (T_U64, 1 << 61),
        (T_U64, u64::MAX),
        (T_STR, 1_000_000_000),
    ] {
        let mut b = Builder::valid();
        b.kvs.insert(1, kv("x", T_ARR, &arr(et, n, &[0; 16])));
        expect_err(b.parse(), "'x' array length", "");
    }
    // Fits the cap but not the file.
    let mut b = Builder::valid();
    b.kvs
        .insert(1, kv("x", T_ARR, &arr(T_F32, 100_000, &[0; 16])));
    expect_err(b.parse(), "'x' array length", "remain");
    // String element with a bad length inside an array.
    let mut b = Builder::valid();
    let mut p = s(b"ok");
    p.extend_from_slice(&u64::MAX.to_le_bytes());
    b.kvs.insert(1, kv("x", T_ARR, &arr(T_STR, 2, &p)));
    expect_err(b.parse(), "'x'[1] length", "");
    // Invalid UTF-8 string value.
    let mut b = Builder::valid();
    b.kvs.insert(1, kv("x", T_STR, &s(b"\xC3\x28")));
    expect_err(b.parse(), "metadata[1] 'x'", "UTF-8");
    // String longer than what remains, and beyond the 1 GiB cap.
    for len in [5000u64, (1 << 30) + 1] {
        let mut b = Builder::valid();
        let mut p = len.to_le_bytes().to_vec();
        p.extend_from_slice(b"abc");
        b.kvs.insert(1, kv("x", T_STR, &p));
        expect_err(b.parse(), "metadata[1] 'x' length", "");
    }
    // Bool other than 0/1.
    let mut b = Builder::valid();
    b.kvs.insert(1, kv("x", T_BOOL, &[2]));
    expect_err(b.parse(), "metadata[1] 'x'", "BOOL");
}

#[test]
fn bad_alignment() {
    for (a, msg) in [
        (0u32, "non-zero power of two"),
        (13, "power of two"),
        (3, "power of two"),
    ] {
        let mut b = Builder::valid();
        b.kvs
            .push(kv(keys::GENERAL_ALIGNMENT, T_U32, &a.to_le_bytes()));
        let (field, _, _) = expect_err(b.parse(), keys::GENERAL_ALIGNMENT, msg);
        assert_eq!(field, keys::GENERAL_ALIGNMENT);
    }
    // 2^31 is a power of two, but the data section it implies lies past the end of the file.
    let mut b = Builder::valid();
    b.kvs.push(kv(
        keys::GENERAL_ALIGNMENT,
        T_U32,
        &(1u32 << 31).to_le_bytes(),
    ));
    expect_err(b.parse(), "", "general.alignment = 2147483648");
    b.tensors.truncate(1);
    expect_err(b.parse(), "data section", "general.alignment = 2147483648");
    for (ty, payload) in [
        (T_I32, 32i32.to_le_bytes().to_vec()),
        (T_U64, 32u64.to_le_bytes().to_vec()),
        (T_STR, s(b"32")),
        (T_ARR, arr(T_U32, 1, &32u32.to_le_bytes())),
    ] {
        let mut b = Builder::valid();
        b.kvs.push(kv(keys::GENERAL_ALIGNMENT, ty, &payload));
        expect_err(b.parse(), keys::GENERAL_ALIGNMENT, "must be UINT32");
    }
}

// ---- tensor infos (G19-G31)

#[test]
fn bad_tensor_names() {
    let mut b = Builder::valid();
    b.tensors[1].name = vec![b'a'; 64];
    expect_err(b.parse(), "tensor[1] name length", "limit is 63");
    let mut b = Builder::valid();
    b.tensors[1].name = vec![b'a'; 63];
    assert!(b.parse().is_ok());
    let mut b = Builder::valid();
    b.tensors[1].name = vec![];
    expect_err(b.parse(), "tensor[1] name", "empty");
    let mut b = Builder::valid();
    b.tensors[1].name = b"\xFF\xFE".to_vec();
    expect_err(b.parse(), "tensor[1] name", "UTF-8");
    let mut b = Builder::valid();
    b.tensors[2].name = b"token_embd.weight".to_vec();
    expect_err(
        b.parse(),
        "tensor 'token_embd.weight' name",
        "duplicate tensor name",
    );
    // Name length 2^64-1 patched into the bytes.
    let b = Builder::valid();
    let mut bytes = b.bytes();
    let pos = find(&bytes, b"blk.0.attn_q.weight") - 8;
    bytes[pos..pos + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    expect_err(
        GgufFile::from_bytes(bytes),
        "tensor[1] name length",
        "limit",
    );
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).position(|w| w == needle).unwrap()
}

#[test]
fn bad_dims() {
    for n_dims in [5usize, 8] {
        let mut b = Builder::valid();
        b.tensors[1].dims = vec![32; n_dims];
        expect_err(
            b.parse(),
            "tensor 'blk.0.attn_q.weight' n_dims",
            "at most 4",
        );
    }
    // n_dims = 0xFFFFFFFF patched: must fail before looping.
    let mut bytes = Builder::valid().bytes();
    let pos = find(&bytes, b"blk.0.attn_q.weight") + "blk.0.attn_q.weight".len();
    bytes[pos..pos + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    expect_err(
        GgufFile::from_bytes(bytes),
        "n_dims",
        "4294967295 dimensions",
    );
    for ne in [u64::MAX, 1 << 63, (-5i64) as u64] {
        let mut b = Builder::valid();
        b.tensors[1].dims = vec![32, ne];
        expect_err(b.parse(), "tensor 'blk.0.attn_q.weight' ne[1]", "negative");
    }
    let mut b = Builder::valid();
    let big = 4 * i32::MAX as u64;
    b.tensors[0].dims = vec![big, big, big, big];
    expect_err(
        b.parse(),
        "tensor 'token_embd.weight' shape",
        "overflows int64",
    );
    // Element count fits in i64 but the byte size does not (F32: x4).
    let mut b = Builder::valid();
    b.tensors[0].dims = vec![1 << 31, 1 << 31];
    let r = b.parse();
    assert!(r.is_err());
    let mut b = Builder::valid();
    b.tensors[0].dims = vec![(1 << 42) + 1, 1 << 20];
    expect_err(b.parse(), "tensor 'token_embd.weight' shape", "byte size");
    // Zero dims: one element, fine for F32.
    let mut b = Builder::valid();
    b.tensors[0].dims = vec![];
    assert_eq!(b.parse().unwrap().tensors()[0].nbytes, 4);
}

#[test]
fn bad_types_and_blocks() {
    for id in [4u32, 5, 16, 39, 1000, u32::MAX] {
        let mut b = Builder::valid();
        b.tensors[1].ty = id;
        b.tensors[1].nbytes = Some(68);
        let (_, _, msg) = expect_err(
            b.parse(),
            "tensor 'blk.0.attn_q.weight' type",
            &format!("{id}"),
        );
        assert!(msg.contains("Q8_0"), "{msg}");
    }
    let mut b = Builder::valid();
    b.tensors[2].dims = vec![33, 2];
    b.tensors[2].nbytes = Some(36);
    expect_err(
        b.parse(),
        "tensor 'blk.0.ffn_up.weight' ne[0]",
        "block size 32",
    );
}

#[test]
fn bad_offsets_and_layout() {
    // Not a multiple of the alignment.
    let mut b = Builder::valid();
    b.tensors[1].offset = Some(768 + 4);
    expect_err(
        b.parse(),
        "tensor 'blk.0.attn_q.weight' offset",
        "multiple of general.alignment",
    );
    // Huge offsets.
    let mut b = Builder::valid();
    b.tensors[1].offset = Some(u64::MAX);
    expect_err(b.parse(), "tensor 'blk.0.attn_q.weight' offset", "");
    let mut b = Builder::valid();
    b.tensors[1].offset = Some(u64::MAX - 31);
    expect_err(
        b.parse(),
        "tensor 'blk.0.attn_q.weight' offset",
        "overflows",
    );
    let mut b = Builder::valid();
    b.tensors[1].offset = Some(1 << 40);
    expect_err(b.parse(), "tensor 'blk.0.attn_q.weight' data", "not within");
    // Overlap with the previous tensor.
    let mut b = Builder::valid();
    b.tensors[1].offset = Some(0);
    expect_err(b.parse(), "tensor 'blk.0.attn_q.weight' offset", "overlaps");
    // Gap / out of order.
    let mut b = Builder::valid();
    b.tensors[1].offset = Some(768 + 32);
    b.tensors[2].offset = Some(768 + 128);
    expect_err(
        b.parse(),
        "tensor 'blk.0.attn_q.weight' offset",
        "gap or is out of order",
    );
    let mut b = Builder::valid();
    b.tensors.swap(0, 1);
    b.tensors[0].offset = Some(768);
    b.tensors[1].offset = Some(0);
    expect_err(b.parse(), "offset", "out of order");
    // Truncated download: the last tensor's data cut short.
    let bytes = Builder::valid().bytes();
    let r = GgufFile::from_bytes(bytes[..bytes.len() - 1].to_vec());
    expect_err(r, "tensor 'blk.0.ffn_up.weight' data", "not within");
    // Sizes that would overflow the running sum cannot be in bounds either.
    let mut b = Builder::valid();
    b.tensors[0].dims = vec![1 << 40, 1 << 20];
    b.tensors[1].offset = Some(1 << 62);
    b.tensors[2].offset = Some(1 << 63);
    expect_err(b.parse(), "tensor 'token_embd.weight' data", "not within");
}

#[test]
fn tiny_hostile_files_allocate_little() {
    // Each of these is under 100 bytes and declares gigantic sizes; all must fail quickly.
    let mut cases: Vec<Vec<u8>> = vec![];
    let hdr = |nt: u64, nkv: u64| {
        let mut v = b"GGUF".to_vec();
        v.extend_from_slice(&3u32.to_le_bytes());
        v.extend_from_slice(&nt.to_le_bytes());
        v.extend_from_slice(&nkv.to_le_bytes());
        v
    };
    let mut v = hdr(0, 1);
    v.extend(kv("k", T_ARR, &arr(T_U8, 1 << 63, &[])));
    cases.push(v);
    let mut v = hdr(0, 1);
    v.extend(kv("k", T_ARR, &arr(T_STR, (1 << 30) - 1, &[0; 16])));
    cases.push(v);
    let mut v = hdr(0, 1);
    v.extend_from_slice(&(1u64 << 48).to_le_bytes());
    cases.push(v);
    let t0 = std::time::Instant::now();
    for c in cases {
        assert!(GgufFile::from_bytes(c).is_err());
    }
    assert!(t0.elapsed().as_secs_f64() < 1.0);
}
