#!/usr/bin/env bash
# The GPU check of the `cuda` build, for a machine with an NVIDIA GPU and the binary that
# scripts/build-cuda.sh made (target/cuda-dist/dbsweep.xz, or GPU_CHECK_BIN). From the repo root:
#
#   scripts/gpu-check.sh [OUT_DIR]
#
# 1. The built-in tiny model trains on the GPU (the run records `cuda:0`) and its losses
#    match the same run on the CPU to within float tolerance.
# 2. Real-size DreamBooth (`builtin:sd15-shape`: SD 1.5's sizes, 512 px, batch 1 + prior,
#    chunked attention off) in f32, fp16 and bf16: seconds per step (median after two warm-up
#    steps) and peak GPU memory, with the ratio to f32.
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
printf 'precision  s/step  ratio  peak MiB\n'
base=""
for precision in no fp16 bf16; do
    root="$work/sd15-$precision"
    (while true; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits || true; sleep 0.2; done) >"$root.mem" 2>/dev/null &
    poll=$!
    if ! id=$(CUDA_VISIBLE_DEVICES=0 "$bin" --root "$work/sd15" train sweeps/base/tiny.yaml \
        --set model.pretrained=$model --set model.mixed_precision=$precision \
        --set data.instance_dir="$work/instance" --set data.resolution=$size --set data.num_class_images=2 \
        --set data.class_generation.steps=2 --set data.class_generation.batch_size=2 \
        --set train.max_train_steps=10 --set checkpoint.every_steps=1000 --set checkpoint.weights_only=true \
        --set validation.every_steps=1000 --set validation.steps=2 | run_id); then
        kill $poll
        echo "$precision: FAILED (its output is above)"
        continue
    fi
    kill $poll
    python3 - "$work/sd15/dbsweep.sqlite" "$id" "$root.mem" "$precision" "$base" <<'EOF'
import sqlite3, statistics, sys
db, run, mem, precision, base = sys.argv[1:]
walls = [w for (w,) in sqlite3.connect(db).execute(
    "SELECT wall_time FROM metrics WHERE run_id = ? AND key = 'train/lr' ORDER BY step", (run,))]
step = statistics.median(b - a for a, b in zip(walls[2:], walls[3:]))
peak = max((int(l) for l in open(mem) if l.strip().isdigit()), default=0)
ratio = f"{float(base) / step:.2f}x" if base else "1.00x"
print(f"{precision:<10} {step:6.3f}  {ratio:>5}  {peak}")
open(mem + ".step", "w").write(str(step))
EOF
    [ -n "$base" ] || base=$(cat "$root.mem.step")
done
