"""Exceptions whose message is the one line a user sees.

The CLI prints ``Error: <message>`` and exits with ``exit_code``; a
traceback is shown only with ``--debug``.

A library message that advises an argument names it as a Python caller
writes it: ``force=True`` and ``verify=True`` (arguments of the call),
``max_output``, ``ClientOptions.deadline``, ``Index.add``. The CLI, where
these are flags and commands, says the same advice in its own words with
:func:`cli_words` (``--force``, ``--max-output``, ```layerslayer index```):
one table, here, for every message a library call raises, reports or logs.
"""

import re

# Library spelling -> the CLI's, whole phrases (no other word of a message changes).
_CLI_WORDS: list[tuple[re.Pattern[str], str]] = [(re.compile(pattern), cli) for pattern, cli in [
    (r"\bforce=True\b", "--force"),
    (r"\bverify=True\b", "--verify"),
    (r"\bmax_output\b", "--max-output"),
    (r"\bClientOptions\.deadline\b", "--deadline"),
    (r"\bClientOptions\.plain_http\b", "--plain-http"),
    (r"\bClientOptions\.insecure\b", "--insecure"),
    (r"\bplatform and all_platforms exclude each other\b", "--platform and --all-platforms are mutually exclusive"),
    (r"\bkeep_values and scan=False exclude each other\b", "--keep-values and --no-scan exclude each other"),
    (r"\bIndex\((['\"])(.+)\1\)\.upgrade\(\)", r"`layerslayer index \2 --upgrade`"),
    (r"\bIndex\((['\"])DB\.db\1\)\.add\(IMAGE, \.\.\.\)", "`layerslayer index DB.db IMAGE...`"),
    (r"\bIndex\.add\b", "`layerslayer index`"),
    (r"\bIndex\.images\(\)", "`layerslayer images DB`"),
]]


def cli_words(text: str) -> str:
    "A library message as the CLI says it: the arguments it advises named as the CLI's flags and commands."
    for pattern, cli in _CLI_WORDS:
        text = pattern.sub(cli, text)
    return text


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
