import base64
import json
import os
import stat

from layerslayer.auth import (
    Credentials,
    credentials_from_docker_config,
    find_credentials,
    parse_challenge,
    write_secret_file,
)


def write_config(tmp_path, config):
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path / "config.json"


def test_parse_bearer_challenge():
    scheme, params = parse_challenge(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull"'
    )
    assert scheme == "bearer"
    assert params == {
        "realm": "https://auth.docker.io/token",
        "service": "registry.docker.io",
        "scope": "repository:library/nginx:pull",
    }


def test_parse_basic_challenge():
    assert parse_challenge('Basic realm="Registry Realm"') == ("basic", {"realm": "Registry Realm"})


def test_auths_entry(tmp_path):
    auth = base64.b64encode(b"alice:pa:ss").decode()
    path = write_config(tmp_path, {"auths": {"127.0.0.1:5000": {"auth": auth}}})
    creds = credentials_from_docker_config("127.0.0.1:5000", path)
    assert (creds.username, creds.password) == ("alice", "pa:ss")
    assert credentials_from_docker_config("127.0.0.1:5001", path) is None


def test_docker_hub_key_matches_hub(tmp_path):
    auth = base64.b64encode(b"bob:pw").decode()
    path = write_config(tmp_path, {"auths": {"https://index.docker.io/v1/": {"auth": auth}}})
    creds = credentials_from_docker_config("registry-1.docker.io", path)
    assert creds.username == "bob"


def test_identity_token(tmp_path):
    path = write_config(tmp_path, {"auths": {"https://ghcr.io": {"identitytoken": "refresh-me"}}})
    creds = credentials_from_docker_config("ghcr.io", path)
    assert creds.identity_token == "refresh-me"


def fake_helper(tmp_path, name, answer):
    script = tmp_path / f"docker-credential-{name}"
    script.write_text(f"#!/bin/sh\nread server\nprintf '%s' '{json.dumps(answer)}'\n")
    script.chmod(0o755)


def test_cred_helper_and_creds_store(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    fake_helper(tmp_path, "pass", {"Username": "carol", "Secret": "from-helper"})
    fake_helper(tmp_path, "store", {"Username": "<token>", "Secret": "id-token"})
    path = write_config(tmp_path, {"credHelpers": {"reg.example:443": "pass"}, "credsStore": "store"})
    helper = credentials_from_docker_config("reg.example:443", path)
    assert (helper.username, helper.password) == ("carol", "from-helper")
    stored = credentials_from_docker_config("other.example", path)
    assert stored.identity_token == "id-token"


def test_missing_helper_is_no_credentials(tmp_path):
    path = write_config(tmp_path, {"credsStore": "does-not-exist"})
    assert credentials_from_docker_config("x.example", path) is None


def test_flags_win_over_config(tmp_path, monkeypatch):
    auth = base64.b64encode(b"alice:pw").decode()
    write_config(tmp_path, {"auths": {"h.example": {"auth": auth}}})
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    monkeypatch.delenv("LAYERSLAYER_USERNAME", raising=False)
    assert find_credentials("h.example").username == "alice"
    assert find_credentials("h.example", "zed", "pw").username == "zed"


def test_secrets_not_in_repr():
    creds = Credentials("alice", "hunter2", source="--username")
    assert "hunter2" not in repr(creds)


def test_secret_file_is_0600(tmp_path):
    path = tmp_path / "token.txt"
    write_secret_file(path, "tok")
    assert path.read_text() == "tok"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
