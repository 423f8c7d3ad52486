"""The Python API (`netadapt`): each verb's call takes the verb's options by the same names
and defaults, gives what the verb's --json prints, and refuses an argument out of range
before any work."""

from __future__ import annotations

import enum
import inspect
import json
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

import netadapt
from netadapt_cli.main import app

# verb -> its call; the CLI-only options: output (--json, --quiet) and old spellings
CALLS = {"lut": netadapt.build_lut, "calibrate": netadapt.calibrate,
         "estimate": netadapt.estimate, "measure": netadapt.measure,
         "report": netadapt.report, "adapt": netadapt.adapt}
CLI_ONLY = {"json", "quiet", "help", "db", "fine_widths"}
API_ONLY = {"log", "progress"}


def _options(verb: str) -> dict[str, Any]:
    """The verb's options as keyword names (--no-measure: no_measure), with their defaults."""
    cmd = typer.main.get_command(app).commands[verb]  # type: ignore[attr-defined]
    ctx = cmd.context_class(cmd, info_name=verb)
    return {p.opts[0].lstrip("-").replace("-", "_"): p.default
            for p in cmd.get_params(ctx) if p.opts and p.opts[0].startswith("--")}


def _plain(value: Any) -> Any:
    """A CLI default as the API spells it: enums as their values, paths as text, a
    repeatable option's one default as itself."""
    if isinstance(value, list | tuple) and len(value) == 1:
        value = value[0]
    if isinstance(value, enum.Enum):
        return value.value
    return str(value) if isinstance(value, Path) else value


@pytest.mark.parametrize("verb", sorted(CALLS))
def test_each_keyword_is_the_option_of_the_same_name(verb: str) -> None:
    options = {k: v for k, v in _options(verb).items() if k not in CLI_ONLY}
    params = inspect.signature(CALLS[verb]).parameters
    keywords = {k: p.default for k, p in params.items() if k not in API_ONLY}
    assert set(options) == set(keywords)
    differ = {k: (_plain(options[k]), keywords[k]) for k in options
              if keywords[k] is not inspect.Parameter.empty
              and _plain(options[k]) != _plain(keywords[k])}
    assert differ == {}, "defaults differ between the CLI and the API (cli, api)"


def test_the_cli_prints_what_the_call_returns(fixed_lut) -> None:
    _, path, res = fixed_lut
    args = {"model": "mobilenet_v1", "width": 0.5, "resolution": res, "classes": 10}
    got = netadapt.estimate(path, **args, raw=True)
    assert got.total_ms == pytest.approx(got.estimate.raw_total_ms)
    assert got.network.name == "mobilenet_v1_x0.5_32"
    words = [f"--{k.replace('_', '-')}={v}" for k, v in args.items()]
    cli = CliRunner().invoke(app, ["estimate", "--lut", str(path), *words, "--raw", "--json"])
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.stdout) == json.loads(json.dumps(got.to_dict()))


@pytest.mark.parametrize("call,kwargs,message", [
    (netadapt.build_lut, {"grid": 0}, "--grid must be positive, got 0"),
    (netadapt.build_lut, {"resolution": [32, -32]}, "--resolution must be positive, got -32"),
    (netadapt.build_lut, {"resolution": []}, "give at least one --resolution"),
    (netadapt.build_lut, {"batch_size": 0}, "--batch-size must be positive, got 0"),
    (netadapt.build_lut, {"calibration_networks": 3},
     "--calibration-networks must be at least 8"),
    (netadapt.calibrate, {"networks": 3}, "--networks must be at least 8"),
    (netadapt.build_lut, {"space": ["mobilenet_v1", "mobilenet_v9"]},
     "--space 'mobilenet_v1,mobilenet_v9' names mobilenet_v9 (known: mobilenet_v1, "),
    (netadapt.build_lut, {"space": " , "}, "names no family"),
    (netadapt.calibrate, {"networks": 0}, "--networks and --passes must be at least 1"),
    (netadapt.report, {"networks": 2}, "--networks must be at least 3"),
    (netadapt.measure, {"passes": 0, "model": "mobilenet_v1"}, "--passes and --max-repeats"),
])
def test_an_argument_out_of_range_is_refused_before_any_work(tmp_path: Path, call, kwargs,
                                                             message: str) -> None:
    lut = tmp_path / "x.db"
    first = {} if call is netadapt.measure else {"lut": lut}
    with pytest.raises(netadapt.OptionError, match=message.replace("(", r"\(")):
        call(**first, **kwargs)
    assert not list(tmp_path.iterdir())  # no LUT file, no report folder


def test_adapt_refuses_bad_multipliers_before_opening_anything(tmp_path: Path) -> None:
    for bad, message in (("0.5,x", "numbers separated by commas"), ("0.5,2", r"in \(0, 1\]"),
                         ((), r"in \(0, 1\]")):
        with pytest.raises(netadapt.OptionError, match=message):
            netadapt.adapt("mobilenet_v1", tmp_path / "none.db", multipliers=bad,
                           runs_dir=tmp_path / "runs")
    assert not list(tmp_path.iterdir())


def test_netadapt_for_your_own_training_loop_is_here_too() -> None:
    import adapter

    assert netadapt.NetAdapt is adapter.NetAdapt and "NetAdapt" in netadapt.__all__
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        netadapt.Nope  # noqa: B018
