"""Reading back what one shell script printed on a phone, section by section.

One ``adb shell`` costs ~25 ms (DESIGN.md), so a runner asks for several things in one
script and prints each under a marker line (``MARK name``); the phone probe
(``bench.runners.phone_probe``) and the phone's state readings (``bench.machine_state``)
split the output back with this.
"""

from __future__ import annotations


def split_sections(text: str, mark: str) -> dict[str, str]:
    """``text`` -> {name: the lines printed under ``mark name``, up to the next mark}.

    Lines before the first mark are dropped; CRLF (a PTY-backed ``adb shell``) reads as LF.
    """
    out: dict[str, list[str]] = {}
    current = None
    for line in text.replace("\r\n", "\n").split("\n"):
        if line.startswith(mark + " "):
            current = line[len(mark) + 1:].strip()
            out[current] = []
        elif current is not None:
            out[current].append(line)
    return {k: "\n".join(v) for k, v in out.items()}
