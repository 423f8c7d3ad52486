"""Shared fixtures: temp LUT files, a fast host runner."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("NETADAPT_CONFIGS", str(REPO / "device_configs"))


@pytest.fixture
def lut_path(tmp_path: Path) -> Path:
    return tmp_path / "luts" / "host.db"


@pytest.fixture
def fast_runner():
    """A host runner with few runs: for tests that need real timings, not precise ones."""
    from bench.runners.host import HostRunner

    return HostRunner(warmup=1, runs=3, min_time_ms=0.0, max_rounds=1)
