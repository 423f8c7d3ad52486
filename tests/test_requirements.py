"""What the tool needs, said once: Linux (the LUT lock, core pinning) and, for --ray only,
the `cluster` extra; the default install does not pull Ray."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lut_db.linux import NeedsLinux
from lut_db.store import LutStore

REPO = Path(__file__).resolve().parent.parent
MESSAGE = r"netadapt-farm runs on Linux only \(this is darwin\)"


def test_linux_only_paths_stop_with_one_message(monkeypatch, tmp_path: Path) -> None:
    from bench.devices import open_runners
    from bench.runners.host import HostRunner

    with LutStore.open(tmp_path / "x.db", create=True) as store:
        monkeypatch.setattr(sys, "platform", "darwin")
        assert store.versions() == []  # reading a LUT works anywhere
        with pytest.raises(NeedsLinux, match=MESSAGE):
            store.lock()
    with pytest.raises(NeedsLinux, match=MESSAGE):
        HostRunner()
    with pytest.raises(NeedsLinux, match=MESSAGE), open_runners("host"):
        pass


def test_cli_on_another_os(monkeypatch, tmp_path: Path) -> None:
    from netadapt_cli.main import app

    monkeypatch.setattr(sys, "platform", "darwin")
    res = CliRunner().invoke(app, ["measure", "--model", "mobilenet_v1", "--resolution", "32"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "runs on Linux only (this is darwin)" in " ".join(res.output.split())


def test_ray_is_an_optional_extra() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]

    def ray_in(deps: list[str]) -> bool:
        return any(d.split("[")[0].split(">")[0].split("=")[0].strip() == "ray" for d in deps)

    assert not ray_in(project["dependencies"]) and not ray_in(extras["dev"])
    assert ray_in(extras["cluster"])


def test_without_ray_the_message_names_the_extra(monkeypatch) -> None:
    from adapter.errors import AdaptError
    from adapter.executors import RayExecutor

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(AdaptError, match=r"pip install 'netadapt-farm\[cluster\]'"):
        RayExecutor("local", b"")
