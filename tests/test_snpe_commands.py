"""SNPE command lines and the on-device batch script.

SNPE is not installed here: the SDK tree and the tools are fakes (shell scripts that
print their argv and the documented snpe-net-run banner), and the batch script is run by
/bin/sh on this machine, which exercises quoting, per-model markers and exit codes.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from bench.runners.batch_script import begin_marker, end_marker, split_batch_output, wrap_command
from bench.runners.snpe_commands import (
    DeviceSdk,
    NetRunJob,
    SnpeSdkMissing,
    convert_cmd,
    diagview_cmd,
    find_sdk,
    host_env,
    job_paths,
    net_run_script,
    sdk_layout,
)

NASTY = "we ird $x;'\"`"  # spaces, $, ;, both quotes, backtick

ARGV_PRINTER = """#!/bin/sh
for a in "$@"; do printf 'ARG<%s>\\n' "$a"; done
"""

# Prints what snpe-net-run prints (banner, inputs, "Successfully executed!"), plus what the
# test needs to see: its argv, env, the input list and raw size; writes the SNPEDiag log.
FAKE_NET_RUN = """#!/bin/sh
for a in "$@"; do printf 'ARG<%s>\\n' "$a"; done
out=output; list=; container=
while [ $# -gt 0 ]; do
  case "$1" in
    --container) container=$2; shift ;;
    --input_list) list=$2; shift ;;
    --output_dir) out=$2; shift ;;
  esac
  shift
done
echo "LD=$LD_LIBRARY_PATH"
echo "ADSP=$ADSP_LIBRARY_PATH"
echo "LINES=$(wc -l < "$list" | tr -d ' ')"
echo "RAWSIZE=$(wc -c < "$(head -n 1 "$list")" | tr -d ' ')"
case "$container" in
  *fail*) echo "error_code=201; error_message=Could not open container: $container"; exit 3 ;;
esac
[ -f "$container" ] || { echo "error_code=202; error_message=missing $container"; exit 4; }
echo "-------------------------------------------------------------------------------"
echo "Model String: N/A"
echo "SNPE v2.9.0.4462"
echo "-------------------------------------------------------------------------------"
echo "Processing DNN input(s):"
n=0
while read -r f; do mkdir -p "$out/Result_$n"; : > "$out/Result_$n/y.raw"; echo "$f"; n=$((n + 1)); done < "$list"
printf 'diag' > "$out/SNPEDiag_0.log"
echo "Successfully executed!"
"""


def write_exe(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def fake_sdk(root: Path, *, version: int = 2, dsp: bool = True) -> Path:
    """An SDK tree with the files find_sdk checks (SNPE 2.x or 1.x naming)."""
    arch = "aarch64-android" if version == 2 else "aarch64-android-clang8.0"
    write_exe(root / "bin/x86_64-linux-clang/snpe-tflite-to-dlc", ARGV_PRINTER)
    write_exe(root / "bin/x86_64-linux-clang/snpe-diagview", ARGV_PRINTER)
    write_exe(root / f"bin/{arch}/snpe-net-run", FAKE_NET_RUN)
    (root / f"lib/{arch}").mkdir(parents=True)
    if dsp:
        (root / ("lib/hexagon-v73/unsigned" if version == 2 else "lib/dsp")).mkdir(parents=True)
    return root


# ---- finding the SDK -------------------------------------------------------------------

def test_find_sdk_from_config_path_and_env(tmp_path):
    sdk = fake_sdk(tmp_path / NASTY / "qairt" / "2.9")
    assert find_sdk(str(sdk), environ={}) == sdk
    assert find_sdk(None, environ={"SNPE_ROOT": str(sdk)}) == sdk
    assert find_sdk(None, need_dsp=True, environ={"SNPE_ROOT": str(sdk)}) == sdk


def test_find_sdk_config_wins_over_env_and_is_not_silently_replaced(tmp_path):
    sdk = fake_sdk(tmp_path / "sdk")
    with pytest.raises(SnpeSdkMissing, match="does not exist"):
        find_sdk(str(tmp_path / "nope"), environ={"SNPE_ROOT": str(sdk)})


def test_no_sdk_message_says_how_to_point_to_it():
    with pytest.raises(SnpeSdkMissing) as err:
        find_sdk(None, environ={})
    msg = str(err.value)
    assert "SNPE_ROOT" in msg and 'snpe_root = "..."' in msg and "snpe backend" in msg
    assert msg.endswith(".") and ". " not in msg and "\n" not in msg  # one sentence


def test_incomplete_sdk_names_the_missing_piece(tmp_path):
    with pytest.raises(SnpeSdkMissing, match="snpe-tflite-to-dlc"):
        find_sdk(str(tmp_path), environ={})
    sdk = fake_sdk(tmp_path / "nodsp", dsp=False)
    assert find_sdk(str(sdk), environ={}) == sdk
    with pytest.raises(SnpeSdkMissing, match="hexagon"):
        find_sdk(str(sdk), need_dsp=True, environ={})
    (sdk / "bin/aarch64-android/snpe-net-run").unlink()
    with pytest.raises(SnpeSdkMissing, match="snpe-net-run"):
        find_sdk(str(sdk), environ={})


def test_sdk_layout_1x_naming(tmp_path):
    layout = sdk_layout(fake_sdk(tmp_path / "snpe-1.68", version=1))
    assert layout.android_bin.name == layout.android_lib.name == "aarch64-android-clang8.0"
    assert [p.name for p in layout.dsp_libs] == ["dsp"]
    assert layout.diagview.name == "snpe-diagview"


# ---- host command lines ----------------------------------------------------------------

def test_convert_cmd_documented_flags_and_one_arg_per_path(tmp_path):
    sdk = fake_sdk(tmp_path / NASTY)
    src, dst = tmp_path / f"in {NASTY}.tflite", tmp_path / f"out {NASTY}.dlc"
    argv = convert_cmd(sdk, src, dst, "serving_default_x:0", (1, 56, 56, 64))
    assert argv == [str(sdk / "bin/x86_64-linux-clang/snpe-tflite-to-dlc"),
                    "--input_network", str(src), "--input_dim", "serving_default_x:0",
                    "1,56,56,64", "--output_path", str(dst)]
    # Run without a shell: every element arrives as exactly one argument.
    out = subprocess.run(argv, capture_output=True, text=True, check=True,
                         env=host_env(sdk)).stdout
    assert out.splitlines() == [f"ARG<{a}>" for a in argv[1:]]


def test_convert_cmd_rejects_bad_shape(tmp_path):
    with pytest.raises(ValueError):
        convert_cmd(tmp_path, "a.tflite", "a.dlc", "x", (1, 0, 3))


def test_diagview_cmd(tmp_path):
    sdk = fake_sdk(tmp_path / "sdk")
    log = tmp_path / NASTY / "SNPEDiag_0.log"
    assert diagview_cmd(sdk, log) == [str(sdk / "bin/x86_64-linux-clang/snpe-diagview"),
                                      "--input_log", str(log)]
    argv = diagview_cmd(sdk, log, tmp_path / "x.csv")
    assert argv[-2:] == ["--output", str(tmp_path / "x.csv")]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[1] == f"ARG<{log}>"


def test_host_env_mirrors_envsetup(tmp_path):
    env = host_env(tmp_path, base={"PATH": "/usr/bin", "PYTHONPATH": "/x"})
    assert env["SNPE_ROOT"] == str(tmp_path)
    assert env["PYTHONPATH"] == os.pathsep.join([str(tmp_path / "lib/python"), "/x"])
    assert env["LD_LIBRARY_PATH"] == str(tmp_path / "lib/x86_64-linux-clang")
    assert env["PATH"].startswith(str(tmp_path / "bin/x86_64-linux-clang") + os.pathsep)


# ---- the on-device batch script --------------------------------------------------------

def device(tmp_path: Path) -> tuple[Path, DeviceSdk]:
    """A fake phone folder: the SDK's Android parts pushed under a nasty path."""
    pushed = tmp_path / f"phone {NASTY}" / "snpe"
    write_exe(pushed / "bin" / "snpe-net-run", FAKE_NET_RUN)
    (pushed / "lib").mkdir()
    (pushed / "dsp").mkdir()
    return pushed, DeviceSdk(str(pushed / "bin"), str(pushed / "lib"), str(pushed / "dsp"))


def run_sh(script: str, cwd: Path) -> str:
    res = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, cwd=cwd,
                         env={"PATH": "/usr/bin:/bin"}, timeout=30, check=False)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_batch_script_runs_each_model_and_markers_split(tmp_path):
    _, dev = device(tmp_path)
    remote = tmp_path / f"batch {NASTY}"
    remote.mkdir()
    jobs = [NetRunJob(f"m0 {NASTY}.dlc", 4 * 7 * 7 * 3), NetRunJob("fail me.dlc", 12),
            NetRunJob("m2.dlc", 1000)]
    for job in (jobs[0], jobs[2]):
        (remote / job.dlc_name).write_bytes(b"dlc")
    script = net_run_script(str(remote), dev, jobs, "gpu", "burst", "detailed", runs=5)
    out = run_sh(script, tmp_path)
    results = split_batch_output(out)
    assert sorted(results) == [0, 1, 2]
    assert [results[i][0] for i in range(3)] == [0, 3, 0]

    body = results[0][1]
    args = [ln[4:-1] for ln in body.splitlines() if ln.startswith("ARG<")]
    assert args == ["--container", str(remote / jobs[0].dlc_name), "--input_list",
                    "input_list.txt", "--use_gpu", "--perf_profile", "burst",
                    "--profiling_level", "detailed", "--output_dir", "output"]
    assert "LINES=5" in body and f"RAWSIZE={4 * 7 * 7 * 3}" in body
    assert f"LD={dev.lib_dir}" in body.splitlines()
    assert f"ADSP={dev.dsp_lib_dir};/system/lib/rfsa/adsp;" in body
    assert "Successfully executed!" in body
    assert "Could not open container" in results[1][1]
    assert "RAWSIZE=1000" in results[2][1]

    for i in (0, 2):  # SNPEDiag log left for pulling; per-run outputs cleaned up
        p = job_paths(str(remote), i)
        assert Path(p.diag_log).read_bytes() == b"diag"
        assert not list(Path(p.output_dir).glob("Result_*"))


def test_batch_script_cpu_runtime_and_extra_args(tmp_path):
    _, dev = device(tmp_path)
    remote = tmp_path / "b"
    remote.mkdir()
    (remote / "a.dlc").write_bytes(b"")
    dev = DeviceSdk(dev.bin_dir, dev.lib_dir)  # no DSP libs: no ADSP_LIBRARY_PATH
    script = net_run_script(str(remote), dev, [NetRunJob("a.dlc", 8)], "cpu", "high_performance",
                            "basic", runs=2, extra_args=["--userbuffer_float"])
    assert "ADSP_LIBRARY_PATH" not in script
    rc, body = split_batch_output(run_sh(script, tmp_path))[0]
    args = [ln[4:-1] for ln in body.splitlines() if ln.startswith("ARG<")]
    assert rc == 0
    assert "--use_gpu" not in args and "--use_dsp" not in args
    assert args[4:] == ["--perf_profile", "high_performance", "--profiling_level", "basic",
                        "--userbuffer_float", "--output_dir", "output"]


def test_batch_script_missing_binary_is_rc_127_not_abort(tmp_path):
    remote = tmp_path / "b"
    remote.mkdir()
    dev = DeviceSdk(str(tmp_path / "nowhere"), str(tmp_path / "lib"))
    script = net_run_script(str(remote), dev, [NetRunJob("a.dlc", 8), NetRunJob("b.dlc", 8)],
                            "cpu", runs=1)
    results = split_batch_output(run_sh(script, tmp_path))
    assert [results[i][0] for i in (0, 1)] == [127, 127]


def test_batch_script_validation():
    dev = DeviceSdk("/d/bin", "/d/lib")
    job = [NetRunJob("a.dlc", 4)]
    with pytest.raises(ValueError, match="runtime"):
        net_run_script("/d/x", dev, job, "npu")
    with pytest.raises(ValueError, match="perf_profile"):
        net_run_script("/d/x", dev, job, "gpu", perf_profile="turbo")
    with pytest.raises(ValueError, match="profiling_level"):
        net_run_script("/d/x", dev, job, "gpu", profiling_level="max")
    with pytest.raises(ValueError, match="dsp_lib_dir"):
        net_run_script("/d/x", dev, job, "dsp")
    for bad in ("/", "relative/dir", "//"):
        with pytest.raises(ValueError, match="remote_dir"):
            net_run_script(bad, dev, job, "gpu")
    with pytest.raises(ValueError, match="runs"):
        net_run_script("/d/x", dev, job, "gpu", runs=0)


# ---- the shared delimiters -------------------------------------------------------------

def test_split_batch_output_edge_cases():
    text = "\r\n".join([
        "noise before",
        begin_marker(0), "a", "b", end_marker(0, "0"),
        begin_marker(1), "partial output, then the device went away",
        begin_marker(2), "no newline at end" + end_marker(2, "1"),
        begin_marker(3), "still running...",
    ])
    assert split_batch_output(text) == {0: (0, "a\nb"), 2: (1, "no newline at end")}


def test_wrap_command_captures_exit_status(tmp_path):
    script = "\n".join(wrap_command(0, "echo hi; false") + wrap_command(1, "exit 7")
                       + wrap_command(2, "( exit 5 )"))
    out = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True,
                         check=False).stdout
    assert split_batch_output(out) == {0: (1, "hi")}  # 'exit 7' ends the whole shell
    script = "\n".join(wrap_command(0, "( echo x; exit 7 )") + wrap_command(1, "true"))
    out = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True,
                         check=False).stdout
    assert split_batch_output(out) == {0: (7, "x"), 1: (0, "")}
