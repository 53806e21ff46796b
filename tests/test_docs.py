"""The docs show every command and option, their links hold, and CI runs the README's commands.

The CLI reference (docs/cli.md) and the schema (docs/schema.md) are generated
by cog; `cog --check` in CI (the README's test command) keeps them current.
"""

import re
from pathlib import Path

import click
import pytest

from layerslayer.cli import cli

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# The written docs: the generated CLI reference would show every option whatever the pages say.
WRITTEN = "\n".join(page.read_text() for page in PAGES if page.name != "cli.md")


def setup_commands() -> list[str]:
    "The commands in the README's first shell block."
    block = re.search(r"```(?:bash|sh|console)\n(.*?)```", README, re.S).group(1)
    return [line.strip() for line in block.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_readme_opens_with_two_setup_commands():
    commands = setup_commands()
    assert len(commands) == 2, commands
    install, test = commands
    assert "pip install" in install
    assert install.endswith(".venv/bin/pip install -e '.[test,dev]'"), install
    assert "pytest" in test
    # CI runs the linters and the docs check too: they are part of the test command
    for check in ("ruff check .", "lint-imports", "cog --check README.md docs/*.md"):
        assert check in test, (check, test)


def test_ci_runs_the_readme_commands():
    ci = (ROOT / ".ci" / "run").read_text()
    install, test = setup_commands()
    assert test in ci
    for part in install.split("&&"):
        assert part.strip() in ci, part


def test_readme_is_a_front_page():
    "The first `find` hit comes right after the set-up; the manual lives in docs/."
    assert len(README.splitlines()) <= 250
    main_job = README.index("layerslayer index images.db alpine")
    assert main_job < README.index("layerslayer find images.db") < README.index("## ")


def iter_commands(group: click.Group, prefix=()):
    for name, command in sorted(group.commands.items()):
        yield prefix + (name,), command
        if isinstance(command, click.Group):
            yield from iter_commands(command, prefix + (name,))


COMMANDS = list(iter_commands(cli))


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_command_documented(path, command):
    assert f"layerslayer {' '.join(path)}" in WRITTEN, f"no page shows `layerslayer {' '.join(path)}`"
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            assert any(opt in WRITTEN for opt in param.opts), f"{' '.join(path)}: option {param.opts} in no page"


def test_top_level_options_documented():
    for param in cli.params:
        if isinstance(param, click.Option) and not param.hidden:
            assert any(opt in WRITTEN for opt in param.opts), param.opts


def test_generated_pages_have_their_cog_blocks():
    for name, source in [("cli.md", "CliRunner"), ("schema.md", "store.schema_text")]:
        text = (ROOT / "docs" / name).read_text()
        assert "[[[cog" in text and "[[[end]]]" in text and source in text, name


def anchor(heading: str) -> str:
    "GitHub's id for a Markdown heading."
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def headings(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {anchor(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.M)}


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_links_hold(page):
    "Every relative link names a file that exists and, with #anchor, one of its headings."
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, fragment = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{target}: no such file"
        if fragment:
            assert fragment in headings(linked), f"{target}: no such heading"
