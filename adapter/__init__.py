"""NetAdapt on torch models against a device's LUT.

``NetAdapt`` (``adapter.netadapt``) is loaded on first use: the CLI imports this package's
light modules (``errors``, ``pick``) without torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["NetAdapt"]


def __getattr__(name: str) -> Any:
    if name == "NetAdapt":
        from adapter.netadapt import NetAdapt

        return NetAdapt
    raise AttributeError(f"module 'adapter' has no attribute {name!r}")
