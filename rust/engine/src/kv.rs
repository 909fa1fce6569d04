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
//! Prefix cache (vLLM's automatic prefix caching): every block carries a reference count (the
//! block tables that hold it) and, once full and committed, a hash of its tokens chained with
//! its predecessors'. A committed block whose count drops to zero is not freed but kept,
//! evictable, in least-recently-used order; a new sequence whose history starts with the same
//! full blocks takes them (and skips computing them). A match compares the blocks' tokens and
//! their parent block, never only hashes, so a hash collision can only shorten a match. Free
//! blocks are handed out first, then the least recently used evictable ones; a block in use is
//! never evicted.
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
    /// prefix sharing); None while the block is partial or not committed to the cache.
    pub hash: Option<u64>,
    /// The committed block before this one in its sequence (None for a first block).
    pub parent: Option<u32>,
    /// Position in the evictable LRU (`KvPool::lru` stamp) while refs == 0 and hashed.
    lru_stamp: u64,
}

#[derive(Debug)]
struct SeqSlot {
    in_use: bool,
    len: usize,
    blocks: Vec<u32>, // capacity = max_blocks_per_seq
    /// Leading blocks already offered to the prefix cache (committed or found duplicate).
    committed: usize,
    /// Chained hash of the committed leading blocks' tokens.
    chain: u64,
    /// The last committed leading block (None if not every earlier block is cached).
    parent: Option<u32>,
}

/// Hash of one block of tokens chained to the hash of everything before it.
fn chain_hash(prev: u64, tokens: &[u32]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    prev.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

/// Chain value before the first block.
const CHAIN_ROOT: u64 = 0x9e37_79b9_7f4a_7c15;

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
    /// Committed blocks by chained hash.
    index: std::collections::HashMap<u64, u32>,
    /// Tokens of committed blocks: `(n_blocks, BLOCK_SIZE)`.
    block_tokens: Vec<u32>,
    /// Evictable blocks, oldest first: `(block, stamp)`; stale entries (stamp no longer the
    /// block's) are skipped.
    lru: std::collections::VecDeque<(u32, u64)>,
    lru_next: u64,
    n_evictable: usize,
    /// Tokens served from the cache since the pool was made.
    hit_tokens: u64,
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
            // Zeroed allocations: pages become resident only when blocks are first written,
            // so a large pool costs memory as it is used.
            k: bytemuck::zeroed_vec(total_k),
            v: bytemuck::zeroed_vec(total_v),
            // Pop from the end: hand out low block numbers first.
            free: (0..n_blocks_u32).rev().collect(),
            meta: vec![BlockMeta::default(); n_blocks],
            seqs: (0..n_seq_max)
                .map(|_| SeqSlot {
                    in_use: false,
                    len: 0,
                    blocks: Vec::with_capacity(blocks_per_seq),
                    committed: 0,
                    chain: CHAIN_ROOT,
                    parent: None,
                })
                .collect(),
            index: std::collections::HashMap::new(),
            block_tokens: vec![0; n_blocks * BLOCK_SIZE],
            lru: std::collections::VecDeque::new(),
            lru_next: 1,
            n_evictable: 0,
            hit_tokens: 0,
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
    /// Blocks that can be handed out: free ones plus evictable cached ones.
    pub fn free_blocks(&self) -> usize {
        self.free.len() + self.n_evictable
    }
    /// Cached blocks no sequence uses (evictable).
    pub fn cached_blocks(&self) -> usize {
        self.n_evictable
    }
    /// Prompt tokens served from the prefix cache since the pool was made.
    pub fn hit_tokens(&self) -> u64 {
        self.hit_tokens
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
    /// Drop one reference to block `b`. At zero a committed block becomes evictable (newest
    /// in the LRU), any other returns to the free list.
    fn release_block(&mut self, b: u32) {
        let m = &mut self.meta[b as usize];
        debug_assert!(m.refs > 0, "block {b} released with no references");
        m.refs = m.refs.saturating_sub(1);
        if m.refs == 0 {
            if m.hash.is_some() {
                m.lru_stamp = self.lru_next;
                self.lru.push_back((b, self.lru_next));
                self.lru_next += 1;
                self.n_evictable += 1;
            } else {
                self.free.push(b);
            }
        }
    }

    /// Forget that `b` is cached (it must have no references).
    fn uncache(&mut self, b: u32) {
        let m = &mut self.meta[b as usize];
        if let Some(h) = m.hash.take() {
            if self.index.get(&h) == Some(&b) {
                self.index.remove(&h);
            }
        }
        m.parent = None;
        m.lru_stamp = 0;
    }

    /// The least recently used evictable block, taken out of the cache.
    fn evict(&mut self) -> Option<u32> {
        while let Some((b, stamp)) = self.lru.pop_front() {
            let m = self.meta[b as usize];
            if m.refs == 0 && m.hash.is_some() && m.lru_stamp == stamp {
                self.n_evictable -= 1;
                self.uncache(b);
                return Some(b);
            }
        }
        None
    }

    fn take_block(&mut self) -> Option<u32> {
        let b = match self.free.pop() {
            Some(b) => b,
            None => self.evict()?,
        };
        self.meta[b as usize] = BlockMeta {
            refs: 1,
            ..BlockMeta::default()
        };
        Some(b)
    }

    /// The cached blocks holding the longest prefix of `tokens` made of whole blocks, at most
    /// `max_blocks` of them. Tokens and parents are compared, not only hashes.
    pub fn lookup_prefix(&self, tokens: &[u32], max_blocks: usize) -> Vec<u32> {
        let mut out = Vec::new();
        let mut chain = CHAIN_ROOT;
        let mut parent = None;
        for chunk in tokens.chunks_exact(BLOCK_SIZE).take(max_blocks) {
            chain = chain_hash(chain, chunk);
            let Some(&b) = self.index.get(&chain) else {
                break;
            };
            let bi = b as usize;
            if self.meta[bi].parent != parent
                || self.block_tokens[bi * BLOCK_SIZE..(bi + 1) * BLOCK_SIZE] != *chunk
            {
                break;
            }
            out.push(b);
            parent = Some(b);
        }
        out
    }

    /// Start the empty sequence `id` with the cached `blocks` (from
    /// [`lookup_prefix`](Self::lookup_prefix) for `tokens`): they are shared, not copied, and
    /// count as computed. Returns the number of tokens they hold.
    pub fn seq_attach_prefix(
        &mut self,
        id: SeqId,
        tokens: &[u32],
        blocks: &[u32],
    ) -> Result<usize> {
        let s = self.slot(id)?;
        if s.len != 0 || !s.blocks.is_empty() {
            return Err(EngineError::InvalidArgument(
                "a prefix can only start an empty sequence".into(),
            ));
        }
        let n = blocks.len() * BLOCK_SIZE;
        if n > tokens.len() || n > self.max_seq_len {
            return Err(EngineError::InvalidArgument(
                "prefix longer than the tokens".into(),
            ));
        }
        let mut chain = CHAIN_ROOT;
        for (i, &b) in blocks.iter().enumerate() {
            let m = &mut self.meta[b as usize];
            if m.refs == 0 {
                // Revived from the LRU (its stale queue entry is skipped later).
                m.lru_stamp = 0;
                self.n_evictable -= 1;
            }
            m.refs += 1;
            chain = chain_hash(chain, &tokens[i * BLOCK_SIZE..(i + 1) * BLOCK_SIZE]);
        }
        let s = &mut self.seqs[id.0 as usize];
        s.blocks.extend_from_slice(blocks);
        s.len = n;
        s.committed = blocks.len();
        s.chain = chain;
        s.parent = blocks.last().copied();
        self.hit_tokens += n as u64;
        Ok(n)
    }

    /// Copy-on-write of a partial block: sequence `dst`, which holds exactly the first `k`
    /// blocks of `src`'s prompt (shared), gets a new block holding a copy of the first `n`
    /// slots (n < BLOCK_SIZE) of `src`'s block `k`, so it need not recompute them. Returns the
    /// tokens copied. The caller guarantees both sequences have the same tokens there.
    pub fn seq_copy_partial(&mut self, dst: SeqId, src: SeqId, n: usize) -> Result<usize> {
        let (d, s) = (self.slot(dst)?, self.slot(src)?);
        let k = d.blocks.len();
        if n == 0 || n >= BLOCK_SIZE || d.len != k * BLOCK_SIZE || s.len < k * BLOCK_SIZE + n {
            return Err(EngineError::InvalidArgument("nothing to copy".into()));
        }
        if d.blocks[..] != s.blocks[..k] {
            return Err(EngineError::InvalidArgument(
                "the sequences do not share their prefix blocks".into(),
            ));
        }
        let from = s.blocks[k] as usize;
        let to = self
            .take_block()
            .ok_or_else(|| EngineError::KvCacheFull("no free block".into()))?;
        for layer in 0..self.n_layer {
            for h in 0..self.n_kv_head {
                let (a, b) = (
                    self.k_index(layer, from, h, 0),
                    self.k_index(layer, to as usize, h, 0),
                );
                self.k.copy_within(a..a + n * self.head_dim_k, b);
                let (a, b) = (
                    self.v_index(layer, from, h, 0),
                    self.v_index(layer, to as usize, h, 0),
                );
                self.v.copy_within(a..a + n * self.head_dim_v, b);
            }
        }
        let d = &mut self.seqs[dst.0 as usize];
        d.blocks.push(to);
        d.len += n;
        Ok(n)
    }

    /// Offer the full blocks of sequence `id` whose tokens (`tokens[..computed]`) are now
    /// computed to the prefix cache. A block whose prefix is already cached elsewhere (two
    /// sequences computed it at once) stays private, and so do the blocks after it.
    pub fn seq_commit(&mut self, id: SeqId, tokens: &[u32], computed: usize) {
        let Some(s) = self.seqs.get(id.0 as usize).filter(|s| s.in_use) else {
            return;
        };
        let full = computed.min(s.len).min(tokens.len()) / BLOCK_SIZE;
        let (mut chain, mut parent, start) = (s.chain, s.parent, s.committed);
        if start >= full {
            return;
        }
        for i in start..full {
            let chunk = &tokens[i * BLOCK_SIZE..(i + 1) * BLOCK_SIZE];
            chain = chain_hash(chain, chunk);
            let b = self.seqs[id.0 as usize].blocks[i];
            let private = i > 0 && parent.is_none();
            if !private && !self.index.contains_key(&chain) && self.meta[b as usize].hash.is_none()
            {
                let bi = b as usize;
                self.index.insert(chain, b);
                self.meta[bi].hash = Some(chain);
                self.meta[bi].parent = parent;
                self.block_tokens[bi * BLOCK_SIZE..(bi + 1) * BLOCK_SIZE].copy_from_slice(chunk);
                parent = Some(b);
            } else if self.index.get(&chain) == Some(&b) {
                parent = Some(b);
            } else {
                parent = None;
            }
        }
        let s = &mut self.seqs[id.0 as usize];
        s.committed = full;
        s.chain = chain;
        s.parent = parent;
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
            if self.meta[b as usize].hash.is_some() {
                return Err(format!("block {b} is free but still cached"));
            }
        }
        let mut evictable = 0;
        for (b, m) in self.meta.iter().enumerate() {
            if m.refs == 0 && m.hash.is_some() {
                evictable += 1;
                free[b] = true;
                if !self
                    .lru
                    .iter()
                    .any(|&(x, st)| x as usize == b && st == m.lru_stamp)
                {
                    return Err(format!("cached block {b} is not in the LRU"));
                }
            }
            if let Some(h) = m.hash {
                if self.index.get(&h) != Some(&(b as u32)) {
                    return Err(format!("cached block {b} is not indexed under its hash"));
                }
            }
        }
        if evictable != self.n_evictable {
            return Err(format!(
                "{evictable} evictable blocks, counter says {}",
                self.n_evictable
            ));
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
        s.committed = 0;
        s.chain = CHAIN_ROOT;
        s.parent = None;
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
            // A committed block that becomes partial will be overwritten: it leaves the cache
            // (truncation is only used on sequences that share nothing).
            let s = &mut self.seqs[id.0 as usize];
            let full = len / BLOCK_SIZE;
            if s.committed > full {
                s.committed = 0;
                s.chain = CHAIN_ROOT;
                s.parent = None;
                let partial: Vec<u32> = s.blocks[full..].to_vec();
                for b in partial {
                    if self.meta[b as usize].refs == 1 {
                        self.uncache(b);
                    }
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
        let free_now = self.free_blocks();
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

    fn toks(n: usize, salt: u32) -> Vec<u32> {
        (0..n as u32).map(|i| i * 7 + salt).collect()
    }

    #[test]
    fn prefix_cache_reuses_evicts_and_counts() {
        // 6 blocks of 32 tokens, 3 slots.
        let mut p = KvPool::new(1, 1, 4, 4, 160, 3, 6 * BLOCK_SIZE).unwrap();
        let a = toks(100, 1);
        let s = p.seq_new().unwrap();
        p.seq_append(s, a.len()).unwrap();
        p.seq_commit(s, &a, a.len());
        assert_eq!(p.lookup_prefix(&a, 10).len(), 3); // 3 full blocks of 100 tokens
        p.seq_free(s);
        p.check_accounting().unwrap();
        assert_eq!(p.cached_blocks(), 3);
        assert_eq!(p.free_blocks(), 6);
        // Reuse: the same prefix with a different tail shares the 3 blocks.
        let mut b = a[..96].to_vec();
        b.extend(toks(20, 99));
        let hit = p.lookup_prefix(&b, (b.len() - 1) / BLOCK_SIZE);
        assert_eq!(hit.len(), 3);
        let s1 = p.seq_new().unwrap();
        assert_eq!(p.seq_attach_prefix(s1, &b, &hit).unwrap(), 96);
        assert_eq!(p.cached_blocks(), 0);
        let s2 = p.seq_new().unwrap();
        assert_eq!(p.seq_attach_prefix(s2, &b, &hit).unwrap(), 96);
        assert_eq!(p.block_meta(hit[0]).refs, 2);
        p.check_accounting().unwrap();
        // A different prefix does not match; a diverging block stops the match.
        assert!(p.lookup_prefix(&toks(100, 5), 10).is_empty());
        let mut c = a.clone();
        c[40] += 1;
        assert_eq!(p.lookup_prefix(&c, 10).len(), 1);
        // Pressure: in-use blocks are never evicted; unused cached ones are, oldest first.
        p.seq_append(s1, 20).unwrap(); // one new block
        p.seq_free(s2);
        assert!(p.seq_append(s2, 1).is_err()); // freed slot
        let s3 = p.seq_new().unwrap();
        p.seq_append(s3, 2 * BLOCK_SIZE).unwrap(); // takes the 2 free blocks
        assert_eq!(p.free_blocks(), 0);
        assert!(p.seq_append(s3, BLOCK_SIZE).is_err());
        p.check_accounting().unwrap();
        p.seq_free(s1); // 3 shared blocks become evictable again, the tail block free
        p.seq_append(s3, 2 * BLOCK_SIZE).unwrap(); // the free block, then 1 evicted (LRU)
        assert_eq!(p.cached_blocks(), 2);
        p.check_accounting().unwrap();
        p.seq_free(s3);
        p.check_accounting().unwrap();
        assert_eq!(p.free_blocks(), 6);
    }

    #[test]
    fn hash_collisions_cannot_confuse_prefixes() {
        let mut p = KvPool::new(1, 1, 4, 4, 64, 2, 4 * BLOCK_SIZE).unwrap();
        let a = toks(64, 1);
        let s = p.seq_new().unwrap();
        p.seq_append(s, 64).unwrap();
        p.seq_commit(s, &a, 64);
        p.seq_free(s);
        // Forge a collision: the chain hash of other tokens points at a's first block.
        let b = toks(64, 2);
        let forged = chain_hash(CHAIN_ROOT, &b[..BLOCK_SIZE]);
        let a0 = p.lookup_prefix(&a, 1)[0];
        p.index.insert(forged, a0);
        assert!(
            p.lookup_prefix(&b, 2).is_empty(),
            "tokens are compared, not only hashes"
        );
        assert_eq!(p.lookup_prefix(&a, 2).len(), 2);
    }

    #[test]
    fn partial_block_is_copied_not_shared() {
        let mut p = KvPool::new(2, 1, 4, 4, 128, 3, 8 * BLOCK_SIZE).unwrap();
        let t = toks(40, 3);
        let a = p.seq_new().unwrap();
        p.seq_append(a, 40).unwrap();
        for pos in 0..40 {
            let x = [pos as f32, 1.0, 2.0, 3.0];
            p.write(0, a, pos, &x, &x);
            p.write(1, a, pos, &x, &x);
        }
        p.seq_commit(a, &t, 40);
        let b = p.seq_new().unwrap();
        let hit = p.lookup_prefix(&t, 1);
        p.seq_attach_prefix(b, &t, &hit).unwrap();
        assert_eq!(p.seq_copy_partial(b, a, 7).unwrap(), 7);
        assert_eq!(p.seq_len(b).unwrap(), BLOCK_SIZE + 7);
        assert_eq!(p.blocks(b)[0], p.blocks(a)[0]); // shared
        assert_ne!(p.blocks(b)[1], p.blocks(a)[1]); // copied
        for pos in BLOCK_SIZE..BLOCK_SIZE + 7 {
            let (bb, slot) = p.locate(b, pos);
            assert_eq!(p.k_block(1, bb, 0)[slot * 4].to_f32(), pos as f32);
            assert_eq!(p.v_block(0, bb, 0)[slot * 4].to_f32(), pos as f32);
        }
        // Writing b's next position leaves a's block untouched.
        p.seq_append(b, 1).unwrap();
        p.write(0, b, BLOCK_SIZE + 7, &[-1.0; 4], &[-1.0; 4]);
        let (ab, slot) = p.locate(a, BLOCK_SIZE + 7);
        assert_eq!(
            p.k_block(0, ab, 0)[slot * 4].to_f32(),
            (BLOCK_SIZE + 7) as f32
        );
        assert!(p.seq_copy_partial(b, a, 3).is_err());
        p.seq_free(a);
        p.seq_free(b);
        p.check_accounting().unwrap();
    }
}
