"""File-name patterns shared by ``find``, ``export --match`` and ``extract``.

The rules, in one place so every command agrees:

* A pattern **without** ``/`` matches the file's name (its last path
  component): ``*.pem``, ``id_rsa``, ``.env*``.
* A pattern **with** ``/`` matches the whole path inside the image; a leading
  ``/`` is optional (``/etc/passwd`` and ``etc/passwd`` are the same pattern)
  and a trailing ``/`` is ignored.
* Glob syntax: ``*`` any run of characters, ``?`` one character,
  ``[abc]`` / ``[a-z]`` a set, ``[!abc]`` or ``[^abc]`` its complement. In
  path patterns ``*`` and ``?`` also match ``/``, as in ``find -path`` and
  SQLite's ``GLOB``: ``/etc/*`` matches ``etc/ssl/certs/ca.pem`` too. To match a
  literal ``*``, ``?`` or ``[``, put it in a set: ``[*]``.
* Matching is case-sensitive; ``ignore_case=True`` (``-i``) folds case.

Paths given to the matcher are the normalised tar paths of ``tarstream.Entry``
(no leading ``./`` or ``/``, no trailing ``/``).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass

GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class Pattern:
    text: str          # as the user typed it
    glob: str          # normalised: no leading/trailing "/" in path mode
    path_mode: bool    # True: matches the whole path; False: the file name
    ignore_case: bool = False

    @property
    def is_literal(self) -> bool:
        "True when the pattern has no glob characters (an exact name or path)."
        return not (GLOB_CHARS & set(self.glob))

    @property
    def literal_path(self) -> str | None:
        "The exact path this pattern names, when it names exactly one (case-sensitive path mode)."
        if self.path_mode and self.is_literal and not self.ignore_case:
            return self.glob
        return None

    def regex(self) -> re.Pattern:
        flags = re.DOTALL | (re.IGNORECASE if self.ignore_case else 0)
        return re.compile(translate(self.glob), flags)

    def matches(self, path: str) -> bool:
        return match_path(self.regex(), self.path_mode, path)

    def sql_glob(self) -> tuple[str, str]:
        """(column, GLOB pattern) for SQLite: column is "path" or "name".

        SQLite's GLOB has the same rules (``*`` matches ``/``, case-sensitive,
        ``[^...]`` negation). It cannot fold case: with ``ignore_case`` use
        :func:`compile_patterns` as an SQL function instead.
        """
        out = []
        for kind, text in glob_tokens(self.glob):
            if kind == "set":
                body = text[1:-1]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body + "]")
            elif text == "[":  # an unclosed "[" is a literal
                out.append("[[]")
            else:
                out.append(text)
        return ("path" if self.path_mode else "name", "".join(out))


def escape(path: str) -> str:
    "``path`` as a glob that matches it literally: ``*``, ``?`` and ``[`` as ``[*]``, ``[?]``, ``[[]``."
    return re.sub(r"([*?\[])", r"[\1]", path)


def exact_pattern(path: str) -> str:
    """A pattern (``find``/``extract`` rules) for a command line that matches
    exactly this index path: ``/`` in front (path mode), glob characters
    escaped; a byte that is not UTF-8 (surrogateescape) or a control character
    as ``?`` (one character), so that the command is printable text, safe to
    paste into a terminal."""
    return "/" + "".join(c if c.isprintable() or c == " " else "?" for c in escape(path))


def parse_pattern(text: str, ignore_case: bool = False) -> Pattern:
    "One pattern, normalised; ValueError for an empty one."
    path_mode = "/" in text
    glob = text.strip("/") if path_mode else text
    if path_mode:
        # "./etc/passwd" names the same path as "etc/passwd".
        while glob.startswith("./"):
            glob = glob[2:].lstrip("/")
    if not glob:
        raise ValueError(f"pattern {text!r} matches nothing (it is empty)")
    return Pattern(text=text, glob=glob, path_mode=path_mode, ignore_case=ignore_case)


def _set_end(glob: str, start: int) -> int | None:
    "Index of the ``]`` closing the set opened at ``start``, or None when unclosed."
    j = start + 1
    if j < len(glob) and glob[j] in "!^":
        j += 1
    if j < len(glob) and glob[j] == "]":  # "[]abc]": a leading ] is a member
        j += 1
    while j < len(glob) and glob[j] != "]":
        j += 1
    return j if j < len(glob) else None


def glob_tokens(glob: str) -> list[tuple[str, str]]:
    """The glob as ("lit", char) | ("any", "*") | ("one", "?") | ("set", "[...]") tokens.

    The one reading of a glob that the matcher, SQLite's GLOB and the query
    planner all share. An unclosed ``[`` is a literal.
    """
    out = []
    i = 0
    while i < len(glob):
        c = glob[i]
        if c == "*":
            out.append(("any", c))
        elif c == "?":
            out.append(("one", c))
        elif c == "[":
            end = _set_end(glob, i)
            if end is None:
                out.append(("lit", c))
            else:
                out.append(("set", glob[i : end + 1]))
                i = end
        else:
            out.append(("lit", c))
        i += 1
    return out


def translate(glob: str) -> str:
    """A glob to an anchored regular expression (``*`` and ``?`` match ``/``)
    that matches in time linear in the name's length.

    The ``*`` split the glob into segments of fixed length. The first must
    start the name, the last must end it, and each one between is taken at its
    leftmost place after the previous: if any placement of the segments
    matches, that greedy one does. Each middle segment is an atomic group
    (``(?>.*?SEG)``) so the regex engine never goes back to try a later place;
    a naive ``.*SEG1.*SEG2`` re-scans the rest of the name for every place of
    SEG1, which is quadratic (a 60 KB crafted name took 0.5 s, a 1 MB one
    minutes). Work is O(len(name) x len(glob)).
    """
    return _translate(glob, 1)[0]


# Atomic groups came with Python 3.11; before, a lookahead that captures and a
# back-reference to it commit the same way (numbered groups, hence first_group).
_ATOMIC = sys.version_info >= (3, 11)


def _translate(glob: str, first_group: int, atomic: bool = _ATOMIC) -> tuple[str, int]:
    """translate(), with its capture groups (if any) numbered from first_group; (regex, groups used).
    ``atomic=False``: the lookahead form, whatever the Python version."""
    segments: list[list[str]] = [[]]
    for kind, text in glob_tokens(glob):
        if kind == "any":
            segments.append([])
        elif kind == "one":
            segments[-1].append(".")
        elif kind == "set":
            segments[-1].append(_set_regex(text))
        else:
            segments[-1].append(re.escape(text))
    parts = ["".join(s) for s in segments]
    if len(parts) == 1:
        return "(?:" + parts[0] + r")\Z", 0
    middle = []
    group = first_group
    for part in parts[1:-1]:
        if not part:  # "**" is "*"
            continue
        if atomic:
            middle.append("(?>.*?" + part + ")")
        else:
            middle.append(f"(?=(.*?{part}))\\{group}")
            group += 1
    return "(?:" + parts[0] + "".join(middle) + ".*" + parts[-1] + r")\Z", group - first_group


def _set_regex(text: str) -> str:
    "A glob set ``[...]`` (``[!...]``/``[^...]`` negated) as a regex class."
    body = text[1:-1]
    negate = body[:1] in ("!", "^")
    if negate:
        body = body[1:]
    members = []
    for k, ch in enumerate(body):
        if ch == "-" and 0 < k < len(body) - 1:
            members.append("-")
        elif ch in "\\^[]-":
            members.append("\\" + ch)
        else:
            members.append(ch)
    return "[" + ("^" if negate else "") + "".join(members) + "]"


def match_path(regex: re.Pattern, path_mode: bool, path: str) -> bool:
    if not path_mode:
        path = path.rpartition("/")[2]
    return regex.match(path) is not None


def compile_patterns(patterns: Iterable[str | Pattern], ignore_case: bool = False) -> Callable[[str], bool]:
    """A predicate ``matcher(path) -> bool``: True when any pattern matches.

    Raises ValueError for an empty pattern or an empty list.
    """
    parsed = [p if isinstance(p, Pattern) else parse_pattern(p, ignore_case) for p in patterns]
    if not parsed:
        raise ValueError("no patterns given")

    def alternation(items: list[Pattern]) -> re.Pattern | None:
        if not items:
            return None
        alternatives, groups = [], 1
        for p in items:
            regex, used = _translate(p.glob, groups)
            groups += used
            alternatives.append(("(?i:" if p.ignore_case else "(?:") + regex + ")")
        return re.compile("|".join(alternatives), re.DOTALL)

    name_re = alternation([p for p in parsed if not p.path_mode])
    path_re = alternation([p for p in parsed if p.path_mode])

    def matcher(path: str) -> bool:
        if path_re is not None and path_re.match(path):
            return True
        if name_re is not None and name_re.match(path.rpartition("/")[2]):
            return True
        return False

    matcher.patterns = parsed  # type: ignore[attr-defined]
    return matcher
