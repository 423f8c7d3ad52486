"""int8 NetAdapt: search on an int8 LUT, full-integer exports measured on the file, parity
with the fake-quant reference, and each bad input one clear message."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from adapter import data, quantize
from adapter.errors import AdaptError
from adapter.executors import torch_threads
from adapter.models import build
from adapter.train import train
from bench.tflite_build import INPUT_QUANT, Quant, activation_quants
from bench.zoo import MOBILENET_V1
from lut_db.spec import INPUT, Network, Node
from netadapt_cli.main import app
from tests.fakes import make_lut

INT8_SPACE = {"sweeps": [{"families": ["mobilenet_v1"], "resolutions": [32], "grid": 64,
                          "classes": 10, "dtype": "int8"}]}
RUN = ["--data", "digits", "--width", "0.25", "--budget", "0.9", "--pretrain-epochs", "1",
       "--short-steps", "2", "--long-epochs", "1", "--batch-size", "64", "--workers", "1",
       "--reduction", "0.1", "--no-measure"]


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


@pytest.mark.train
def test_int8_file_matches_its_fake_quant_reference(trained, digits) -> None:
    images = quantize.calibration_images(digits, 4, 32)
    q = quantize.quantize(trained, images, name="v1")
    assert all(k.endswith("dt=int8") for k in q.net.keys)
    x, _ = digits.tensors("test", range(200))
    p = quantize.parity(q, x, layer_images=100)
    assert p["top1_agreement"] >= 0.99 and p["layer_max_steps"] <= 1
    assert quantize.check_parity(p, "v1") is None and p["meets_bar"]
    assert "only 98.00%" in quantize.check_parity({**p, "top1_agreement": 0.98}, "v1")
    with pytest.raises(quantize.Int8Error, match="a layer of the int8 file is 2 steps off"):
        quantize.check_parity({**p, "layer_max_steps": 2.0}, "v1")
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
        assert q["parity"]["top1_agreement"] >= 0.99 and q["parity"]["layer_max_steps"] <= 1
        assert q["parity"]["meets_bar"]
        assert result[part]["test_acc"] == q["test_acc"]
        assert q["drop_points"] == pytest.approx(
            100 * (result[part]["test_acc_float"] - q["test_acc"]))
    net = json.loads((run / "adapted.json").read_text())
    assert net["nodes"]  # the float network's description; the search priced int8 keys:
    hist = json.loads((run / "history.json").read_text())
    assert len(hist) >= 1 and json.loads((run / "result.json").read_text())["adapted"]["int8"]


@pytest.mark.sweep
def test_int8_adapt_without_an_int8_sweep_gives_the_command(real_lut, tmp_path: Path,
                                                            configs: Path) -> None:
    _, path, _ = real_lut
    lut = tmp_path / "fast.db"
    shutil.copy(path, lut)
    r = invoke("adapt", "--lut", lut, *RUN, "--dtype", "int8", "--runs-dir", tmp_path / "r",
               "--no-sweep")
    assert r.exit_code == 1
    assert (f"holds no int8 sweep of mobilenet_v1 (its sweeps: mobilenet_v1 at [32] px, grid "
            f"64, 10 classes, float32); build one with: netadapt lut --device fast --space "
            f"mobilenet_v1 --resolution 32 --classes 10 --dtype int8 --lut {lut}") in flat(r.output)


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


@pytest.mark.train
def test_a_failed_quantization_leaves_the_float_exports(trained, digits, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from adapter import pipeline
    from adapter.arch import Architecture
    from adapter.config import AdaptConfig
    from adapter.export import save_exports

    arch = Architecture.load("mobilenet_v1", 32, 10)
    exports = save_exports(trained, tmp_path, "adapted", arch)
    exports["initial"] = save_exports(trained, tmp_path, "initial", arch)
    result = {"exports": exports, "initial": {"test_acc": 0.5}, "adapted": {"test_acc": 0.5},
              "multipliers": []}
    na = SimpleNamespace(cfg=AdaptConfig(dtype="int8", calibration_batches=2, batch_size=32),
                         model=trained, arch=arch)

    def refuse(p: dict, what: str) -> None:
        raise quantize.Int8Error(f"{what}: forced")

    monkeypatch.setattr(quantize, "check_parity", refuse)
    with pytest.raises(quantize.Int8Error, match="initial .*initial_int8.tflite.*: forced"):
        pipeline.int8_exports(na, digits, result, lambda m: None)
    assert sorted(p.name for p in tmp_path.glob("*.tflite")) == ["adapted.tflite",
                                                                  "initial.tflite"]


def test_layers_with_no_int8_key_in_the_lut_are_named(int8_lut: Path, tmp_path: Path) -> None:
    r = invoke("adapt", "--lut", int8_lut, *RUN, "--grid", "32", "--runs-dir", tmp_path / "r",
               "--no-sweep")
    assert r.exit_code == 1
    out = flat(r.output)
    assert "has no entry for" in out and ",dt=int8" in out and "--missing measure" in out
