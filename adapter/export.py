"""A trained torch model -> ``.tflite`` holding its weights: what NetAdapt ships.

The model is traced (``adapter.trace``), so the file's layers are exactly the Network
whose LUT keys the search estimated: the latency reported for a network is the latency
of this file. Each node's torch modules give its weights, in eval mode: BatchNorm's
running statistics are folded into the convolution before it (weights scaled, bias
shifted), as the TF converter folds them. Layouts become TFLite's: conv2d OHWI,
depthwise ``[1, kh, kw, C*mult]``, fully connected ``[out, in]`` with its inputs in
NHWC order. The file's input is NHWC (torch's is NCHW); batch 1.

Padding is the model's own: the built-in models pad as TFLite SAME does
(``adapter.same_padding.SameConv2d``); a convolution padding symmetrically where SAME puts the
odd pixel after (stride 2 on an even size, as most torch models do) is traced as an
explicit PAD layer then a VALID convolution, so the file computes what torch computes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from adapter.arch import Architecture
from adapter.errors import AdaptError
from adapter.models import ZooModel
from adapter.same_padding import same_pads
from adapter.trace import Shape, trace_modules
from bench.tflite_build import build_network
from lut_db.network import Network
from lut_db.spec import WEIGHTED, LayerSpec

__all__ = ["export", "export_tflite", "export_weights", "save_exports", "write_tflite"]

Weights = dict[str, np.ndarray]


def export(model: nn.Module, input_shape: Shape | None = None,
           name: str = "exported") -> tuple[Network, bytes]:
    """The traced Network of ``model`` and its ``.tflite`` bytes with the trained weights.

    ``input_shape`` (H, W, C) defaults to the model's ``resolution`` with 3 channels.
    """
    net, weights = export_weights(model, input_shape, name)
    return net, build_network(net, weights=weights)


def export_weights(model: nn.Module, input_shape: Shape | None = None,
                   name: str = "exported") -> tuple[Network, dict[str, Weights]]:
    """The traced Network of ``model`` and each node's weights in TFLite layout (BN folded,
    float32): what ``export`` writes (``adapter.quantize`` writes them at int8)."""
    if input_shape is None:
        if not isinstance(model, ZooModel):
            raise AdaptError(f"{type(model).__name__}: give the input shape (H, W, C) to export")
        input_shape = (model.resolution, model.resolution, 3)
    net, folded = trace_modules(model, input_shape, name)
    modules = dict(model.named_modules())
    weights = {}
    specs = {n.name: n.spec for n in net.nodes}
    for node in net.nodes:
        mods = {m: modules[m] for m in folded[node.name] if m in modules}
        before = specs.get(node.inputs[0]) if node.inputs else None
        pads = before.pads if before is not None and before.op == "pad" else None
        weights[node.name] = _node_weights(node.name, node.spec, mods, pads)
        if node.spec.op in WEIGHTED and not weights[node.name]:  # never random weights
            raise AdaptError(f"cannot export {node.name}: no torch module holds its weights")
    return net, weights


def export_tflite(model: nn.Module, input_shape: Shape | None = None,
                  name: str = "exported") -> bytes:
    """``.tflite`` bytes of ``model`` with its trained weights (see ``export``)."""
    return export(model, input_shape, name)[1]


def write_tflite(model: nn.Module, path: str | Path, input_shape: Shape | None = None,
                 name: str | None = None) -> Network:
    """Write ``model`` as ``.tflite`` to ``path``; returns its Network (the LUT's view)."""
    path = Path(path)
    net, data = export(model, input_shape, name or path.stem)
    path.write_bytes(data)
    return net


def save_exports(model: nn.Module, folder: str | Path, stem: str = "adapted",
                 arch: Architecture | None = None, extra: dict | None = None) -> dict[str, str]:
    """``stem``.pt, ``stem``.tflite and ``stem``.json (its Network) in ``folder``; returns
    their paths as ``{"torch", "tflite", "network"}``. The .pt holds the state dict, the
    built-in model's ``config`` (``adapter.models.rebuild``) and, given ``arch``, what
    ``adapter.arch.load_exported`` rebuilds any model from."""
    folder = Path(folder)
    paths = {"torch": folder / f"{stem}.pt", "tflite": folder / f"{stem}.tflite",
             "network": folder / f"{stem}.json"}
    config = model.config() if isinstance(model, ZooModel) else None
    saved = {"config": config, "state_dict": model.state_dict(), **(extra or {})}
    shape = None
    if arch is not None:
        saved.update(arch=arch.to_dict(), widths=arch.widths(model))
        shape = (arch.resolution, arch.resolution, 3)
    torch.save(saved, paths["torch"])
    net = write_tflite(model, paths["tflite"], shape, name=stem)
    paths["network"].write_text(net.to_json(indent=1))
    return {k: str(v) for k, v in paths.items()}


# -- one node ------------------------------------------------------------------------------


def _node_weights(node: str, spec: LayerSpec, mods: dict[str, nn.Module],
                  pads: tuple[int, int, int, int] | None = None) -> Weights:
    """TFLite weight and bias of one node from its modules (empty for weightless ops);
    ``pads``: those of the explicit PAD layer before it (``adapter.trace``)."""
    for mname, m in mods.items():
        if isinstance(m, (nn.AvgPool2d, nn.MaxPool2d)):
            _check_pool(node, mname, m, spec)
        elif isinstance(m, nn.Conv2d):
            _check_conv_padding(node, mname, m, spec, pads)
            w, b = _fold(m, _bn(mods))
            # torch (O, I/groups, kh, kw); conv2d OHWI, depthwise 1 x kh x kw x O
            w = w.permute(0, 2, 3, 1) if spec.op == "conv2d" else w.permute(1, 2, 3, 0)
            return _as_tflite(w, b, spec)
        elif isinstance(m, nn.Linear):
            h, wd, c = spec.input_shape
            # torch flattens CHW, TFLite HWC: reorder the input columns
            w = m.weight.detach().double().reshape(-1, c, h, wd).permute(0, 2, 3, 1)
            b = m.bias.detach().double() if m.bias is not None else None
            return _as_tflite(w.reshape(spec.cout, -1), b, spec)
    return {}


def _bn(mods: dict[str, nn.Module]) -> nn.BatchNorm2d | None:
    return next((m for m in mods.values() if isinstance(m, nn.BatchNorm2d)), None)


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Conv weight and bias with eval-mode BN folded in (float64, rounded once at the end)."""
    w = conv.weight.detach().double()
    b = conv.bias.detach().double() if conv.bias is not None else None
    if bn is None:
        return w, b
    if bn.running_mean is None:
        raise AdaptError("a BatchNorm2d without running statistics (track_running_stats="
                         "False) normalises with each batch's statistics: it cannot be folded")
    scale = (bn.running_var.double() + bn.eps).rsqrt()
    shift = -bn.running_mean.double()
    if bn.affine:
        scale = scale * bn.weight.detach().double()
    b = (shift if b is None else b + shift) * scale
    if bn.affine:
        b = b + bn.bias.detach().double()
    return w * scale[:, None, None, None], b


def _as_tflite(w: torch.Tensor, b: torch.Tensor | None, spec: LayerSpec) -> Weights:
    out = {"weight": w.contiguous().numpy().astype(np.float32)}
    if spec.bias:  # trace sets it when the layer has a bias or a BN folded in
        out["bias"] = b.numpy().astype(np.float32)
    return out


# -- padding --------------------------------------------------------------------------------


def _tflite_pads(spec: LayerSpec) -> list[tuple[int, int]]:
    """(before, after) per axis that TFLite pads this layer's input with."""
    if spec.padding == "valid":
        return [(0, 0), (0, 0)]
    return [same_pads(n, k, s, d) for n, k, s, d in
            zip((spec.h, spec.w), spec.kernel, spec.stride, spec.dilation)]


def _torch_pads(padding: object) -> list[tuple[int, int]]:
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    return [(int(ph), int(ph)), (int(pw), int(pw))]


def _check_conv_padding(node: str, mname: str, m: nn.Conv2d, spec: LayerSpec,
                        pads: tuple[int, int, int, int] | None = None) -> None:
    if m.padding == "same":  # SameConv2d, or torch's own (stride 1: the odd pixel after)
        return
    got = [(0, 0), (0, 0)] if m.padding == "valid" else _torch_pads(m.padding)
    want = _tflite_pads(spec) if pads is None else [(pads[0], pads[1]), (pads[2], pads[3])]
    if got != want:
        raise AdaptError(
            f"cannot export {node}: module {mname!r} pads {got} (top, bottom), (left, right) "
            f"but TFLite {spec.padding.upper()} pads {want} on its {spec.h}x{spec.w} input, "
            "so the .tflite would compute other numbers; pad as TFLite does (use "
            "adapter.same_padding.SameConv2d for strided convolutions) and retrain")


def _check_pool(node: str, mname: str, m: nn.Module, spec: LayerSpec) -> None:
    # TFLite's padded average excludes the padding and its max pads with -inf; a padded
    # torch pool matches neither in general: only unpadded pools are exported.
    if _tflite_pads(spec) != [(0, 0), (0, 0)] or _torch_pads(m.padding) != [(0, 0), (0, 0)]:
        raise AdaptError(f"cannot export {node}: module {mname!r} is a padded pool; only "
                         "unpadded pooling exports exactly")
