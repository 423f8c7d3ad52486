"""bench.tflite_read on real TF-converter files: Keras MobileNets V1, V2, V3-Small, and
the ResNet-style file of the files section's held-out set.

TensorFlow is never a dependency of netadapt-farm. These tests run when
NETADAPT_TF_PYTHON names a Python that has it (e.g. a separate venv), and skip otherwise:

    NETADAPT_TF_PYTHON=/work/tfref-venv/bin/python pytest tests/test_tflite_read_keras.py
"""

from __future__ import annotations

import os
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from analysis.families import RESNET_STYLE
from bench.tflite_read import ReadResult, read_file
from bench.zoo import MOBILENET_V1, MOBILENET_V2, MOBILENET_V3_SMALL
from lut_db.spec import LayerSpec

TF_PYTHON = os.environ.get("NETADAPT_TF_PYTHON", "")
pytestmark = pytest.mark.skipif(not TF_PYTHON or not Path(TF_PYTHON).exists(),
                                reason="NETADAPT_TF_PYTHON (a Python with TensorFlow) not set")
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "keras_reference.py"


def _keys(*specs: str) -> set[str]:
    return {LayerSpec.parse(k).key for k in specs}


SOFTMAX = "softmax:in=1x1x1000"
# Keras' heads differ from the zoo's (a 1x1 conv as classifier, softmax, V3's Rescaling
# preprocessing); everything else must be the same keys.
ZOO = {
    "keras_mobilenet_v1_x0.5": (
        MOBILENET_V1.network(width_mult=0.5),
        _keys("conv2d:in=1x1x512,out=1000", SOFTMAX),
        _keys("fully_connected:in=1x1x512,out=1000")),
    "keras_mobilenet_v2_x1.0": (
        MOBILENET_V2.network(),
        _keys("fully_connected:in=1x1x1280,out=1000,bias=0", SOFTMAX),
        _keys("fully_connected:in=1x1x1280,out=1000")),
    "keras_mobilenet_v3_small": (
        MOBILENET_V3_SMALL.network(),
        _keys("mul_scalar:in=224x224x3", "add_scalar:in=224x224x3",
              "conv2d:in=1x1x576,out=1024", "conv2d:in=1x1x1024,out=1000", SOFTMAX),
        _keys("fully_connected:in=1x1x576,out=1024", "fully_connected:in=1x1x1024,out=1000")),
    # written in Keras after the family, widths rounded alike: only the head's bias differs
    "keras_resnet_style_x0.5": (
        RESNET_STYLE.network(width_mult=0.5, resolution=112),
        _keys("fully_connected:in=1x1x128,out=1000,bias=0"),
        _keys("fully_connected:in=1x1x128,out=1000")),
    "keras_resnet_style_x1.0": (
        RESNET_STYLE.network(resolution=112),
        _keys("fully_connected:in=1x1x256,out=1000,bias=0"),
        _keys("fully_connected:in=1x1x256,out=1000")),
}


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("keras")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    for extra in ([], ["--int8"], ["--float16"]):
        subprocess.run([TF_PYTHON, str(SCRIPT), str(out), "--only", *ZOO, *extra], env=env,
                       check=True, capture_output=True, timeout=900)
    return out


@pytest.mark.parametrize("name", ZOO)
def test_keras_files_map_onto_the_zoo_keys(keras_files: Path, name: str) -> None:
    got = read_file(keras_files / f"{name}.tflite")
    zoo, keras_only, zoo_only = ZOO[name]
    assert got.unknown_ops == []
    have, want = Counter(got.network.keys), Counter(zoo.keys)
    assert set((have - want).elements()) == keras_only
    assert set((want - have).elements()) == zoo_only


def read_at_dtype(keras_files: Path, name: str, dtype: str) -> ReadResult:
    """The ``dtype`` form of a Keras file, checked to read as the float file's keys at
    ``dt=dtype``, every op mapped."""
    got = read_file(keras_files / f"{name}_{dtype}.tflite")
    float_keys = read_file(keras_files / f"{name}.tflite").network.keys
    assert got.unknown_ops == []
    assert Counter(got.network.keys) == Counter(k.replace("dt=float32", f"dt={dtype}")
                                                for k in float_keys)
    return got


@pytest.mark.parametrize("name", ZOO)
def test_int8_keras_files_map_onto_the_float_files_keys_at_int8(keras_files: Path,
                                                                name: str) -> None:
    got = read_at_dtype(keras_files, name, "int8")
    # float in, float out: one QUANTIZE and one DEQUANTIZE, listed as conversions
    conversions = [f.op for f in got.free_ops if f.note == "dtype conversion, not keyed"]
    assert conversions == ["QUANTIZE", "DEQUANTIZE"]
    weights = [q for q in got.quantization if q.per_channel]
    # per-channel: int8 conv weights and their int32 biases
    assert {q.dtype for q in weights} == {"int8", "int32"}
    assert any(not q.per_channel and q.dtype == "int8" for q in got.quantization)


@pytest.mark.parametrize("name", ZOO)
def test_float16_keras_files_map_onto_the_float_files_keys_at_float16(keras_files: Path,
                                                                      name: str) -> None:
    got = read_at_dtype(keras_files, name, "float16")
    # the weights' DEQUANTIZEs (float16 constants) are folded at load: no work, no key
    dequantize = [f for f in got.free_ops if f.op == "DEQUANTIZE"]
    assert dequantize and all(f.note == "on constants and static shapes only"
                              for f in dequantize)
