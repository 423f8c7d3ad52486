"""Calibration section of `make bench`: how well each in-network model predicts networks it
was not fitted on, side by side, and what calibrating costs.

On luts/host.db (built first when missing): the version is calibrated if it is not
(timed: the cost `make lut` pays), then three test sets are measured whole in one
session, interleaved, with the drift factor taken out as the calibration does:

- ``unseen``: the LUT's own families at its resolution, another seed than the
  calibration set, with off-grid widths (keys measured on demand);
- ``held_out``: the ResNet- and VGG-style families no sweep contained;
- ``res32``: MobileNetV1 width configs at 32 px (the adapt demo's resolution);
- ``adapted32``: what NetAdapt makes at 32 px: narrow multipliers, and x0.5 networks with
  their late (weight-heavy) layers cut hardest.

Each test network is measured ``REPEATS`` times at separate moments (blocks of interleaved
passes through the session): the median is its measured latency, and the repeats' spread
is the repeatability every model's Bland–Altman limits stand beside (``limits``, per test
set; ``analysis.agreement``).

Candidates, each fitted on the calibration set only (whose layers are also profiled by
the runtime's op profiler): the plain sum (the paper), the sum less the per-invoke
overhead, one scale factor, the per-op-class correction (the report's model before
calibrations were stored), the v2 cache model (an extra cost per MB of weights that fit
in L2), v2 only where the network's weights do not fit, the roofline model with its cache
window cross-validated over the whole grid (v3 as it was), and the candidates
``analysis.calibrate.fit`` chooses from now (fitted on totals; on per-layer times too;
with a factor per layer kind), their window chosen from the L2 and L3 the device reports;
the one it keeps, the same with the L2 window alone, and the calibration stored with the
LUT. ``unseen`` leaves out the calibration set's own networks (the width multipliers are
in both samples).
The side-by-side table is printed (``table``); everything else is in the JSON.
Runnable alone: ``python -m benchmarks.calibration_bench [--lut luts/host.db]``.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import nnls

from analysis import agreement, anchors
from analysis import calibrate as cb
from analysis.calibration_fit import errors
from analysis.families import HELD_OUT
from analysis.features import op_class
from analysis.sampling import Space, sample_networks
from analysis.stats import out_of_fold
from bench import zoo
from bench.devices import open_runners
from bench.missing import ensure_keys
from bench.sweep import build_lut
from bench.sweep_space import SweepSpace
from lut_db.calibration import Calibration, act_mb, weight_mb
from lut_db.network import Network
from lut_db.store import LutStore

Predict = Callable[[cb.Sample], float]
REPEATS = 5  # each network measured at this many separate moments (the median: less noise
# in the truth the estimate is scored against; the first two give the noise-floor row)
PASSES = 2  # interleaved passes per repeat
NOISE_FLOOR = "the same networks measured again (noise floor)"
STORED = "as stored with the LUT"  # a stable name: the README's headline reads it
ANCHORED = "as stored, re-levelled by its own networks measured now"  # (stable too)


def test_sets(space: Space, fitted: set[str] = frozenset()) -> dict[str, list[Network]]:
    """The test sets; ``unseen`` without the networks named in ``fitted``."""
    rng = random.Random(11)
    res = space.resolutions[0]
    unseen = [n for n in sample_networks(space, 30, seed=7, held_out=())
              if n.name not in fitted]
    held = [f.network(width_mult=m, resolution=res, classes=space.classes,
                      name=f"{f.name}-x{m}-{res}") for f in HELD_OUT.values()
            for m in (0.25, 0.5, 0.75, 1.0)]
    v1 = zoo.MOBILENET_V1
    choices = zoo.slot_choices(v1, space.grid)
    res32 = [v1.network({s: rng.choice(choices[s]) for s in v1.slots}, resolution=32,
                        classes=space.classes, name=f"v1-32-r{i}") for i in range(10)]
    res32 += [v1.network(width_mult=m, resolution=32, classes=space.classes,
                         name=f"v1-32-x{m}") for m in (0.25, 0.5, 0.75, 1.0)]
    adapted = [v1.network(width_mult=m, resolution=32, classes=space.classes,
                          name=f"v1-32-x{m}") for m in (0.125, 0.2, 0.3, 0.35, 0.42)]
    for i in range(11):
        w = v1.widths(width_mult=0.5)
        for j, s in enumerate(v1.slots):
            cut = rng.uniform(0.2, 0.9) if j >= 6 else rng.uniform(0.7, 1.0)
            w[s] = min(choices[s], key=lambda c: abs(c - w[s] * cut))
        adapted.append(v1.network(w, resolution=32, classes=space.classes,
                                  name=f"v1-32-adapted-{i}"))
    return {"unseen": unseen, "held_out": held, "res32": res32, "adapted32": adapted}


def _solve(x: np.ndarray, gap: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Non-negative coefficients on relative errors."""
    coef, _ = nnls(x / scale[:, None], gap / scale)
    return coef


def _out_of_fold(base: np.ndarray, x: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """Each network's out-of-fold relative error under ``base + x @ coef``."""

    def fit_predict(train: np.ndarray, test: np.ndarray) -> np.ndarray:
        coef = _solve(x[train], measured[train] - base[train], measured[train])
        return base[test] + x[test] @ coef

    return out_of_fold(len(measured), fit_predict) / measured - 1


def fit_additive(train: Sequence[cb.Sample], o: float, cutoff: bool) -> Predict:
    """The v2 model, for comparison: an extra cost per MB of each layer's weights when they
    fit in L2 (they are warm alone, cold inside), with activation and per-layer terms; with
    ``cutoff`` only in networks whose weights do not fit in that L2 themselves. L2 chosen
    by cross-validation, like v3's."""

    def feats(s: cb.Sample, l2: float) -> list[float]:
        w = [weight_mb(sp) for sp, _ in s.layers]
        cold = not cutoff or sum(w) > l2
        return [sum(x for x in w if x <= l2) if cold else 0.0,
                sum(act_mb(sp) for sp, _ in s.layers), float(len(s.layers))]

    m = np.array([s.measured_us for s in train])
    base = np.array([sum(e - o for _, e in s.layers) + o for s in train])

    def cv_error(l2: float) -> float:
        x = np.array([feats(s, l2) for s in train])
        return float(np.mean(np.abs(_out_of_fold(base, x, m))))

    l2 = min(cb.CACHE_GRID_MB, key=cv_error)
    coef = _solve(np.array([feats(s, l2) for s in train]), m - base, m)
    return lambda s: sum(e - o for _, e in s.layers) + o + float(np.dot(feats(s, l2), coef))


MIN_SHARE = 0.05  # op classes with less of the networks' entries than this get no factor


def fit_per_class(train: Sequence[cb.Sample], aligned: Predict,
                  by_class: Callable[[cb.Sample], dict[str, float]],
                  mb: Callable[[cb.Sample], tuple[float, float]]) -> Predict:
    """The per-op-class correction, for comparison: the aligned sum plus a factor per op
    class x its entries (1x1 and depthwise convs lose more inside a network than 3x3 ones)
    and a cost per MB of weights and of activations, fitted like v3 on relative errors.
    Classes under MIN_SHARE of the entries keep no factor (it would fit noise); a class
    never seen (a held-out family's) gets the fitted ones' time-weighted mean."""
    totals: dict[str, float] = {}
    for s in train:
        for c, v in by_class(s).items():
            totals[c] = totals.get(c, 0.0) + v
    whole = sum(totals.values()) or 1.0
    classes = sorted(c for c, v in totals.items() if v / whole >= MIN_SHARE)

    def feats(s: cb.Sample) -> list[float]:
        e = by_class(s)
        return [e.get(c, 0.0) for c in classes] + list(mb(s))

    m = np.array([s.measured_us for s in train])
    x = np.array([feats(s) for s in train], float).reshape(len(train), len(classes) + 2)
    coef = _solve(x, m - np.array([aligned(s) for s in train]), m)
    rel = {c: float(k) for c, k in zip(classes, coef[:-2])}
    other = sum(rel[c] * totals[c] for c in classes) / (sum(totals[c] for c in classes) or 1.0)
    rel.update({c: 0.0 for c in totals if c not in rel})  # seen, too small to fit

    def predict(s: cb.Sample) -> float:
        extra = sum(rel.get(c, other) * v for c, v in by_class(s).items())
        return aligned(s) + extra + float(np.dot(coef[-2:], mb(s)))

    return predict


def candidates(train: Sequence[cb.Sample], cal: Calibration,
               cache_kb: dict[str, int] | None) -> dict[str, Predict]:
    o = cal.overhead_us

    def raw(s: cb.Sample) -> float:
        return sum(e for _, e in s.layers)

    def aligned(s: cb.Sample) -> float:
        return raw(s) - (len(s.layers) - 1) * o

    k = float(np.median([s.measured_us / aligned(s) for s in train]))

    def by_class(s: cb.Sample) -> dict[str, float]:
        out: dict[str, float] = {}
        for spec, e in s.layers:
            out[op_class(spec)] = out.get(op_class(spec), 0.0) + e
        return out

    def mb(s: cb.Sample) -> tuple[float, float]:
        return (sum(weight_mb(sp) for sp, _ in s.layers), sum(act_mb(sp) for sp, _ in s.layers))

    totals = [replace(s, profile_us=None) for s in train]
    v3 = cb.fit(totals, o, {k: v for k, v in cal.fingerprint.items() if k != "cache_kb"},
                weights_only=True)
    now = cb.fit_candidates(train, o, cal.fingerprint, cache_kb=cache_kb)
    kept = cb.fit(train, o, cal.fingerprint, cache_kb=cache_kb)
    l2 = {"l2": cache_kb["l2"]} if cache_kb and cache_kb.get("l2") else None
    l2_alone = cb.fit(train, o, cal.fingerprint, cache_kb=l2) if l2 and cache_kb != l2 else None
    v2, v2n = fit_additive(train, o, cutoff=False), fit_additive(train, o, cutoff=True)
    per_class = fit_per_class(train, aligned, by_class, mb)
    return {
        "plain sum (paper)": raw,
        "sum - overhead": aligned,
        "one scale factor": lambda s: k * aligned(s),
        "per-op-class correction": per_class,
        "cache model v2 (extra us per MB of weights that fit in L2)": v2,
        "v2, only where the network's weights do not fit": v2n,
        "v3: roofline on totals, cache window cross-validated": predict(v3),
        **{f"{name} ({window_label(c)})": predict(c) for c in now for name in c.candidates},
        f"kept by calibrate: {kept.model}": predict(kept),
        **({f"kept with the L2 window alone: {l2_alone.model}": predict(l2_alone)}
           if l2_alone else {}),
        STORED: predict(cal),  # its model: the section's calibration/model
        **anchored(cal, train),
    }


def window_label(cal: Calibration) -> str:
    """Which window a candidate has: the L2's, the L3's, or the grid's (no caches)."""
    if cal.cache_source.startswith("cross-validated"):
        return "window CV"
    return "L3 window" if cal.cache_source.endswith("(the L3's)") else "L2 window"


def anchored(cal: Calibration, train: Sequence[cb.Sample]) -> dict[str, Predict]:
    """The stored calibration re-levelled by its own networks measured in this session
    (``analysis.anchors``): nothing when too few were."""
    pairs = [(cal.network_us(s.layers), s.measured_us) for s in train]
    if anchors.level(pairs) is None:
        return {}

    def predict_one(s: cb.Sample) -> float:
        return anchors.anchored([cal.network_us(s.layers)], pairs)[0]  # type: ignore[index]

    return {ANCHORED: predict_one}


def predict(cal: Calibration) -> Predict:
    return lambda s: cal.network_us(s.layers)


def score(pred: Predict, samples: Sequence[cb.Sample]) -> dict[str, Any]:
    rel = np.array([pred(s) / s.measured_us - 1 for s in samples])
    p = np.array([pred(s) for s in samples])
    m = np.array([s.measured_us for s in samples])
    out = errors(rel)
    out["pearson_r"] = float(np.corrcoef(p, m)[0, 1]) if len(samples) > 2 else None
    out["mean_signed_pct"] = float(100 * rel.mean())
    return out


def noise_floor(samples: Sequence[cb.Sample]) -> dict[str, Any]:
    """The second repeat scored against the first, as a model is scored."""
    pairs = [s.repeats_us[:2] for s in samples if len(s.repeats_us) >= 2]
    if not pairs:
        return {"n": 0}
    out = errors(np.array([b / a - 1 for a, b in pairs]))
    out["mean_signed_pct"] = float(100 * np.mean([b / a - 1 for a, b in pairs]))
    return out


def limits(preds: dict[str, Predict], samples: Sequence[cb.Sample]) -> dict[str, Any]:
    """Each model's Bland–Altman limits on one test set, beside the set's repeatability."""
    measured = [s.measured_us for s in samples]
    repeats = [s.repeats_us for s in samples]
    out: dict[str, Any] = {"repeatability": agreement.repeatability(repeats), "models": {}}
    for name, p in preds.items():
        a = agreement.side_by_side([p(s) for s in samples], measured, repeats)
        out["models"][name] = {**a["estimate"], "width_ratio": a.get("width_ratio")}
    return out


def run(out: dict[str, Any], lut: Path = Path("luts/host.db")) -> None:
    with open_runners("host") as runners:
        runner = runners[0]
        if not lut.exists():
            t0 = time.perf_counter()
            build_lut(lut, "host", runners, SweepSpace(("mobilenet_v1", "mobilenet_v2")))
            out["lut_build_s"] = round(time.perf_counter() - t0, 1)
        store = LutStore.open(lut)
        store.lock()
        version = store.version()
        t0 = time.perf_counter()
        cal = store.calibration(version)
        if cal is None:
            cal = cb.calibrate(store, version, runner)
            out["calibration_s"] = round(time.perf_counter() - t0, 1)
        out["lut"] = version.label
        out["calibration"] = json.loads(cal.to_json()) | {"networks": len(cal.networks)}
        space = Space.of(version.space)
        train_nets = cb.calibration_set(space, len(cal.networks))
        sets = test_sets(space, {n.name for n in train_nets})
        nets = [n for group in sets.values() for n in group]
        table = store.table(version)
        absent = sorted({k for n in nets for k in n.keys if k not in table})
        if absent:
            ensure_keys(store, version, absent, runner=runner)
        # the calibration set again, in the same session as the tests, for the fits; every
        # network measured REPEATS times at separate moments
        samples = cb.measure_samples(store, version, runner, train_nets + nets, PASSES,
                                     repeats=REPEATS, profile=train_nets)
        caches = version.fingerprint.get("cache_kb") or runner.fingerprint().get("cache_kb")
    store.close()
    by_name = {s.name: s for s in samples}
    train = [by_name[n.name] for n in train_nets]
    groups = {g: [by_name[n.name] for n in nets_] for g, nets_ in sets.items()}
    out["samples"] = str(save_samples(samples_path(lut), train, groups, cal, caches))
    score_all(out, train, groups, cal, caches)
    print(table_text(out["table"]), flush=True)


def samples_path(lut: Path) -> Path:
    return lut.with_name(f"{lut.stem}-calibration-bench.json")


def save_samples(path: Path, train: Sequence[cb.Sample], groups: dict[str, list[cb.Sample]],
                 cal: Calibration, caches: dict[str, int] | None) -> Path:
    """Everything the scoring reads, so that a candidate model can be scored again on the
    same measurements, offline (``--replay``): no second quiet machine needed."""
    def one(s: cb.Sample) -> dict[str, Any]:
        return {"name": s.name, "layers": [[spec.key, us] for spec, us in s.layers],
                "measured_us": s.measured_us, "repeats_us": s.repeats_us,
                "profile_us": s.profile_us}

    path.write_text(json.dumps({"calibration": json.loads(cal.to_json()), "cache_kb": caches,
                                "train": [one(s) for s in train],
                                "groups": {g: [one(s) for s in ss] for g, ss in groups.items()}}))
    return path


def replay(path: Path) -> dict[str, Any]:
    """The scoring of a saved run (``save_samples``) with today's candidates."""
    from lut_db.spec import LayerSpec

    saved = json.loads(path.read_text())

    def one(d: dict[str, Any]) -> cb.Sample:
        return cb.Sample(d["name"], [(LayerSpec.parse(k), us) for k, us in d["layers"]],
                         d["measured_us"], d["repeats_us"], None, d["profile_us"])

    out: dict[str, Any] = {"replayed": str(path)}
    score_all(out, [one(d) for d in saved["train"]],
              {g: [one(d) for d in ds] for g, ds in saved["groups"].items()},
              Calibration.from_json(json.dumps(saved["calibration"])), saved["cache_kb"])
    return out


def score_all(out: dict[str, Any], train: Sequence[cb.Sample],
              groups: dict[str, list[cb.Sample]], cal: Calibration,
              caches: dict[str, int] | None) -> None:
    """Fit every candidate on ``train`` and score it on each test set, into ``out``."""
    t0 = time.perf_counter()
    preds = candidates(train, cal, caches)
    out["fit_s"] = round(time.perf_counter() - t0, 1)
    out["cache_kb"] = caches
    out["profiled"] = sum(s.profile_us is not None for s in train)
    out["models"] = {name: {g: score(p, group) for g, group in groups.items()}
                     for name, p in preds.items()}
    # no estimate can agree with a measurement better than the measurement agrees with
    # itself: one repeat against the next (this machine's noise floor)
    out["models"][NOISE_FLOOR] = {g: noise_floor(group) for g, group in groups.items()}
    out["limits"] = {g: limits(preds, group) for g, group in groups.items()}
    out["repeats"], out["passes_per_repeat"] = REPEATS, PASSES
    state = train[0].state if train else None
    out["machine_state"] = state.to_dict() if state else None
    share = [cal.evicted(sum(cal.footprint_mb(sp) for sp, _ in s.layers)) for s in train]
    out["calibration_set"] = {"networks": len(train), "warm": sum(x == 0 for x in share),
                              "partly_evicted": sum(0 < x < 1 for x in share)}
    out["table"] = side_by_side(out["models"])


def side_by_side(models: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per model: per test set, within ±5 % of its networks and the mean error."""
    rows = []
    for name, sets in models.items():
        row: dict[str, Any] = {"model": name}
        for g, sc in sets.items():
            n = sc.get("n", 0)
            row[g] = (f"{sc['within_5']}/{n}, {sc.get('mean_signed_pct', 0):+.1f} %" if n
                      else "-")
        rows.append(row)
    return rows


def table_text(rows: list[dict[str, Any]]) -> str:
    """The rows as aligned text: ±5 % count and mean signed error per test set."""
    cols = list(rows[0]) if rows else []
    width = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    line = "  ".join(f"{c:<{width[c]}}" for c in cols)
    body = ["  ".join(f"{r.get(c, '')!s:<{width[c]}}" for c in cols) for r in rows]
    return "\n".join(["within ±5 % / mean signed error, per test set", line, *body])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lut", type=Path, default=Path("luts/host.db"))
    ap.add_argument("--replay", type=Path, help="score a saved run's measurements again "
                    "(the file a run writes beside its LUT), timing nothing")
    args = ap.parse_args()
    if args.replay:
        print(table_text(replay(args.replay)["table"]))
        return
    out: dict[str, Any] = {}
    run(out, args.lut)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
