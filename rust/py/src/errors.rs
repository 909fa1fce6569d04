//! Python exception classes and the one mapping from `EngineError` to them.
//!
//! The classes are created at module init with `type(name, bases, ns)` so they can inherit from
//! both `HologramError` and `ValueError` (e.g. `ModelLoadError`), which `create_exception!`
//! cannot express.

use hologram_engine::EngineError;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyDict, PyTuple, PyType};

pub struct Classes {
    pub hologram: Py<PyType>,
    pub model_load: Py<PyType>,
    pub gguf: Py<PyType>,
    pub unsupported: Py<PyType>,
    pub context_overflow: Py<PyType>,
    pub kv_full: Py<PyType>,
    pub invalid_argument: Py<PyType>,
    pub internal: Py<PyType>,
}

static CLASSES: GILOnceCell<Classes> = GILOnceCell::new();

fn make<'py>(
    py: Python<'py>,
    name: &str,
    bases: Vec<Bound<'py, PyType>>,
    doc: &str,
) -> PyResult<Bound<'py, PyType>> {
    let ns = PyDict::new(py);
    ns.set_item("__module__", "hologram")?;
    ns.set_item("__doc__", doc)?;
    let bases = PyTuple::new(py, bases)?;
    let t = py.get_type::<PyType>().call1((name, bases, ns))?;
    Ok(t.downcast_into::<PyType>()?)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let value_error = py.get_type::<PyValueError>();
    let base = make(
        py,
        "HologramError",
        vec![py.get_type::<PyException>()],
        "Base class of hologram's errors.",
    )?;
    let model_load = make(
        py,
        "ModelLoadError",
        vec![base.clone(), value_error.clone()],
        "The model file could not be loaded (malformed, inconsistent or unsupported).",
    )?;
    let gguf = make(
        py,
        "GGUFError",
        vec![model_load.clone()],
        "The GGUF container is malformed.",
    )?;
    let unsupported = make(
        py,
        "UnsupportedModelError",
        vec![model_load.clone()],
        "A well-formed model that hologram does not run (architecture, tensor type, tokenizer).",
    )?;
    let context_overflow = make(
        py,
        "ContextOverflowError",
        vec![base.clone(), value_error.clone()],
        "The request does not fit in the context window.",
    )?;
    let kv_full = make(
        py,
        "KVCacheFullError",
        vec![base.clone()],
        "No room left in the KV cache.",
    )?;
    let invalid_argument = make(
        py,
        "InvalidArgumentError",
        vec![base.clone(), value_error],
        "An invalid argument.",
    )?;
    let internal = make(
        py,
        "InternalError",
        vec![base.clone()],
        "A failure inside the engine (kernel, thread pool, engine thread): not the caller's fault.",
    )?;
    for t in [
        &internal,
        &base,
        &model_load,
        &gguf,
        &unsupported,
        &context_overflow,
        &kv_full,
        &invalid_argument,
    ] {
        m.add(t.name()?, t)?;
    }
    let _ = CLASSES.set(
        py,
        Classes {
            hologram: base.unbind(),
            model_load: model_load.unbind(),
            gguf: gguf.unbind(),
            unsupported: unsupported.unbind(),
            context_overflow: context_overflow.unbind(),
            kv_full: kv_full.unbind(),
            invalid_argument: invalid_argument.unbind(),
            internal: internal.unbind(),
        },
    );
    Ok(())
}

fn raise(cls: impl FnOnce(&Classes) -> &Py<PyType>, msg: String) -> PyErr {
    Python::with_gil(|py| match CLASSES.get(py) {
        Some(c) => PyErr::from_type(cls(c).bind(py).clone(), msg),
        None => PyException::new_err(msg),
    })
}

/// Convert an engine error into the matching Python exception. `loading` marks errors raised
/// while opening a model, which are all `ModelLoadError`s.
pub fn to_py(e: EngineError, loading: bool) -> PyErr {
    let msg = e.to_string();
    match e {
        EngineError::Gguf { .. } => raise(|c| &c.gguf, msg),
        EngineError::Unsupported(_) if loading => raise(|c| &c.unsupported, msg),
        EngineError::InvalidModel(_) | EngineError::Io { .. } | EngineError::Unsupported(_)
            if loading =>
        {
            raise(|c| &c.model_load, msg)
        }
        EngineError::Io { .. } => raise(|c| &c.hologram, msg),
        EngineError::InvalidModel(_) => raise(|c| &c.model_load, msg),
        EngineError::Unsupported(_) => raise(|c| &c.invalid_argument, msg),
        EngineError::ContextOverflow(_) => raise(|c| &c.context_overflow, msg),
        EngineError::KvCacheFull(_) => raise(|c| &c.kv_full, msg),
        EngineError::InvalidArgument(_) if loading => raise(|c| &c.model_load, msg),
        EngineError::InvalidArgument(_) => raise(|c| &c.invalid_argument, msg),
        EngineError::Internal(_) => raise(|c| &c.internal, msg),
    }
}

pub fn invalid(msg: impl Into<String>) -> PyErr {
    raise(|c| &c.invalid_argument, msg.into())
}
