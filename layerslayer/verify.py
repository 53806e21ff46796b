"""The one check of bytes against the digest and size they were promised.

Every download, spool and stream feeds a :class:`Digester` (as every reader
in go-containerregistry goes through ``internal/verify``), so a corrupt blob
fails with the same message from ``save``, ``extract``, ``index`` and ``cat``.
"""

from __future__ import annotations

import hashlib

from .errors import VerificationError
from .oci import DIGEST_ALGORITHMS, digest_algorithm


def sha256_digest(data: bytes) -> str:
    "``sha256:<hex>`` of bytes in memory (the digest we give a manifest asked for by tag)."
    return "sha256:" + hashlib.sha256(data).hexdigest()


def hasher_for(digest: str):
    "A hashlib object for a digest's algorithm (sha256, sha384, sha512; nothing weaker)."
    algorithm = digest_algorithm(digest)
    if algorithm not in DIGEST_ALGORITHMS:
        raise VerificationError(f"unsupported digest algorithm {algorithm[:20]!r} in {digest[:100]!r}")
    return hashlib.new(algorithm)


class Digester:
    """Hash and count bytes as they pass; :meth:`check` compares both with
    what the descriptor promised (``size`` None or 0: not known, not checked;
    ``digest`` None: only the size is checked).

    Raises VerificationError at construction for an algorithm weaker than sha256.
    """

    __slots__ = ("count", "digest", "hasher", "size")

    def __init__(self, digest: str | None, size: int | None = None):
        self.digest = digest
        self.size = size
        self.hasher = hasher_for(digest) if digest is not None else None
        self.count = 0

    def update(self, chunk: bytes) -> None:
        if self.hasher is not None:
            self.hasher.update(chunk)
        self.count += len(chunk)

    @property
    def actual(self) -> str | None:
        "The digest of the bytes fed so far (None when no digest is checked)."
        if self.hasher is None:
            return None
        return f"{digest_algorithm(self.digest)}:{self.hasher.hexdigest()}"

    def matches(self) -> bool:
        "True when the bytes fed so far have the promised digest and size (no error raised)."
        return (not self.size or self.count == self.size) and self.actual == self.digest

    def check(self, what: str | None = None, *, then: str = "") -> None:
        """Raise VerificationError unless the bytes fed have the promised size
        and digest. ``what`` names the bytes for the message (``eStargz TOC
        sha256:…``); by default ``blob sha256:…``, the one name every command
        gives a whole blob. ``then`` says what was done about it (``the
        download was deleted``)."""
        what = what or f"blob {self.digest}"
        tail = f"; {then}" if then else ""
        if self.size and self.count != self.size:
            raise VerificationError(f"{what} is {self.count} bytes, not the {self.size} it should be{tail}")
        actual = self.actual
        if actual != self.digest:
            raise VerificationError(f"{what} does not match its digest (got {actual}){tail}")

    def check_not_longer(self, what: str | None = None) -> None:
        """Raise VerificationError as soon as more bytes were fed than the
        promised size: a stream that goes on past it is stopped there, not
        read to its end (``what`` as for :meth:`check`)."""
        if self.size and self.count > self.size:
            what = what or f"blob {self.digest}"
            raise VerificationError(f"{what} is longer than the {self.size} bytes it should be")


def check_bytes(data: bytes, digest: str | None, what: str, size: int | None = None) -> None:
    "Check a whole blob held in memory (see :meth:`Digester.check`)."
    digester = Digester(digest, size)
    digester.update(data)
    digester.check(what)
