"""Files of this machine that a runner pushes to a phone: read with a clear error, the
ABI a binary is built for, and the hashes the phone prints for the copy it has."""

from __future__ import annotations

import hashlib
from pathlib import Path

from bench.devices import ConfigError, DeviceConfig

ELF_ABIS = {0x28: "armeabi-v7a", 0xB7: "arm64-v8a", 0x03: "x86", 0x3E: "x86_64"}


def elf_abi(data: bytes) -> str | None:
    """The Android ABI an ELF binary is built for; None for anything else (e.g. scripts)."""
    if data[:4] != b"\x7fELF" or len(data) < 20:
        return None
    order = "little" if data[5] == 1 else "big"
    machine = int.from_bytes(data[18:20], order)
    return ELF_ABIS.get(machine, f"elf-machine-{machine:#x}")


def local_hashes(data: bytes) -> set[str]:
    """What the phone's sha256sum or md5sum would print for these bytes."""
    return {hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest()}


def read_local(path: str, config: DeviceConfig, key: str) -> bytes:
    """The bytes of the local file a config's ``key`` names; ConfigError when unreadable."""
    p = Path(path).expanduser()
    try:
        return p.read_bytes()
    except OSError as e:
        raise ConfigError(f"{config.path}: key '{key}': cannot read {str(p)!r} "
                          f"({e.strerror}); expected a local file to push to the phone") from None
