"""Building an index the way a user does, for tests that query one."""

from __future__ import annotations

import types
from collections.abc import Sequence
from pathlib import Path

from click.testing import CliRunner
from harness.dbrows import rows

from layerslayer.cli import cli


class BuiltIndex(types.SimpleNamespace):
    "An index file built by ``build_index``, with what the test pushed into it as attributes."

    path: Path

    def rows(self, sql: str, params: Sequence = ()) -> list:
        return rows(self.path, sql, params)

    def layer_id(self, digest: str) -> int:
        return self.rows("SELECT id FROM layers WHERE digest = ?", [digest])[0][0]

    def image_id(self, reference: str) -> int:
        return self.rows("SELECT id FROM images WHERE reference = ?", [reference])[0][0]


def build_index(path: Path, *runs: Sequence[str], **pushed: object) -> BuiltIndex:
    """Run ``layerslayer index PATH ARGS...`` once for each of ``runs`` (references and options),
    failing the test on a non-zero exit; the index, with ``pushed`` as its attributes."""
    for args in runs:
        result = CliRunner().invoke(cli, ["index", str(path), *map(str, args)])
        assert result.exit_code == 0, result.output
    return BuiltIndex(path=path, **pushed)
