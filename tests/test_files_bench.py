"""benchmarks/files_bench.py: skips clearly without TensorFlow; its ratios and scores."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from benchmarks import files_bench as fb


def test_skips_without_a_tensorflow_python(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NETADAPT_TF_PYTHON", raising=False)
    out: dict = {}
    fb.run(out, None, work=tmp_path)
    assert "NETADAPT_TF_PYTHON" in out["skipped"] and "--tf-python" in out["skipped"]
    assert list(tmp_path.iterdir()) == []  # nothing built, nothing measured
    out = {}
    fb.run(out, str(tmp_path / "no-such-python"), work=tmp_path)
    assert "skipped" in out


def test_tf_python_from_the_environment(monkeypatch, tmp_path: Path) -> None:
    python = tmp_path / "python"
    python.write_text("")
    monkeypatch.setenv("NETADAPT_TF_PYTHON", str(python))
    assert fb.tf_python(None) == str(python)
    assert fb.tf_python(str(tmp_path / "other")) is None  # given wins, and must exist


def test_build_ratios_in_all_and_per_adjacent_pair() -> None:
    builds = [{"dtype": "float32", "sweep_s": 60.0, "calibration_s": 30.0, "total_s": 90.0},
              {"dtype": "int8", "sweep_s": 66.0, "calibration_s": 24.0, "total_s": 90.0},
              {"dtype": "int8", "sweep_s": 54.0, "calibration_s": 18.0, "total_s": 72.0},
              {"dtype": "float32", "sweep_s": 60.0, "calibration_s": 30.0, "total_s": 90.0}]
    r = fb.ratios(builds)
    assert r["int8_over_float_sweep_s"] == 1.0
    assert r["int8_over_float_calibration_s"] == pytest.approx(0.7)
    assert r["int8_over_float_total_s"] == pytest.approx(0.9)
    assert r["pairs_total_s"] == [1.0, 0.8]


def test_scores_count_files_within_each_band() -> None:
    rows = [{"file": "a", "error_pct": 4.9, "error_drift_out_pct": -1.0, "raw_error_pct": -20.0},
            {"file": "b", "error_pct": -7.0, "error_drift_out_pct": 12.0, "raw_error_pct": -9.0},
            {"file": "a_int8", "error_pct": 11.0, "error_drift_out_pct": 0.0,
             "raw_error_pct": 3.0}]
    s = fb._scores(rows)
    assert s["error_pct.float32"] == {"within_5": 1, "within_10": 2, "of": 2, "max_abs": 7.0}
    assert s["error_drift_out_pct.float32"]["within_10"] == 1
    assert s["error_pct.int8"] == {"within_5": 0, "within_10": 0, "of": 1, "max_abs": 11.0}


def test_held_out_files_are_scored_apart_per_dtype() -> None:
    names = ["keras_mobilenet_v1_x0.5", "keras_resnet_style_x1.0", "keras_vgg_style_x0.5",
             "keras_resnet_style_x0.75_int8", "keras_vgg_style_x1.0_int8"]
    assert [fb._held_out(n) for n in names] == [False, True, True, True, True]
    est = {n: SimpleNamespace(total_us=e) for n, e in zip(names, (100, 104, 88, 50, 51))}
    timed = {n: SimpleNamespace(latency_us=100.0, repeats_us=[99.0, 100.0, 101.0])
             for n in names}
    rows = [{"file": n, "error_pct": est[n].total_us - 100.0, "error_drift_out_pct": 0.0,
             "raw_error_pct": 0.0} for n in names if fb._held_out(n)]
    s = fb._scored(rows, est, timed)
    assert [r["file"] for r in s["rows"]] == names[1:]
    assert s["error_pct.float32"] == {"within_5": 1, "within_10": 1, "of": 2, "max_abs": 12.0}
    assert s["error_pct.int8"]["of"] == 2 and s["error_pct.int8"]["max_abs"] == 50.0
    assert s["limits"]["float32"]["estimate"]["n"] == 2
    assert s["limits"]["int8"]["estimate"]["bias_pct"] < -40  # half the measured latency
