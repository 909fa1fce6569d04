//! Byte edits (interesting u32/u64 values, truncation, insertion, deletion) of small valid GGUF
//! files, so every run starts from a file that loads completely.

#![no_main]

#[path = "../harness.rs"]
mod harness;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = harness::gguf_patch(data);
});
