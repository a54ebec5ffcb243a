#!/usr/bin/env bash
# The GPU check of the `cuda` build, for a machine with an NVIDIA GPU and the binary that
# scripts/build-cuda.sh made (target/cuda-dist/dbsweep.xz, or GPU_CHECK_BIN). From the repo root:
#
#   scripts/gpu-check.sh [OUT_DIR]
#
# 1. The built-in tiny model trains on the GPU (the run records `cuda:0`) and its losses
#    match the same run on the CPU to within float tolerance.
# 2. Real-size DreamBooth (`builtin:sd15-shape`: SD 1.5's sizes, 512 px, batch 1 + prior,
#    chunked attention off) in f32, fp16 and bf16, with gradient checkpointing and 8-bit AdamW
#    and with LoRA: seconds per step (median after two warm-up steps) and peak GPU memory, with
#    the ratio to f32; and, when python3 has torch (CUDA) and diffusers, the same step in
#    PyTorch (scripts/torch_step_gpu.py, on the model folder dbsweep wrote) beside each.
# Everything it prints also goes to OUT_DIR/gpu-check.txt. Needs python3 (for PNGs and SQLite).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-$(mktemp -d)}}
mkdir -p "$out"
exec > >(tee "$out/gpu-check.txt") 2>&1
bin=${GPU_CHECK_BIN:-}
if [ -z "$bin" ]; then # the compressed build scripts/build-cuda.sh leaves
    bin=$(mktemp -d)/dbsweep
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
        target/cuda-dist/dbsweep.xz "$bin"
    chmod +x "$bin"
fi

# cuBLAS, cuRAND and NVRTC for CUDA 13: PyTorch's wheels when they are not installed system-wide.
nv=$(python3 -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))' 2>/dev/null || true)
if [ -d "$nv" ]; then export LD_LIBRARY_PATH="$nv:${LD_LIBRARY_PATH:-}"; fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi"
work=$(mktemp -d)
"$bin" --root "$work/tiny-gpu" gpus

run_id() { sed -n 's/^run \([^:]*\): attempt.*/\1/p' | head -1; }

echo "== 1. tiny model, GPU against CPU"
tiny=(train sweeps/base/tiny.yaml --set train.max_train_steps=8 --set validation.every_steps=8)
gpu_id=$(CUDA_VISIBLE_DEVICES=0 "$bin" --root "$work/tiny-gpu" "${tiny[@]}" | tee /dev/stderr | run_id)
cpu_id=$(CUDA_VISIBLE_DEVICES= "$bin" --root "$work/tiny-cpu" "${tiny[@]}" | run_id)
python3 - "$work" "$gpu_id" "$cpu_id" <<'EOF'
import sqlite3, sys
work, gpu, cpu = sys.argv[1:]
def q(root, run, sql):
    return sqlite3.connect(f"{work}/{root}/dbsweep.sqlite").execute(sql, (run,)).fetchall()
device = q("tiny-gpu", gpu, "SELECT device FROM runs WHERE id = ?")[0][0]
sql = "SELECT step, value FROM metrics WHERE run_id = ? AND key = 'train/loss' ORDER BY step"
g, c = q("tiny-gpu", gpu, sql), q("tiny-cpu", cpu, sql)
worst = max(abs(a[1] - b[1]) / max(abs(b[1]), 1e-12) for a, b in zip(g, c))
print(f"device recorded: {device}")
print(f"train/loss GPU vs CPU over {len(g)} steps: largest relative difference {worst:.2e}")
ok = device.startswith("cuda:0") and len(g) == len(c) == 8 and worst < 1e-3
print("tiny GPU check:", "PASS" if ok else "FAIL")
EOF

# GPU_CHECK_MODEL / GPU_CHECK_SIZE: a smaller stand-in, to try the script on a CPU.
model=${GPU_CHECK_MODEL:-builtin:sd15-shape}
size=${GPU_CHECK_SIZE:-512}
echo "== 2. real size ($model, $size px)"
python3 - "$work/instance" "$size" <<'EOF'
import os, random, struct, sys, zlib
folder, size = sys.argv[1], int(sys.argv[2])
os.makedirs(folder, exist_ok=True)
rng = random.Random(0)
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
for i in range(4):
    rows = b"".join(b"\0" + bytes(rng.randrange(256) for _ in range(size * 3)) for _ in range(size))
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    open(f"{folder}/img-{i}.png", "wb").write(png)
EOF
# One configuration a line: its name, model.mixed_precision, and its memory savers (the
# PyTorch step's names: checkpointing, adamw8bit, lora).
configs=(
    "f32|no|"
    "fp16|fp16|"
    "bf16|bf16|"
    "f32 + checkpointing|no|checkpointing"
    "f32 + adamw8bit|no|adamw8bit"
    "fp16 + checkpointing + adamw8bit|fp16|checkpointing adamw8bit"
    "bf16 + checkpointing + adamw8bit|bf16|checkpointing adamw8bit"
    "f32 LoRA rank 4|no|lora"
)
flags() { # the dbsweep settings for savers "$1"
    for saver in $1; do
        case $saver in
            checkpointing) echo "--set train.gradient_checkpointing=true" ;;
            adamw8bit) echo "--set train.optimizer=adamw8bit" ;;
            lora) echo "--set train.method=lora --set lora.rank=4" ;;
        esac
    done
}
poll_memory() { # GPU memory in use, every 0.2 s, into "$1" until killed
    while true; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits || true; sleep 0.2; done >"$1" 2>/dev/null
}
peak() { python3 -c 'import sys; print(max((int(l) for l in open(sys.argv[1]) if l.strip().isdigit()), default=0))' "$1"; }
median_step() { # seconds per step of run "$2" in store "$1": the median gap after two warm-up steps
    python3 -c 'import sqlite3, statistics, sys
walls = [w for (w,) in sqlite3.connect(sys.argv[1]).execute(
    "SELECT wall_time FROM metrics WHERE run_id = ? AND key = ? ORDER BY step", (sys.argv[2], "train/lr"))]
print(statistics.median(b - a for a, b in zip(walls[2:], walls[3:])))' "$1" "$2"
}
torch_ok=$(python3 -c 'import torch, diffusers; print(torch.cuda.is_available())' 2>/dev/null || echo no)
echo "PyTorch beside it: $([ "$torch_ok" = True ] && echo yes || echo "no (torch + diffusers with CUDA not found)")"
printf '%-34s %7s %6s %9s | %14s %9s %7s\n' configuration s/step ratio "peak MiB" "pytorch s/step" "peak MiB" ratio
base=""
for config in "${configs[@]}"; do
    IFS='|' read -r name precision savers <<<"$config"
    mem="$work/$(echo "$name" | tr -c 'a-z0-9\n' '-').mem"
    poll_memory "$mem" &
    poll=$!
    # shellcheck disable=SC2046 # one flag a word
    if ! id=$(CUDA_VISIBLE_DEVICES=0 "$bin" --root "$work/sd15" train sweeps/base/tiny.yaml \
        --set model.pretrained=$model --set model.mixed_precision=$precision $(flags "$savers") \
        --set data.instance_dir="$work/instance" --set data.resolution=$size --set data.num_class_images=2 \
        --set data.class_generation.steps=2 --set data.class_generation.batch_size=2 \
        --set train.max_train_steps=10 --set checkpoint.every_steps=1000 --set checkpoint.weights_only=true \
        --set validation.every_steps=1000 --set validation.steps=2 | run_id); then
        kill $poll
        echo "$name: FAILED (its output is above)"
        continue
    fi
    kill $poll
    step=$(median_step "$work/sd15/dbsweep.sqlite" "$id")
    [ -n "$base" ] || base=$step
    torch_cols="-|-|-"
    if [ "$torch_ok" = True ]; then
        folder=$(ls -d "$work/sd15/models"/*/ | head -1)
        poll_memory "$mem.torch" &
        poll=$!
        # shellcheck disable=SC2086 # savers are words
        torch=$(CUDA_VISIBLE_DEVICES=0 python3 scripts/torch_step_gpu.py "$folder" "$size" "$precision" $savers | tail -1)
        kill $poll
        torch_cols=$(python3 -c 'import json, sys
r = json.loads(sys.argv[1])
print("%.3f|%s|%.2fx" % (r["s_per_step"], sys.argv[2], float(sys.argv[3]) / r["s_per_step"]) if "s_per_step" in r else "skipped|-|-")' \
            "$torch" "$(peak "$mem.torch")" "$step" 2>/dev/null || echo "failed|-|-")
    fi
    IFS='|' read -r tstep tpeak tratio <<<"$torch_cols"
    printf '%-34s %7.3f %5.2fx %9s | %14s %9s %7s\n' "$name" "$step" "$(python3 -c "print($base / $step)")" \
        "$(peak "$mem")" "$tstep" "$tpeak" "$tratio"
done
echo "(peak MiB: GPU memory in use, polled from nvidia-smi every 0.2 s; ratio: f32's time over this"
echo " one's; on the right, dbsweep's time over PyTorch's: above 1 is slower than PyTorch)"
