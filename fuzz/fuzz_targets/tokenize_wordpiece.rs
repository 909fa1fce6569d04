//! WordPiece (all-MiniLM-L6-v2's vocabulary, each normalisation setting): encode / decode
//! arbitrary input without panicking, and re-encoding the decoded text gives the same ids.

#![no_main]

#[path = "../harness.rs"]
mod harness;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    harness::tokenize(harness::wordpiece_tokenizers(), data);
});
