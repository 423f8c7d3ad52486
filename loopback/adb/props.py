"""What a loopback ADB device says about itself: its getprop values (this machine's CPU
as an Android ABI) and the ``getprop`` script that prints them as Android's does."""

from __future__ import annotations

import platform
import shlex
from collections.abc import Mapping
from pathlib import Path


def host_abi() -> str:
    """Android ABI name of this machine's CPU."""
    machine = platform.machine().lower()
    return {
        "x86_64": "x86_64",
        "amd64": "x86_64",
        "aarch64": "arm64-v8a",
        "arm64": "arm64-v8a",
        "i386": "x86",
        "i686": "x86",
    }.get(machine, "armeabi-v7a" if machine.startswith("arm") else machine)


def default_props(serialno: str) -> dict[str, str]:
    """getprop values a LoopbackDevice reports unless overridden."""
    abi = host_abi()
    return {
        "ro.product.name": "loopback",
        "ro.product.model": "Loopback",
        "ro.product.device": "loopback",
        "ro.product.brand": "netadapt",
        "ro.product.manufacturer": "netadapt",
        "ro.board.platform": "loopback",
        "ro.hardware": "loopback",
        "ro.product.cpu.abi": abi,
        "ro.product.cpu.abilist": abi,
        "ro.build.version.release": "14",
        "ro.build.version.sdk": "34",
        "ro.build.type": "userdebug",
        "ro.build.fingerprint": "netadapt/loopback/loopback:14/LOOP.0/1:userdebug/test-keys",
        "ro.serialno": serialno,
    }


def _getprop_script(props: Mapping[str, str]) -> str:
    """A /bin/sh `getprop` printing `props` the way Android's getprop does."""
    listing = " ".join(shlex.quote(f"[{k}]: [{v}]") for k, v in sorted(props.items()))
    cases = "".join(
        f"  {shlex.quote(k)}) printf '%s\\n' {shlex.quote(v)} ;;\n"
        for k, v in sorted(props.items())
    )
    return (
        "#!/bin/sh\n"
        "# getprop emulation written by LoopbackDevice\n"
        'if [ "$#" -eq 0 ]; then\n'
        f"  printf '%s\\n' {listing}\n"
        "  exit 0\n"
        "fi\n"
        'case "$1" in\n'
        f"{cases}"
        "  *) printf '%s\\n' \"${2-}\" ;;\n"
        "esac\n"
    )


def write_getprop(bin_dir: Path, props: Mapping[str, str]) -> None:
    """(Re)write the device's ``getprop`` in ``bin_dir``, first in its shell's PATH."""
    path = bin_dir / "getprop"
    path.write_text(_getprop_script(props))
    path.chmod(0o755)
