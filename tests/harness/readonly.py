"""Run a command with a directory mounted read-only, for it alone.

Tests run as root, and root ignores file permissions: a read-only *file
system* is the only honest way to prove a command never writes. ``unshare
--mount`` gives the command its own mount namespace (needs CAP_SYS_ADMIN, as
root in a VM or a privileged container has); inside it the directory is
bind-mounted onto itself and remounted read-only, so every write into it
fails with EROFS (root included) while the rest of the machine never sees the
mount. The command is exec'ed, so its pid is the command's own (signals reach
it directly).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

_SCRIPT = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'


def readonly_argv(directory: Path | str, argv: Sequence[str]) -> list[str]:
    "argv that runs ``argv`` with ``directory`` read-only (in a private mount namespace)."
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", _SCRIPT, "sh",
            os.fspath(directory), *argv]


def run_readonly(directory: Path | str, argv: Sequence[str], **kw) -> subprocess.CompletedProcess:
    "subprocess.run(argv) with ``directory`` read-only; text output captured."
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 120)
    return subprocess.run(readonly_argv(directory, argv), **kw)


def snapshot(directory: Path | str) -> dict[str, bytes]:
    "Every file under ``directory``, name → bytes: compare before and after to prove nothing was written."
    root = Path(directory)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
