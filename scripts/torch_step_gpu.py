"""The DreamBooth step of `scripts/gpu-check.sh` in PyTorch + diffusers, for the ratio beside
dbsweep's: the model folder dbsweep wrote (e.g. `builtin:sd15-shape`, loaded with diffusers'
and transformers' own `from_pretrained`), batch 1 instance + 1 class image at SIZE px, cached
latents (random, as dbsweep's are after its cache), text encoder frozen, UNet trained with
AdamW, in f32 or under autocast (fp16 with a GradScaler, bf16), with gradient checkpointing
and bitsandbytes' AdamW8bit when asked; or LoRA rank 4 on the attention projections (PEFT).

    python3 scripts/torch_step_gpu.py MODEL_FOLDER SIZE PRECISION SAVERS...

PRECISION: no | fp16 | bf16; SAVERS: any of checkpointing, adamw8bit, lora. Prints one JSON
line: seconds per step (median of 8 after 2 warm-up steps) and peak GPU memory (MiB, as
torch.cuda.max_memory_allocated counts it), or a reason it could not run.
"""

import json
import os
import statistics
import sys
import time


def main() -> None:
    folder, size, precision, savers = sys.argv[1], int(sys.argv[2]), sys.argv[3], set(sys.argv[4:])
    try:
        import torch
        import torch.nn.functional as F
        from diffusers import UNet2DConditionModel
        from transformers import CLIPTextModel
    except ImportError as e:
        print(json.dumps({"skipped": f"no PyTorch/diffusers here ({e})"}))
        return
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet").to(device)
    text = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder").to(device).eval()
    text.requires_grad_(False)
    if "lora" in savers:
        from peft import LoraConfig

        unet.requires_grad_(False)
        unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
    if "checkpointing" in savers:
        unet.enable_gradient_checkpointing()
    unet.train()
    params = [p for p in unet.parameters() if p.requires_grad]
    if "adamw8bit" in savers:
        try:
            import bitsandbytes as bnb
        except ImportError:
            print(json.dumps({"skipped": "adamw8bit asked for, bitsandbytes is not installed"}))
            return
        opt = bnb.optim.AdamW8bit(params, lr=5e-6, weight_decay=1e-2)
    else:
        opt = torch.optim.AdamW(params, lr=5e-6, weight_decay=1e-2)
    dtype = {"no": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    scaler = torch.amp.GradScaler(device, enabled=precision == "fp16")
    with open(os.path.join(folder, "vae", "config.json")) as f:
        latent = size // 2 ** (len(json.load(f)["block_out_channels"]) - 1)
    latents = torch.randn((2, unet.config.in_channels, latent, latent), device=device)
    ids = torch.randint(0, text.config.vocab_size, (2, 77), device=device)
    with torch.no_grad():
        hidden = text(ids)[0]

    def step() -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        noise = torch.randn_like(latents)
        t = torch.randint(0, 1000, (2,), device=device)
        noisy = latents + 0.1 * t.view(-1, 1, 1, 1) / 1000 * noise
        with torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
            pred = unet(noisy, t, hidden).sample
        loss = F.mse_loss(pred[:1].float(), noise[:1]) + F.mse_loss(pred[1:].float(), noise[1:])
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    times = [step() for _ in range(10)][2:]
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else 0.0
    print(json.dumps({"s_per_step": statistics.median(times), "peak_mib": round(peak), "device": device}))


if __name__ == "__main__":
    main()
