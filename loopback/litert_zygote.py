"""The loopback phones' benchmark tool, started the way Android starts apps: from a zygote.

``litert-benchmark`` is Python: every run imports numpy, ml_dtypes and LiteRT before it
times anything, 0.5-0.6 s of CPU per model, which made a 150-key loopback sweep last
minutes. The zygote imports the real tool once; each run of the device's tool is a tiny
client (``python -S``, ~20 ms) that hands the zygote its argv, working directory,
environment, CPU affinity and its own stdin/stdout/stderr, and exits as the tool did (the
same exit code, or the same signal). The timing code that runs is the tool's own ``main``
in a fresh forked process, so the phone path sees what the tool prints, unchanged. The
zygote runs the tool once before it serves (its output dropped), so the runtime's
libraries are loaded before the forks: a run then takes about 45 ms, not 75.

Run as ``python loopback/litert_zygote.py SOCKET`` (the server), or as ``python -S
loopback/litert_zygote.py --client SOCKET ARGS...`` (one run of the tool).
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import sys


def client(path: str, argv: list[str]) -> None:
    """One run of the tool: the zygote forks it with our fds, cwd, env and affinity."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    request = {"argv": ["litert-benchmark", *argv], "cwd": os.getcwd(),
               "env": dict(os.environ), "cpus": sorted(os.sched_getaffinity(0))}
    socket.send_fds(sock, [json.dumps(request).encode() + b"\n"], [0, 1, 2])
    reply = b""
    while not reply.endswith(b"\n"):
        chunk = sock.recv(64)
        if not chunk:
            sys.exit(125)  # the zygote went away
        reply += chunk
    kind, number = reply.decode().split()
    if kind == "signal":
        signal.signal(int(number), signal.SIG_DFL)
        os.kill(os.getpid(), int(number))
    sys.exit(int(number))


def serve(path: str) -> None:
    """Import the tool once, then fork a supervised run per connection."""
    from ai_edge_litert.tools import benchmark_litert_model as tool

    tool._import_litert()  # the lazy imports too, so no run pays for them
    _warm(tool.main)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # supervisors are reaped by the kernel
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    print("ready", flush=True)
    while True:
        conn, _ = listener.accept()
        if os.fork() == 0:
            listener.close()
            _supervise(conn, tool.main)
        conn.close()


def _warm(main) -> None:  # type: ignore[no-untyped-def]
    """Run the tool once on a one-layer model, its output dropped: the runtime's first run
    in a process loads its accelerator libraries (20 ms), and forked runs inherit them."""
    import tempfile

    from bench.tflite_build import build_layer
    from lut_db.spec import LayerSpec

    spec = LayerSpec.parse("conv2d:in=4x4x8,out=8,k=1x1,s=1x1,pad=same,act=relu6,dt=float32")
    with tempfile.NamedTemporaryFile(suffix=".tflite") as model:
        model.write(build_layer(spec))
        model.flush()
        saved = [os.dup(1), os.dup(2)]
        null = os.open(os.devnull, os.O_WRONLY)
        argv = sys.argv
        try:
            os.dup2(null, 1)
            os.dup2(null, 2)
            sys.argv = ["litert-benchmark", f"--model={model.name}", "--num_runs=1"]
            main()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            sys.argv = argv
            for target, fd in enumerate(saved, start=1):
                os.dup2(fd, target)
                os.close(fd)
            os.close(null)


def _supervise(conn: socket.socket, main) -> None:  # type: ignore[no-untyped-def]
    """Run the tool in a child; report how it ended; kill it if the client goes away
    (the device's ``timeout`` or a closed adb stream kills the client, not the child)."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    data, fds, _flags, _addr = socket.recv_fds(conn, 1 << 20, 3)
    request = json.loads(data)
    pid = os.fork()
    if pid == 0:
        conn.close()
        _run(request, fds, main)
    for fd in fds:
        os.close(fd)
    ended_fd = os.pidfd_open(pid)  # readable once the run has ended: no polling delay
    while True:
        ready = select.select([conn, ended_fd], [], [])[0]
        if ended_fd in ready:
            break
        if not conn.recv(1):
            os.kill(pid, signal.SIGKILL)  # the client died: so does its run
            break
    _, status = os.waitpid(pid, 0)
    ended = (f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
             else f"exit {os.WEXITSTATUS(status)}")
    try:
        conn.sendall(ended.encode() + b"\n")
    finally:
        os._exit(0)


def _run(request: dict, fds: list[int], main) -> None:  # type: ignore[no-untyped-def]
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.sched_setaffinity(0, request["cpus"])  # what taskset gave the client
    sys.argv = request["argv"]
    code = 1
    try:
        code = main() or 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except Exception:  # noqa: BLE001 - the tool's own crash, printed as Python would
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    if sys.argv[1] == "--client":
        client(sys.argv[2], sys.argv[3:])
    else:
        serve(sys.argv[1])
