"""The resource-reduction schedule: each iteration's targets, from the initial values."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from adapter.config import SAY, fmt_resource
from adapter.errors import AdaptError


@dataclass
class Schedule:
    """target_i = current - reduction * initial * decay**(i-1), per resource, floored at the
    budget; a resource already within its budget only has to stay there."""

    budgets: dict[str, float]  # absolute
    initial: dict[str, float]
    reduction: float
    decay: float

    def targets(self, current: Mapping[str, float], iteration: int,
                relax: int = 0) -> dict[str, float]:
        out = {}
        for r, budget in self.budgets.items():
            if current[r] <= budget:
                out[r] = budget
                continue
            step = self.reduction * self.initial[r] * self.decay ** (iteration - 1) / 2 ** relax
            out[r] = max(budget, current[r] - step)
        return out

    def met(self, current: Mapping[str, float]) -> bool:
        return all(current[r] <= b for r, b in self.budgets.items())

    def check(self, minimum: Mapping[str, float]) -> None:
        """Refuse budgets nothing on the grid meets, and schedules that cannot reach them."""
        for r, b in self.budgets.items():
            if minimum[r] > b:
                raise AdaptError(
                    f"the {SAY[r]} budget ({fmt_resource(r, b)}) cannot be met: the smallest network on "
                    f"the LUT's grid (every layer at its minimum width) is {fmt_resource(r, minimum[r])}"
                    f" ({minimum[r] / self.initial[r]:.2f} of the initial network); raise the "
                    "budget, start from a wider network (--width) or use a finer --grid")
            need = 1 - b / self.initial[r]
            reach = self.reduction / (1 - self.decay) if self.decay < 1 else math.inf
            if need > 0 and reach < need:
                raise AdaptError(
                    f"the schedule can never reach the {SAY[r]} budget: reductions of "
                    f"{self.reduction:g} x decay {self.decay:g} add up to at most {reach:.2f} "
                    f"of the initial value, {need:.2f} is needed; raise --reduction or --decay")
