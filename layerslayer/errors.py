"""Exceptions whose message is the one line a user sees.

The CLI prints ``Error: <message>`` and exits with ``exit_code``; a
traceback is shown only with ``--debug``.
"""


class LayerslayerError(Exception):
    "Base class: ``str(error)`` is a complete, single-line explanation."

    exit_code = 1


class UsageError(LayerslayerError):
    "Bad input from the user (a malformed reference, platform or option)."

    exit_code = 2


class InvalidReference(UsageError):
    pass


class NotFound(LayerslayerError):
    pass


class AuthError(LayerslayerError):
    pass


class NetworkError(LayerslayerError):
    "The registry could not be reached, or kept failing after retries."

    exit_code = 3


class RegistryError(LayerslayerError):
    "The registry answered, but with something we cannot use."


class TarError(LayerslayerError):
    "Corrupt or hostile layer data: not a tar, bad compression, a limit exceeded."


class VerificationError(LayerslayerError):
    "Bytes did not match the digest or size they were promised to have."

    exit_code = 3


class RangeNotSupported(RegistryError):
    "The registry refused or ignored a Range request: the blob can only be read from its start."
