"""analysis.report* and `netadapt report`: numbers, files, the page, and the bad inputs."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import time
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from analysis import report as rep
from analysis.report_build import ReportError, build
from analysis.report_html import to_html
from analysis.report_metrics import Compare
from analysis.report_words import verdict_sentences
from lut_db.calibration import V3
from lut_db.store import LutStore
from netadapt_cli.main import app
from tests.fakes import make_lut

cli = CliRunner()


def test_report_files_and_numbers(report_folder: Path):
    assert report_folder.parts[-2:] == ("fake", "1")
    files = {p.name for p in report_folder.iterdir()}
    assert {"index.html", "report.md", "metrics.json", "scatter.png", "residuals.png",
            "macs.png", "heatmap.png"} <= files
    assert "profile.png" not in files  # never measured: no image, a message instead
    m = json.loads((report_folder / "metrics.json").read_text())
    assert m["version"] == "fake@1" and m["device"] == "fake"
    # one in-network model: the version's calibration, beside the plain sum's steps, and
    # re-levelled by its own networks measured in the same session
    assert set(m["predictors"]) == {"naive", "overhead", "drift", "calibrated",
                                    "calibrated_drift", "calibrated_anchored"}
    # the fake device's time is its models' bytes, i.e. their weights: of the two eviction
    # rules the fit compares out of fold, weights alone (v3) wins there
    assert "correction" not in m and m["calibration"].startswith(f"{V3} fitted on 16")
    naive = m["predictors"]["naive"]["in_space"]
    unseen = m["predictors"]["calibrated"]["unseen"]
    # FakeRunner's whole networks run 30 % over their layers (less each layer model's own
    # fixed size): the sum reads low, the calibration fitted on other networks recovers it.
    assert naive["mean_error_pct"] < -5
    assert 0 < unseen["n"] < naive["n"]  # the networks it was fitted on are left out
    assert unseen["within_10pct"] == 1 and abs(unseen["mean_error_pct"]) < 3
    assert unseen["ci"]["pearson_r"][0] <= unseen["pearson_r"] <= unseen["ci"]["pearson_r"][1]
    assert m["macs"]["in_space"]["n"] == naive["n"]
    v = m["verdict"]
    assert v["predictor"] == "calibrated" and v["n"] == unseen["n"]
    assert v["held_out_n"] == m["predictors"]["calibrated"]["held_out"]["n"] > 0
    assert len(m["networks"]) == 30 and m["generated_s"] < 30


def test_limits_of_agreement_stand_beside_repeatability(report_folder: Path):
    m = json.loads((report_folder / "metrics.json").read_text())
    lim = m["limits"]
    assert lim["predictor"] == "calibrated" and set(lim["groups"]) >= {"unseen", "held_out"}
    a = lim["groups"]["unseen"]
    assert a["estimate"]["n"] == m["predictors"]["calibrated"]["unseen"]["n"]
    assert a["estimate"]["lower_pct"] <= a["estimate"]["bias_pct"] <= a["estimate"]["upper_pct"]
    # each network measured twice (FakeRunner: the same both times): limits of zero width
    assert a["repeatability"]["repeats"] == 2 and a["repeatability"]["upper_pct"] == 0
    assert m["verdict"]["limits"] == a and m["verdict"]["held_out_limits"]
    assert m["verdict"]["state_recorded"] is False  # the FakeRunner knows no machine
    assert all(len(n["repeats_ms"]) == 2 for n in m["networks"])
    md = (report_folder / "report.md").read_text()
    assert "## Limits of agreement (log latency, 95 %)" in md
    assert "Limits of agreement (log latency, 95 %): estimate vs measured: bias" in md
    assert "The machine's state was not recorded" in md
    assert "Ground truth: each network measured 2 times at separate moments" in md
    page = (report_folder / "index.html").read_text()
    assert "<h3>Limits of agreement (log latency, 95 %)" in page


def test_html_is_self_contained_and_leads_with_the_verdict(report_folder: Path):
    page = (report_folder / "index.html").read_text()
    assert page.count("data:image/png;base64,") == 4  # the profile was not measured
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)
    assert "<script" not in page and "<link" not in page and "<style>" in page
    verdict, plots, table = (page.index('class="verdict'), page.index("<figure"),
                             page.index("<h2>Networks"))
    assert verdict < plots < table
    assert "No data:" in page and "per-layer profile was measured" in page
    # the column the verdict quotes is marked, and the old per-op-class model is gone
    assert page.count('<th class="head">') == 1
    assert 'class="head">calibrated estimate (as netadapt estimate prints) (unseen)' in page
    assert "correction" not in page


def test_html_escapes_what_it_is_given(validated):
    """Names, families and notes arrive escaped: the page renders with autoescape on."""
    store, version = validated
    report = build(store, version, n_boot=0)
    report.rows[0]["name"] = "<script>alert(1)</script>"
    report.notes.append("a < b & c")
    page = to_html(report)
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "a &lt; b &amp; c" in page


def test_the_templates_ship_with_the_package():
    repo = Path(__file__).resolve().parent.parent
    tool = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = tool["package-data"]["analysis"]
    templates = [p.relative_to(repo / "analysis").as_posix()
                 for p in (repo / "analysis" / "templates").iterdir()]
    assert {"templates/report.html", "templates/report.css"} <= set(templates)
    assert all(any(fnmatch.fnmatch(t, pat) for pat in patterns) for t in templates)


def test_a_version_without_calibration_leads_with_the_aligned_sum(validated, monkeypatch):
    store, version = validated
    monkeypatch.setattr(store, "calibration", lambda v: None)
    report = build(store, version, n_boot=0)
    m = report.metrics
    assert set(m["predictors"]) == {"naive", "overhead", "drift"} and m["calibration"] is None
    assert m["verdict"]["predictor"] == m["limits"]["predictor"] == "drift"
    said = verdict_sentences(report)
    assert said[0].endswith("Estimate: the sum of LUT entries aligned for overhead and drift.")
    assert any(s.startswith("fake@1 has no calibration") and "netadapt calibrate --lut" in s
               for s in said)
    assert "drift_err_pct" in report.rows[0] and "calibrated_ms" not in report.rows[0]
    page = to_html(report)
    assert "<th>aligned ms</th>" in page
    assert 'class="head">+ device drift since the LUT (in space)' in page


def test_markdown_references_the_written_images(report_folder: Path):
    md = (report_folder / "report.md").read_text()
    assert md.startswith("# Validation of ")
    for name in ("scatter", "residuals", "macs", "heatmap"):
        assert f"]({name}.png)" in md
    assert "**No data:**" in md


def test_report_of_60_networks_is_quick(validated, tmp_path):
    store, version = validated
    start = time.perf_counter()
    rep.write(build(store, version), tmp_path / "r")
    assert time.perf_counter() - start < 30


def test_compare_two_versions(validated, tmp_path):
    store, version = validated
    other = LutStore.open(tmp_path / "other.db", create=True)
    o = other.create_version("fake2", "tflite-gpu", {"device": "fake2"})
    keys = sorted(store.table(version))[:50]
    other.add_results(o, [(k, _timing(store.table(version)[k] * 2)) for k in keys])
    other.seal(o)
    r = build(store, version, Compare("fake2@1", other.table(o)), n_boot=0)
    assert r.metrics["compare"]["common_keys"] == 50
    assert r.metrics["compare"]["median_ratio"] == pytest.approx(2.0)
    assert any(p.name == "compare" and p.png for p in r.plots)


def _timing(us: float):
    from bench.runners.base import Timing

    return Timing.from_samples([us, us, us])


def test_compare_without_common_keys_is_refused(validated, tmp_path):
    store, version = validated
    other = LutStore.open(tmp_path / "other.db", create=True)
    o = other.create_version("x", "tflite-cpu", {})
    other.add_results(o, [("add:in=1x1x7,act=none,dt=float32", _timing(1.0))])
    with pytest.raises(ReportError, match="no layer keys in common"):
        build(store, version, Compare("x@1", other.table(o)))


def test_a_version_without_validations(tmp_path):
    store, version = make_lut(tmp_path / "fresh.db")
    with pytest.raises(ReportError, match="no validations yet"):
        build(store, version)


def test_unwritable_report_folder(report_folder: Path, validated, tmp_path):
    store, version = validated
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the folder should be")
    with pytest.raises(ReportError, match="cannot write the report to"):
        rep.write(build(store, version, n_boot=0), blocker)


# -- the command ---------------------------------------------------------------------------------


def test_cli_report_from_stored_validations(validated, tmp_path):
    store, _version = validated
    out = tmp_path / "reports"
    res = cli.invoke(app, ["report", "--lut", f"{store.path}@1", "--networks", "30",
                           "--no-measure", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "networks the calibration was not fitted on" in res.output and "0 network(s) measured now" in res.output
    assert (out / "fake" / "1" / "index.html").exists()


def test_cli_report_as_json(validated, tmp_path):
    """--json: stdout is the report's metrics and files alone; the verdict goes to stderr."""
    store, _version = validated
    out = tmp_path / "reports"
    res = cli.invoke(app, ["report", "--lut", f"{store.path}@1", "--networks", "30",
                           "--no-measure", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["measured"] == 0 and data["html"] == str(out / "fake" / "1" / "index.html")
    assert data["metrics"] == json.loads((out / "fake" / "1" / "metrics.json").read_text())
    assert "networks the calibration was not fitted on" in res.stderr


def test_cli_no_validations_and_no_device(tmp_path):
    store, _ = make_lut(tmp_path / "fresh.db")
    res = cli.invoke(app, ["report", "--lut", str(store.path), "--out", str(tmp_path / "r")])
    assert res.exit_code == 1
    assert "no device to measure on" in res.output  # "fake" has no device config
    assert "0 of the" in res.output and "Traceback" not in res.output


def test_cli_no_sweep_stops_with_the_command(configs, tmp_path):
    """--no-sweep: the keys the validation networks need and the LUT lacks stop the report
    before anything is measured (this test may not time anything on the host)."""
    store, version = make_lut(tmp_path / "fresh.db")
    store.close()
    res = cli.invoke(app, ["report", "--lut", str(store.path), "--device", "fast",
                           "--networks", "12", "--no-sweep", "--out", str(tmp_path / "r")])
    assert res.exit_code == 1 and "Traceback" not in res.output
    out = " ".join(res.output.split())
    assert "fake@1 lacks" in out and "--no-sweep measures none" in out
    assert out.endswith(f"netadapt report --lut {store.path}@1 --device fake --backend "
                        "tflite-cpu --networks 12")
    with LutStore.open(store.path) as again:
        assert [v.id for v in again.versions()] == [version.id]


def test_cli_compare_without_common_keys(validated, tmp_path):
    store, _ = validated
    other = LutStore.open(tmp_path / "other.db", create=True)
    o = other.create_version("x", "tflite-cpu", {})
    other.add_results(o, [("add:in=1x1x7,act=none,dt=float32", _timing(1.0))])
    other.seal(o)
    res = cli.invoke(app, ["report", "--lut", str(store.path), "--no-measure",
                           "--compare", str(other.path), "--out", str(tmp_path / "r")])
    assert res.exit_code == 1 and "no layer keys in common" in res.output


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_cli_unwritable_folder_as_user(validated, tmp_path):
    store, _ = validated
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    res = cli.invoke(app, ["report", "--lut", str(store.path), "--no-measure", "--out", str(ro)])
    assert res.exit_code == 1 and "cannot write the report" in res.output


def test_cli_unwritable_folder(validated, tmp_path):
    store, _ = validated
    blocker = tmp_path / "blocked"
    blocker.write_text("not a folder")
    res = cli.invoke(app, ["report", "--lut", str(store.path), "--no-measure",
                           "--out", str(blocker)])
    assert res.exit_code == 1 and "cannot write the report to" in res.output


@pytest.mark.any_load  # versions, counts and the predictor: not what the timings say
@pytest.mark.sweep
def test_cli_report_measures_for_real(configs, tmp_path):
    """`netadapt lut` then `netadapt report` on the host (a fast config, a tiny space). The
    calibration on the fewest networks that still include other resolutions (MIN_OTHER,
    their keys measured into a derived version): its 40 by default cost most of the test."""
    from analysis.calibrate import MIN_OTHER

    db = tmp_path / "fast.db"
    res = cli.invoke(app, ["lut", "--device", "fast", "--space", "mobilenet_v1",
                           "--resolution", "32", "--grid", "256", "--classes", "10",
                           "--calibration-networks", str(MIN_OTHER), "--lut", str(db)])
    assert res.exit_code == 0, res.output
    out = tmp_path / "reports"
    res = cli.invoke(app, ["report", "--lut", str(db), "--networks", "8", "--passes", "2",
                           "--repeats", "1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "network(s) measured now" in res.output
    # the calibration measured its other-resolution keys into fast@2, derived from fast@1
    m = json.loads((out / "fast" / "2" / "metrics.json").read_text())
    assert m["predictors"]["naive"]["all"]["n"] >= 8
    assert m["verdict"]["predictor"] == "calibrated"
    again = cli.invoke(app, ["report", "--lut", str(db), "--networks", "8", "--passes", "2",
                             "--repeats", "1", "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert "0 network(s) measured now" in again.output


@pytest.mark.any_load  # stale or not, the exit code follows; counts and fields otherwise
@pytest.mark.sweep
def test_lut_check_cli(configs, tmp_path):
    from analysis.calibrate import MIN_NETWORKS

    db = tmp_path / "fast.db"  # the smallest calibration: lut check times its networks too
    assert cli.invoke(app, ["lut", "--device", "fast", "--space", "mobilenet_v1",
                            "--resolution", "32", "--grid", "256", "--classes", "10",
                            "--calibration-networks", str(MIN_NETWORKS), "--lut",
                            str(db)]).exit_code == 0
    res = cli.invoke(app, ["lut", "check", "--lut", str(db), "--sample", "8", "--seed", "1",
                           "--json"])
    s = json.loads(res.stdout)  # the JSON only: progress goes to stderr
    assert res.exit_code == (3 if s["stale"] else 0), res.output  # 3: found stale
    assert s["keys"] == 8 and s["seed"] == 1 and s["median_ratio"] > 0
    assert s["machine_state"]["where"] == "host"  # the state the keys were measured in
    assert "re-measuring 8 keys of fast@" in res.stderr and " 8/8 in " in res.stderr
    res = cli.invoke(app, ["lut", "check", "--lut", str(db), "--sample", "5"])
    assert res.exit_code in (0, 3) and "median ratio now / LUT" in res.output
