"""A sysfs tree for a loopback phone: its shell reads this machine's files, so a config
whose ``[adb] sysfs`` names this folder makes the phone report what the tree holds
instead of this machine's /sys."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

CPU = ("devices", "system", "cpu")


def write_cpu_caches(root: Path, caches: Mapping[int, Sequence[tuple[int, str, str]]]) -> Path:
    """``root`` with each core's caches, ``{cpu: [(level, type, size), ...]}`` (type Data,
    Instruction or Unified; size as the kernel writes it, e.g. "512K"), at
    ``devices/system/cpu/cpuN/cache/indexM/``; returns ``root``."""
    for cpu, listed in caches.items():
        for i, (level, kind, size) in enumerate(listed):
            index = root.joinpath(*CPU, f"cpu{cpu}", "cache", f"index{i}")
            index.mkdir(parents=True, exist_ok=True)
            for name, value in (("level", level), ("type", kind), ("size", size)):
                (index / name).write_text(f"{value}\n")
    return root
