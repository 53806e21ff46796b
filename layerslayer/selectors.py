"""What a user types to pick one thing out of several: a layer, a platform.

One rule each, used by every command that takes ``--layer`` or ``--platform``
(``ls``, ``find``, ``save``, ``extract``, ``cat``, ``export``, ``inspect``,
``index``, the interactive flow), so the same text picks the same thing
everywhere.

A layer (``--layer N|DIGEST``)
------------------------------
* ``N`` is an index in the image's layer stack: ``0`` the base, ``-1`` the
  top (negative counts from the top).
* Otherwise a digest: ``sha256:<hex>`` or a unique prefix of its hex part,
  at least 4 hex digits.
* An all-digit text is both a number and hex. It is an index when it is
  negative, shorter than 4 digits (too short for a digest prefix), or names
  a layer the image has (smaller than its layer count); otherwise a digest
  prefix. So ``--layer 1234`` of a 5-layer image is a digest prefix,
  ``--layer 3`` its fourth layer, ``--layer 7`` an error.

A platform (``--platform OS/ARCH[/VARIANT]``)
---------------------------------------------
The first platform the text names (``linux/arm64`` names ``linux/arm64/v8``;
arm64 images often leave out the implied ``v8``). Without one: the first
platform this machine's (``host_platform_string``) names, else the first.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import TypeVar

from .errors import UsageError
from .oci import DIGEST_ALGORITHMS
from .reference import host_platform_string, parse_platform

T = TypeVar("T")

#: Fewest hex digits taken as a digest prefix.
MIN_PREFIX = 4

#: The rule in a sentence, for --help.
LAYER_RULE = (f"N (0 = base, -1 = top) or a digest (sha256:<hex>, or a unique prefix of {MIN_PREFIX}+ hex digits); "
              f"a number is an index when shorter than {MIN_PREFIX} digits or when the image has that layer, "
              "else a digest prefix")

_NUMBER = re.compile(r"-?[0-9]+")
_HEX = re.compile(rf"[0-9a-f]{{{MIN_PREFIX},128}}")


@dataclass(frozen=True)
class LayerSelector:
    "A parsed ``--layer``: exactly one of ``index`` and ``digest`` is set."

    text: str
    index: int | None = None
    #: ``sha256:<hex prefix>``, or a bare hex prefix matched against any algorithm's hex.
    digest: str | None = None

    def matches(self, digest: str) -> bool:
        "Whether the layer with this full digest is the one meant (a digest selector only)."
        if self.digest is None:
            return False
        digest = digest.lower()
        if ":" in self.digest:
            return digest.startswith(self.digest)
        return digest.partition(":")[2].startswith(self.digest)


def parse_layer_selector(text: str | int, layer_count: int | None = None) -> LayerSelector:
    """Read ``text`` as a layer index or a digest (see the module docstring).

    ``layer_count``: the number of layers of the image it selects from; None
    when there is no one image (a search over a whole index), where only a
    number too short to be a digest prefix is an index. Raises UsageError
    when ``text`` is neither.
    """
    if isinstance(text, int):
        return LayerSelector(str(text), index=text)
    shown = text
    text = text.strip().lower()
    if _NUMBER.fullmatch(text):
        number = int(text)
        if number < 0 or len(text) < MIN_PREFIX or (layer_count is not None and number < layer_count):
            return LayerSelector(shown, index=number)
    algorithm, colon, hex_part = text.rpartition(":")
    if _HEX.fullmatch(hex_part) and (not colon or algorithm in DIGEST_ALGORITHMS):
        return LayerSelector(shown, digest=text)
    raise UsageError(f"{shown!r} is not a layer digest or index (give N, -N from the top, "
                     f"sha256:<hex>, or at least {MIN_PREFIX} hex digits)")


def select_layer(stack: Sequence[T], text: str | int, *, digest: Callable[[T], str] = attrgetter("digest")) -> T:
    """The layer of ``stack`` (an image's layers, base first) that ``text`` selects.

    ``digest`` gives an item's digest (default: its ``.digest``). Raises
    UsageError when ``text`` selects none, or (a prefix) several.
    """
    selector = parse_layer_selector(text, len(stack))
    if selector.index is not None:
        n = selector.index
        if not -len(stack) <= n < len(stack):
            if not stack:
                raise UsageError(f"there is no layer {n}: the image has no layers")
            raise UsageError(f"there is no layer {n}: the image has {len(stack)} layer(s), "
                             f"0 to {len(stack) - 1} (or -1 for the top)")
        return stack[n]
    found = [item for item in stack if selector.matches(digest(item))]
    if not found:
        raise UsageError(f"the image has no layer {selector.text}")
    if len({digest(item) for item in found}) > 1:
        raise UsageError(f"{selector.text} matches more than one layer: give more digits")
    return found[0]


def select_layers(stack: Sequence[T], texts: Iterable[str | int], *,
                  digest: Callable[[T], str] = attrgetter("digest")) -> list[T]:
    "The layers ``texts`` select, each once, in the order asked (see :func:`select_layer`)."
    chosen: list[T] = []
    for text in texts:
        layer = select_layer(stack, text, digest=digest)
        if layer not in chosen:
            chosen.append(layer)
    return chosen


def platform_matches(candidate: str, wanted: str) -> bool:
    """Whether the platform ``candidate`` (``linux/arm64/v8``, as an image names
    it) is one ``wanted`` (``linux/arm64``, ``linux/arm64/v8``) asks for.

    Raises UsageError when ``wanted`` is not ``os/arch[/variant]``.
    """
    os_name, arch, variant = parse_platform(wanted)
    if candidate == wanted:
        return True
    parts = candidate.split("/")
    if len(parts) not in (2, 3) or parts[0] != os_name or parts[1] != arch:
        return False
    if variant is None:
        return True
    # arm64 images often omit the implied v8 variant.
    have = parts[2] if len(parts) == 3 else ("v8" if arch == "arm64" else None)
    return have == variant


def choose_platform(candidates: Sequence[str], wanted: str | None = None, *, host: str | None = None) -> int | None:
    """Position in ``candidates`` (platform strings, attestations left out) of the
    platform to use: the first ``wanted`` names; without ``wanted``, the first
    ``host`` names (default: this machine's platform), else the first.

    None when ``wanted`` names none of them, or there are no candidates (the
    caller says which, in its own words).
    """
    if not candidates:
        return None
    if wanted:
        return next((i for i, candidate in enumerate(candidates) if platform_matches(candidate, wanted)), None)
    host = host or host_platform_string()
    return next((i for i, candidate in enumerate(candidates) if platform_matches(candidate, host)), 0)
