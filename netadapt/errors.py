"""The one error of the API's own: an argument out of its range, refused before any work
(the CLI shows it as a usage error of the option with the same name)."""

from __future__ import annotations


class OptionError(ValueError):
    """An argument the call cannot take, e.g. ``grid=0``; the message names the option."""
