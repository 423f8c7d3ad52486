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
from bench.timing import summary, time_networks


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
    for name, t in timed.items():
        s = summary(t)
        print(f"{name:45s} {s['latency_us'] / 1000:8.3f} ms  pass spread "
              f"{100 * s['pass_spread']:.1f} %")


if __name__ == "__main__":
    main()
