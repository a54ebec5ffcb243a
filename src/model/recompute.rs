//! Gradient checkpointing: a block's forward pass keeps no graph (only its inputs and output),
//! and the backward pass runs the block again, with graph, to get the gradients. Activation
//! memory then grows with the number of blocks, not with everything inside them, for about one
//! more forward pass of time (Chen et al. 2016, arXiv 1604.06174; what diffusers'
//! `enable_gradient_checkpointing` does per UNet block).
//!
//! candle's backward pass only gives a custom op's own inputs their gradients. A checkpointed
//! block's parameters are not inputs of its op, so the op hands their gradients to the
//! [`Recompute`] it belongs to, which the training step adds to the rest
//! ([`Recompute::merge_into`]). The op also takes a constant variable of the `Recompute`, so
//! candle records it (and calls its backward) even when neither input needs a gradient, as the
//! first blocks' inputs of a LoRA run do. A recomputed block computes exactly what it computed
//! forward (dropout masks are seeded, not drawn), so the gradients are the ones without
//! checkpointing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::backprop::GradStore;
use candle_core::{CustomOp3, Result, Tensor, TensorId, Var};

use super::handover::{Handover, hand_over};

/// A block's forward pass on two inputs.
pub type Block = Arc<dyn Fn(&Tensor, &Tensor) -> Result<Tensor> + Send + Sync>;

/// The gradients checkpointed blocks computed for the trained parameters, until the step takes
/// them.
pub struct Recompute {
    params: Vec<Tensor>,
    grads: Mutex<HashMap<TensorId, Tensor>>,
    /// A variable every checkpoint op takes, so that candle always records the op.
    anchor: Var,
}

impl Recompute {
    /// Checkpointing for a model whose trained parameters are `params`.
    pub fn new(params: Vec<Tensor>, device: &candle_core::Device) -> Result<Arc<Self>> {
        let anchor = Var::zeros((), candle_core::DType::F32, device)?;
        Ok(Arc::new(Self { params, grads: Mutex::new(HashMap::new()), anchor }))
    }

    /// `block(a, b)`, keeping no graph of its inside: the backward pass recomputes it.
    pub fn checkpoint(self: &Arc<Self>, a: &Tensor, b: &Tensor, block: Block) -> Result<Tensor> {
        let out = block(&a.detach(), &b.detach())?.detach();
        let op = Checkpoint { out: Handover::new(out), block, recompute: Arc::clone(self) };
        a.apply_op3(b, self.anchor.as_tensor(), op)
    }

    /// Adds the parameter gradients the checkpointed blocks computed to `grads` and forgets
    /// them (call it after each backward pass).
    pub fn merge_into(&self, grads: &mut GradStore) -> Result<()> {
        let mut collected = self.grads.lock().expect("recompute lock");
        for p in &self.params {
            if let Some(g) = collected.remove(&p.id()) {
                let sum = match grads.get(p) {
                    Some(old) => (old + g)?,
                    None => g,
                };
                grads.insert(p, sum);
            }
        }
        collected.clear();
        Ok(())
    }
}

impl std::fmt::Debug for Recompute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recompute").field("params", &self.params.len()).finish_non_exhaustive()
    }
}

/// The op standing for a checkpointed block: its forward hands over the output computed
/// without graph; its backward recomputes the block.
struct Checkpoint {
    out: Handover,
    block: Block,
    recompute: Arc<Recompute>,
}

impl CustomOp3 for Checkpoint {
    fn name(&self) -> &'static str {
        "dbsweep-checkpoint"
    }

    hand_over!();

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _anchor: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // Fresh leaves for the inputs that need a gradient; the others stay constants.
        let leaf = |t: &Tensor| -> Result<(Tensor, Option<Var>)> {
            if t.track_op() {
                let var = Var::from_tensor(&t.detach())?;
                Ok((var.as_tensor().clone(), Some(var)))
            } else {
                Ok((t.clone(), None))
            }
        };
        let ((a, a_var), (b, b_var)) = (leaf(a)?, leaf(b)?);
        let out = (self.block)(&a, &b)?;
        let grads = (out * grad_res.detach())?.sum_all()?.backward()?;
        {
            let mut collected = self.recompute.grads.lock().expect("recompute lock");
            for p in &self.recompute.params {
                if let Some(g) = grads.get(p) {
                    let sum = match collected.remove(&p.id()) {
                        Some(old) => (old + g)?,
                        None => g.clone(),
                    };
                    collected.insert(p.id(), sum);
                }
            }
        }
        let grad_of = |v: Option<Var>| v.and_then(|v| grads.get(v.as_tensor()).cloned());
        Ok((grad_of(a_var), grad_of(b_var), None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn a_checkpointed_block_gives_the_same_values_and_gradients() {
        let dev = Device::Cpu;
        let w = Var::new(&[[0.5f32, -1.0], [2.0, 0.25]], &dev).unwrap();
        let x = Var::new(&[[1f32, 2.0], [3.0, -1.0]], &dev).unwrap();
        // A constant input (as a frozen base gives a LoRA run's first blocks) still reaches w.
        let frozen = Tensor::new(&[[1f32, 2.0], [3.0, -1.0]], &dev).unwrap();
        let c = Tensor::new(&[[0.1f32, 0.2]], &dev).unwrap();
        let wt = w.as_tensor().clone();
        let block: Block = Arc::new(move |x: &Tensor, c: &Tensor| x.matmul(&wt)?.tanh()?.broadcast_add(c)?.sqr());
        let plain = block(x.as_tensor(), &c).unwrap();
        let loss = |t: &Tensor| (t * 3.0).unwrap().sum_all().unwrap();
        let expected = loss(&plain).backward().unwrap();

        let recompute = Recompute::new(vec![w.as_tensor().clone()], &dev).unwrap();
        let from_constant = recompute.checkpoint(&frozen, &c, Arc::clone(&block)).unwrap();
        let mut grads = loss(&from_constant).backward().unwrap();
        recompute.merge_into(&mut grads).unwrap();
        let want = expected.get(w.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(grads.get(w.as_tensor()).unwrap().to_vec2::<f32>().unwrap(), want);
        let out = recompute.checkpoint(x.as_tensor(), &c, block).unwrap();
        assert_eq!(out.to_vec2::<f32>().unwrap(), plain.to_vec2::<f32>().unwrap());
        let mut grads = loss(&out).backward().unwrap();
        assert!(grads.get(w.as_tensor()).is_none(), "the parameter is not in the op's graph");
        recompute.merge_into(&mut grads).unwrap();
        for v in [&w, &x] {
            let (got, want) = (grads.get(v.as_tensor()).unwrap(), expected.get(v.as_tensor()).unwrap());
            assert_eq!(got.to_vec2::<f32>().unwrap(), want.to_vec2::<f32>().unwrap());
        }
        assert_eq!(out.dtype(), DType::F32);
    }
}
