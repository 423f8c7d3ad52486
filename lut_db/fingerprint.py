"""When two fingerprints describe the same setup.

A fingerprint holds what decides a measurement (device, runtime, threads, pinning, runs)
and, since later releases, what a device says about itself without being a setting: the
sizes of its CPU caches (``cache_kb``). A LUT version written before a descriptive field
existed lacks it, and is still the same setup as the device that now reports it: a
descriptive field absent on either side is not compared (present on both, it is, since
another cache size is another device). Everything else must be equal.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

DESCRIPTIVE = ("cache_kb",)  # what the device reports about itself (absent in older LUTs)


def setup_part(fingerprint: dict[str, Any]) -> dict[str, Any]:
    """The fingerprint without its descriptive fields: what identifies a setup."""
    return {k: v for k, v in fingerprint.items() if k not in DESCRIPTIVE}


def setup_changes(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Fields in which two setups differ (none: the same setup)."""
    return sorted(k for k in a.keys() | b.keys()
                  if a.get(k) != b.get(k)
                  and not (k in DESCRIPTIVE and (a.get(k) is None or b.get(k) is None)))


def same_setup(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return not setup_changes(a, b)


def setup_hash(fingerprint: dict[str, Any]) -> str:
    """The hash a version is looked up by: over the setup part alone, so a version written
    before a descriptive field existed is found by a device that reports it."""
    text = json.dumps(setup_part(fingerprint), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
