"""Delimiters for many-models-per-round-trip device shell scripts.

One ``adb shell`` call costs ~25 ms (DESIGN.md), so a runner sends ONE script that
measures a whole batch and prints each model's output between marker lines:

    @@NETADAPT-BEGIN 3
    ...whatever the tool printed (stdout and stderr)...
    @@NETADAPT-END 3 rc=0

Used by the SNPE batches (snpe_commands) and the TFLite benchmark_model batches.
"""

from __future__ import annotations

import re

MARK = "@@NETADAPT"

_BEGIN = re.compile(rf"^{MARK}-BEGIN (\d+)$")
# The END marker may follow tool output that did not end with a newline, so it is
# searched anywhere in the line; text before it still belongs to the body.
_END = re.compile(rf"^(.*?){MARK}-END (\d+) rc=(-?\d+)$")


def begin_marker(i: int) -> str:
    """The line that opens model ``i``'s output."""
    return f"{MARK}-BEGIN {int(i)}"


def end_marker(i: int, rc_expr: str = "$?") -> str:
    """The line that closes model ``i``'s output; ``rc_expr`` is expanded by the shell.

    Put it inside double quotes right after the command so ``$?`` is that command's
    exit status: ``echo "<end_marker(i)>"``.
    """
    return f"{MARK}-END {int(i)} rc={rc_expr}"


def wrap_command(i: int, command: str) -> list[str]:
    """Script lines that run ``command`` (already shell-quoted) between model i's markers."""
    return [
        f"echo '{begin_marker(i)}'",
        command,
        f'echo "{end_marker(i)}"',
    ]


def split_batch_output(text: str) -> dict[int, tuple[int, str]]:
    """Parse a batch script's output into ``{index: (exit code, body)}``.

    Only complete blocks (BEGIN i ... END i) are returned: a model whose block was
    cut off (device lost, timeout) is missing from the result, so the caller can
    tell "failed" (rc != 0) from "never finished" (absent). CRLF from a PTY-backed
    ``adb shell`` is accepted.
    """
    results: dict[int, tuple[int, str]] = {}
    current: int | None = None
    body: list[str] = []
    for raw in text.replace("\r\n", "\n").split("\n"):
        line = raw.rstrip("\r")
        begin = _BEGIN.match(line)
        if begin:
            # A new BEGIN before the previous END: that block was incomplete; drop it.
            current, body = int(begin.group(1)), []
            continue
        end = _END.match(line)
        if end and current is not None and int(end.group(2)) == current:
            if end.group(1):
                body.append(end.group(1))
            results[current] = (int(end.group(3)), "\n".join(body))
            current, body = None, []
            continue
        if current is not None:
            body.append(line)
    return results
