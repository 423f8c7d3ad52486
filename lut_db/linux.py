"""The tool needs Linux: LUT files are locked with ``fcntl.flock`` and host timing pins
the process to cores with ``os.sched_setaffinity``. Elsewhere those paths stop with one
message instead of an AttributeError or ImportError."""

from __future__ import annotations

import sys

from lut_db.errors import UserError


class NeedsLinux(UserError):
    """A Linux-only path (the LUT writer lock, core pinning) reached on another OS."""


def require_linux() -> None:
    if not sys.platform.startswith("linux"):
        raise NeedsLinux(f"netadapt-farm runs on Linux only (this is {sys.platform}): it locks "
                         "LUT files with fcntl.flock and pins timing to cores with "
                         "os.sched_setaffinity; use a Linux machine, WSL 2 or a Linux "
                         "container")
