"""adapter.plots: the comparison's figures render from the benchmark's summaries."""

from __future__ import annotations

from pathlib import Path

from adapter import plots


def test_pareto_and_training_curves_render(tmp_path: Path) -> None:
    mult = [{"name": f"x{m}", "ms": 0.6 * m * m, "ms_std": 0.01, "acc": 0.7 + 0.1 * m,
             "acc_std": 0.01} for m in (0.25, 0.5, 0.75, 1.0)]
    ours = [{"name": f"{b}", "ms": 0.6 * b, "acc": 0.78} for b in (0.25, 0.5, 0.75)]
    png = plots.pareto({"NetAdapt": ours, "multipliers": mult}, tmp_path / "p.png", "t")
    curves = plots.training_curves({"initial": [0.5, 0.7, 0.8]}, tmp_path / "c.png", "t")
    for p in (png, curves):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000
