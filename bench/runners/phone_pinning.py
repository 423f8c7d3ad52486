"""Which of a phone's cores a runner pins its tool to, and the words that do it.

A backend's ``cpus``: a list of CPU numbers, "big" (the cores of the top
cpuinfo_max_freq, read from the cpufreq policies, offline cores counted, only online ones
pinned), "biggest" (the last of those) or "all" (no pinning). ``taskset`` pins and
``timeout`` bounds each run, where the phone has them; a run under the pinning then shows
in its Cpus_allowed_list whether ``taskset`` really pinned.
"""

from __future__ import annotations

from typing import Any

from bench.runners.base import RunnerError
from bench.runners.phone_probe import PhoneInfo


def resolve_cpus(want: Any, info: PhoneInfo, serial: str,
                 fix: str) -> tuple[list[int] | None, list[str]]:
    """(the cores to pin, None for no pinning; notes for the fingerprint). A core that does
    not exist or is offline is a RunnerError ending in ``fix``."""
    if want == "all":
        return None, []
    if isinstance(want, list):
        unknown = [c for c in want if info.cpus and c not in info.cpus]
        if unknown:
            raise RunnerError(f"{serial} has no CPU {unknown} (it has {sorted(info.cpus)}); "
                              f"{fix}")
        offline = [c for c in want if not info.is_online(c)]
        if offline:
            raise RunnerError(f"CPU {offline} of {serial} is offline (online: "
                              f"{cpu_list(info.online)}): taskset cannot pin to it; "
                              f"{fix}, or wake the core before the sweep")
        return sorted(want), []
    big = info.big_cores()
    if not big:
        return None, [f"cpus = {want!r}: no cpufreq on the phone, big cores unknown; not pinned"]
    usable = [c for c in big if info.is_online(c)]
    if not usable:
        raise RunnerError(
            f"the big cores {big} of {serial} are offline (online: "
            f"{cpu_list(info.online)}): pinned there, taskset fails; keep the phone busy "
            f"or unlocked so the kernel brings them up, or {fix}")
    notes = ([f"big cores {big}: {sorted(set(big) - set(usable))} offline"]
             if len(usable) < len(big) else [])
    return (usable[-1:] if want == "biggest" else usable), notes


def pin_prefix(tools: set[str], cpus: list[int] | None,
               timeout_s: float) -> tuple[list[str], list[str]]:
    """(the words before the tool's own argv, notes): ``timeout``, then ``taskset MASK``."""
    prefix = ["timeout", str(int(timeout_s))] if "timeout" in tools else []
    if cpus is None:
        return prefix, []
    if "taskset" not in tools:
        return prefix, ["taskset not found on the phone: not pinned"]
    return prefix + ["taskset", format(sum(1 << c for c in cpus), "x")], []


def check_pinning(pinning: list[str], cpus: list[int] | None, pinned_to: list[int] | None,
                  serial: str, fix: str) -> None:
    """RunnerError when a run under ``pinning`` was allowed other CPUs than ``cpus``."""
    if "taskset" not in pinning or cpus is None:
        return
    if pinned_to != cpus:
        raise RunnerError(
            f"taskset {pinning[-1]} on {serial} left the tool on CPUs "
            f"{cpu_list(set(pinned_to or ()))} instead of {cpus} (Cpus_allowed_list); {fix}")


def cpu_list(cpus: set[int] | None) -> str:
    return ",".join(map(str, sorted(cpus))) if cpus else "unknown"
