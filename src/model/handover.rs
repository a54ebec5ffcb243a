//! Custom ops whose result is computed before the op is applied: with candle ops on detached
//! inputs, so no graph of its intermediates is kept. The op's forward pass only hands that
//! result over, and candle records the op with the op's own backward pass (attention,
//! the group norm of other devices, checkpointed blocks).

use std::sync::Mutex;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CudaStorage, Result, Shape, Storage, Tensor};

/// A result waiting for its op's forward pass, which takes it (so the op, kept in the graph
/// until the backward pass, does not hold a second copy of it).
#[derive(Default)]
pub struct Handover(Mutex<Option<Tensor>>);

impl Handover {
    /// `out`, to be handed over once.
    pub fn new(out: Tensor) -> Self {
        Self(Mutex::new(Some(out)))
    }

    /// Puts the result in (for an op that computes it itself before it is applied).
    pub fn put(&self, out: Tensor) {
        *self.0.lock().expect("handover lock") = Some(out);
    }

    fn take(&self) -> Result<Tensor> {
        let out = self.0.lock().expect("handover lock").take();
        out.ok_or_else(|| candle_core::Error::Msg("an op's result was handed over twice".into()))?.contiguous()
    }

    /// The result as CPU storage.
    pub fn cpu(&self) -> Result<(CpuStorage, Shape)> {
        let out = self.take()?;
        let (storage, layout) = out.storage_and_layout();
        match &*storage {
            Storage::Cpu(s) => Ok((s.clone(), layout.shape().clone())),
            _ => candle_core::bail!("an op's result is not on the CPU"),
        }
    }

    /// The result as CUDA storage.
    pub fn cuda(&self) -> Result<(CudaStorage, Shape)> {
        let out = self.take()?;
        let (storage, layout) = out.storage_and_layout();
        match &*storage {
            Storage::Cuda(s) => Ok((s.try_clone(layout)?, layout.shape().clone())),
            _ => candle_core::bail!("an op's result is not on the GPU"),
        }
    }
}

impl std::fmt::Debug for Handover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Handover")
    }
}

/// The forward passes of a three-input custom op whose result waits in its `out` field, a
/// [`Handover`]: `impl CustomOp3 for Op { fn name(..); hand_over!(); fn bwd(..) }`; of a
/// two-input one (`CustomOp2`) with `hand_over!(two)`.
macro_rules! hand_over {
    (two) => {
        $crate::model::handover::hand_over!(@inputs (_s1 _l1) (_s2 _l2));
    };
    () => {
        $crate::model::handover::hand_over!(@inputs (_s1 _l1) (_s2 _l2) (_s3 _l3));
    };
    (@inputs $(($storage:ident $layout:ident))+) => {
        fn cpu_fwd(
            &self,
            $($storage: &candle_core::CpuStorage, $layout: &candle_core::Layout),+
        ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
            self.out.cpu()
        }

        fn cuda_fwd(
            &self,
            $($storage: &candle_core::CudaStorage, $layout: &candle_core::Layout),+
        ) -> candle_core::Result<(candle_core::CudaStorage, candle_core::Shape)> {
            self.out.cuda()
        }
    };
}
pub(crate) use hand_over;
