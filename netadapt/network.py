"""`netadapt estimate` and `netadapt measure` as calls: one network, from the zoo, a network
JSON or a ``.tflite`` file, estimated from a LUT or timed whole on a device."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.missing import DeviceAbsent, backend_option, covering_sweep, estimate_network
from bench.timing import Checked
from lut_db.estimate import Estimate, MissingKeys, MissingPolicy
from lut_db.network import Network
from lut_db.progress import Steps, silent
from lut_db.spec import SpecError
from lut_db.store import LutStore, open_lut
from lut_db.versions import Version
from netadapt.errors import OptionError

Log = Callable[[str], None]


def load_network(network: str | Path | None = None, model: str | None = None,
                 width: float | None = None, widths: str | None = None, resolution: int = 224,
                 classes: int = 1000, model_file: str | Path | None = None,
                 dtype: str | None = None) -> Network:
    """A network from ``network`` (JSON), ``model_file`` (.tflite) or ``model`` (a zoo
    family) [``width`` multiplier | ``widths`` "a,b,..." per slot] [``dtype``]."""
    if sum(v is not None for v in (network, model, model_file)) != 1:
        raise SpecError("give exactly one of --network FILE.json, --model NAME or "
                        "--model-file FILE.tflite")
    if dtype is not None and model is None:
        raise SpecError("--dtype goes with --model: a network JSON's keys and a .tflite "
                        "file carry their own dtype")
    if network is not None:
        net = Network.load(Path(network))
    elif model_file is not None:
        from bench.tflite_read import read_file

        net = read_file(Path(model_file)).network
    else:
        net = _zoo_network(str(model), width, widths, resolution, classes)
    return net.with_dtype(str(dtype)) if dtype not in (None, "float32") else net


def _zoo_network(model: str, width: float | None, widths: str | None, resolution: int,
                 classes: int) -> Network:
    from bench.zoo import family

    if width is not None and widths is not None:
        raise SpecError("give --width (a multiplier) or --widths (one per slot), not both")
    if classes < 1:
        raise SpecError(f"--classes must be at least 1, got {classes}")
    fam = family(model)
    if widths is not None:
        try:
            values = [int(v) for v in widths.split(",")]
        except ValueError:
            raise SpecError(f"--widths must be integers separated by commas, got {widths!r}")
        return fam.network(values, resolution=resolution, classes=classes)
    return fam.network(width_mult=width if width is not None else 1.0, resolution=resolution,
                       classes=classes)


@dataclass
class Estimated:
    """A network and its estimate from a LUT version; with ``anchor``, the estimate
    re-levelled by calibration networks timed on the device now (``analysis.anchors``)."""

    network: Network
    estimate: Estimate
    anchored_ms: float | None = None
    anchors: int = 0  # calibration networks timed
    anchor_level: float | None = None  # their median measured / calibrated estimate

    @property
    def total_ms(self) -> float:
        return self.estimate.total_ms

    def to_dict(self) -> dict[str, Any]:
        """What `netadapt estimate --json` prints."""
        net = self.network
        free = {"free_ops": net.meta["free_ops"]} if "free_ops" in net.meta else {}
        now = ({"anchored_ms": self.anchored_ms, "anchors": self.anchors,
                "anchor_level": self.anchor_level} if self.anchors else {})
        return {"macs": net.macs, "params": net.params, **self.estimate.to_dict(), **free,
                **now}


def estimate(lut: str | Path, *, network: str | Path | None = None, model: str | None = None,
             model_file: str | Path | None = None, width: float | None = None,
             widths: str | None = None, resolution: int = 224, classes: int = 1000,
             dtype: str | None = None, missing: str = MissingPolicy.ERROR, sweep: bool = True,
             device: str | None = None, raw: bool = False, log: Log | None = None,
             progress: Steps = silent, anchor: bool = False) -> Estimated:
    """A network's latency from ``lut`` (``file[@version]``): each layer's cost inside the
    network from the version's calibration (``raw``: the plain sum of the entries). Keys the
    LUT lacks are measured on its device (``sweep``), or else go to ``missing``. With
    ``anchor``, the estimate is also re-levelled by calibration networks timed whole on
    the LUT's device now (``analysis.anchors``)."""
    if anchor and raw:
        raise OptionError("--anchor re-levels the calibrated estimate; drop --raw")
    net = load_network(network, model, width, widths, resolution, classes, model_file, dtype)
    store, version = open_lut(str(lut))
    policy = "measure" if sweep and missing == "error" else missing
    try:
        est = estimate_network(store, version, net, policy, raw=raw, device=device, log=log,
                               progress=progress)
        if anchor:
            return _anchored(Estimated(net, est), store, version, device)
    except DeviceAbsent as e:  # the command that measures them where the device is
        space = covering_sweep(version, net.keys, model, resolution, classes,
                               dtype or "float32") if model else None
        if space is not None:
            raise e.instead("sweep them with: " + space.command(
                version.device, store.path, backend_option(version))) from None
        if model_file is not None:
            raise e.instead(f"run where it is attached: netadapt estimate --lut "
                            f"{store.path}@{version.id} --model-file {model_file}") from None
        raise
    except MissingKeys as e:
        if model_file is None:
            raise
        label = f"{store.path}@{version.id}"
        raise MissingKeys(e.keys, label, hint=(
            "measure each as a single-op model on the LUT's device (attached) with:\n  "
            f"netadapt estimate --lut {label} --model-file {model_file}")) from None
    finally:
        store.close()
    return Estimated(net, est)


def _anchored(done: Estimated, store: LutStore, version: Version,
              device: str | None) -> Estimated:
    """``done`` with its estimate re-levelled by calibration networks timed now."""
    from analysis import anchors
    from bench.devices import open_runners
    from bench.runners.base import RunnerError

    if done.estimate.calibration is None:
        raise OptionError(f"--anchor needs a calibrated LUT version; {version.label} has no "
                          f"calibration (netadapt calibrate --lut {store.path}@{version.id})")
    with open_runners(device or version.device, version.backend) as runners:
        if not runners:
            raise RunnerError(f"--anchor times calibration networks on {version.device}, "
                              "and none is attached")
        pairs = anchors.time_now(store, version, runners[0])
    moved = anchors.anchored([done.estimate.total_us], pairs)
    if moved is None:
        raise OptionError(f"--anchor: {version.label} has fewer than {anchors.MIN_ANCHORS} "
                          "calibration networks its own keys describe")
    return replace(done, anchored_ms=moved[0] / 1000, anchors=len(pairs),
                   anchor_level=anchors.level(pairs))


@dataclass
class Measured:
    """A network timed whole on a device (``bench.timing.Checked``), its estimate beside it."""

    network: Network
    device: str
    passes: int
    checked: Checked
    estimate: Estimate | None = None

    @property
    def latency_ms(self) -> float:
        return self.checked.measurement.latency_ms

    def warnings(self) -> list[str]:
        """A busy machine, passes that never agreed: each in one line."""
        m = self.checked.measurement
        return [w for w in (m.state.warning("the passes") if m.state else None,
                            self.checked.note()) if w]

    def to_dict(self) -> dict[str, Any]:
        """What `netadapt measure --json` prints."""
        m, net = self.checked.measurement, self.network
        d = m.to_dict()
        out = {"network": net.name, "device": self.device, "latency_ms": m.latency_ms,
               "min_ms": d["min_us"] / 1000, "max_ms": d["max_us"] / 1000,
               "pass_spread": m.pass_spread, "passes": self.passes, "repeats": m.repeats,
               "repeats_ms": [x / 1000 for x in m.repeats_us],
               "repeat_spread": m.repeat_spread, "reliable": self.checked.reliable,
               "runs": m.runs, "preempted": d["preempted"], "macs": net.macs,
               "params": net.params, "machine_state": d["machine_state"],
               "measured_at": m.at, "fingerprint": m.fingerprint, "warnings": self.warnings()}
        if self.estimate is not None:
            out |= {"estimated_ms": self.estimate.total_ms,
                    "calibrated": self.estimate.calibration is not None,
                    "estimated_over_measured": self.estimate.total_ms / m.latency_ms}
        return out


def measure(device: str = "host", *, backend: str | None = None, serial: str | None = None,
            network: str | Path | None = None, model: str | None = None,
            model_file: str | Path | None = None, lut: str | Path | None = None,
            width: float | None = None, widths: str | None = None, resolution: int = 224,
            classes: int = 1000, dtype: str | None = None, passes: int = 5,
            max_repeats: int = 3, log: Log | None = None) -> Measured:
    """Time a whole network on ``device`` (interleaved passes, ``bench.timing``), again while
    its passes disagree (else flagged unreliable); with ``lut``, its estimate beside it. A
    ``model_file`` is timed as it is (its own bytes)."""
    from bench import timing
    from bench.devices import open_runners

    if passes < 1 or max_repeats < 1:
        raise OptionError("--passes and --max-repeats must be at least 1")
    net = load_network(network, model, width, widths, resolution, classes, model_file, dtype)
    est = None
    if lut is not None:  # before measuring: a missing key fails fast
        store, version = open_lut(str(lut))
        with store:
            est = estimate_network(store, version, net, log=log)
    model_bytes = Path(model_file).read_bytes() if model_file is not None else net
    with open_runners(device, backend, serial=serial) as runners:
        checked = timing.time_until_agreed(runners[0], model_bytes, passes, name=net.name,
                                           max_repeats=max_repeats)
    return Measured(net, device, passes, checked, est)
