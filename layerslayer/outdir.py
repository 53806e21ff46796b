"""Output directories: created or refused with one line, never followed through a planted link.

``save``, ``export``, ``extract`` and the interactive flow write under a
directory the user names (or a default). Two rules live here:

* a directory that cannot be created or written is a :class:`OutputDirError`
  (a usage error, exit 2) naming the path and the reason, not a traceback;
* below that directory every component is a real directory: a symbolic link
  planted there (by an extracted image, an earlier tool, anyone) is refused,
  not followed. The default directory itself must not be a link either; a
  directory named on the command line may be (the user chose it).
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from .errors import UsageError


class OutputDirError(UsageError):
    "An output directory that cannot be created or written, or is a planted link."


def _reason(error: OSError) -> str:
    if error.errno == errno.EEXIST:
        return "a file (not a directory) is in the way"
    return error.strerror or str(error)


def prepare_output_dir(path: str | os.PathLike, *, link_ok: bool = True) -> Path:
    """Create ``path`` (and its parents) and check that files can be made in it.

    ``link_ok=False`` (for a default such as ``./downloads``) refuses a
    ``path`` that is a symbolic link.
    """
    path = Path(path)
    if not link_ok:
        refuse_link(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputDirError(f"cannot create the output directory {path}: {_reason(error)}") from None
    if not path.is_dir():
        raise OutputDirError(f"cannot use {path} as the output directory: it is not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".layerslayer-", dir=path)
    except OSError as error:
        raise OutputDirError(f"cannot write in the output directory {path}: {_reason(error)}") from None
    os.close(fd)
    os.unlink(probe)
    return path


def refuse_link(path: str | os.PathLike) -> None:
    "For a default output directory: a symbolic link there was planted, not chosen."
    if os.path.islink(path):
        raise OutputDirError(
            f"{path} is a symbolic link (to {os.readlink(path)}): not writing through it; "
            f"name the directory with -o to write there"
        )


def make_dirs_below(root: str | os.PathLike, directory: str | os.PathLike) -> Path:
    """Create ``directory`` (inside ``root``), refusing any symbolic link between them."""
    root = Path(root)
    directory = Path(directory)
    relative = directory.relative_to(root)
    current = root
    for part in relative.parts:
        current = current / part
        try:
            os.mkdir(current)
        except FileExistsError:
            pass
        except OSError as error:
            raise OutputDirError(f"cannot create the directory {current}: {_reason(error)}") from None
        if current.is_symlink():
            raise OutputDirError(f"{current} is a symbolic link: not writing through it")
        if not current.is_dir():
            raise OutputDirError(f"cannot create the directory {current}: a file (not a directory) is in the way")
    return directory
