"""Time the TF converter's .tflite files beside the builder's network of the same keys.

``scripts/keras_reference.py OUT [--int8]`` writes the files (with TensorFlow, in its own
venv); this reads each, builds the Network it maps to with ``bench.tflite_build`` and
times both on a device, interleaved (``bench.timing``):

    .venv/bin/python scripts/int8_side_by_side.py OUT/keras_mobilenet_v1_x0.5_int8.tflite ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.devices import open_runners
from bench.tflite_build import build_network
from bench.tflite_read import read_file
from bench.timing import time_networks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--device", default="host")
    ap.add_argument("--passes", type=int, default=5)
    args = ap.parse_args()
    models: dict[str, bytes] = {}
    for path in args.files:
        models[f"{path.stem} (file)"] = path.read_bytes()
        models[f"{path.stem} (builder)"] = build_network(read_file(path).network)
    with open_runners(args.device, None) as runners:
        timed = time_networks(runners[0], models, args.passes)
    for name, m in timed.items():
        print(f"{name:45s} {m.latency_ms:8.3f} ms  pass spread {100 * m.pass_spread:.1f} %")
    state = next(iter(timed.values())).state
    if state is not None:
        print(f"machine: {state.describe()}")
        if state.warning():
            print(state.warning())


if __name__ == "__main__":
    main()
