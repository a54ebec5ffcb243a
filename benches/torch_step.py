"""Time one DreamBooth training step in PyTorch, as a baseline for dbsweep's own step.

The model is the tiny ``sd1`` fixture architecture (UNet 32/64 channels, VAE 32/64 channels,
2-layer CLIP text encoder), built with the config code of ``tests/fixtures/make_fixtures.py``
and random weights.  One step is:

1. VAE encode of a ``[B, 3, R, R]`` image batch (frozen VAE, no grad), sample the latent
   distribution and multiply by the VAE scaling factor;
2. text encoder forward (trained) on the B prompts;
3. DDPM noise at random timesteps, UNet forward, epsilon target, DreamBooth loss
   ``mse(instance half) + 0.7 * mse(class half)``, backward through UNet and text encoder;
4. AdamW step over the UNet and text encoder parameters.

With ``--method lora`` the UNet gets PEFT LoRA adapters (rank 4, alpha 4, gaussian init, on
``to_q``, ``to_k``, ``to_v``, ``to_out.0``: diffusers' ``train_dreambooth_lora.py``), the text
encoder is frozen (its forward runs without grad), and AdamW updates the adapters only.

``--batch B`` is the TOTAL number of rows per step: the first B/2 are instance examples
("a photo of sks dog"), the last B/2 class / prior-preservation examples ("a photo of a dog"),
so B must be even.  (The fixture VAE downsamples by 2, so R px images give R/2 x R/2 latents.)

Run from the repository root with the fixtures venv (see make_fixtures.py)::

    target/fixtures-venv/bin/python benches/torch_step.py --resolution 32 --batch 2 --threads 1 --steps 10

It warms up with one untimed step, times ``--steps`` steps and prints one JSON line:
``{"framework": "pytorch", "resolution": R, "batch": B, "threads": N, "method": M,
"ms_per_step": ..., "peak_rss_mib": ...}`` (peak resident memory of the process).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.dont_write_bytecode = True  # keep tests/fixtures free of __pycache__
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "fixtures"))
import make_fixtures as mf  # noqa: E402

CFG = "sd1"
INSTANCE_PROMPT = "a photo of sks dog"
CLASS_PROMPT = "a photo of a dog"
PRIOR_LOSS_WEIGHT = 0.7
LEARNING_RATE = 5e-6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--resolution", type=int, required=True, help="image size R (pixels)")
    ap.add_argument("--batch", type=int, required=True, help="total rows B (B/2 instance + B/2 class), even")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    ap.add_argument("--steps", type=int, default=10, help="timed steps (after 1 warm-up step)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--method", choices=("full", "lora"), default="full")
    args = ap.parse_args()
    if args.batch < 2 or args.batch % 2:
        ap.error("--batch must be even and >= 2 (instance half + class half)")
    if args.resolution % 4:
        ap.error("--resolution must be a multiple of 4 (VAE /2, then UNet /2)")

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(args.threads)
    except RuntimeError:
        pass
    torch.manual_seed(args.seed)

    unet, vae, text_encoder = mf.build_models(CFG, args.seed + 10)
    tok, _, _ = mf.make_tokenizer()
    sched = mf.ddpm_scheduler(CFG)
    assert sched.config.prediction_type == "epsilon"

    vae.requires_grad_(False)
    vae.eval()
    unet.train()
    if args.method == "lora":
        from peft import LoraConfig

        unet.requires_grad_(False)
        text_encoder.requires_grad_(False)
        text_encoder.eval()
        unet.add_adapter(
            LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian", target_modules=["to_k", "to_q", "to_v", "to_out.0"])
        )
        params = [p for p in unet.parameters() if p.requires_grad]
    else:
        text_encoder.train()
        params = [p for m in (unet, text_encoder) for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=LEARNING_RATE, weight_decay=1e-2)

    b, r, half = args.batch, args.resolution, args.batch // 2
    gen = torch.Generator().manual_seed(args.seed)
    images = torch.rand((b, 3, r, r), generator=gen) * 2.0 - 1.0
    input_ids = mf.tokenize(tok, [INSTANCE_PROMPT] * half + [CLASS_PROMPT] * half)
    scaling = vae.config.scaling_factor

    def step() -> float:
        with torch.no_grad():
            latents = vae.encode(images).latent_dist.sample(generator=gen) * scaling
        noise = torch.randn(latents.shape, generator=gen)
        timesteps = torch.randint(0, sched.config.num_train_timesteps, (b,), generator=gen)
        noisy = sched.add_noise(latents, noise, timesteps)
        with torch.set_grad_enabled(args.method == "full"):
            hidden = text_encoder(input_ids)[0]
        pred = unet(noisy, timesteps, hidden).sample
        loss = F.mse_loss(pred[:half], noise[:half]) + PRIOR_LOSS_WEIGHT * F.mse_loss(pred[half:], noise[half:])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    elapsed = time.perf_counter() - t0
    assert loss == loss, "loss is NaN"
    print(
        json.dumps(
            {
                "framework": "pytorch",
                "resolution": r,
                "batch": b,
                "threads": args.threads,
                "method": args.method,
                "ms_per_step": round(1000.0 * elapsed / args.steps, 3),
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
            }
        )
    )


if __name__ == "__main__":
    main()
