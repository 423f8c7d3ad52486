"""The torch model is the only description: slots from Torch-Pruning, layers from the
trace, for the built-in MobileNets and for a network the package does not know (a
ResNet-18-style network of basic blocks, ``tests.user_models``), adapted end to end."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from adapter.arch import Architecture, full_model, load_exported
from adapter.models import build
from adapter.trace import trace
from bench import zoo
from netadapt_cli.main import app
from tests.fakes import file_vs_torch

RESNET = "tests.user_models:resnet18_tiny"


@pytest.fixture(scope="module")
def resnet() -> Architecture:
    return Architecture.load(RESNET, 16, 10)


def test_resnet_slots_are_torch_pruning_groups(resnet: Architecture) -> None:
    p = resnet.producers
    # the stem and stage 1 are one residual stream; each later stage's stream ties its
    # projection shortcut and both blocks' second convs; each block's first conv is alone
    assert p["conv1"] == ["conv1", "layer1.0.conv2", "layer1.1.conv2"]
    assert p["layer3_0_conv2"] == ["layer3.0.conv2", "layer3.0.downsample.0", "layer3.1.conv2"]
    assert p["layer2_1_conv1"] == ["layer2.1.conv1"]
    assert len(p) == 12 and "fc" not in p  # the classifier keeps the classes
    assert resnet.groups == [(s,) for s in p]
    assert resnet.base["layer4_0_conv2"] == 48


def test_resnet_layers_follow_any_widths(resnet: Architecture) -> None:
    """The derived family gives, for any widths, the network the pruned model traces to."""
    model = full_model(RESNET, 16, 10)
    assert trace(model, (16, 16, 3)).keys == resnet.family.network(resnet.base, resolution=16,
                                                                   classes=10).keys
    rng = random.Random(0)
    widths = {s: rng.randint(1, b) for s, b in resnet.base.items()}
    resnet.prune_to(model, widths)
    assert resnet.widths(model) == widths
    got = trace(model, (16, 16, 3))
    assert got.keys == resnet.family.network(widths, resolution=16, classes=10).keys
    # torch pads stride-2 3x3 convs symmetrically: an explicit PAD layer, then VALID
    pads = [n for n in got.nodes if n.spec.op == "pad"]
    assert [n.name for n in pads] == ["layer2_0_conv1_pad", "layer3_0_conv1_pad",
                                      "layer4_0_conv1_pad"]
    model.eval()
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)


@pytest.mark.parametrize("family", ["mobilenet_v1", "mobilenet_v2"])
def test_builtin_slots_are_the_zoos(family: str) -> None:
    """Torch-Pruning finds the zoo's slots in the built-in models (nothing written twice)."""
    arch = Architecture.load(family, 32, 10)
    fam = zoo.family(family)
    assert tuple(arch.producers) == fam.slots
    assert arch.base == dict(zip(fam.slots, fam.base))
    rng = random.Random(1)
    choices = zoo.slot_choices(fam, 8)
    for _ in range(5):
        w = {s: rng.choice(choices[s]) for s in fam.slots}
        assert arch.family.network(w, resolution=32, classes=10) == \
            fam.network(w, resolution=32, classes=10)
    if family == "mobilenet_v2":
        assert arch.producers["s3"] == ["b4.project.conv", "b5.project.conv",
                                        "b6.project.conv"]
        # the paper's option: the linear bottlenecks of one resolution move together
        assert [g for g in arch.groups if len(g) > 1] == [("s4", "s5"), ("s6", "s7")]
        untied = Architecture.load(family, 32, 10, tie_bottlenecks=False)
        assert untied.groups == [(s,) for s in fam.slots]
    assert build(family, None, 32, 10).slots == arch.producers


@pytest.mark.alone  # its budget is met or not by keys measured now beside those measured before
@pytest.mark.sweep
@pytest.mark.train
def test_adapt_a_user_resnet_end_to_end(real_lut, configs, tmp_path: Path) -> None:
    """`netadapt adapt --model pkg.module:factory`: the LUT keys it lacks (3x3 convs, PADs)
    measured on the device, adapted to the budget, exported with its trained weights."""
    _, path, _ = real_lut
    lut = tmp_path / "fast.db"
    shutil.copy(path, lut)
    runs = tmp_path / "runs"
    # at 16 px the uncalibrated sum is mostly per-invoke overhead: on a 16 grid the smallest
    # network reached only 0.84 of the initial on a fast host; a grid of 8 and a budget of
    # 0.9 leave room whatever the host's overhead
    r = CliRunner().invoke(app, [str(a) for a in (
        "adapt", "--lut", lut, "--model", RESNET, "--data", "digits", "--max-per-class", 50,
        "--short-floor", 0, "--resolution", 16,
        "--grid", 8, "--missing", "measure", "--budget", "0.9", "--pretrain-epochs", 1, "--short-steps", 2,
        "--long-epochs", 1, "--batch-size", 32, "--workers", 1, "--reduction", 0.15,
        "--decay", 0.9, "--runs-dir", runs, "--name", "rn", "--measure-rounds", 1)])
    assert r.exit_code == 0, r.output
    result = json.loads((runs / "rn" / "result.json").read_text())
    a, i = result["adapted"], result["initial"]
    assert a["latency_ms"] <= result["budgets"]["latency_ms"] < i["latency_ms"]
    assert any(a["widths"][s] < i["widths"][s] for s in i["widths"])
    assert a["measured_ms"] > 0
    # the exported file is the trained, pruned torch model, numerically
    model = load_exported(runs / "rn" / "adapted.pt")
    assert Architecture.load(RESNET, 16, 10).widths(model) == a["widths"]
    x = np.random.default_rng(0).standard_normal((1, 16, 16, 3)).astype(np.float32)
    assert file_vs_torch(runs / "rn" / "adapted.tflite", model, x) <= 1e-4


@pytest.mark.sweep
def test_a_saved_model_and_weights_that_do_not_fit(real_lut, configs, tmp_path: Path) -> None:
    """A whole saved model adapts from its own weights; a state dict that does not fit the
    model is one clear message."""
    from tests.user_models import ResNet18

    small = ResNet18((8, 8, 16, 16), num_classes=10)
    torch.save(small, tmp_path / "mine.pt")
    arch = Architecture.load(str(tmp_path / "mine.pt"), 16, 10)
    assert arch.family.name == "mine" and arch.base["conv1"] == 8
    state = arch.saved_state()
    assert all(torch.equal(state[k], v) for k, v in small.state_dict().items())
    torch.save(ResNet18((8, 8, 8, 8)).state_dict(), tmp_path / "other.pt")
    lut = tmp_path / "fast.db"
    shutil.copy(real_lut[1], lut)
    r = CliRunner().invoke(app, [str(a) for a in (
        "adapt", "--lut", lut, "--model", RESNET, "--weights", tmp_path / "other.pt",
        "--data", "digits", "--resolution", 16, "--grid", 16, "--missing", "measure", "--budget", "0.9", "--runs-dir",
        tmp_path / "runs", "--no-measure")])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "do not fit" in r.output and "size mismatch" in r.output
