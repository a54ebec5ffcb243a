"""Writes N scalar points with tensorboardX and prints points per second as one JSON line.

The baseline of `cargo bench --bench tracking`: `python benches/tensorboardx_points.py N DIR`.
"""

import json
import sys
import time

from tensorboardX import SummaryWriter


def main(n: int, logdir: str) -> None:
    writer = SummaryWriter(logdir, flush_secs=2)
    start = time.perf_counter()
    for step in range(n // 5):
        for key in ("train/loss", "train/loss_instance", "train/loss_prior", "train/lr", "train/grad_norm"):
            writer.add_scalar(key, 1.0 / (step + 1), step)
    writer.close()
    elapsed = time.perf_counter() - start
    print(json.dumps({"framework": "tensorboardX", "points": n, "points_per_second": n / elapsed}))


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
