"""Content digests of sealed LUT versions: proof that the numbers are the ones measured.

At seal time the store keeps a sha256 over the version's fingerprint and every entry
(all fields, in key order), a quick digest over what estimation reads (key, status,
latency), the fingerprint itself, and per entry a short hash of each field. Opening a
sealed version checks the fingerprint, the row count, the quick digest and a sample of
entries; ``verify`` recomputes everything. The per-field hashes are only there to say
what changed when a check fails.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

DIGEST_FORMAT = 1  # what this code computes and can check
# The entry fields format 1 covers, in this order. A new measurements column needs a
# new format (a test keeps this list equal to the store's columns).
ENTRY_FIELDS = (
    "key", "op", "h", "w", "cin", "cout", "kh", "kw", "sh", "sw", "padding", "dh", "dw",
    "act", "bias", "dtype", "latency_us", "median_us", "mean_us", "std_us", "min_us",
    "max_us", "runs", "warmup_runs", "samples_us", "extra", "status", "error", "output",
    "serial", "measured_at",
)
FIELD_HASH_CHARS = 4


@dataclass(frozen=True)
class Seal:
    """A sealed version's stored digest (one row of the ``seals`` table)."""

    version: int
    format: int
    digest: str
    quick: str
    rows: int
    fingerprint: str  # canonical JSON, as it was sealed
    origin: str  # sealed, migrated, imported
    at: str


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def content_digest(fingerprint: Mapping[str, Any], rows: Iterable[Mapping[str, Any]]) -> str:
    """sha256 over the fingerprint and every entry (rows in key order)."""
    h = hashlib.sha256(f"netadapt-lut-digest/{DIGEST_FORMAT}\n".encode())
    h.update(canonical(dict(fingerprint)).encode() + b"\n")
    for row in rows:
        h.update(canonical([row[f] for f in ENTRY_FIELDS]).encode() + b"\n")
    return h.hexdigest()


def quick_digest(rows: Iterable[tuple[str, str, float | None]]) -> str:
    """sha256 over (key, status, latency_us) in key order: what estimation sums."""
    h = hashlib.sha256()
    for row in rows:
        h.update(canonical(list(row)).encode() + b"\n")
    return h.hexdigest()


def field_hashes(row: Mapping[str, Any]) -> str:
    """A short hash of each field, concatenated: enough to say which fields changed."""
    return "".join(hashlib.sha256(canonical(row[f]).encode()).hexdigest()[:FIELD_HASH_CHARS]
                   for f in ENTRY_FIELDS)


def changed_fields(stored: str, row: Mapping[str, Any]) -> list[str]:
    """Fields whose hash differs from ``stored``; ["?"] when ``stored`` is not one."""
    now, n = field_hashes(row), FIELD_HASH_CHARS
    if len(stored or "") != len(now):
        return ["?"]
    return [f for i, f in enumerate(ENTRY_FIELDS) if stored[i * n:(i + 1) * n] != now[i * n:(i + 1) * n]]


def describe_changes(seal: Seal, fingerprint: Mapping[str, Any], stored: Mapping[str, str],
                     rows: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """What differs from the sealed state: fingerprint fields, missing, added, edited keys.

    ``stored``: key -> field hashes kept at seal time; ``rows``: key -> entry now.
    """
    out = []
    then = json.loads(seal.fingerprint)
    fp_changed = sorted(k for k in then.keys() | fingerprint.keys()
                        if then.get(k) != fingerprint.get(k))
    if fp_changed:
        out.append(f"fingerprint changed ({', '.join(fp_changed)})")
    missing = sorted(stored.keys() - rows.keys())
    added = sorted(rows.keys() - stored.keys())
    if missing:
        out.append(f"{len(missing)} entr{'y' if len(missing) == 1 else 'ies'} deleted "
                   f"({_some(missing)})")
    if added:
        out.append(f"{len(added)} entr{'y' if len(added) == 1 else 'ies'} added ({_some(added)})")
    by_fields: dict[tuple[str, ...], list[str]] = {}
    for key in sorted(stored.keys() & rows.keys()):
        fields = changed_fields(stored[key], rows[key])
        if fields and fields != ["?"]:  # "?": its stored hashes were edited, cannot tell
            by_fields.setdefault(tuple(fields), []).append(key)
    for fields, keys in by_fields.items():
        out.append(f"{', '.join(fields)} changed in {len(keys)} "
                   f"entr{'y' if len(keys) == 1 else 'ies'} ({_some(keys)})")
    return out


def _some(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (f", ... {len(keys) - n} more" if len(keys) > n else "")
