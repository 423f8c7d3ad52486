"""The `netadapt adapt` pipeline as one library function: adapt, compare with width
multipliers, export (at int8 also full-integer, measured on the file: ``int8_exports``),
verify on the device, plot; ``result.json`` in the run folder.

    store, version = lut_for("luts/host.db", run_dir, resume=False)
    space, used = search_space(store, version, "mobilenet_v1", 32, 10, missing="error")
    result = adapt(cfg, space, dataset, run_dir, multipliers=[0.25, 0.5, 0.75], device="host")
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapter.errors import AdaptError
from bench.missing import backend_option, ensure_space, resolve
from bench.sweep_space import SweepSpace
from lut_db.estimate import MissingKeys
from lut_db.progress import Steps, silent
from lut_db.store import LutStore
from lut_db.versions import Version, parse_lut_ref

if TYPE_CHECKING:
    from adapter.arch import Architecture

Log = Callable[[str], None]
USER_GRID = 16  # channel grid of a model no LUT sweep covers (its keys: --missing measure)
# Quantization-aware fine-tuning freezes BatchNorm (the file folds its running statistics);
# at the long fine-tune's own rate that diverged on a briefly trained model (digits: 58.7 %
# -> 16 %), at a tenth of it the model improved (-> 61 %).
QAT_LR_SCALE = 0.1


def lut_for(ref: str, run_dir: Path, resume: bool) -> tuple[LutStore, Version]:
    """The LUT version; a resumed run keeps the version it started with (a LUT ref without
    @VERSION could otherwise point at a newer version by now)."""
    path, vid = parse_lut_ref(ref)
    ckpt = run_dir / "checkpoint.pt"
    if resume and vid is None and ckpt.exists():
        from adapter.checkpoints import load_checkpoint

        started = load_checkpoint(ckpt)["config"]["lut"]
        spath, svid = parse_lut_ref(started)
        if spath == path and svid is not None:
            vid = svid
    store = LutStore.open(path)
    return store, store.version(vid)


def search_space(store: LutStore, version: Version, model: str | Architecture,
                 resolution: int, classes: int,
                 grid: int | None = None, missing: str = "error", device: str | None = None,
                 log: Log | None = None, tie_bottlenecks: bool | None = None,
                 fine_step: int | None = None, dtype: str = "float32", sweep: bool = True,
                 progress: Steps = silent) -> tuple[Any, str]:
    """The search space of ``model`` (a built-in, ``pkg.module:factory``, a saved model, or
    an ``Architecture`` already traced: ``adapter.arch``) on the LUT, its latency the
    version's calibrated estimate (the plain sum, with a warning through ``log``, when the
    version has no calibration). ``dtype``: the keys' dtype (int8: the LUT's int8 sweep
    prices the full-integer network).

    Keys the LUT lacks: with ``sweep`` (the default) a built-in model's shape space at this
    resolution is swept on the LUT's own device into a derived version, as `netadapt lut`
    does (``bench.missing.ensure_space``: said in one line, resumable), and a user model's
    keys are measured there; without it they go to the ``missing`` policy
    (``bench.missing``). With ``fine_step`` the search also tries widths that much finer
    than the grid for the layer being cut, their keys measured on ``device`` when first
    needed (``OnDemand``). Returns (space, label of the version whose entries it uses)."""
    from adapter.arch import Architecture
    from adapter.search_space import SearchSpace, lut_grid, missing_keys
    from bench import zoo

    arch = (model if isinstance(model, Architecture) else
            Architecture.load(model, resolution, classes, tie_bottlenecks, dtype))
    if dtype == "int8":
        from adapter.quantize import check_int8_ops

        check_int8_ops(arch.family.network(arch.base, resolution=resolution, classes=classes))
    if arch.source in zoo.FAMILIES:
        family_space = _family_space(version, arch.source, resolution, classes, grid, dtype)
        if sweep:
            version = ensure_space(store, version, family_space, log=log, progress=progress)
        grid = grid or lut_grid(version.space, arch.source, resolution, classes,
                                f"{store.path}@{version.id}", dtype, version.device)
    else:  # the user's own model: no sweep of it to take the grid from
        grid = grid or USER_GRID
        family_space = None
    label = f"{store.path}@{version.id}"
    cal = store.calibration(version)
    if cal is None and log:
        log(f"warning: {label} has no calibration: the search ranks by the plain sum of "
            f"entries; calibrate it with: netadapt calibrate --lut {label}")
    table = store.table(version)
    space = SearchSpace(arch, resolution, classes, table, grid, "error", label, cal,
                        dtype=dtype)
    absent = missing_keys(space, table)
    if absent:
        policy = "measure" if sweep and missing == "error" else missing
        try:
            got = resolve(store, version, absent, policy, device=device, log=log)
        except MissingKeys as e:
            hint = ("sweep them with: " + _command(store, version, family_space)
                    if family_space else "")
            raise MissingKeys(e.keys, label, hint=(
                f"{hint + '; ' if hint else ''}or measure them with --missing measure "
                "(device attached), approximate them with --missing interpolate, or leave "
                "out --no-sweep")) from None
        version, label, table = got.version, got.label, got.table
    measure = OnDemand(store, version, device, log) if fine_step else None
    return (SearchSpace(arch, resolution, classes, table, grid, "error", label, cal,
                        fine_step=fine_step, measure=measure, dtype=dtype), label)


def _family_space(version: Version, model: str, resolution: int, classes: int,
                  grid: int | None, dtype: str = "float32") -> SweepSpace:
    """The shape space a built-in model needs at this resolution and dtype: at ``grid``, else
    at the grid of the LUT's sweep at this resolution, else at `netadapt lut`'s default."""
    from adapter.search_space import lut_grid

    if grid is None:
        try:
            grid = lut_grid(version.space, model, resolution, classes, "", dtype)
        except AdaptError:  # no sweep at this resolution yet: a sweep's default grid
            return SweepSpace((model,), (resolution,), classes=classes, dtype=dtype)
    return SweepSpace((model,), (resolution,), grid, classes, dtype)


def _command(store: LutStore, version: Version, space: SweepSpace) -> str:
    return space.command(version.device, store.path, backend_option(version))


class OnDemand:
    """Measures the keys finer widths need, each batch into a version derived from the last
    (``bench.missing.resolve``; a resumed run finds the versions it measured before)."""

    def __init__(self, store: LutStore, version: Version, device: str | None, log: Log | None):
        self.store, self.version, self.device, self.log = store, version, device, log

    def __call__(self, keys: list[str]) -> tuple[dict[str, float], str]:
        got = resolve(self.store, self.version, keys, "measure", device=self.device,
                      log=self.log)
        self.version = got.version
        return got.table, got.label


def adapt(cfg: Any, space: Any, dataset: Any, run_dir: Path, *, workers: int = 1,
          ray: str | None = None, resume: bool = False, multipliers: list[float] | None = None,
          device: str = "host", backend: str | None = None, measure: bool = True,
          measure_rounds: int = 3, lut_used: str = "", log: Log | None = None,
          progress: Steps = silent) -> dict:
    """Adapt, compare with the width ``multipliers`` (None: no comparison), export and, with
    ``measure``, verify on ``device`` with ``backend`` (the LUT's own) in ``measure_rounds``
    interleaved rounds: `netadapt adapt`'s options of those names. Writes result.json and
    the plots into run_dir and returns the result. ``progress`` hears every long step
    (``lut_db.progress``)."""
    from adapter.curves import equal_latency_multiplier
    from adapter.executors import make_executor
    from adapter.search import Search
    from adapter.tasks import make_context

    log = log or print
    t0 = time.perf_counter()
    if cfg.dtype == "int8":  # a calibration set too small is refused before any training
        from adapter.quantize import calibration_images

        calibration_images(dataset, cfg.calibration_batches, cfg.batch_size, cfg.seed)
    context = make_context(cfg, dataset)
    executor = make_executor(context, workers, ray)
    log(f"run folder {run_dir}; proposals on {executor.name}")
    try:
        na = Search(cfg, space, dataset, run_dir, executor, context, log=log,
                    progress=progress)
        result = na.run(resume=resume)
        adapted_ms = result["adapted"]["latency_ms"]
        m_eq, w_eq = equal_latency_multiplier(space, adapted_ms)
        result["equal_latency_multiplier"] = {"multiplier": m_eq, "widths": w_eq,
                                              **space.resources(w_eq)}
        result["multipliers"] = (na.compare_multipliers(multipliers, equal_to=adapted_ms)
                                 if multipliers else [])
    finally:
        executor.close()
    result["lut_used"] = lut_used or cfg.lut
    progress("exporting", 0, None)
    export(na, run_dir, result)
    progress("exporting", 1, 1)
    if cfg.dtype == "int8":
        # the float exports and their result are on disk before quantizing: a failed
        # quantization leaves them in place
        (run_dir / "result.json").write_text(json.dumps(result, indent=1))
        progress("int8 files", 0, None)
        int8_exports(na, dataset, result, log)
        progress("int8 files", 1, 1)
    if measure:
        verify(space, result, device, backend, measure_rounds, log, progress)
    progress("plotting", 0, None)
    result["plots"] = plots(na, space, run_dir, result)
    progress("plotting", 1, 1)
    result["wall_s"] = time.perf_counter() - t0
    (run_dir / "result.json").write_text(json.dumps(result, indent=1))
    return result


def export(na: Any, run_dir: Path, result: dict) -> None:
    """The adapted network as trained: torch weights, and a .tflite file holding the same
    weights (batch-norm folded), numerically the torch model (``adapter.export``)."""
    from adapter.export import save_exports

    result["exports"] = save_exports(na.model, run_dir, "adapted", na.arch,
                                     {"adapt_config": na.cfg.to_dict()})
    result["exports"]["initial"] = result.pop("initial_exports")
    result["curves"].update({m["name"]: m["curve"] for m in result["multipliers"]})


def int8_exports(na: Any, dataset: Any, result: dict, log: Log) -> None:
    """Each network (initial, adapted, multipliers) as a full-integer file beside its float
    one (``<stem>_int8.tflite``), its test accuracy measured on the file in LiteRT and its
    parity with the integer reference checked (``adapter.quantize.check_parity``: a file
    that fails it is not written, and the run ends with the message). ``test_acc``
    becomes the file's, so every comparison is int8 against int8; the float model's stays
    as ``test_acc_float``. An adapted network losing more than ``max_int8_drop`` points is
    fine-tuned again, quantization-aware, and quantized again."""
    from adapter import quantize
    from adapter.arch import load_exported
    from adapter.executors import torch_threads

    cfg = na.cfg
    images = quantize.calibration_images(dataset, cfg.calibration_batches, cfg.batch_size,
                                         cfg.seed)
    test = dataset.tensors("test")  # loaded once for every file
    shape = (cfg.resolution, cfg.resolution, 3)
    log(f"int8: activation ranges from {len(images)} training images "
        f"({cfg.calibration_batches} batches); accuracy measured on each file in LiteRT")

    def one(name: str, model: Any, entry: dict, tflite: str) -> float:
        q = quantize.quantize(model, images, shape, Path(tflite).stem)
        path = Path(tflite).with_name(Path(tflite).stem + "_int8.tflite")
        acc = quantize.file_accuracy(q.tflite, dataset, test)
        par = quantize.parity(q, test[0])
        try:
            quantize.check_parity(par, f"{name} ({path.name})")
        except quantize.Int8Error as e:  # the file is not written
            raise quantize.Int8Error(f"{e}; the float exports and result.json stay in "
                                     f"{na.run_dir}") from None
        path.write_bytes(q.tflite)  # only a file that passed its parity check
        float_acc = entry.get("test_acc_float", entry.get("test_acc"))
        drop = None if float_acc is None else 100 * (float_acc - acc)
        entry["int8"] = {"tflite": str(path), "test_acc": acc, "drop_points": drop,
                         "parity": par}
        if float_acc is not None:
            entry["test_acc_float"], entry["test_acc"] = float_acc, acc
        log(f"  {name}: int8 file {100 * acc:.1f}% test accuracy"
            + (f", float {100 * float_acc:.1f}% (drop {drop:+.2f} points)" if drop is not None
               else "")
            + f"; against the integer reference: top-1 agrees on "
            f"{100 * par['top1_agreement']:.2f}%, outputs within {par['output_max_steps']:g} "
            "step(s)")
        return drop or 0.0

    with torch_threads(cfg.threads):  # spinning OpenMP threads crawl on a loaded machine
        one("initial", load_exported(result["exports"]["initial"]["torch"]), result["initial"],
            result["exports"]["initial"]["tflite"])
        for m in result["multipliers"]:
            one(f"multiplier {m['name']}", load_exported(m["exports"]["torch"]), m,
                m["exports"]["tflite"])
        adapted = result["adapted"]
        drop = one("adapted", na.model, adapted, result["exports"]["tflite"])
        if drop <= cfg.max_int8_drop:
            return
        post = dict(adapted["int8"])
        post_file = Path(post["tflite"]).read_bytes()
        qat = qat_fine_tune(na, dataset, result, drop, log)
        one("adapted (quantization-aware)", na.qat_model, adapted, result["exports"]["tflite"])
        qat["drop_points_after"] = adapted["int8"]["drop_points"]
        if adapted["int8"]["test_acc"] < post["test_acc"]:  # ship the better file
            log("  the quantization-aware file scores lower: the post-training file is kept")
            Path(post["tflite"]).write_bytes(post_file)
            adapted["int8"], adapted["test_acc"] = post, post["test_acc"]
            qat["kept"] = "post-training"
        else:
            qat["kept"] = "quantization-aware"
        adapted["int8"]["qat"] = qat


def qat_fine_tune(na: Any, dataset: Any, result: dict, drop: float, log: Log) -> dict:
    """The long-term fine-tune again, quantization-aware, on a copy of the adapted model
    (``adapter.quantize.QuantAware``) at ``QAT_LR_SCALE`` x its learning rate; the float
    exports stay the float model's. The copy is saved as ``adapted_qat.pt`` and kept as
    ``na.qat_model``; returns what was done."""
    import copy

    import torch

    from adapter import quantize, train
    from adapter.data import train_loader
    from adapter.executors import torch_threads

    cfg = na.cfg
    n = len(dataset.train)
    steps = max(1, cfg.long_epochs) * train.steps_per_epoch(n, cfg.batch_size)
    lr = cfg.lr_long * QAT_LR_SCALE
    log(f"adapted: int8 drop {drop:.2f} points > {cfg.max_int8_drop:g}: quantization-aware "
        f"long-term fine-tune, {steps} steps at lr {lr:g}")
    model = copy.deepcopy(na.model)
    seed = train.derive_seed(cfg.seed, "qat")
    train.seed_all(seed)
    with torch_threads(cfg.threads), quantize.QuantAware(model, (cfg.resolution,
                                                                 cfg.resolution, 3)):
        train.train(model, train_loader(dataset, None, cfg.batch_size, steps, seed,
                                        cfg.augment, cfg.loader_workers), lr)
    model.eval()
    path = Path(result["exports"]["torch"]).with_name("adapted_qat.pt")
    torch.save({"state_dict": model.state_dict(), "widths": na.arch.widths(model),
                "arch": na.arch.to_dict()}, path)
    na.qat_model = model
    return {"steps": steps, "lr": lr, "drop_points_before": drop, "torch": str(path)}


def finished_result(run_dir: Path) -> dict | None:
    """The run's result.json when ``adapt`` finished the run, else None. (An int8 run writes
    result.json once before its int8 files too; only the last write has ``wall_s``.)"""
    path = run_dir / "result.json"
    if not path.exists():
        return None
    result = json.loads(path.read_text())
    return result if "wall_s" in result else None


def measured_file(entry: dict, fallback: str) -> bytes:
    """The file a network of a run is measured as: its int8 file when it has one."""
    return Path(entry.get("int8", {}).get("tflite", fallback)).read_bytes()


def run_files(result: dict) -> dict[str, bytes]:
    """A finished run's networks as they are measured: initial, adapted and each multiplier
    network (by its name), each as its exported file (``measured_file``)."""
    nets = {"initial": measured_file(result["initial"], result["exports"]["initial"]["tflite"]),
            "adapted": measured_file(result["adapted"], result["exports"]["tflite"])}
    for m in result["multipliers"]:
        nets[m["name"]] = measured_file(m, m["exports"]["tflite"])
    return nets


def verify(space: Any, result: dict, device: str, backend: str | None, rounds: int,
           log: Log, progress: Steps = silent) -> None:
    """Measure initial, adapted and multiplier networks whole on the device, interleaved:
    each as its exported file, the one that holds its trained weights; with a sample of
    their layers timed alone again between rounds (the device's drift since the LUT)."""
    from adapter.on_device import measure_with_drift

    nets = run_files(result)
    keys = [k for part in ("initial", "adapted")
            for k in space.network(result[part]["widths"]).keys]
    log(f"measuring {len(nets)} networks on {device} ({rounds} interleaved rounds)")
    measured = measure_with_drift(nets, device, backend, rounds, log,
                                  lut=space._latency.table, keys=keys, progress=progress)
    result["measured_on"] = device if measured else None
    if not measured:
        return
    got, result["drift_factor"] = measured
    result["initial"]["measured_ms"] = got["initial"]
    result["adapted"]["measured_ms"] = got["adapted"]
    for m in result["multipliers"]:
        m["measured_ms"] = got[m["name"]]
    quality(result)


def quality(result: dict) -> None:
    """Estimated vs measured, and adapted vs multipliers at equal latency / accuracy."""
    from adapter.curves import interpolate_curve, speedup_at_equal_accuracy

    a, i = result["adapted"], result["initial"]
    q: dict[str, Any] = {
        "adapted_est_vs_measured_pct": 100 * (a["latency_ms"] - a["measured_ms"]) / a["measured_ms"],
        "initial_est_vs_measured_pct": 100 * (i["latency_ms"] - i["measured_ms"]) / i["measured_ms"],
        "measured_ratio": a["measured_ms"] / i["measured_ms"],
        "estimated_ratio": a["latency_ms"] / i["latency_ms"],
    }
    drift = result.get("drift_factor")
    if drift:  # the device's speed now against the LUT's, taken out of the comparison
        q["drift_factor"] = drift
        q["adapted_est_vs_measured_drift_out_pct"] = 100 * (
            a["latency_ms"] * drift - a["measured_ms"]) / a["measured_ms"]
        q["initial_est_vs_measured_drift_out_pct"] = 100 * (
            i["latency_ms"] * drift - i["measured_ms"]) / i["measured_ms"]
    eq = [m for m in result["multipliers"] if "equal latency" in m["name"]]
    if eq and "measured_ms" in eq[0]:
        q["equal_latency_multiplier"] = {"name": eq[0]["name"], "latency_ms": eq[0]["latency_ms"],
                                         "measured_ms": eq[0]["measured_ms"],
                                         "test_acc": eq[0]["test_acc"]}
    base = [m for m in result["multipliers"] if "measured_ms" in m]
    if base and "test_acc" in a:
        xs, ys = [m["measured_ms"] for m in base], [m["test_acc"] for m in base]
        q["multiplier_acc_at_adapted_latency"] = interpolate_curve(xs, ys, a["measured_ms"])
        q["speedup_at_equal_accuracy"] = speedup_at_equal_accuracy(xs, ys, a["measured_ms"],
                                                                   a["test_acc"])
    result["quality"] = q


def plots(na: Any, space: Any, run_dir: Path, result: dict) -> list[str]:
    from adapter import plots

    cfg = na.cfg
    out = []
    budget = result["budgets"].get("latency_ms")
    out.append(plots.progress(na.state["history"], budget, run_dir / "progress.png",
                              f"NetAdapt: {cfg.model} @ {cfg.resolution} px on {cfg.lut}",
                              measured=result.get("measured_budget")))
    eq = result["equal_latency_multiplier"]
    series = {"initial": result["initial"]["widths"],
              f"NetAdapt ({result['adapted']['latency_ms']:.3f} ms est.)": result["adapted"]["widths"],
              f"multiplier x{eq['multiplier']:.2f} ({eq['latency_ms']:.3f} ms est.)": eq["widths"]}
    out.append(plots.filters(list(space.fam.slots), series, run_dir / "filters.png",
                             "Filters per layer: NetAdapt vs width multiplier of equal "
                             "estimated latency"))
    if any(result["curves"].values()):
        out.append(plots.training_curves(
            result["curves"], run_dir / "training.png", "The shared training recipe: test "
            f"accuracy per epoch ({result['recipe']['epochs']} epochs, cosine)"))
    if result["multipliers"]:
        points = {"initial": result["initial"], "adapted": result["adapted"]}
        key = "measured_ms" if "measured_ms" in result["adapted"] else "latency_ms"
        where = f" on {result.get('measured_on')}" if key == "measured_ms" else ""
        if "int8" in result["adapted"]:
            where += " (int8 files)"
        out.append(plots.tradeoff(result["multipliers"], points, run_dir / "tradeoff.png",
                                  f"{cfg.model} on {result['data'].split(':')[0]}: test "
                                  f"accuracy vs latency{where}", key=key))
    return [str(p) for p in out]
