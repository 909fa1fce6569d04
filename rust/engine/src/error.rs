//! The engine's one error type. Every failure the engine can report is a variant here; the
//! Python bindings map each variant to an exception class (`rust/py/src/errors.rs`).

use thiserror::Error;

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum EngineError {
    /// I/O failure opening or mapping a file.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The GGUF container is malformed: names the field and the byte offset where it was read.
    #[error("malformed GGUF: {field} at byte offset {offset}: {msg}")]
    Gguf {
        field: String,
        offset: u64,
        msg: String,
    },
    /// The container is well formed but the model it describes is not (hyper-parameters,
    /// tensor shapes, tokenizer arrays).
    #[error("invalid model: {0}")]
    InvalidModel(String),
    /// A well-formed model we do not support (architecture, tensor type, tokenizer kind).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The request does not fit in the context window.
    #[error("context overflow: {0}")]
    ContextOverflow(String),
    /// The KV cache has no free blocks left for another sequence or token.
    #[error("KV cache full: {0}")]
    KvCacheFull(String),
    /// An argument from the caller is invalid (token id out of range, bad sampling value...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A failure inside the engine (kernel, thread pool, engine thread gone): not the caller's
    /// fault.
    #[error("internal error: {0}")]
    Internal(String),
}

impl EngineError {
    pub fn gguf(field: impl Into<String>, offset: u64, msg: impl Into<String>) -> Self {
        EngineError::Gguf {
            field: field.into(),
            offset,
            msg: msg.into(),
        }
    }
    pub fn invalid_model(msg: impl Into<String>) -> Self {
        EngineError::InvalidModel(msg.into())
    }
}
