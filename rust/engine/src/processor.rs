//! The processor: one engine thread per model that owns the [`Engine`] and every live sequence,
//! and advances all of them together, one forward pass per step (continuous batching).
//!
//! Each step builds one batch: a decode row for every running sequence that has a token to
//! feed, then prefill chunks of sequences still reading their prompt, up to a token budget
//! (chunked prefill: a long prompt never stalls the others for more than one step). One
//! forward pass runs the batch; logits are computed only for the rows that sample (the last
//! row of each sequence that reaches the end of its history); each sequence samples with its
//! own parameters and its result is delivered to its request's [`Inbox`].
//!
//! Memory is the KV block pool: a sequence is admitted when the blocks for its prompt are free
//! (and a running slot is), takes blocks as it grows, and gives them back when it ends or is
//! cancelled. When a running sequence needs a block and none is free, the newest sequence is
//! preempted: its blocks are freed and it goes back to the head of the queue, to be recomputed
//! from its prompt and the tokens it already generated (which are not sent again). Requests
//! that fit the context are never failed or truncated for lack of memory.
//!
//! Front ends talk to the thread through a [`ProcessorHandle`]: [`ProcessorHandle::submit`]
//! returns a [`Request`] whose inbox receives [`Event`]s; blocking callers wait on the inbox,
//! event-loop callers watch [`ProcessorHandle::notify_fd`] (a pipe that becomes readable when
//! some request has new events) and collect the ids with [`ProcessorHandle::take_ready`]. The
//! engine thread never waits for its consumers.
//!
//! Reproducibility: every row's arithmetic is independent of the other rows of its batch (the
//! kernels reduce each row in a fixed order), so a seeded request gives the same tokens alone
//! and amid any number of others, and a preempted sequence resumes exactly where it stopped.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::constraint::Grammars;
use crate::engine::{Engine, FinishReason, GenParams, Generation, StepOut};
use crate::error::{EngineError, Result};
use crate::kv::{KvPool, SeqId};
use crate::model::Row;
use crate::tokenizer::Tokenizer;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The protected data stay consistent across a panic elsewhere (plain queues and counters).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a request receives, in order: tokens, then exactly one `Finished` or `Failed`.
#[derive(Debug)]
pub enum Event {
    Token(StepOut),
    Finished {
        reason: FinishReason,
        prompt_tokens: usize,
        completion_tokens: usize,
        /// Prompt tokens whose keys and values came from the prefix cache.
        cached_tokens: usize,
    },
    Failed(EngineError),
}

#[derive(Debug, Default)]
struct InboxState {
    events: VecDeque<Event>,
    /// No more events will come (the final one was pushed, or the request was cancelled).
    closed: bool,
}

/// The events of one request, filled by the engine thread.
#[derive(Debug, Default)]
pub struct Inbox {
    state: Mutex<InboxState>,
    cv: Condvar,
}

impl Inbox {
    fn push(&self, ev: Event) {
        let mut s = lock(&self.state);
        if s.closed {
            return;
        }
        if matches!(ev, Event::Finished { .. } | Event::Failed(_)) {
            s.closed = true;
        }
        s.events.push_back(ev);
        self.cv.notify_all();
    }

    fn close(&self) {
        lock(&self.state).closed = true;
        self.cv.notify_all();
    }

    /// Move every event available now into `out` (non-blocking).
    pub fn drain(&self, out: &mut Vec<Event>) {
        out.extend(lock(&self.state).events.drain(..));
    }

    /// The next event, waiting up to `timeout` (forever with None). None when the inbox is
    /// closed and empty, or on timeout.
    pub fn recv(&self, timeout: Option<Duration>) -> Option<Event> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut s = lock(&self.state);
        loop {
            if let Some(ev) = s.events.pop_front() {
                return Some(ev);
            }
            if s.closed {
                return None;
            }
            s = match deadline {
                None => self.cv.wait(s).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return None;
                    }
                    self.cv
                        .wait_timeout(s, d - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }

    /// Closed with nothing left to read.
    pub fn is_finished(&self) -> bool {
        let s = lock(&self.state);
        s.closed && s.events.is_empty()
    }
}

/// Buckets (upper bounds, rows) of the batch-size histogram in [`Stats`].
pub const BATCH_BUCKETS: [usize; 10] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512];

/// Counters and gauges of the processor (for `/metrics`).
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Sequences admitted (holding KV blocks).
    pub running: usize,
    /// Sequences queued for admission (including preempted ones).
    pub waiting: usize,
    pub kv_blocks_total: usize,
    /// Blocks that can be handed out (free, or cached and unused).
    pub kv_blocks_free: usize,
    /// Cached blocks no sequence uses (part of `kv_blocks_free`).
    pub kv_blocks_cached: usize,
    /// Prompt tokens served from the prefix cache since start.
    pub prefix_hit_tokens: u64,
    /// Sequences preempted (blocks freed, to be recomputed) since start.
    pub preemptions: u64,
    /// Forward passes since start.
    pub steps: u64,
    /// Rows over all steps; prompt rows and decode rows separately.
    pub prompt_rows: u64,
    pub decode_rows: u64,
    /// Steps whose batch had at most `BATCH_BUCKETS[i]` rows (non-cumulative; the last slot
    /// counts larger batches).
    pub batch_hist: [u64; BATCH_BUCKETS.len() + 1],
}

impl Stats {
    fn record_batch(&mut self, rows: usize) {
        let i = BATCH_BUCKETS
            .iter()
            .position(|&b| rows <= b)
            .unwrap_or(BATCH_BUCKETS.len());
        self.batch_hist[i] += 1;
        self.steps += 1;
    }
}

/// Requests with new events, and the pipe that wakes an event loop.
struct Notifier {
    state: Mutex<NotifyState>,
    reader: std::io::PipeReader,
}

struct NotifyState {
    ready: Vec<u64>,
    /// A byte is in the pipe that nobody has consumed with `take_ready` yet.
    signaled: bool,
    writer: std::io::PipeWriter,
}

impl Notifier {
    fn notify(&self, ids: &[u64]) {
        if ids.is_empty() {
            return;
        }
        let mut s = lock(&self.state);
        s.ready.extend_from_slice(ids);
        if !s.signaled {
            s.signaled = true;
            // One byte at most is outstanding between two `take_ready` calls, so this never
            // blocks; a failed write only delays readers that also poll.
            let _ = s.writer.write_all(&[1]);
        }
    }

    fn take(&self) -> Vec<u64> {
        let mut s = lock(&self.state);
        s.signaled = false;
        std::mem::take(&mut s.ready)
    }
}

/// A job run on the engine thread between two steps (whole-sequence logits, hidden states).
pub type EngineJob = Box<dyn FnOnce(&mut Engine) + Send>;

enum Command {
    Submit(Box<Seq>),
    Cancel(u64),
    Run(EngineJob),
    Shutdown,
}

struct Shared {
    notifier: Notifier,
    stats: Mutex<Stats>,
}

/// Settings of the processor.
#[derive(Clone, Debug)]
pub struct ProcessorOptions {
    /// Most rows in one step (decode rows plus prefill chunks); at most the engine's n_batch.
    pub step_tokens: usize,
}

/// The front end's side of a model's engine thread. Dropping it stops the thread (running
/// requests fail with an internal error).
pub struct ProcessorHandle {
    tx: Sender<Command>,
    shared: Arc<Shared>,
    next_id: AtomicU64,
    thread: Option<JoinHandle<()>>,
    n_ctx: usize,
    n_vocab: usize,
    tokenizer: Arc<Tokenizer>,
    grammars: Arc<Grammars>,
}

/// A submitted generation. Dropping it cancels the generation (its KV blocks are freed at the
/// engine's next step).
pub struct Request {
    id: u64,
    inbox: Arc<Inbox>,
    tx: Sender<Command>,
    prompt_tokens: usize,
}

impl Request {
    pub fn id(&self) -> u64 {
        self.id
    }
    pub fn inbox(&self) -> &Inbox {
        &self.inbox
    }
    pub fn prompt_tokens(&self) -> usize {
        self.prompt_tokens
    }
    /// Stop the generation; no event arrives after the ones already delivered.
    pub fn cancel(&self) {
        if !self.inbox.is_finished() {
            self.inbox.close();
            let _ = self.tx.send(Command::Cancel(self.id));
        }
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        self.cancel();
    }
}

impl ProcessorHandle {
    /// Move `engine` onto its own thread.
    pub fn start(engine: Engine, opts: ProcessorOptions) -> Result<Self> {
        let (reader, writer) = std::io::pipe()
            .map_err(|e| EngineError::Internal(format!("cannot create the notify pipe: {e}")))?;
        let shared = Arc::new(Shared {
            notifier: Notifier {
                state: Mutex::new(NotifyState {
                    ready: Vec::new(),
                    signaled: false,
                    writer,
                }),
                reader,
            },
            stats: Mutex::new(Stats::default()),
        });
        let n_ctx = engine.options().n_ctx;
        let n_vocab = engine.config().n_vocab;
        let tokenizer = engine.tokenizer().clone();
        let grammars = engine.grammars().clone();
        let (tx, rx) = mpsc::channel();
        let mut worker = Worker::new(engine, rx, shared.clone(), opts);
        let thread = std::thread::Builder::new()
            .name("hologram-engine".into())
            .spawn(move || worker.run())
            .map_err(|e| EngineError::Internal(format!("cannot start the engine thread: {e}")))?;
        Ok(ProcessorHandle {
            tx,
            shared,
            next_id: AtomicU64::new(1),
            thread: Some(thread),
            n_ctx,
            n_vocab,
            tokenizer,
            grammars,
        })
    }

    /// Validate and queue a generation. Errors in the prompt or parameters are returned here
    /// (a grammar is compiled here, on the caller's thread, not the engine's); failures later
    /// arrive as [`Event::Failed`].
    pub fn submit(&self, prompt: Vec<u32>, params: GenParams) -> Result<Request> {
        self.submit_in_group(prompt, params, None)
    }

    /// [`submit`](Self::submit) as a member of `group`: generations of one group share their
    /// prompt (e.g. the `n` choices of a request). The first one admitted reads the prompt;
    /// the others wait until it has, then start from its cached blocks, so the prompt is
    /// evaluated once (only a partial last block is recomputed per member).
    pub fn submit_in_group(
        &self,
        prompt: Vec<u32>,
        params: GenParams,
        group: Option<u64>,
    ) -> Result<Request> {
        let gen = Generation::with_limits(
            self.n_ctx,
            self.n_vocab,
            prompt,
            params,
            Some(&self.grammars),
        )?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let inbox = Arc::new(Inbox::default());
        let prompt_tokens = gen.prompt_tokens();
        let seq = Seq {
            id,
            order: id,
            inbox: inbox.clone(),
            gen,
            slot: None,
            computed: 0,
            cached: None,
            group,
        };
        self.tx
            .send(Command::Submit(Box::new(seq)))
            .map_err(|_| EngineError::Internal("the engine thread has stopped".into()))?;
        Ok(Request {
            id,
            inbox,
            tx: self.tx.clone(),
            prompt_tokens,
        })
    }

    /// Run `f` on the engine thread between two steps and wait for its result.
    pub fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Engine) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let (rtx, rrx) = mpsc::sync_channel(1);
        let job: EngineJob = Box::new(move |e: &mut Engine| {
            let _ = rtx.send(f(e));
        });
        self.tx
            .send(Command::Run(job))
            .map_err(|_| EngineError::Internal("the engine thread has stopped".into()))?;
        rrx.recv()
            .map_err(|_| EngineError::Internal("the engine thread stopped during a job".into()))?
    }

    /// A file descriptor that becomes readable when some request has new events; read (and
    /// discard) its bytes, then call [`take_ready`](Self::take_ready).
    #[cfg(unix)]
    pub fn notify_fd(&self) -> i32 {
        use std::os::fd::AsRawFd;
        self.shared.notifier.reader.as_raw_fd()
    }

    /// Ids of the requests that received events since the last call (may repeat ids).
    pub fn take_ready(&self) -> Vec<u64> {
        self.shared.notifier.take()
    }

    pub fn stats(&self) -> Stats {
        lock(&self.shared.stats).clone()
    }

    pub fn tokenizer(&self) -> &Arc<Tokenizer> {
        &self.tokenizer
    }

    /// The model's grammar compiler (check a grammar before submitting it).
    pub fn grammars(&self) -> &Arc<Grammars> {
        &self.grammars
    }
}

impl Drop for ProcessorHandle {
    fn drop(&mut self) {
        let _ = self.tx.send(Command::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One sequence on the engine thread.
struct Seq {
    id: u64,
    /// Arrival order (preemption takes the newest; the queue is kept in this order).
    order: u64,
    inbox: Arc<Inbox>,
    gen: Generation,
    /// KV slot while admitted.
    slot: Option<SeqId>,
    /// Tokens of the history whose keys and values are in the KV pool.
    computed: usize,
    /// Prompt tokens found in the prefix cache at the (first) admission.
    cached: Option<usize>,
    /// Generations sharing this prompt (see `submit_in_group`).
    group: Option<u64>,
}

impl Seq {
    fn remaining(&self) -> usize {
        self.gen.history().len() - self.computed
    }
}

/// A sequence's share of one step.
struct Planned {
    /// Index into `running`.
    seq: usize,
    /// Rows of the batch: `first..first + n`.
    first: usize,
    n: usize,
    /// Index of its logits row in the step's output (the sequence samples this step).
    logits: Option<usize>,
}

struct Worker {
    engine: Engine,
    rx: Receiver<Command>,
    shared: Arc<Shared>,
    waiting: VecDeque<Seq>,
    running: Vec<Seq>,
    max_running: usize,
    step_tokens: usize,
    rows: Vec<Row>,
    want: Vec<usize>,
    plan: Vec<Planned>,
    logits: Vec<f32>,
    touched: Vec<u64>,
    planned: Vec<bool>,
    order: Vec<usize>,
    preempt: Vec<usize>,
    /// Constrained sequences (indices into `running`) whose token mask this step computes
    /// during the forward pass.
    masks: Vec<usize>,
    preemptions: u64,
    shutdown: bool,
}

impl Worker {
    fn new(
        engine: Engine,
        rx: Receiver<Command>,
        shared: Arc<Shared>,
        o: ProcessorOptions,
    ) -> Self {
        let max_running = engine.options().n_seq_max;
        let n_batch = engine.options().n_batch;
        // Every running sequence must fit one decode row in a step.
        let step_tokens = o.step_tokens.clamp(max_running.min(n_batch), n_batch);
        let nv = engine.config().n_vocab;
        Worker {
            rows: Vec::with_capacity(n_batch),
            want: Vec::with_capacity(max_running),
            plan: Vec::with_capacity(max_running),
            logits: vec![0.0; max_running * nv],
            engine,
            rx,
            shared,
            waiting: VecDeque::new(),
            running: Vec::with_capacity(max_running),
            max_running: max_running.min(n_batch),
            step_tokens,
            touched: Vec::new(),
            planned: Vec::with_capacity(max_running),
            order: Vec::with_capacity(max_running),
            preempt: Vec::with_capacity(max_running),
            masks: Vec::with_capacity(max_running),
            preemptions: 0,
            shutdown: false,
        }
    }

    fn run(&mut self) {
        while !self.shutdown {
            if self.running.is_empty() && self.waiting.is_empty() {
                match self.rx.recv() {
                    Ok(c) => self.command(c),
                    Err(_) => break,
                }
            }
            while let Ok(c) = self.rx.try_recv() {
                self.command(c);
            }
            if self.shutdown {
                break;
            }
            self.step();
            self.publish();
        }
        for s in self.running.drain(..).chain(self.waiting.drain(..)) {
            s.inbox.push(Event::Failed(EngineError::Internal(
                "the engine shut down".into(),
            )));
        }
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::Submit(seq) => {
                let seq = *seq;
                if seq.gen.finish_reason().is_some() {
                    // max_tokens = 0: nothing to compute.
                    Self::finish(&seq);
                    self.touched.push(seq.id);
                } else {
                    self.waiting.push_back(seq);
                }
            }
            Command::Cancel(id) => {
                if let Some(i) = self.waiting.iter().position(|s| s.id == id) {
                    if let Some(s) = self.waiting.remove(i) {
                        s.inbox.close();
                    }
                } else if let Some(i) = self.running.iter().position(|s| s.id == id) {
                    let mut s = self.running.remove(i);
                    self.release(&mut s);
                    s.inbox.close();
                }
            }
            Command::Run(job) => job(&mut self.engine),
            Command::Shutdown => self.shutdown = true,
        }
        self.publish();
    }

    fn release(&mut self, s: &mut Seq) {
        if let Some(slot) = s.slot.take() {
            self.engine.kv_mut().seq_free(slot);
        }
        s.computed = 0;
    }

    fn finish(s: &Seq) {
        s.inbox.push(Event::Finished {
            reason: s.gen.finish_reason().unwrap_or(FinishReason::Stop),
            prompt_tokens: s.gen.prompt_tokens(),
            completion_tokens: s.gen.completion_tokens(),
            cached_tokens: s.cached.unwrap_or(0),
        });
    }

    /// Queue `s` again (blocks freed) in arrival order.
    fn requeue(&mut self, mut s: Seq) {
        self.release(&mut s);
        self.preemptions += 1;
        let at = self
            .waiting
            .iter()
            .position(|w| w.order > s.order)
            .unwrap_or(self.waiting.len());
        self.waiting.insert(at, s);
    }

    /// Admit queued sequences while a running slot and the blocks for their whole history
    /// (plus one free block per running sequence, for their next tokens) are available. The
    /// longest cached prefix of a sequence's history (whole blocks, leaving at least its last
    /// token to compute) is shared instead of computed.
    fn admit(&mut self) {
        while self.running.len() < self.max_running {
            // The oldest waiting sequence, except group members whose prompt another member
            // is still reading (they start from its cached blocks once it is done).
            let reading = |g: Option<u64>| {
                g.is_some()
                    && self
                        .running
                        .iter()
                        .any(|r| r.group == g && r.computed < r.gen.prompt_tokens())
            };
            let Some(at) = self.waiting.iter().position(|w| !reading(w.group)) else {
                break;
            };
            let next = &self.waiting[at];
            let hist = next.gen.history();
            let kv = self.engine.kv();
            let prefix = kv.lookup_prefix(hist, (hist.len() - 1) / crate::kv::BLOCK_SIZE);
            let need = (KvPool::blocks_for(hist.len() + 1) - prefix.len()) + self.running.len();
            // Reviving cached blocks takes them out of the evictable count.
            let revived = prefix
                .iter()
                .filter(|&&b| kv.block_meta(b).refs == 0)
                .count();
            // A lone sequence always fits: the pool holds at least one whole context.
            if !self.running.is_empty() && need + revived > kv.free_blocks() {
                break;
            }
            let slot = match self.engine.kv_mut().seq_new() {
                Ok(s) => s,
                Err(_) => break,
            };
            if let Some(mut s) = self.waiting.remove(at) {
                let mut hit = self
                    .engine
                    .kv_mut()
                    .seq_attach_prefix(slot, s.gen.history(), &prefix)
                    .unwrap_or(0);
                // A group member whose prompt another member has read also copies that
                // member's partial last prompt block (copy-on-write) instead of recomputing
                // it: only the prompt's last token is left to compute.
                let prompt = &s.gen.history()[..s.gen.prompt_tokens()];
                let reader = self.running.iter().find(|r| {
                    s.group.is_some()
                        && r.group == s.group
                        && r.computed >= r.gen.prompt_tokens()
                        && r.gen.history().get(..prompt.len()) == Some(prompt)
                });
                let want = (prompt.len() - 1).saturating_sub(hit);
                if let (Some(r), true) = (reader, want > 0 && want < crate::kv::BLOCK_SIZE) {
                    if let Some(src) = r.slot {
                        hit += self
                            .engine
                            .kv_mut()
                            .seq_copy_partial(slot, src, want)
                            .unwrap_or(0);
                    }
                }
                s.slot = Some(slot);
                s.computed = hit;
                if s.cached.is_none() {
                    s.cached = Some(hit.min(s.gen.prompt_tokens()));
                }
                self.running.push(s);
            }
        }
    }

    /// Index in `running` of the newest sequence not planned in this step, if any is newer
    /// than `than`.
    fn newest_unplanned(&self, planned: &[bool], than: u64) -> Option<usize> {
        self.running
            .iter()
            .enumerate()
            .filter(|(i, s)| !planned[*i] && s.order > than)
            .max_by_key(|(_, s)| s.order)
            .map(|(i, _)| i)
    }

    fn step(&mut self) {
        self.admit();
        if self.running.is_empty() {
            return;
        }
        self.rows.clear();
        self.want.clear();
        self.plan.clear();
        // Per-step work lists, kept across steps (taken here, given back at the end): the step
        // allocates nothing once they have grown.
        let mut planned = std::mem::take(&mut self.planned);
        let mut order = std::mem::take(&mut self.order);
        let mut preempt = std::mem::take(&mut self.preempt);
        planned.clear();
        planned.resize(self.running.len(), false);
        preempt.clear();
        let mut budget = self.step_tokens;
        // Decode rows first (one token each), then prompt chunks, oldest sequence first.
        order.clear();
        order.extend(0..self.running.len());
        order.sort_by_key(|&i| (self.running[i].remaining() > 1, self.running[i].order));
        for &i in &order {
            if preempt.contains(&i) {
                continue;
            }
            let rem = self.running[i].remaining();
            let mut n = rem.min(budget);
            if n == 0 {
                continue;
            }
            let slot = match self.running[i].slot {
                Some(s) => s,
                None => continue,
            };
            loop {
                let free_tokens = {
                    let kv = self.engine.kv();
                    let have = kv.blocks(slot).len() * crate::kv::BLOCK_SIZE;
                    kv.free_blocks() * crate::kv::BLOCK_SIZE + have - self.running[i].computed
                };
                if n <= free_tokens {
                    break;
                }
                // Out of blocks: preempt the newest sequence not yet in this batch.
                match self.newest_unplanned(&planned, self.running[i].order) {
                    Some(v) if !preempt.contains(&v) => {
                        preempt.push(v);
                        planned[v] = true; // never plan it now
                        let slot_v = self.running[v].slot.take();
                        if let Some(sv) = slot_v {
                            self.engine.kv_mut().seq_free(sv);
                        }
                    }
                    _ => {
                        // Nothing newer to take from: a prompt chunk shrinks to what is free;
                        // a decode row (or an empty chunk) waits, preempting itself.
                        if rem > 1 && free_tokens > 0 {
                            n = free_tokens;
                        } else {
                            preempt.push(i);
                            planned[i] = true;
                            n = 0;
                        }
                        break;
                    }
                }
            }
            if n == 0 {
                continue;
            }
            let start = match self.engine.kv_mut().seq_append(slot, n) {
                Ok(p) => p,
                Err(_) => {
                    preempt.push(i);
                    planned[i] = true;
                    continue;
                }
            };
            debug_assert_eq!(start, self.running[i].computed);
            let s = &self.running[i];
            let first = self.rows.len();
            let hist = s.gen.history();
            for k in 0..n {
                self.rows.push(Row {
                    seq: slot,
                    pos: start + k,
                    token: hist[start + k],
                });
            }
            let logits = (n == rem).then(|| {
                self.want.push(first + n - 1);
                self.want.len() - 1
            });
            self.plan.push(Planned {
                seq: i,
                first,
                n,
                logits,
            });
            planned[i] = true;
            budget -= n;
        }

        if !self.rows.is_empty() {
            let nv = self.engine.config().n_vocab;
            let m = self.want.len();
            // Constrained sequences that sample this step compute their token mask on a second
            // thread while the forward pass runs (the mask depends only on the tokens so far).
            // Only their own grammar state is touched: every row's logits, and so every
            // unconstrained sequence's result, are the same as without them.
            self.masks.clear();
            self.masks.extend(
                self.plan
                    .iter()
                    .filter(|p| p.logits.is_some() && self.running[p.seq].gen.needs_mask())
                    .map(|p| p.seq),
            );
            let (engine, rows, want) = (&mut self.engine, &self.rows, &self.want);
            let logits = &mut self.logits[..m * nv];
            let r = if self.masks.is_empty() {
                engine.forward_rows(rows, want, logits)
            } else {
                let (running, masks) = (&mut self.running, &self.masks);
                std::thread::scope(|scope| {
                    let spawned = std::thread::Builder::new()
                        .name("hologram-mask".into())
                        .spawn_scoped(scope, move || {
                            for (i, s) in running.iter_mut().enumerate() {
                                if masks.contains(&i) {
                                    s.gen.prepare_mask();
                                }
                            }
                        });
                    // Without a thread the masks are computed when sampling.
                    let r = engine.forward_rows(rows, want, logits);
                    if let Ok(h) = spawned {
                        let _ = h.join();
                    }
                    r
                })
            };
            // Rows at positions inside the prompt (the rest decode generated tokens).
            let prompt_rows: u64 = self
                .plan
                .iter()
                .map(|p| {
                    let s = &self.running[p.seq];
                    p.n.min(s.gen.prompt_tokens().saturating_sub(s.computed)) as u64
                })
                .sum();
            {
                let mut st = lock(&self.shared.stats);
                st.record_batch(self.rows.len());
                st.prompt_rows += prompt_rows;
                st.decode_rows += self.rows.len() as u64 - prompt_rows;
            }
            let tok = self.engine.tokenizer().clone();
            match r {
                Ok(()) => {
                    for p in &self.plan {
                        let s = &mut self.running[p.seq];
                        debug_assert!(p.first + p.n <= self.rows.len());
                        s.computed += p.n;
                        if let Some(slot) = s.slot {
                            self.engine
                                .kv_mut()
                                .seq_commit(slot, s.gen.history(), s.computed);
                        }
                        if let Some(li) = p.logits {
                            let row = &self.logits[li * nv..(li + 1) * nv];
                            if let Some(out) = s.gen.accept(row, &tok) {
                                s.inbox.push(Event::Token(out));
                            }
                            if let Some(e) = s.gen.take_error() {
                                s.inbox.push(Event::Failed(e));
                            } else if s.gen.finish_reason().is_some() {
                                Self::finish(s);
                            }
                            self.touched.push(s.id);
                        }
                    }
                }
                Err(e) => {
                    // The batch was validated when its requests were submitted: a failure of
                    // the forward pass is the engine's, and ends every sequence in the batch.
                    let msg = e.to_string();
                    for p in &self.plan {
                        let s = &self.running[p.seq];
                        s.inbox
                            .push(Event::Failed(EngineError::Internal(msg.clone())));
                        self.touched.push(s.id);
                    }
                }
            }
        }

        // Retire finished (or failed) sequences and requeue preempted ones, from the back so
        // the indices still to visit do not shift.
        for i in (0..self.running.len()).rev() {
            if preempt.contains(&i) {
                let s = self.running.remove(i);
                self.requeue(s);
            } else if self.running[i].inbox.is_closed() {
                let mut s = self.running.remove(i);
                self.release(&mut s);
            }
        }
        self.planned = planned;
        self.order = order;
        self.preempt = preempt;
    }

    fn publish(&mut self) {
        {
            let kv = self.engine.kv();
            let mut st = lock(&self.shared.stats);
            st.running = self.running.len();
            st.waiting = self.waiting.len();
            st.kv_blocks_total = kv.total_blocks();
            st.kv_blocks_free = kv.free_blocks();
            st.kv_blocks_cached = kv.cached_blocks();
            st.prefix_hit_tokens = kv.hit_tokens();
            st.preemptions = self.preemptions;
        }
        self.shared.notifier.notify(&self.touched);
        self.touched.clear();
    }
}

impl Inbox {
    fn is_closed(&self) -> bool {
        lock(&self.state).closed
    }
}

#[cfg(test)]
#[path = "processor_tests.rs"]
mod tests;
