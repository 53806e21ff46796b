"""How index values read for people: modes, times, digests, and the commands
that fetch a layer. Shared by the Datasette plugin and the CLI.

:func:`printable` is the one path from an untrusted string (a file name, link
target, build step, platform, label, registry message) to a terminal or a log.

Kept free of heavy imports: Datasette imports the plugin at start-up.
"""

from __future__ import annotations

import datetime
import functools
import shlex
import stat

from .oci import ENTRY_TYPES, MODE_CHARS, OPAQUE, REPLACES_DIRECTORY, WHITEOUT
from .reference import Reference

#: What ``entries.whiteout`` codes mean (the views show 0/1 flags instead).
WHITEOUT_CODES = {0: "", WHITEOUT: "whiteout", OPAQUE: "opaque", REPLACES_DIRECTORY: "replaces a directory"}

SHORT_DIGEST_HEX = 12

_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def printable(text) -> str:
    """One terminal line from an untrusted string: control characters (ESC,
    CR, newline, DEL, C1 codes, bidi overrides, any other character Python
    does not call printable) as ``\\n``, ``\\x1b``, ``\\u202e``; bytes that were
    not UTF-8 (surrogateescape) as ``\\xNN``. Printable text, spaces included,
    is left alone, and the result is printable, so escaping twice changes nothing."""
    if text.__class__ is not str:
        text = "" if text is None else str(text)
    if text.isprintable():
        return text
    out = []
    for char in text:
        code = ord(char)
        if char.isprintable():
            out.append(char)
        elif 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif code < 0x100:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "".join(out)


#: What makes a spreadsheet read a cell as a formula (OWASP "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value):
    """A CSV cell that spreadsheets show as text: a string starting with
    ``= + - @``, a tab or a CR gets a leading ``'`` (which Excel, LibreOffice
    and Google Sheets hide), as OWASP advises; other values are returned as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def type_name(value) -> str | None:
    "A type code (0-6) or name as its name."
    if isinstance(value, int) and 0 <= value < len(ENTRY_TYPES):
        return ENTRY_TYPES[value]
    if isinstance(value, str) and value in ENTRY_TYPES:
        return value
    return None


def human_size(size: int | float | None) -> str:
    """Sizes in the one unit of every command: decimal (SI) units, as docker
    and registries show them and as ``--min-size 10M`` reads them: 0.0 B,
    3.0 KB (3,000 bytes), 92.7 MB (92,700,000 bytes)."""
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


@functools.lru_cache(maxsize=1024)
def mode_string(type_: str, mode: int) -> str:
    """``-rwxr-xr-x``, ``drwxr-xr-x``, ``lrwxrwxrwx``, ``-rwsr-xr-x``: as ``ls -l``
    and ``find`` print modes (hard links show ``h`` as in ``tar -tv``)."""
    return MODE_CHARS.get(type_, "?") + stat.filemode(mode & 0o7777)[1:]


def format_mode(mode: int, type_=None) -> str:
    "A mode as :func:`mode_string` shows it; ``type_`` is a type name or code."
    return mode_string(type_name(type_) or "?", int(mode) & 0o7777)


def format_mtime(value) -> str | None:
    "Seconds since the epoch as ISO 8601 UTC (``2023-11-14T22:13:20Z``, exact: JSON, Datasette); None if not a time."
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        moment = datetime.datetime.fromtimestamp(value, datetime.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None
    timespec = "seconds" if float(value).is_integer() else "microseconds"
    return moment.replace(tzinfo=None).isoformat(timespec=timespec) + "Z"


@functools.lru_cache(maxsize=8192)  # the files of a layer mostly share a few times
def short_mtime(mtime: float | None) -> str:
    "Seconds since the epoch as ``2023-11-14 22:13`` UTC, for a table column (``ls -l``); ``-`` if not a time."
    if mtime is None:
        return "-"
    try:
        return datetime.datetime.fromtimestamp(mtime, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
    except (OverflowError, OSError, ValueError):
        return "-"


def short_digest(digest: str) -> str:
    "``sha256:4abcdcf6ba3c…`` (12 hex digits, like docker's short ids)."
    algorithm, _, hexpart = digest.partition(":")
    if len(hexpart) <= SHORT_DIGEST_HEX:
        return digest
    return f"{algorithm}:{hexpart[:SHORT_DIGEST_HEX]}\u2026"


def pinned_reference(registry: str, repository: str, tag: str | None, digest: str | None) -> str:
    """The image as indexed, pinned to its digest: ``host/repo:tag@sha256:…``.

    The tag is kept for people to read; the digest makes the commands fetch
    exactly what was indexed even if the tag has moved since.
    """
    return Reference(registry, repository, tag or None, digest or None).short


def save_command(reference: str, layer_digest: str, platform: str | None = None) -> str:
    "``layerslayer save REF [--platform P] --layer DIGEST``"
    parts = ["layerslayer", "save", reference]
    if platform:
        parts += ["--platform", platform]
    parts += ["--layer", layer_digest]
    return shlex.join(parts)


def extract_command(reference: str, position: int, pattern: str = "*", platform: str | None = None,
                    out_dir: str | None = None) -> str:
    "``layerslayer extract REF PATTERN [--platform P] --layer N [-o DIR]``"
    parts = ["layerslayer", "extract", reference, pattern]
    if platform:
        parts += ["--platform", platform]
    parts += ["--layer", str(position)]
    if out_dir:
        parts += ["-o", out_dir]
    return shlex.join(parts)


def save_all_command(reference: str, platform: str | None = None) -> str:
    "``layerslayer save REF [--platform P] --all``"
    parts = ["layerslayer", "save", reference]
    if platform:
        parts += ["--platform", platform]
    parts.append("--all")
    return shlex.join(parts)
