"""A search's checkpoint (atomic, read back with ``weights_only``), initial weights and
the random state it restores, so a resumed run continues as the uninterrupted one would."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from adapter.errors import AdaptError

CHECKPOINT_FORMAT = 3  # 2: resources named with their units; 3: models of any source


def load_checkpoint(path: Path) -> dict:
    """A checkpoint, or AdaptError saying it is corrupt and what to do."""
    try:
        ckpt = torch.load(path, weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated zip, bad pickle, wrong file ...
        raise AdaptError(f"checkpoint {path} is corrupt or unreadable ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}); delete the run folder "
                         "(or choose another --name) to start over") from None
    need = {"format", "config", "stage", "iteration", "history", "model", "weights", "rng"}
    if not isinstance(ckpt, dict) or not need <= set(ckpt):
        raise AdaptError(f"checkpoint {path} is corrupt (missing "
                         f"{', '.join(sorted(need - set(ckpt) if isinstance(ckpt, dict) else need))}"
                         "); delete the run folder to start over")
    if ckpt["format"] != CHECKPOINT_FORMAT:
        raise AdaptError(f"checkpoint {path} has format {ckpt['format']}, this version reads "
                         f"{CHECKPOINT_FORMAT}")
    return ckpt


def save_checkpoint(path: Path, ckpt: dict) -> None:
    """Write ``ckpt`` beside ``path``, then move it there: a kill never leaves half of one."""
    tmp = path.with_suffix(".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)


def load_weights(path: str) -> dict:
    """A state dict (``--weights``), bare or under ``state_dict``."""
    try:
        state = torch.load(path, weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise AdaptError(f"--weights {path}: cannot read a state dict ({e})") from None
    return state.get("state_dict", state) if isinstance(state, dict) else state


def get_rng() -> dict:
    """torch's, Python's and numpy's random state, as ``weights_only`` can read it back."""
    npst = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
            "numpy": [npst[0], torch.from_numpy(npst[1].astype(np.int64)), *npst[2:]]}


def set_rng(rng: dict) -> None:
    torch.set_rng_state(rng["torch"])
    random.setstate((3, tuple(rng["python"]), None))
    n = rng["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), *n[2:]))
