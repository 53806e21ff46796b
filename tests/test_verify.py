"""verify.Digester: the one hash-and-size check, and its one wording, the same from every command."""

import hashlib
import os

import pytest
from harness.builder import layer, push_image
from test_download import run

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
    too_short = f"^blob {DIGEST} is {len(DATA) - 1} bytes, not the {len(DATA)} it should be; the download was deleted$"
    with pytest.raises(VerificationError, match=too_short):
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


def test_past_its_size_is_one_message_too():
    digester = Digester(DIGEST, 4)
    digester.update(b"abcd")
    digester.check_not_longer()
    digester.update(b"e")
    with pytest.raises(VerificationError, match=f"^blob {DIGEST} is longer than the 4 bytes it should be$"):
        digester.check_not_longer()


def test_a_corrupt_blob_fails_with_the_same_message_from_save_extract_and_index(fault_proxy, unique_repo, tmp_path):
    "Each command reads the whole blob in one response, so each gets the same flipped byte."
    lay = layer({"x": os.urandom(5000)}, compression="none")
    pushed = push_image(fault_proxy, f"{unique_repo()}:v1", layers=[lay])
    fault_proxy.corrupt(f"/blobs/{lay.digest}", times=None, offset=700)

    def error(result) -> tuple[str, str]:
        "The one line saying what is wrong with the blob: (the check's message, what the command did about it)."
        lines = [line for line in result.output.splitlines() if f"blob {lay.digest} " in line]
        assert len(lines) == 1, result.output
        message, _, then = lines[0][lines[0].index(f"blob {lay.digest} "):].partition("; ")
        return message, then

    saved = run("save", pushed.ref, "--layer", "0", "-o", tmp_path / "dl")
    extracted = run("extract", pushed.ref, "x", "-o", tmp_path / "out")
    indexed = run("index", tmp_path / "index.db", pushed.ref)
    assert (saved.exit_code, extracted.exit_code, indexed.exit_code) == (3, 3, 1)
    message = error(saved)[0]
    assert message.startswith(f"blob {lay.digest} does not match its digest (got sha256:")
    assert error(saved)[1] == "the download was deleted"
    assert error(extracted) == (message, f"the 1 entry written from layer {lay.digest} were removed")
    assert error(indexed) == (message, "")
