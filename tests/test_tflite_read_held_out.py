"""bench.tflite_read on TF-converter files of the held-out families (no TF needed).

Tiny ResNet-style and VGG-style networks at 16 px, float and full-integer int8, made by
``scripts/keras_reference.py tests/fixtures/keras --only keras_resnet_tiny keras_vgg_tiny``
(and again with ``--int8``) in a Python with TensorFlow, and checked in: the same Keras
code as the files section's held-out files, only smaller.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from bench.tflite_read import ReadResult, read_file
from lut_db.network import INPUT
from lut_db.spec import LayerSpec

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "keras"
C = "k=3x3,pad=same"
RESNET = [f"conv2d:in=16x16x3,out=16,{C},s=2x2,act=relu",
          f"conv2d:in=8x8x16,out=8,{C},s=2x2,act=relu",  # stage 1: down, block a, b, add
          f"conv2d:in=4x4x8,out=8,{C},s=1x1,act=relu",
          f"conv2d:in=4x4x8,out=8,{C},s=1x1,act=none",
          "add:in=4x4x8,act=relu",
          f"conv2d:in=4x4x8,out=16,{C},s=2x2,act=relu",  # stage 2
          f"conv2d:in=2x2x16,out=16,{C},s=1x1,act=relu",
          f"conv2d:in=2x2x16,out=16,{C},s=1x1,act=none",
          "add:in=2x2x16,act=relu",
          "global_avg_pool:in=2x2x16",
          "fully_connected:in=1x1x16,out=10,bias=0"]
POOL = "k=2x2,s=2x2,pad=same"
VGG = [f"conv2d:in=16x16x3,out=8,{C},s=1x1,act=relu", f"max_pool:in=16x16x8,{POOL}",
       f"conv2d:in=8x8x8,out=16,{C},s=1x1,act=relu", f"max_pool:in=8x8x16,{POOL}",
       f"conv2d:in=4x4x16,out=16,{C},s=1x1,act=relu",
       "global_avg_pool:in=4x4x16", "fully_connected:in=1x1x16,out=10,bias=0"]
FILES = {"keras_resnet_tiny": RESNET, "keras_vgg_tiny": VGG}


def _read(name: str, dtype: str) -> ReadResult:
    return read_file(FIXTURES / f"{name}{'_int8' if dtype == 'int8' else ''}.tflite")


@pytest.mark.parametrize("dtype", ["float32", "int8"])
@pytest.mark.parametrize("name", FILES)
def test_every_op_maps_to_the_families_keys_in_order(name: str, dtype: str) -> None:
    got = _read(name, dtype)
    assert got.unknown_ops == []
    want = [LayerSpec.parse(f"{k},dt={dtype}").key for k in FILES[name]]
    assert [n.spec.key for n in got.network.nodes] == want
    # int8: float in and out, so one QUANTIZE and one DEQUANTIZE, and nothing else free
    conversions = ["QUANTIZE", "DEQUANTIZE"] if dtype == "int8" else []
    assert sorted(f.op for f in got.free_ops) == sorted(conversions)


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_residual_adds_join_the_stride_conv_and_the_block(dtype: str) -> None:
    nodes = _read("keras_resnet_tiny", dtype).network.nodes
    assert nodes[0].inputs == (INPUT,)
    for add in (4, 8):  # the add after each stage: its down conv and the block's second conv
        assert nodes[add].spec.op == "add"
        assert set(nodes[add].inputs) == {nodes[add - 3].name, nodes[add - 1].name}
        assert nodes[add + 1].inputs == (nodes[add].name,)


def test_max_pools_read_at_int8_keep_the_chain() -> None:
    nodes = _read("keras_vgg_tiny", "int8").network.nodes
    pools = [i for i, n in enumerate(nodes) if n.spec.op == "max_pool"]
    assert pools == [1, 3]
    assert Counter(nodes[i].spec.dtype for i in pools) == Counter({"int8": 2})
    for i in range(1, len(nodes)):
        assert nodes[i].inputs == (nodes[i - 1].name,)
