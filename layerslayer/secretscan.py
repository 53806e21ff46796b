"""Find secrets in file contents, image config values and build steps.

Two stages, so that indexing stays fast:

1. **Prefilter** (ours): one multi-pattern scan of the whole file for the
   anchors every detector needs (``-----BEGIN``, ``AKIA``, ``ghp_``, ``xox``,
   ``eyJ``, ``://user:pass@``, ``password``...). Hyperscan does it at ~2 GB/s
   (measured: 11.5 MB of ``/usr/lib/python3.11`` in 6 ms, against 1.5 s for
   the same alternation in Python's ``re``); without hyperscan installed the
   same patterns run through ``re`` (slow, same answers). Most files have no
   anchor and cost only this pass.
2. **Detectors** (detect-secrets' plugins, Yelp's maintained rule catalogue)
   run only on the lines around the anchors, and only the plugins that
   anchor can wake. A few rules detect-secrets lacks are ours: whole PEM/PGP
   blocks (so the fingerprint is the key, not its header line), Google
   service-account JSON, docker ``config.json`` auths, unquoted
   ``AWS_SECRET_ACCESS_KEY=`` assignments and ``npm_`` tokens outside
   ``.npmrc``.

Decoys, the rule: a value that is a documented example or a placeholder is
no secret. Any value containing ``EXAMPLE`` (AWS's own
``AKIAIOSFODNN7EXAMPLE``) is dropped; generic ``password=``/``secret=``
assignments and basic-auth URLs are dropped when the value is a placeholder
(``changeme``, ``password``, ``xxx``, ``<...>``, ``${VAR}``, ``{{ var }}``,
shorter than 4 characters...), is unquoted prose with spaces, or sits in a
template file (``*.template``, ``*.example``, ``*.sample``, ``*.dist``,
``*.tmpl``, ``*.tpl``) or test code (``test/``, ``tests/``, ``test_*.py``...):
fixtures, not secrets. Tokens with a
vendor format (``ghp_``, ``xoxb-``, PEM keys...) are reported even in a
template: a real token there is still a real token.

A finding carries the detector, the line, a fingerprint (SHA-256 of the
value, first 32 hex digits: the same key in 500 images is one secret) and a
redacted preview. The value itself is returned too; the store keeps it only
when asked (``--keep-values``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Finding", "Scanner", "DEFAULT_MAX_SIZE", "fingerprint", "redact", "looks_like_text", "DETECTORS"]

#: Files larger than this are not scanned (``--scan-max-size``).
DEFAULT_MAX_SIZE = 1 << 20
#: A file is text when its first bytes hold no NUL (as git and grep decide).
TEXT_SNIFF = 8192
#: Bytes of a line examined either side of an anchor (minified files have huge lines).
LINE_WINDOW = 2048
#: The same for keyword anchors, which end at the ``=`` of ``password = "…"``: the name is just before.
KEYWORD_WINDOW = (128, 512)
#: A PEM/PGP block is looked for up to this far after its BEGIN line.
MAX_KEY_BLOCK = 64 << 10
# Hostile input (a file of a million "password=" lines): bounds on the work and memory one file
# and one Scanner (one layer) may cost; past them the rest is not scanned and ``truncated`` says so.
#: Anchors looked at in one file.
MAX_HITS_PER_FILE = 10_000
#: Findings kept from one file.
MAX_FINDINGS_PER_FILE = 100
#: Lines handed to the detectors by one Scanner (one layer); ~120 us each at worst.
MAX_LINES = 200_000

#: Detector names, as stored in ``findings.detector`` (README lists them).
DETECTORS = (
    "private-key", "gcp-service-account", "aws-access-key-id", "aws-secret-access-key", "azure-storage-key",
    "github-token", "gitlab-token", "slack-token", "slack-webhook", "stripe-key", "jwt", "npm-token",
    "pypi-token", "docker-auth", "basic-auth-url", "password-assignment", "openai-key", "sendgrid-key",
    "square-secret",
)


@dataclass(frozen=True, slots=True)
class Finding:
    detector: str
    line: int  # 1-based; 0 for a value without lines (an Env entry, a label)
    value: str

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.value)

    @property
    def preview(self) -> str:
        return redact(self.value)


def fingerprint(value: str) -> str:
    "What identifies a secret across files, layers and images (no salt: see the README)."
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def redact(value: str) -> str:
    "First and last few characters: enough to recognise a key, not to use it."
    value = " ".join(value.split())
    keep = min(4, len(value) // 5)
    if not keep:
        return "…"
    return f"{value[:keep]}…{value[-keep:]}"


def looks_like_text(data: bytes) -> bool:
    return b"\0" not in data[:TEXT_SNIFF]


# --- anchors: (pattern, caseless, groups of detectors it wakes) --------------

_KEYWORDS = (rb"(pass|pwd|secret|api_?key|auth_?key|service_?key|account_?key|db_?key|database_?key|priv_?key|"
             rb"private_?key|client_?key|contrase)")
_ANCHORS: list[tuple[bytes, bool, tuple[str, ...]]] = [
    (rb"-----BEGIN[ A-Z0-9]*PRIVATE KEY|PuTTY-User-Key-File", False, ("pem",)),
    (rb"(A3T[A-Z0-9]|ABIA|ACCA|AKIA|ASIA)[0-9A-Z]{16}", False, ("aws",)),
    (rb"aws", True, ("aws", "aws_env")),
    (rb"(ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9_]{36}", False, ("github",)),
    (rb"(glpat|gldt|glft|glsoat|glrt|glcbt|glimt|glptt|glagent|gloas)-|GR1348941", False, ("gitlab",)),
    (rb"xox[abposr]-|hooks\.slack\.com/services/", True, ("slack",)),
    (rb"[rs]k_live_", False, ("stripe",)),
    (rb"eyJ[A-Za-z0-9_=-]{8,}\.", False, ("jwt",)),
    (rb"_authToken|npm_[A-Za-z0-9]{36}", False, ("npm",)),
    (rb"pypi-AgE", False, ("pypi",)),
    (rb"\"auth\"\s*:", False, ("docker",)),
    (rb"AccountKey=", False, ("azure",)),
    (rb"://[^\s/:@'\"]+:[^\s/@'\"]+@", False, ("basic",)),
    (rb"T3BlbkFJ|SG\.[A-Za-z0-9_-]{22}\.|sq0csp-", False, ("vendor",)),
    # detect-secrets' keyword rules need the word, then an assignment or comparison right after it
    # (``password = "…"``, ``secret: …``, ``api_key := …``, ``pwd => …``, ``setPassword("…")``) or a
    # quoted value compared with it (``"…" == password``): anchoring on that shape, not on the bare
    # word, keeps prose and code that only mentions passwords out of the detectors.
    (_KEYWORDS + rb"[\w.\-]{0,40}['\"\]]{0,2}\s{0,4}(:|=|!=|=>|\()", True, ("keyword",)),
    (rb"['\"]\s{0,4}[!=]={1,2}\s{0,4}\w{0,40}" + _KEYWORDS, True, ("keyword",)),
]


def fast_prefilter() -> bool:
    """Whether hyperscan is there: without it the prefilter runs through
    ``re`` (~8 MB/s), too slow to scan by default (``index`` then scans only
    when ``--scan`` asks)."""
    try:
        import hyperscan  # noqa: F401
    except ImportError:  # pragma: no cover
        return False
    return True


_COMPILED: list = []
_COMPILE_LOCK = threading.Lock()


def _compiled():
    """(hyperscan module, database of the anchors), compiled once per process
    (it takes ~0.25 s; a Scanner is made per layer); (None, None) without hyperscan."""
    with _COMPILE_LOCK:
        if not _COMPILED:
            try:
                import hyperscan
            except ImportError:  # pragma: no cover - hyperscan ships wheels for our platforms
                _COMPILED.append((None, None))
            else:
                db = hyperscan.Database()
                db.compile(
                    expressions=[p for p, _, _ in _ANCHORS],
                    ids=list(range(len(_ANCHORS))),
                    elements=len(_ANCHORS),
                    flags=[hyperscan.HS_FLAG_CASELESS if caseless else 0 for _, caseless, _ in _ANCHORS],
                )
                _COMPILED.append((hyperscan, db))
        return _COMPILED[0]


class _Prefilter:
    "Offsets (end of match) of every anchor in a buffer, with the groups it wakes."

    def __init__(self):
        hyperscan, db = _compiled()
        self.groups = [groups for _, _, groups in _ANCHORS]
        if hyperscan is not None:
            self._hs = db
            self._terminated = hyperscan.ScanTerminated
            self._scratch = hyperscan.Scratch(db)  # per Scanner: a scratch serves one thread at a time
        else:
            self._hs = None
            self._res = [re.compile(p, re.IGNORECASE if c else 0) for p, c, _ in _ANCHORS]

    def hits(self, data: bytes) -> list[tuple[int, int]]:
        "Sorted (offset, anchor id) pairs."
        found: list[tuple[int, int]] = []
        if self._hs is not None:
            append = found.append

            def on_match(anchor, start, end, flags, context):
                append((end, anchor))
                return len(found) >= MAX_HITS_PER_FILE  # True stops the scan

            try:
                self._hs.scan(data, match_event_handler=on_match, scratch=self._scratch)
            except self._terminated:
                pass  # MAX_HITS_PER_FILE reached: what was found is scanned
        else:
            for anchor, regex in enumerate(self._res):
                found.extend(itertools.islice(((m.end(), anchor) for m in regex.finditer(data)), MAX_HITS_PER_FILE))
        found.sort()
        return found[:MAX_HITS_PER_FILE]


# --- detectors on one line ---------------------------------------------------

_PLACEHOLDER_WORDS = re.compile(
    r"^(?:change_?me|changeit|password\d*|passw0rd|passwd|pass|secret|s3cr3t|token|apikey|api_key|"
    r"xx+|\*+|\.+|-+|_+|null|none|nil|true|false|empty|redacted|removed|hidden|masked|dummy|fake|"
    r"test|testing|foo|bar|baz|foobar|todo|tbd|fixme|placeholder|default|admin|root|user|username|"
    r"guest|example|sample|value|string|str|required|optional|your[-_a-z]*|my[-_]?(?:password|secret)|"
    r"<[^>]*>|\$\{[^}]*\}|\$\([^)]*\)|\$[A-Za-z_][A-Za-z0-9_]*|\{\{.*\}\}|\{[A-Za-z_][A-Za-z0-9_]*\}|"
    r"%\([^)]*\)[sd]|%[sd]|\[[^\]]*\]|@[A-Za-z_]+@)$",
    re.IGNORECASE,
)
_PLACEHOLDER_PARTS = re.compile(r"example|placeholder|changeme|change_me|dummy|your_|_here|xxxxx|\*\*\*", re.IGNORECASE)
_TEMPLATE_SUFFIXES = (".template", ".tmpl", ".tpl", ".example", ".sample", ".dist", ".j2", ".jinja", ".erb")
_CODE_VALUE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*\(|^(?:os\.environ|process\.env|getenv|self\.|args\.|config\.|settings\.)")


def is_placeholder(value: str) -> bool:
    "True for values that stand for a secret without being one (the decoy rule)."
    v = value.strip().strip("'\"`")
    if len(v) < 4 or _PLACEHOLDER_WORDS.match(v) or _PLACEHOLDER_PARTS.search(v):
        return True
    if len(set(v)) <= 2:  # "aaaaaaaa", "********", "12121212"
        return True
    return bool(_CODE_VALUE.match(v))


_TEST_DIRS = {"test", "tests", "testing", "testdata", "__tests__", "spec", "fixtures", "examples", "example"}


def is_template(path: str) -> bool:
    """Templates, samples and test code: generic ``password=`` values there
    are fixtures, not secrets (vendor-format tokens and keys still count)."""
    parts = path.lower().split("/")
    name = parts[-1]
    if name.endswith(_TEMPLATE_SUFFIXES) or ".example." in name or ".sample." in name or ".template." in name:
        return True
    return name.startswith("test_") or name.endswith(("_test.py", "_test.go", ".spec.js", ".test.js")) or any(
        part in _TEST_DIRS for part in parts[:-1])


def _prose(value: str, line: str) -> bool:
    "An unquoted value with a space in it is prose or a list (``passwd: files systemd``), not a password."
    return (" " in value or "\t" in value) and f'"{value}"' not in line and f"'{value}'" not in line


_AWS_ENV = re.compile(
    r"aws_?secret_?(?:access_?)?key(?:_?id)?[\"']?\s*[:=]\s*[\"']?([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])", re.IGNORECASE
)
_NPM_TOKEN = re.compile(r"(?<![A-Za-z0-9_])npm_[A-Za-z0-9]{36}(?![A-Za-z0-9])")
_DOCKER_AUTH = re.compile(r'"auth"\s*:\s*"([A-Za-z0-9+/]{6,}={0,2})"')
_PEM_BEGIN = re.compile(rb"-----BEGIN ([ A-Z0-9]*PRIVATE KEY(?: BLOCK)?)-----")
_PUTTY = re.compile(rb"PuTTY-User-Key-File-\d+:")
_WS = re.compile(rb"\s+|\\n|\\r")
_GCP_MARK = re.compile(rb'"type"\s*:\s*"service_account"')


class _Plugins:
    "detect-secrets' plugins, grouped by the anchor that wakes them."

    def __init__(self):
        from detect_secrets.filters import heuristic
        from detect_secrets.plugins.aws import AWSKeyDetector
        from detect_secrets.plugins.azure_storage_key import AzureStorageKeyDetector
        from detect_secrets.plugins.basic_auth import BasicAuthDetector
        from detect_secrets.plugins.github_token import GitHubTokenDetector
        from detect_secrets.plugins.gitlab_token import GitLabTokenDetector
        from detect_secrets.plugins.jwt import JwtTokenDetector
        from detect_secrets.plugins.keyword import QUOTES_REQUIRED_DENYLIST_REGEX_TO_GROUP, REGEX_BY_FILETYPE, KeywordDetector
        from detect_secrets.plugins.npm import NpmDetector
        from detect_secrets.plugins.openai import OpenAIDetector
        from detect_secrets.plugins.pypi_token import PypiTokenDetector
        from detect_secrets.plugins.sendgrid import SendGridDetector
        from detect_secrets.plugins.slack import SlackDetector
        from detect_secrets.plugins.square_oauth import SquareOAuthDetector
        from detect_secrets.plugins.stripe import StripeDetector
        from detect_secrets.util.filetype import FileType, determine_file_type

        self.keyword = KeywordDetector()
        # detect-secrets' own false-positive filters for keyword findings (its CLI applies them too)
        self.keyword_filters = (
            lambda value, line: heuristic.is_likely_id_string(value, line),
            lambda value, line: heuristic.is_templated_secret(value),
            lambda value, line: heuristic.is_prefixed_with_dollar_sign(value),
            lambda value, line: heuristic.is_indirect_reference(line),
            lambda value, line: heuristic.is_sequential_string(value),
            lambda value, line: heuristic.is_potential_uuid(value),
            lambda value, line: heuristic.is_not_alphanumeric_string(value),
        )
        self.keyword_rules = REGEX_BY_FILETYPE
        self.keyword_default = QUOTES_REQUIRED_DENYLIST_REGEX_TO_GROUP
        self.config_rules = REGEX_BY_FILETYPE[FileType.CONFIG]
        self.file_type = determine_file_type
        # name -> [(plugin, detector name or None to name by value)]
        self.groups = {
            "aws": [(AWSKeyDetector(), None)],
            "github": [(GitHubTokenDetector(), "github-token")],
            "gitlab": [(GitLabTokenDetector(), "gitlab-token")],
            "slack": [(SlackDetector(), None)],
            "stripe": [(StripeDetector(), "stripe-key")],
            "jwt": [(JwtTokenDetector(), "jwt")],
            "npm": [(NpmDetector(), "npm-token")],
            "pypi": [(PypiTokenDetector(), "pypi-token")],
            "azure": [(AzureStorageKeyDetector(), "azure-storage-key")],
            "basic": [(BasicAuthDetector(), "basic-auth-url")],
            "vendor": [(OpenAIDetector(), "openai-key"), (SendGridDetector(), "sendgrid-key"),
                       (SquareOAuthDetector(), "square-secret")],
        }

    def keyword_rules_for(self, path: str | None):
        if path is None:  # Env, labels, build steps: KEY=value without quotes
            return self.config_rules
        name = path.rpartition("/")[2]
        if name.startswith(".env") or name.endswith(".env") or "." not in name:
            return self.config_rules
        return self.keyword_rules.get(self.file_type(name), self.keyword_default)


#: Anchor groups whose plugins capture the secret in a regex group (others: the whole match).
_GROUP_IS_VALUE = {"aws", "basic", "npm"}


def _values(plugin, line: str, grouped: bool) -> Iterable[str]:
    "The secrets a regex plugin matches: the whole match, or its first non-empty group."
    for regex in plugin.denylist:
        for m in regex.finditer(line):
            if grouped and regex.groups:
                yield next((g for g in m.groups() if g), "")
            else:
                yield m.group(0)


#: Generic detectors, dropped where a specific one found something on the same line.
_GENERIC = ("password-assignment", "basic-auth-url")


def _best(found: list[Finding], by_line: bool = True) -> list[Finding]:
    """One finding per (detector, value); a line that a vendor-specific
    detector matched does not also get generic findings (the ``AWS_SECRET =``
    line is an AWS secret, not also a password), nor does a generic value
    repeat under a second generic name."""
    specific_lines = {f.line for f in found if f.detector not in _GENERIC} if by_line else set()
    out: dict[tuple, Finding] = {}
    for f in found:
        if f.detector in _GENERIC and f.line in specific_lines:
            continue
        key = (f.line, f.value) if f.detector in _GENERIC else (f.detector, f.value)
        out.setdefault(key, f)
    return sorted(out.values(), key=lambda f: (f.line, f.detector))


def _name_by_value(value: str) -> str:
    if value.startswith(("AKIA", "ASIA", "ABIA", "ACCA", "A3T")):
        return "aws-access-key-id"
    if value.startswith("https://hooks.slack.com"):
        return "slack-webhook"
    if value.lower().startswith("xox"):
        return "slack-token"
    return "aws-secret-access-key"


class Scanner:
    """Detect secrets in file bytes (:meth:`scan_file`) or in one config value
    or build step (:meth:`scan_text`). One Scanner per thread."""

    def __init__(self, max_size: int = DEFAULT_MAX_SIZE):
        self.max_size = max_size
        self._prefilter = _Prefilter()
        self._plugins = _Plugins()
        self.lines = 0  # lines handed to the detectors so far
        self.truncated = False  # a bound above was reached: some content was not scanned

    def wants(self, size: int) -> bool:
        "Whether a regular file of ``size`` bytes is read for scanning."
        return 0 < size <= self.max_size

    # -- files

    def scan_file(self, path: str, data: bytes) -> list[Finding]:
        "Findings in a file's content (empty for binary files)."
        if not looks_like_text(data) or self.lines >= MAX_LINES:
            return []
        hits = self._prefilter.hits(data)
        if not hits:
            return []
        if len(hits) >= MAX_HITS_PER_FILE:
            self.truncated = True
        groups_of = self._prefilter.groups
        template = is_template(path)
        found: list[Finding] = []
        pem_done_until = -1
        line_no = 1
        counted_to = 0
        seen_lines: dict[int, set[str]] = {}
        rules = None  # the file type's keyword rules, looked up on first need
        for offset, anchor in hits:
            start = data.rfind(b"\n", 0, offset) + 1
            line_no += data.count(b"\n", counted_to, start)
            counted_to = start
            wanted = seen_lines.setdefault(start, set())
            new = [g for g in groups_of[anchor] if g not in wanted]
            if not new:
                continue
            wanted.update(new)
            self.lines += 1
            if self.lines > MAX_LINES or len(found) >= MAX_FINDINGS_PER_FILE:
                self.truncated = True
                break
            if "pem" in new:
                if start > pem_done_until:
                    key = self._pem(data, start, offset)
                    if key is not None:
                        value, end = key
                        name = "gcp-service-account" if _GCP_MARK.search(data) else "private-key"
                        found.append(Finding(name, line_no, value))
                        pem_done_until = end
                new.remove("pem")
                if not new:
                    continue
            end = data.find(b"\n", offset)
            if end < 0:
                end = len(data)
            if new == ["keyword"]:
                lo, hi = max(start, offset - KEYWORD_WINDOW[0]), min(end, offset + KEYWORD_WINDOW[1])
            else:
                lo, hi = max(start, offset - LINE_WINDOW), min(end, offset + LINE_WINDOW)
            line = data[lo:hi].decode("utf-8", "replace")
            if rules is None:
                rules = self._plugins.keyword_rules_for(path)
            found.extend(self._line(line, line_no, new, path, template, rules))
        return _best(found)

    def _pem(self, data: bytes, start: int, offset: int) -> tuple[str, int] | None:
        "The whole key block starting on the line at ``start``: (normalised body, end offset)."
        window = data[start : start + MAX_KEY_BLOCK]
        begin = _PEM_BEGIN.search(window)
        if begin is None:
            putty = _PUTTY.search(window)
            if putty is None:
                return None
            stop = window.find(b"Private-MAC", putty.end())
            stop = len(window) if stop < 0 else window.find(b"\n", stop)
            stop = len(window) if stop < 0 else stop
            body = window[putty.start() : stop]
            return _WS.sub(b"", body).decode("ascii", "replace"), start + stop
        label = begin.group(1)
        stop = window.find(b"-----END " + label + b"-----", begin.end())
        if stop < 0:
            stop = min(len(window), begin.end() + 8192)  # cut short: what there is identifies it
            end = start + stop
        else:
            end = start + stop + len(label) + 14
        body = _WS.sub(b"", window[begin.end() : stop])
        # Encrypted PEM headers ("Proc-Type: 4,ENCRYPTED") stay in the body: still the same key.
        if len(body) < 32:
            return None  # "-----BEGIN PRIVATE KEY-----" mentioned in docs or code, no key
        return body.decode("ascii", "replace"), end

    def _line(self, line: str, line_no: int, groups: Iterable[str], path: str | None, template: bool,
              rules=None) -> Iterable[Finding]:
        plugins = self._plugins
        for group in groups:
            if group == "keyword":
                if template:
                    continue
                if rules is None:
                    rules = plugins.keyword_rules_for(path)
                for value in plugins.keyword.analyze_string(line, denylist_regex_to_group=rules):
                    if value and not is_placeholder(value) and not _prose(value, line) and not any(
                            f(value, line) for f in plugins.keyword_filters):
                        yield Finding("password-assignment", line_no, value)
            elif group == "aws_env":
                for m in _AWS_ENV.finditer(line):
                    if "EXAMPLE" not in m.group(1):
                        yield Finding("aws-secret-access-key", line_no, m.group(1))
            elif group == "docker":
                for m in _DOCKER_AUTH.finditer(line):
                    if _is_docker_auth(m.group(1)):
                        yield Finding("docker-auth", line_no, m.group(1))
            else:
                if group == "npm":
                    for m in _NPM_TOKEN.finditer(line):
                        yield Finding("npm-token", line_no, m.group(0))
                grouped = group in _GROUP_IS_VALUE
                for plugin, name in plugins.groups.get(group, ()):
                    for value in _values(plugin, line, grouped):
                        if not value or "EXAMPLE" in value.upper():
                            continue
                        if group == "basic" and (template or is_placeholder(value)):
                            continue
                        if group == "npm" and not value.startswith("npm_") and len(value) < 36:
                            continue
                        yield Finding(name or _name_by_value(value), line_no, value)

    # -- config values and build steps

    def scan_text(self, text: str) -> list[Finding]:
        """Findings in an Env entry (``KEY=value``), a label (give it as
        ``key=value``) or a build step (``|2 A=b C=d /bin/sh -c ...``);
        ``line`` is 0. Vendor formats are looked for in the whole text;
        generic ``password=`` rules in each ``KEY=value`` of it."""
        data = text.encode("utf-8", "surrogatepass")
        hits = self._prefilter.hits(data)
        if not hits:
            return []
        found: list[Finding] = []
        groups = {g for _, anchor in hits for g in self._prefilter.groups[anchor]}
        if "pem" in groups:
            for m in _PEM_BEGIN.finditer(data):
                key = self._pem(data, m.start(), m.end())
                if key is not None:
                    found.append(Finding("private-key", 0, key[0]))
            groups.discard("pem")
        generic = {"keyword", "aws_env"} & groups
        whole = list(self._line(text, 0, groups - generic, None, False))
        found.extend(whole)
        if generic:
            taken = {f.value for f in whole}
            for _n, piece in enumerate(_assignments(text), 1):
                for f in self._line(piece, 0, generic, None, False):
                    if f.value not in taken and not any(f.value in t or t in f.value for t in taken):
                        found.append(Finding(f.detector, 0, f.value))
        return _best(found, by_line=False)


_ASSIGNMENT = re.compile(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_.-]*=(?:\"[^\"]*\"|'[^']*'|\S*))")


def _assignments(text: str) -> list[str]:
    """Each ``KEY=value`` of a text (a build step's ``|N A=b C=d`` build args,
    ``ENV``/``ARG`` pairs), as a line of its own: detect-secrets' config rules
    read one assignment per line."""
    return [m.group(1) for m in _ASSIGNMENT.finditer(text)] or [text]


def _is_docker_auth(value: str) -> bool:
    "A docker config.json ``auth``: base64 of ``user:password``."
    try:
        decoded = base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
    except (binascii.Error, ValueError):
        return False
    user, colon, password = decoded.partition(b":")
    return bool(colon and user and password) and not is_placeholder(password.decode("utf-8", "replace"))


def config_texts(config: dict) -> list[tuple[str, str, str]]:
    """What of an image config gets scanned: (source, name, text) for each
    Env entry, label and history ``created_by``."""
    inner = config.get("config") if isinstance(config.get("config"), dict) else {}
    out: list[tuple[str, str, str]] = []
    for entry in inner.get("Env") or []:
        if isinstance(entry, str):
            out.append(("env", entry.partition("=")[0], entry))
    labels = inner.get("Labels") or {}
    if isinstance(labels, dict):
        for key, value in labels.items():
            out.append(("label", str(key), f"{key}={value}"))
    history = config.get("history") or []
    if isinstance(history, list):
        for position, step in enumerate(history):
            if isinstance(step, dict) and isinstance(step.get("created_by"), str):
                out.append(("history", str(position), step["created_by"]))
    return out


def mask_config(config: dict, history: list, findings: Iterable[Finding]) -> tuple[dict, list]:
    """Copies of an image config and its history steps (``image.HistoryStep``)
    with every value found replaced by its redacted preview, for an index
    that keeps no secret values."""
    import copy
    import dataclasses

    values = sorted({f.value for f in findings if f.value}, key=len, reverse=True)

    def mask(text):
        if not isinstance(text, str):
            return text
        for value in values:
            if value in text:
                text = text.replace(value, redact(value))
        return text

    config = copy.deepcopy(config)
    inner = config.get("config")
    if isinstance(inner, dict):
        if isinstance(inner.get("Env"), list):
            inner["Env"] = [mask(e) for e in inner["Env"]]
        if isinstance(inner.get("Labels"), dict):
            inner["Labels"] = {k: mask(v) for k, v in inner["Labels"].items()}
    history = [dataclasses.replace(step, created_by=mask(step.created_by)) for step in history]
    return config, history


_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]?)(i?b?)\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    "``1048576``, ``512K``, ``1M``, ``1MiB``, ``2MB`` (K/M/G count 1024s) -> bytes."
    m = _SIZE.match(str(text))
    if not m or (m.group(3) and not m.group(2) and m.group(3).lower() != "b"):
        raise ValueError(f"{text!r} is not a size (examples: 1048576, 512K, 1MiB)")
    return int(m.group(1)) * 1024 ** " kmg".index((m.group(2) or " ").lower())
