"""The original interactive flow, and its batch modes.

``layerslayer`` without a command (or ``layerslayer -t REF``) walks through::

    image -> platform -> build steps -> layers -> peek each chosen layer -> "Download this layer? (y/N)"

and the batch flags do the same without questions: ``--peek-all`` lists every
layer, ``--save-all`` downloads every layer, both together do both in one pass
(one download per blob).

Everything goes through a :class:`Prompter`, which takes the functions that
read answers and write text (the CLI passes click's, tests pass their own)
and tees what is shown -- prompts and typed answers included -- to an
optional log file. Secrets never reach the log: typed passwords are read
without echo and not logged, and any known secret (``--password``, a token
file's token) is masked in whatever is logged.

Peeking streams the layer once: the verified bytes are spooled to a ``.part``
file next to where the download would go (:class:`download.BlobSpool`) and the
file is kept only when the answer is yes, so peek-then-download never fetches
a blob twice. Ending the input or pressing Ctrl-C stops cleanly and leaves no
half-written file in the download folder.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from . import download, store, tarstream
from .display import human_size, mode_string, printable
from .errors import AuthError, LayerslayerError, NotFound, TarError, UsageError, cli_words
from .image import LayerInfo, PlatformImage, PlatformInfo, ResolvedImage, load_platform, resolve, select_platform
from .indexer import VerifiedStream, record_image, record_platform, write_listing
from .oci import layer_compression, whiteout_target
from .options import DEFAULT_TOKEN_FILE, ClientOptions
from .reference import Reference, parse_reference
from .registry import RegistryClient
from .selectors import choose_platform, platform_matches

DEFAULT_IMAGE = "moby/buildkit:latest"  # the original tool's default
MAX_LOGIN_ATTEMPTS = 3

IMAGE_PROMPT = f"Enter image (registry/repository:tag) [default: {DEFAULT_IMAGE}]: "
LAYERS_PROMPT = "Layers to peek (comma-separated INDEX or ALL) [default: ALL]: "
DOWNLOAD_PROMPT = "Download this layer? (y/N) "

#: What may stand next to a secret for the log to mask it: the ends of a token.
_TOKEN_BREAKS = r"\s'\"`=:,;@()\[\]{}<>"

# progress_factory(label, total) -> context manager yielding an update(n) callable, or None
ProgressFactory = Callable[[str, int | None], AbstractContextManager]


class EndOfInput(LayerslayerError):
    "The input ended (Ctrl-D, or a script ran out of answers) while a question was asked."

    exit_code = 1

    def __init__(self) -> None:
        super().__init__("no more input (end of file) while waiting for an answer: stopped")


# -- reading and writing --------------------------------------------------------------


def _default_write(text: str, err: bool) -> None:
    stream = sys.stderr if err else sys.stdout
    stream.write(text)
    stream.flush()


def _default_read(prompt: str) -> str:
    return input(prompt)


def _default_read_secret(prompt: str) -> str:
    import getpass

    return getpass.getpass(prompt)


class Prompter:
    """Shows text, asks questions, and keeps a log of both.

    ``read(prompt)`` shows the prompt and returns the line typed (raising
    EOFError at end of input), like :func:`input`; ``read_secret(prompt)``
    does the same without echo (like :func:`getpass.getpass`); ``write(text,
    err)`` writes text to stdout or stderr. ``log`` is an open text file that
    receives everything shown (progress bars excepted), each prompt followed
    by the answer typed, with secrets masked.
    """

    def __init__(
        self,
        read: Callable[[str], str] = _default_read,
        write: Callable[[str, bool], None] = _default_write,
        *,
        read_secret: Callable[[str], str] = _default_read_secret,
        log: TextIO | None = None,
        secrets: Iterable[str | None] = (),
    ):
        self._read = read
        self._read_secret = read_secret
        self._write = write
        self.log = log
        self.secrets: list[str] = []
        for secret in secrets:
            self.add_secret(secret)

    def add_secret(self, secret: str | None) -> None:
        "Never let this string reach the log (where it stands as a whole token)."
        if secret and len(secret) >= 3 and secret not in self.secrets:
            self.secrets.append(secret)
            self.secrets.sort(key=len, reverse=True)
            self._secret_re = re.compile(
                f"(?<![^{_TOKEN_BREAKS}])(?:{'|'.join(map(re.escape, self.secrets))})(?![^{_TOKEN_BREAKS}])"
            )

    def _redact(self, text: str) -> str:
        """Mask each secret where it is a whole token (between spaces, quotes or
        ``=:,;@()[]{}<>``), not inside other words: a password ``root`` must not
        turn ``root/root`` owners and ``/root`` paths into stars."""
        if not self.secrets:
            return text
        return self._secret_re.sub("********", text)

    def to_log(self, text: str) -> None:
        "Write one line to the log: secrets masked, then escaped (display.printable)."
        if self.log is not None:
            self.log.write(printable(self._redact(text)) + "\n")
            self.log.flush()

    def say(self, text: str = "", *, err: bool = False) -> None:
        "Show a line (on stderr with err=True) and log it; untrusted text in it is escaped."
        self._write(printable(text) + "\n", err)
        self.to_log(text)

    def ask(self, prompt: str) -> str:
        "Ask a question; return the answer stripped. EOF raises EndOfInput."
        prompt = printable(prompt)
        try:
            answer = self._read(prompt)
        except EOFError:
            self._write("\n", False)
            self.to_log(prompt)
            raise EndOfInput() from None
        except KeyboardInterrupt:
            self._write("\n", False)  # "Interrupted." goes on a line of its own
            self.to_log(prompt)
            raise
        self.to_log(prompt + answer)
        return answer.strip()

    def ask_secret(self, prompt: str) -> str:
        "Ask for a password: not echoed, not logged."
        prompt = printable(prompt)
        try:
            answer = self._read_secret(prompt)
        except EOFError:
            self._write("\n", False)
            self.to_log(prompt)
            raise EndOfInput() from None
        except KeyboardInterrupt:
            self._write("\n", False)
            self.to_log(prompt)
            raise
        self.add_secret(answer)
        self.to_log(prompt)
        return answer

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
            self.log = None


# -- answers --------------------------------------------------------------------------


class BadAnswer(ValueError):
    "str() is the hint shown before the question is asked again."


def parse_layer_selection(text: str, count: int) -> list[int]:
    """``""`` or ``ALL`` -> every layer; ``0,2`` -> those; ``1-3`` a range; ``-1`` the top layer.

    Raises :class:`BadAnswer` with a hint.
    """
    text = text.strip()
    if not text or text.upper() == "ALL":
        return list(range(count))
    if count == 1:
        usage = "answer 0 (the only layer) or ALL"
    else:
        usage = f"answer layer numbers from 0 to {count - 1} separated by commas (e.g. 0,{count - 1}), a range such as 0-{count - 1}, or ALL"
    chosen: list[int] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            raise BadAnswer(f"empty layer number in {text!r}: {usage}")
        match = re.fullmatch(r"(\d+)\s*-\s*(\d+)", item)
        if match:
            first, last = int(match.group(1)), int(match.group(2))
            if first > last:
                raise BadAnswer(f"range {item!r} runs backwards: {usage}")
            numbers = range(first, last + 1)
        elif re.fullmatch(r"-?\d+", item):
            numbers = [int(item)]
        else:
            raise BadAnswer(f"{item!r} is not a layer number: {usage}")
        for number in numbers:
            index = number + count if number < 0 else number
            if not 0 <= index < count:
                raise BadAnswer(f"there is no layer {number}: layers are numbered 0 to {count - 1}")
            if index not in chosen:
                chosen.append(index)
    return chosen


def parse_platform_choice(text: str, platforms: list[PlatformInfo], default: int) -> int:
    "A number from the list (empty -> default), or a platform such as linux/arm64."
    text = text.strip()
    if not text:
        return default
    usage = f"answer a number from 0 to {len(platforms) - 1}, or a platform such as {platforms[0]}"
    if re.fullmatch(r"\d+", text):
        number = int(text)
        if number < len(platforms):
            return number
        raise BadAnswer(f"there is no platform {number}: {usage}")
    if "/" in text:
        try:
            number = choose_platform([str(platform) for platform in platforms], text)
        except UsageError as error:
            raise BadAnswer(f"{error}: {usage}") from None
        if number is not None:
            return number
        raise BadAnswer(f"this image has no platform {text}: {usage}")
    raise BadAnswer(f"{text!r} is not a platform number: {usage}")


def parse_yes_no(text: str) -> bool:
    answer = text.strip().lower()
    if answer in ("", "n", "no"):
        return False
    if answer in ("y", "yes"):
        return True
    raise BadAnswer("answer y (download it) or n (the default: skip it)")


# -- showing entries ------------------------------------------------------------------

def format_entry(entry: tarstream.Entry) -> str:
    """One ``tar -tv``-like line: type and mode, owner, human size, path (and what it points to)::

        drwxr-xr-x  root/root              etc/
        -rw-r--r--  root/root     1.2 KB   etc/passwd
        lrwxrwxrwx  root/root              bin -> usr/bin
    """
    mode = mode_string(entry.type, entry.mode & 0o7777)
    owner = f"{printable(entry.uname) or entry.uid}/{printable(entry.gname) or entry.gid}"
    if entry.type == "file":
        size = human_size(entry.size)
    elif entry.type in ("char", "block"):
        size = f"{entry.devmajor},{entry.devminor}"
    else:
        size = ""
    path = printable(entry.path)
    if entry.type == "dir":
        path += "/"
    elif entry.type == "symlink":
        path += f" -> {printable(entry.linkname)}"
    elif entry.type == "hardlink":
        path += f" link to {printable(entry.linkname)}"
    if entry.opaque:
        parent = entry.path.rpartition("/")[0]
        path += f"  [opaque: hides what lower layers have in {printable(parent) or '/'}/]"
    elif entry.whiteout:
        path += f"  [whiteout: deletes {printable(whiteout_target(entry.path))}]"
    return f"  {mode}  {owner:<17} {size:>9}  {path}"


# -- the flow -------------------------------------------------------------------------


@dataclass
class FlowOptions:
    target: str | None = None  # -t/--target-image; asked for when None
    platform: str | None = None  # --platform answers the platform question
    peek_all: bool = False
    save_all: bool = False
    db_path: Path | None = None  # --db: record what is peeked
    out_dir: Path = download.DEFAULT_OUTPUT
    client_options: ClientOptions = field(default_factory=ClientOptions)
    progress_factory: ProgressFactory | None = None  # download progress bars (--save-all)

    @property
    def batch(self) -> bool:
        return self.peek_all or self.save_all


@dataclass
class FlowResult:
    reference: Reference | None = None
    platform: str | None = None
    peeked: list[str] = field(default_factory=list)  # layer digests listed
    saved: list[Path] = field(default_factory=list)  # files kept in the download folder
    already_saved: int = 0  # of those, how many were there before (verified, not downloaded)
    errors: list[LayerslayerError] = field(default_factory=list)
    bytes_downloaded: int = 0

    @property
    def exit_code(self) -> int:
        if not self.errors:
            return 0
        return max(error.exit_code for error in self.errors)


def token_secrets(options: ClientOptions) -> list[str]:
    "Tokens layerslayer may send, so that the log can mask them."
    found = []
    for path in (options.token_file, Path(DEFAULT_TOKEN_FILE)):
        try:
            if path is not None and Path(path).is_file():
                found.append(Path(path).read_text(errors="replace").strip())
        except OSError:
            pass
    return found


def _step_text(created_by: str) -> str:
    return " ".join(created_by.split())


class Flow:
    "One run of the interactive flow (or a batch mode); see :func:`run`."

    def __init__(self, options: FlowOptions, prompter: Prompter):
        self.options = options
        self.ui = prompter
        self.result = FlowResult()
        self.client_options = options.client_options
        self.client: RegistryClient | None = None
        self.db = None

    # -- image ----------------------------------------------------------------

    def choose_image(self) -> tuple[Reference, ResolvedImage]:
        "The image from -t, else asked for (asked again while it cannot be found)."
        if self.options.target is not None:
            ref = parse_reference(self.options.target)
            return ref, self.resolve(ref, may_login=not self.options.batch)
        while True:
            text = self.ui.ask(IMAGE_PROMPT) or DEFAULT_IMAGE
            try:
                ref = parse_reference(text)
            except UsageError as error:
                self.ui.say(f"{error}: try again, e.g. alpine:3.20 or registry.example.com:5000/team/app:v1")
                continue
            try:
                return ref, self.resolve(ref, may_login=not self.options.batch)
            except EndOfInput:
                raise
            except LayerslayerError as error:  # not found, unreachable, access denied: a typo?
                self.ui.say(f"{cli_words(str(error))}: try another image")

    def resolve(self, ref: Reference, *, may_login: bool) -> ResolvedImage:
        attempts = 0
        while True:
            self.client = self.client_options.client(ref)
            if attempts and self.client.auth.credentials is not None:
                # Typed at the prompt, not given as --username: say so in messages.
                self.client.auth.credentials.source = "the login typed at the prompt"
            try:
                return resolve(self.client, ref)
            except AuthError as error:
                # Ask for a login only when none was given on the command line.
                given = self.options.client_options.username is not None
                if not may_login or given or attempts >= MAX_LOGIN_ATTEMPTS:
                    raise
                attempts += 1
                self.ui.say(cli_words(str(error)))
                username = self.ui.ask(f"Username for {ref.registry} (empty to stop): ")
                if not username:
                    raise
                password = self.ui.ask_secret(f"Password for {username}@{ref.registry}: ")
                self.client_options = dataclasses.replace(self.client_options, username=username, password=password)

    # -- platform -------------------------------------------------------------

    def choose_platform(self, resolved: ResolvedImage) -> PlatformImage:
        assert self.client is not None
        wanted = self.options.platform
        if not resolved.is_index:
            image = load_platform(self.client, resolved, resolved.platforms[0])
            if wanted and not platform_matches(str(image.platform), wanted):
                raise NotFound(f"{resolved.reference.short} has no platform {wanted} (it is a single-platform {image.platform} image)")
            self.ui.say(f"Platform: {image.platform} (single-platform image)")
            return image
        platforms = resolved.real_platforms  # attestations are not images: never offered
        if not platforms:
            raise NotFound(f"{resolved.reference.short} has no platform images (only attestations)")
        if len(platforms) == 1 or wanted:
            chosen = select_platform(resolved, wanted)
            note = " (the only one)" if len(platforms) == 1 else ""
            self.ui.say(f"Platform: {chosen}{note}")
        elif self.options.batch:
            chosen = select_platform(resolved, None)
            others = ", ".join(str(p) for p in platforms)
            self.ui.say(f"Platform: {chosen} (of {others}; --platform chooses)")
        else:
            default = platforms.index(select_platform(resolved, None))
            self.ui.say("")
            self.ui.say("Available platforms:")
            for number, platform in enumerate(platforms):
                self.ui.say(f" [{number}] {platform}")
            while True:
                answer = self.ui.ask(f"Select a platform [{default}]: ")
                try:
                    chosen = platforms[parse_platform_choice(answer, platforms, default)]
                    break
                except BadAnswer as hint:
                    self.ui.say(f"Please {hint}." if str(hint).startswith("answer") else f"{hint}.")
        return load_platform(self.client, resolved, chosen)

    # -- showing --------------------------------------------------------------

    def show_image(self, image: PlatformImage) -> None:
        self.ui.say("")
        self.ui.say("Build steps:")
        if not image.history:
            self.ui.say(" (none recorded in the image config)")
        for step in image.history:
            note = " (metadata only)" if step.empty_layer else ""
            self.ui.say(f" [{step.index}] {printable(_step_text(step.created_by))}{note}")
        self.ui.say("")
        total = sum(layer.size for layer in image.layers)
        self.ui.say(f"Layers ({len(image.layers)}, {human_size(total)}):")
        if not image.layers:
            self.ui.say(" (none)")
        for layer in image.layers:
            note = "  (foreign: not distributed by this registry)" if layer.foreign else ""
            self.ui.say(f" [{layer.index}] {layer.digest}  {human_size(layer.size)}{note}")

    def _header(self, layer: LayerInfo) -> None:
        self.ui.say("")
        self.ui.say(f"Layer [{layer.index}] {layer.digest}  {human_size(layer.size)}")

    # -- layers ---------------------------------------------------------------

    def dest(self, ref: Reference, layer: LayerInfo) -> Path:
        return download.blob_path(self.options.out_dir, ref.registry, ref.repository, layer.digest, layer.media_type)

    @contextmanager
    def _tidy(self, dest: Path) -> Iterator[None]:
        "Remove the directories made for ``dest`` if nothing was kept in them (a peek answered no, Ctrl-C)."
        out_dir = Path(self.options.out_dir)
        missing = []
        for directory in [dest.parent, *dest.parent.parents]:
            if directory.exists():
                break
            missing.append(directory)
            if directory == out_dir:
                break
        try:
            yield
        finally:
            for directory in missing:  # deepest first
                try:
                    directory.rmdir()
                except OSError:
                    break

    def _listing(self, entries: Iterable[tarstream.Entry], counter: list[int]) -> Iterator[tarstream.Entry]:
        say = self.ui.say
        for entry in entries:
            say(format_entry(entry))
            counter[0] += 1
            yield entry

    def _list(self, layer: LayerInfo, chunks: Iterator[bytes], finish: Callable[[], int]) -> int:
        """Show a layer's entries from its blob chunks; with --db record them.
        ``finish()`` reads the rest of the blob and verifies it."""
        counter = [0]
        entries = self._listing(tarstream.iter_entries(chunks, layer_compression(layer.media_type)), counter)
        try:
            if self.db is not None and store.layer_status(self.db, layer.digest) != "indexed":
                write_listing(self.db, layer.digest, entries, finish)
            else:
                for _ in entries:
                    pass
                finish()
        except LayerslayerError as error:
            if self.db is not None:
                store.mark_layer_failed(self.db, layer.digest, str(error))
            raise
        self.result.peeked.append(layer.digest)
        self.ui.say(f"  ({counter[0]} entr{'y' if counter[0] == 1 else 'ies'})")
        return counter[0]

    def _fail(self, layer: LayerInfo, error: LayerslayerError) -> None:
        self.result.errors.append(error)
        self.ui.say(f"Error: layer [{layer.index}] {layer.digest}: {cli_words(str(error))}", err=True)

    def _saved(self, layer: LayerInfo, path: Path, already: bool) -> None:
        self.result.saved.append(path)
        if already:
            self.result.already_saved += 1
            self.ui.say(f"Already saved: layer [{layer.index}] is {path} (verified)")
        else:
            self.ui.say(f"Saved layer [{layer.index}] to {path} ({human_size(layer.size)})")

    def peek_only(self, ref: Reference, layer: LayerInfo) -> None:
        "--peek-all: list the layer from a verified stream; nothing is written to disk."
        assert self.client is not None
        if self.dest(ref, layer).exists():  # saved before: listed from the file when it still matches
            self.peek_and_maybe_keep(ref, layer, lambda: False)
            return
        blob = VerifiedStream(self.client.iter_blob(ref.repository, layer.digest, size=layer.size or None), layer.digest)
        chunks = iter(blob)

        def finish() -> int:
            for _ in chunks:
                pass
            blob.verify(layer.size)
            return blob.size

        try:
            self._list(layer, chunks, finish)
        finally:
            chunks.close()

    def peek_and_maybe_keep(self, ref: Reference, layer: LayerInfo, decide: Callable[[], bool]) -> None:
        """Peek through a spool; keep the download when ``decide()`` says so.

        A listing that fails (not a tar) still lets the blob be saved: the
        bytes are checked against the digest either way.
        """
        assert self.client is not None
        dest = self.dest(ref, layer)
        with self._tidy(dest), download.BlobSpool(self.client, ref.repository, layer.digest, dest, layer.size) as spool:
            chunks = spool.chunks()

            def finish() -> int:
                for _ in chunks:  # the rest of the blob, for the digest check
                    pass
                return layer.size

            try:
                self._list(layer, chunks, finish)
            except TarError as error:
                self._fail(layer, error)
            if decide():
                path = spool.keep()
                self._saved(layer, path, spool.already_saved)
            else:
                spool.discard()

    def save_only(self, ref: Reference, layer: LayerInfo) -> None:
        "--save-all: download with a progress bar, no listing."
        assert self.client is not None
        dest = self.dest(ref, layer)
        factory = self.options.progress_factory
        bar = factory(f"layer [{layer.index}]", layer.size) if factory else nullcontext(None)
        with self._tidy(dest), bar as update:
            result = download.download_blob(
                self.client, ref.repository, layer.digest, dest, layer.size, update, keep_partial=False,
            )
        self._saved(layer, result.path, result.skipped)

    def ask_download(self) -> bool:
        while True:
            answer = self.ui.ask(DOWNLOAD_PROMPT)
            try:
                return parse_yes_no(answer)
            except BadAnswer as hint:
                self.ui.say(f"Please {hint}.")

    def ask_layers(self, image: PlatformImage) -> list[LayerInfo]:
        while True:
            answer = self.ui.ask(LAYERS_PROMPT)
            try:
                return [image.layers[i] for i in parse_layer_selection(answer, len(image.layers))]
            except BadAnswer as hint:
                self.ui.say(f"Please {hint}." if str(hint).startswith("answer") else f"{hint}.")

    def each_layer(self, layers: list[LayerInfo], action: Callable[[LayerInfo], None]) -> None:
        for layer in layers:
            self._header(layer)
            if layer.foreign:
                self.ui.say("  foreign layer: not distributed by this registry, skipped")
                continue
            try:
                action(layer)
            except EndOfInput:
                raise
            except LayerslayerError as error:  # this layer failed; the others go on
                self._fail(layer, error)

    # -- all of it ------------------------------------------------------------

    def run(self) -> FlowResult:
        options = self.options
        if not options.peek_all or options.save_all:  # layers may be saved: check the folder first
            from .outdir import prepare_output_dir, refuse_link

            default = Path(options.out_dir) == download.DEFAULT_OUTPUT
            if options.save_all:  # one line, before any network, when it cannot be written
                prepare_output_dir(options.out_dir, link_ok=not default)
            elif default:
                refuse_link(options.out_dir)
        ref, resolved = self.choose_image()
        self.result.reference = ref
        self.ui.say(f"Image: {ref.short}  {resolved.digest}")
        image = self.choose_platform(resolved)
        self.result.platform = str(image.platform)
        if options.db_path is not None:
            self.db = store.open_db(options.db_path)
            image_id = record_image(self.db, ref, resolved)
            record_platform(self.db, image_id, ref, image)
        self.show_image(image)
        layers = image.layers
        if options.peek_all and options.save_all:
            self.ui.say("")
            self.ui.say("Peeking into and downloading all layers:")
            self.each_layer(layers, lambda layer: self.peek_and_maybe_keep(ref, layer, lambda: True))
        elif options.peek_all:
            self.ui.say("")
            self.ui.say("Peeking into all layers:")
            self.each_layer(layers, lambda layer: self.peek_only(ref, layer))
        elif options.save_all:
            self.ui.say("")
            self.ui.say(f"Downloading all layers to {options.out_dir}:")
            for layer in layers:
                if layer.foreign:
                    self.ui.say(f" [{layer.index}] foreign layer: not distributed by this registry, skipped")
                    continue
                try:
                    self.save_only(ref, layer)
                except LayerslayerError as error:
                    self._fail(layer, error)
        elif layers:
            self.ui.say("")
            chosen = self.ask_layers(image)
            self.each_layer(chosen, lambda layer: self.peek_and_maybe_keep(ref, layer, self.ask_download))
        self.result.bytes_downloaded = self.client.bytes_downloaded if self.client else 0
        self.summary()
        return self.result

    def summary(self) -> None:
        result = self.result
        parts = [f"{len(result.peeked)} layer(s) peeked", f"{len(result.saved)} saved"]
        if result.already_saved:
            parts[-1] += f" ({result.already_saved} already there)"
        if result.errors:
            parts.append(f"{len(result.errors)} failed")
        where = f" in {self.options.out_dir}" if result.saved else ""
        self.ui.say("")
        self.ui.say(f"Done: {', '.join(parts)}{where}; {human_size(result.bytes_downloaded)} downloaded.")

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None


def run(options: FlowOptions, prompter: Prompter | None = None) -> FlowResult:
    """Run the flow; return what happened (``.exit_code`` for the process).

    Errors that stop the flow (image not found, access denied, end of input,
    Ctrl-C) are written to the log and raised.
    """
    prompter = prompter or Prompter()
    for secret in (options.client_options.password, *token_secrets(options.client_options)):
        prompter.add_secret(secret)
    flow = Flow(options, prompter)
    try:
        return flow.run()
    except LayerslayerError as error:
        prompter.to_log(f"Error: {cli_words(str(error))}")
        raise
    except KeyboardInterrupt:
        prompter.to_log("Interrupted.")
        raise
    finally:
        flow.close()


@contextmanager
def open_log(path: str | Path | None) -> Iterator[TextIO | None]:
    "The -l/--log-file: written from the start (like the original tool), UTF-8."
    if path is None:
        yield None
        return
    try:
        log = open(path, "w", encoding="utf-8", errors="backslashreplace")
    except OSError as error:
        raise UsageError(f"cannot write the log file {path}: {error.strerror}") from None
    try:
        yield log
    finally:
        log.close()
