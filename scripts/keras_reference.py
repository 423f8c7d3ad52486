"""Convert Keras networks with the TensorFlow converter: reference .tflite files.

The Keras MobileNets, and two held-out families written here at 112 px (``HELD_OUT``):
the ResNet-style and VGG-style networks of ``analysis/families.py`` at x0.5, x0.75 and
x1.0 (the VGG one downsampling by 2x2 max pools after stride-1 convs, as VGG does, where
the family strides its convs).

Run with a Python that has TensorFlow (never a dependency of netadapt-farm; e.g. a separate
venv): ``/path/to/tf-venv/bin/python scripts/keras_reference.py OUT_DIR [--int8 |
--float16]``. Weights are random (``weights=None``: nothing is downloaded); latency does
not depend on them. Writes one ``<name>.tflite`` per model (``<name>_int8.tflite`` with
``--int8``: full-integer, int8 inside, float input and output, random representative data;
``<name>_float16.tflite`` with ``--float16``: the converter's float16 quantization).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
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


RES_STAGES = (32, 64, 128, 256)  # analysis.families.RES_STAGES; stem 16
VGG_PLAN = ((16, 2), (32, 2), (32, 1), (64, 2), (64, 1), (128, 2), (128, 1), (256, 2))
HELD_OUT_PX = 112
HELD_OUT_MULTS = ("0.5", "0.75", "1.0")


def _divisible(v: float, divisor: int = 8) -> int:
    """bench.zoo.make_divisible (the families' width multiplier rounds so)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def _conv(x, width: int, stride: int = 1, act: str | None = "relu"):
    return tf.keras.layers.Conv2D(width, 3, stride, padding="same", activation=act)(x)


def _head(x, classes: int):
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    return tf.keras.layers.Dense(classes)(x)


def resnet_style(px: int = HELD_OUT_PX, classes: int = 1000, stem: int = 16,
                 stages: tuple[int, ...] = RES_STAGES) -> tf.keras.Model:
    """Stem, then per stage a stride-2 conv and one basic block (two 3x3 convs, ADD)."""
    inp = tf.keras.Input((px, px, 3))
    x = _conv(inp, stem, 2)
    for width in stages:
        down = _conv(x, width, 2)
        y = _conv(_conv(down, width), width, act=None)
        x = tf.keras.layers.ReLU()(tf.keras.layers.Add()([down, y]))
    return tf.keras.Model(inp, _head(x, classes), name="resnet_style")


def vgg_style(px: int = HELD_OUT_PX, classes: int = 1000,
              plan: tuple[tuple[int, int], ...] = VGG_PLAN) -> tf.keras.Model:
    """3x3 convs of the plan's widths, a 2x2 max pool wherever the plan strides by 2."""
    inp = tf.keras.Input((px, px, 3))
    x = inp
    for width, stride in plan:
        x = _conv(x, width)
        if stride == 2:
            x = tf.keras.layers.MaxPooling2D(2, padding="same")(x)
    return tf.keras.Model(inp, _head(x, classes), name="vgg_style")


def _held_out(mult: float) -> dict[str, Callable[[], tf.keras.Model]]:
    def resnet():
        return resnet_style(stem=_divisible(16 * mult),
                            stages=tuple(_divisible(c * mult) for c in RES_STAGES))

    def vgg():
        return vgg_style(plan=tuple((_divisible(c * mult), s) for c, s in VGG_PLAN))

    return {f"keras_resnet_style_x{mult}": resnet, f"keras_vgg_style_x{mult}": vgg}


HELD_OUT = {name: make for m in HELD_OUT_MULTS for name, make in _held_out(float(m)).items()}
# A few KB each, checked in under tests/fixtures/keras (the reader's tests need no TF):
#   scripts/keras_reference.py tests/fixtures/keras --only keras_resnet_tiny keras_vgg_tiny
#   (and again with --int8)
TINY = {"keras_resnet_tiny": lambda: resnet_style(16, 10, 16, (8, 16)),
        "keras_vgg_tiny": lambda: vgg_style(16, 10, ((8, 2), (16, 2), (16, 1)))}
MODELS.update(HELD_OUT)
MODELS.update(TINY)


def convert(model: tf.keras.Model, int8: bool, float16: bool = False) -> bytes:
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if float16:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    if int8:
        rng = np.random.default_rng(0)

        def data():
            for _ in range(4):
                yield [rng.uniform(0, 255, (1, *model.input_shape[1:])).astype(np.float32)]

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
    ap.add_argument("--only", nargs="*", default=[m for m in MODELS if m not in TINY])
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.only:
        suffix = "_int8" if args.int8 else "_float16" if args.float16 else ""
        path = args.out / f"{name}{suffix}.tflite"
        path.write_bytes(convert(MODELS[name](), args.int8, args.float16))
        print(path)


if __name__ == "__main__":
    main()
