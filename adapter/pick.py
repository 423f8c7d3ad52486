"""Which proposal a NetAdapt iteration keeps: the rule's names and what each means.

Apart from torch, so that the CLI lists the choices without importing it.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum


class PickRule(StrEnum):
    """Which proposal an iteration keeps (values as --pick takes them)."""

    ACCURACY = "accuracy"
    DROP_PER_LATENCY = "drop-per-latency"


PICK_RULES = {
    PickRule.ACCURACY: "highest holdout accuracy (the paper's rule); ties: lower holdout "
                       "loss, then the earlier slot",
    PickRule.DROP_PER_LATENCY: "smallest holdout accuracy drop per ms of latency saved (the "
                               "official code's rule); ties: lower holdout loss, then the "
                               "earlier slot",
}


def best(rule: str, accs: Sequence[float], parent_acc: float, saved_ms: Sequence[float],
         losses: Sequence[float] | None = None) -> int:
    """Index of the proposal to keep by ``rule``: each proposal's holdout accuracy
    (``accs``), the parent's, and the latency each saves; ties go to the lower holdout loss
    (``losses``, when known), then to the earlier proposal."""
    if rule not in PICK_RULES:
        raise ValueError(f"unknown pick rule {rule!r}; use one of {', '.join(PICK_RULES)}")

    def score(k: int) -> float:
        if rule == PickRule.ACCURACY:
            return accs[k]
        return -(parent_acc - accs[k]) / max(saved_ms[k], 1e-9)  # accuracy lost per ms saved

    return max(range(len(accs)), key=lambda k: (score(k), -(losses[k] if losses else 0.0), -k))
