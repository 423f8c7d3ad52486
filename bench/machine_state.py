"""The machine's state while it measured: what explains a number beside the number.

A whole-network median moves by 15-45 % when other work runs beside it, and nothing in
the number says so. Every timing run (``bench.timing``, a sweep, a calibration) takes
a ``StateProbe`` from its runner, starts it before the first timed invoke and stops it
after the last one; the ``MachineState`` it returns is stored with the numbers and
says, in one warning line, when the machine was too busy for them (pyperf's model: what
went wrong and how to fix it).

On this machine (``HostProbe``): the load average, the CPU time of other processes
(all CPU time in ``/proc/stat`` less our own process's and its children's, from
``getrusage``), and steal
time (``/proc/stat``; a VM's CPU given to another guest). On a phone (``PhoneProbe``,
one shell round trip at each end): load, CPU busy share and steal from the phone's own
``/proc``, governors and current frequencies, and through the phone runner's own
snippets and parsers (``PhoneExtras``) the watched thermal zones, battery and charging.
Every reader is a parser of text, so tests feed it fixed text and a fake clock.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bench.shell_sections import split_sections

# When the machine counts as busy (any one of these is enough):
OTHER_CORES_BUSY = 0.25  # other processes used more than a quarter of one core on average
STEAL_BUSY = 0.02  # the hypervisor took more than 2 % of the CPUs' time
LOAD_BUSY = 0.5  # runnable tasks beyond our own, on average (1-minute load average; host)
# a session's passes scattered more than this about their networks' medians (a robust sd of
# log time, ``bench.timing.pass_scatter``): a noisy neighbour shows here when load, other
# processes and steal do not (seen here: 8-10 % at a load of 0.3 and 0.7 % steal, where a
# quiet hour gives 3-5 %)
NOISY_SCATTER = 0.06
BATTERY_LOW_PCT = 15  # a phone under this (not charging) may throttle

STAT_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


@dataclass(frozen=True)
class CpuTimes:
    """The ``cpu`` line of /proc/stat, in seconds summed over all CPUs."""

    busy_s: float  # user + nice + system + irq + softirq (guest time is inside user)
    idle_s: float  # idle + iowait
    steal_s: float
    cores: int

    def __sub__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(self.busy_s - other.busy_s, self.idle_s - other.idle_s,
                        self.steal_s - other.steal_s, self.cores)


def parse_proc_stat(text: str, ticks_per_s: float = 100.0) -> CpuTimes | None:
    """The aggregate ``cpu`` line of /proc/stat text (None when absent)."""
    cores = sum(1 for line in text.splitlines() if line.startswith("cpu") and line[3:4].isdigit())
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            v = dict(zip(STAT_FIELDS, (float(x) / ticks_per_s for x in parts[1:])))
            busy = sum(v.get(k, 0.0) for k in ("user", "nice", "system", "irq", "softirq"))
            return CpuTimes(busy, v.get("idle", 0.0) + v.get("iowait", 0.0),
                            v.get("steal", 0.0), max(cores, 1))
    return None


def parse_loadavg(text: str) -> float | None:
    """The 1-minute load average from /proc/loadavg text."""
    try:
        return float(text.split()[0])
    except (IndexError, ValueError):
        return None


@dataclass(frozen=True)
class MachineState:
    """What the machine was doing over one timing run (``wall_s`` long)."""

    where: str  # "host", or a phone's serial
    wall_s: float
    cores: int | None = None
    load_1m: float | None = None  # the higher of the readings at start and end
    own_cpu_s: float | None = None  # our process (host only)
    other_cpu_cores: float | None = None  # other processes, in cores on average (host only)
    busy_share: float | None = None  # every process's share of all cores (phones)
    steal_share: float | None = None  # the hypervisor's share of all cores' time
    steal_s: float | None = None
    phone: dict[str, Any] = field(default_factory=dict)  # temps_c, governors, freqs_khz,
    # battery_pct, charging, hot
    scatter: float | None = None  # the session's own noise (``NOISY_SCATTER``); None: untold

    @property
    def own_cores(self) -> float:
        return self.own_cpu_s / self.wall_s if self.own_cpu_s and self.wall_s > 0 else 0.0

    def reasons(self) -> list[str]:
        """Why the machine counts as busy (empty: quiet, as far as it tells)."""
        out = []
        if self.other_cpu_cores is not None and self.other_cpu_cores > OTHER_CORES_BUSY:
            out.append(f"other processes used {self.other_cpu_cores:.2f} of "
                       f"{self.cores} cores")
        if self.steal_share is not None and self.steal_share > STEAL_BUSY:
            out.append(f"steal time {100 * self.steal_share:.1f} %")
        # host only: a phone's load average counts tasks waiting on I/O, high at rest
        if (self.own_cpu_s is not None and self.load_1m is not None
                and self.load_1m - self.own_cores > LOAD_BUSY):
            out.append(f"load average {self.load_1m:.2f}")
        if self.scatter is not None and self.scatter > NOISY_SCATTER:
            out.append(f"its passes scattered ±{100 * self.scatter:.1f} % about their medians "
                       f"(quiet: under {100 * NOISY_SCATTER:.0f} %)")
        if self.phone.get("hot"):
            out.append(f"the phone ran hot ({self.phone.get('temp_max_c')} C)")
        battery = self.phone.get("battery_pct")
        if battery is not None and battery < BATTERY_LOW_PCT and not self.phone.get("charging"):
            out.append(f"battery at {battery:.0f} % and not charging")
        return out

    @property
    def busy(self) -> bool:
        return bool(self.reasons())

    def warning(self, what: str = "these numbers") -> str | None:
        """One line when the machine was busy, saying what and how to fix it."""
        why = self.reasons()
        if not why:
            return None
        fix = ("let the phone cool down and charge" if self.phone
               else "stop other work and measure again on a quiet machine")
        return (f"warning: {what} were measured while {self.where} was busy "
                f"({'; '.join(why)}): they may be off by 10-45 %; {fix}")

    def describe(self) -> str:
        """The state in one short phrase, for tables and notes."""
        parts = []
        if self.load_1m is not None:
            parts.append(f"load {self.load_1m:.2f}")
        if self.other_cpu_cores is not None:
            parts.append(f"other processes {self.other_cpu_cores:.2f} cores")
        if self.busy_share is not None:
            parts.append(f"CPU busy {100 * self.busy_share:.0f} %")
        if self.steal_share is not None:
            parts.append(f"steal {100 * self.steal_share:.1f} %")
        if self.scatter is not None:
            parts.append(f"passes ±{100 * self.scatter:.1f} %")
        if self.phone.get("temp_max_c") is not None:
            parts.append(f"{self.phone['temp_max_c']:.0f} C")
        if self.phone.get("battery_pct") is not None:
            parts.append(f"battery {self.phone['battery_pct']:.0f} %"
                         + (" charging" if self.phone.get("charging") else ""))
        return f"{self.where} over {self.wall_s:.0f} s: " + (", ".join(parts) or "unknown")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "busy": self.busy, "reasons": self.reasons(),
                "warning": self.warning(), "summary": self.describe()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MachineState:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})


def worst(states: Sequence[MachineState]) -> MachineState | None:
    """The busiest of several runs' states (what a number measured over all of them
    must own up to)."""
    if not states:
        return None
    return max(states, key=lambda s: (len(s.reasons()), s.other_cpu_cores or 0.0,
                                      s.steal_share or 0.0))


# -- probes -------------------------------------------------------------------------------------


class StateProbe(Protocol):
    def start(self) -> None: ...

    def stop(self) -> MachineState | None: ...


def read_text(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def own_cpu_s() -> float:
    """This process's CPU time (all threads) and its finished children's (a profiler run
    in a child process is ours too), user + system."""
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


class HostProbe:
    """This machine's state over a run; readers and clock are injectable (tests)."""

    def __init__(self, read: Callable[[str], str] = read_text,
                 own_cpu: Callable[[], float] = own_cpu_s,
                 clock: Callable[[], float] = time.monotonic,
                 ticks_per_s: float | None = None) -> None:
        self.read, self.own_cpu, self.clock = read, own_cpu, clock
        self.ticks = ticks_per_s or float(os.sysconf("SC_CLK_TCK"))
        self._start: tuple[float, CpuTimes | None, float, float | None] | None = None

    def start(self) -> None:
        self._start = (self.clock(), parse_proc_stat(self.read("/proc/stat"), self.ticks),
                       self.own_cpu(), parse_loadavg(self.read("/proc/loadavg")))

    def stop(self) -> MachineState:
        if self._start is None:
            self.start()
        assert self._start is not None
        t0, cpu0, own0, load0 = self._start
        wall = max(self.clock() - t0, 1e-9)
        cpu1 = parse_proc_stat(self.read("/proc/stat"), self.ticks)
        own = max(self.own_cpu() - own0, 0.0)
        load = _max(load0, parse_loadavg(self.read("/proc/loadavg")))
        if cpu0 is None or cpu1 is None:
            return MachineState("host", wall, os.cpu_count(), load, own)
        d = cpu1 - cpu0
        return MachineState("host", wall, d.cores, load, own,
                            other_cpu_cores=max(d.busy_s - own, 0.0) / wall,
                            steal_share=d.steal_s / (wall * d.cores), steal_s=d.steal_s)


class NullProbe:
    """For runners that know nothing of their machine (test fakes)."""

    def start(self) -> None:
        pass

    def stop(self) -> MachineState | None:
        return None


# -- phones -----------------------------------------------------------------------------------

STATE_MARK = "@@NETADAPT-STATE"


@dataclass(frozen=True)
class PhoneExtras:
    """What the phone runner reads with its own code (shared with its probe and doctor):
    the watched thermal zones and the battery."""

    temps_c: dict[str, float] = field(default_factory=dict)
    battery_pct: float | None = None
    battery_status: str | None = None
    charging: bool = False


def phone_state_script(extra: Mapping[str, str] | None = None) -> str:
    """POSIX sh printing what ``parse_phone_state`` reads (no argument of the user's);
    ``extra``: the phone runner's own snippets (section name -> shell), each printed under
    its section."""
    m = STATE_MARK
    return "\n".join([
        f"echo '{m} uptime'; cat /proc/uptime",
        f"echo '{m} loadavg'; cat /proc/loadavg",
        f"echo '{m} stat'; cat /proc/stat 2>/dev/null | grep '^cpu'",
        (f"echo '{m} cpus'; for c in /sys/devices/system/cpu/cpu[0-9]*; do "
         "[ -d \"$c/cpufreq\" ] || continue; echo \"${c##*/cpu} "
         "$(cat \"$c/cpufreq/scaling_cur_freq\" 2>/dev/null || echo -) "
         "$(cat \"$c/cpufreq/scaling_governor\" 2>/dev/null || echo -)\"; done"),
        *(f"echo '{m} {name}'; {snippet}" for name, snippet in (extra or {}).items()),
        f"echo '{m} end'",
    ]) + "\n"


@dataclass(frozen=True)
class PhoneReading:
    """One ``phone_state_script`` output, parsed."""

    uptime_s: float | None
    load_1m: float | None
    cpu: CpuTimes | None
    cpus: dict[int, tuple[int | None, str | None]]  # cpu -> (current kHz, governor)
    extras: PhoneExtras


def parse_phone_state(text: str, read_extras: Callable[[Mapping[str, str]], PhoneExtras]
                      = lambda sections: PhoneExtras(), ticks_per_s: float = 100.0
                      ) -> PhoneReading:
    """``read_extras``: the runner's reader of its own sections (temperatures, battery)."""
    s = split_sections(text, STATE_MARK)
    cpus: dict[int, tuple[int | None, str | None]] = {}
    for line in s.get("cpus", "").splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].isdigit():
            cpus[int(parts[0])] = (int(parts[1]) if parts[1].isdigit() else None,
                                   None if parts[2] == "-" else parts[2])
    return PhoneReading(_float(s.get("uptime", "").split()[:1]),
                        parse_loadavg(s.get("loadavg", "")),
                        parse_proc_stat(s.get("stat", ""), ticks_per_s), cpus, read_extras(s))


def phone_state(serial: str, first: PhoneReading, last: PhoneReading,
                limit_c: float | None = None) -> MachineState:
    """The phone's state between two readings (its own clock: /proc/uptime)."""
    wall = (last.uptime_s - first.uptime_s
            if last.uptime_s is not None and first.uptime_s is not None else 0.0)
    busy = steal = steal_s = None
    cores = None
    if first.cpu and last.cpu and wall > 0:
        d = last.cpu - first.cpu
        cores = d.cores
        busy, steal, steal_s = d.busy_s / (wall * cores), d.steal_s / (wall * cores), d.steal_s
    a, b = first.extras, last.extras
    temps = {z: max(c, a.temps_c.get(z, c)) for z, c in b.temps_c.items()}
    top = max(temps.values()) if temps else None
    phone = {"temps_c": temps, "temp_max_c": top,
             "hot": bool(limit_c is not None and top is not None and top > limit_c),
             "governors": sorted({g for _, g in last.cpus.values() if g}),
             "freqs_khz": {str(c): f for c, (f, _) in last.cpus.items()},
             "battery_pct": b.battery_pct, "battery_status": b.battery_status,
             "charging": b.charging}
    return MachineState(serial, wall, cores, _max(first.load_1m, last.load_1m),
                        busy_share=busy, steal_share=steal, steal_s=steal_s, phone=phone)


class PhoneProbe:
    """A phone's state over a run: ``shell(script) -> stdout`` at start and at stop; the
    temperatures and battery come from the phone runner's own snippets and readers."""

    def __init__(self, serial: str, shell: Callable[[str], str],
                 extra: Mapping[str, str] | None = None,
                 read_extras: Callable[[Mapping[str, str]], PhoneExtras]
                 = lambda sections: PhoneExtras(), limit_c: float | None = None):
        self.serial, self.shell, self.limit_c = serial, shell, limit_c
        self.read_extras = read_extras
        self.script = phone_state_script(extra)
        self._first: PhoneReading | None = None

    def _read(self) -> PhoneReading:
        return parse_phone_state(self.shell(self.script), self.read_extras)

    def start(self) -> None:
        self._first = self._read()

    def stop(self) -> MachineState:
        last = self._read()
        return phone_state(self.serial, self._first or last, last, self.limit_c)


def _float(parts: Sequence[str]) -> float | None:
    try:
        return float(parts[0])
    except (IndexError, ValueError):
        return None


def _max(a: float | None, b: float | None) -> float | None:
    vals = [x for x in (a, b) if x is not None]
    return max(vals) if vals else None
