//! Rotary position embeddings: the variants the files declare, as llama.cpp computes them
//! (`ggml_rope_ext`: `ggml-cpu/ops.cpp` `rope_yarn`, `ggml_rope_cache_init`; the context-level
//! factors of `llama-context.cpp`).
//!
//! For position `p` and pair `i` of `n_dims`, `theta_extrap = p * base^(-2i/n_dims) / ff[i]`
//! (`ff`: per-dimension frequency divisors, `rope_freqs.weight` of Llama 3.1+ or Phi-3's
//! `rope_factors_long/short`, else 1), `theta_interp = freq_scale * theta_extrap` (linear
//! scaling); YaRN blends the two by a ramp over the dimensions and scales the magnitude;
//! `cos`/`sin` are multiplied by the attention factor.

use crate::error::{EngineError, Result};
use crate::gguf::keys;
use crate::model::config::Hp;
use hologram_kernels::ops::{self, RopeKind};

/// `rope.scaling.*` of a file, as llama.cpp resolves it for a context.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RopeScaling {
    /// `1 / rope.scaling.factor` (1 when absent or `type = none`).
    pub freq_scale: f32,
    /// YaRN extrapolation mix (1 for `type = yarn`, else 0).
    pub ext_factor: f32,
    /// Multiplier of cos/sin before YaRN's own magnitude correction.
    pub attn_factor: f32,
    /// `rope.scaling.original_context_length` (default: the training context).
    pub n_ctx_orig: usize,
    /// `type = longrope` (Phi-3 128k: the per-dimension factors come as tensors).
    pub longrope: bool,
}

impl RopeScaling {
    pub const NONE: RopeScaling = RopeScaling {
        freq_scale: 1.0,
        ext_factor: 0.0,
        attn_factor: 1.0,
        n_ctx_orig: 0,
        longrope: false,
    };

    /// Read `{arch}.rope.scaling.*`. Types: `none`, `linear` (the default), `yarn`, `longrope`;
    /// Llama 3's "llama3" scaling needs no type (the converter writes `rope_freqs.weight`).
    /// Any other type is an `Unsupported` error naming it.
    pub fn read(hp: &Hp<'_>, n_ctx_train: usize) -> Result<Self> {
        let ty = hp.str_opt(keys::ROPE_SCALING_TYPE)?.unwrap_or("linear");
        let factor = match hp.f32_opt(keys::ROPE_SCALING_FACTOR, |v| v >= 0.0, "non-negative")? {
            Some(v) => v,
            None => hp
                .f32_opt(keys::ROPE_SCALE_LINEAR, |v| v >= 0.0, "non-negative")?
                .unwrap_or(0.0),
        };
        let mut freq_scale = if factor == 0.0 { 1.0 } else { 1.0 / factor };
        let (ext_factor, longrope) = match ty {
            "none" => {
                freq_scale = 1.0;
                (0.0, false)
            }
            "linear" => (0.0, false),
            "yarn" => (1.0, false),
            "longrope" => (0.0, true),
            other => {
                return Err(EngineError::Unsupported(format!(
                    "{} = {other:?} (supported: none, linear, yarn, longrope)",
                    hp.key(keys::ROPE_SCALING_TYPE)
                )))
            }
        };
        let hp_attn = hp
            .positive_opt(keys::ROPE_SCALING_ATTN_FACTOR)?
            .unwrap_or(1.0);
        let mut attn_factor = 1.0f32;
        if ext_factor != 0.0 {
            // llama-context.cpp: YaRN's magnitude scale, cancelled by the one `rope_yarn`
            // applies again (llama.cpp PR 17945).
            let factor = 1.0 / freq_scale;
            let mscale = if factor <= 1.0 {
                1.0
            } else {
                0.1 * factor.ln() + 1.0
            };
            attn_factor = mscale * (1.0 / (1.0 + 0.1 * factor.ln()));
        }
        attn_factor *= hp_attn;
        let n_ctx_orig = hp
            .usize_opt(
                keys::ROPE_SCALING_ORIG_CTX_LEN,
                1,
                crate::model::config::MAX_CTX,
            )?
            .unwrap_or(n_ctx_train);
        Ok(RopeScaling {
            freq_scale,
            ext_factor,
            attn_factor,
            n_ctx_orig,
            longrope,
        })
    }
}

/// One RoPE table generator: everything but the position.
#[derive(Clone, Debug, PartialEq)]
pub struct Rope {
    pub kind: RopeKind,
    pub dims: usize,
    pub base: f32,
    pub scaling: RopeScaling,
    /// Per-pair frequency divisors (`dims / 2` values), if the file has them.
    pub freq_factors: Option<Vec<f32>>,
    /// YaRN correction range `[low, high]` of pair indices (ggml_rope_yarn_corr_dims).
    corr_dims: [f32; 2],
}

/// ggml's YaRN defaults (llama-hparams.h `yarn_beta_fast`, `yarn_beta_slow`); the families
/// here do not read other values from the file.
const YARN_BETA_FAST: f32 = 32.0;
const YARN_BETA_SLOW: f32 = 1.0;

impl Rope {
    /// `freq_factors`, if given, must have `dims / 2` positive finite values (the caller loads
    /// them with that length).
    pub fn new(
        kind: RopeKind,
        dims: usize,
        base: f32,
        scaling: RopeScaling,
        freq_factors: Option<Vec<f32>>,
        factors_name: &str,
    ) -> Result<Self> {
        if !(base.is_finite() && base > 0.0) {
            return Err(EngineError::invalid_model(format!(
                "RoPE base {base} must be positive"
            )));
        }
        if let Some(ff) = &freq_factors {
            if ff.len() != dims / 2 || ff.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
                return Err(EngineError::invalid_model(format!(
                    "{factors_name} must hold {} positive values",
                    dims / 2
                )));
            }
        }
        let corr_dims = yarn_corr_dims(dims, scaling.n_ctx_orig, base);
        Ok(Rope {
            kind,
            dims,
            base,
            scaling,
            freq_factors,
            corr_dims,
        })
    }

    /// Plain RoPE (no factors, no YaRN, no magnitude scale) with linear position scaling.
    fn is_plain(&self) -> bool {
        self.freq_factors.is_none()
            && self.scaling.ext_factor == 0.0
            && self.scaling.attn_factor == 1.0
    }

    /// Fill `cs` (length `dims`) with the interleaved `(cos, sin)` of position `pos`.
    pub fn table(&self, pos: usize, cs: &mut [f32]) {
        let sc = &self.scaling;
        if self.is_plain() {
            ops::rope_cos_sin(pos, self.dims, self.base, sc.freq_scale, cs);
            return;
        }
        let half = self.dims / 2;
        let p = pos as f64;
        let freq_scale = sc.freq_scale as f64;
        let ext = sc.ext_factor as f64;
        for i in 0..half {
            let mut theta_extrap = p * (self.base as f64).powf(-2.0 * i as f64 / self.dims as f64);
            if let Some(ff) = &self.freq_factors {
                theta_extrap /= ff[i] as f64;
            }
            let theta_interp = freq_scale * theta_extrap;
            let mut theta = theta_interp;
            let mut mscale = sc.attn_factor as f64;
            if ext != 0.0 {
                let ramp = yarn_ramp(self.corr_dims, i) as f64 * ext;
                theta = theta_interp * (1.0 - ramp) + theta_extrap * ramp;
                mscale *= 1.0 + 0.1 * (1.0 / freq_scale).ln();
            }
            let (s, c) = theta.sin_cos();
            cs[2 * i] = (c * mscale) as f32;
            cs[2 * i + 1] = (s * mscale) as f32;
        }
    }
}

/// ggml `rope_yarn_ramp` for pair `i` (ggml passes the even dimension index `2i`).
fn yarn_ramp(corr: [f32; 2], i: usize) -> f32 {
    let y = (i as f32 - corr[0]) / (corr[1] - corr[0]).max(0.001);
    1.0 - y.clamp(0.0, 1.0)
}

/// ggml `ggml_rope_yarn_corr_dims`.
fn yarn_corr_dims(n_dims: usize, n_ctx_orig: usize, base: f32) -> [f32; 2] {
    if base.is_nan() || base <= 1.0 || n_ctx_orig == 0 {
        return [0.0, 0.0];
    }
    let corr_dim = |n_rot: f32| {
        n_dims as f32 * (n_ctx_orig as f32 / (n_rot * 2.0 * std::f32::consts::PI)).ln()
            / (2.0 * base.ln())
    };
    let start = corr_dim(YARN_BETA_FAST).floor();
    let end = corr_dim(YARN_BETA_SLOW).ceil();
    [start.max(0.0), end.min(n_dims as f32 - 1.0)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rope(scaling: RopeScaling, ff: Option<Vec<f32>>) -> Rope {
        Rope::new(RopeKind::Neox, 8, 10000.0, scaling, ff, "ff").unwrap()
    }

    #[test]
    fn plain_is_the_kernel_table() {
        let r = rope(
            RopeScaling {
                freq_scale: 0.5,
                ..RopeScaling::NONE
            },
            None,
        );
        let (mut a, mut b) = ([0f32; 8], [0f32; 8]);
        r.table(17, &mut a);
        ops::rope_cos_sin(17, 8, 10000.0, 0.5, &mut b);
        assert_eq!(a, b);
    }

    #[test]
    fn freq_factors_divide_the_angle() {
        let r = rope(RopeScaling::NONE, Some(vec![1.0, 2.0, 4.0, 8.0]));
        let mut cs = [0f32; 8];
        r.table(3, &mut cs);
        for i in 0..4 {
            let theta = 3.0 * 10000f64.powf(-2.0 * i as f64 / 8.0) / [1.0, 2.0, 4.0, 8.0][i];
            assert!((cs[2 * i] as f64 - theta.cos()).abs() < 1e-6);
            assert!((cs[2 * i + 1] as f64 - theta.sin()).abs() < 1e-6);
        }
    }

    #[test]
    fn yarn_scales_the_magnitude_and_keeps_high_frequencies() {
        let sc = RopeScaling {
            freq_scale: 0.25,
            ext_factor: 1.0,
            attn_factor: 1.0 / (1.0 + 0.1 * 4f32.ln()) * (1.0 + 0.1 * 4f32.ln()),
            n_ctx_orig: 64,
            longrope: false,
        };
        let r = rope(sc, None);
        let mut cs = [0f32; 8];
        r.table(5, &mut cs);
        let m = 1.0 + 0.1 * 4f64.ln();
        // Pair 0 is below the correction range: pure extrapolation (the unscaled angle).
        let (c0, s0) = (cs[0] as f64, cs[1] as f64);
        assert!((c0 - m * 5f64.cos()).abs() < 1e-5);
        assert!((s0 - m * 5f64.sin()).abs() < 1e-5);
    }

    #[test]
    fn bad_factors_are_errors() {
        assert!(Rope::new(
            RopeKind::Norm,
            8,
            1e4,
            RopeScaling::NONE,
            Some(vec![1.0; 3]),
            "x"
        )
        .is_err());
        assert!(Rope::new(
            RopeKind::Norm,
            8,
            1e4,
            RopeScaling::NONE,
            Some(vec![0.0; 4]),
            "x"
        )
        .is_err());
        assert!(Rope::new(RopeKind::Norm, 8, -1.0, RopeScaling::NONE, None, "x").is_err());
    }
}
