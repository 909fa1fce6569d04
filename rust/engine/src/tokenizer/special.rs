//! Finding special-token texts in the input quickly.
//!
//! llama.cpp's partitioning searches the whole input once per special token, longest first.
//! Vocabularies can have thousands of special tokens (Gemma 3: ~6k `<unusedN>` and friends), so
//! we first find, in one pass over the input with a byte trie, the few special tokens that occur
//! at all; the partitioning proper then only runs for those, in llama.cpp's order.

/// Byte trie over special-token texts.
#[derive(Debug, Default)]
pub(crate) struct SpecialTrie {
    /// `children[node]`: `(byte, child node)`, sorted by byte.
    children: Vec<Vec<(u8, u32)>>,
    /// `token[node]`: the token whose text ends at `node`.
    token: Vec<Option<u32>>,
}

impl SpecialTrie {
    pub fn new<'a>(texts: impl IntoIterator<Item = (u32, &'a str)>) -> Self {
        let mut t = Self {
            children: vec![Vec::new()],
            token: vec![None],
        };
        for (id, text) in texts {
            let mut node = 0usize;
            for &b in text.as_bytes() {
                node = match t.children[node].binary_search_by_key(&b, |&(c, _)| c) {
                    Ok(i) => t.children[node][i].1 as usize,
                    Err(i) => {
                        let child = t.children.len();
                        t.children.push(Vec::new());
                        t.token.push(None);
                        t.children[node].insert(i, (b, child as u32));
                        child
                    }
                };
            }
            if node != 0 && t.token[node].is_none() {
                t.token[node] = Some(id);
            }
        }
        t
    }

    /// Ids of the tokens whose text occurs somewhere in `text` (unordered, without duplicates).
    pub fn present(&self, text: &str) -> Vec<u32> {
        let mut found = Vec::new();
        let bytes = text.as_bytes();
        let root = &self.children[0];
        for start in 0..bytes.len() {
            if root
                .binary_search_by_key(&bytes[start], |&(c, _)| c)
                .is_err()
            {
                continue;
            }
            let mut node = 0usize;
            for &b in &bytes[start..] {
                match self.children[node].binary_search_by_key(&b, |&(c, _)| c) {
                    Ok(i) => node = self.children[node][i].1 as usize,
                    Err(_) => break,
                }
                if let Some(id) = self.token[node] {
                    if !found.contains(&id) {
                        found.push(id);
                    }
                }
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_overlapping_and_nested_texts() {
        let t = SpecialTrie::new([(1, "<a>"), (2, "<a><b>"), (3, "b"), (4, "<c>")]);
        let mut p = t.present("x<a><b>y");
        p.sort_unstable();
        assert_eq!(p, [1, 2, 3]);
        assert!(t.present("<c").is_empty());
        assert_eq!(t.present("<c><c>"), [4]);
        assert!(t.present("").is_empty());
    }
}
