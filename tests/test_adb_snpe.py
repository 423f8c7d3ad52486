"""SnpeRunner over a real adb server and a loopback phone, with a FAKE SNPE SDK.

No SNPE SDK and no Snapdragon phone here: the SDK tree is shell scripts that follow
SNPE's documented interfaces (the converter's flags, snpe-net-run's flags, input list
and SNPEDiag log location, snpe-diagview's 2.x text output). This checks the runner's
plumbing (SDK push, DLC push, batch script, log pull, diagview parse), not SNPE.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.devices import make_runners
from bench.runners.base import BatchItem, Failure, RunnerError, Timing
from bench.runners.snpe import SnpeMissing, SnpeRunner
from bench.tflite_build import build_layer
from loopback.farm import Farm
from lut_db.spec import LayerSpec
from netadapt_cli.main import app

pytestmark = pytest.mark.phones

CONVERTER = """#!/bin/sh
# fake snpe-tflite-to-dlc: checks the documented flags, "converts" by copying
while [ $# -gt 0 ]; do
  case "$1" in
    --input_network) src=$2; shift ;;
    --input_dim) name=$2; dims=$3; shift 2 ;;
    --output_path) dst=$2; shift ;;
  esac
  shift
done
[ "$name" = input ] && [ -n "$dims" ] || { echo "bad --input_dim '$name' '$dims'"; exit 2; }
cp "$src" "$dst"
"""

NET_RUN = """#!/bin/sh
# fake snpe-net-run: writes a SNPEDiag "log" in snpe-diagview's text format
gpu=no
while [ $# -gt 0 ]; do
  case "$1" in
    --container) c=$2; shift ;;
    --input_list) list=$2; shift ;;
    --output_dir) out=$2; shift ;;
    --use_gpu) gpu=yes ;;
  esac
  shift
done
case "$LD_LIBRARY_PATH" in *snpe/lib*) ;; *) echo "libs not on LD_LIBRARY_PATH"; exit 5 ;; esac
[ -f "$(head -n 1 "$list")" ] || { echo "no input"; exit 6; }
[ "$gpu" = yes ] || { echo "expected --use_gpu"; exit 7; }
size=$(wc -c < "$c" | tr -d ' ')
mkdir -p "$out"
{
  echo "Software library version: 2.9.0.4462"
  echo "Init: 9000 us"
  echo "Average SNPE Statistics:"
  echo "Total Inference Time: $size us"
  echo "Forward Propagate Time: $((size - 10)) us"
  echo "Layer Times:"
  echo "0: $((size - 20)) us : GPU"
} > "$out/SNPEDiag_0.log"
echo "Successfully executed!"
"""

DIAGVIEW = """#!/bin/sh
# fake snpe-diagview: the fake log already is diagview's text
[ "$1" = --input_log ] && cat "$2"
"""


def fake_sdk(root: Path) -> Path:
    for rel, text in (("bin/x86_64-linux-clang/snpe-tflite-to-dlc", CONVERTER),
                      ("bin/x86_64-linux-clang/snpe-diagview", DIAGVIEW),
                      ("bin/aarch64-android/snpe-net-run", NET_RUN)):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o755)
    (root / "lib/aarch64-android").mkdir(parents=True)
    (root / "lib/aarch64-android/libSNPE.so").write_bytes(b"not really a library")
    return root


def use_snpe(farm: Farm, **settings: object) -> None:
    text = (farm.config_dir / "loop.toml").read_text()
    lines = [f'{k} = "{v}"' if isinstance(v, str) else f"{k} = {v}" for k, v in settings.items()]
    work = farm.backend["work_dir"]
    (farm.config_dir / "loop.toml").write_text(
        text + '[backends.snpe-gpu]\nrunner = "snpe"\nruntime = "gpu"\nruns = 7\n'
        f'work_dir = "{work}"\n' + "\n".join(lines) + "\n")


def test_snpe_batch_over_adb_with_a_fake_sdk(farm: Farm, tmp_path: Path):
    sdk = fake_sdk(tmp_path / "sdk dir")
    use_snpe(farm, snpe_root=str(sdk))
    (runner,) = make_runners(farm.config(), "snpe-gpu")
    assert isinstance(runner, SnpeRunner) and runner.round_trips == 2  # probe, SDK push
    specs = [LayerSpec("conv2d", 16, 16, 8, c) for c in (8, 16)]
    batch = [BatchItem(s.key, build_layer(s)) for s in specs]
    batch.append(BatchItem("junk", b"not a model"))
    first, second, junk = runner.measure(batch)
    assert runner.round_trips == 2 + 3  # push, run, pull
    for item, t in ((batch[0], first), (batch[1], second)):
        assert isinstance(t, Timing) and t.runs == 7
        assert t.mean_us == len(item.model)  # the fake reports the DLC's size in us
        assert t.extra["layers"] == [[0, None, len(item.model) - 20, "us", "GPU"]]
        assert t.extra["sdk_version"] == "2.9.0.4462"
    assert isinstance(junk, Failure) and "not a loadable .tflite" in junk.error
    fp = runner.fingerprint()
    assert fp["runtime"] == "gpu" and fp["sdk"] == "sdk dir"
    assert farm.devices[0].serial not in str(fp)
    again = make_runners(farm.config(), "snpe-gpu")[0]
    assert again.round_trips == 1  # SDK already on the phone
    runner.close()


def test_no_sdk_is_one_clear_message(farm: Farm, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("SNPE_ROOT", raising=False)
    use_snpe(farm)
    with pytest.raises(SnpeMissing, match="No Qualcomm SNPE SDK configured: set SNPE_ROOT"):
        make_runners(farm.config(), "snpe-gpu")
    res = CliRunner().invoke(app, ["lut", "--no-calibrate", "--device", "loop", "--backend", "snpe-gpu", "--lut",
                                   str(farm.tmp / "x.db")], terminal_width=300)
    assert res.exit_code == 1 and "SNPE_ROOT" in res.output and "Traceback" not in res.output


def _dsp_sdk(root: Path) -> Path:
    sdk = fake_sdk(root)
    for arch in ("v68", "v73"):
        lib = sdk / f"lib/hexagon-{arch}/unsigned"
        lib.mkdir(parents=True)
        (lib / f"libSnpeHtp{arch.upper()}Skel.so").write_bytes(arch.encode())
    return sdk


@pytest.mark.phones
def test_snpe_log_by_pattern_basic_totals_detailed_layers(farm: Farm, tmp_path: Path):
    sdk = fake_sdk(tmp_path / "sdk")
    net_run = sdk / "bin/aarch64-android/snpe-net-run"  # an SDK that names it SNPEDiag.log
    net_run.write_text(net_run.read_text().replace("SNPEDiag_0.log", "SNPEDiag.log")
                       .replace("gpu=no", 'all="$*"; gpu=no')
                       .replace('mkdir -p "$out"', 'mkdir -p "$out"; echo "$all" > ../args.txt'))
    use_snpe(farm, snpe_root=str(sdk))
    (runner,) = make_runners(farm.config(), "snpe-gpu")
    spec = LayerSpec("conv2d", 16, 16, 8, 8)
    (t,) = runner.measure([BatchItem(spec.key, build_layer(spec))])
    assert isinstance(t, Timing), t
    work = Path(runner.phone.batches_dir)
    args = [p.read_text() for p in sorted(work.glob("*/args.txt"))]
    assert "--profiling_level basic" in args[-1]  # totals as snpe_bench times them
    layers = runner.op_profile(build_layer(spec))
    assert layers and layers[0][0] == "layer 0"
    args = [p.read_text() for p in sorted(work.glob("*/args.txt"))]
    assert "--profiling_level detailed" in args[-1]


@pytest.mark.phones
def test_snpe_settings_refuse_linting_off_the_dsp_and_detailed_totals(farm: Farm, tmp_path: Path):
    from bench.devices import ConfigError

    sdk = fake_sdk(tmp_path / "sdk")
    for level, message in (("linting", "linting profiles the DSP"),
                           ("detailed", "detailed slows every layer")):
        use_snpe(farm, snpe_root=str(sdk), profiling_level=level)
        with pytest.raises(ConfigError, match=message):
            make_runners(farm.config(), "snpe-gpu")
        farm.write()  # the config without the snpe backend again


@pytest.mark.phones
def test_snpe_dsp_library_by_soc_and_the_platform_validator(farm: Farm, tmp_path: Path):
    sdk = _dsp_sdk(tmp_path / "sdk")
    validator = sdk / "bin/aarch64-android/snpe-platform-validator"
    validator.write_text('#!/bin/sh\necho "Runtime: $2"\necho "Core version: 73"\n'
                         'echo "Unit Test on the runtime DSP: Passed."\n')
    validator.chmod(0o755)
    text = (farm.config_dir / "loop.toml").read_text()
    work = farm.backend["work_dir"]

    def dsp(hexagon: str) -> None:
        (farm.config_dir / "loop.toml").write_text(
            text + f'[backends.snpe-dsp]\nrunner = "snpe"\nruntime = "dsp"\nwork_dir = "{work}"\n'
            f'snpe_root = "{sdk}"\nhexagon = {hexagon}\n')

    dsp('{ sm8550 = "v73" }')  # the loopback phone's SoC is "loopback"
    with pytest.raises(RunnerError, match=r"SoC 'loopback' is not in the hexagon table .*"
                                          r"add loopback = \"vNN\" .*the SDK has v68, v73"):
        make_runners(farm.config(), "snpe-dsp")
    dsp('{ loopback = "v79" }')
    with pytest.raises(RunnerError, match="no lib/hexagon-v79/unsigned"):
        make_runners(farm.config(), "snpe-dsp")
    dsp('{ loopback = "v73" }')
    (runner,) = make_runners(farm.config(), "snpe-dsp")
    pushed = Path(runner.remote_sdk.dsp_lib_dir)
    assert [p.name for p in pushed.iterdir()] == ["libSnpeHtpV73Skel.so"]
    fp = runner.fingerprint()
    assert fp["dsp_lib"] == "hexagon-v73"
    assert fp["platform_validator"][-1] == "Unit Test on the runtime DSP: Passed."
    validator.write_text('#!/bin/sh\necho "Unit Test on the runtime DSP: Failed."\nexit 1\n')
    dsp('{ loopback = "v73" }')
    with pytest.raises(RunnerError, match="snpe-platform-validator says the dsp runtime cannot"):
        make_runners(farm.config(), "snpe-dsp")
