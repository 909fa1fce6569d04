//! A dedicated worker pool for the kernels (never rayon's global pool).
//!
//! Work is always split into more chunks than threads and handed out by rayon's work stealing,
//! so a preempted vCPU (2 shared vCPUs on our dev boxes) delays only the chunks it already
//! holds; the others are taken by whichever thread is running. Idle workers use rayon's own
//! short spin-then-sleep; nothing here spins. A 1-thread pool runs everything inline on the
//! caller's thread in `for_each_chunk` (no hand-off latency for decode).
//!
//! Small steps (decode) can still lose to a single thread when the other vCPU is busy: each
//! operation ends in a join that waits for a preempted worker's chunk. [`Pool::run_tuned`]
//! therefore measures both ways and takes the faster: it times each small step per row with
//! every worker and, now and then, with the calling thread alone (the pool then reports one
//! thread, so every kernel runs inline), and keeps whichever is faster until the next probe.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use rayon::prelude::*;

use crate::error::KernelError;

pub struct Pool {
    inner: rayon::ThreadPool,
    n_threads: usize,
    /// Threads the kernels use now: `n_threads`, or 1 while the tuner runs a step alone.
    active: AtomicUsize,
    tuner: Mutex<[Tuner; TUNED_CLASSES]>,
    tune: bool,
}

/// Row-count classes the tuner keeps apart (1 row; 2-4; 5-16). Larger steps (prompts) are
/// long enough that a preempted worker's chunk costs little, and always use every thread.
const TUNED_CLASSES: usize = 3;
const TUNED_MAX_ROWS: usize = 16;

/// One class's measurements: seconds per row, smoothed, for [one thread, every thread].
#[derive(Clone, Copy, Debug)]
struct Tuner {
    mean: [f64; 2],
    seen: [u32; 2],
    best: usize,
    last: usize,
    /// Steps left in the current probe of the other choice (the first is a warm-up).
    probe: u32,
    steps: u32,
    /// Steps between probes: multiplied by 4 (up to `MAX_PERIOD`) while one choice is clearly ahead.
    period: u32,
}

const PROBE_STEPS: u32 = 2;
const MIN_PERIOD: u32 = 64;
const MAX_PERIOD: u32 = 512;
/// Steps before the first probe.
const FIRST_PROBE: u32 = 8;

impl Tuner {
    const fn new() -> Tuner {
        Tuner {
            mean: [0.0; 2],
            seen: [0; 2],
            best: 1,
            last: 1,
            probe: 0,
            steps: 0,
            period: MIN_PERIOD,
        }
    }

    /// 0: run alone; 1: every thread.
    fn choose(&self) -> usize {
        if self.probe > 0 {
            1 - self.best
        } else {
            self.best
        }
    }

    fn record(&mut self, idx: usize, secs: f64) {
        let switched = idx != self.last;
        self.last = idx;
        // The first step after a switch wakes or idles the workers: not representative.
        if !switched || self.seen[idx] == 0 {
            self.mean[idx] = if self.seen[idx] == 0 {
                secs
            } else {
                0.75 * self.mean[idx] + 0.25 * secs
            };
            self.seen[idx] += 1;
        }
        if self.probe > 0 {
            self.probe -= 1;
            if self.probe == 0 && self.seen[0] > 0 && self.seen[1] > 0 {
                let best = usize::from(self.mean[1] <= self.mean[0]);
                let (fast, slow) = (self.mean[best], self.mean[1 - best]);
                self.period = if best == self.best && slow > 1.25 * fast {
                    (self.period * 4).min(MAX_PERIOD)
                } else {
                    MIN_PERIOD
                };
                self.best = best;
                self.steps = 0;
            }
            return;
        }
        self.steps += 1;
        if self.steps >= self.period || (self.seen[1 - self.best] == 0 && self.steps >= FIRST_PROBE)
        {
            self.probe = PROBE_STEPS;
        }
    }
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
            active: AtomicUsize::new(n),
            tuner: Mutex::new([Tuner::new(); TUNED_CLASSES]),
            tune: std::env::var("HOLOGRAM_THREAD_TUNING").map_or(true, |v| v != "0"),
        })
    }

    /// Number of threads the kernels split work over now (1 while the tuner has a step run
    /// on the calling thread alone).
    pub fn n_threads(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Number of worker threads the pool was built with.
    pub fn max_threads(&self) -> usize {
        self.n_threads
    }

    /// Run one step of `rows` rows (`f` uses this pool) with every worker or with the calling
    /// thread alone, whichever the measurements say is faster now for steps of that size (see
    /// the module notes). Steps over 16 rows always use every worker. Results do not depend
    /// on the choice: every kernel gives the same bits at any thread count. Set
    /// `HOLOGRAM_THREAD_TUNING=0` to always use every worker. Calls must not overlap (one
    /// engine thread drives a pool).
    pub fn run_tuned<R>(&self, rows: usize, f: impl FnOnce() -> R) -> R {
        if !self.tune || self.n_threads == 1 || rows == 0 || rows > TUNED_MAX_ROWS {
            self.active.store(self.n_threads, Ordering::Relaxed);
            return f();
        }
        let class = match rows {
            1 => 0,
            2..=4 => 1,
            _ => 2,
        };
        let idx = self.tuner.lock().map_or(1, |t| t[class].choose());
        self.active
            .store(if idx == 0 { 1 } else { self.n_threads }, Ordering::Relaxed);
        let t0 = Instant::now();
        let r = f();
        let secs = t0.elapsed().as_secs_f64() / rows as f64;
        self.active.store(self.n_threads, Ordering::Relaxed);
        if let Ok(mut t) = self.tuner.lock() {
            t[class].record(idx, secs);
        }
        r
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
        if self.n_threads() > 1 && n_chunks > 1 {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed the tuner a fixed cost per choice; return the share of steps run alone.
    fn share_alone(t: &mut Tuner, alone: f64, all: f64, steps: usize) -> f64 {
        let mut n_alone = 0;
        for _ in 0..steps {
            let idx = t.choose();
            n_alone += usize::from(idx == 0);
            t.record(idx, if idx == 0 { alone } else { all });
        }
        n_alone as f64 / steps as f64
    }

    #[test]
    fn tuner_takes_the_faster_choice_and_follows_changes() {
        let mut t = Tuner::new();
        // Every thread twice as fast: almost every step uses them, probes back off.
        let s = share_alone(&mut t, 2.0, 1.0, 4000);
        assert!(s < 0.01, "share alone {s}");
        assert_eq!(t.best, 1);
        assert_eq!(t.period, MAX_PERIOD);
        // Contention arrives: one thread is now faster; the next probe finds it.
        let s = share_alone(&mut t, 1.0, 3.0, 4000);
        assert_eq!(t.best, 0);
        assert!(s > 0.6, "share alone {s}");
        // And back.
        share_alone(&mut t, 2.0, 1.0, 4000);
        assert_eq!(t.best, 1);
    }

    #[test]
    fn run_tuned_restores_the_thread_count() {
        let pool = Pool::new(2).unwrap();
        for rows in [1, 3, 8, 16, 17, 512] {
            let seen = pool.run_tuned(rows, || pool.n_threads());
            assert!(seen == 1 || seen == 2);
            if rows > TUNED_MAX_ROWS {
                assert_eq!(seen, 2);
            }
            assert_eq!(pool.n_threads(), 2);
        }
    }
}
