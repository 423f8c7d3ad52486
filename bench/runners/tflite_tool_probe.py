"""The benchmark tool's one run at setup, on a one-layer model, pinned as the sweep pins.

It tells which tool it is (both ``benchmark_model``s share the base flags, then each is
given its own), whether it took every flag of the sweep, whether the GPU ran the whole
model, whether a LiteRT tool writes its result file, and what ``taskset`` really pinned.
Anything wrong is ``problem``: one message naming the fix (the runner's setup raises it,
`netadapt doctor` shows it).
"""

from __future__ import annotations

import posixpath
import re
import shlex
from dataclasses import dataclass

from bench.runners.adb_phone import Phone
from bench.runners.base import RunnerError
from bench.runners.phone_probe import SECTION, parse_cpu_list
from bench.runners.tflite_settings import TfliteSettings
from bench.runners.tool_flags import (
    LITERT,
    LITERT_PY,
    SUMMARY_LINE,
    TFLITE,
    Flags,
    base_flags,
    delegation_problem,
    identify,
    merged,
    render,
    tool_flags,
    unconsumed,
)
from bench.shell_sections import split_sections
from lut_db.spec import LayerSpec

PROBE_SPEC = LayerSpec("conv2d", 8, 8, 8, 8, kernel=(3, 3))  # the one-layer probe model


@dataclass(frozen=True)
class ToolProbe:
    """What one run of the tool on the probe model showed (``ToolProber.probe``)."""

    flavor: str | None  # tool_flags.TFLITE, LITERT or LITERT_PY; None: not a known tool
    full_delegation: bool  # GPU runs get --require_full_delegation=true
    pinned_to: list[int] | None  # Cpus_allowed_list under the runner's taskset
    output: str
    problem: str | None = None  # what stops a sweep, and its fix


def probe_model_path(work_dir: str) -> str:
    """Where the runner pushes the probe model (built from PROBE_SPEC)."""
    return posixpath.join(work_dir, "probe.tflite")


@dataclass
class ToolProber:
    """Runs one backend's tool on a phone the way its sweep will (``pinning``, ``extra``)."""

    phone: Phone
    settings: TfliteSettings
    binary: str  # the tool on the phone
    pinning: list[str]  # timeout / taskset words before the tool's argv
    extra: Flags  # extra_args, replacing the runner's flags
    backend: str
    fix_cpus: str  # how to fix the backend's cpus, for a taskset that failed
    notes: list[str]  # the runner's fingerprint notes, added to

    @property
    def model_path(self) -> str:
        return probe_model_path(self.phone.work_dir)

    @property
    def result_path(self) -> str:
        return posixpath.join(self.phone.work_dir, "probe.pb")

    def probe(self) -> ToolProbe:
        """Run the tool on the probe model: first with the base flags both
        ``benchmark_model``s share (which tool is it?), then with the sweep's own flags."""
        s = self.settings
        if s.tool == "litert-benchmark":  # named by the config; only the pinning to check
            pinned = self._run_pinned(None)[1] if "taskset" in self.pinning else None
            return ToolProbe(LITERT_PY, False, pinned, "")
        # full delegation asked afresh, also on a rejoin
        spec = s.run_spec(half=False, full_delegation=True, result_file=self.result_path)
        out = self._run(render(merged(base_flags(self.model_path, spec), self.extra)))
        flavor = identify(out)
        if flavor is None:
            return ToolProbe(None, False, None, out, self._says(
                f"printed neither {SUMMARY_LINE[TFLITE]!r} nor {SUMMARY_LINE[LITERT]!r}: it "
                "is not a benchmark_model this runner knows, or it cannot run here", out))
        full = s.accelerator == "gpu" and self.extra.get("require_full_delegation") != "false"
        flags = merged(tool_flags(flavor, self.model_path, spec), self.extra)
        out, pinned, result = self._run_pinned(render(flags))
        left = unconsumed(out)
        if full and left == ["--require_full_delegation=true"]:
            full = False  # an older binary: partial runs are caught by their log lines
            self.notes.append(f"{s.tool} has no --require_full_delegation: partly delegated "
                              "models are caught by the tool's log")
            left = []
        partial = delegation_problem(out) if s.accelerator == "gpu" else None
        problem = None
        if left:
            problem = self._says(
                f"did not take {' '.join(left)} ('Unconsumed cmdline flags'): the tool does not "
                f"know it or it is repeated; fix extra_args in [backends.{self.backend}] of "
                f"{self.phone.config.path}", out)
        elif partial:
            problem = self._says(
                f"the GPU delegate did not run the whole one-layer probe model ({partial!r}): "
                "this phone's GPU delegate cannot time GPU keys", out)
        elif SUMMARY_LINE[flavor] not in out:
            problem = self._says(
                f"printed no {SUMMARY_LINE[flavor]!r} line with the sweep's flags", out)
        elif flavor == LITERT and result is None:
            problem = self._says(
                "wrote no --result_file_path file: this build cannot report full-precision "
                "latencies; use a LiteRT benchmark_model from the current release", out)
        return ToolProbe(flavor, full, pinned, out, problem)

    def _says(self, what: str, out: str) -> str:
        return (f"{self.settings.tool} ({self.binary}) on {self.phone.serial}, run on a "
                f"one-layer model, {what}; its output ends: {out.strip()[-1500:]}")

    def _run(self, args: list[str]) -> str:
        argv = " ".join(shlex.quote(a) for a in [self.binary, *args])
        return self.phone.transport.shell(f"{argv} 2>&1", timeout_s=120).output

    def _run_pinned(self, args: list[str] | None) -> tuple[str, list[int] | None, int | None]:
        """(output, Cpus_allowed_list under the pinning, result file size) in one shell
        (``args`` None: the pinning only)."""
        q = shlex.quote
        res_file = q(self.result_path)
        pin = self.pinning[self.pinning.index("taskset"):] if "taskset" in self.pinning else []
        lines = [f"rm -f {res_file}",
                 f"echo '{SECTION} pin'",
                 (" ".join(q(a) for a in pin) + " cat /proc/self/status 2>&1") if pin
                 else "true",
                 f"echo '{SECTION} run'",
                 " ".join(q(a) for a in [*self.pinning, self.binary, *args]) + " 2>&1"
                 if args is not None else "true",
                 f"echo '{SECTION} result'",
                 f"[ -f {res_file} ] && wc -c < {res_file}",
                 f"echo '{SECTION} end'"]
        res = self.phone.transport.shell("\n".join(lines) + "\n", timeout_s=120)
        sections = split_sections(res.stdout, SECTION)
        pin_text = sections.get("pin", "")
        m = re.search(r"^Cpus_allowed_list:\s*(\S+)", pin_text, re.MULTILINE)
        if pin and not m:
            raise RunnerError(f"taskset {pin[-1]} failed on {self.phone.serial}: "
                              f"{pin_text.strip()[-300:]}; {self.fix_cpus}")
        size = sections.get("result", "").strip()
        return (sections.get("run", res.output), sorted(parse_cpu_list(m.group(1))) if m else None,
                int(size) if size.isdigit() else None)

