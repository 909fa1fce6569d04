//! `hologram._core`: the Python face of the engine. This crate does no math: it converts
//! arguments into owned Rust values, releases the GIL around every engine call
//! (`Python::allow_threads`), and maps `EngineError` to Python exceptions (`errors.rs`).
//!
//! Concurrency: a decoder model lives on its own engine thread (`hologram_engine::processor`),
//! which batches every running generation into one forward pass per step. A `Stream` is one
//! submitted generation; its tokens arrive in its inbox whatever thread reads them. Blocking
//! callers wait in `next_step` (GIL released); event loops watch `Engine.notify_fd` and call
//! `Stream.poll`. Tokenizing never touches the engine thread.

mod errors;
mod kernels;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hologram_engine::gguf::{Array, Value};
use hologram_engine::model::bert::Pooling;
use hologram_engine::processor::BATCH_BUCKETS;
use hologram_engine::sample::SamplingParams;
use hologram_engine::tokenizer::Tokenizer;
use hologram_engine::{
    load, Encoder, EngineError, EngineOptions, Event, GenParams, Loaded, ProcessorHandle,
    ProcessorOptions, Request, StepOut,
};
use numpy::{PyArray1, PyArray2, PyArrayMethods};
use pyo3::exceptions::{PyStopIteration, PyTimeoutError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn err(e: EngineError) -> PyErr {
    errors::to_py(e, false)
}

/// One alternative token with its log-probability.
#[pyclass(module = "hologram._core", frozen, get_all)]
struct TopLogprob {
    token: u32,
    text: String,
    bytes: Py<PyBytes>,
    logprob: f32,
}

#[pymethods]
impl TopLogprob {
    fn __repr__(&self) -> String {
        format!(
            "TopLogprob(token={}, text={:?}, logprob={:.4})",
            self.token, self.text, self.logprob
        )
    }
}

/// One generated token.
#[pyclass(module = "hologram._core", frozen, get_all)]
struct Step {
    token: u32,
    text: String,
    token_bytes: Py<PyBytes>,
    logprob: Option<f32>,
    top_logprobs: Vec<Py<TopLogprob>>,
    /// The end-of-generation step that only flushes held-back text (not a generated token).
    flush: bool,
}

#[pymethods]
impl Step {
    fn __repr__(&self) -> String {
        format!(
            "Step(token={}, text={:?}, logprob={:?})",
            self.token, self.text, self.logprob
        )
    }
}

fn make_step(py: Python<'_>, tok: &Tokenizer, s: StepOut, with_logprobs: bool) -> PyResult<Step> {
    let mut top = Vec::with_capacity(s.top.len());
    for &(id, lp) in &s.top {
        let b = tok.token_bytes(id);
        top.push(Py::new(
            py,
            TopLogprob {
                token: id,
                text: String::from_utf8_lossy(b).into_owned(),
                bytes: PyBytes::new(py, b).unbind(),
                logprob: lp,
            },
        )?);
    }
    Ok(Step {
        token: s.token,
        text: s.text,
        token_bytes: PyBytes::new(py, tok.token_bytes(s.token)).unbind(),
        logprob: if with_logprobs { s.logprob } else { None },
        top_logprobs: top,
        flush: s.flush,
    })
}

/// The result of `Engine.generate`.
#[pyclass(module = "hologram._core", frozen, get_all)]
struct GenerationResult {
    text: String,
    token_ids: Vec<u32>,
    finish_reason: String,
    prompt_tokens: usize,
    completion_tokens: usize,
    steps: Vec<Py<Step>>,
}

#[pymethods]
impl GenerationResult {
    fn __repr__(&self) -> String {
        format!(
            "GenerationResult(text={:?}, finish_reason={:?}, prompt_tokens={}, completion_tokens={})",
            self.text, self.finish_reason, self.prompt_tokens, self.completion_tokens
        )
    }
}

#[derive(Default)]
struct StreamState {
    completion_tokens: usize,
    cached_tokens: usize,
    finish_reason: Option<&'static str>,
    token_ids: Vec<u32>,
    /// A failure not raised yet (raised once the steps before it have been returned).
    error: Option<EngineError>,
    /// The final event has been consumed (or the stream was closed).
    done: bool,
}

/// A generation in progress (see `Engine.stream`): one request on the model's engine thread.
/// Safe to use from several threads; `close` may be called while another thread waits in
/// `next_step`.
#[pyclass(module = "hologram._core", frozen)]
struct Stream {
    req: Request,
    tokenizer: Arc<Tokenizer>,
    logprobs: bool,
    state: Mutex<StreamState>,
}

impl Stream {
    /// Apply one event to the state; a token becomes a Step.
    fn absorb(&self, py: Python<'_>, st: &mut StreamState, ev: Event) -> PyResult<Option<Step>> {
        match ev {
            Event::Token(s) => {
                // The end-of-generation flush carries text but is not a generated token.
                if !s.flush {
                    st.completion_tokens += 1;
                    st.token_ids.push(s.token);
                }
                Ok(Some(make_step(py, &self.tokenizer, s, self.logprobs)?))
            }
            Event::Finished {
                reason,
                completion_tokens,
                cached_tokens,
                ..
            } => {
                st.completion_tokens = completion_tokens;
                st.cached_tokens = cached_tokens;
                st.finish_reason = Some(reason.as_str());
                st.done = true;
                Ok(None)
            }
            Event::Failed(e) => {
                st.error = Some(e);
                st.done = true;
                Ok(None)
            }
        }
    }

    fn take_error(st: &mut StreamState) -> PyResult<()> {
        match st.error.take() {
            Some(e) => Err(err(e)),
            None => Ok(()),
        }
    }

    fn step(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Step>> {
        {
            let mut st = lock(&self.state);
            Self::take_error(&mut st)?;
            if st.done {
                return Ok(None);
            }
        }
        let wait = match timeout {
            Some(t) if t.is_finite() && t >= 0.0 => Some(Duration::from_secs_f64(t)),
            Some(t) if t.is_nan() || t < 0.0 => {
                return Err(errors::invalid(format!("timeout must be >= 0, got {t}")))
            }
            _ => None,
        };
        let inbox = self.req.inbox();
        let ev = py.allow_threads(|| inbox.recv(wait));
        let mut st = lock(&self.state);
        match ev {
            Some(ev) => {
                if let Some(step) = self.absorb(py, &mut st, ev)? {
                    return Ok(Some(step));
                }
                Self::take_error(&mut st)?;
                Ok(None)
            }
            None if inbox.is_finished() => {
                // Closed without a final event: cancelled.
                st.done = true;
                Ok(None)
            }
            None => Err(PyTimeoutError::new_err("no token within the timeout")),
        }
    }
}

#[pymethods]
impl Stream {
    /// The request id (what `Engine.take_ready` reports).
    #[getter]
    fn id(&self) -> u64 {
        self.req.id()
    }
    #[getter]
    fn prompt_tokens(&self) -> usize {
        self.req.prompt_tokens()
    }
    #[getter]
    fn completion_tokens(&self) -> usize {
        lock(&self.state).completion_tokens
    }
    #[getter]
    fn finish_reason(&self) -> Option<&'static str> {
        lock(&self.state).finish_reason
    }
    /// Prompt tokens served from the prefix cache (known once finished).
    #[getter]
    fn cached_tokens(&self) -> usize {
        lock(&self.state).cached_tokens
    }
    #[getter]
    fn token_ids(&self) -> Vec<u32> {
        lock(&self.state).token_ids.clone()
    }
    /// True once the generation has ended and every step has been read.
    #[getter]
    fn done(&self) -> bool {
        let st = lock(&self.state);
        st.done && st.error.is_none()
    }

    /// The next step, waiting (GIL released) up to `timeout` seconds (None: no limit). None
    /// when the generation has finished; TimeoutError when nothing arrived in time.
    #[pyo3(signature = (timeout=None))]
    fn next_step(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Step>> {
        self.step(py, timeout)
    }

    /// Every step available now, without waiting (possibly none). Raises the generation's
    /// error once the steps before it have been returned.
    fn poll(&self, py: Python<'_>) -> PyResult<Vec<Step>> {
        let mut evs = Vec::new();
        self.req.inbox().drain(&mut evs);
        let mut st = lock(&self.state);
        let mut out = Vec::with_capacity(evs.len());
        for ev in evs {
            if let Some(step) = self.absorb(py, &mut st, ev)? {
                out.push(step);
            }
        }
        if out.is_empty() {
            Self::take_error(&mut st)?;
            if !st.done && self.req.inbox().is_finished() {
                st.done = true; // cancelled
            }
        }
        Ok(out)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<String> {
        loop {
            match self.step(py, None)? {
                Some(s) if s.text.is_empty() => continue,
                Some(s) => return Ok(s.text),
                None => return Err(PyStopIteration::new_err(())),
            }
        }
    }

    /// Stop generating; the sequence's KV blocks are freed at the engine's next step.
    fn close(&self) {
        self.req.cancel();
        let mut st = lock(&self.state);
        if !st.done {
            st.done = true;
        }
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, pyo3::types::PyTuple>) {
        self.close();
    }
}

/// A prompt: text, or token ids fed as given.
#[derive(FromPyObject)]
enum Prompt {
    Text(String),
    Ids(Vec<u32>),
}

#[derive(FromPyObject)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

/// The loaded model: a decoder (owned by its engine thread) or an encoder (immutable, shared
/// without a lock).
enum Kind {
    Decoder(Arc<ProcessorHandle>),
    Encoder(Arc<Encoder>),
}

#[pyclass(name = "Engine", module = "hologram._core", frozen)]
struct PyEngine {
    kind: Kind,
    tokenizer: Arc<Tokenizer>,
    path: String,
    architecture: String,
    name: String,
    n_ctx: usize,
    n_ctx_train: usize,
    n_vocab: usize,
    n_embd: usize,
    n_threads: usize,
    n_seq_max: usize,
    kv_tokens: usize,
    chat_template: Option<String>,
    metadata: Py<PyDict>,
    /// Sampling defaults: llama.cpp's, with the file's `general.sampling.*` values.
    sampling: SamplingParams,
    /// The settings the file's `general.sampling.*` keys set.
    sampling_from_file: Vec<&'static str>,
}

fn value_to_py(py: Python<'_>, v: &Value) -> PyResult<PyObject> {
    const MAX_ARRAY: usize = 64;
    Ok(match v {
        Value::U8(x) => x.into_pyobject(py)?.into_any().unbind(),
        Value::I8(x) => x.into_pyobject(py)?.into_any().unbind(),
        Value::U16(x) => x.into_pyobject(py)?.into_any().unbind(),
        Value::I16(x) => x.into_pyobject(py)?.into_any().unbind(),
        Value::U32(x) => x.into_pyobject(py)?.into_any().unbind(),
        Value::I32(x) => x.into_pyobject(py)?.into_any().unbind(),
        Value::U64(x) => x.into_pyobject(py)?.into_any().unbind(),
        Value::I64(x) => x.into_pyobject(py)?.into_any().unbind(),
        Value::F32(x) => x.into_pyobject(py)?.into_any().unbind(),
        Value::F64(x) => x.into_pyobject(py)?.into_any().unbind(),
        Value::Bool(x) => pyo3::types::PyBool::new(py, *x)
            .to_owned()
            .into_any()
            .unbind(),
        Value::Str(s) => s.into_pyobject(py)?.into_any().unbind(),
        Value::Array(a) => {
            let n = a.len();
            if n > MAX_ARRAY {
                return Ok(format!("<array of {n} {}>", a.elem_type_name())
                    .into_pyobject(py)?
                    .into_any()
                    .unbind());
            }
            let list = match a {
                Array::U8(v) => PyList::new(py, v)?,
                Array::I8(v) => PyList::new(py, v)?,
                Array::U16(v) => PyList::new(py, v)?,
                Array::I16(v) => PyList::new(py, v)?,
                Array::U32(v) => PyList::new(py, v)?,
                Array::I32(v) => PyList::new(py, v)?,
                Array::U64(v) => PyList::new(py, v)?,
                Array::I64(v) => PyList::new(py, v)?,
                Array::F32(v) => PyList::new(py, v)?,
                Array::F64(v) => PyList::new(py, v)?,
                Array::Bool(v) => PyList::new(py, v)?,
                Array::Str(v) => PyList::new(py, v)?,
            };
            list.into_any().unbind()
        }
    })
}

#[allow(clippy::too_many_arguments)]
fn gen_params(
    max_tokens: i64,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<i64>,
    min_p: Option<f32>,
    repeat_penalty: Option<f32>,
    repeat_last_n: Option<i64>,
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    logit_bias: Option<std::collections::HashMap<u32, f32>>,
    stop: Option<Stop>,
    seed: Option<u64>,
    logprobs: Option<i64>,
    ignore_eos: bool,
    grammar: Option<String>,
    d: &SamplingParams,
) -> PyResult<GenParams> {
    if max_tokens < 0 {
        return Err(errors::invalid(format!(
            "max_tokens must be >= 0, got {max_tokens}"
        )));
    }
    // Unset values take the model's defaults (`Engine.sampling_defaults`: the file's
    // `general.sampling.*` values, else llama.cpp's, which `sampling_defaults()` gives).
    let temperature = temperature.unwrap_or(d.temperature);
    let top_p = top_p.unwrap_or(d.top_p);
    let top_k = top_k.unwrap_or(d.top_k as i64);
    let min_p = min_p.unwrap_or(d.min_p);
    let repeat_penalty = repeat_penalty.unwrap_or(d.repeat_penalty);
    let repeat_last_n = repeat_last_n.unwrap_or(d.repeat_last_n as i64);
    let presence_penalty = presence_penalty.unwrap_or(d.presence_penalty);
    let frequency_penalty = frequency_penalty.unwrap_or(d.frequency_penalty);
    if top_k < 0 || repeat_last_n < 0 {
        return Err(errors::invalid("top_k and repeat_last_n must be >= 0"));
    }
    let logprobs = match logprobs {
        None => None,
        Some(k) if (0..=100).contains(&k) => Some(k as usize),
        Some(k) => {
            return Err(errors::invalid(format!(
                "logprobs must be in [0, 100], got {k}"
            )))
        }
    };
    Ok(GenParams {
        max_tokens: max_tokens as usize,
        sampling: SamplingParams {
            temperature,
            top_k: top_k as usize,
            top_p,
            min_p,
            repeat_penalty,
            repeat_last_n: repeat_last_n as usize,
            presence_penalty,
            frequency_penalty,
            logit_bias: logit_bias
                .map(|m| m.into_iter().collect())
                .unwrap_or_default(),
            seed,
        },
        stop: match stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s],
            Some(Stop::Many(v)) => v,
        }
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect(),
        logprobs,
        ignore_eos,
        grammar,
    })
}

impl PyEngine {
    fn prompt_ids(
        &self,
        py: Python<'_>,
        prompt: Prompt,
        add_special: bool,
        parse_special: bool,
    ) -> Vec<u32> {
        match prompt {
            Prompt::Ids(ids) => ids,
            Prompt::Text(t) => {
                let tok = &self.tokenizer;
                py.allow_threads(|| tok.encode(&t, add_special, parse_special))
            }
        }
    }

    fn pooling_arg(&self, pooling: Option<&str>) -> PyResult<Pooling> {
        match pooling {
            None => Ok(match &self.kind {
                Kind::Encoder(e) => e.default_pooling(),
                Kind::Decoder(_) => Pooling::Mean,
            }),
            Some(p) => Pooling::from_name(p).ok_or_else(|| {
                errors::invalid(format!(
                    "pooling must be one of mean, cls, last, none; got {p:?}"
                ))
            }),
        }
    }

    /// Embed a batch; with Pooling::None (one input) returns the per-token states.
    fn embed_many(
        &self,
        py: Python<'_>,
        batch: Vec<Vec<u32>>,
        pooling: Pooling,
        normalize: bool,
    ) -> PyResult<Vec<f32>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(i) = batch.iter().position(Vec::is_empty) {
            return Err(errors::invalid(format!("input {i} has no tokens")));
        }
        if let Some(i) = batch.iter().position(|b| b.len() > self.n_ctx) {
            return Err(err(EngineError::ContextOverflow(format!(
                "input {i} has {} tokens; the model takes at most {}",
                batch[i].len(),
                self.n_ctx
            ))));
        }
        match &self.kind {
            Kind::Encoder(enc) => py
                .allow_threads(|| enc.vectors(&batch, pooling, normalize))
                .map_err(err),
            Kind::Decoder(proc) => py
                .allow_threads(|| proc.run(move |e| e.vectors(&batch, pooling, normalize)))
                .map_err(err),
        }
    }

    fn decoder(&self) -> PyResult<&Arc<ProcessorHandle>> {
        match &self.kind {
            Kind::Decoder(p) => Ok(p),
            Kind::Encoder(_) => Err(errors::invalid(format!(
                "{} is an embedding model ({}): it cannot generate or give logits; use embed()",
                self.path, self.architecture
            ))),
        }
    }

    fn start(
        &self,
        py: Python<'_>,
        prompt: Vec<u32>,
        params: GenParams,
        group: Option<u64>,
    ) -> PyResult<Stream> {
        let logprobs = params.logprobs.is_some();
        let proc = self.decoder()?;
        let req = py
            .allow_threads(|| proc.submit_in_group(prompt, params, group))
            .map_err(err)?;
        Ok(Stream {
            req,
            tokenizer: self.tokenizer.clone(),
            logprobs,
            state: Mutex::new(StreamState::default()),
        })
    }
}

#[pymethods]
impl PyEngine {
    #[new]
    #[pyo3(signature = (path, n_ctx=2048, n_threads=None, n_batch=512, n_seq_max=16,
        kv_tokens=None, step_tokens=256))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        n_ctx: i64,
        n_threads: Option<i64>,
        n_batch: i64,
        n_seq_max: i64,
        kv_tokens: Option<i64>,
        step_tokens: i64,
    ) -> PyResult<Self> {
        let pos = |name: &str, v: i64| -> PyResult<usize> {
            if v <= 0 {
                Err(errors::invalid(format!("{name} must be positive, got {v}")))
            } else {
                Ok(v as usize)
            }
        };
        let opts = EngineOptions {
            n_ctx: pos("n_ctx", n_ctx)?,
            n_threads: n_threads.map(|t| pos("n_threads", t)).transpose()?,
            n_batch: pos("n_batch", n_batch)?,
            n_seq_max: pos("n_seq_max", n_seq_max)?,
            kv_tokens: kv_tokens.map(|t| pos("kv_tokens", t)).transpose()?,
        };
        let step_tokens = pos("step_tokens", step_tokens)?;
        let ctx = opts.n_ctx;
        let loaded = py
            .allow_threads(|| load(&path, opts))
            .map_err(|e| errors::to_py(e, true))?;
        let metadata = PyDict::new(py);
        let gguf = match &loaded {
            Loaded::Decoder(e) => e.gguf(),
            Loaded::Encoder(e) => e.gguf(),
        };
        for (k, v) in gguf.metadata() {
            metadata.set_item(k, value_to_py(py, v)?)?;
        }
        let (sampling, sampling_from_file) = SamplingParams::from_metadata(|k| gguf.get(k), ctx);
        let name = gguf
            .get_str("general.name")
            .ok()
            .flatten()
            .unwrap_or("")
            .to_string();
        let chat_template = gguf
            .get_str("tokenizer.chat_template")
            .ok()
            .flatten()
            .map(str::to_string);
        Ok(match loaded {
            Loaded::Decoder(engine) => {
                let c = engine.config().clone();
                let (path, n_threads, o) = (
                    engine.path().to_string(),
                    engine.n_threads(),
                    engine.options().clone(),
                );
                let kv_tokens = engine.kv().capacity_tokens();
                let tokenizer = engine.tokenizer().clone();
                let proc = ProcessorHandle::start(*engine, ProcessorOptions { step_tokens })
                    .map_err(|e| errors::to_py(e, true))?;
                PyEngine {
                    tokenizer,
                    path,
                    architecture: c.arch.name().to_string(),
                    name,
                    n_ctx: o.n_ctx,
                    n_ctx_train: c.n_ctx_train,
                    n_vocab: c.n_vocab,
                    n_embd: c.n_embd,
                    n_threads,
                    n_seq_max: o.n_seq_max,
                    kv_tokens,
                    chat_template,
                    metadata: metadata.unbind(),
                    sampling,
                    sampling_from_file,
                    kind: Kind::Decoder(Arc::new(proc)),
                }
            }
            Loaded::Encoder(enc) => {
                let c = &enc.model().cfg;
                PyEngine {
                    tokenizer: enc.tokenizer().clone(),
                    path: enc.path().to_string(),
                    architecture: "bert".to_string(),
                    name,
                    // An encoder takes inputs up to its trained length, whatever n_ctx says.
                    n_ctx: c.n_ctx_train,
                    n_ctx_train: c.n_ctx_train,
                    n_vocab: c.n_vocab,
                    n_embd: c.n_embd,
                    n_threads: enc.n_threads(),
                    n_seq_max: 0,
                    kv_tokens: 0,
                    chat_template,
                    metadata: metadata.unbind(),
                    sampling,
                    sampling_from_file,
                    kind: Kind::Encoder(Arc::from(enc)),
                }
            }
        })
    }

    #[getter]
    fn path(&self) -> &str {
        &self.path
    }
    #[getter]
    fn architecture(&self) -> &str {
        &self.architecture
    }
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }
    #[getter]
    fn n_ctx(&self) -> usize {
        self.n_ctx
    }
    #[getter]
    fn n_ctx_train(&self) -> usize {
        self.n_ctx_train
    }
    #[getter]
    fn n_vocab(&self) -> usize {
        self.n_vocab
    }
    #[getter]
    fn n_embd(&self) -> usize {
        self.n_embd
    }
    #[getter]
    fn n_threads(&self) -> usize {
        self.n_threads
    }
    #[getter]
    fn n_seq_max(&self) -> usize {
        self.n_seq_max
    }
    /// Token slots of the KV block pool (0 for embedding models).
    #[getter]
    fn kv_tokens(&self) -> usize {
        self.kv_tokens
    }
    /// A file descriptor that becomes readable when some stream has new steps: read and
    /// discard its bytes, then call `take_ready`. None for embedding models.
    #[getter]
    fn notify_fd(&self) -> Option<i32> {
        match &self.kind {
            Kind::Decoder(p) => Some(p.notify_fd()),
            Kind::Encoder(_) => None,
        }
    }
    /// Ids of the streams that received steps since the last call (may repeat).
    fn take_ready(&self) -> Vec<u64> {
        match &self.kind {
            Kind::Decoder(p) => p.take_ready(),
            Kind::Encoder(_) => Vec::new(),
        }
    }
    /// The engine thread's counters and gauges (see the stub).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        if let Kind::Decoder(p) = &self.kind {
            let st = p.stats();
            d.set_item("running", st.running)?;
            d.set_item("waiting", st.waiting)?;
            d.set_item("kv_blocks_total", st.kv_blocks_total)?;
            d.set_item("kv_blocks_free", st.kv_blocks_free)?;
            d.set_item("kv_blocks_cached", st.kv_blocks_cached)?;
            d.set_item("prefix_hit_tokens", st.prefix_hit_tokens)?;
            d.set_item("kv_block_tokens", hologram_engine::kv::BLOCK_SIZE)?;
            d.set_item("preemptions", st.preemptions)?;
            d.set_item("steps", st.steps)?;
            d.set_item("prompt_rows", st.prompt_rows)?;
            d.set_item("decode_rows", st.decode_rows)?;
            d.set_item("batch_buckets", BATCH_BUCKETS.to_vec())?;
            d.set_item("batch_hist", st.batch_hist.to_vec())?;
        }
        Ok(d)
    }
    /// The defaults of this model's generations: its file's `general.sampling.*` values, else
    /// llama.cpp's.
    #[getter]
    fn sampling_defaults<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        defaults_dict(py, &self.sampling)
    }
    /// The settings of `sampling_defaults` that come from the file's `general.sampling.*` keys.
    #[getter]
    fn sampling_from_file(&self) -> Vec<&'static str> {
        self.sampling_from_file.clone()
    }
    #[getter]
    fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.metadata.bind(py).copy()
    }
    #[getter]
    fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }
    #[getter]
    fn bos_id(&self) -> Option<u32> {
        self.tokenizer.bos()
    }
    #[getter]
    fn eos_id(&self) -> Option<u32> {
        self.tokenizer.eos()
    }
    #[getter]
    fn bos_token(&self) -> Option<String> {
        self.tokenizer
            .bos()
            .map(|t| self.tokenizer.token_text(t).to_string())
    }
    #[getter]
    fn eos_token(&self) -> Option<String> {
        self.tokenizer
            .eos()
            .map(|t| self.tokenizer.token_text(t).to_string())
    }
    #[getter]
    fn add_bos(&self) -> bool {
        self.tokenizer.add_bos()
    }
    #[getter]
    fn is_embedding_model(&self) -> bool {
        matches!(self.kind, Kind::Encoder(_))
    }

    /// The pooling `embed` uses by default: the embedding model's own, else "mean".
    #[getter]
    fn default_pooling(&self) -> &'static str {
        match &self.kind {
            Kind::Encoder(e) => e.default_pooling().name(),
            Kind::Decoder(_) => "mean",
        }
    }

    #[pyo3(signature = (text, add_special=true, parse_special=false))]
    fn tokenize(
        &self,
        py: Python<'_>,
        text: String,
        add_special: bool,
        parse_special: bool,
    ) -> Vec<u32> {
        let tok = &self.tokenizer;
        py.allow_threads(|| tok.encode(&text, add_special, parse_special))
    }

    /// Tokenizes the concatenation of `segments` (`(text, parse_special)` pairs): control
    /// tokens are recognised only wholly inside segments that allow them.
    #[pyo3(signature = (segments, add_special=true))]
    fn tokenize_segments(
        &self,
        py: Python<'_>,
        segments: Vec<(String, bool)>,
        add_special: bool,
    ) -> Vec<u32> {
        let tok = &self.tokenizer;
        py.allow_threads(|| {
            let segs: Vec<(&str, bool)> = segments.iter().map(|(s, b)| (s.as_str(), *b)).collect();
            tok.encode_segments(&segs, add_special)
        })
    }

    /// The control-token texts occurring in `text`, longest first.
    fn control_texts_in(&self, py: Python<'_>, text: String) -> Vec<String> {
        let tok = &self.tokenizer;
        py.allow_threads(|| {
            tok.control_texts_in(&text)
                .into_iter()
                .map(str::to_owned)
                .collect()
        })
    }

    fn detokenize(&self, py: Python<'_>, ids: Vec<u32>) -> PyResult<String> {
        if let Some(t) = ids.iter().find(|&&t| t as usize >= self.n_vocab) {
            return Err(errors::invalid(format!(
                "token id {t} is out of range (n_vocab {})",
                self.n_vocab
            )));
        }
        let tok = &self.tokenizer;
        Ok(py.allow_threads(|| tok.decode(&ids, false)))
    }

    fn token_to_bytes<'py>(&self, py: Python<'py>, id: u32) -> PyResult<Bound<'py, PyBytes>> {
        if id as usize >= self.n_vocab {
            return Err(errors::invalid(format!(
                "token id {id} is out of range (n_vocab {})",
                self.n_vocab
            )));
        }
        Ok(PyBytes::new(py, self.tokenizer.token_bytes(id)))
    }

    fn is_eog(&self, id: u32) -> bool {
        self.tokenizer.is_eog(id)
    }

    #[pyo3(signature = (prompt, max_tokens=128, temperature=None, top_p=None, top_k=None,
        min_p=None, repeat_penalty=None, repeat_last_n=None, presence_penalty=None,
        frequency_penalty=None,
        logit_bias=None, stop=None, seed=None, logprobs=None, add_special=true, parse_special=true,
        ignore_eos=false, grammar=None))]
    #[allow(clippy::too_many_arguments)]
    fn generate(
        &self,
        py: Python<'_>,
        prompt: Prompt,
        max_tokens: i64,
        temperature: Option<f32>,
        top_p: Option<f32>,
        top_k: Option<i64>,
        min_p: Option<f32>,
        repeat_penalty: Option<f32>,
        repeat_last_n: Option<i64>,
        presence_penalty: Option<f32>,
        frequency_penalty: Option<f32>,
        logit_bias: Option<std::collections::HashMap<u32, f32>>,
        stop: Option<Stop>,
        seed: Option<u64>,
        logprobs: Option<i64>,
        add_special: bool,
        parse_special: bool,
        ignore_eos: bool,
        grammar: Option<String>,
    ) -> PyResult<GenerationResult> {
        let params = gen_params(
            max_tokens,
            temperature,
            top_p,
            top_k,
            min_p,
            repeat_penalty,
            repeat_last_n,
            presence_penalty,
            frequency_penalty,
            logit_bias,
            stop,
            seed,
            logprobs,
            ignore_eos,
            grammar,
            &self.sampling,
        )?;
        let ids = self.prompt_ids(py, prompt, add_special, parse_special);
        let stream = self.start(py, ids, params, None)?;
        let mut text = String::new();
        let mut steps = Vec::new();
        while let Some(s) = stream.step(py, None)? {
            text.push_str(&s.text);
            if stream.logprobs && !s.flush {
                steps.push(Py::new(py, s)?);
            }
        }
        let st = lock(&stream.state);
        Ok(GenerationResult {
            text,
            token_ids: st.token_ids.clone(),
            finish_reason: st.finish_reason.unwrap_or("stop").to_string(),
            prompt_tokens: stream.req.prompt_tokens(),
            completion_tokens: st.completion_tokens,
            steps,
        })
    }

    #[pyo3(signature = (prompt, max_tokens=128, temperature=None, top_p=None, top_k=None,
        min_p=None, repeat_penalty=None, repeat_last_n=None, presence_penalty=None,
        frequency_penalty=None,
        logit_bias=None, stop=None, seed=None, logprobs=None, add_special=true, parse_special=true,
        ignore_eos=false, group=None, grammar=None))]
    #[allow(clippy::too_many_arguments)]
    fn stream(
        &self,
        py: Python<'_>,
        prompt: Prompt,
        max_tokens: i64,
        temperature: Option<f32>,
        top_p: Option<f32>,
        top_k: Option<i64>,
        min_p: Option<f32>,
        repeat_penalty: Option<f32>,
        repeat_last_n: Option<i64>,
        presence_penalty: Option<f32>,
        frequency_penalty: Option<f32>,
        logit_bias: Option<std::collections::HashMap<u32, f32>>,
        stop: Option<Stop>,
        seed: Option<u64>,
        logprobs: Option<i64>,
        add_special: bool,
        parse_special: bool,
        ignore_eos: bool,
        group: Option<u64>,
        grammar: Option<String>,
    ) -> PyResult<Stream> {
        let params = gen_params(
            max_tokens,
            temperature,
            top_p,
            top_k,
            min_p,
            repeat_penalty,
            repeat_last_n,
            presence_penalty,
            frequency_penalty,
            logit_bias,
            stop,
            seed,
            logprobs,
            ignore_eos,
            grammar,
            &self.sampling,
        )?;
        let ids = self.prompt_ids(py, prompt, add_special, parse_special);
        self.start(py, ids, params, group)
    }

    /// Compile `grammar` (structured output) without generating: raises InvalidArgumentError
    /// naming what is wrong. The compiled grammar is kept, so a generation with it that
    /// follows does not compile it again.
    fn check_grammar(&self, py: Python<'_>, grammar: String) -> PyResult<()> {
        let proc = self.decoder()?.clone();
        py.allow_threads(move || proc.grammars().check(&grammar))
            .map_err(err)
    }

    /// Logits for every position of `ids`: float32 array (len(ids), n_vocab).
    fn logits<'py>(&self, py: Python<'py>, ids: Vec<u32>) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let nv = self.n_vocab;
        let engine = self.decoder()?;
        let n = ids.len();
        let buf = py
            .allow_threads(|| {
                engine.run(move |e| {
                    let mut out = vec![0f32; n * nv];
                    e.logits_all(&ids, &mut out).map(|_| out)
                })
            })
            .map_err(err)?;
        PyArray1::from_vec(py, buf).reshape([n, nv])
    }

    /// Per-position logprobs of `ids` (see the stub).
    #[pyo3(signature = (ids, top=0))]
    fn prompt_logprobs(
        &self,
        py: Python<'_>,
        ids: Vec<u32>,
        top: usize,
    ) -> PyResult<Vec<(f32, Vec<Py<TopLogprob>>)>> {
        let engine = self.decoder()?;
        let rows = py
            .allow_threads(|| engine.run(move |e| e.prompt_logprobs(&ids, top.min(100))))
            .map_err(err)?;
        let tok = &self.tokenizer;
        rows.into_iter()
            .map(|(lp, alts)| {
                let alts = alts
                    .into_iter()
                    .map(|(id, l)| {
                        let b = tok.token_bytes(id);
                        Py::new(
                            py,
                            TopLogprob {
                                token: id,
                                text: String::from_utf8_lossy(b).into_owned(),
                                bytes: PyBytes::new(py, b).unbind(),
                                logprob: l,
                            },
                        )
                    })
                    .collect::<PyResult<Vec<_>>>()?;
                Ok((lp, alts))
            })
            .collect()
    }

    /// One pooled vector for `ids` (see the stub for `pooling`).
    #[pyo3(signature = (ids, pooling=None, normalize=true))]
    fn embed<'py>(
        &self,
        py: Python<'py>,
        ids: Vec<u32>,
        pooling: Option<&str>,
        normalize: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let n = ids.len();
        let e = self.n_embd;
        let pooling = self.pooling_arg(pooling)?;
        let out = self.embed_many(py, vec![ids], pooling, normalize)?;
        if pooling == Pooling::None {
            return Ok(PyArray1::from_vec(py, out).reshape([n, e])?.into_any());
        }
        Ok(PyArray1::from_vec(py, out).into_any())
    }

    /// Pooled vectors for a batch of token sequences, computed in one pass where the model
    /// allows: float32 array `(len(batch), n_embd)`.
    #[pyo3(signature = (batch, pooling=None, normalize=true))]
    fn embed_batch<'py>(
        &self,
        py: Python<'py>,
        batch: Vec<Vec<u32>>,
        pooling: Option<&str>,
        normalize: bool,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let pooling = self.pooling_arg(pooling)?;
        if pooling == Pooling::None {
            return Err(errors::invalid(
                "embed_batch needs a pooling other than \"none\"",
            ));
        }
        let n = batch.len();
        let out = self.embed_many(py, batch, pooling, normalize)?;
        PyArray1::from_vec(py, out).reshape([n, self.n_embd])
    }

    fn __repr__(&self) -> String {
        format!(
            "Engine(path={:?}, architecture={:?}, n_ctx={}, n_threads={})",
            self.path, self.architecture, self.n_ctx, self.n_threads
        )
    }
}

/// The sampling defaults every front end uses for values a request leaves unset.
#[pyfunction]
fn sampling_defaults(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    defaults_dict(py, &SamplingParams::default())
}

fn defaults_dict<'py>(py: Python<'py>, d: &SamplingParams) -> PyResult<Bound<'py, PyDict>> {
    // An f32 as the f64 with the same shortest decimal form (0.8, not 0.800000011920929).
    let f = |x: f32| x.to_string().parse::<f64>().unwrap_or(f64::from(x));
    let out = PyDict::new(py);
    out.set_item("temperature", f(d.temperature))?;
    out.set_item("top_k", d.top_k)?;
    out.set_item("top_p", f(d.top_p))?;
    out.set_item("min_p", f(d.min_p))?;
    out.set_item("repeat_penalty", f(d.repeat_penalty))?;
    out.set_item("repeat_last_n", d.repeat_last_n)?;
    out.set_item("presence_penalty", f(d.presence_penalty))?;
    out.set_item("frequency_penalty", f(d.frequency_penalty))?;
    Ok(out)
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    errors::register(m)?;
    m.add_class::<PyEngine>()?;
    m.add_class::<Stream>()?;
    m.add_class::<Step>()?;
    m.add_class::<TopLogprob>()?;
    m.add_class::<GenerationResult>()?;
    m.add_function(wrap_pyfunction!(sampling_defaults, m)?)?;
    kernels::register(m)?;
    Ok(())
}
