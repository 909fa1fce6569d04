//! Byte-level BPE (SmolLM2's vocabulary under every pre-tokenizer): encode / decode / stream
//! decode arbitrary input without panicking, and the lossless round trip.

#![no_main]

#[path = "../harness.rs"]
mod harness;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    harness::tokenize(harness::bpe_tokenizers(), data);
});
