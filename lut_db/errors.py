"""The one base of every error a user can cause (bad input, missing device, stale LUT).

The CLI turns a ``UserError`` into one message and exit code 1; anything else is a bug
and keeps its traceback. Lives on the ground floor so every layer can subclass it.
"""


class UserError(Exception):
    """Something the user can fix; the message says what and how, as it is shown."""


class SetupMismatch(UserError):
    """Measurements of another device or setting than a LUT version's own."""


class LutError(UserError):
    """Base of the store's errors; each message is meant for the user as it is."""


class NotALut(LutError):
    pass


class SchemaTooNew(LutError):
    pass


class NoSuchVersion(LutError):
    pass


class SealedVersion(LutError):
    pass


class StoreLocked(LutError):
    pass


class VersionTampered(LutError):
    """A sealed version no longer matches the digest taken when it was sealed."""


class DigestTooNew(LutError):
    pass
