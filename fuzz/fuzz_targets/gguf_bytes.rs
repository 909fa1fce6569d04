//! Arbitrary bytes as a GGUF file: container, tokenizer, model config and weights load as far as
//! they go; nothing panics and the reader's invariants hold.

#![no_main]

#[path = "../harness.rs"]
mod harness;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = harness::gguf(data);
});
