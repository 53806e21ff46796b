"""The README documents every command and option, and CI runs the README's commands."""

import re
from pathlib import Path

import click
import pytest

from layerslayer.cli import cli

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def setup_commands() -> list[str]:
    "The commands in the README's first shell block."
    block = re.search(r"```(?:bash|sh|console)\n(.*?)```", README, re.S).group(1)
    return [line.strip() for line in block.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_readme_opens_with_two_setup_commands():
    commands = setup_commands()
    assert len(commands) == 2, commands
    install, test = commands
    assert "pip install" in install
    assert "pytest" in test


def test_ci_runs_the_readme_commands():
    ci = (ROOT / ".ci" / "run").read_text()
    install, test = setup_commands()
    assert test in ci
    for part in install.split("&&"):
        assert part.strip() in ci, part


def iter_commands(group: click.Group, prefix=()):
    for name, command in sorted(group.commands.items()):
        yield prefix + (name,), command
        if isinstance(command, click.Group):
            yield from iter_commands(command, prefix + (name,))


COMMANDS = list(iter_commands(cli))


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_command_documented(path, command):
    assert f"layerslayer {' '.join(path)}" in README, f"README does not show `layerslayer {' '.join(path)}`"
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            assert any(opt in README for opt in param.opts), f"{' '.join(path)}: option {param.opts} not in README"


def test_top_level_options_documented():
    for param in cli.params:
        if isinstance(param, click.Option) and not param.hidden:
            assert any(opt in README for opt in param.opts), param.opts


def test_schema_documented():
    "The README's schema block is generated from the migrations (UPDATE_README=1 rewrites it)."
    import os

    from layerslayer import store

    db = store.open_db(":memory:")
    block = f"<!-- schema -->\n```sql\n{store.schema_text(db).strip()}\n```\n<!-- /schema -->"
    if os.environ.get("UPDATE_README"):
        text = re.sub(r"<!-- schema -->.*?<!-- /schema -->", lambda m: block, README, flags=re.S)
        (ROOT / "README.md").write_text(text)
        return
    assert block in README, "README schema is stale: run UPDATE_README=1 python3 -m pytest tests/test_docs.py"
