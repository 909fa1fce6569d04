//! Incremental UTF-8 decoding of a token stream.
//!
//! A token's bytes need not end on a character boundary (byte-level BPE splits emoji and CJK
//! characters across tokens), so text can only be streamed out up to the last complete
//! character. [`StreamDecoder`] holds back an incomplete trailing sequence (at most 3 bytes) until
//! the next token completes it; bytes that can never form a character become U+FFFD right away,
//! exactly as `String::from_utf8_lossy` would render them.

/// Turns token bytes into text, one token at a time, never emitting half a character.
#[derive(Debug, Default, Clone)]
pub struct StreamDecoder {
    /// Bytes not yet emitted: always empty or the start of an incomplete character after `push`.
    pending: Vec<u8>,
}

impl StreamDecoder {
    pub fn new() -> Self {
        Self {
            pending: Vec::with_capacity(16),
        }
    }

    /// Adds a token's bytes; returns the newly completed text (possibly empty).
    pub fn push(&mut self, bytes: &[u8]) -> String {
        let mut out = String::new();
        self.push_into(bytes, &mut out);
        out
    }

    /// Like [`push`](Self::push) but appends to `out`, so a caller can reuse one buffer.
    pub fn push_into(&mut self, bytes: &[u8], out: &mut String) {
        self.pending.extend_from_slice(bytes);
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    // `valid_up_to` guarantees this prefix decodes.
                    out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        // A maximal invalid sequence: replace it and keep going.
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[n..];
                        }
                        // An incomplete character at the end: hold it back.
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        let keep = rest.len();
        let start = self.pending.len() - keep;
        self.pending.drain(..start);
    }

    /// Whether bytes are held back waiting for the rest of a character.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Ends the stream: returns any held-back bytes, lossily decoded, and resets the decoder.
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_passes_through() {
        let mut d = StreamDecoder::new();
        assert_eq!(d.push(b"Hello"), "Hello");
        assert_eq!(d.push(b", world"), ", world");
        assert!(!d.has_pending());
        assert_eq!(d.finish(), "");
    }

    #[test]
    fn multibyte_split_across_tokens() {
        // "é" = C3 A9, "😀" = F0 9F 98 80, "日" = E6 97 A5
        let mut d = StreamDecoder::new();
        assert_eq!(d.push(b"caf\xC3"), "caf");
        assert!(d.has_pending());
        assert_eq!(d.push(b"\xA9 \xF0"), "é ");
        assert_eq!(d.push(b"\x9F"), "");
        assert_eq!(d.push(b"\x98"), "");
        assert_eq!(d.push(b"\x80\xE6\x97"), "😀");
        assert_eq!(d.push(b"\xA5!"), "日!");
        assert_eq!(d.finish(), "");
    }

    #[test]
    fn every_split_of_a_string_reassembles_it() {
        let s = "Ünïcödé 日本語 😀🚀👍🏽 ❤️";
        let b = s.as_bytes();
        for i in 0..=b.len() {
            for j in i..=b.len() {
                let mut d = StreamDecoder::new();
                let mut out = d.push(&b[..i]);
                out += &d.push(&b[i..j]);
                out += &d.push(&b[j..]);
                out += &d.finish();
                assert_eq!(out, s);
            }
        }
    }

    #[test]
    fn invalid_bytes_become_replacement_chars() {
        let mut d = StreamDecoder::new();
        assert_eq!(d.push(b"a\xFFb"), "a\u{FFFD}b");
        // a lead byte followed by a non-continuation byte is invalid, not pending
        assert_eq!(d.push(b"\xE6x"), "\u{FFFD}x");
        // an unfinished character at the end of the stream
        assert_eq!(d.push(b"\xF0\x9F"), "");
        assert_eq!(d.finish(), "\u{FFFD}");
        assert!(!d.has_pending());
    }
}
