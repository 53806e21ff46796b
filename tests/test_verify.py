"""verify.Digester: the one hash-and-size check, and its one wording."""

import hashlib

import pytest

from layerslayer.errors import VerificationError
from layerslayer.verify import Digester, check_bytes

DATA = b"layer bytes" * 100
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()


def test_matching_bytes_pass_in_any_chunks():
    digester = Digester(DIGEST, len(DATA))
    for start in range(0, len(DATA), 7):
        digester.update(DATA[start:start + 7])
    assert digester.matches() and digester.count == len(DATA)
    digester.check(f"layer {DIGEST}")


def test_a_wrong_digest_and_a_wrong_size_each_have_one_message():
    other = b"x" + DATA[1:]
    with pytest.raises(VerificationError) as info:
        check_bytes(other, DIGEST, f"blob {DIGEST}", len(DATA))
    assert str(info.value) == f"blob {DIGEST} does not match its digest (got sha256:{hashlib.sha256(other).hexdigest()})"
    assert info.value.exit_code == 3
    with pytest.raises(VerificationError, match=f"^blob {DIGEST} is {len(DATA) - 1} bytes, not the {len(DATA)} it should be; the download was deleted$"):
        digester = Digester(DIGEST, len(DATA))
        digester.update(DATA[:-1])
        digester.check(f"blob {DIGEST}", then="the download was deleted")


def test_size_only_and_unknown_size():
    check_bytes(DATA, None, "chunk", len(DATA))
    with pytest.raises(VerificationError, match="is 3 bytes"):
        check_bytes(b"abc", None, "chunk", 4)
    check_bytes(DATA, DIGEST, "blob", None)  # size not known: only the digest is checked


def test_weak_algorithms_are_refused():
    with pytest.raises(VerificationError, match="unsupported digest algorithm 'md5'"):
        Digester("md5:" + "0" * 32)
