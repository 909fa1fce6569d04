//! GGUF container reader (owned by the gguf work; placeholder).
