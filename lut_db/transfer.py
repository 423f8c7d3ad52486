"""Moving versions between files: ``export`` writes a version as JSON (with its metadata
and digest) or CSV (the entries alone); ``import_`` reads either back as a new version,
checking an export's entries against its digest."""

from __future__ import annotations

import csv
import io
import json
import math
import sqlite3
from enum import StrEnum
from typing import Any

from lut_db import digest as dg
from lut_db.entries import spec_columns
from lut_db.errors import DigestTooNew, LutError, VersionTampered
from lut_db.schema import MEASUREMENT_COLUMNS, SCHEMA_VERSION, TIMING_COLUMNS
from lut_db.seals import entry_rows
from lut_db.spec import LayerSpec, SpecError
from lut_db.versions import Version


class ExportFormat(StrEnum):
    """What `export` writes and `import_` reads: JSON (with the version's metadata and
    digest) or CSV (the entries alone)."""

    JSON = "json"
    CSV = "csv"


class TransferMixin:
    """LutStore's export and import (uses its ``db``, ``_write``, ``version``,
    ``create_version``, ``seal``)."""

    def export(self, version: Version, fmt: str = "json") -> str:
        """A version with its metadata (JSON) or its entries (CSV)."""
        v = self.version(version.id)
        rows = self.entries(v)
        if fmt == "csv":
            buf = io.StringIO()
            cols = [c for c in MEASUREMENT_COLUMNS if c != "version"]
            writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
            return buf.getvalue()
        if fmt != "json":
            raise LutError(f"unknown export format {fmt!r}; use json or csv")
        meta = {k: getattr(v, k) for k in ("id", "device", "backend", "status", "created",
                                           "sealed", "fingerprint", "parent", "note", "space")}
        for r in rows:
            r.pop("version", None)
        out = {"format": "netadapt-lut", "schema": SCHEMA_VERSION, "version": meta}
        seal = self.seal_info(v)
        if seal is not None:  # the import checks its entries against it
            out["digest"] = {"format": seal.format, "sha256": seal.digest, "rows": seal.rows}
        return json.dumps({**out, "measurements": rows}, indent=1)

    def import_(self, text: str, fmt: str = "json", device: str | None = None,
                backend: str | None = None, seal: bool = True) -> Version:
        """Import an export as a new version (sealed unless seal=False)."""
        if fmt == "json":
            try:
                data = json.loads(text)
                meta, rows = data["version"], data["measurements"]
                if not isinstance(meta, dict) or not isinstance(rows, list):
                    raise TypeError
            except (json.JSONDecodeError, KeyError, TypeError):
                raise LutError("not a netadapt LUT export (expected JSON from 'db export')") from None
        elif fmt == "csv":
            meta, rows = {}, list(csv.DictReader(io.StringIO(text)))
        else:
            raise LutError(f"unknown import format {fmt!r}; use json or csv")
        device = device or meta.get("device")
        backend = backend or meta.get("backend")
        if not device or not backend:
            raise LutError("the import has no device/backend: pass --device and --backend")
        note = f"imported from {meta.get('device')}@{meta.get('id')}" if meta else "imported"
        expected = _export_digest(data) if fmt == "json" else None
        # check every row before writing anything
        clean = [_import_row(r, blank_is_none=fmt == "csv") for r in rows]
        with self._write():  # a failed import leaves no version behind
            v = self.create_version(device, backend, meta.get("fingerprint") or {},
                                    note=note, space=meta.get("space") or {})
            for row in clean:
                row["version"] = v.id
            try:
                self.db["measurements"].insert_all(clean, batch_size=len(clean) + 1)
            except sqlite3.IntegrityError as e:
                raise LutError(f"import: {e} (a key appears twice in the import)") from None
            if expected and dg.content_digest(v.fingerprint, entry_rows(self.db, v)) != expected:
                raise VersionTampered(
                    f"the export of {meta.get('device')}@{meta.get('id')} does not match its "
                    "digest: it was edited after export; export it again from the LUT file, or "
                    "delete its \"digest\" to import the edited numbers as a version of their own")
            if not seal:
                return v
            return self.seal(v, "imported, digest checked" if expected else "imported")


def _export_digest(data: dict[str, Any]) -> str | None:
    """The sha256 an export was sealed with (None: it has none, e.g. a building version)."""
    d = data.get("digest")
    if d is None:
        return None
    if not isinstance(d, dict) or not isinstance(d.get("format"), int):
        raise LutError("not a netadapt LUT export: its 'digest' is malformed")
    if d["format"] > dg.DIGEST_FORMAT:
        raise DigestTooNew(f"the export's digest has format {d['format']}, written by a newer "
                           f"netadapt-farm (this one checks format {dg.DIGEST_FORMAT}); "
                           "upgrade: pip install -U netadapt-farm")
    return str(d.get("sha256"))


def _import_row(r: dict[str, Any], blank_is_none: bool) -> dict[str, Any]:
    """One imported row, checked, with its spec's columns from its canonical key (its
    version is filled in once the new version exists)."""
    if not isinstance(r, dict):
        raise LutError(f"import: bad row {r!r:.80}: expected an object with a 'key'")
    try:
        spec = LayerSpec.parse(r["key"])
    except (KeyError, SpecError) as e:
        raise LutError(f"import: bad key in row {r!r:.80}: {e}") from None
    row = {c: r.get(c) for c in MEASUREMENT_COLUMNS}
    row.update(spec_columns(spec), version=0, key=spec.key)  # the canonical key
    if blank_is_none:  # CSV cannot tell an empty string from a missing value
        row = {k: (None if v == "" else v) for k, v in row.items()}
    if row.get("status") is None:
        row["status"] = "ok"
    # a number SQLite cannot read stays text in a REAL column: "abc" or "nan" would be
    # sealed as an ok entry, as would a negative latency
    for column, kind in TIMING_COLUMNS.items():
        if kind is not str and row[column] is not None and not _non_negative(row[column]):
            raise LutError(f"import: row {spec.key!r}: {column} {row[column]!r} is not a "
                           "number of 0 or more")
    if row["status"] == "ok" and (row["latency_us"] is None or float(row["latency_us"]) <= 0):
        raise LutError(f"import: row {spec.key!r}: an ok entry needs a latency_us above 0, "
                       f"got {row['latency_us']!r}")
    return row


def _non_negative(value: Any) -> bool:
    try:
        return 0 <= float(value) < math.inf and not isinstance(value, bool)
    except (TypeError, ValueError):
        return False
