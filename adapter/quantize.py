"""A trained torch model -> a full-integer int8 ``.tflite``, measured on the file.

The file is the one ``adapter.export`` writes (the same traced Network, BN folded) at
``dt=int8``, in the scheme ``bench.tflite_build`` uses for the TF converter's int8
models: int8 weights per output channel (symmetric), int32 biases at input scale x
weight scale, int8 activations per tensor (asymmetric) over the range calibration saw,
int8 input and output. Ranges are the min/max of each layer's output over calibration
batches of the training data (what the converter's calibrator records), taken from the
float network evaluated in torch on the exported weights.

``parity`` runs the file in LiteRT against the integer reference
(``adapter.int8_reference``: the same weights and scales through the kernels' integer
arithmetic, computed in torch without the flatbuffer); ``check_parity`` refuses a file
more than one step off it.

``QuantAware`` fine-tunes a torch model quantization-aware on the same scheme (torch's
``FakeQuantize`` modules; BatchNorm frozen so the weights quantized are the folded ones).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from ai_edge_litert.interpreter import Interpreter
from torch import nn
from torch.ao import quantization as tq
from torch.nn.utils import parametrize

from adapter import int8_reference
from adapter.errors import AdaptError
from adapter.export import Weights, export_weights
from adapter.same_padding import same_pads
from adapter.trace import Shape, trace_modules
from bench.tflite_build import build_network
from bench.tflite_quant import Quant, activation_quants
from lut_db.network import INPUT, Network
from lut_db.spec import LayerSpec

__all__ = ["INT8_OPS", "Int8Error", "Int8Model", "QuantAware", "calibration_images",
           "check_int8_ops", "check_parity", "file_accuracy", "parity", "quantize", "run_file"]

# Ops the int8 export, its calibration and its reference cover.
INT8_OPS = int8_reference.REFERENCE_OPS
MIN_CALIBRATION_IMAGES = 32  # fewer leave rare activations' ranges to chance
EVAL_BATCH = 256
LAYER_IMAGES = 200  # test images the layer-by-layer parity runs (every layer an output)
MIN_AGREEMENT = 0.99  # top-1 agreement of file and reference


class Int8Error(AdaptError):
    """A model or calibration set that cannot be quantized to int8."""


def check_int8_ops(net: Network) -> None:
    """Refuse a network with layers that have no int8 form here (before any training)."""
    bad = sorted({f"{n.name} ({n.spec.op})" for n in net.nodes if n.spec.op not in INT8_OPS})
    if bad:
        raise Int8Error(f"{net.name}: layers with no int8 key: {', '.join(bad)}; int8 covers "
                        f"{', '.join(INT8_OPS)}; adapt at --dtype float32 instead")


def calibration_images(data: object, batches: int, batch_size: int, seed: int = 0
                       ) -> torch.Tensor:
    """``batches`` x ``batch_size`` training images (normalised, not augmented: what the
    network sees at inference), drawn without replacement with ``seed``."""
    n_train = len(data.train)  # type: ignore[attr-defined]
    want = batches * batch_size
    if batches < 1 or min(want, n_train) < MIN_CALIBRATION_IMAGES:
        raise Int8Error(f"a calibration set of {min(want, n_train)} images ({batches} batches "
                        f"of {batch_size}, {n_train} training images) is too small to give "
                        f"activation ranges: give at least {MIN_CALIBRATION_IMAGES} images "
                        "(--calibration-batches)")
    idx = torch.randperm(n_train, generator=torch.Generator().manual_seed(seed))[:want]
    return data.tensors("train", idx.tolist())[0]  # type: ignore[attr-defined]


@dataclass
class Int8Model:
    """A quantized network: its int8 Network, file, float weights and tensor quantizations."""

    net: Network
    tflite: bytes
    weights: dict[str, Weights]
    quants: dict[str, Quant]
    ranges: dict[str, tuple[float, float]]

    @property
    def output(self) -> str:
        return self.net.outputs[0]


def quantize(model: nn.Module, images: torch.Tensor, input_shape: Shape | None = None,
             name: str = "exported") -> Int8Model:
    """``model`` as a full-integer file, activation ranges from ``images`` (NCHW)."""
    net, weights = export_weights(model, input_shape, name)
    check_int8_ops(net)
    ranges = _ranges(net, weights, images)
    flat = [k for k, (lo, hi) in ranges.items() if not hi > lo]
    if flat:
        raise Int8Error(f"calibration gave no range for {', '.join(sorted(flat))} (every "
                        "value equal): give more or more varied --calibration-batches")
    q_net = net.with_dtype("int8")
    return Int8Model(q_net, build_network(q_net, weights=weights, ranges=ranges), weights,
                     activation_quants(q_net, ranges), ranges)


def _ranges(net: Network, weights: Mapping[str, Weights], images: torch.Tensor
            ) -> dict[str, tuple[float, float]]:
    lo: dict[str, float] = {}
    hi: dict[str, float] = {}
    for xb in images.split(EVAL_BATCH):
        for k, v in evaluate(net, weights, xb, keep_all=True).items():
            lo[k] = min(lo.get(k, np.inf), float(v.min()))
            hi[k] = max(hi.get(k, -np.inf), float(v.max()))
    return {k: (lo[k], hi[k]) for k in lo}


# -- the float evaluation of a Network (calibration ranges) ------------------------------------


@torch.no_grad()
def evaluate(net: Network, weights: Mapping[str, Weights], x: torch.Tensor,
             keep_all: bool = False) -> dict[str, torch.Tensor]:
    """The float network on NCHW images ``x`` with the exported weights: every node's
    output (``keep_all``) or the outputs'."""
    values = {INPUT: x}
    for node in net.nodes:
        values[node.name] = _layer(node.spec, [values[s] for s in node.inputs],
                                   weights.get(node.name, {}))
    return values if keep_all else {o: values[o] for o in net.outputs}


def _layer(spec: LayerSpec, xs: Sequence[torch.Tensor], w: Mapping[str, object]
           ) -> torch.Tensor:
    """One layer, NCHW in and out, weights in TFLite layout (a fully-connected output is
    N x C x 1 x 1)."""
    x = xs[0]
    weight = _tensor(w.get("weight"), x.dtype)
    bias = _tensor(w.get("bias"), x.dtype)
    if spec.op == "conv2d":  # OHWI -> OIHW
        y = F.conv2d(_pad(x, spec), weight.permute(0, 3, 1, 2), bias, spec.stride,
                     dilation=spec.dilation)
    elif spec.op == "depthwise_conv2d":  # [1, kh, kw, C] -> [C, 1, kh, kw]
        y = F.conv2d(_pad(x, spec), weight.permute(3, 0, 1, 2), bias, spec.stride,
                     dilation=spec.dilation, groups=spec.cin)
    elif spec.op == "fully_connected":  # TFLite flattens NHWC
        y = F.linear(x.permute(0, 2, 3, 1).reshape(len(x), -1), weight, bias)[:, :, None, None]
    elif spec.op == "add":
        y = xs[0] + xs[1]
    elif spec.op == "avg_pool":  # unpadded (the export refuses padded pools)
        y = F.avg_pool2d(x, spec.kernel, spec.stride)
    elif spec.op == "max_pool":
        y = F.max_pool2d(x, spec.kernel, spec.stride)
    elif spec.op == "global_avg_pool":
        y = x.mean(dim=(2, 3), keepdim=True)
    elif spec.op == "pad":
        top, bottom, left, right = spec.pads
        y = F.pad(x, (left, right, top, bottom))
    else:
        raise Int8Error(f"{spec.key}: no int8 form for op {spec.op!r}")
    if spec.act == "relu":
        return F.relu(y)
    return y.clamp(0.0, 6.0) if spec.act == "relu6" else y


def _tensor(a: object, dtype: torch.dtype) -> torch.Tensor | None:
    if a is None:
        return None
    return (a if isinstance(a, torch.Tensor) else torch.from_numpy(np.asarray(a))).to(dtype)


def _pad(x: torch.Tensor, spec: LayerSpec) -> torch.Tensor:
    if spec.padding == "valid":
        return x
    (t, b), (left, r) = [same_pads(n, k, s, d) for n, k, s, d in
                         zip((spec.h, spec.w), spec.kernel, spec.stride, spec.dilation)]
    return F.pad(x, (left, r, t, b))


# -- running the file, and its parity with the integer reference ------------------------------


def run_file(tflite: bytes, images: torch.Tensor) -> tuple[np.ndarray, Quant]:
    """The int8 file's raw int8 outputs on NCHW ``images`` (one invoke each: batch 1) and the
    output's quantization; the input is quantized with the file's own input scale."""
    interp = _interpreter(tflite)
    out = interp.get_output_details()[0]
    got = _invoke(interp, _file_input(interp, images))[out["name"]]
    return got.reshape(len(images), -1), _quant(out)


def file_accuracy(tflite: bytes, data: object,
                  test: tuple[torch.Tensor, torch.Tensor] | None = None) -> float:
    """Top-1 accuracy of the int8 file on the test split (``test``: its images and labels
    when already loaded), run in LiteRT."""
    x, y = test if test is not None else data.tensors("test")  # type: ignore[attr-defined]
    got, _ = run_file(tflite, x)
    return float((torch.from_numpy(got.argmax(1)) == y).float().mean())


def parity(q: Int8Model, images: torch.Tensor, layer_images: int = LAYER_IMAGES
           ) -> dict[str, Any]:
    """The file, run in LiteRT as users run it (its default CPU path), against the integer
    reference (``adapter.int8_reference``) on NCHW ``images``, both fed the same int8 input.

    End to end: top-1 agreement, the largest output difference in steps of the output
    scale, and the share of images within one step. Layer by layer, on the first
    ``layer_images``: each layer of the file against the reference layer fed the file's
    own input to it, which names the layer where a difference starts."""
    interp = _interpreter(q.tflite)
    xq = _file_input(interp, images)
    got = _invoke(interp, xq)[q.output].reshape(len(xq), -1).astype(np.int64)
    ref = np.concatenate([
        int8_reference.forward(q.net, q.weights, q.quants, chunk)[q.output].flatten(1).numpy()
        for chunk in _chunks(xq)]).astype(np.int64)
    steps = np.abs(got - ref).max(axis=1)
    layers = [_layer_steps(q, chunk) for chunk in _chunks(xq[:layer_images])]
    worst = max(layers, key=lambda d: d[0], default=(0.0, None))
    return {"images": len(xq), "top1_agreement": float(np.mean(got.argmax(1) == ref.argmax(1))),
            "output_max_steps": float(steps.max()),
            "output_within_one_step": float(np.mean(steps <= 1)),
            "output_scale": q.quants[q.output].scale[0],
            "layer_images": min(layer_images, len(xq)), "layer_max_steps": worst[0],
            "worst_layer": worst[1]}


def check_parity(p: Mapping[str, Any], what: str) -> None:
    """Refuse a file that does not compute its quantization: an image whose output is more
    than one step off the reference, top-1 agreement under ``MIN_AGREEMENT``, or a layer
    more than one step off the reference fed the same input."""
    faults = []
    if p["output_max_steps"] > 1:
        faults.append(f"{100 * (1 - p['output_within_one_step']):.2f}% of {p['images']} test "
                      f"images have an output up to {p['output_max_steps']:g} steps off")
    if p["top1_agreement"] < MIN_AGREEMENT:
        faults.append(f"top-1 agrees on {100 * p['top1_agreement']:.2f}% of them (at least "
                      f"{100 * MIN_AGREEMENT:g}% needed)")
    if p["layer_max_steps"] > 1:
        faults.append(f"layer {p['worst_layer']} is {p['layer_max_steps']:g} steps off when "
                      "fed the file's own input")
    if faults:
        raise Int8Error(f"{what}: the int8 file does not compute its quantization: "
                        f"{'; '.join(faults)} (against the integer reference, "
                        "adapter/int8_reference.py; at most one step is allowed)")


def _layer_steps(q: Int8Model, xq: np.ndarray) -> tuple[float, str | None]:
    """Largest difference, in steps, of any layer of the file from the reference layer fed
    the file's own input, and the first layer that reaches it (None: none differs). The
    layers' outputs come from the file built again with every layer an output (same
    network, weights and ranges: the same kernels run, and none is hidden inside the
    delegate)."""
    names = tuple(n.name for n in q.net.nodes)
    every = build_network(replace(q.net, outputs=names), weights=q.weights, ranges=q.ranges)
    got = {INPUT: xq, **_invoke(_interpreter(every), xq)}
    worst, where = 0.0, None
    for node in q.net.nodes:
        xs = [int8_reference.nhwc(got[s]) for s in node.inputs]
        ref = int8_reference.layer(node.spec, xs, [q.quants[s] for s in node.inputs],
                                   q.quants[node.name], q.weights.get(node.name, {}))
        diff = np.abs(got[node.name].reshape(len(xq), -1).astype(np.float64)
                      - ref.reshape(len(xq), -1).numpy()).max()
        if diff > worst:
            worst, where = float(diff), node.name
    return worst, where


def _chunks(xq: np.ndarray) -> list[np.ndarray]:
    """``xq`` in batches of EVAL_BATCH images at 32 px, fewer at larger ones (the
    reference's im2col of a first layer grows with the pixels)."""
    size = max(1, EVAL_BATCH * 32 * 32 // (xq.shape[1] * xq.shape[2]))
    return [xq[i:i + size] for i in range(0, len(xq), size)]


def _interpreter(tflite: bytes) -> Interpreter:
    interp = Interpreter(model_content=tflite, num_threads=1)
    interp.allocate_tensors()
    return interp


def _quant(detail: Mapping[str, Any]) -> Quant:
    scale, zero_point = detail["quantization"]
    return Quant((float(scale),), (int(zero_point),))


def _file_input(interp: Interpreter, images: torch.Tensor) -> np.ndarray:
    """NCHW ``images`` as the file's int8 input (its own stored input scale), NHWC."""
    return _quant(interp.get_input_details()[0]).quantize(images.permute(0, 2, 3, 1).numpy())


def _invoke(interp: Interpreter, xq: np.ndarray) -> dict[str, np.ndarray]:
    """Every output of the file (by tensor name) on each int8 image of ``xq``, one invoke
    per image (batch 1), stacked."""
    inp, outs = interp.get_input_details()[0], interp.get_output_details()
    got: dict[str, list[np.ndarray]] = {d["name"]: [] for d in outs}
    for x in xq:
        interp.set_tensor(inp["index"], x[None])
        interp.invoke()
        for d in outs:
            got[d["name"]].append(interp.get_tensor(d["index"]).copy())
    return {n: np.concatenate(v) for n, v in got.items()}


# -- quantization-aware fine-tuning -------------------------------------------------------------


class _FoldedFakeQuant(nn.Module):
    """A conv/linear weight as trained, through a per-channel symmetric fake-quant of the
    weight with its (frozen) BatchNorm folded in: what the file stores."""

    def __init__(self, bn: nn.BatchNorm2d | None):
        super().__init__()
        self.bn = [bn]  # a list: not a submodule (its parameters stay the model's)
        self.fq = tq.FakeQuantize(observer=tq.MovingAveragePerChannelMinMaxObserver,
                                  averaging_constant=1.0, quant_min=-127, quant_max=127,
                                  dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                  ch_axis=0)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        bn = self.bn[0]
        if bn is None:
            return self.fq(w)
        scale = (bn.running_var + bn.eps).rsqrt()
        if bn.affine:
            scale = scale * bn.weight
        scale = scale.reshape(-1, *([1] * (w.dim() - 1)))
        return self.fq(w * scale) / scale


class QuantAware:
    """Within ``with QuantAware(model, shape):`` the model trains and runs with int8 fake-quant
    on the file's scheme: weights per channel (BN folded, frozen), each layer's output
    per tensor (moving min/max). Leaving restores the plain float model, trained."""

    def __init__(self, model: nn.Module, input_shape: Shape):
        self.model, self.input_shape = model, input_shape

    @contextlib.contextmanager
    def _bn_frozen(self) -> Iterator[None]:
        bns = [m for m in self.model.modules() if isinstance(m, nn.BatchNorm2d)]
        train = self.model.train

        def keep_frozen(mode: bool = True) -> nn.Module:
            train(mode)
            for m in bns:  # the folded scale must be the running statistics the file uses
                m.eval()
            return self.model

        self.model.train = keep_frozen  # type: ignore[method-assign]
        try:
            yield
        finally:
            del self.model.train

    def __enter__(self) -> nn.Module:
        net, folded = trace_modules(self.model, self.input_shape, "qat")
        modules = dict(self.model.named_modules())
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(self._bn_frozen())
        self._weighted: list[nn.Module] = []
        for node in net.nodes:
            mods = [modules[m] for m in folded[node.name] if m in modules]
            if not mods:
                continue  # functional ops (adds, flatten): their output is not fake-quantized
            for m in mods:
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    bn = next((b for b in mods if isinstance(b, nn.BatchNorm2d)), None)
                    parametrize.register_parametrization(m, "weight", _FoldedFakeQuant(bn))
                    self._weighted.append(m)
            self._stack.callback(mods[-1].register_forward_hook(_act_hook()).remove)
        self._stack.callback(self.model.register_forward_pre_hook(_input_hook()).remove)
        self.model.train()
        return self.model

    def __exit__(self, *exc: object) -> None:
        for m in self._weighted:
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)
        self._stack.close()


def _act_fq() -> tq.FakeQuantize:
    return tq.FakeQuantize(observer=tq.MovingAverageMinMaxObserver, quant_min=-128,
                           quant_max=127, dtype=torch.qint8, qscheme=torch.per_tensor_affine)


def _act_hook() -> Callable[..., torch.Tensor]:
    fq = _act_fq()
    return lambda _m, _inp, out: fq(out)


def _input_hook() -> Callable[..., tuple]:
    fq = _act_fq()
    return lambda _m, args: (fq(args[0]), *args[1:])
