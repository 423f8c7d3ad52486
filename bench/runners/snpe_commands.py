"""Command lines for the Qualcomm SNPE tools. Pure functions: nothing here runs anything.

Documented usage followed (SNPE 1.x/2.x reference guide; /work/shared/formats/README.md):

    snpe-tflite-to-dlc --input_network model.tflite --input_dim <input> <N,H,W,C> --output_path model.dlc
    snpe-net-run --container model.dlc --input_list inputs.txt [--use_gpu|--use_dsp|--use_aip]
                 --perf_profile burst --profiling_level detailed --output_dir output
    snpe-diagview --input_log output/SNPEDiag_0.log [--output x.csv]

The converter and snpe-diagview run on the host (``bin/x86_64-linux-clang``), snpe-net-run
on the phone (``bin/aarch64-android*``), so the batch script leaves the SNPEDiag logs on
the device for the runner to pull. Host commands are argv lists (no shell); the device
script quotes every path and name with ``shlex.quote``.
"""

from __future__ import annotations

import os
import posixpath
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.runners.batch_script import split_batch_output, wrap_command

__all__ = [
    "DeviceSdk",
    "JobPaths",
    "NetRunJob",
    "SdkLayout",
    "SnpeSdkMissing",
    "convert_cmd",
    "diagview_cmd",
    "find_sdk",
    "host_env",
    "job_paths",
    "net_run_env",
    "net_run_script",
    "sdk_layout",
    "split_batch_output",
]

HOST_ARCH = "x86_64-linux-clang"
CONVERTER = "snpe-tflite-to-dlc"
NET_RUN = "snpe-net-run"
VALIDATOR = "snpe-platform-validator"  # on the phone: is the runtime there, which versions
DIAGVIEW = "snpe-diagview"

RUNTIME_FLAGS: dict[str, tuple[str, ...]] = {
    "cpu": (),  # snpe-net-run's default runtime
    "gpu": ("--use_gpu",),
    "dsp": ("--use_dsp",),
    "aip": ("--use_aip",),
}
PERF_PROFILES = (
    "default", "balanced", "low_balanced", "high_performance", "sustained_high_performance",
    "burst", "low_power_saver", "power_saver", "high_power_saver", "extreme_power_saver",
    "system_settings",
)
PROFILING_LEVELS = ("off", "basic", "moderate", "detailed", "linting")
# basic times the totals as Qualcomm's snpe_bench does; detailed (per layer) adds its own
# cost to every layer, so it is for per-layer profiles only; linting is the DSP's (HTP)
# Stock locations of Qualcomm's own DSP libraries, after the pushed SDK ones (the SNPE
# guide's ADSP_LIBRARY_PATH; ';'-separated, unlike LD_LIBRARY_PATH).
SYSTEM_ADSP_DIRS = ("/system/lib/rfsa/adsp", "/system/vendor/lib/rfsa/adsp", "/dsp")

_HOW = ('set SNPE_ROOT to the unpacked SDK (the folder holding bin/ and lib/), '
        'or snpe_root = "..." in the device config\'s snpe backend')


class SnpeSdkMissing(RuntimeError):
    """No usable SNPE SDK: the message says how to point to one (and ends with ``how``)."""

    how = _HOW


@dataclass(frozen=True)
class SdkLayout:
    """The parts of an SNPE SDK tree the runner uses."""

    root: Path
    converter: Path  # bin/x86_64-linux-clang/snpe-tflite-to-dlc
    diagview: Path  # bin/x86_64-linux-clang/snpe-diagview
    android_bin: Path  # bin/aarch64-android* (holds snpe-net-run); push to the phone
    android_lib: Path  # lib/aarch64-android*; push to the phone
    dsp_libs: tuple[Path, ...]  # lib/hexagon-v*/unsigned (2.x) or lib/dsp (1.x)

    def dsp_lib(self, arch: str | None) -> Path | None:
        """The DSP library folder for Hexagon ``arch`` ("v73"); SNPE 1.x's lib/dsp serves
        every SoC. None when the SDK has none for it."""
        for d in self.dsp_libs:
            if d.name == "dsp" or d.parent.name == f"hexagon-{arch}":
                return d
        return None

    @property
    def dsp_archs(self) -> list[str]:
        return [d.parent.name.removeprefix("hexagon-") for d in self.dsp_libs if d.name != "dsp"]


def _pick(candidates: list[Path]) -> Path | None:
    # 1.x ships several toolchain builds (aarch64-android-clang6.0, -clang8.0): newest last.
    return max(candidates) if candidates else None


def sdk_layout(sdk: Path) -> SdkLayout:
    """Check the SDK tree at ``sdk`` and name its parts, or raise SnpeSdkMissing.

    Expected (SNPE 1.x and 2.x/QAIRT): ``bin/x86_64-linux-clang/snpe-tflite-to-dlc``,
    ``bin/aarch64-android*/snpe-net-run``, ``lib/aarch64-android*/``; for the DSP
    ``lib/hexagon-v*/unsigned/`` (2.x) or ``lib/dsp/`` (1.x).
    """
    root = Path(sdk)
    if not root.is_dir():
        raise SnpeSdkMissing(f"SNPE SDK folder {str(root)!r} does not exist; {_HOW}.")
    converter = root / "bin" / HOST_ARCH / CONVERTER
    if not converter.is_file():
        raise SnpeSdkMissing(f"{str(root)!r} is not an SNPE SDK: no bin/{HOST_ARCH}/{CONVERTER}; "
                             f"{_HOW}.")
    android_bin = _pick([p.parent for p in root.glob(f"bin/aarch64-android*/{NET_RUN}")])
    android_lib = _pick([p for p in root.glob("lib/aarch64-android*") if p.is_dir()])
    if android_bin is None or android_lib is None:
        missing = f"bin/aarch64-android*/{NET_RUN}" if android_bin is None else "lib/aarch64-android*/"
        raise SnpeSdkMissing(f"SNPE SDK {str(root)!r} has no Android build ({missing}); {_HOW}.")
    same = root / "lib" / android_bin.name  # prefer the lib dir of the same toolchain
    dsp = sorted(p for p in root.glob("lib/hexagon-v*/unsigned") if p.is_dir())
    if (root / "lib" / "dsp").is_dir():
        dsp.append(root / "lib" / "dsp")
    return SdkLayout(
        root=root,
        converter=converter,
        diagview=root / "bin" / HOST_ARCH / DIAGVIEW,
        android_bin=android_bin,
        android_lib=same if same.is_dir() else android_lib,
        dsp_libs=tuple(dsp),
    )


def find_sdk(config_path: str | None, *, need_dsp: bool = False,
             environ: Mapping[str, str] | None = None) -> Path:
    """The SNPE SDK root: ``config_path`` (the device config's snpe_root) or env SNPE_ROOT.

    A configured path that is wrong is an error (no silent fallback to SNPE_ROOT).
    ``~`` and ``$VARS`` in the configured path are expanded.
    """
    env = os.environ if environ is None else environ
    if config_path:
        root = Path(os.path.expandvars(os.path.expanduser(config_path)))
    elif env.get("SNPE_ROOT"):
        root = Path(env["SNPE_ROOT"])
    else:
        raise SnpeSdkMissing(f"No Qualcomm SNPE SDK configured: {_HOW}.")
    layout = sdk_layout(root)
    if need_dsp and not layout.dsp_libs:
        raise SnpeSdkMissing(f"SNPE SDK {str(root)!r} has no DSP libraries "
                             f"(lib/hexagon-v*/unsigned or lib/dsp); {_HOW}.")
    return root


def host_env(sdk: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for the host tools, as the SDK's bin/envsetup.sh sets it.

    The converter is a Python script importing ``lib/python``; snpe-diagview links
    against ``lib/x86_64-linux-clang``.
    """
    env = dict(os.environ if base is None else base)
    root = Path(sdk)

    def prepend(name: str, value: Path) -> None:
        env[name] = os.pathsep.join([str(value), *filter(None, [env.get(name)])])

    env["SNPE_ROOT"] = str(root)
    prepend("PYTHONPATH", root / "lib" / "python")
    prepend("LD_LIBRARY_PATH", root / "lib" / HOST_ARCH)
    prepend("PATH", root / "bin" / HOST_ARCH)
    return env


def convert_cmd(sdk: Path, tflite_path: str | Path, dlc_path: str | Path, input_name: str,
                input_shape: Sequence[int]) -> list[str]:
    """argv converting a .tflite to a .dlc on the host (run with ``env=host_env(sdk)``).

    ``--input_dim <name> <N,H,W,C>`` is the converter's ``-d INPUT_NAME INPUT_DIM``
    (TFLite layout, NHWC); the long flags exist in SNPE 1.x and 2.x.
    """
    dims = [int(d) for d in input_shape]
    if not dims or any(d <= 0 for d in dims):
        raise ValueError(f"input_shape must be positive dimensions, got {list(input_shape)}")
    return [
        str(Path(sdk) / "bin" / HOST_ARCH / CONVERTER),
        "--input_network", str(tflite_path),
        "--input_dim", input_name, ",".join(map(str, dims)),
        "--output_path", str(dlc_path),
    ]


def diagview_cmd(sdk: Path, log_path: str | Path, csv_path: str | Path | None = None) -> list[str]:
    """argv printing an SNPEDiag log pulled from the phone (snpe-diagview is a host tool)."""
    argv = [str(Path(sdk) / "bin" / HOST_ARCH / DIAGVIEW), "--input_log", str(log_path)]
    if csv_path is not None:
        argv += ["--output", str(csv_path)]
    return argv


# --------------------------------------------------------------------------------------
# The on-device batch script
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DeviceSdk:
    """Where the runner pushed the SDK's Android parts on the phone."""

    bin_dir: str  # holds snpe-net-run (from SdkLayout.android_bin)
    lib_dir: str  # SdkLayout.android_lib
    dsp_lib_dir: str | None = None  # one of SdkLayout.dsp_libs; needed for runtime "dsp"


@dataclass(frozen=True)
class NetRunJob:
    """One model of a batch: a DLC already pushed to the batch directory."""

    dlc_name: str  # relative to remote_dir (or absolute)
    input_bytes: int  # size of the single input tensor (float32: 4 * N*H*W*C)


@dataclass(frozen=True)
class JobPaths:
    """Where model ``index`` of a batch works on the device."""

    work_dir: str
    output_dir: str
    diag_log: str  # what snpe-net-run --profiling_level writes; pull it for snpe-diagview


# snpe-net-run names its log SNPEDiag_0.log in some SDKs and SNPEDiag.log in others: the
# batch script moves whichever it wrote to one name
DIAG_LOGS = ("SNPEDiag_0.log", "SNPEDiag.log", "SNPEDiag*.log")
DIAG_NAME = "netadapt_diag.log"


def job_paths(remote_dir: str, index: int) -> JobPaths:
    """Per-model working paths inside the batch directory (pure string arithmetic)."""
    work = posixpath.join(remote_dir, f"netadapt_run_{int(index)}")
    output = posixpath.join(work, "output")
    return JobPaths(work, output, posixpath.join(output, DIAG_NAME))


def _check_choice(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} {value!r} is not one of {', '.join(allowed)}")


def _check_remote_dir(remote_dir: str) -> str:
    # The script rm -rf's subfolders of remote_dir: insist on a real absolute folder.
    norm = posixpath.normpath(remote_dir)
    if not remote_dir.startswith("/") or not norm.strip("/") or "\n" in remote_dir:
        raise ValueError(f"remote_dir must be an absolute folder other than '/', got {remote_dir!r}")
    return norm


_LIST_FN = 'netadapt_list() { n=0; while [ "$n" -lt "$2" ]; do echo "$1"; n=$((n + 1)); done; }'


def net_run_env(device_sdk: DeviceSdk) -> list[str]:
    """``NAME=value`` words (quoted) the phone's SNPE binaries need."""
    q = shlex.quote
    words = [f'LD_LIBRARY_PATH={q(device_sdk.lib_dir)}"${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}"']
    if device_sdk.dsp_lib_dir:
        words.append(f"ADSP_LIBRARY_PATH={q(';'.join([device_sdk.dsp_lib_dir, *SYSTEM_ADSP_DIRS]))}")
    return words


def _env_lines(device_sdk: DeviceSdk) -> list[str]:
    return [f"export {w}" for w in net_run_env(device_sdk)]


def _job_command(remote_dir: str, index: int, job: NetRunJob, net_run: str,
                 flags: Sequence[str], runs: int) -> str:
    """One model: fresh work dir, zero input, input list of ``runs`` lines, snpe-net-run."""
    q = shlex.quote
    p = job_paths(remote_dir, index)
    n = int(job.input_bytes)
    container = posixpath.join(remote_dir, job.dlc_name)
    run = " ".join([q(net_run), "--container", q(container), "--input_list", "input_list.txt",
                    *map(q, flags), "--output_dir", "output"])
    # The input list names input.raw relative to the work dir (cwd), so a remote_dir
    # with spaces never reaches snpe-net-run's whitespace-split list format.
    steps = " && ".join([
        f"rm -rf {q(p.work_dir)}", f"mkdir -p {q(p.work_dir)}", f"cd {q(p.work_dir)}",
        # toybox before Android 7 may lack head -c: fall back to one dd block.
        (f"{{ head -c {n} /dev/zero 2>/dev/null || dd if=/dev/zero bs={n} count=1 2>/dev/null; }}"
         " > input.raw"),
        f"netadapt_list input.raw {int(runs)} > input_list.txt",
        run,
    ])
    logs = " ".join(f"output/{name}" for name in DIAG_LOGS)
    find_log = (f'for f in {logs}; do [ -f "$f" ] && {{ mv "$f" output/{DIAG_NAME}; break; }}; '
                "done")
    # Result_* holds one output tensor per run: drop it so a batch cannot fill the phone.
    return (f"( {steps}; rc=$?; {find_log}; rm -rf {q(p.output_dir)}/Result_*; exit $rc ) "
            "2>&1")


def net_run_script(remote_dir: str, device_sdk: DeviceSdk, dlcs: Sequence[NetRunJob],
                   runtime: str, perf_profile: str = "burst",
                   profiling_level: str = "detailed", runs: int = 50,
                   extra_args: Sequence[str] = ()) -> str:
    """ONE POSIX-sh script measuring a whole batch of DLCs in one adb round trip.

    Per model i: a fresh ``remote_dir/netadapt_run_<i>``, a zero input file of the
    input's size (``head -c N /dev/zero``), an input list naming it ``runs`` times
    (snpe-net-run runs every listed input once and diagview averages them; it has
    no warm-up option, so the first run is part of the average), then
    ``snpe-net-run`` with its own ``--output_dir``; everything it prints goes between
    ``@@NETADAPT-BEGIN i`` / ``@@NETADAPT-END i rc=<code>`` (see batch_script). The
    SNPEDiag log stays at ``job_paths(remote_dir, i).diag_log`` for pulling.
    ``extra_args`` go to every snpe-net-run (e.g. ``--userbuffer_float``).
    """
    _check_choice("runtime", runtime, tuple(RUNTIME_FLAGS))
    _check_choice("perf_profile", perf_profile, PERF_PROFILES)
    _check_choice("profiling_level", profiling_level, PROFILING_LEVELS)
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    if runtime == "dsp" and not device_sdk.dsp_lib_dir:
        raise ValueError("runtime 'dsp' needs DeviceSdk.dsp_lib_dir (ADSP_LIBRARY_PATH)")
    remote_dir = _check_remote_dir(remote_dir)
    flags = [*RUNTIME_FLAGS[runtime], "--perf_profile", perf_profile,
             "--profiling_level", profiling_level, *extra_args]
    net_run = posixpath.join(device_sdk.bin_dir, NET_RUN)
    lines = [f"# netadapt-farm SNPE batch: {len(dlcs)} model(s), {runtime}, {runs} runs each",
             *_env_lines(device_sdk), _LIST_FN]
    for i, job in enumerate(dlcs):
        lines += wrap_command(i, _job_command(remote_dir, i, job, net_run, flags, runs))
    return "\n".join(lines) + "\n"
