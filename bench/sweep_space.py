"""What a sweep covers: the families, resolutions, width grid and dtype whose layer shapes
it measures, and how a LUT version records them (``space["sweeps"]``)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench import zoo
from bench.runners.base import RunnerError
from lut_db.spec import DTYPES, LayerSpec


@dataclass(frozen=True)
class SweepSpace:
    """What a sweep covers: every layer shape of these families' width configs."""

    families: tuple[str, ...]
    resolutions: tuple[int, ...] = (224,)
    grid: int = 32
    classes: int = 1000
    dtype: str = "float32"  # every key's dt: an int8 sweep holds int8 keys only

    def specs(self) -> set[LayerSpec]:
        if not self.families:
            raise RunnerError(f"the space names no family (known: {', '.join(zoo.FAMILIES)})")
        if min(self.grid, self.classes, *self.resolutions) <= 0:
            raise RunnerError("grid, classes and resolutions must be positive")
        if self.dtype not in DTYPES:
            raise RunnerError(f"dtype {self.dtype!r}: expected one of {', '.join(DTYPES)}")
        out: set[LayerSpec] = set()
        for r in self.resolutions:
            for f in self.families:
                out |= zoo.shape_space(zoo.family(f), r, self.grid, self.classes)
        return {replace(s, dtype=self.dtype) for s in out}

    def descriptor(self) -> dict[str, Any]:
        """How the version records it (``space["sweeps"]``)."""
        return {"families": list(self.families), "resolutions": list(self.resolutions),
                "grid": self.grid, "classes": self.classes, "dtype": self.dtype}

    def describe(self) -> str:
        dtype = "" if self.dtype == "float32" else f", {self.dtype}"  # float32: as before
        return f"{', '.join(self.families)} at {list(self.resolutions)} px, grid {self.grid}{dtype}"

    def command(self, device: str, lut: Path | str, backend: str | None = None) -> str:
        """The `netadapt lut` call that sweeps this space on ``device`` into ``lut``."""
        words = ["netadapt", "lut", "--device", device, *(["--backend", backend] if backend
                                                          else []),
                 "--lut", str(lut), "--space", ",".join(self.families)]
        for r in self.resolutions:
            words += ["--resolution", str(r)]
        words += ["--grid", str(self.grid), "--classes", str(self.classes)]
        if self.dtype != "float32":
            words += ["--dtype", self.dtype]
        return shlex.join(words)
