"""A version's entries: one row per key (its spec's columns, its timing or its failure),
and the keys measured again on other phones of a farm (replicas)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from typing import Any

from lut_db.errors import LutError
from lut_db.fingerprint import same_setup
from lut_db.spec import LayerSpec
from lut_db.versions import Version, now


def spec_columns(spec: LayerSpec) -> dict[str, Any]:
    return {"op": spec.op, "h": spec.h, "w": spec.w, "cin": spec.cin, "cout": spec.cout,
            "kh": spec.kernel[0], "kw": spec.kernel[1], "sh": spec.stride[0],
            "sw": spec.stride[1], "padding": spec.padding, "dh": spec.dilation[0],
            "dw": spec.dilation[1], "act": spec.act, "bias": int(spec.bias),
            "dtype": spec.dtype}


def _timing_columns(t: Any) -> dict[str, Any]:
    return {"latency_us": t.latency_us, "median_us": t.median_us, "mean_us": t.mean_us,
            "std_us": t.std_us, "min_us": t.min_us, "max_us": t.max_us, "runs": t.runs,
            "warmup_runs": t.warmup_runs, "samples_us": json.dumps(list(t.samples_us)),
            "extra": json.dumps(t.extra)}


def _measurement_row(version: Version, key: str, res: Any, serial: str) -> dict[str, Any]:
    row: dict[str, Any] = {"version": version.id, "key": key,
                           **spec_columns(LayerSpec.parse(key)), "serial": serial,
                           "measured_at": now()}
    if hasattr(res, "latency_us"):
        row.update(_timing_columns(res), status="ok", error=None, output=None)
    else:
        row.update(status="failed", error=res.error, output=res.output[-20000:])
    return row


class EntriesMixin:
    """LutStore's entries (uses its ``db``, ``_write``, ``_writable``, ``version``)."""

    def add_results(self, version: Version, results: Iterable[tuple[str, Any]],
                    serial: str = "") -> int:
        """Store one batch of (key, Timing | Failure) in one transaction; returns rows added."""
        self._writable(version)
        rows = [_measurement_row(version, key, res, serial) for key, res in results]
        try:
            with self._write():
                # A key that failed before is being retried: its new result replaces it.
                self.db.conn.executemany(
                    "DELETE FROM measurements WHERE version = ? AND key = ? AND status = 'failed'",
                    [(version.id, r["key"]) for r in rows])
                self.db["measurements"].insert_all(rows, batch_size=len(rows) + 1)
        except sqlite3.IntegrityError as e:
            raise LutError(f"version {version.id}: {e} (a key is measured once per "
                           "version)") from None
        return len(rows)

    def add_replicas(self, version: Version, results: Iterable[tuple[str, Any]],
                     serial: str) -> None:
        """Keys measured again on another phone of the farm (cross-device agreement)."""
        self._writable(version)
        rows = [{"version": version.id, "key": k, "serial": serial, "measured_at": now(),
                 **_timing_columns(t)} for k, t in results]
        with self._write():
            self.db["replicas"].insert_all(rows, batch_size=len(rows) + 1, replace=True)

    def keys(self, version: Version, status: str | None = None) -> set[str]:
        """Keys stored in a version (ok and failed alike unless status is given)."""
        where, args = "version = ?", [version.id]
        if status:
            where, args = where + " AND status = ?", args + [status]
        return {r["key"] for r in self.db["measurements"].rows_where(where, args, select="key")}

    def root(self, version: Version) -> Version:
        """The sweep a version descends from through versions of the same setup."""
        while version.parent is not None:
            parent = self.version(version.parent)
            if not same_setup(parent.fingerprint, version.fingerprint):
                break
            version = parent
        return version

    def lineage(self, version: Version) -> tuple[dict[str, float], dict[str, float], list[str]]:
        """The entries of the sweep ``version`` descends from; apart from them, the keys
        that sealed versions of the same setup derived from it added (measured on demand,
        later sweeps: at other times, so kept apart for drift factors); and those versions'
        labels. The same for a version and its derived ones."""
        base = self.root(version)
        table = self.table(base)
        extra: dict[str, float] = {}
        labels = []
        family = {base.id}
        for v in self.versions():  # ids grow: a parent comes before its children
            if (v.parent in family and same_setup(v.fingerprint, base.fingerprint)
                    and v.status == "sealed"):
                family.add(v.id)
                extra.update({k: x for k, x in self.table(v).items() if k not in table})
                labels.append(v.label)
        return table, extra, labels

    def table(self, version: Version) -> dict[str, float]:
        """key -> latency (us) of every measured entry: what estimation sums (a sealed
        version is checked against its digest first, once per store)."""
        self.version(version.id)
        return {k: v for k, v in self.db.execute(
            "SELECT key, latency_us FROM measurements WHERE version = ? AND status = 'ok'",
            [version.id]).fetchall()}

    def entries(self, version: Version) -> list[dict[str, Any]]:
        return list(self.db["measurements"].rows_where("version = ?", [version.id],
                                                       order_by="key"))

    def failures(self, version: Version) -> list[dict[str, Any]]:
        return list(self.db["measurements"].rows_where(
            "version = ? AND status = 'failed'", [version.id],
            select="key, error, output, serial"))

    def counts(self, version: Version) -> dict[str, int]:
        rows = self.db.execute("SELECT status, count(*) FROM measurements WHERE version = ? "
                               "GROUP BY status", [version.id]).fetchall()
        return {s: n for s, n in rows}

    def replicas(self, version: Version) -> list[dict[str, Any]]:
        return list(self.db["replicas"].rows_where("version = ?", [version.id]))
