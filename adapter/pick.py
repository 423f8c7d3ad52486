"""Which proposal a NetAdapt iteration keeps: the rule's names and what each means.

Apart from torch, so that the CLI lists the choices without importing it.
"""

from __future__ import annotations

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
