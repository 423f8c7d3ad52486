"""How long work reports its progress: the library calls, the CLI draws (nothing here prints).

A step reports ``steps(name, done, total, detail)`` as it goes: ``name`` says what runs
("pretraining"), ``done`` how much of ``total`` is finished (``total`` None: not known, a
spinner), ``detail`` what the numbers are now ("epoch 2/6, loss 0.412, acc 0.873"). A step
ends with one call where ``done >= total`` (a step without a known total gives one then);
a later call of the same name starts it again, so a step whose last numbers come late (the
epoch's test accuracy) reports its end once they are in.
Lives on the ground floor so every layer can report without knowing who listens.
"""

from __future__ import annotations

from typing import Protocol


class Steps(Protocol):
    def __call__(self, name: str, done: float, total: float | None = None,
                 detail: str = "") -> None: ...


def silent(name: str, done: float, total: float | None = None, detail: str = "") -> None:
    """Nobody listens."""
