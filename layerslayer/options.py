"""Connection settings shared by every command that talks to a registry."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .reference import DOCKER_HUB, Reference

if TYPE_CHECKING:
    from .registry import RegistryClient

DEFAULT_TOKEN_FILE = "token.txt"


@dataclass(repr=False)
class ClientOptions:
    username: str | None = None
    password: str | None = None
    token_file: Path | None = None
    plain_http: bool = False
    insecure: bool = False
    timeout: float = 60.0
    retries: int = 4
    deadline: float = 300.0  # seconds per request (a blob's grows with its size: registry.BLOB_MIN_RATE)

    def __repr__(self) -> str:  # the password must never be printed
        return f"ClientOptions(username={self.username!r}, plain_http={self.plain_http})"

    def client(self, registry: str | Reference) -> RegistryClient:
        # Imported here: commands that only read an index (find, ls, images,
        # browse) never load the HTTP stack.
        from .auth import find_credentials
        from .registry import RegistryClient

        host = registry.registry if isinstance(registry, Reference) else registry
        token_file = self.token_file
        if token_file is None and host == DOCKER_HUB and Path(DEFAULT_TOKEN_FILE).is_file():
            # The original tool read a ready Docker Hub bearer token from
            # ./token.txt; it is never sent to any other registry.
            token_file = Path(DEFAULT_TOKEN_FILE)
        problems: list[str] = []
        credentials = find_credentials(host, self.username, self.password, problems)
        return RegistryClient(
            host,
            credentials=credentials,
            credentials_problem="; ".join(problems) or None,
            deadline=self.deadline,
            plain_http=self.plain_http,
            insecure=self.insecure,
            timeout=self.timeout,
            retries=self.retries,
            token_file=token_file,
        )
