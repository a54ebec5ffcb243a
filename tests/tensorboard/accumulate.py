"""Loads a run folder with TensorBoard's EventAccumulator and prints what it holds as JSON.

Usage: python accumulate.py RUN_DIR

Output: {"scalars": {tag: [[step, value], ...]},
         "images": {tag: [[step, width, height, encoded_bytes], ...]},
         "texts": {tag: [[step, text], ...]},
         "log": ["LEVEL message", ...]}   # everything TensorBoard logged while loading

Every reservoir is unbounded (size guidance 0), so nothing is sampled away.
"""

import json
import logging
import sys

from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tb_logging, tensor_util


class Collect(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(f"{record.levelname} {record.getMessage()}")


def main(run_dir):
    log = Collect()
    logger = tb_logging.get_logger()
    logger.setLevel(logging.DEBUG)
    logger.addHandler(log)

    everything = {
        event_accumulator.SCALARS: 0,
        event_accumulator.IMAGES: 0,
        event_accumulator.TENSORS: 0,
    }
    acc = event_accumulator.EventAccumulator(run_dir, size_guidance=everything)
    acc.Reload()
    tags = acc.Tags()
    try:
        text_tags = acc.PluginTagToContent("text")
    except KeyError:  # no text at all
        text_tags = {}
    out = {
        "scalars": {t: [[e.step, e.value] for e in acc.Scalars(t)] for t in tags["scalars"]},
        "images": {
            t: [[e.step, e.width, e.height, len(e.encoded_image_string)] for e in acc.Images(t)]
            for t in tags["images"]
        },
        "texts": {
            t: [[e.step, tensor_util.make_ndarray(e.tensor_proto).item().decode()] for e in acc.Tensors(t)]
            for t in text_tags
        },
        "log": log.lines,
    }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
