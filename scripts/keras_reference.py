"""Convert Keras MobileNets with the TensorFlow converter: reference .tflite files.

Run with a Python that has TensorFlow (never a dependency of netadapt-farm; e.g. a separate
venv): ``/path/to/tf-venv/bin/python scripts/keras_reference.py OUT_DIR [--int8 |
--float16]``. Weights are random (``weights=None``: nothing is downloaded); latency does
not depend on them. Writes one ``<name>.tflite`` per model (``<name>_int8.tflite`` with
``--int8``: full-integer, int8 inside, float input and output, random representative data;
``<name>_float16.tflite`` with ``--float16``: the converter's float16 quantization).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import tensorflow as tf

MODELS = {
    "keras_mobilenet_v1_x0.5": lambda: tf.keras.applications.MobileNet(alpha=0.5, weights=None),
    "keras_mobilenet_v1_x0.75": lambda: tf.keras.applications.MobileNet(alpha=0.75,
                                                                        weights=None),
    "keras_mobilenet_v1_x1.0": lambda: tf.keras.applications.MobileNet(alpha=1.0, weights=None),
    "keras_mobilenet_v2_x0.75": lambda: tf.keras.applications.MobileNetV2(alpha=0.75,
                                                                          weights=None),
    "keras_mobilenet_v2_x1.0": lambda: tf.keras.applications.MobileNetV2(alpha=1.0,
                                                                         weights=None),
    "keras_mobilenet_v3_small": lambda: tf.keras.applications.MobileNetV3Small(
        input_shape=(224, 224, 3), weights=None),
    "keras_mobilenet_v3_large": lambda: tf.keras.applications.MobileNetV3Large(
        input_shape=(224, 224, 3), weights=None),
}


def convert(model: tf.keras.Model, int8: bool, float16: bool = False) -> bytes:
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if float16:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    if int8:
        rng = np.random.default_rng(0)

        def data():
            for _ in range(4):
                yield [rng.uniform(0, 255, (1, 224, 224, 3)).astype(np.float32)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = data
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter.convert()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out", type=Path)
    kind = ap.add_mutually_exclusive_group()
    kind.add_argument("--int8", action="store_true")
    kind.add_argument("--float16", action="store_true")
    ap.add_argument("--only", nargs="*", default=list(MODELS))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.only:
        suffix = "_int8" if args.int8 else "_float16" if args.float16 else ""
        path = args.out / f"{name}{suffix}.tflite"
        path.write_bytes(convert(MODELS[name](), args.int8, args.float16))
        print(path)


if __name__ == "__main__":
    main()
