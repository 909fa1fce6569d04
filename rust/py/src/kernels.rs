//! Kernel entry points for tests: dequantize and dot through a chosen ISA path, so pytest can
//! check every SIMD path against the `gguf` package's numpy reference.

use hologram_engine::model::weights::packing_enabled;
use hologram_kernels::packed::{PackedKernel, PackedMatrix};
use hologram_kernels::simd::{self, Isa};
use hologram_kernels::QuantType;
use numpy::{PyArray1, PyReadonlyArray1};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::errors::invalid;

fn isa_arg(isa: Option<&str>) -> PyResult<Isa> {
    match isa {
        None => Ok(simd::active()),
        Some(name) => {
            let i = Isa::from_name(name).ok_or_else(|| invalid(format!("unknown ISA {name:?}")))?;
            if !i.is_available() {
                return Err(invalid(format!("ISA {name} is not available on this CPU")));
            }
            Ok(i)
        }
    }
}

fn type_arg(ggml_type: u32) -> PyResult<QuantType> {
    QuantType::from_ggml_id(ggml_type)
        .ok_or_else(|| invalid(format!("unknown GGML type {ggml_type}")))
}

#[pyfunction]
#[pyo3(signature = (ggml_type, data, n, isa=None))]
fn dequantize<'py>(
    py: Python<'py>,
    ggml_type: u32,
    data: &[u8],
    n: usize,
    isa: Option<&str>,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    let t = type_arg(ggml_type)?;
    let isa = isa_arg(isa)?;
    let mut out = vec![0f32; n];
    hologram_kernels::dequantize_row_isa(isa, t, data, &mut out)
        .map_err(|e| invalid(e.to_string()))?;
    Ok(PyArray1::from_vec(py, out))
}

#[pyfunction]
#[pyo3(signature = (ggml_type, w, x, isa=None))]
fn vec_dot(
    ggml_type: u32,
    w: &[u8],
    x: PyReadonlyArray1<'_, f32>,
    isa: Option<&str>,
) -> PyResult<f32> {
    let t = type_arg(ggml_type)?;
    let isa = isa_arg(isa)?;
    let x = x.as_slice().map_err(|e| invalid(e.to_string()))?;
    let mut scratch = Vec::new();
    hologram_kernels::vec_dot_f32(isa, t, w, x, &mut scratch).map_err(|e| invalid(e.to_string()))
}

#[pyfunction]
fn available_isas() -> Vec<&'static str> {
    simd::available().into_iter().map(Isa::name).collect()
}

#[pyfunction]
fn active_isa() -> &'static str {
    simd::active().name()
}

/// The kernel choices this process makes (for benchmark reports): `isa` = the tier of the
/// row-major kernels (every format that is not packed), `detected` = the best verified tier of
/// this CPU, `available` = every tier it can run, `packed` = weights of `packed_formats` are
/// repacked at load and run the packed matmul (`packed_kernel`: `avx2`, `avx-vnni` with 8-row
/// panels or `avx512-vnni` with 16-row panels), `vnni` = that matmul uses `vpdpbusd`.
#[pyfunction]
fn kernel_info(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    let packs = packing_enabled();
    d.set_item("isa", simd::active().name())?;
    d.set_item("detected", simd::detected().name())?;
    d.set_item("available", available_isas())?;
    d.set_item("packed", packs)?;
    let k = PackedKernel::preferred();
    let formats: Vec<&'static str> = if packs {
        (0..64)
            .filter_map(QuantType::from_ggml_id)
            .filter(|&t| PackedMatrix::supports_kernel(t, k))
            .map(QuantType::name)
            .collect()
    } else {
        Vec::new()
    };
    d.set_item("packed_formats", formats)?;
    d.set_item("packed_kernel", if packs { k.name() } else { "none" })?;
    d.set_item(
        "vnni",
        packs && matches!(k, PackedKernel::AvxVnni | PackedKernel::Avx512Vnni),
    )?;
    Ok(d)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(kernel_info, m)?)?;
    m.add_function(wrap_pyfunction!(dequantize, m)?)?;
    m.add_function(wrap_pyfunction!(vec_dot, m)?)?;
    m.add_function(wrap_pyfunction!(available_isas, m)?)?;
    m.add_function(wrap_pyfunction!(active_isa, m)?)?;
    Ok(())
}
