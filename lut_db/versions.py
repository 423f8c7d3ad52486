"""A LUT version as a value: what it is, when and how it was measured, and how users name it.

``Version`` is a row of the ``versions`` table; the store hands them out and every store
method takes one. ``luts/host.db@3`` names version 3 of a file (``parse_lut_ref``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lut_db.errors import LutError, SetupMismatch
from lut_db.fingerprint import setup_changes, setup_hash


@dataclass(frozen=True)
class Version:
    id: int
    device: str
    backend: str
    status: str
    created: str
    sealed: str | None
    fingerprint: dict[str, Any]
    parent: int | None
    note: str
    space: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, r: dict[str, Any]) -> Version:
        return cls(r["id"], r["device"], r["backend"], r["status"], r["created"], r["sealed"],
                   json.loads(r["fingerprint"] or "{}"), r["parent"], r["note"] or "",
                   json.loads(r["space"] or "{}"))

    @property
    def label(self) -> str:
        return f"{self.device}@{self.id}"

    def setup_changes(self, fingerprint: dict[str, Any]) -> list[str]:
        """Fingerprint fields in which a setup differs from this version's (none: same)."""
        return setup_changes(self.fingerprint, fingerprint)

    def require_same_setup(self, fingerprint: dict[str, Any], purpose: str) -> None:
        """Refuse to mix this version's numbers with another setup's; ``purpose`` ends the
        message: why that matters here and what to do instead."""
        changed = self.setup_changes(fingerprint)
        if changed:
            raise SetupMismatch(f"{self.label} was measured with another setup (differs in: "
                                f"{', '.join(changed)}); {purpose}")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def fingerprint_hash(fingerprint: dict[str, Any]) -> str:
    return setup_hash(fingerprint)


def parse_lut_ref(ref: str) -> tuple[Path, int | None]:
    """``luts/host.db@3`` -> (path, 3); ``luts/host.db`` -> (path, None = newest sealed)."""
    path, sep, version = str(ref).rpartition("@")
    if sep and version.isdigit():
        return Path(path), int(version)
    if sep and not Path(ref).exists():
        raise LutError(f"{ref!r}: the version after '@' must be a number, e.g. luts/host.db@3")
    return Path(ref), None
