"""Where the independent tasks of one iteration run: in-process, a local process pool, or Ray.

A task function has the signature ``fn(context, task) -> result`` and lives at a
module's top level (so workers import it by name). The context (training data
and settings, as bytes from ``dumps``) reaches each worker once; tasks carry only
their own inputs. Results come back in task order, whichever executor ran them,
and a task's result depends only on its inputs: serial, pool and Ray agree.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Protocol

import torch

from adapter.errors import AdaptError

TaskFn = Callable[[dict, dict], dict]


def dumps(obj: Any) -> bytes:
    """Tensors and plain containers -> bytes (pickled by torch, no shared-memory handles)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def loads(data: bytes) -> Any:
    return torch.load(io.BytesIO(data), weights_only=True)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` intra-op threads (results must not depend on who runs a task)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Executor(Protocol):
    name: str

    def map(self, fn: TaskFn, tasks: Sequence[dict],
            done: Callable[[], None] | None = None) -> list[dict]:
        """``fn`` over ``tasks``, results in order; ``done()`` as each task finishes."""

    def close(self) -> None: ...


class SerialExecutor:
    """Runs tasks one after the other in this process."""

    name = "serial"

    def __init__(self, context: bytes):
        self.context = loads(context)

    def map(self, fn: TaskFn, tasks: Sequence[dict],
            done: Callable[[], None] | None = None) -> list[dict]:
        out = []
        for t in tasks:
            out.append(fn(self.context, t))
            if done:
                done()
        return out

    def close(self) -> None:
        pass


# -- local process pool -----------------------------------------------------------------------

_WORKER_CONTEXT: dict | None = None


def _init_worker(context: bytes) -> None:
    global _WORKER_CONTEXT
    _WORKER_CONTEXT = loads(context)


def _call_in_worker(fn: TaskFn, task: dict) -> dict:
    assert _WORKER_CONTEXT is not None, "worker started without its context"
    return fn(_WORKER_CONTEXT, task)


class PoolExecutor:
    """A local process pool (spawned, not forked: forking a process that runs torch's
    thread pools can deadlock)."""

    def __init__(self, workers: int, context: bytes):
        self.name = f"pool({workers})"
        self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_init_worker, initargs=(context,))

    def map(self, fn: TaskFn, tasks: Sequence[dict],
            done: Callable[[], None] | None = None) -> list[dict]:
        futures = [self.pool.submit(_call_in_worker, fn, t) for t in tasks]
        try:
            if done:
                for _ in as_completed(futures):
                    done()
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


# -- Ray ----------------------------------------------------------------------------------------

_RAY_CONTEXTS: dict[str, dict] = {}


def _call_in_ray(fn: TaskFn, key: str, boxed_ref: list, task: dict) -> dict:
    # The context ref travels inside a list, so Ray does not fetch it for every task;
    # each worker process fetches and unpickles it once.
    if key not in _RAY_CONTEXTS:
        import ray

        _RAY_CONTEXTS.clear()
        _RAY_CONTEXTS[key] = loads(ray.get(boxed_ref[0]))
    return fn(_RAY_CONTEXTS[key], task)


class RayExecutor:
    """Tasks on a Ray cluster: ``address`` ``local`` starts a private local instance,
    ``auto`` or ``ray://host:port`` joins a running cluster (adapter installed on it)."""

    def __init__(self, address: str, context: bytes, workers: int | None = None):
        try:
            import ray
        except ImportError:
            raise AdaptError("--ray needs Ray, an optional extra: pip install "
                             "'netadapt-farm[cluster]'") from None
        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            try:
                if address == "local":
                    ray.init(num_cpus=workers or os.cpu_count(), include_dashboard=False,
                             log_to_driver=False, object_store_memory=256 * 2**20,
                             configure_logging=False)
                else:
                    ray.init(address=address, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise AdaptError(f"cannot reach the Ray cluster at {address!r}: {e}") from None
        self.name = f"ray({address})"
        self.key = hashlib.sha256(context).hexdigest()[:16]
        self.boxed = [ray.put(context)]
        self.remote = ray.remote(num_cpus=1)(_call_in_ray)

    def map(self, fn: TaskFn, tasks: Sequence[dict],
            done: Callable[[], None] | None = None) -> list[dict]:
        refs = [self.remote.remote(fn, self.key, self.boxed, t) for t in tasks]
        pending = refs if done else []
        while pending:
            _, pending = self.ray.wait(pending, num_returns=1)
            done()
        return self.ray.get(refs)

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


def make_executor(context: bytes, workers: int = 1, ray: str | None = None) -> Executor:
    """Ray when an address is given, a local pool for workers > 1, else serial."""
    if workers < 1:
        raise AdaptError(f"--workers must be at least 1, got {workers}")
    if ray:
        return RayExecutor(ray, context, workers)
    if workers > 1:
        return PoolExecutor(workers, context)
    return SerialExecutor(context)
