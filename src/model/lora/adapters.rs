//! The adapters of one model (the UNet or the text encoder): `A` and `B` of every adapted layer
//! as variables named as PEFT names them inside the model (`LAYER.lora_A.weight`,
//! `LAYER.lora_B.weight`), with each layer's rank and alpha.

use std::collections::{BTreeMap, HashMap};

use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;

use super::super::error::{ModelError, Result};
use super::super::nn::VisitLinears;
use super::targets::Layer;
use super::{Adapter, Attach};
use crate::config::LoraInit;
use crate::rng::Rng;

/// One adapted layer.
#[derive(Clone, Debug, PartialEq)]
pub struct AdaptedLayer {
    /// The layer's full name.
    pub name: String,
    /// The rank (rows of `A`).
    pub rank: usize,
    /// Alpha: the branch is scaled by `alpha / rank`.
    pub alpha: f64,
}

/// The adapters of one model.
pub struct AdapterSet {
    /// `LAYER.lora_A.weight` [rank, in] and `LAYER.lora_B.weight` [out, rank] of every layer.
    pub vars: VarMap,
    /// The adapted layers, in the model's order.
    pub layers: Vec<AdaptedLayer>,
}

/// The name of the down-projection `A` of layer `layer`.
pub fn down_name(layer: &str) -> String {
    format!("{layer}.lora_A.weight")
}

/// The name of the up-projection `B` of layer `layer`.
pub fn up_name(layer: &str) -> String {
    format!("{layer}.lora_B.weight")
}

impl AdapterSet {
    /// Fresh adapters of `rank` and `alpha` on `layers`, initialised as PEFT does: `A` from
    /// `init` (each layer from its own stream of `seed`, so adding a layer changes no other),
    /// `B` zero, so the adapted model starts as the base model.
    pub fn new(layers: &[Layer], rank: usize, alpha: f64, init: LoraInit, seed: u64, device: &Device) -> Result<Self> {
        let vars = VarMap::new();
        {
            let mut data = vars.data().lock().expect("variable map lock");
            for layer in layers {
                let key = format!("{seed}|lora-init|{}", layer.name);
                let mut rng = Rng::new(xxhash_rust::xxh3::xxh3_64(key.as_bytes()));
                let n = rank * layer.inputs;
                let down: Vec<f32> = match init {
                    // PEFT "gaussian": normal with std 1 / rank.
                    LoraInit::Gaussian => (0..n).map(|_| (rng.normal() / rank as f64) as f32).collect(),
                    // PEFT's default: kaiming_uniform_(a = sqrt(5)) = uniform(±1 / sqrt(in)).
                    LoraInit::Kaiming => {
                        let bound = 1.0 / (layer.inputs as f64).sqrt();
                        (0..n).map(|_| ((2.0 * rng.next_f64() - 1.0) * bound) as f32).collect()
                    }
                };
                let down = Tensor::from_vec(down, (rank, layer.inputs), device)?;
                let up = Tensor::zeros((layer.outputs, rank), candle_core::DType::F32, device)?;
                data.insert(down_name(&layer.name), Var::from_tensor(&down)?);
                data.insert(up_name(&layer.name), Var::from_tensor(&up)?);
            }
        }
        let layers = layers.iter().map(|l| AdaptedLayer { name: l.name.clone(), rank, alpha }).collect();
        Ok(Self { vars, layers })
    }

    /// Adapters from `tensors` named `LAYER.lora_A.weight` and `LAYER.lora_B.weight` (as read
    /// from `what`, a file, for messages); each layer's rank comes from its shapes and its alpha
    /// from `alpha` (given the layer and its rank).
    pub fn from_tensors(
        tensors: BTreeMap<String, Tensor>,
        alpha: &dyn Fn(&str, usize) -> f64,
        what: &str,
        device: &Device,
    ) -> Result<Self> {
        let bad = |message: String| ModelError::Adapter { what: what.to_string(), message };
        let vars = VarMap::new();
        let mut layers = Vec::new();
        {
            let mut data = vars.data().lock().expect("variable map lock");
            for (name, down) in &tensors {
                let Some(layer) = name.strip_suffix(".lora_A.weight") else { continue };
                let up =
                    tensors.get(&up_name(layer)).ok_or_else(|| bad(format!("`{name}` has no `{}`", up_name(layer))))?;
                let (rank, _) = down.dims2().map_err(|_| bad(format!("`{name}`: expected a matrix [rank, in]")))?;
                let (_, up_rank) =
                    up.dims2().map_err(|_| bad(format!("`{}`: expected a matrix [out, rank]", up_name(layer))))?;
                if up_rank != rank {
                    return Err(bad(format!("`{layer}`: lora_A has rank {rank} but lora_B {up_rank}")));
                }
                let f32_on = |t: &Tensor| t.to_dtype(candle_core::DType::F32)?.to_device(device);
                data.insert(name.clone(), Var::from_tensor(&f32_on(down)?)?);
                data.insert(up_name(layer), Var::from_tensor(&f32_on(up)?)?);
                layers.push(AdaptedLayer { name: layer.to_string(), rank, alpha: alpha(layer, rank) });
            }
            if let Some(orphan) = tensors
                .keys()
                .find(|k| k.strip_suffix(".lora_B.weight").is_some_and(|l| !tensors.contains_key(&down_name(l))))
            {
                return Err(bad(format!("`{orphan}` has no lora_A")));
            }
        }
        if layers.is_empty() {
            return Err(bad("no LoRA tensors (`LAYER.lora_A.weight` / `LAYER.lora_B.weight`)".into()));
        }
        Ok(Self { vars, layers })
    }

    /// The tensors of every layer by name (for writing).
    pub fn tensors(&self) -> BTreeMap<String, Tensor> {
        let data = self.vars.data().lock().expect("variable map lock");
        data.iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect()
    }

    /// Trained numbers: the elements of every `A` and `B`.
    pub fn parameter_count(&self) -> usize {
        self.vars.data().lock().expect("variable map lock").values().map(|v| v.elem_count()).sum()
    }

    /// Adds each layer's `strength · alpha / rank · B A` to its weight `LAYER.weight` in `vars`
    /// (the model's own variables): the adapted model as plain weights, which any tool loads.
    pub fn merge_into(&self, vars: &VarMap, strength: f64) -> Result<()> {
        let adapters = self.vars.data().lock().expect("variable map lock");
        let weights = vars.data().lock().expect("variable map lock");
        for layer in &self.layers {
            let name = format!("{}.weight", layer.name);
            let weight = weights.get(&name).ok_or_else(|| ModelError::Adapter {
                what: layer.name.clone(),
                message: "the model has no such linear layer: the adapters were made for another model".into(),
            })?;
            let (down, up) = (&adapters[&down_name(&layer.name)], &adapters[&up_name(&layer.name)]);
            let delta = (up.as_tensor().matmul(down.as_tensor())? * (layer.alpha / layer.rank as f64 * strength))?;
            if delta.dims() != weight.dims() {
                return Err(ModelError::Adapter {
                    what: layer.name.clone(),
                    message: format!("adapter product {:?} does not fit the weight {:?}", delta.dims(), weight.dims()),
                });
            }
            weight.set(&(weight.as_tensor() + delta)?)?;
        }
        Ok(())
    }

    /// Attaches each layer's branch, built as `how` says, to the layer of `module` with its
    /// name (`model` names the module in errors). Every adapted layer must exist with the
    /// features its matrices expect.
    pub fn attach(&self, module: &mut dyn VisitLinears, how: Attach, model: &str) -> Result<()> {
        let data = self.vars.data().lock().expect("variable map lock");
        let by_name: HashMap<&str, &AdaptedLayer> = self.layers.iter().map(|l| (l.name.as_str(), l)).collect();
        let mut attached = 0;
        let mut result: Result<()> = Ok(());
        module.visit_linears(&mut |linear| {
            let Some(layer) = by_name.get(linear.name()) else { return };
            let tensor = |name: &str| -> Result<Tensor> {
                let var = &data[name];
                let t = if how.trainable { var.as_tensor().clone() } else { var.as_tensor().detach() };
                Ok(if t.dtype() == how.dtype { t } else { t.to_dtype(how.dtype)? })
            };
            let built = (|| -> Result<Adapter> {
                let (down, up) = (tensor(&down_name(&layer.name))?, tensor(&up_name(&layer.name))?);
                let (inputs, outputs) = linear.features();
                if down.dims() != [layer.rank, inputs] || up.dims() != [outputs, layer.rank] {
                    return Err(ModelError::Adapter {
                        what: layer.name.clone(),
                        message: format!(
                            "adapter shapes {:?} and {:?} do not fit the layer of {model} ({inputs} in, {outputs} out): \
                             the adapters were made for another model",
                            down.dims(),
                            up.dims()
                        ),
                    });
                }
                let scale = layer.alpha / layer.rank as f64 * how.strength;
                Ok(Adapter::new(down, up, scale, how.dropout))
            })();
            match built {
                Ok(adapter) => {
                    linear.set_adapter(Some(adapter));
                    attached += 1;
                }
                Err(e) => {
                    if result.is_ok() {
                        result = Err(e);
                    }
                }
            }
        });
        result?;
        if attached != self.layers.len() {
            let missing: Vec<&str> = self.layers.iter().map(|l| l.name.as_str()).collect();
            let mut present = Vec::new();
            module.visit_linears(&mut |l| present.push(l.name().to_string()));
            let absent: Vec<&&str> = missing.iter().filter(|m| !present.iter().any(|p| p == *m)).take(3).collect();
            return Err(ModelError::Adapter {
                what: model.to_string(),
                message: format!(
                    "{} adapted layers are not linear layers of {model} (e.g. {}): the adapters were made for another model",
                    self.layers.len() - attached,
                    absent.iter().map(|a| format!("`{a}`")).collect::<Vec<_>>().join(", ")
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers() -> Vec<Layer> {
        vec![
            Layer { name: "a.to_q".into(), inputs: 6, outputs: 5 },
            Layer { name: "a.to_k".into(), inputs: 6, outputs: 5 },
        ]
    }

    #[test]
    fn fresh_adapters_start_as_the_base_model_and_draw_each_layer_alone() {
        let dev = Device::Cpu;
        let set = AdapterSet::new(&layers(), 3, 3.0, LoraInit::Gaussian, 1, &dev).unwrap();
        let t = set.tensors();
        assert_eq!(t["a.to_q.lora_A.weight"].dims(), [3, 6]);
        assert_eq!(t["a.to_q.lora_B.weight"].dims(), [5, 3]);
        assert_eq!(t["a.to_q.lora_B.weight"].abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
        assert_eq!(set.parameter_count(), 2 * (18 + 15));
        let alone = AdapterSet::new(&layers()[1..], 3, 3.0, LoraInit::Gaussian, 1, &dev).unwrap().tensors();
        let same = (&alone["a.to_k.lora_A.weight"] - &t["a.to_k.lora_A.weight"]).unwrap().abs().unwrap();
        assert_eq!(same.sum_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
        // Gaussian std 1 / rank; kaiming within ±1 / sqrt(in).
        let a = t["a.to_q.lora_A.weight"].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(a.iter().all(|v| v.abs() < 2.0) && a.iter().any(|v| *v != 0.0));
        let k = AdapterSet::new(&layers(), 3, 3.0, LoraInit::Kaiming, 1, &dev).unwrap().tensors();
        let k = k["a.to_q.lora_A.weight"].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(k.iter().all(|v| v.abs() <= 1.0 / 6f32.sqrt()));
    }

    #[test]
    fn tensors_without_their_pair_or_with_mismatched_ranks_are_refused() {
        let dev = Device::Cpu;
        let z = |r, c| Tensor::zeros((r, c), candle_core::DType::F32, &dev).unwrap();
        let alpha = |_: &str, rank: usize| rank as f64;
        let lone: BTreeMap<String, Tensor> = [("x.lora_A.weight".to_string(), z(2, 4))].into();
        let err = AdapterSet::from_tensors(lone, &alpha, "f.safetensors", &dev).err().unwrap().to_string();
        assert!(err.contains("f.safetensors") && err.contains("x.lora_B.weight"), "{err}");
        let ranks: BTreeMap<String, Tensor> =
            [("x.lora_A.weight".to_string(), z(2, 4)), ("x.lora_B.weight".to_string(), z(4, 3))].into();
        assert!(AdapterSet::from_tensors(ranks, &alpha, "f", &dev).is_err());
        let good: BTreeMap<String, Tensor> =
            [("x.lora_A.weight".to_string(), z(2, 4)), ("x.lora_B.weight".to_string(), z(4, 2))].into();
        let set = AdapterSet::from_tensors(good, &|_, r| r as f64 * 2.0, "f", &dev).unwrap();
        assert_eq!(set.layers, [AdaptedLayer { name: "x".into(), rank: 2, alpha: 4.0 }]);
    }
}
