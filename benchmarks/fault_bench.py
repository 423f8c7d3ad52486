"""Faults injected into real sweeps: does the LUT lose or repeat anything?

- host: ``netadapt lut`` SIGKILLed 20 times at random moments of a host sweep (a version
  derived from a sealed one), while reader threads estimate a network from the same
  file the whole time; then it runs to the end.
- phones: the same over two loopback phones behind two private adb servers, with one
  phone unplugged (stopped) and plugged back in 5 times along the way. Everything of
  ADB is real (servers, pushes, batch scripts, output parsing), but the phones' tool
  prints litert-benchmark's result block at once (latency from the model's size):
  the real tool starts a Python process per model, 1-1.5 s each on this loaded VM,
  which would take this section far past 10 minutes. Timing is not what it tests.
- adb server: this machine's adb server SIGKILLed mid-sweep; the sweep starts it again
  (as adb would), the phone on it comes back, and the sweep finishes by itself.

After every kill the file is checked: rows stored before are still there unchanged (else
"lost"), and none measured again later ("measured twice"); SQLite's integrity check. At
the end: the version sealed, its digest verified, every planned key stored once.
Each killed run is one whose output says it resumed the version.

Run alone: python -m benchmarks.fault_bench
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

from bench.zoo import MOBILENET_V1, MOBILENET_V2, shape_space
from lut_db.estimate import estimate
from lut_db.store import LutStore

NETADAPT = str(Path(sys.executable).parent / "netadapt")
KILLS = 20
PHONE_DROPS = 5
SEED = 12
HOST_TOML = """\
name = "fast"
kind = "host"
description = "host, few runs: fault injection"

[backends.tflite-cpu]
runner = "host"
threads = 1
warmup = 1
runs = 2
min_time_ms = 0
"""
# litert-benchmark's output for the model, at once: what the phones run here.
CANNED_TOOL = r"""#!/bin/sh
for a in "$@"; do case "$a" in --model=*) m="${a#--model=}";; esac; done
n=$(wc -c < "$m") || exit 1
ms=$(printf '%d.%02d' $((n / 100000)) $(((n / 1000) % 100)))
cat <<EOF
========================================
 BENCHMARK RESULTS
========================================
Inference (avg):       $ms ms (5 runs)
Inference (min):       $ms ms
Inference (max):       $ms ms
Inference (median):    $ms ms
Inference (std):       0.00 ms
========================================
EOF
"""
Snapshot = dict[tuple[int, str], tuple]


def snapshot(db: Path) -> Snapshot:
    """(version, key) -> the stored row, read through a read-only connection."""
    if not db.exists():
        return {}
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        rows = con.execute("SELECT version, key, status, measured_at, latency_us, samples_us "
                           "FROM measurements").fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return {}
    finally:
        con.close()
    return {(v, k): tuple(rest) for v, k, *rest in rows}


def compare(before: Snapshot, after: Snapshot) -> tuple[int, int]:
    """(lost, measured twice) between two snapshots. A failed key measured again on resume
    is a retry, not a second measurement."""
    lost = sum(1 for k in before if k not in after)
    twice = sum(1 for k, row in before.items()
                if k in after and after[k] != row and row[0] == "ok")
    return lost, twice


def integrity(db: Path) -> str:
    con = sqlite3.connect(db, timeout=10)
    try:
        return con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()


def killed_runs(argv: list[str], env: dict[str, str], db: Path, rng: random.Random,
                during: Callable[[int], None] | None = None,
                max_delay_s: float = 0.5) -> dict[str, Any]:
    """Start the sweep KILLS times and SIGKILL it at a random moment after its first new
    commit (uniform in 0..max_delay_s), then run it to the end."""
    runs: list[dict[str, Any]] = []
    before = snapshot(db)
    lost = twice = 0
    for i in range(KILLS):
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        if during:
            during(i)
        deadline = time.monotonic() + 300
        while len(snapshot(db)) <= len(before) and proc.poll() is None:
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"run {i} made no progress in 300 s")
            time.sleep(0.05)
        delay = rng.uniform(0, max_delay_s)
        time.sleep(delay)
        finished = proc.poll() is not None
        if not finished:
            proc.send_signal(signal.SIGKILL)
        out = proc.communicate(timeout=60)[0]
        after = snapshot(db)
        run_lost, run_twice = compare(before, after)
        lost, twice = lost + run_lost, twice + run_twice
        new_in = {v for v, _ in after.keys() - before.keys()}
        runs.append({"run": i + 1, "killed": not finished, "delay_s": round(delay, 3),
                     "rows": len(after), "new_rows": len(after) - len(before),
                     # it went on with the version the killed run left, not a new one
                     "resumed": bool(new_in) and new_in <= {v for v, _ in before},
                     "integrity": integrity(db),
                     "lost": run_lost, "twice": run_twice,
                     "exit": proc.returncode, "ended_with": "" if not finished
                     else " ".join(out.split())[-300:]})
        before = after
        if finished and proc.returncode == 0:  # the sweep got to the end before this kill
            break
    t0 = time.perf_counter()
    final = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900,
                           check=False)
    after = snapshot(db)
    run_lost, run_twice = compare(before, after)
    final_new = {v for v, _ in after.keys() - before.keys()}
    return {"runs": runs, "kills": sum(r["killed"] for r in runs),
            "runs_ended_by_an_error": sum(not r["killed"] and r["exit"] != 0 for r in runs),
            "resumed_runs": sum(r["resumed"] for r in runs[1:])
            + (final_new <= {v for v, _ in before}),
            "runs_that_should_resume": len(runs), "lost": lost + run_lost,
            "measured_twice": twice + run_twice,
            "integrity_ok": all(r["integrity"] == "ok" for r in runs),
            "final_exit": final.returncode, "final_s": time.perf_counter() - t0,
            "final_output_tail": " ".join((final.stdout + final.stderr).split())[-300:]}


def check_version(db: Path, keys: set[str]) -> dict[str, Any]:
    """The newest version: sealed, its digest verified, every planned key once."""
    with LutStore.open(db) as store:
        v = store.versions()[-1]
        seal = store.verify(v) if v.status == "sealed" else None
        stored = [r["key"] for r in store.entries(v)]
        return {"version": v.id, "versions": len(store.versions()), "status": v.status,
                "digest_verified": seal is not None, "planned_keys": len(keys),
                "stored_keys": len(stored), "missing": len(keys - set(stored)),
                "stored_once": len(stored) == len(set(stored)),
                "failed": store.counts(v).get("failed", 0)}


class Readers:
    """Threads estimating one network from the newest sealed version, again and again."""

    def __init__(self, db: Path, n: int = 2):
        self.db, self.stop = db, threading.Event()
        self.net = MOBILENET_V1.network(width_mult=1.0, resolution=32, classes=10)
        self.reads: list[tuple[int, float]] = []
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(n)]

    def __enter__(self) -> Self:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                with LutStore.open(self.db) as store:
                    v = store.version()  # newest sealed, checked against its digest
                    table = store.table(v)
                    if sum(store.counts(v).values()) != store.seal_info(v).rows:
                        self.errors.append(f"{v.label}: entries changed under a reader")
                    self.reads.append((v.id, estimate(self.net, table, lut=v.label).total_us))
            except Exception as e:  # noqa: BLE001 - every failure is a finding
                self.errors.append(f"{type(e).__name__}: {e}")
            time.sleep(0.05)

    def summary(self) -> dict[str, Any]:
        per_version: dict[int, set[float]] = {}
        for vid, us in self.reads:
            per_version.setdefault(vid, set()).add(round(us, 6))
        return {"reads": len(self.reads), "errors": len(self.errors),
                "first_errors": self.errors[:3],
                "reads_per_version": {v: sum(1 for x, _ in self.reads if x == v)
                                      for v in sorted(per_version)},
                "distinct_estimates": len({e for s in per_version.values() for e in s})}


def host_faults(tmp: Path, rng: random.Random) -> dict[str, Any]:
    configs = tmp / "configs"
    configs.mkdir()
    (configs / "fast.toml").write_text(HOST_TOML)
    env = {**os.environ, "NETADAPT_CONFIGS": str(configs)}
    db = tmp / "host.db"
    base = [NETADAPT, "lut", "--no-calibrate", "--device", "fast", "--resolution", "32", "--classes", "10",
            "--batch-size", "8", "--lut", str(db)]
    t0 = time.perf_counter()
    subprocess.run([*base, "--space", "mobilenet_v1", "--grid", "64"], env=env, check=True,
                   capture_output=True, timeout=600)  # sealed @1: what readers start from
    first_s = time.perf_counter() - t0
    argv = [*base, "--space", "mobilenet_v1,mobilenet_v2", "--grid", "32"]
    keys = {s.key for f in (MOBILENET_V1, MOBILENET_V2) for s in shape_space(f, 32, 32, 10)}
    with Readers(db) as readers:
        out = killed_runs(argv, env, db, rng, max_delay_s=0.3)
        time.sleep(0.5)  # a few reads of the new sealed version too
    out.update(first_version_s=first_s, check=check_version(db, keys),
               readers=readers.summary())
    return out


def _phones(tmp: Path, n: int) -> tuple[list[Any], list[Any]]:
    from loopback.adb.device import LoopbackDevice
    from loopback.adb.server import AdbServer

    homes = [tmp / f"adb-home-{i}" for i in range(n)]
    for h in homes:
        h.mkdir()
    servers = [AdbServer(home=h).start() for h in homes]
    phones = [LoopbackDevice(tmp / f"phone-{i}").start() for i in range(n)]
    for s, p in zip(servers, phones):
        s.connect(p.serial)
    return servers, phones


def _phone_env(tmp: Path, servers: list[Any], name: str, batch_size: int) -> dict[str, str]:
    """Config ``name`` over the servers; the first is this machine's (it runs the sweep
    with that server's private HOME and port: never 5037)."""
    from loopback.farm import default_backend, loop_toml

    configs = tmp / "configs"
    configs.mkdir(exist_ok=True)
    tool = tmp / "canned-litert-benchmark"
    tool.write_text(CANNED_TOOL)
    tool.chmod(0o755)
    backend = {**default_backend(tmp), "batch_size": batch_size, "binary": str(tool)}
    (configs / f"{name}.toml").write_text(loop_toml(
        name, [f"127.0.0.1:{s.port}" for s in servers], backend,
        adb={"rejoin_timeout_s": 120}))
    return {**servers[0].env(), "NETADAPT_CONFIGS": str(configs)}


def _stop_all(servers: list[Any], phones: list[Any]) -> None:
    for p in phones:
        p.stop()
    for s in servers:  # also a server the sweep started itself on that port
        subprocess.run([s.adb, "-P", str(s.port), "kill-server"], env=s.env(),
                       capture_output=True, timeout=30, check=False)
        s.stop()


def phone_faults(tmp: Path, rng: random.Random) -> dict[str, Any]:
    servers, phones = _phones(tmp, 2)
    drops: list[dict[str, float]] = []
    timers: list[threading.Thread] = []
    drop_at = set(rng.sample(range(1, KILLS - 1), PHONE_DROPS))

    def unplug(away_s: float) -> None:
        phones[1].stop()
        time.sleep(away_s)
        phones[1].start()

    def during(i: int) -> None:
        if i in drop_at:
            away = rng.uniform(1.0, 3.0)
            t = threading.Timer(rng.uniform(0.5, 3.0), unplug, [away])
            t.start()
            timers.append(t)
            drops.append({"run": i + 1, "away_s": round(away, 2)})
    try:
        env = _phone_env(tmp, servers, "loop", batch_size=4)
        db = tmp / "phones.db"
        argv = [NETADAPT, "lut", "--no-calibrate", "--device", "loop", "--space", "mobilenet_v2",
                "--resolution", "32", "--grid", "64", "--classes", "10", "--lut", str(db)]
        out = killed_runs(argv, env, db, rng, during=during, max_delay_s=1.0)
        for t in timers:
            t.join()
        out.update(phone_drops=drops, check=check_version(
            db, {s.key for s in shape_space(MOBILENET_V2, 32, 64, 10)}))
        return out
    finally:
        _stop_all(servers, phones)


def adb_server_fault(tmp: Path) -> dict[str, Any]:
    servers, phones = _phones(tmp, 2)
    try:
        env = _phone_env(tmp, servers, "duo", batch_size=4)
        db = tmp / "server.db"
        keys = {s.key for s in shape_space(MOBILENET_V1, 16, 512, 10)}
        argv = [NETADAPT, "lut", "--no-calibrate", "--device", "duo", "--space", "mobilenet_v1",
                "--resolution", "16", "--grid", "512", "--classes", "10", "--lut", str(db)]
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        while len(snapshot(db)) < 0.3 * len(keys) and proc.poll() is None:
            time.sleep(0.05)
        before = snapshot(db)
        servers[0]._proc.kill()  # this machine's adb server, mid-batch
        out = proc.communicate(timeout=600)[0]
        lost, twice = compare(before, snapshot(db))
        return {"rows_when_killed": len(before), "exit": proc.returncode,
                "wall_s": time.perf_counter() - t0, "lost": lost, "measured_twice": twice,
                "server_restarted": "started it" in out, "phone_back": "is back" in out,
                "check": check_version(db, keys), "output_tail": " ".join(out.split())[-300:]}
    finally:
        _stop_all(servers, phones)


def run(out: dict[str, Any]) -> None:
    rng = random.Random(SEED)
    with tempfile.TemporaryDirectory(prefix="fault-bench-") as d:
        tmp = Path(d)
        for name, part in (("host", lambda p: host_faults(p, rng)),
                           ("phones", lambda p: phone_faults(p, rng)),
                           ("adb_server", adb_server_fault)):
            (tmp / name).mkdir()
            t0 = time.perf_counter()
            out[name] = part(tmp / name)
            out[name]["wall_s"] = time.perf_counter() - t0
            print(f"faults/{name}: {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    results: dict[str, Any] = {}
    run(results)
    print(json.dumps(results, indent=1, default=str))
