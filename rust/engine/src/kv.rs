//! The KV cache as a pool of fixed-size blocks (the "processor" memory pool).
//!
//! All key/value memory is allocated once, when the engine loads: `n_blocks` blocks of
//! [`BLOCK_SIZE`] tokens, shared by up to `n_seq_max` sequences of at most `max_seq_len` tokens
//! each (the pool is usually smaller than `n_seq_max * max_seq_len`: sequences are paged). A
//! sequence owns a list of blocks (its block table); appending a token takes a block from the
//! free list only when the sequence crosses a block boundary, and freeing a sequence returns its
//! blocks. Nothing here allocates after construction: block tables and the free list are
//! reserved to their maximum size up front.
//!
//! Every block carries metadata for sharing (the prefix cache): a reference count (the block
//! tables that hold it) and, once full, a content hash. A block returns to the free list when
//! its count drops to zero.
//!
//! Layout, per layer, for keys and values alike:
//! `(n_blocks, n_kv_head, BLOCK_SIZE, head_dim)` f16 (llama.cpp's default KV type: half the
//! memory and bandwidth of f32), so the keys of one head within a block are
//! contiguous (attention streams them with unit stride).

use crate::error::{EngineError, Result};
use half::f16;

/// Token slots per block.
pub const BLOCK_SIZE: usize = 32;

/// Handle of a sequence slot in the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SeqId(pub u32);

/// Per-block metadata.
#[derive(Clone, Copy, Debug, Default)]
pub struct BlockMeta {
    /// Block tables holding this block.
    pub refs: u32,
    /// Hash of the block's tokens chained with its predecessors' (a full block's identity for
    /// prefix sharing); None while the block is partial or unhashed.
    pub hash: Option<u64>,
}

#[derive(Debug)]
struct SeqSlot {
    in_use: bool,
    len: usize,
    blocks: Vec<u32>, // capacity = max_blocks_per_seq
}

#[derive(Debug)]
pub struct KvPool {
    n_layer: usize,
    n_kv_head: usize,
    head_dim_k: usize,
    head_dim_v: usize,
    n_blocks: usize,
    max_seq_len: usize,
    k: Vec<f16>, // (n_layer, n_blocks, n_kv_head, BLOCK_SIZE, head_dim_k)
    v: Vec<f16>, // (n_layer, n_blocks, n_kv_head, BLOCK_SIZE, head_dim_v)
    free: Vec<u32>,
    meta: Vec<BlockMeta>,
    seqs: Vec<SeqSlot>,
}

impl KvPool {
    /// A pool of `n_tokens` token slots (rounded up to whole blocks, and at least one full
    /// sequence) for up to `n_seq_max` sequences of up to `max_seq_len` tokens each.
    pub fn new(
        n_layer: usize,
        n_kv_head: usize,
        head_dim_k: usize,
        head_dim_v: usize,
        max_seq_len: usize,
        n_seq_max: usize,
        n_tokens: usize,
    ) -> Result<Self> {
        let blocks_per_seq = max_seq_len.div_ceil(BLOCK_SIZE);
        let n_blocks = n_tokens.div_ceil(BLOCK_SIZE).max(blocks_per_seq);
        let per_block_k = n_kv_head * BLOCK_SIZE * head_dim_k;
        let per_block_v = n_kv_head * BLOCK_SIZE * head_dim_v;
        let total_k = n_layer
            .checked_mul(n_blocks)
            .and_then(|x| x.checked_mul(per_block_k))
            .ok_or_else(|| EngineError::InvalidArgument("KV cache size overflows".into()))?;
        let total_v = n_layer
            .checked_mul(n_blocks)
            .and_then(|x| x.checked_mul(per_block_v))
            .ok_or_else(|| EngineError::InvalidArgument("KV cache size overflows".into()))?;
        let bytes = (total_k + total_v) as u64 * 2;
        if bytes > (64u64 << 30) {
            return Err(EngineError::InvalidArgument(format!(
                "KV cache would need {} MiB ({} tokens); lower the KV pool size",
                bytes >> 20,
                n_blocks * BLOCK_SIZE
            )));
        }
        let n_blocks_u32 = u32::try_from(n_blocks)
            .map_err(|_| EngineError::InvalidArgument("too many KV blocks".into()))?;
        Ok(KvPool {
            n_layer,
            n_kv_head,
            head_dim_k,
            head_dim_v,
            n_blocks,
            max_seq_len,
            k: vec![f16::ZERO; total_k],
            v: vec![f16::ZERO; total_v],
            // Pop from the end: hand out low block numbers first.
            free: (0..n_blocks_u32).rev().collect(),
            meta: vec![BlockMeta::default(); n_blocks],
            seqs: (0..n_seq_max)
                .map(|_| SeqSlot {
                    in_use: false,
                    len: 0,
                    blocks: Vec::with_capacity(blocks_per_seq),
                })
                .collect(),
        })
    }

    pub fn n_seq_max(&self) -> usize {
        self.seqs.len()
    }
    pub fn max_seq_len(&self) -> usize {
        self.max_seq_len
    }
    pub fn bytes(&self) -> usize {
        (self.k.len() + self.v.len()) * 2
    }
    pub fn bytes_per_token(&self) -> usize {
        self.n_layer * self.n_kv_head * (self.head_dim_k + self.head_dim_v) * 2
    }
    pub fn free_blocks(&self) -> usize {
        self.free.len()
    }
    /// Blocks needed to hold `n_tokens` tokens of one sequence.
    pub fn blocks_for(n_tokens: usize) -> usize {
        n_tokens.div_ceil(BLOCK_SIZE)
    }
    /// Token slots in the whole pool.
    pub fn capacity_tokens(&self) -> usize {
        self.n_blocks * BLOCK_SIZE
    }
    /// Metadata of block `b`.
    pub fn block_meta(&self, b: u32) -> BlockMeta {
        self.meta[b as usize]
    }
    /// Drop one reference to block `b`; it returns to the free list at zero.
    fn release_block(&mut self, b: u32) {
        let m = &mut self.meta[b as usize];
        debug_assert!(m.refs > 0, "block {b} released with no references");
        m.refs = m.refs.saturating_sub(1);
        if m.refs == 0 {
            m.hash = None;
            self.free.push(b);
        }
    }
    fn take_block(&mut self) -> Option<u32> {
        let b = self.free.pop()?;
        self.meta[b as usize] = BlockMeta {
            refs: 1,
            hash: None,
        };
        Some(b)
    }
    /// Check the free list and reference counts against the block tables (tests and debug
    /// builds): every block is either free with no references or referenced exactly as often
    /// as block tables hold it.
    pub fn check_accounting(&self) -> std::result::Result<(), String> {
        let mut refs = vec![0u32; self.n_blocks];
        for s in self.seqs.iter().filter(|s| s.in_use) {
            for &b in &s.blocks {
                refs[b as usize] += 1;
            }
        }
        let mut free = vec![false; self.n_blocks];
        for &b in &self.free {
            if std::mem::replace(&mut free[b as usize], true) {
                return Err(format!("block {b} is on the free list twice"));
            }
        }
        for (b, (&r, m)) in refs.iter().zip(&self.meta).enumerate() {
            if r != m.refs {
                return Err(format!(
                    "block {b}: {r} table references, refcount {}",
                    m.refs
                ));
            }
            if (r == 0) != free[b] {
                return Err(format!("block {b}: {r} references but free = {}", free[b]));
            }
        }
        Ok(())
    }
    pub fn total_blocks(&self) -> usize {
        self.n_blocks
    }
    pub fn active_sequences(&self) -> usize {
        self.seqs.iter().filter(|s| s.in_use).count()
    }

    /// Claim a free sequence slot.
    pub fn seq_new(&mut self) -> Result<SeqId> {
        let i = self.seqs.iter().position(|s| !s.in_use).ok_or_else(|| {
            EngineError::KvCacheFull(format!("all {} sequence slots are in use", self.seqs.len()))
        })?;
        let s = &mut self.seqs[i];
        s.in_use = true;
        s.len = 0;
        debug_assert!(s.blocks.is_empty());
        Ok(SeqId(i as u32))
    }

    /// Release a sequence and return its blocks to the pool. Unknown or free ids are ignored.
    pub fn seq_free(&mut self, id: SeqId) {
        if let Some(s) = self.seqs.get_mut(id.0 as usize) {
            if s.in_use {
                let blocks = std::mem::take(&mut s.blocks);
                s.len = 0;
                s.in_use = false;
                for &b in blocks.iter().rev() {
                    self.release_block(b);
                }
                // Keep the table's reserved capacity for the slot's next sequence.
                let s = &mut self.seqs[id.0 as usize];
                s.blocks = blocks;
                s.blocks.clear();
            }
        }
    }

    /// Forget tokens past `len` (keeps the blocks still needed).
    pub fn seq_truncate(&mut self, id: SeqId, len: usize) -> Result<()> {
        self.slot(id)?;
        let s = &mut self.seqs[id.0 as usize];
        if len < s.len {
            s.len = len;
            let keep = len.div_ceil(BLOCK_SIZE);
            while self.seqs[id.0 as usize].blocks.len() > keep {
                if let Some(b) = self.seqs[id.0 as usize].blocks.pop() {
                    self.release_block(b);
                }
            }
        }
        Ok(())
    }

    pub fn seq_len(&self, id: SeqId) -> Result<usize> {
        Ok(self.slot(id)?.len)
    }

    fn slot(&self, id: SeqId) -> Result<&SeqSlot> {
        match self.seqs.get(id.0 as usize) {
            Some(s) if s.in_use => Ok(s),
            _ => Err(EngineError::InvalidArgument(format!(
                "sequence {} is not active",
                id.0
            ))),
        }
    }
    /// Reserve room for `n` more tokens of `id`: checks the length limit and takes the blocks
    /// needed. Returns the position of the first new token. On error nothing changes.
    pub fn seq_append(&mut self, id: SeqId, n: usize) -> Result<usize> {
        let max = self.max_seq_len;
        let free_now = self.free.len();
        let s = self.slot(id)?;
        let start = s.len;
        let end = start + n;
        if end > max {
            return Err(EngineError::ContextOverflow(format!(
                "sequence would reach {end} tokens; the context holds {max}"
            )));
        }
        let need = end.div_ceil(BLOCK_SIZE).saturating_sub(s.blocks.len());
        if need > free_now {
            return Err(EngineError::KvCacheFull(format!(
                "need {need} more KV blocks, {free_now} free"
            )));
        }
        for _ in 0..need {
            let b = self
                .take_block()
                .ok_or_else(|| EngineError::KvCacheFull("no free block".into()))?;
            self.seqs[id.0 as usize].blocks.push(b);
        }
        self.seqs[id.0 as usize].len = end;
        Ok(start)
    }

    /// Block number and slot holding position `pos` of sequence `id` (already appended).
    #[inline]
    pub fn locate(&self, id: SeqId, pos: usize) -> (usize, usize) {
        let s = &self.seqs[id.0 as usize];
        (s.blocks[pos / BLOCK_SIZE] as usize, pos % BLOCK_SIZE)
    }

    /// The block table of a sequence.
    pub fn blocks(&self, id: SeqId) -> &[u32] {
        &self.seqs[id.0 as usize].blocks
    }

    #[inline]
    fn k_index(&self, layer: usize, block: usize, head: usize, slot: usize) -> usize {
        (((layer * self.n_blocks + block) * self.n_kv_head + head) * BLOCK_SIZE + slot)
            * self.head_dim_k
    }
    #[inline]
    fn v_index(&self, layer: usize, block: usize, head: usize, slot: usize) -> usize {
        (((layer * self.n_blocks + block) * self.n_kv_head + head) * BLOCK_SIZE + slot)
            * self.head_dim_v
    }

    /// Store the key and value of one token (all kv heads, `(n_kv_head, head_dim)` each),
    /// rounded to f16.
    pub fn write(&mut self, layer: usize, id: SeqId, pos: usize, k: &[f32], v: &[f32]) {
        let (block, slot) = self.locate(id, pos);
        for h in 0..self.n_kv_head {
            let ki = self.k_index(layer, block, h, slot);
            let src = &k[h * self.head_dim_k..(h + 1) * self.head_dim_k];
            for (d, &x) in self.k[ki..ki + self.head_dim_k].iter_mut().zip(src) {
                *d = f16::from_f32(x);
            }
            let vi = self.v_index(layer, block, h, slot);
            let src = &v[h * self.head_dim_v..(h + 1) * self.head_dim_v];
            for (d, &x) in self.v[vi..vi + self.head_dim_v].iter_mut().zip(src) {
                *d = f16::from_f32(x);
            }
        }
    }

    /// Keys of kv head `head` in `block` of `layer`: `(BLOCK_SIZE, head_dim_k)`.
    #[inline]
    pub fn k_block(&self, layer: usize, block: usize, head: usize) -> &[f16] {
        let i = self.k_index(layer, block, head, 0);
        &self.k[i..i + BLOCK_SIZE * self.head_dim_k]
    }
    /// Values of kv head `head` in `block` of `layer`: `(BLOCK_SIZE, head_dim_v)`.
    #[inline]
    pub fn v_block(&self, layer: usize, block: usize, head: usize) -> &[f16] {
        let i = self.v_index(layer, block, head, 0);
        &self.v[i..i + BLOCK_SIZE * self.head_dim_v]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_taken_and_returned() {
        let mut p = KvPool::new(1, 1, 4, 4, 100, 2, 200).unwrap();
        let total = p.free_blocks();
        let a = p.seq_new().unwrap();
        let b = p.seq_new().unwrap();
        assert!(p.seq_new().is_err());
        assert_eq!(p.seq_append(a, 33).unwrap(), 0);
        assert_eq!(p.free_blocks(), total - 2);
        assert_eq!(p.seq_append(a, 1).unwrap(), 33);
        assert!(p.seq_append(b, 101).is_err());
        p.seq_truncate(a, 10).unwrap();
        assert_eq!(p.free_blocks(), total - 1);
        p.seq_free(a);
        assert_eq!(p.free_blocks(), total);
        p.check_accounting().unwrap();
        let k = [1.0f32, 2.0, 3.0, 4.0];
        p.seq_append(b, 2).unwrap();
        p.write(0, b, 1, &k, &k);
        let (blk, slot) = p.locate(b, 1);
        let got: Vec<f32> = p.k_block(0, blk, 0)[slot * 4..slot * 4 + 4]
            .iter()
            .map(|x| x.to_f32())
            .collect();
        assert_eq!(got, k);
    }
}
