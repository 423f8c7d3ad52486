"""int8 NetAdapt: search on an int8 LUT, full-integer exports measured on the file, parity
with the integer reference, and each bad input one clear message."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from adapter import data, quantize
from adapter.errors import AdaptError
from adapter.executors import torch_threads
from adapter.models import build
from adapter.train import train
from bench.tflite_build import build_network
from bench.tflite_quant import INPUT_QUANT, Quant, activation_quants
from bench.zoo import MOBILENET_V1
from lut_db.network import INPUT, Network, Node
from netadapt_cli.main import app
from tests.fakes import SPACE, make_lut

INT8_SPACE = {"sweeps": [{"families": ["mobilenet_v1"], "resolutions": [32], "grid": 64,
                          "classes": 10, "dtype": "int8"}]}
RUN = ["--data", "digits", "--max-per-class", "60", "--width", "0.25", "--budget", "0.9",
       "--pretrain-epochs", "1", "--short-steps", "2", "--short-floor", "0", "--long-epochs",
       "1", "--batch-size", "64", "--workers", "1", "--reduction", "0.1", "--no-measure"]


def invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def flat(text: str) -> str:
    return " ".join(text.translate(str.maketrans("│╭╮╰╯─┃┏┓┗┛━┡┩└┘", " " * 16)).split())


@pytest.fixture(scope="module")
def int8_lut_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sealed int8 LUT of MobileNetV1 at 32 px (FakeRunner's numbers: no sweep)."""
    path = tmp_path_factory.mktemp("int8") / "fake.db"
    store, _ = make_lut(path, space=INT8_SPACE)
    store.close()
    return path


@pytest.fixture
def int8_lut(int8_lut_file: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "fake.db"
    shutil.copy(int8_lut_file, copy)
    return copy


@pytest.fixture(scope="module")
def digits() -> data.Dataset:
    return data.digits(32)


@pytest.fixture(scope="module")
def trained(digits: data.Dataset) -> torch.nn.Module:
    model = build("mobilenet_v1", width_mult=0.25, resolution=32, classes=10, seed=0)
    with torch_threads(1):
        train(model, data.train_loader(digits, None, 32, 30, seed=0), lr=0.1)
    return model.eval()


def test_calibrated_ranges_set_the_activation_scales() -> None:
    net = MOBILENET_V1.network(width_mult=0.25, resolution=32, classes=10).with_dtype("int8")
    assumed = activation_quants(net)
    assert assumed[INPUT] == INPUT_QUANT
    ranges = {INPUT: (-1.0, 3.0), "conv1": (0.0, 2.0), "fc": (-5.0, 7.0)}
    got = activation_quants(net, ranges)
    assert got[INPUT] == Quant.of_range(-1.0, 3.0)
    assert got["conv1"] == Quant.of_range(0.0, 2.0) != assumed["conv1"]
    assert got["pool"] == got["pw13"]  # MEAN keeps its input's quantization
    assert got["fc"] == Quant.of_range(-5.0, 7.0)


def test_layers_with_no_int8_form_are_refused() -> None:
    net = MOBILENET_V1.network(width_mult=0.25, resolution=32, classes=10)
    nodes = list(net.nodes)
    dw1 = nodes[1]
    nodes[1] = Node(dw1.name, replace(dw1.spec, op="hard_swish", kernel=(1, 1), bias=False,
                                        act="none"),
                    dw1.inputs)
    with pytest.raises(quantize.Int8Error, match=r"layers with no int8 key: dw1 \(hard_swish\)"):
        quantize.check_int8_ops(Network(net.name, net.input_shape, tuple(nodes)))


class EveryOp(nn.Module):
    """Every op the int8 export covers: a stride-2 conv with torch's padding (a pad op), a
    depthwise conv, a residual add with ReLU, 2x2 average (ties: the kernel's own rounding
    rule) and max pools, the global pool and a linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8),
                                  nn.ReLU6())
        self.dw = nn.Sequential(nn.Conv2d(8, 8, 3, 1, 1, groups=8, bias=False),
                                nn.BatchNorm2d(8))
        self.avg, self.max, self.gap = nn.AvgPool2d(2), nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1)
        self.pw = nn.Sequential(nn.Conv2d(8, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.dw(x))
        x = self.max(self.pw(self.avg(x)))
        return self.fc(torch.flatten(self.gap(x), 1))


@pytest.fixture(scope="module")
def every_op(digits: data.Dataset) -> quantize.Int8Model:
    torch.manual_seed(0)
    with torch_threads(1):
        return quantize.quantize(EveryOp().eval(), quantize.calibration_images(digits, 2, 32),
                                 (32, 32, 3), "every_op")


def test_the_integer_reference_computes_what_the_kernels_do(every_op, digits) -> None:
    """Each op of the file, fed the file's own input, equals the reference bit for bit, and
    so does the whole network on every test image: a layer one step off would compound
    through a deep network (the float fake-quant reference did, up to 7 steps)."""
    assert {n.spec.op for n in every_op.net.nodes} == set(quantize.INT8_OPS)
    x, _ = digits.tensors("test")
    with torch_threads(1):
        p = quantize.parity(every_op, x)
    assert p["images"] == len(x) and p["layer_images"] == quantize.LAYER_IMAGES
    assert p["layer_max_steps"] == 0 and p["worst_layer"] is None
    assert p["output_max_steps"] == 0 and p["top1_agreement"] == 1.0
    quantize.check_parity(p, "every_op")


def test_a_file_off_its_reference_is_refused(every_op, digits) -> None:
    """A file whose classifier weights are not the ones quantized (5 % larger) fails the
    end-to-end check with one message."""
    weights = {**every_op.weights, "fc": {**every_op.weights["fc"],
                                          "weight": every_op.weights["fc"]["weight"] * 1.05}}
    wrong = replace(every_op, tflite=build_network(every_op.net, weights=weights,
                                                   ranges=every_op.ranges))
    x, _ = digits.tensors("test")
    with torch_threads(1):
        p = quantize.parity(wrong, x)
    assert p["output_max_steps"] > 1
    with pytest.raises(quantize.Int8Error, match=r"fc: the int8 file does not compute its "
                       r"quantization: \d+\.\d\d% of 450 test images have an output up to "
                       r"\d+ steps off"):
        quantize.check_parity(p, "fc")
    ok = {**p, "output_max_steps": 1.0, "output_within_one_step": 1.0}
    with pytest.raises(quantize.Int8Error, match=r"top-1 agrees on 98\.00% of them \(at "
                       r"least 99% needed\)"):
        quantize.check_parity({**ok, "top1_agreement": 0.98}, "fc")
    with pytest.raises(quantize.Int8Error, match="layer dw is 2 steps off when fed the file's "
                       "own input"):
        quantize.check_parity({**ok, "top1_agreement": 1.0, "layer_max_steps": 2.0,
                               "worst_layer": "dw"}, "fc")


@pytest.mark.train
def test_int8_file_matches_its_integer_reference(trained, digits) -> None:
    """A trained MobileNetV1 within one step on every test image (the float fake-quant
    reference was 2 steps off on 2 of these 450 images), top-1 agreement >= 99 %."""
    images = quantize.calibration_images(digits, 4, 32)
    with torch_threads(1):
        q = quantize.quantize(trained, images, name="v1")
        assert all(k.endswith("dt=int8") for k in q.net.keys)
        x, _ = digits.tensors("test")
        p = quantize.parity(q, x)
    assert p["images"] == len(x) == 450
    assert p["output_max_steps"] <= 1 and p["output_within_one_step"] == 1.0
    assert p["top1_agreement"] >= quantize.MIN_AGREEMENT and p["layer_max_steps"] <= 1
    quantize.check_parity(p, "v1")
    # the file's input and output are int8, its scales the calibrated ones
    got, out_q = quantize.run_file(q.tflite, x[:4])
    assert got.dtype == np.int8
    assert out_q.scale == pytest.approx(q.quants[q.output].scale, rel=1e-6)  # stored float32
    assert 0 <= quantize.file_accuracy(q.tflite, digits) <= 1


def test_a_calibration_set_too_small_is_refused(digits) -> None:
    with pytest.raises(quantize.Int8Error, match="too small to give activation ranges"):
        quantize.calibration_images(digits, 1, 8)


@pytest.mark.train
def test_quant_aware_training_leaves_a_plain_model(trained, digits) -> None:
    model = build("mobilenet_v1", width_mult=0.25, resolution=32, classes=10, seed=0)
    model.load_state_dict(trained.state_dict())
    keys = set(model.state_dict())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch_threads(1), quantize.QuantAware(model, (32, 32, 3)):
        train(model, data.train_loader(digits, None, 16, 2, seed=0), lr=0.01)
        assert all(not m.training for m in model.modules()
                   if isinstance(m, torch.nn.BatchNorm2d))  # frozen: folded as exported
    assert set(model.state_dict()) == keys
    after = model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in keys if k.endswith("weight"))
    assert all(torch.equal(before[k], after[k]) for k in keys if "running" in k)
    quantize.quantize(model.eval(), quantize.calibration_images(digits, 2, 32))


@pytest.mark.train
def test_int8_adapt_end_to_end(int8_lut: Path, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    measured = quantize.file_accuracy
    calls: list[float] = []

    def lossy(tflite: bytes, ds: data.Dataset, test: object = None) -> float:
        """The adapted file (the last of the first round) reads as a 50-point drop, which
        the quantization-aware fine-tune must follow; the rest is measured."""
        calls.append(measured(tflite, ds, test))
        return calls[-1] - 0.5 if len(calls) == 2 else calls[-1]

    monkeypatch.setattr(quantize, "file_accuracy", lossy)
    runs = tmp_path / "runs"
    r = invoke("adapt", "--lut", int8_lut, *RUN, "--runs-dir", runs, "--name", "q", "--json")
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    qat = result["adapted"]["int8"]["qat"]  # the drop was over --max-int8-drop: QAT ran
    assert qat["drop_points_before"] == pytest.approx(
        100 * (result["adapted"]["test_acc_float"] - calls[1] + 0.5))
    assert Path(qat["torch"]).name == "adapted_qat.pt" and Path(qat["torch"]).exists()
    assert len(calls) == 3  # initial, adapted, adapted again after QAT
    # the better file ships: the quantization-aware one unless it scores lower
    kept = result["adapted"]["int8"]
    assert kept["test_acc"] == max(calls[2], calls[1] - 0.5)
    assert qat["kept"] == ("quantization-aware" if calls[2] >= calls[1] - 0.5 else
                           "post-training")
    assert result["config"]["dtype"] == "int8"  # taken from the LUT: its only dtype
    run = runs / "q"
    for part in ("initial", "adapted"):
        q = result[part]["int8"]
        assert Path(q["tflite"]).name == f"{part}_int8.tflite" and Path(q["tflite"]).exists()
        assert (run / f"{part}.tflite").exists()  # the float file stays beside it
        assert q["parity"]["top1_agreement"] >= 0.99 and q["parity"]["output_max_steps"] <= 1
        assert result[part]["test_acc"] == q["test_acc"]
        assert q["drop_points"] == pytest.approx(
            100 * (result[part]["test_acc_float"] - q["test_acc"]))
    net = json.loads((run / "adapted.json").read_text())
    assert net["nodes"]  # the float network's description; the search priced int8 keys:
    hist = json.loads((run / "history.json").read_text())
    assert len(hist) >= 1 and json.loads((run / "result.json").read_text())["adapted"]["int8"]


@pytest.mark.parametrize("sweep", [True, False])
def test_int8_adapt_without_an_int8_sweep_gives_the_command(tmp_path: Path, sweep: bool) -> None:
    """A float LUT of a device not attached here: sweeping its int8 keys cannot start
    (default), or there is no int8 sweep to price with (--no-sweep); either way one message
    with the command that builds it, before any training."""
    lut = tmp_path / "float.db"
    make_lut(lut, space=SPACE)[0].close()
    runs = tmp_path / "r"
    r = invoke("adapt", "--lut", lut, *RUN, "--dtype", "int8", "--runs-dir", runs,
               *([] if sweep else ["--no-sweep"]))
    assert r.exit_code == 1 and "Traceback" not in r.output
    out = flat(r.output)
    assert out.count("Error:") == 1
    if sweep:
        assert (f"sweep them with: netadapt lut --device fake --backend tflite-cpu --lut {lut} "
                "--space mobilenet_v1 --resolution 32 --grid 32 --classes 10 --dtype int8"
                in out)
    else:
        assert (f"holds no int8 sweep of mobilenet_v1 (its sweeps: mobilenet_v1,mobilenet_v2 "
                f"at [32, 48] px, grid 64, 10 classes, float32); build one with: netadapt lut "
                f"--device fake --space mobilenet_v1 --resolution 32 --classes 10 --dtype int8 "
                f"--lut {lut}") in out
    assert not any(runs.rglob("*.pt")) if runs.exists() else True


def test_int8_adapt_with_too_few_calibration_images(int8_lut: Path, tmp_path: Path) -> None:
    r = invoke("adapt", "--lut", int8_lut, *RUN, "--calibration-batches", "1", "--batch-size",
               "8", "--runs-dir", tmp_path / "r")
    assert r.exit_code == 1
    assert "too small to give activation ranges" in flat(r.output)
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").rglob("*.pt"))


def test_the_int8_search_prices_int8_keys(int8_lut: Path) -> None:
    from adapter.pipeline import search_space
    from lut_db.store import LutStore

    store = LutStore.open(int8_lut)
    version = store.version(None)
    space, used = search_space(store, version, "mobilenet_v1", 32, 10, dtype="int8")
    table = store.table(version)
    net = space.network(space.fam.widths(width_mult=0.5))
    assert net.keys and all(k.endswith(",dt=int8") and k in table for k in net.keys)
    assert space.grid == 64 and used == f"{int8_lut}@{version.id}"
    with pytest.raises(AdaptError, match="holds no float32 sweep"):  # int8 keys price no float
        search_space(store, version, "mobilenet_v1", 32, 10, sweep=False)
    store.close()


def test_a_failed_parity_leaves_the_float_exports(digits, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A file off its reference ends the run with one message; it is not written, and the
    float exports stay."""
    from types import SimpleNamespace

    from adapter import pipeline
    from adapter.arch import Architecture
    from adapter.config import AdaptConfig
    from adapter.export import save_exports

    model = build("mobilenet_v1", width_mult=0.25, resolution=32, classes=10, seed=0).eval()
    arch = Architecture.load("mobilenet_v1", 32, 10)
    exports = save_exports(model, tmp_path, "adapted", arch)
    exports["initial"] = save_exports(model, tmp_path, "initial", arch)
    result = {"exports": exports, "initial": {"test_acc": 0.5}, "adapted": {"test_acc": 0.5},
              "multipliers": []}
    na = SimpleNamespace(cfg=AdaptConfig(dtype="int8", calibration_batches=2, batch_size=32),
                         model=model, arch=arch, run_dir=tmp_path)
    measured = quantize.parity

    def off(q: quantize.Int8Model, images: torch.Tensor) -> dict:
        return {**measured(q, images), "output_max_steps": 3.0, "output_within_one_step": 0.9}

    monkeypatch.setattr(quantize, "parity", off)
    with torch_threads(1), pytest.raises(
            quantize.Int8Error, match=r"^initial \(initial_int8.tflite\): the int8 file does not "
            r"compute its quantization: 10\.00% of 450 test images have an output up to 3 "
            r"steps off .*; the float exports and result.json stay in " + str(tmp_path) + "$"):
        pipeline.int8_exports(na, digits, result, lambda m: None)
    assert sorted(p.name for p in tmp_path.glob("*.tflite")) == ["adapted.tflite",
                                                                  "initial.tflite"]
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["adapted.pt", "initial.pt"]


def test_layers_with_no_int8_key_in_the_lut_are_named(int8_lut: Path, tmp_path: Path) -> None:
    r = invoke("adapt", "--lut", int8_lut, *RUN, "--grid", "32", "--runs-dir", tmp_path / "r",
               "--no-sweep")
    assert r.exit_code == 1
    out = flat(r.output)
    assert "has no entry for" in out and ",dt=int8" in out and "--missing measure" in out


@pytest.mark.train
def test_own_training_loop_on_an_int8_lut_exports_the_int8_file(int8_lut: Path, trained,
                                                                 digits, tmp_path: Path) -> None:
    """NetAdapt (the caller's own training loop) on an int8 LUT: export asks for calibration
    images, then writes the full-integer file beside the float one, checked against its
    integer reference."""
    from adapter import NetAdapt

    x, y = digits.tensors("test")

    def tune(model: nn.Module, steps: int) -> None:
        train(model, data.train_loader(digits, None, 32, steps, seed=0), lr=0.01)

    def score(model: nn.Module) -> float:
        with torch.no_grad():
            return float((model.eval()(x[:64]).argmax(1) == y[:64]).float().mean())

    with torch_threads(1):
        na = NetAdapt(trained, x[:1], lut=int8_lut, budget=0.9, reduction=0.1, short_steps=1,
                      grid=64, sweep=False, missing="interpolate", train=tune, evaluate=score)
        na.step()
        with pytest.raises(AdaptError, match="priced int8 layers: pass export"):
            na.export(tmp_path / "out")
        with pytest.raises(AdaptError, match=r"at least 32 images of shape \(3, 32, 32\)"):
            na.export(tmp_path / "out", calibration_images=x[:8])
        assert not (tmp_path / "out").exists()  # refused before anything is written
        images = quantize.calibration_images(digits, 2, 32)
        files = na.export(tmp_path / "out", calibration_images=images)
    assert set(files) == {"torch", "tflite", "network", "int8"}
    got, _ = quantize.run_file(Path(files["int8"]).read_bytes(), x[:64])
    with torch.no_grad():
        want = na.model.eval()(x[:64]).argmax(1).numpy()
    assert np.mean(got.argmax(1) == want) >= 0.9  # the file is the adapted network, at int8
    assert Path(files["tflite"]).is_file()
