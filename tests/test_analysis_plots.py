"""analysis.plots: every figure renders to a decodable PNG, and no data never draws blank."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from analysis import plots, report_metrics


def _decode(p: plots.Plot) -> Image.Image:
    assert p.png is not None and p.empty == ""
    im = Image.open(io.BytesIO(p.png))
    im.load()
    assert im.width > 300 and im.height > 200
    return im


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    m = rng.uniform(500, 8000, 20)
    fams = ["mobilenet_v1"] * 8 + ["mobilenet_v2"] * 8 + ["resnet_style"] * 4
    return m, m * rng.normal(1, 0.05, 20), fams, [f == "resnet_style" for f in fams]


def test_scatter_residuals_and_macs(data):
    m, p, fams, ho = data
    _decode(plots.estimated_vs_measured(m, {"naive": p * 0.85, "corrected": p}, fams, ho))
    _decode(plots.residuals({"naive": 100 * (p / m - 1)}))
    _decode(plots.macs_vs_latency(m * 1e5, m, fams, ho, lut_r=0.99))


def test_heatmap_profile_and_compare():
    pts = [(c, o, 0.01 * c * o, c * o * 196) for c in (32, 64, 96) for o in (32, 64, 128)]
    _decode(plots.lut_heatmap(pts, "1x1 conv2d at 14x14"))
    layers = [{"node": f"l{i}", "lut_us": 100.0 + i, "profile_us": 110.0 + i} for i in range(6)]
    _decode(plots.layer_profile({"network": "n", "method": "prefix differencing",
                                 "layers": layers}))
    # with the calibration's per-layer estimate: a third bar per layer
    prof = report_metrics.with_calibrated({"network": "n", "layers": layers}, [105.0 + i for i in range(6)])
    assert [x["calibrated_us"] for x in prof["layers"]] == [105.0 + i for i in range(6)]
    _decode(plots.layer_profile(prof))
    assert "calibrated_us" not in report_metrics.with_calibrated({"layers": layers}, [1.0])["layers"][0]
    a = {f"k{i}": 10.0 + i for i in range(30)}
    b = {k: 2 * v for k, v in a.items()}
    _decode(plots.compare_versions({f"conv2d:{k}": v for k, v in a.items()},
                                   {f"conv2d:{k}": v for k, v in b.items()}, "cpu", "gpu"))


def test_no_data_says_why():
    cases = [plots.estimated_vs_measured([], {}, [], []), plots.residuals({}),
             plots.macs_vs_latency([1.0], [1.0], ["x"], [False]),
             plots.lut_heatmap([], "1x1 conv2d"), plots.layer_profile(None),
             plots.compare_versions({"a": 1.0}, {"b": 1.0}, "A", "B")]
    for p in cases:
        assert p.png is None and p.empty, p.name
    assert "0 key(s) in common" in cases[-1].empty
