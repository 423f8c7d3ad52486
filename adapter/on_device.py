"""Networks measured whole on a device: the adapter's check of the LUT's estimates.

Through ``bench.timing`` (interleaved rounds, so drift hits all alike); imported lazily
from ``bench``, which the adapter needs only here.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Mapping, Sequence

from adapter.errors import AdaptError
from lut_db.network import Network
from lut_db.progress import Steps, silent

Log = Callable[[str], None]


def measure(networks: Mapping[str, Network | bytes], device: str, backend: str | None = None,
            rounds: int = 3, log: Log = print, progress: Steps = silent
            ) -> dict[str, float] | None:
    """Median latency (ms) of each network measured whole on the device (``bench.timing``:
    interleaved rounds, so drift hits all alike); None when the device is not attached."""
    got = measure_with_drift(networks, device, backend, rounds, log, progress=progress)
    return None if got is None else got[0]


DRIFT_KEYS = 100  # layers timed alone again beside the networks (about a second on host)


def measure_with_drift(networks: Mapping[str, Network | bytes], device: str,
                       backend: str | None = None, rounds: int = 3, log: Log = print,
                       lut: Mapping[str, float] | None = None, keys: Sequence[str] = (),
                       progress: Steps = silent) -> tuple[dict[str, float], float | None] | None:
    """``measure``, and with ``lut`` a sample of ``keys`` (layers of those networks) timed
    alone again between the rounds: how much slower the device runs them now than when
    the LUT was measured (sum / sum), the drift no estimate can know. None when the
    device is not attached."""
    from bench.devices import open_runners
    from bench.runners.base import RunnerError
    from bench.timing import DriftSample, NetworkFailed, session_state, sum_ratio, time_networks

    plan = [k for k in dict.fromkeys(keys) if lut and k in lut]
    plan = random.Random(0).sample(plan, min(DRIFT_KEYS, len(plan)))
    with contextlib.ExitStack() as stack:
        try:
            runners = stack.enter_context(open_runners(device, backend))
        except RunnerError as e:
            log(f"{device} is not attached ({e}): measured latency left out")
            return None
        if not runners:
            log(f"{device} is not attached: measured latency left out")
            return None

        sample = DriftSample(runners[0], plan)
        total, timed = rounds * len(networks), [0]

        def counted(n: int, what: str) -> None:
            timed[0] += n
            progress(f"measuring on {device}", timed[0], total, what)

        try:
            timed = time_networks(runners[0], networks, rounds, progress=counted,
                                  between=lambda p: sample.measure_slice(p, rounds))
        except NetworkFailed as e:
            raise AdaptError(f"{device} could not run a network: {e}") from None
        ms = {name: m.latency_ms for name, m in timed.items()}
        state = session_state(timed)
        if state is not None and state.warning():
            log(state.warning("the networks' latencies"))
    return ms, (sum_ratio(lut, sample.now) if lut and sample.now else None)
