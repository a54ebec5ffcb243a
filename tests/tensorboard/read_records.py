"""Reads one event file with the record reader TensorBoard itself uses, and reports how it ends.

Usage: python read_records.py EVENT_FILE

Output: {"records": N, "error": null | {"type": "DataLossError", "message": "..."}}
N counts the records read before the reader stopped.
"""

import json
import sys

from tensorboard.backend.event_processing import event_file_loader
from tensorboard.compat import tf


def main(path):
    records = 0
    error = None
    iterator = event_file_loader._make_tf_record_iterator(path)
    try:
        for _ in iterator:
            records += 1
    except tf.errors.DataLossError as e:
        error = {"type": type(e).__name__, "message": e.message}
    json.dump({"records": records, "error": error}, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
