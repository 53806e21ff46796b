"""Write docker ``config.json`` files (and fake credential helpers) for tests."""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any


class DockerConfig:
    """A ``$DOCKER_CONFIG`` directory. Every mutator rewrites ``config.json``.

    ``bin_dir`` holds fake ``docker-credential-NAME`` helpers; the conftest
    fixture puts it first on ``PATH``.
    """

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "config.json"
        self.bin_dir = self.dir / "bin"
        self.data: dict[str, Any] = {"auths": {}}
        self.write()

    def write(self, data: dict[str, Any] | None = None) -> DockerConfig:
        if data is not None:
            self.data = data
        self.path.write_text(json.dumps(self.data, indent=2))
        return self

    def add_auth(self, host: str, username: str, password: str, **extra: Any) -> DockerConfig:
        """``auths[host].auth = base64(user:password)`` like ``docker login`` writes."""
        auth = base64.b64encode(f"{username}:{password}".encode()).decode()
        self.data.setdefault("auths", {})[host] = {"auth": auth, **extra}
        return self.write()

    def add_identity_token(self, host: str, token: str) -> DockerConfig:
        self.data.setdefault("auths", {})[host] = {"auth": base64.b64encode(b"<token>:").decode(),
                                                   "identitytoken": token}
        return self.write()

    def set_cred_helper(self, host: str, name: str) -> DockerConfig:
        self.data.setdefault("credHelpers", {})[host] = name
        return self.write()

    def set_creds_store(self, name: str) -> DockerConfig:
        self.data["credsStore"] = name
        return self.write()

    def make_credential_helper(self, name: str, creds: dict[str, tuple[str, str]]) -> Path:
        """Create an executable ``docker-credential-NAME`` in ``bin_dir`` that
        answers ``get`` for the hosts in ``creds`` ({host: (username, secret)})
        and fails like the real helpers for any other host. Each call is
        appended to ``bin_dir/NAME.calls`` (one host per line)."""
        self.bin_dir.mkdir(exist_ok=True)
        script = self.bin_dir / f"docker-credential-{name}"
        table = {h: {"ServerURL": h, "Username": u, "Secret": s} for h, (u, s) in creds.items()}
        calls = self.bin_dir / f"{name}.calls"
        script.write_text(
            f"#!{sys.executable}\n"
            "import json, sys\n"
            f"TABLE = {json.dumps(table)!r}\n"
            "if sys.argv[1:] != ['get']:\n"
            "    sys.exit('only get is supported')\n"
            "host = sys.stdin.read().strip()\n"
            f"open({str(calls)!r}, 'a').write(host + '\\n')\n"
            "entry = json.loads(TABLE).get(host)\n"
            "if entry is None:\n"
            "    print('credentials not found in native keychain')\n"
            "    sys.exit(1)\n"
            "print(json.dumps(entry))\n"
        )
        script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        return script

    def helper_calls(self, name: str) -> list[str]:
        calls = self.bin_dir / f"{name}.calls"
        return calls.read_text().splitlines() if calls.exists() else []

    def path_with_bin(self) -> str:
        return f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
