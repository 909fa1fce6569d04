//! SentencePiece (gemma3 and LLaMA vocabularies): encode / decode / stream decode arbitrary
//! input without panicking, and the round trip up to the escaped space.

#![no_main]

#[path = "../harness.rs"]
mod harness;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    harness::tokenize(harness::spm_tokenizers(), data);
});
