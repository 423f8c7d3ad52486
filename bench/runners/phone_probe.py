"""What one round trip tells about a phone: the probe script and its readers.

The script is POSIX sh in which every path is ``shlex.quote``d: getprop, the cpufreq
policies (which cores share a top frequency, offline ones included), the CPU caches sysfs
lists (``bench.cpu_caches``), which helper tools exist (taskset, timeout, sha256sum, svc), the hashes of files the runner wants there, the
thermal zones and the battery, the screen's stay-awake setting, and the work folder set
up, each printed under its own section. ``PhoneInfo`` is what it found; `netadapt doctor`
reads the same probe (bench.runners.checks judges it).
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field

from bench.cpu_caches import Cache, listing_snippet, parse_listing
from bench.discovery import parse_getprop
from bench.runners.checks import BATTERY_SNIPPET, Battery, parse_battery
from bench.runners.phone_thermal import zone_readings

SECTION = "@@NETADAPT-SECTION"
TOOLS = ("taskset", "timeout", "sha256sum", "md5sum", "svc", "settings")


@dataclass
class PhoneInfo:
    """What a probe found on a phone."""

    props: dict[str, str] = field(default_factory=dict)
    cpus: dict[int, tuple[int | None, str | None]] = field(default_factory=dict)
    tools: set[str] = field(default_factory=set)
    files: dict[str, tuple[str, bool] | None] = field(default_factory=dict)  # (hash, exec)
    online: set[int] | None = None  # None: the kernel does not say
    temps: list[tuple[str, float]] = field(default_factory=list)  # (zone type, C), every zone
    battery: Battery | None = None
    stay_on: str | None = None  # settings global stay_on_while_plugged_in before the sweep
    caches: list[Cache] = field(default_factory=list)  # as sysfs lists them ([]: none)

    def big_cores(self) -> list[int]:
        """The cores of the highest cpuinfo_max_freq, online or not ([] if unknown)."""
        freqs = {c: f for c, (f, _) in self.cpus.items() if f}
        if not freqs:
            return []
        top = max(freqs.values())
        return sorted(c for c, f in freqs.items() if f == top)

    def is_online(self, cpu: int) -> bool:
        return self.online is None or cpu in self.online

    @property
    def abis(self) -> list[str]:
        listed = self.props.get("ro.product.cpu.abilist", "")
        return [a for a in listed.split(",") if a] or [self.props.get("ro.product.cpu.abi", "")]

    @classmethod
    def from_sections(cls, sections: Mapping[str, str], files: tuple[str, ...],
                      stay_on: str | None = None) -> PhoneInfo:
        """The probe script's output, split by ``split_sections(text, SECTION)``."""
        cpus, online = parse_cpus(sections.get("cpus", ""))
        return cls(parse_getprop(sections.get("props", "")), cpus,
                   set(sections.get("tools", "").split()),
                   parse_files(sections.get("files", ""), files), online,
                   zone_readings(sections.get("temps", ""), "probe"),
                   parse_battery(sections.get("battery", "")), stay_on,
                   parse_listing(sections.get("caches", "")))


def probe_script(batches_dir: str, files: tuple[str, ...], temps: str = "",
                 reset: bool = True, sysfs: str = "/sys", stay_awake: bool = False) -> str:
    """The probe (``temps``: the thermal zones' lines; ``reset``: the batches folder made
    and emptied; ``stay_awake``: the old stay-on setting printed, then the screen kept on)."""
    q = shlex.quote
    cpu = q(posixpath.join(sysfs, "devices", "system", "cpu"))
    lines = [
        f"echo '{SECTION} props'; getprop",
        f"echo '{SECTION} cpus'",
        # a policy lists every core it drives (related_cpus), offline ones too; a
        # per-core cpufreq folder vanishes while that core is offline
        (f"for p in {cpu}/cpufreq/policy*; do [ -d \"$p\" ] || continue; "
         "f=$(cat \"$p/cpuinfo_max_freq\" 2>/dev/null) || f=-; "
         "g=$(cat \"$p/scaling_governor\" 2>/dev/null) || g=-; "
         "echo \"policy ${f:--} ${g:--} $(cat \"$p/related_cpus\" 2>/dev/null)\"; done"),
        (f"for c in {cpu}/cpu[0-9]*; do [ -d \"$c\" ] || continue; "
         "f=$(cat \"$c/cpufreq/cpuinfo_max_freq\" 2>/dev/null) || f=-; "
         "g=$(cat \"$c/cpufreq/scaling_governor\" 2>/dev/null) || g=-; "
         "echo \"${c##*/cpu} ${f:--} ${g:--}\"; done"),
        f"[ -r {cpu}/online ] && echo \"online $(cat {cpu}/online)\"",
        f"echo '{SECTION} caches'", listing_snippet(sysfs),
        f"echo '{SECTION} tools'",
        f"for t in {' '.join(TOOLS)}; do command -v \"$t\" >/dev/null 2>&1 && echo \"$t\"; done",
        f"echo '{SECTION} files'",
    ]
    for i, path in enumerate(files):
        f = q(path)
        lines.append(f"if [ -f {f} ]; then h=$(sha256sum {f} 2>/dev/null || md5sum {f} "
                     f"2>/dev/null); x=-; [ -x {f} ] && x=x; echo \"{i} ${{h%% *}}- $x\"; "
                     f"else echo '{i} missing'; fi")
    lines += [f"echo '{SECTION} temps'", temps, f"echo '{SECTION} battery'", BATTERY_SNIPPET]
    if stay_awake:  # the old value first, so cleanup can put it back
        lines += [f"echo '{SECTION} stayon'",
                  "settings get global stay_on_while_plugged_in 2>/dev/null",
                  "svc power stayon usb >/dev/null 2>&1"]
    if reset:
        batches = q(batches_dir)
        lines.append(f"mkdir -p {batches} && rm -rf {batches}/*")
    lines.append(f"echo '{SECTION} end'")
    return "\n".join(lines) + "\n"


def parse_cpus(text: str) -> tuple[dict[int, tuple[int | None, str | None]], set[int] | None]:
    """The probe's CPU lines -> ({cpu: (cpuinfo_max_freq kHz, governor)}, online cores).

    Policies come first and cover offline cores; a core's own line (online cores only)
    fills in what no policy listed (old kernels without policy folders)."""
    cpus: dict[int, tuple[int | None, str | None]] = {}
    online: set[int] | None = None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "policy":
            freq = int(parts[1]) if parts[1].isdigit() else None
            gov = parts[2] if parts[2] != "-" else None
            for c in parts[3:]:
                if c.isdigit():
                    cpus[int(c)] = (freq, gov)
        elif len(parts) == 2 and parts[0] == "online":
            online = parse_cpu_list(parts[1])
        elif len(parts) == 3 and parts[0].isdigit() and int(parts[0]) not in cpus:
            freq = int(parts[1]) if parts[1].isdigit() else None
            cpus[int(parts[0])] = (freq, parts[2] if parts[2] != "-" else None)
    if online is not None:
        for c in online:
            cpus.setdefault(c, (None, None))
    return dict(sorted(cpus.items())), online


def parse_cpu_list(text: str) -> set[int]:
    """A kernel CPU list ("0-3,6", as in /sys/.../online or Cpus_allowed_list) -> set."""
    out: set[int] = set()
    for part in text.strip().split(","):
        lo, sep, hi = part.partition("-")
        if lo.strip().isdigit() and (not sep or hi.strip().isdigit()):
            out.update(range(int(lo), int(hi if sep else lo) + 1))
    return out


def parse_files(text: str, files: tuple[str, ...]) -> dict[str, tuple[str, bool] | None]:
    out: dict[str, tuple[str, bool] | None] = dict.fromkeys(files)
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].isdigit() and int(parts[0]) < len(files):
            out[files[int(parts[0])]] = (parts[1].rstrip("-"), parts[2] == "x")
    return out
