import pytest
from click.testing import CliRunner

from layerslayer.cli import cli
from layerslayer.errors import InvalidReference
from layerslayer.reference import parse_reference

D64 = "sha256:" + "a" * 64
B64 = "sha256:" + "b" * 64


@pytest.mark.parametrize(
    "text,registry,repository,tag,digest",
    [
        ("nginx", "registry-1.docker.io", "library/nginx", "latest", None),
        ("docker.io/nginx", "registry-1.docker.io", "library/nginx", "latest", None),
        ("index.docker.io/library/nginx:1.27", "registry-1.docker.io", "library/nginx", "1.27", None),
        ("moby/buildkit:latest", "registry-1.docker.io", "moby/buildkit", "latest", None),
        ("ghcr.io/owner/repo:tag", "ghcr.io", "owner/repo", "tag", None),
        ("localhost:5000/a/b/c:v1", "localhost:5000", "a/b/c", "v1", None),
        ("localhost/app", "localhost", "app", "latest", None),
        (f"127.0.0.1:5055/team/app@{D64}", "127.0.0.1:5055", "team/app", None, D64),
        (f"repo:tag@{B64}", "registry-1.docker.io", "library/repo", "tag", B64),
        ("[::1]:5000/x/y:z", "[::1]:5000", "x/y", "z", None),
        ("a.b-c.io/f__g--h.i:V1.0-rc_1", "a.b-c.io", "f__g--h.i", "V1.0-rc_1", None),
    ],
)
def test_parse(text, registry, repository, tag, digest):
    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)


def test_digest_wins_for_fetching():
    ref = parse_reference(f"repo:tag@{B64}")
    assert ref.reference == B64
    assert parse_reference("repo:tag").reference == "tag"


def test_display_forms():
    ref = parse_reference("nginx")
    assert str(ref) == "docker.io/library/nginx:latest"
    assert ref.short == "nginx:latest"
    assert parse_reference("localhost:5000/a:b").short == "localhost:5000/a:b"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "Nginx",
        "library/Nginx",
        "a//b",
        "foo/",
        "/foo",
        "ubuntu:",
        "repo@sha256:abc",
        "repo@sha256:" + "g" * 64,
        "repo@" + "a" * 64,
        "repo:-bad",
        "repo:" + "t" * 129,
        "a b",
        "-leading/dash",
        "x/" + "a" * 300,
        "host:99x/foo",
    ],
)
def test_invalid(text):
    with pytest.raises(InvalidReference) as info:
        parse_reference(text)
    assert "\n" not in str(info.value)
    assert "invalid image reference" in str(info.value)


@pytest.mark.parametrize("text", ["Nginx", "a//b", "repo@sha256:abc", ""])
def test_invalid_reference_cli(text):
    result = CliRunner().invoke(cli, ["inspect", text])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1
    assert result.output.startswith("Error: invalid image reference")
    assert "Traceback" not in result.output
