"""The adapter's user error, apart from torch so that the CLI can catch it cheaply."""

from lut_db.errors import UserError


class AdaptError(UserError, ValueError):
    """A problem the user can fix (bad budget, data, LUT, checkpoint, model): one clear message."""
