"""The CPU caches a device reports about itself, from Linux's sysfs.

Each core lists its caches under ``/sys/devices/system/cpu/cpuN/cache/indexM/`` (``level``,
``size`` such as ``2048K``, ``type``: Data, Instruction or Unified). This machine reads the
files; a phone prints the same through one shell snippet in its probe, so both parse
one listing. The measuring core's data caches go into the fingerprint as ``cache_kb``
(``{"l1d": 48, "l2": 2048, "l3": 491520}``), where the calibration finds the caches that set
its in-network model's window. Many Android kernels list no caches: then the field is
left out, and the calibration fits the cache window as before.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CPU_DIR = ("devices", "system", "cpu")
_UNITS = {"": 1, "K": 1, "M": 1024, "G": 1024 * 1024}


@dataclass(frozen=True)
class Cache:
    cpu: int
    level: int
    type: str  # Data, Instruction or Unified
    size_kb: int


def size_kb(text: str) -> int | None:
    """sysfs's size ("2048K", "1M") in KB; None for anything else."""
    m = re.fullmatch(r"\s*(\d+)\s*([KMG]?)B?\s*", text, re.IGNORECASE)
    return int(m.group(1)) * _UNITS[m.group(2).upper()] if m else None


def parse_listing(text: str) -> list[Cache]:
    """Lines "CPU LEVEL TYPE SIZE" (``listing_snippet``'s output) -> caches; lines that do
    not parse (an unreadable file prints nothing in its place) are skipped."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 4 or not parts[0].isdigit() or not parts[1].isdigit():
            continue
        kb = size_kb(parts[3])
        if kb:
            out.append(Cache(int(parts[0]), int(parts[1]), parts[2], kb))
    return out


def listing_snippet(sysfs: str = "/sys") -> str:
    """POSIX sh printing "CPU LEVEL TYPE SIZE" for every cache of every core."""
    cpu = shlex.quote(posixpath.join(sysfs, *CPU_DIR))
    return (f"for c in {cpu}/cpu[0-9]*; do for i in \"$c\"/cache/index*; do "
            "[ -r \"$i/size\" ] || continue; "
            "echo \"${c##*/cpu} $(cat \"$i/level\" 2>/dev/null) $(cat \"$i/type\" 2>/dev/null) "
            "$(cat \"$i/size\" 2>/dev/null)\"; done; done")


def read_host(sysfs: Path | str = "/sys") -> list[Cache]:
    """This machine's caches, read the way ``listing_snippet`` prints them."""
    lines = []
    for index in sorted(Path(sysfs, *CPU_DIR).glob("cpu[0-9]*/cache/index*")):
        try:
            fields = [(index / f).read_text().strip() for f in ("level", "type", "size")]
        except OSError:
            continue
        lines.append(" ".join([index.parent.parent.name[3:], *fields]))
    return parse_listing("\n".join(lines))


def cache_field(caches: Iterable[Cache], cpus: Sequence[int]) -> dict[str, Any]:
    """The fingerprint's ``cache_kb`` for the first of ``cpus`` that lists caches: each
    level's data cache ("l1d", "l2", "l3"; instruction caches left out). Empty when
    none of them lists any: the field is then absent, as in LUTs from before it."""
    by_cpu: dict[int, dict[str, int]] = {}
    for c in caches:
        if c.type.lower() == "instruction":
            continue
        name = f"l{c.level}" + ("d" if c.type.lower() == "data" else "")
        by_cpu.setdefault(c.cpu, {})[name] = c.size_kb
    for cpu in cpus:
        if by_cpu.get(cpu):
            return {"cache_kb": dict(sorted(by_cpu[cpu].items()))}
    return {}
