//! Sampling: from a row of logits to the next token id, with llama.cpp's semantics and defaults.
//!
//! [`Sampler::sample`] applies, in this order (llama.cpp's `common_sampler` chain with its default
//! sampler list `penalties, dry, top_n_sigma, top_k, typ_p, top_p, min_p, xtc, temperature`, of
//! which we implement the ones in [`SamplingParams`]; the others are off by default there):
//!
//! 1. `logit_bias` (added to the logits; `-inf` bans a token),
//! 2. penalties over the last `repeat_last_n` tokens of `history`: repeat penalty (a positive
//!    logit is divided by it, a non-positive one multiplied), then
//!    `logit -= count * frequency_penalty + (count > 0) * presence_penalty` (OpenAI style),
//! 3. `temperature <= 0`: greedy argmax (ties -> lowest id), done; otherwise
//! 4. top-k (`0` = off), top-p (nucleus; `>= 1` = off), min-p (`<= 0` = off; keeps tokens with
//!    `p >= min_p * p_max`), all on the *untempered* logits as in llama.cpp,
//! 5. temperature, softmax, and a draw from the sampler's seeded xoshiro256** generator.
//!
//! The sampler owns its scratch buffers (sized at construction), so sampling a token does not
//! allocate. Also here: [`log_softmax_top`] for OpenAI `logprobs`, and [`StopMatcher`] for stop
//! strings in streamed text.

use std::cmp::Ordering;

use crate::error::{EngineError, Result};
use crate::gguf::Value;

/// The recommended sampler settings a GGUF file may carry (gguf-py's `Keys.General.SAMPLING_*`,
/// which llama.cpp applies as its defaults), each with the [`SamplingParams`] field it sets.
/// llama.cpp's other `general.sampling.*` keys (sequence, xtc, mirostat) name samplers this
/// engine does not have.
pub const GGUF_SAMPLING_KEYS: [(&str, &str); 6] = [
    ("temperature", "general.sampling.temp"),
    ("top_k", "general.sampling.top_k"),
    ("top_p", "general.sampling.top_p"),
    ("min_p", "general.sampling.min_p"),
    ("repeat_penalty", "general.sampling.penalty_repeat"),
    ("repeat_last_n", "general.sampling.penalty_last_n"),
];

/// Sampling settings. `Default` = llama.cpp's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// `<= 0` = greedy.
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens; 0 = off.
    pub top_k: usize,
    /// Nucleus sampling mass in `[0, 1]`; 1 = off.
    pub top_p: f32,
    /// Minimum probability relative to the most likely token, in `[0, 1]`; 0 = off.
    pub min_p: f32,
    /// Repeat penalty (> 0); 1 = off.
    pub repeat_penalty: f32,
    /// How many of the last history tokens the penalties look at; 0 = off.
    pub repeat_last_n: usize,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    /// `(token id, bias)` added to the logits; `f32::NEG_INFINITY` bans the token.
    pub logit_bias: Vec<(u32, f32)>,
    /// RNG seed; `None` = random.
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: Vec::new(),
            seed: None,
        }
    }
}

impl SamplingParams {
    /// A model's defaults: llama.cpp's ([`Default`]), with every `general.sampling.*` value the
    /// file carries (see [`GGUF_SAMPLING_KEYS`]; `get` looks a metadata key up). Also returns
    /// the names of the fields the file set. A value that is not a number, or out of its
    /// range, is ignored; `penalty_last_n` -1 means the whole context (`n_ctx`), as in
    /// llama.cpp, and a negative `top_k` means off (0).
    pub fn from_metadata<'a>(
        get: impl Fn(&str) -> Option<&'a Value>,
        n_ctx: usize,
    ) -> (Self, Vec<&'static str>) {
        let mut p = Self::default();
        let mut set = Vec::new();
        for (field, key) in GGUF_SAMPLING_KEYS {
            let Some(v) = get(key).and_then(Value::as_f64).filter(|v| v.is_finite()) else {
                continue;
            };
            let ok = match field {
                "temperature" if v >= 0.0 => {
                    p.temperature = v as f32;
                    true
                }
                "top_k" if v.fract() == 0.0 => {
                    p.top_k = v.clamp(0.0, i32::MAX as f64) as usize;
                    true
                }
                "top_p" if (0.0..=1.0).contains(&v) => {
                    p.top_p = v as f32;
                    true
                }
                "min_p" if (0.0..=1.0).contains(&v) => {
                    p.min_p = v as f32;
                    true
                }
                "repeat_penalty" if v > 0.0 => {
                    p.repeat_penalty = v as f32;
                    true
                }
                "repeat_last_n" if v == -1.0 => {
                    p.repeat_last_n = n_ctx;
                    true
                }
                "repeat_last_n" if v >= 0.0 && v.fract() == 0.0 => {
                    p.repeat_last_n = v.min(i32::MAX as f64) as usize;
                    true
                }
                _ => false,
            };
            if ok {
                set.push(field);
            }
        }
        (p, set)
    }

    /// Greedy decoding (temperature 0, nothing else).
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }

    /// Checks every value; [`EngineError::InvalidArgument`] names the first bad one.
    pub fn validate(&self, n_vocab: usize) -> Result<()> {
        let bad = |msg: String| Err(EngineError::InvalidArgument(msg));
        if !self.temperature.is_finite() {
            return bad(format!(
                "temperature must be a finite number, got {}",
                self.temperature
            ));
        }
        if !(0.0..=1.0).contains(&self.top_p) {
            return bad(format!("top_p must be in [0, 1], got {}", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad(format!("min_p must be in [0, 1], got {}", self.min_p));
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return bad(format!(
                "repeat_penalty must be > 0, got {}",
                self.repeat_penalty
            ));
        }
        if !self.presence_penalty.is_finite() {
            return bad(format!(
                "presence_penalty must be finite, got {}",
                self.presence_penalty
            ));
        }
        if !self.frequency_penalty.is_finite() {
            return bad(format!(
                "frequency_penalty must be finite, got {}",
                self.frequency_penalty
            ));
        }
        for &(id, bias) in &self.logit_bias {
            if id as usize >= n_vocab {
                return bad(format!(
                    "logit_bias token id {id} is out of range (n_vocab {n_vocab})"
                ));
            }
            if bias.is_nan() || bias == f32::INFINITY {
                return bad(format!(
                    "logit_bias for token {id} must be a number or -inf, got {bias}"
                ));
            }
        }
        Ok(())
    }

    fn penalties_active(&self) -> bool {
        self.repeat_last_n > 0
            && (self.repeat_penalty != 1.0
                || self.frequency_penalty != 0.0
                || self.presence_penalty != 0.0)
    }
}

/// xoshiro256** seeded through splitmix64: small, fast, and reproducible across platforms.
#[derive(Clone, Debug)]
struct Rng {
    s: [u64; 4],
}

impl Rng {
    fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Self {
            s: [next(), next(), next(), next()],
        }
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)`.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// A seed from the clock and the OS-seeded std hasher keys.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(nanos);
    h.finish()
}

/// Descending by logit, then ascending by id (a total order, so results are deterministic).
fn by_logit_desc(a: &(f32, u32), b: &(f32, u32)) -> Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

/// Index of the largest logit, lowest index on ties; NaN never wins. 0 for an empty slice.
fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_val = f32::NEG_INFINITY;
    for (i, &l) in logits.iter().enumerate() {
        if l > best_val {
            best = i;
            best_val = l;
        }
    }
    best as u32
}

/// Samples token ids from logits. One per sequence; reuses its buffers across calls.
#[derive(Clone, Debug)]
pub struct Sampler {
    params: SamplingParams,
    seed: u64,
    rng: Rng,
    /// `(logit, id)` candidates; capacity `n_vocab`.
    candidates: Vec<(f32, u32)>,
    /// The penalty window, sorted to count repeats.
    window: Vec<u32>,
}

impl Sampler {
    /// `params` should have passed [`SamplingParams::validate`]; invalid values are not
    /// rejected here but never cause a panic.
    pub fn new(params: SamplingParams, n_vocab: usize) -> Self {
        let seed = params.seed.unwrap_or_else(random_seed);
        let window = Vec::with_capacity(if params.penalties_active() {
            params.repeat_last_n.min(1 << 16)
        } else {
            0
        });
        Self {
            seed,
            rng: Rng::new(seed),
            candidates: Vec::with_capacity(n_vocab),
            window,
            params,
        }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// The seed in use (the random one when `params.seed` was `None`).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Picks the next token. `logits` (one row, indexed by token id) is modified in place by the
    /// bias and penalties; `history` is the sequence so far (prompt included if the prompt should
    /// count towards the penalties, as in llama.cpp's server).
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        let n = logits.len();
        for &(id, bias) in &self.params.logit_bias {
            if let Some(l) = logits.get_mut(id as usize) {
                *l += bias;
            }
        }
        if self.params.penalties_active() {
            self.apply_penalties(logits, history);
        }
        let p = &self.params;
        if p.temperature <= 0.0 {
            return argmax(logits);
        }

        let cand = &mut self.candidates;
        cand.clear();
        cand.extend(
            logits
                .iter()
                .enumerate()
                .filter(|(_, l)| !l.is_nan() && **l > f32::NEG_INFINITY)
                .map(|(i, &l)| (l, i as u32)),
        );
        if cand.is_empty() || n == 0 {
            return argmax(logits);
        }

        // top-k
        if p.top_k > 0 && p.top_k < cand.len() {
            cand.select_nth_unstable_by(p.top_k - 1, by_logit_desc);
            cand.truncate(p.top_k);
        }
        cand.sort_unstable_by(by_logit_desc);
        let max = cand[0].0;

        // top-p: the smallest prefix whose probability mass reaches top_p (at least one token)
        if p.top_p < 1.0 {
            let sum: f64 = cand.iter().map(|&(l, _)| f64::from(l - max).exp()).sum();
            let target = f64::from(p.top_p) * sum;
            let mut cum = 0.0;
            let mut keep = cand.len();
            for (i, &(l, _)) in cand.iter().enumerate() {
                cum += f64::from(l - max).exp();
                if cum >= target {
                    keep = i + 1;
                    break;
                }
            }
            cand.truncate(keep);
        }

        // min-p: p_i >= min_p * p_max  <=>  logit_i >= max + ln(min_p)
        if p.min_p > 0.0 {
            let threshold = max + p.min_p.ln();
            let keep = 1 + cand[1..]
                .iter()
                .take_while(|&&(l, _)| l >= threshold)
                .count();
            cand.truncate(keep);
        }

        // temperature + softmax + draw
        let inv_t = 1.0 / f64::from(p.temperature);
        let sum: f64 = cand
            .iter()
            .map(|&(l, _)| (f64::from(l - max) * inv_t).exp())
            .sum();
        let target = self.rng.next_f64() * sum;
        let mut cum = 0.0;
        for &(l, id) in cand.iter() {
            cum += (f64::from(l - max) * inv_t).exp();
            if cum > target {
                return id;
            }
        }
        cand[cand.len() - 1].1
    }

    fn apply_penalties(&mut self, logits: &mut [f32], history: &[u32]) {
        let p = &self.params;
        let start = history.len().saturating_sub(p.repeat_last_n);
        self.window.clear();
        self.window.extend_from_slice(&history[start..]);
        self.window.sort_unstable();
        for run in self.window.chunk_by(|a, b| a == b) {
            let Some(l) = logits.get_mut(run[0] as usize) else {
                continue;
            };
            if *l <= 0.0 {
                *l *= p.repeat_penalty;
            } else {
                *l /= p.repeat_penalty;
            }
            *l -= run.len() as f32 * p.frequency_penalty + p.presence_penalty;
        }
    }
}

/// Log-softmax summary of a logits row for OpenAI `logprobs`: fills `out` with the `k` most
/// likely `(id, log-probability)` pairs, most likely first (ties: lower id first), and returns the
/// row's log-sum-exp (so any token's log-probability is `logit - lse`). NaN logits are ignored.
/// Does not allocate when `out` already has capacity for `k` entries (and `k` is small relative
/// to the row).
pub fn log_softmax_top(logits: &[f32], k: usize, out: &mut Vec<(u32, f32)>) -> f32 {
    out.clear();
    let max = logits
        .iter()
        .copied()
        .filter(|l| !l.is_nan())
        .fold(f32::NEG_INFINITY, f32::max);
    let lse = if max == f32::NEG_INFINITY || max.is_nan() {
        f32::NEG_INFINITY
    } else if max == f32::INFINITY {
        f32::INFINITY
    } else {
        let sum: f64 = logits
            .iter()
            .filter(|l| !l.is_nan())
            .map(|&l| f64::from(l - max).exp())
            .sum();
        (f64::from(max) + sum.ln()) as f32
    };
    let k = k.min(logits.len());
    if k == 0 {
        return lse;
    }
    if k > 64 && k * 8 > logits.len() {
        // A large share of the row: select, then sort.
        out.extend(
            logits
                .iter()
                .enumerate()
                .filter(|(_, l)| !l.is_nan())
                .map(|(i, &l)| (i as u32, l)),
        );
        let cmp = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if k < out.len() {
            out.select_nth_unstable_by(k - 1, cmp);
            out.truncate(k);
        }
        out.sort_unstable_by(cmp);
    } else {
        // Insertion into a short sorted list; most logits fail the first comparison.
        for (i, &l) in logits.iter().enumerate() {
            if l.is_nan() || (out.len() == k && l <= out[k - 1].1) {
                continue;
            }
            let pos = out.partition_point(|&(_, x)| x >= l);
            if out.len() == k {
                out.pop();
            }
            out.insert(pos, (i as u32, l));
        }
    }
    for e in out.iter_mut() {
        e.1 = if lse.is_finite() {
            e.1 - lse
        } else {
            f32::NEG_INFINITY
        };
    }
    lse
}

/// Finds stop strings in streamed text. Text that could still be the start of a stop string is
/// held back until it either completes one (output is cut just before it) or cannot any more.
/// Matching is on whole characters: held-back text always ends on a character boundary.
#[derive(Clone, Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    pending: String,
    stopped: Option<usize>,
}

impl StopMatcher {
    /// Empty stop strings are ignored.
    pub fn new<I, S>(stops: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let stops = stops
            .into_iter()
            .map(Into::into)
            .filter(|s: &String| !s.is_empty())
            .collect();
        Self {
            stops,
            pending: String::new(),
            stopped: None,
        }
    }

    /// Adds text; returns the text that can be emitted now and whether a stop string was hit
    /// (then nothing after it is ever emitted).
    pub fn feed(&mut self, text: &str) -> (String, bool) {
        if self.stopped.is_some() {
            return (String::new(), true);
        }
        self.pending.push_str(text);
        // Earliest occurrence of any stop string.
        let hit = self
            .stops
            .iter()
            .enumerate()
            .filter_map(|(i, s)| self.pending.find(s.as_str()).map(|pos| (pos, i)))
            .min();
        if let Some((pos, i)) = hit {
            self.pending.truncate(pos);
            self.stopped = Some(i);
            return (std::mem::take(&mut self.pending), true);
        }
        // Hold back the longest suffix that is a proper prefix of a stop string.
        let longest = self.stops.iter().map(String::len).max().unwrap_or(0);
        let min_start = self.pending.len().saturating_sub(longest.saturating_sub(1));
        let hold_from = self
            .pending
            .char_indices()
            .map(|(i, _)| i)
            .filter(|&i| i >= min_start)
            .find(|&i| {
                let tail = &self.pending[i..];
                self.stops.iter().any(|s| s.starts_with(tail))
            })
            .unwrap_or(self.pending.len());
        let held = self.pending.split_off(hold_from);
        (std::mem::replace(&mut self.pending, held), false)
    }

    /// Ends the stream: returns the held-back text (none if a stop string was hit).
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }

    /// The stop string that was hit, if any.
    pub fn matched(&self) -> Option<&str> {
        self.stopped.map(|i| self.stops[i].as_str())
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_defaults_override_llama_cpp_defaults() {
        let meta = [
            ("general.sampling.temp", Value::F32(0.2)),
            ("general.sampling.top_k", Value::I32(20)),
            ("general.sampling.top_p", Value::F64(0.5)),
            ("general.sampling.penalty_last_n", Value::I32(-1)),
            ("general.sampling.min_p", Value::Str("x".into())), // wrong type: ignored
            ("general.sampling.penalty_repeat", Value::F32(-1.0)), // out of range: ignored
        ];
        let get = |k: &str| meta.iter().find(|(n, _)| *n == k).map(|(_, v)| v);
        let (p, set) = SamplingParams::from_metadata(get, 512);
        assert_eq!(set, vec!["temperature", "top_k", "top_p", "repeat_last_n"]);
        assert_eq!(p.temperature, 0.2);
        assert_eq!(p.top_k, 20);
        assert_eq!(p.top_p, 0.5);
        assert_eq!(p.repeat_last_n, 512);
        let d = SamplingParams::default();
        assert_eq!((p.min_p, p.repeat_penalty), (d.min_p, d.repeat_penalty));
        let (none, set) = SamplingParams::from_metadata(|_| None, 512);
        assert_eq!(none, d);
        assert!(set.is_empty());
    }

    fn logits() -> Vec<f32> {
        vec![1.0, 3.0, 2.5, -1.0, 0.5, 3.0 - 1e-3, -2.0, 0.0]
    }

    fn params(temperature: f32, seed: u64) -> SamplingParams {
        SamplingParams {
            temperature,
            seed: Some(seed),
            ..SamplingParams::default()
        }
    }

    #[test]
    fn greedy_picks_argmax_lowest_id_on_ties() {
        let mut s = Sampler::new(SamplingParams::greedy(), 8);
        assert_eq!(s.sample(&mut logits(), &[]), 1);
        let mut tie = vec![0.0, 5.0, 5.0, 1.0];
        assert_eq!(s.sample(&mut tie, &[]), 1);
        assert_eq!(s.sample(&mut [f32::NAN, 1.0, f32::NAN], &[]), 1);
        assert_eq!(s.sample(&mut [], &[]), 0);
    }

    #[test]
    fn same_seed_same_sequence() {
        let run = |seed| {
            let mut s = Sampler::new(
                SamplingParams {
                    top_k: 0,
                    top_p: 1.0,
                    min_p: 0.0,
                    ..params(1.5, seed)
                },
                8,
            );
            (0..64)
                .map(|_| s.sample(&mut logits(), &[]))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        let distinct: std::collections::HashSet<_> = run(7).into_iter().collect();
        assert!(
            distinct.len() > 3,
            "high temperature should visit several tokens"
        );
    }

    #[test]
    fn top_k_1_and_tiny_top_p_are_greedy() {
        for seed in 0..20 {
            let mut s = Sampler::new(
                SamplingParams {
                    top_k: 1,
                    ..params(2.0, seed)
                },
                8,
            );
            assert_eq!(s.sample(&mut logits(), &[]), 1);
            let mut s = Sampler::new(
                SamplingParams {
                    top_k: 0,
                    top_p: 1e-6,
                    min_p: 0.0,
                    ..params(2.0, seed)
                },
                8,
            );
            assert_eq!(s.sample(&mut logits(), &[]), 1);
        }
    }

    #[test]
    fn min_p_keeps_only_close_tokens() {
        // p_i / p_max = exp(l_i - 3): only ids 1 (3.0), 5 (2.999) and 2 (2.5) are >= 0.5.
        let mut seen = std::collections::HashSet::new();
        for seed in 0..200 {
            let mut s = Sampler::new(
                SamplingParams {
                    top_k: 0,
                    top_p: 1.0,
                    min_p: 0.5,
                    ..params(1.0, seed)
                },
                8,
            );
            seen.insert(s.sample(&mut logits(), &[]));
        }
        assert_eq!(seen, [1, 2, 5].into_iter().collect());
    }

    #[test]
    fn penalties_change_the_choice() {
        let mut s = Sampler::new(
            SamplingParams {
                repeat_penalty: 1.5,
                ..SamplingParams::greedy()
            },
            8,
        );
        // 3.0 / 1.5 = 2.0 < 2.999 -> id 5 wins; 5 is then also penalized -> id 2 (2.5)
        assert_eq!(s.sample(&mut logits(), &[1]), 5);
        assert_eq!(s.sample(&mut logits(), &[1, 5]), 2);
        // outside the window: no effect
        let mut s = Sampler::new(
            SamplingParams {
                repeat_penalty: 1.5,
                repeat_last_n: 1,
                ..SamplingParams::greedy()
            },
            8,
        );
        assert_eq!(s.sample(&mut logits(), &[1, 4]), 1);
        // negative logits are multiplied (pushed further down)
        let mut l = vec![-1.0, -1.2];
        let mut s = Sampler::new(
            SamplingParams {
                repeat_penalty: 1.5,
                ..SamplingParams::greedy()
            },
            2,
        );
        assert_eq!(s.sample(&mut l, &[0]), 1);
        assert_eq!(l[0], -1.5);
        // frequency scales with the count, presence does not
        let mut s = Sampler::new(
            SamplingParams {
                frequency_penalty: 0.4,
                ..SamplingParams::greedy()
            },
            8,
        );
        let mut l = logits();
        assert_eq!(s.sample(&mut l, &[1, 1]), 5);
        assert!((l[1] - 2.2).abs() < 1e-6);
        let mut s = Sampler::new(
            SamplingParams {
                presence_penalty: 0.4,
                ..SamplingParams::greedy()
            },
            8,
        );
        let mut l = logits();
        s.sample(&mut l, &[1, 1, 1]);
        assert!((l[1] - 2.6).abs() < 1e-6);
    }

    #[test]
    fn logit_bias_bans_tokens() {
        let ban = |ids: &[u32]| SamplingParams {
            logit_bias: ids.iter().map(|&i| (i, f32::NEG_INFINITY)).collect(),
            ..params(1.0, 3)
        };
        let mut s = Sampler::new(
            SamplingParams {
                temperature: 0.0,
                ..ban(&[1])
            },
            8,
        );
        assert_eq!(s.sample(&mut logits(), &[]), 5);
        let mut s = Sampler::new(ban(&[1, 5, 2]), 8);
        for _ in 0..100 {
            let t = s.sample(&mut logits(), &[]);
            assert!(![1, 5, 2].contains(&t));
        }
        // everything banned: still returns an id, no panic
        let mut s = Sampler::new(ban(&[0, 1]), 2);
        assert!(s.sample(&mut [0.0, 0.0], &[]) < 2);
    }

    #[test]
    fn validate_messages() {
        assert!(SamplingParams::default().validate(10).is_ok());
        let err = |p: SamplingParams| p.validate(10).unwrap_err().to_string();
        assert!(err(SamplingParams {
            top_p: 1.5,
            ..Default::default()
        })
        .contains("top_p"));
        assert!(err(SamplingParams {
            min_p: -0.1,
            ..Default::default()
        })
        .contains("min_p"));
        assert!(err(SamplingParams {
            temperature: f32::NAN,
            ..Default::default()
        })
        .contains("temperature"));
        assert!(err(SamplingParams {
            repeat_penalty: 0.0,
            ..Default::default()
        })
        .contains("repeat_penalty"));
        assert!(err(SamplingParams {
            logit_bias: vec![(10, 1.0)],
            ..Default::default()
        })
        .contains("out of range"));
        assert!(SamplingParams {
            logit_bias: vec![(9, f32::NEG_INFINITY)],
            ..Default::default()
        }
        .validate(10)
        .is_ok());
    }

    #[test]
    fn log_softmax_top_matches_direct_computation() {
        let l = logits();
        let mut out = Vec::with_capacity(3);
        let lse = log_softmax_top(&l, 3, &mut out);
        let direct = l.iter().map(|&x| f64::from(x).exp()).sum::<f64>().ln() as f32;
        assert!((lse - direct).abs() < 1e-5);
        assert_eq!(out.iter().map(|e| e.0).collect::<Vec<_>>(), [1, 5, 2]);
        assert!((out[0].1 - (3.0 - direct)).abs() < 1e-5);
        let total: f32 = l.iter().map(|&x| (x - lse).exp()).sum();
        assert!((total - 1.0).abs() < 1e-5);
        // ties -> lower id first; large k takes the other path
        let flat = vec![0.0f32; 100];
        let lse = log_softmax_top(&flat, 90, &mut out);
        assert!((lse - 100f32.ln()).abs() < 1e-5);
        assert_eq!(out.len(), 90);
        assert!(out.iter().enumerate().all(|(i, e)| e.0 == i as u32));
        assert_eq!(log_softmax_top(&flat, 2, &mut out), lse);
        assert_eq!(out.iter().map(|e| e.0).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(log_softmax_top(&[], 5, &mut out), f32::NEG_INFINITY);
        assert!(out.is_empty());
    }

    #[test]
    fn stop_across_pieces() {
        let mut m = StopMatcher::new(["o w"]);
        assert_eq!(m.feed("Hel"), ("Hel".to_string(), false));
        assert_eq!(m.feed("lo wor"), ("l".to_string(), true)); // "Hel" + "l" = "Hell"
        assert_eq!(m.feed("ld"), (String::new(), true));
        assert_eq!(m.matched(), Some("o w"));
        assert_eq!(m.flush(), "");
    }

    #[test]
    fn stop_holds_back_only_possible_prefixes() {
        let mut m = StopMatcher::new(["</end>", "STOP"]);
        assert_eq!(m.feed("abc</"), ("abc".to_string(), false));
        assert_eq!(m.feed("en"), (String::new(), false));
        assert_eq!(m.feed("x ST"), ("</enx ".to_string(), false));
        assert_eq!(m.feed("OP tail"), (String::new(), true));
        assert_eq!(m.matched(), Some("STOP"));
    }

    #[test]
    fn multiple_stops_earliest_wins() {
        let mut m = StopMatcher::new(["world", "lo"]);
        assert_eq!(m.feed("hello world"), ("hel".to_string(), true));
        assert_eq!(m.matched(), Some("lo"));
    }

    #[test]
    fn no_false_hold_back_and_flush() {
        let mut m = StopMatcher::new(["xyz"]);
        assert_eq!(m.feed("abc"), ("abc".to_string(), false));
        assert_eq!(m.feed("ab x"), ("ab ".to_string(), false));
        assert_eq!(m.flush(), "x");
        let mut none = StopMatcher::new(Vec::<String>::new());
        assert_eq!(none.feed("anything"), ("anything".to_string(), false));
        // chars, not bytes: a multi-byte stop string split inside a character's neighbourhood
        let mut m = StopMatcher::new(["日本"]);
        assert_eq!(m.feed("ab日"), ("ab".to_string(), false));
        assert_eq!(m.feed("x"), ("日x".to_string(), false));
        assert_eq!(m.feed("日本語"), (String::new(), true));
    }
}
