//! AdamW with decoupled weight decay (PyTorch's `torch.optim.AdamW`) and global gradient-norm
//! clipping, with state that can be saved and restored exactly; optionally with 8-bit moments
//! as bitsandbytes' `AdamW8bit` keeps them ([`super::quantize`]): a quarter of the optimiser
//! memory, the update itself computed in f32 from the dequantised moments.
//!
//! candle-nn's `AdamW` keeps its moments private, so a checkpoint could not resume it exactly;
//! this one hands them to the checkpoint writer ([`AdamW::state`]) and takes them back.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Result, Tensor, Var};

use super::adamw_host::{self, Moment8};
use super::quantize::{BLOCK, DynamicMap, Quantized};
use crate::config::OptimizerKind;
use crate::model::kernels::{fused_cpu, with_host};

/// AdamW hyperparameters (the learning rate is given at every step: the schedule sets it).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    /// beta1.
    pub beta1: f64,
    /// beta2.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

/// Parameters smaller than this keep 32-bit moments under `adamw8bit` (bitsandbytes'
/// `min_8bit_size`): their state is negligible and 8 bits would cost them accuracy.
pub const MIN_8BIT_SIZE: usize = 4096;

/// Bytes the two moments of a parameter of `n` values take with `kind`: 4 each in f32, or per
/// block of 256 one byte each and a 4-byte scale (parameters under [`MIN_8BIT_SIZE`] keep f32).
pub fn state_bytes(n: usize, kind: OptimizerKind) -> usize {
    match kind {
        OptimizerKind::Adamw8bit if n >= MIN_8BIT_SIZE => {
            let blocks = n.div_ceil(BLOCK);
            2 * (blocks * BLOCK + 4 * blocks)
        }
        _ => 8 * n,
    }
}

/// A parameter's first and second moments.
pub enum Moments {
    /// In f32.
    Full {
        /// First moment.
        m: Tensor,
        /// Second moment.
        v: Tensor,
    },
    /// Block-wise 8-bit (signed map for `m`, unsigned for `v`).
    Quantized {
        /// First moment.
        m: Quantized,
        /// Second moment.
        v: Quantized,
    },
}

/// One parameter and its moments.
pub struct Slot {
    /// The parameter.
    pub var: Var,
    /// Its moments.
    pub moments: Moments,
}

/// The dynamic maps of 8-bit moments.
struct Maps {
    signed: DynamicMap,
    unsigned: DynamicMap,
}

impl Maps {
    /// The new parameter from the f32 host parameter `p` and gradient `g`, with the 8-bit
    /// moments `m` and `v` replaced by the new ones, in one parallel pass
    /// ([`adamw_host::update_8bit`]).
    fn update_on_host(
        &self,
        k: &adamw_host::Step,
        p: &Tensor,
        g: &Tensor,
        m: &mut Quantized,
        v: &mut Quantized,
    ) -> Result<Tensor> {
        let (mut m_codes, mut m_absmax) = (m.codes.to_vec1::<u8>()?, m.absmax.to_vec1::<f32>()?);
        let (mut v_codes, mut v_absmax) = (v.codes.to_vec1::<u8>()?, v.absmax.to_vec1::<f32>()?);
        let p2 = with_host(&[p, g], "AdamW's parameter and gradient", |x| {
            let m8 = Moment8 { codes: &mut m_codes, absmax: &mut m_absmax, map: &self.signed };
            let v8 = Moment8 { codes: &mut v_codes, absmax: &mut v_absmax, map: &self.unsigned };
            adamw_host::update_8bit(k, x[0], x[1], m8, v8)
        })?;
        let device = p.device();
        let quantized = |codes: Vec<u8>, absmax: Vec<f32>| -> Result<Quantized> {
            let (n, blocks) = (codes.len(), absmax.len());
            Ok(Quantized {
                codes: Tensor::from_vec(codes, n, device)?,
                absmax: Tensor::from_vec(absmax, blocks, device)?,
            })
        };
        (*m, *v) = (quantized(m_codes, m_absmax)?, quantized(v_codes, v_absmax)?);
        Tensor::from_vec(p2, p.shape(), device)
    }
}

/// The optimiser.
pub struct AdamW {
    /// Parameters with their moments, in a fixed order.
    pub slots: Vec<(String, Slot)>,
    /// Steps taken (bias correction uses it).
    pub step: u64,
    /// Hyperparameters.
    pub config: AdamWConfig,
    maps: Option<Maps>,
    /// Whether f32 parameters in host memory take the fused passes of [`adamw_host`] (always
    /// but in the tests that hold them to the composed ops).
    host_passes: bool,
}

impl AdamW {
    /// An optimiser of `kind` over named parameters, moments zero.
    pub fn new(params: Vec<(String, Var)>, config: AdamWConfig, kind: OptimizerKind) -> Result<Self> {
        let device = params.first().map_or(Device::Cpu, |(_, v)| v.device().clone());
        let maps = match kind {
            OptimizerKind::Adamw => None,
            OptimizerKind::Adamw8bit => {
                Some(Maps { signed: DynamicMap::new(true, &device)?, unsigned: DynamicMap::new(false, &device)? })
            }
        };
        let slots = params
            .into_iter()
            .map(|(name, var)| {
                let zeros = var.zeros_like()?;
                let moments = match &maps {
                    Some(maps) if var.elem_count() >= MIN_8BIT_SIZE => {
                        Moments::Quantized { m: maps.signed.quantize(&zeros)?, v: maps.unsigned.quantize(&zeros)? }
                    }
                    _ => Moments::Full { m: zeros.clone(), v: zeros },
                };
                Ok((name, Slot { var, moments }))
            })
            .collect::<Result<_>>()?;
        Ok(Self { slots, step: 0, config, maps, host_passes: true })
    }

    /// The global L2 norm of the gradients of all parameters (missing gradients count 0).
    pub fn grad_norm(&self, grads: &GradStore) -> Result<f64> {
        let mut total = 0f64;
        for (_, slot) in &self.slots {
            if let Some(g) = grads.get(slot.var.as_tensor()) {
                total += g.sqr()?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            }
        }
        Ok(total.sqrt())
    }

    /// One update with learning rate `lr`; gradients are scaled by `grad_scale` first (for
    /// clipping and accumulation). Parameters without a gradient are left untouched.
    pub fn step(&mut self, grads: &GradStore, lr: f64, grad_scale: f64) -> Result<()> {
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let (bc1, bc2) = (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t));
        let host = adamw_host::Step {
            grad_scale: grad_scale as f32,
            beta1: c.beta1 as f32,
            one_minus_beta1: (1.0 - c.beta1) as f32,
            beta2: c.beta2 as f32,
            one_minus_beta2: (1.0 - c.beta2) as f32,
            inv_bias1: (1.0 / bc1) as f32,
            inv_bias2: (1.0 / bc2) as f32,
            eps: c.eps as f32,
            decay: (1.0 - lr * c.weight_decay) as f32,
            lr: lr as f32,
            inv_sqrt_bias2: (1.0 / bc2.sqrt()) as f32,
            lr_over_bias1: (lr / bc1) as f32,
        };
        for (_, slot) in &mut self.slots {
            // Detached, so that the moments never hold a graph a gradient might carry.
            let Some(g) = grads.get(slot.var.as_tensor()) else { continue };
            let g = g.detach().contiguous()?;
            let (p, shape) = (slot.var.as_tensor(), slot.var.shape());
            if let Moments::Full { m, v } = &mut slot.moments
                && self.host_passes
                && fused_cpu(&[p, &g, m, v])
            {
                let [p2, m2, v2] = with_host(&[p, &g, m, v], "AdamW's parameter and moments", |x| {
                    adamw_host::update(&host, x[0], x[1], x[2], x[3])
                })?;
                (*m, *v) = (Tensor::from_vec(m2, shape, p.device())?, Tensor::from_vec(v2, shape, p.device())?);
                slot.var.set(&Tensor::from_vec(p2, shape, p.device())?)?;
                continue;
            }
            if let (Moments::Quantized { m, v }, Some(maps)) = (&mut slot.moments, &self.maps)
                && self.host_passes
                && fused_cpu(&[p, &g])
            {
                let p2 = maps.update_on_host(&host, p, &g, m, v)?;
                slot.var.set(&p2)?;
                continue;
            }
            let g = (g * grad_scale)?;
            let moment = |m: &Tensor, v: &Tensor| -> Result<(Tensor, Tensor)> {
                Ok((((m * c.beta1)? + (&g * (1.0 - c.beta1))?)?, ((v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?))
            };
            match &mut slot.moments {
                Moments::Full { m, v } => {
                    (*m, *v) = moment(m, v)?;
                    let update = ((&*m / bc1)? / ((&*v / bc2)?.sqrt()? + c.eps)?)?;
                    let decayed = (slot.var.as_tensor() * (1.0 - lr * c.weight_decay))?;
                    slot.var.set(&(decayed - (update * lr)?)?)?;
                }
                Moments::Quantized { m, v } => {
                    // bitsandbytes' kernel: the update from the new moments before they are
                    // quantised, `p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)`, then the decay
                    // (as `adamw_host::update_8bit` computes it on the CPU).
                    let maps = self.maps.as_ref().expect("8-bit moments have maps");
                    let (mf, vf) = moment(&maps.signed.dequantize(m, shape)?, &maps.unsigned.dequantize(v, shape)?)?;
                    let denom = ((vf.sqrt()? / bc2.sqrt())? + c.eps)?;
                    let updated = (slot.var.as_tensor() - ((&mf / denom)? * (lr / bc1))?)?;
                    slot.var.set(&(updated * (1.0 - lr * c.weight_decay))?)?;
                    (*m, *v) = (maps.signed.quantize_keeping_sign(&mf)?, maps.unsigned.quantize(&vf)?);
                }
            }
        }
        Ok(())
    }

    /// Bytes the moments take.
    pub fn state_bytes(&self) -> usize {
        let kind = if self.maps.is_some() { OptimizerKind::Adamw8bit } else { OptimizerKind::Adamw };
        self.slots.iter().map(|(_, s)| state_bytes(s.var.elem_count(), kind)).sum()
    }

    /// The moments and the step count as named tensors, for a checkpoint: `m.NAME` and
    /// `v.NAME` (f32), or `m8.NAME`, `m8_absmax.NAME`, `v8.NAME`, `v8_absmax.NAME`; and `step`.
    pub fn state(&self) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for (name, slot) in &self.slots {
            match &slot.moments {
                Moments::Full { m, v } => {
                    out.insert(format!("m.{name}"), m.clone());
                    out.insert(format!("v.{name}"), v.clone());
                }
                Moments::Quantized { m, v } => {
                    out.insert(format!("m8.{name}"), m.codes.clone());
                    out.insert(format!("m8_absmax.{name}"), m.absmax.clone());
                    out.insert(format!("v8.{name}"), v.codes.clone());
                    out.insert(format!("v8_absmax.{name}"), v.absmax.clone());
                }
            }
        }
        out.insert("step".into(), Tensor::new(&[self.step as u32], &Device::Cpu)?);
        Ok(out)
    }

    /// Takes back what [`AdamW::state`] wrote; the problem, in words, when it does not fit
    /// (moments of another optimiser or parameter set).
    pub fn load_state(&mut self, state: &HashMap<String, Tensor>) -> std::result::Result<(), String> {
        let get = |key: String| state.get(&key).ok_or(format!("no `{key}` (saved by another optimiser?)"));
        // A tensor of the dtype and number of values the optimiser keeps under `key`.
        let fitting = |key: String, dtype: DType, count: usize| -> std::result::Result<&Tensor, String> {
            let t = get(key.clone())?;
            if t.dtype() != dtype || t.elem_count() != count {
                return Err(format!(
                    "`{key}` holds {} {:?} values where {count} {dtype:?} values belong (saved for another parameter?)",
                    t.elem_count(),
                    t.dtype()
                ));
            }
            Ok(t)
        };
        for (name, slot) in &mut self.slots {
            let (device, shape, dtype) = (slot.var.device().clone(), slot.var.shape().clone(), slot.var.dtype());
            let on = |t: &Tensor| t.to_device(&device).map_err(|e| e.to_string());
            let n = shape.elem_count();
            match &mut slot.moments {
                Moments::Full { m, v } => {
                    let moment = |which: &str| -> std::result::Result<Tensor, String> {
                        on(fitting(format!("{which}.{name}"), dtype, n)?)?.reshape(&shape).map_err(|e| e.to_string())
                    };
                    (*m, *v) = (moment("m")?, moment("v")?);
                }
                Moments::Quantized { m, v } => {
                    let blocks = n.div_ceil(BLOCK);
                    let q = |which: &str| -> std::result::Result<Quantized, String> {
                        Ok(Quantized {
                            codes: on(fitting(format!("{which}.{name}"), DType::U8, blocks * BLOCK)?)?,
                            absmax: on(fitting(format!("{which}_absmax.{name}"), DType::F32, blocks)?)?,
                        })
                    };
                    (*m, *v) = (q("m8")?, q("v8")?);
                }
            }
        }
        let step = get("step".into())?.to_vec1::<u32>().ok().and_then(|v| v.first().copied());
        self.step = step.ok_or("no optimiser step")? as u64;
        Ok(())
    }
}

/// The factor that scales gradients of global norm `norm` down to `max_norm` (PyTorch's
/// `clip_grad_norm_`: `max_norm / (norm + 1e-6)`, capped at 1).
pub fn clip_factor(norm: f64, max_norm: f64) -> f64 {
    (max_norm / (norm + 1e-6)).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_pytorch_adamw_closed_form() {
        // torch.optim.AdamW([p], lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01),
        // p = 1.0, two steps with grad 0.5 then -0.25.
        let var = Var::new(&[1f32], &Device::Cpu).unwrap();
        let cfg = AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 };
        let mut opt = AdamW::new(vec![("p".into(), var.clone())], cfg, OptimizerKind::Adamw).unwrap();
        let mut expected = 1.0f64;
        let (mut m, mut v) = (0.0f64, 0.0f64);
        for (t, grad) in [(1, 0.5f64), (2, -0.25)] {
            let loss = (var.as_tensor() * grad).unwrap().sum_all().unwrap();
            opt.step(&loss.backward().unwrap(), 0.1, 1.0).unwrap();
            expected *= 1.0 - 0.1 * 0.01;
            m = 0.9 * m + 0.1 * grad;
            v = 0.999 * v + 0.001 * grad * grad;
            let mhat = m / (1.0 - 0.9f64.powi(t));
            let vhat = v / (1.0 - 0.999f64.powi(t));
            expected -= 0.1 * mhat / (vhat.sqrt() + 1e-8);
            let got = var.as_tensor().to_vec1::<f32>().unwrap()[0] as f64;
            assert!((got - expected).abs() < 1e-6, "step {t}: {got} vs {expected}");
        }
        assert_eq!(opt.step, 2);
    }

    #[test]
    fn clipping_only_ever_scales_down() {
        assert_eq!(clip_factor(0.5, 1.0), 1.0);
        assert!((clip_factor(4.0, 1.0) - 0.25).abs() < 1e-6);
    }

    /// bitsandbytes (`tests/fixtures/make_adam8bit_fixtures.py`): the same maps, the same codes
    /// for the same values as its reference quantiser, and the first step of its own
    /// `AdamW8bit` (CPU backend); later steps depend on its CPU backend's table lookup, which
    /// rounds values near zero differently from its reference and CUDA kernels (whose rule
    /// dbsweep follows), so they are compared with f32 AdamW instead.
    #[test]
    fn eight_bit_moments_follow_bitsandbytes() {
        use crate::train::quantize::{DynamicMap, dynamic_codes};
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/adam8bit.safetensors");
        let f = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
        for (signed, key) in [(true, "qmap.signed"), (false, "qmap.unsigned")] {
            for (ours, theirs) in dynamic_codes(signed).iter().zip(f[key].to_vec1::<f32>().unwrap()) {
                assert!((ours - theirs).abs() <= 2.0 * f32::EPSILON * theirs.abs(), "{key}: {ours} vs {theirs}");
            }
        }
        let codes = |t: &Tensor| t.flatten_all().unwrap().to_dtype(DType::U32).unwrap().to_vec1::<u32>().unwrap();
        let x = &f["quantize.input"];
        for (signed, label, data) in [(true, "signed", x.clone()), (false, "unsigned", x.sqr().unwrap())] {
            let q = DynamicMap::new(signed, &Device::Cpu).unwrap().quantize(&data).unwrap();
            assert_eq!(codes(&q.codes)[..600], codes(&f[&format!("quantize.codes.{label}")])[..], "{label} codes");
            let absmax = f[&format!("quantize.absmax.{label}")].to_vec1::<f32>().unwrap();
            assert_eq!(q.absmax.to_vec1::<f32>().unwrap(), absmax);
        }

        let names = ["big", "exact", "small"];
        let vars: Vec<Var> = names.iter().map(|n| Var::from_tensor(&f[&format!("param.{n}")]).unwrap()).collect();
        let cfg = AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 1e-2 };
        let params = names.iter().map(|n| n.to_string()).zip(vars.iter().cloned()).collect();
        let mut opt = AdamW::new(params, cfg, OptimizerKind::Adamw8bit).unwrap();
        assert!(matches!(opt.slots[2].1.moments, Moments::Full { .. }), "small parameters keep f32 moments");
        let mut loss = Tensor::zeros((), DType::F32, &Device::Cpu).unwrap();
        for (n, v) in names.iter().zip(&vars) {
            loss = (loss + (v.as_tensor() * &f[&format!("grad.{n}.0")]).unwrap().sum_all().unwrap()).unwrap();
        }
        opt.step(&loss.backward().unwrap(), 1e-2, 1.0).unwrap();
        for (v, n) in vars.iter().zip(names) {
            let want = &f[&format!("expected1.{n}")];
            let diff = (v.as_tensor() - want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            // bitsandbytes' CPU backend decays before the update, its kernels (and dbsweep) after.
            assert!(diff < 2e-6, "{n}: parameters differ by {diff} after the first step");
        }
        assert!(opt.state_bytes() < (5600 + 4096) * 8 / 3, "8-bit moments: {} bytes", opt.state_bytes());
    }

    /// The fused passes on the CPU give the parameters and moments the composed candle ops
    /// (which other devices run) give, to the bit, over several steps: f32 moments, and 8-bit
    /// ones with a partial last block.
    #[test]
    fn host_passes_match_the_composed_ops_exactly() {
        let cfg = AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 1e-2 };
        let mut rng = crate::rng::Rng::new(5);
        let shapes = [(3 * (1 << 14) / 100 + 7, 100), (80, 70)];
        let starts: Vec<Tensor> =
            shapes.iter().map(|s| Tensor::from_vec(rng.normals_f32(s.0 * s.1), *s, &Device::Cpu).unwrap()).collect();
        let grads: Vec<Vec<Tensor>> = (0..3)
            .map(|_| {
                shapes.iter().map(|s| Tensor::from_vec(rng.normals_f32(s.0 * s.1), *s, &Device::Cpu).unwrap()).collect()
            })
            .collect();
        for kind in [OptimizerKind::Adamw, OptimizerKind::Adamw8bit] {
            let run = |host_passes: bool| {
                let vars: Vec<Var> = starts.iter().map(|t| Var::from_tensor(t).unwrap()).collect();
                let params = vars.iter().enumerate().map(|(i, v)| (format!("p{i}"), v.clone())).collect();
                let mut opt = AdamW::new(params, cfg, kind).unwrap();
                opt.host_passes = host_passes;
                for (step, g) in grads.iter().enumerate() {
                    let mut loss = Tensor::zeros((), DType::F32, &Device::Cpu).unwrap();
                    for (v, g) in vars.iter().zip(g) {
                        loss = (loss + (v.as_tensor() * g).unwrap().sum_all().unwrap()).unwrap();
                    }
                    opt.step(&loss.backward().unwrap(), 1e-3 * (step + 1) as f64, 0.8).unwrap();
                }
                let mut state: Vec<(String, Tensor)> = opt.state().unwrap().into_iter().collect();
                state.extend(vars.iter().enumerate().map(|(i, v)| (format!("param{i}"), v.as_tensor().clone())));
                state.sort_by(|a, b| a.0.cmp(&b.0));
                state
            };
            let (fused, composed) = (run(true), run(false));
            assert_eq!(fused.len(), composed.len());
            for ((name, a), (_, b)) in fused.iter().zip(&composed) {
                let bytes =
                    |t: &Tensor| t.flatten_all().unwrap().to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap();
                assert_eq!(bytes(a), bytes(b), "{kind:?}: {name}");
            }
        }
    }

    /// Moments of the wrong size or dtype are refused with the key that holds them, not taken
    /// (the fused passes would index past them).
    #[test]
    fn state_of_another_shape_is_refused_by_name() {
        let cfg = AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 1e-2 };
        for kind in [OptimizerKind::Adamw, OptimizerKind::Adamw8bit] {
            let var = Var::zeros((64, 80), DType::F32, &Device::Cpu).unwrap();
            let mut opt = AdamW::new(vec![("w".into(), var.clone())], cfg, kind).unwrap();
            let mut state = opt.state().unwrap();
            opt.load_state(&state).unwrap();
            let key = if kind == OptimizerKind::Adamw { "v.w" } else { "v8.w" };
            let short = state[key].flatten_all().unwrap().narrow(0, 0, 10).unwrap();
            state.insert(key.into(), short);
            let err = opt.load_state(&state).unwrap_err();
            assert!(err.contains(&format!("`{key}` holds 10 ")), "{err}");
            let key = if kind == OptimizerKind::Adamw { "m.w" } else { "m8_absmax.w" };
            let retyped = state[key].to_dtype(DType::F64).unwrap();
            state.insert(key.into(), retyped);
            assert!(opt.load_state(&state).unwrap_err().contains("F64"));
        }
    }

    /// With gradients of a steady scale, 8-bit moments follow the f32 ones closely; the first
    /// moment keeps its sign when it rounds toward zero (bitsandbytes' kernels do the same).
    #[test]
    fn eight_bit_adamw_tracks_f32_adamw() {
        let mut rng = crate::rng::Rng::new(3);
        let start = Tensor::from_vec(rng.normals_f32(8192), (64, 128), &Device::Cpu).unwrap();
        let cfg = AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 1e-2 };
        let run = |kind| {
            let var = Var::from_tensor(&start).unwrap();
            let mut opt = AdamW::new(vec![("p".into(), var.clone())], cfg, kind).unwrap();
            let mut rng = crate::rng::Rng::new(4);
            for _ in 0..20 {
                let g = Tensor::from_vec(rng.normals_f32(8192), (64, 128), &Device::Cpu).unwrap();
                let loss = (var.as_tensor() * g).unwrap().sum_all().unwrap();
                opt.step(&loss.backward().unwrap(), 1e-3, 1.0).unwrap();
            }
            var.as_tensor().clone()
        };
        let (full, eight) = (run(OptimizerKind::Adamw), run(OptimizerKind::Adamw8bit));
        let moved = (&full - &start).unwrap().abs().unwrap().mean_all().unwrap().to_scalar::<f32>().unwrap();
        let apart = (&full - &eight).unwrap().abs().unwrap().mean_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(apart < 0.05 * moved, "8-bit drifted {apart} while training moved {moved}");
    }
}
