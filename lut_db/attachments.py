"""What a version keeps beside its entries: version-level stats (e.g. the per-invoke
overhead, the machine's state over the sweep), its calibration and its validations."""

from __future__ import annotations

import json
from typing import Any

from lut_db.calibration import Calibration, CalibrationError
from lut_db.fingerprint import same_setup
from lut_db.versions import Version, now


class AttachmentsMixin:
    """LutStore's stats, calibrations and validations (uses its ``db``, ``_write``,
    ``_writable``, ``version``)."""

    def set_stat(self, version: Version, name: str, value: float, detail: Any = None) -> None:
        self._writable(version)
        self.db["version_stats"].insert({"version": version.id, "name": name, "value": value,
                                         "detail": json.dumps(detail)}, replace=True)

    def stats(self, version: Version) -> dict[str, float]:
        return {r["name"]: r["value"]
                for r in self.db["version_stats"].rows_where("version = ?", [version.id])}

    def stat_detail(self, version: Version, name: str) -> Any:
        """The detail stored with one of a version's stats (None when there is none)."""
        rows = list(self.db["version_stats"].rows_where("version = ? AND name = ?",
                                                        [version.id, name]))
        return json.loads(rows[0]["detail"]) if rows and rows[0]["detail"] else None

    def set_calibration(self, version: Version, calibration: Calibration) -> None:
        """Store a sealed version's calibration, once (it never changes afterwards)."""
        v = self.version(version.id)
        if v.status != "sealed":
            raise CalibrationError(f"{v.label} is still building: calibrate it once it is "
                                   "sealed (netadapt lut finishes the sweep)")
        v.require_same_setup(calibration.fingerprint, "its calibration must come from the "
                             "same device and settings")
        with self._write():
            if self.db["calibrations"].count_where("version = ?", [v.id]):
                raise CalibrationError(f"{v.label} is calibrated already, and a calibration "
                                       "never changes")
            self.db["calibrations"].insert({"version": v.id, "model": calibration.model,
                                            "calibration": calibration.to_json(), "at": now()})

    def calibration(self, version: Version) -> Calibration | None:
        """The calibration that holds for ``version``: its own, else that of the version
        it was derived from with the same setup (keys measured on demand add entries, not
        a new device state). None: never calibrated."""
        v: Version | None = version
        while v is not None:
            rows = list(self.db["calibrations"].rows_where("version = ?", [v.id]))
            if rows:
                cal = Calibration.from_json(rows[0]["calibration"])
                version.require_same_setup(cal.fingerprint, "its calibration was made for "
                                           "another setup and cannot be used; recalibrate "
                                           "with: netadapt calibrate")
                return cal
            parent = self.version(v.parent) if v.parent is not None else None
            v = parent if parent and same_setup(parent.fingerprint, v.fingerprint) else None
        return None

    def add_validation(self, version: Version, row: dict[str, Any]) -> None:
        self.version(version.id)
        self.db["validations"].insert({"version": version.id, "measured_at": now(), **row},
                                      replace=True)

    def validations(self, version: Version) -> list[dict[str, Any]]:
        return list(self.db["validations"].rows_where("version = ?", [version.id],
                                                      order_by="name"))
