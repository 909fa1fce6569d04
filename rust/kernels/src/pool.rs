//! A dedicated worker pool for the kernels (never rayon's global pool).
//!
//! Work is always split into more chunks than threads and handed out by rayon's work stealing,
//! so a preempted vCPU (2 shared vCPUs on our dev boxes) delays only the chunks it already
//! holds; the others are taken by whichever thread is running. Idle workers use rayon's own
//! short spin-then-sleep; nothing here spins. A 1-thread pool runs everything inline on the
//! caller's thread in `for_each_chunk` (no hand-off latency for decode).

use rayon::prelude::*;

use crate::error::KernelError;

pub struct Pool {
    inner: rayon::ThreadPool,
    n_threads: usize,
}

impl Pool {
    /// A pool of `n_threads` workers; 0 = one per available CPU.
    pub fn new(n_threads: usize) -> Result<Pool, KernelError> {
        let n = if n_threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            n_threads
        };
        let inner = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("hologram-k{i}"))
            .build()
            .map_err(|e| KernelError::ThreadPool(e.to_string()))?;
        Ok(Pool {
            inner,
            n_threads: n,
        })
    }

    /// Number of worker threads.
    pub fn n_threads(&self) -> usize {
        self.n_threads
    }

    /// Run `f` inside the pool (so rayon parallel iterators in it use these workers).
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.inner.install(f)
    }

    /// A rayon scope on this pool's workers.
    pub fn scope<'s, R: Send>(&self, f: impl FnOnce(&rayon::Scope<'s>) -> R + Send) -> R {
        self.inner.scope(f)
    }

    /// Call `f(i)` for every `i in 0..n_chunks`, chunks claimed by work stealing. Blocks until
    /// all are done. Inline (in order) on a 1-thread pool or for a single chunk.
    pub fn for_each_chunk(&self, n_chunks: usize, f: impl Fn(usize) + Sync + Send) {
        if self.n_threads > 1 && n_chunks > 1 {
            self.inner
                .install(|| (0..n_chunks).into_par_iter().with_max_len(1).for_each(&f))
        } else {
            (0..n_chunks).for_each(f)
        }
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("n_threads", &self.n_threads)
            .finish()
    }
}
