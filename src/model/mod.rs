//! Stable Diffusion on candle: the trainable UNet and CLIP text encoder, the frozen VAE, the
//! tokenizer, noise schedules and the sampler, loaded from diffusers-layout folders; and the
//! frozen CLIP / DINO / DINOv2 embedding models of the evaluation metrics ([`vision`]); and
//! low-rank adapters on the trained models' linear layers ([`lora`]).
//!
//! Every module that is trained is built from ops whose backward pass is correct (see
//! [`nn`]); parity tests against PyTorch + diffusers guard outputs and gradients.

pub mod activation;
pub mod attention;
pub mod attention_cpu;
pub mod builtin;
pub mod channel;
pub mod check;
pub mod clip;
pub mod conv;
pub mod device;
pub mod error;
pub mod group_norm;
pub mod handover;
pub mod heads;
pub mod json;
pub mod kernels;
pub mod lora;
pub mod nn;
pub mod noise_schedule;
pub mod pipeline;
pub mod png;
pub mod recompute;
pub mod tokenizer;
pub mod unet;
pub mod vae;
pub mod vision;
pub mod weights;

pub use error::{ModelError, Result};
