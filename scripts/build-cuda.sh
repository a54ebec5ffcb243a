#!/usr/bin/env bash
# Builds the `cuda` dbsweep binary on a machine without the CUDA toolkit or a GPU (this
# project's development machine), for a GPU machine that has the NVIDIA driver but no Rust
# (the lent device machines): the compiler and libraries come from NVIDIA's PyPI wheels in a
# venv under target/, and libcuda (the driver, present only on the GPU machine) is linked
# against a stub with the same soname.
#
#   scripts/build-cuda.sh            # -> target/cuda-dist/dbsweep.xz
#
# CUDA_COMPUTE_CAP picks the GPU generation the kernels are built for (default 90: H100/H200).
# The wheels are CUDA 13.0, which a 580 driver runs; the GPU machine needs cuBLAS, cuRAND and
# NVRTC for CUDA 13 (scripts/gpu-check.sh finds PyTorch's).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/cuda-venv
if [ ! -x "$venv/bin/pip" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q "nvidia-cuda-nvcc==13.0.*" "nvidia-nvvm==13.0.*" "nvidia-cuda-crt==13.0.*" \
    "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-cccl==13.0.*" "nvidia-cublas==13.0.*" \
    "nvidia-curand==10.4.0.*" "nvidia-cuda-nvrtc==13.0.*"
cuda=$(echo "$PWD/$venv"/lib/python3*/site-packages/nvidia/cu13)

# The link step's view of the libraries: unversioned names, and a stub libcuda.so.1 that
# defines every driver function the binary calls (the real one is loaded at run time).
link=$PWD/target/cuda-link
mkdir -p "$link"
for lib in cudart cublas cublasLt nvrtc; do ln -sf "$cuda/lib/lib$lib.so.13" "$link/lib$lib.so"; done
ln -sf "$cuda/lib/libcurand.so.10" "$link/libcurand.so"

build() {
    PATH="$cuda/bin:$PATH" CUDA_PATH="$cuda" CUDA_ROOT="$cuda" CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}" \
        RUSTFLAGS="-L $link -C link-arg=-Wl,-rpath-link,$cuda/lib" \
        cargo build --locked --release --features cuda --target-dir target/cuda --bin dbsweep 2>&1
}
stub() { # the driver functions to define
    printf 'void %s(void) {}\n' "$@" >"$link/cuda-stub.c"
    gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$link/libcuda.so" "$link/cuda-stub.c"
}
# Each failed link names driver functions the stub lacks (lld stops at 20): define them, again.
defined=(dbsweep_no_driver_function)
[ -f "$link/libcuda.so" ] || stub "${defined[@]}"
for attempt in $(seq 1 30); do
    if log=$(build); then break; fi
    # (GNU ld: "undefined reference to `cuX'", lld: "undefined symbol: cuX")
    missing=$(grep -oE "(undefined reference to \`|undefined symbol: )cu[A-Za-z0-9_]+" <<<"$log" | grep -oE "cu[A-Za-z0-9_]+$" | sort -u)
    if [ -z "$missing" ] || [ "$attempt" = 30 ]; then echo "$log" >&2; exit 1; fi
    defined+=($missing)
    stub "${defined[@]}"
done
# Stripped and xz-compressed (72 MB -> 10 MB: the device tool carries at most 64 MiB).
mkdir -p target/cuda-dist
strip -o target/cuda-dist/dbsweep target/cuda/release/dbsweep
xz -f -T0 target/cuda-dist/dbsweep
ls -l target/cuda-dist/dbsweep.xz
