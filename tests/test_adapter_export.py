"""adapter.export: the .tflite of a trained model computes what the torch model computes."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ai_edge_litert.interpreter import Interpreter
from torch import nn

from adapter import data
from adapter.executors import torch_threads
from adapter.export import export, save_exports, write_tflite
from adapter.models import AdaptError, build, rebuild
from adapter.prune import prune_slot
from adapter.same_padding import SameConv2d, same_pads
from adapter.train import train
from bench import zoo
from bench.tflite_build import build_network
from lut_db.network import Network
from lut_db.spec import SpecError

TOL = 1e-4  # max abs difference of the logits (the export's parity bar)


@pytest.fixture(scope="module")
def digits() -> dict[int, data.Dataset]:
    return {r: data.digits(r) for r in (32, 40)}


def trained(family: str, mult: float, resolution: int, ds: data.Dataset, steps: int,
            lr: float) -> nn.Module:
    """A model trained a little on digits: BN statistics and affine parameters are far from
    the init's, and the logits are a trained model's (tens, not hundredths). ``first_loss``
    and ``last_loss`` say the training did something, whatever its outcome on this machine's
    arithmetic (the same seed reached 0.27 test accuracy on one machine, over 0.3 on another)."""
    model = build(family, width_mult=mult, resolution=resolution, classes=10, seed=0)
    with torch_threads(1):  # one thread: spinning OpenMP threads crawl on a loaded machine
        xb, yb = next(iter(data.train_loader(ds, None, 32, steps, seed=0)))
        with torch.no_grad():  # the first step's loss, on a copy (train mode moves BN stats)
            model.first_loss = float(F.cross_entropy(copy.deepcopy(model).train()(xb), yb))
        model.last_loss = train(model, data.train_loader(ds, None, 32, steps, seed=0), lr=lr)
    return model.eval()


@pytest.fixture(scope="module")
def models(digits) -> dict[str, nn.Module]:
    return {"v1": trained("mobilenet_v1", 0.5, 32, digits[32], 60, 0.1),
            "v2": trained("mobilenet_v2", 0.35, 32, digits[32], 60, 0.05),
            "v1@40": trained("mobilenet_v1", 0.25, 40, digits[40], 60, 0.1)}


def run_tflite(model: bytes, x: torch.Tensor) -> np.ndarray:
    """Logits of NCHW images ``x``, one invoke per image (the file has batch 1)."""
    runner = Interpreter(model_content=model, num_threads=1).get_signature_runner()
    outs = [runner(input=xi[None].permute(0, 2, 3, 1).numpy()) for xi in x]
    return np.concatenate([next(iter(o.values())) for o in outs])


def assert_parity(model: nn.Module, tflite: bytes, x: torch.Tensor) -> np.ndarray:
    """The export's parity bar: max abs logit difference <= 1e-4, top-1 the same on >= 99.9 %."""
    with torch.no_grad():
        want = model.eval()(x).double().numpy()
    got = run_tflite(tflite, x)
    err = float(np.abs(got - want).max())
    assert err <= TOL, f"max abs difference {err:.3g} > {TOL}"
    same = float(np.mean(got.argmax(1) == want.argmax(1)))
    assert same >= 0.999, f"top-1 agrees on {same:.2%} of images"
    return want


def assert_folding_exercised(model: nn.Module) -> None:
    """Running statistics moved away from the init's (mean 0, var 1) in most BN layers."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert np.median([float((m.running_var - 1).abs().max()) for m in bns]) > 1e-2
    assert np.median([float(m.running_mean.abs().max()) for m in bns]) > 1e-2


def symmetric_outputs(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """The model's outputs with torch's symmetric padding (1, 1) at stride 2, as before."""
    model = copy.deepcopy(model)
    for m in model.modules():
        if isinstance(m, SameConv2d):
            m.forward = lambda x, m=m: F.conv2d(x, m.weight, m.bias, m.stride, 1, m.dilation,
                                                m.groups)
    with torch.no_grad():
        return model(x).numpy()


@pytest.mark.parametrize("key,resolution", [("v1", 32), ("v2", 32), ("v1@40", 40)])
@pytest.mark.train
def test_trained_model_exports_with_parity(digits, models, key: str, resolution: int) -> None:
    model, ds = models[key], digits[resolution]
    assert_folding_exercised(model)
    net, tflite = export(model, name="m")
    # the file's layers are the LUT's: the zoo network at the model's widths
    fam = zoo.family(model.family)
    assert net == fam.network(model.widths(), resolution=resolution, classes=10, name="m")
    logits = assert_parity(model, tflite, ds.tensors()[0])
    assert np.abs(logits).max() > 5  # trained logits, so 1e-4 is a real bar
    assert model.last_loss < model.first_loss  # it trained: the loss went down
    # the bug fixed: with symmetric stride-2 padding the same weights compute other numbers
    if key != "v1@40":
        assert np.abs(symmetric_outputs(model, ds.tensors()[0]) - logits).max() > 100 * TOL


@pytest.mark.parametrize("key,prunes", [
    ("v1", {"conv1": 8, "pw5": 100, "pw13": 300}),
    ("v2", {"s3": 8, "e9": 50}),
])
@pytest.mark.train
def test_pruned_model_exports_its_pruned_widths(digits, models, key, prunes) -> None:
    model = copy.deepcopy(models[key])
    want = model.widths() | prunes
    for slot, keep in prunes.items():
        prune_slot(model, model.slots, slot, keep, torch.zeros(1, 3, 32, 32))
    assert model.widths() == want
    net, tflite = export(model, name="p")
    assert net == zoo.family(model.family).network(want, resolution=32, classes=10, name="p")
    assert_parity(model, tflite, digits[32].tensors("test", range(150))[0])


@pytest.mark.parametrize("size,kernel,stride,want", [
    (224, 3, 2, (0, 1)), (5, 3, 2, (1, 1)), (7, 3, 1, (1, 1)), (8, 1, 2, (0, 0)),
    (10, 5, 2, (1, 2)), (9, 3, 3, (0, 0)), (8, 4, 1, (1, 2)),
])
def test_same_pads_are_tflite_same(size, kernel, stride, want) -> None:
    assert same_pads(size, kernel, stride) == want
    conv = SameConv2d(1, 1, kernel, stride, bias=False)
    out = conv(torch.zeros(1, 1, size, size))
    assert out.shape[-1] == -(-size // stride)  # SAME's output size


class Custom(nn.Module):
    """Not a zoo model: strided SameConv2d + BN, a biased conv, an add, a pool, and a linear
    layer reading 4x4xC (flattened CHW in torch, HWC in TFLite)."""

    def __init__(self, stem_padding: int | None = None) -> None:
        super().__init__()
        self.stem = (SameConv2d(3, 8, 3, 2, bias=False) if stem_padding is None
                     else nn.Conv2d(3, 8, 3, 2, stem_padding, bias=False))
        self.bn = nn.BatchNorm2d(8)
        self.body = nn.Conv2d(8, 8, 3, 1, 1)
        self.dw = nn.Conv2d(8, 16, 3, 1, 1, groups=8)  # depth multiplier 2
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(16 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.stem(x)))
        x = (x + self.body(x)).relu()
        x = self.pool(F.relu6(self.dw(x)))
        return self.head(torch.flatten(x, 1))


def _randomised(model: nn.Module, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return model.eval()


def test_generic_model_exports_with_parity(tmp_path) -> None:
    model = _randomised(Custom())
    path = tmp_path / "custom.tflite"
    net = write_tflite(model, path, input_shape=(16, 16, 3))
    assert net.name == "custom" and [n.name for n in net.nodes] == [
        "stem", "body", "add", "dw", "pool", "head"]
    x = torch.randn(30, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    assert_parity(model, path.read_bytes(), x)


def test_symmetric_strided_padding_becomes_an_explicit_pad() -> None:
    """torch's padding=1 at stride 2 on an even size is not SAME: the trace emits a PAD layer
    (its own LUT key) and a VALID conv, and the file computes what torch computes."""
    model = _randomised(Custom(stem_padding=1))
    net, tflite = export(model, (16, 16, 3))
    pad, stem = net.nodes[0], net.nodes[1]
    assert (pad.name, pad.spec.op, pad.spec.pads) == ("stem_pad", "pad", (1, 1, 1, 1))
    assert (stem.name, stem.spec.padding, stem.inputs) == ("stem", "valid", ("stem_pad",))
    assert "pads=1x1x1x1" in pad.spec.key
    x = torch.randn(30, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    assert_parity(model, tflite, x)
    # on an odd size SAME pads symmetrically too: no PAD layer, the conv is SAME
    net15, tflite15 = export(model, (15, 15, 3))
    assert net15.nodes[0].spec.op == "conv2d"
    x = torch.randn(10, 3, 15, 15, generator=torch.Generator().manual_seed(2))
    assert_parity(model, tflite15, x)


def test_given_weights_are_checked() -> None:
    net = zoo.MOBILENET_V1.network(zoo.MOBILENET_V1.widths(width_mult=0.25), resolution=32,
                                   classes=10)
    good = np.zeros((8, 3, 3, 3), np.float32)
    build_network(net, weights={"conv1": {"weight": good, "bias": np.zeros(8, np.float32)}})
    with pytest.raises(SpecError, match="node conv1 .* weights {'weight': \\(8, 3, 3, 3\\)}"):
        build_network(net, weights={"conv1": {"weight": good}})  # BN folded: a bias is needed
    with pytest.raises(SpecError, match="float32"):
        build_network(net, weights={"conv1": {"weight": good.astype(np.float64),
                                              "bias": np.zeros(8, np.float32)}})
    with pytest.raises(SpecError, match="'nope', which is not a node"):
        build_network(net, weights={"nope": {}})


def test_checkpoints_from_before_same_padding_are_refused() -> None:
    model = build("mobilenet_v1", width_mult=0.25, resolution=32, classes=10)
    config = model.config()
    assert rebuild(config, model.state_dict()).widths() == model.widths()
    old = {k: v for k, v in config.items() if k != "padding"}
    with pytest.raises(AdaptError, match="trained before the models padded as TFLite SAME"):
        rebuild(old, model.state_dict())


@pytest.mark.train
def test_save_exports_writes_what_adapt_keeps(digits, models, tmp_path) -> None:
    model = models["v1@40"]
    paths = save_exports(model, tmp_path, "adapted")
    assert paths == {k: str(tmp_path / f"adapted.{ext}") for k, ext in
                     (("torch", "pt"), ("tflite", "tflite"), ("network", "json"))}
    saved = torch.load(paths["torch"], weights_only=True)
    again = rebuild(saved["config"], saved["state_dict"]).eval()
    net = Network.load(paths["network"])
    assert net == zoo.MOBILENET_V1.network(model.widths(), resolution=40, classes=10,
                                           name="adapted")
    assert_parity(again, (tmp_path / "adapted.tflite").read_bytes(), digits[40].tensors("test", range(50))[0])
