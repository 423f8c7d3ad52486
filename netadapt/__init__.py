"""netadapt-farm's Python API: one call per `netadapt` verb, each keyword named as the
verb's option (``--calibration-networks`` is ``calibration_networks=``), each result what
the verb's ``--json`` prints (``.to_dict()``) and more. The CLI is this API spoken aloud.

    import netadapt

    built = netadapt.build_lut("luts/host.db", "host", resolution=32, classes=10)
    est = netadapt.estimate("luts/host.db", model="mobilenet_v1", width=0.5, resolution=32,
                            classes=10)
    print(est.total_ms)

``NetAdapt`` (``adapter.NetAdapt``) runs NetAdapt with your own training loop.
``log`` (e.g. ``print``) hears what a call does in sentences and ``progress``
(``lut_db.progress.Steps``) each long step; both are silent unless given. Errors a user can
cause are ``lut_db.errors.UserError`` (one message saying what to do); an argument out of
range is ``OptionError`` (a ``ValueError``), raised before any work.

This package is the top floor, beside ``netadapt_cli``: it may import every library package
(``lut_db``, ``bench``, ``analysis``, ``adapter``), and none of them imports it.
"""

from typing import Any

from netadapt.adaptation import adapt
from netadapt.errors import OptionError
from netadapt.lut import BuiltLut, Calibrated, build_lut, calibrate
from netadapt.network import Estimated, Measured, estimate, load_network, measure
from netadapt.validation import Reported, report

__all__ = ["BuiltLut", "Calibrated", "Estimated", "Measured", "NetAdapt", "OptionError",
           "Reported", "adapt", "build_lut", "calibrate", "estimate", "load_network", "measure",
           "report"]


def __getattr__(name: str) -> Any:
    # NetAdapt with the caller's own training loop (adapter.netadapt), loaded on first use:
    # it brings torch, which the CLI's light verbs do without
    if name == "NetAdapt":
        from adapter.netadapt import NetAdapt

        return NetAdapt
    raise AttributeError(f"module 'netadapt' has no attribute {name!r}")
