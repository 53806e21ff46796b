"""The command line: a thin click layer over the library modules.

Each command imports the library modules it uses inside its body, for
start-up speed: ``layerslayer find`` never loads ``requests``, Datasette or
Dask, and ``--help`` loads none of them.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import itertools
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

import click
from click_default_group import DefaultGroup

from . import __version__
from .display import human_size, printable, short_mtime, spreadsheet_safe
from .errors import LayerslayerError, UsageError, cli_words
from .options import ClientOptions
from .selectors import LAYER_RULE, MIN_PREFIX, parse_layer_selector


def _enable_debug(ctx: click.Context, param, value: bool) -> bool:
    if value:
        ctx.meta["layerslayer.debug"] = True
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="debug: %(name)s: %(message)s")
    return value


debug_option = click.option(
    "--debug", is_flag=True, expose_value=False, is_eager=True, callback=_enable_debug,
    help="Show debug logging, and a traceback on errors.",
)


#: Exit status when whoever reads our output goes away (``find … | head``):
#: 128 + SIGPIPE, what a shell reports for grep in the same pipe.
EXIT_BROKEN_PIPE = 141


def said(text) -> str:
    "A library message (or error) as the CLI shows it: one printable line, its advice in flag words (errors.cli_words)."
    return printable(cli_words("" if text is None else str(text)))


class _CliWordsFilter(logging.Filter):
    "The library's logged warnings (a registry falling back to plain HTTP) in the CLI's words, while a command runs."

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = said(record.getMessage()), None
        return True


class LayerslayerGroup(DefaultGroup):
    """The top-level group: ``layerslayer [OPTIONS]`` without a command runs the
    default one (the interactive flow), and every error becomes one line on
    stderr and its exit status, here only."""

    def resolve_command(self, ctx: click.Context, args: list[str]):
        # The flow takes options only (`layerslayer -t REF`): a first word that names
        # no command is a typo, not the flow's input.
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            ctx.fail(f"No such command {args[0]!r}.")
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: click.Context):
        words = _CliWordsFilter()
        logging.getLogger("layerslayer").addFilter(words)
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            # Network errors never get here (the registry client wraps them):
            # our output's reader went away. Nothing more to say, and nothing
            # left to flush into the closed pipe at exit.
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                try:
                    os.dup2(devnull, sys.stdout.fileno())
                finally:
                    os.close(devnull)
            except (OSError, ValueError):  # no real stdout (embedded, CliRunner)
                pass
            ctx.exit(EXIT_BROKEN_PIPE)
        except LayerslayerError as error:
            if ctx.meta.get("layerslayer.debug"):
                raise
            click.echo(f"Error: {said(error)}", err=True)
            ctx.exit(error.exit_code)
        except KeyboardInterrupt:
            if ctx.meta.get("layerslayer.debug"):
                raise
            click.echo("Interrupted.", err=True)
            ctx.exit(130)
        finally:
            logging.getLogger("layerslayer").removeFilter(words)


def registry_options(fn):
    "Options for talking to registries, and --debug; the command receives client_options=ClientOptions."

    @click.option("--username", "-u", help="Registry user name (else docker's config.json is used).")
    @click.option("--password", "-p", help="Registry password or token (prefer --password-stdin).")
    @click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
    @click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path),
                  help="A ready bearer token (default: ./token.txt, for Docker Hub only).")
    @click.option("--plain-http", is_flag=True, help="Use HTTP instead of HTTPS (automatic for localhost).")
    @click.option("--insecure", is_flag=True, help="Do not verify TLS certificates.")
    @click.option("--timeout", type=click.FloatRange(min=0.1), default=60.0, show_default=True, help="Read timeout in seconds.")
    @click.option("--deadline", type=click.FloatRange(min=0.1), default=300.0, show_default=True, envvar="LAYERSLAYER_DEADLINE",
                  help="Most seconds any one request may take, body included (a blob gets 1 s more per 100 kB).")
    @click.option("--retries", type=click.IntRange(min=1), default=4, show_default=True,
                  help="Attempts per request on 429, 5xx and dropped connections.")
    @debug_option
    @functools.wraps(fn)
    def wrapper(*args, username, password, password_stdin, token_file, plain_http, insecure, timeout, deadline, retries, **kwargs):
        if password_stdin:
            if password is not None:
                raise click.UsageError("--password and --password-stdin are mutually exclusive")
            password = sys.stdin.readline().rstrip("\r\n")
        if password is not None and username is None:
            raise click.UsageError("--password needs --username")
        if password is not None and not password_stdin:
            warning = ("Warning: a password given with -p/--password shows in `ps` and in your shell history; "
                       "pipe it to --password-stdin instead")
            click.echo(warning, err=True)
            click.get_current_context().meta.setdefault("layerslayer.shown", []).append(warning)  # for the -l log
        kwargs["client_options"] = ClientOptions(
            username=username, password=password, token_file=token_file,
            plain_http=plain_http, insecure=insecure, timeout=timeout, retries=retries, deadline=deadline,
        )
        return fn(*args, **kwargs)

    return wrapper


# -- options several commands share: declared once, so names, metavars and help agree --

PLATFORM_DEFAULT = "default: this machine's, else the first"


def platform_option(help: str):
    "--platform OS/ARCH[/VARIANT] (chosen by selectors.choose_platform)."
    return click.option("--platform", metavar="OS/ARCH[/VARIANT]", help=help)


def output_dir_option(default: str | None = None, help: str = "Directory to save into."):
    "-o/--output/--output-dir DIR into out_dir; with a default, the command sees whether it was typed (_explicit)."
    return click.option("-o", "--output", "--output-dir", "out_dir", type=click.Path(path_type=Path), metavar="DIR",
                        default=default, show_default=default is not None, help=help)


def _digest_only(ctx: click.Context, param: click.Parameter, value):
    "For a --layer of a whole index (no one image to count in): a digest, never an index."
    for text in value if param.multiple else [value] if value is not None else []:
        try:
            selector = parse_layer_selector(text)
        except LayerslayerError as error:
            raise click.BadParameter(str(error), ctx, param) from None
        if selector.index is not None:
            raise click.BadParameter(
                f"{text!r} is a layer index; give the layer's digest (sha256:<hex>, or {MIN_PREFIX}+ hex digits)", ctx, param)
    return value


def layer_option(what: str, *, name: str = "layer", multiple: bool = False, index: bool = True, note: str = ""):
    """--layer, read by selectors.parse_layer_selector everywhere: N (an index) or a
    digest; ``index=False`` where no one image is there to count in (a digest only)."""
    if index:
        help_text, metavar, callback = f"{what}: {LAYER_RULE}", "N|DIGEST", None
    else:
        help_text = f"{what}: its digest, sha256:<hex> or a unique prefix of {MIN_PREFIX}+ hex digits"
        metavar, callback = "DIGEST", _digest_only
    help_text += f"{note}.{' Repeatable.' if multiple else ''}"
    return click.option("--layer", name, multiple=multiple, metavar=metavar, callback=callback, help=help_text)


ignore_case_option = click.option("-i", "--ignore-case", is_flag=True, help="Match patterns case-insensitively.")


def json_option(shape: str = "array of objects", dest: str = "as_json", **attrs):
    "--json: the whole answer as one indented JSON document (--nl, where there is one, streams instead)."
    return click.option("--json", dest, help=f"Print one JSON {shape}.", **(attrs or {"is_flag": True}))


@click.group(cls=LayerslayerGroup, default="interactive", default_if_no_args=True, invoke_without_command=True,
             subcommand_metavar="[COMMAND [ARGS]...]")
@click.version_option(__version__, prog_name="layerslayer")
@debug_option
@click.pass_context
def cli(ctx):
    """Daemonless container-image recon over the Registry HTTP API v2.

    Inspect images on any OCI/Docker registry, index their layers' file
    listings into SQLite, find files across images, and fetch exactly the
    bytes you want, verified by digest.

    Without a command: the interactive flow (pick a platform, see the build
    steps, peek into layers and download them), or its batch modes; its
    options (`layerslayer interactive --help`) go straight after
    `layerslayer`.

    \b
    Examples:
        layerslayer -t alpine:3.20
        layerslayer -t nginx:latest --platform linux/arm64 --peek-all -l nginx.log
        layerslayer -t localhost:5000/team/app:v1 --peek-all --save-all --db images.db
    """
    if ctx.invoked_subcommand is None:  # only the group's own options (`layerslayer --debug`)
        ctx.invoke(interactive)


class FlowCommand(click.Command):
    "The interactive flow's command: it takes options only, so a word after them was meant as a command."

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        rest = super().parse_args(ctx, args)
        if ctx.args and not ctx.resilient_parsing:
            word = ctx.args[0]
            group = ctx.parent.command if ctx.parent else None
            if isinstance(group, click.Group) and word in group.commands:
                typed = [max(p.opts, key=len) for p in self.params
                         if isinstance(p, click.Option) and p.expose_value and p.name
                         # Only what was typed: $LAYERSLAYER_DEADLINE sets the flow and the command alike.
                         and ctx.get_parameter_source(p.name) == click.core.ParameterSource.COMMANDLINE]
                if typed:
                    raise click.UsageError(
                        f"{typed[0]} before a command is an option of the interactive flow; "
                        f"put it after `{word}` if that command takes it", ctx.parent,
                    )
            plural = "s" if len(ctx.args) > 1 else ""
            ctx.fail(f"Got unexpected extra argument{plural} ({' '.join(ctx.args)})")
        return rest


@cli.command(cls=FlowCommand, context_settings={"allow_extra_args": True},
             short_help="The interactive flow (the default command): peek into layers, download them.")
@click.option("-t", "--target-image", "target", metavar="REF", help="Image for the interactive flow (asked for when not given).")
@platform_option(f"Answer the platform question (batch {PLATFORM_DEFAULT}).")
@click.option("--peek-all", is_flag=True, help="List every layer's files, no questions.")
@click.option("--save-all", is_flag=True, help="Download every layer, no questions (with --peek-all: list and save, one download per blob).")
@click.option("-l", "--log-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write everything shown, prompts and answers included, to FILE (passwords and tokens never).")
@click.option("--db", "db_path", type=click.Path(dir_okay=False, path_type=Path), help="Also record what is peeked in this index (as `index` does).")
@output_dir_option("downloads", help="Where downloaded layers go (same layout as `save`).")
@registry_options
def interactive(target, platform, peek_all, save_all, log_file, db_path, out_dir, client_options):
    """The interactive flow, the default command: pick a platform, see the
    build steps, peek into layers and download them; --peek-all and
    --save-all do it without questions.

    `layerslayer interactive OPTIONS` and `layerslayer OPTIONS` are the same.

    \b
    Examples:
        layerslayer -t alpine:3.20
        layerslayer -t nginx:latest --platform linux/arm64 --peek-all -l nginx.log
    """
    _interactive_flow(target, platform, peek_all, save_all, log_file, db_path, out_dir, client_options)


def _interactive_flow(target, platform, peek_all, save_all, log_file, db_path, out_dir, client_options) -> None:
    from .interactive import FlowOptions, Prompter, open_log, run

    # Looked up at call time: click's test runner swaps these for scripted input.
    def read(prompt: str) -> str:
        func = click.termui.visible_prompt_func
        answer = func(prompt)
        if func is input and not sys.stdin.isatty():
            click.echo(answer)  # answers piped in: show them, as a terminal would
        return answer

    def read_secret(prompt: str) -> str:
        return click.termui.hidden_prompt_func(prompt)

    def write(text: str, err: bool) -> None:
        click.echo(text, nl=False, err=err)

    options = FlowOptions(
        target=target, platform=platform, peek_all=peek_all, save_all=save_all, db_path=db_path,
        out_dir=out_dir, client_options=client_options, progress_factory=_blob_progress_factory(),
    )
    with open_log(log_file) as log:
        prompter = Prompter(read, write, read_secret=read_secret, log=log)
        for line in click.get_current_context().meta.get("layerslayer.shown", []):
            prompter.to_log(line)  # shown before the log was open
        result = run(options, prompter)
    sys.exit(result.exit_code)


@cli.command()
@click.argument("reference")
@platform_option(f"Platform to show ({PLATFORM_DEFAULT}).")
@json_option("object")
@click.option("--raw", type=click.Choice(["manifest", "config", "index"]),
              help="Print the exact bytes the registry served for the platform's manifest, its config, or the index.")
@registry_options
def inspect(reference: str, platform: str | None, as_json: bool, raw: str | None, client_options: ClientOptions):
    """Show an image's platforms, config (user, entrypoint, env, labels,
    ports), layers and build steps.

    \b
    Examples:
        layerslayer inspect alpine:3.20 --platform linux/arm64/v8
        layerslayer inspect alpine:3.20 --raw config | jq .config.Env
    """
    from .image import inspect_image

    if raw and as_json:
        raise click.UsageError("--raw and --json are mutually exclusive")
    report = inspect_image(reference, platform=platform, options=client_options)
    if raw:
        sys.stdout.flush()
        sys.stdout.buffer.write(report.raw(raw))
        sys.stdout.buffer.flush()
        return
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        click.echo(report.as_text())


class TerminalProgress:
    "Progress for `index` on a terminal: one live status line, one line per finished layer."

    def __init__(self):
        self.started: dict[str, float] = {}
        self.bytes: dict[str, int] = {}
        self.entries: dict[str, int] = {}
        self.sizes: dict[str, int] = {}
        self.last_draw = 0.0
        self.lock = threading.Lock()
        self.stopped = False

    def _draw(self, force: bool = False) -> None:
        if self.stopped:
            return
        now = time.monotonic()
        if not force and now - self.last_draw < 0.2:
            return
        self.last_draw = now
        if not self.started:
            click.echo("\r\033[K", nl=False, err=True)
            return
        done = sum(self.bytes.values())
        total = sum(self.sizes.values())
        elapsed = max(now - min(self.started.values()), 1e-6)
        rate = done / elapsed / 1e6
        width = 24
        filled = int(width * done / total) if total else 0
        bar = "#" * filled + "-" * (width - filled)
        line = (
            f"\r\033[K[{bar}] {len(self.started)} layer(s) {done / 1e6:.1f}/{total / 1e6:.1f} MB "
            f"{rate:.1f} MB/s {sum(self.entries.values()):,} entries"
        )
        click.echo(line, nl=False, err=True)

    def layer_started(self, job) -> None:
        with self.lock:
            self.started[job.digest] = time.monotonic()
            self.bytes[job.digest] = 0
            self.entries[job.digest] = 0
            self.sizes[job.digest] = job.size
            self._draw(force=True)

    def layer_advanced(self, job, nbytes: int, entries: int) -> None:
        with self.lock:
            self.bytes[job.digest] = self.bytes.get(job.digest, 0) + nbytes
            self.entries[job.digest] = entries
            self._draw()

    def layer_finished(self, job, entries: int, error: str | None) -> None:
        with self.lock:
            seconds = time.monotonic() - self.started.pop(job.digest, time.monotonic())
            size = self.bytes.pop(job.digest, 0)
            self.entries.pop(job.digest, None)
            self.sizes.pop(job.digest, None)
            click.echo("\r\033[K", nl=False, err=True)
            if error:
                click.echo(f"failed   {printable(job.digest)}: {said(error)}", err=True)
            else:
                click.echo(f"indexed  {job.digest}  {entries:,} entries  {size / 1e6:.1f} MB  {seconds:.1f}s", err=True)
            self._draw(force=True)

    def message(self, text: str) -> None:
        with self.lock:
            click.echo(f"\r\033[K{said(text)}", err=True)

    def stop(self) -> None:
        "Clear the status line for good (Ctrl-C): what follows starts on a clean line."
        with self.lock:
            self.stopped = True
            click.echo("\r\033[K", nl=False, err=True)


class QuietProgress:
    "No progress, errors only (for --quiet, and when stderr is not a terminal)."

    def layer_started(self, job) -> None: ...
    def layer_advanced(self, job, nbytes: int, entries: int) -> None: ...

    def layer_finished(self, job, entries: int, error: str | None) -> None:
        if error:
            click.echo(f"failed   {printable(job.digest)}: {said(error)}", err=True)

    def message(self, text: str) -> None:
        click.echo(said(text), err=True)

    def stop(self) -> None: ...


class CrawlTerminalProgress:
    "Progress of a crawl (`index --workers/--scheduler`): one live status line on a terminal, else a line now and then."

    def __init__(self, live: bool, every: float = 30.0):
        self.live, self.every = live, every
        self.last = 0.0
        self.lock = threading.Lock()

    def status(self, status) -> None:
        with self.lock:
            if self.live:
                click.echo(f"\r\033[K{status.as_line()}", nl=False, err=True)
            elif time.monotonic() - self.last >= self.every:
                self.last = time.monotonic()
                click.echo(status.as_line(), err=True)

    def message(self, text: str) -> None:
        with self.lock:
            click.echo(f"\r\033[K{said(text)}" if self.live else said(text), err=True)

    def close(self) -> None:
        if self.live:
            click.echo("\r\033[K", nl=False, err=True)


class QuietCrawlProgress:
    def status(self, status) -> None: ...

    def message(self, text: str) -> None:
        click.echo(said(text), err=True)

    def close(self) -> None: ...


def _progress(quiet: bool):
    if quiet or not sys.stderr.isatty():
        return QuietProgress()
    return TerminalProgress()


db_argument = click.argument("db", type=click.Path(dir_okay=False, path_type=Path))


@cli.command()
@db_argument
@click.argument("references", nargs=-1)
@click.option("--from-file", "from_file", type=click.File("r", encoding="utf-8", errors="surrogateescape"), metavar="FILE",
              help="Also index the references in FILE, one a line ('#' comments; '-' reads standard input).")
@platform_option(f"Platform to index ({PLATFORM_DEFAULT}).")
@click.option("--all-platforms", is_flag=True, help="Index every platform of multi-arch images.")
@click.option("--all-tags", is_flag=True, help="Index every tag of each repository named.")
@click.option("--catalog", is_flag=True, help="REFERENCES are registry hosts: index every tag of every repository in their catalog.")
@click.option("--limit", type=click.IntRange(min=1), help="With --catalog: at most this many repositories.")
@click.option("--page-size", type=click.IntRange(min=1), help="Page size for tag and catalog listings.")
@click.option("--jobs", "-j", type=click.IntRange(min=1, max=32), default=2, show_default=True, help="Layers downloaded at once.")
@click.option("--workers", type=click.IntRange(min=1, max=256), metavar="N",
              help="Crawl on a local Dask cluster of N worker processes (each unique layer once across them).")
@click.option("--scheduler", metavar="ADDRESS", help="Crawl on the Dask cluster whose scheduler is at ADDRESS (tcp://host:8786).")
@click.option("--shard-dir", type=click.Path(file_okay=False, path_type=Path),
              help="With --workers/--scheduler: where workers write their shards (default: DB.shards).")
@click.option("--quiet", "-q", is_flag=True, help="Print only errors and the summary line.")
@click.option("--span", metavar="SIZE", default="4MiB", show_default=True,
              help="Checkpoint gzip layers of 8 MiB or more every SIZE of compressed bytes, so `cat` and "
                   "`extract --db` read one file with one small Range request (0: no checkpoints).")
@click.option("--upgrade", is_flag=True,
              help="Bring DB (made by an older layerslayer) up to this version's schema; index REFERENCES, if any, too.")
@click.option("--scan/--no-scan", default=None,
              help="Secrets by content (see `layerslayer secrets`). Default: file contents of the layers streamed, "
                   "config Env/Labels and build steps are scanned. --scan also streams lazy-pull layers (listed from "
                   "their TOC otherwise) and layers indexed before without scanning; --no-scan scans nothing.")
@click.option("--scan-max-size", metavar="SIZE", default="1MiB", show_default=True,
              help="With --scan: largest file scanned (bytes, or with K/M/KiB/MiB).")
@click.option("--keep-values", is_flag=True,
              help="With --scan: store the secret values found, not only fingerprints and redacted previews.")
@registry_options
def index(db, references, from_file, platform, all_platforms, all_tags, catalog, limit, page_size, jobs,
          workers, scheduler, shard_dir, quiet, span, upgrade, scan, scan_max_size, keep_values, client_options):
    """Index layer file listings of images into the SQLite database DB.

    Layers are streamed from the registry and only their tar headers kept;
    a layer already in DB is never downloaded again.

    \b
    Examples:
        layerslayer index images.db alpine:3.20 nginx:latest
        layerslayer index images.db localhost:5000/team/app --all-tags
        layerslayer index images.db localhost:5000 --catalog --limit 50
        layerslayer search redis --limit 20 | layerslayer index hub.db --from-file -
    """
    from .discovery import read_references
    from .indexer import Interrupted, catalog_references, check_index_choices, index_images, upgrade_index
    from .reference import parse_reference

    if from_file is not None:
        references = tuple(references) + tuple(read_references(from_file))
        if not references and not upgrade:
            raise click.UsageError(f"{from_file.name} holds no references")
    if upgrade:
        applied = upgrade_index(db)
        click.echo(f"Upgraded {db}: {', '.join(applied)}" if applied else f"{db} is up to date")
        if not references:
            return
    elif not references:
        raise click.UsageError("give at least one REFERENCE (or --from-file FILE, or --upgrade)")
    try:
        check_index_choices(platform=platform, all_platforms=all_platforms, scan=scan, keep_values=keep_values)
    except LayerslayerError as error:
        raise click.UsageError(said(error)) from None
    span_bytes = _span(span)
    if limit and not catalog:
        raise click.UsageError("--limit goes with --catalog")
    from .secretscan import parse_size

    try:
        max_size = parse_size(scan_max_size)
    except ValueError as error:
        raise click.UsageError(f"--scan-max-size: {error}") from None
    if catalog:
        refs = []
        for registry in references:
            if "/" in registry or "@" in registry:
                raise click.UsageError(f"--catalog takes registry hosts such as localhost:5000, not {registry!r}")
            refs += catalog_references(client_options, registry, limit=limit, page_size=page_size)
    else:
        refs = [parse_reference(text) for text in references]
    if workers and scheduler:
        raise click.UsageError("--workers and --scheduler are mutually exclusive")
    if shard_dir and not (workers or scheduler):
        raise click.UsageError("--shard-dir goes with --workers or --scheduler")
    if workers or scheduler:
        from .crawl import crawl

        if scan:
            # A crawl does not stream layers again that were indexed without scanning: say so rather than skip it.
            raise click.UsageError("--scan does not work with --workers/--scheduler yet (the default scan does)")
        progress = QuietCrawlProgress() if quiet else CrawlTerminalProgress(live=sys.stderr.isatty())
        try:
            summary = crawl(
                db, refs, options=client_options, platform=platform, all_platforms=all_platforms,
                all_tags=all_tags, page_size=page_size, workers=workers, scheduler=scheduler,
                shard_dir=shard_dir, progress=progress, span=span_bytes, scan=scan, scan_max_size=max_size,
                keep_values=keep_values,
            )
        finally:
            progress.close()
    else:
        progress = _progress(quiet)
        try:
            summary = index_images(
                db, refs, options=client_options, platform=platform, all_platforms=all_platforms,
                all_tags=all_tags, jobs=jobs, page_size=page_size, progress=progress, span=span_bytes,
                scan=scan, scan_max_size=max_size, keep_values=keep_values,
            )
        except Interrupted as interrupted:
            progress.stop()
            click.echo("Interrupted.", err=True)
            click.echo(interrupted.summary.as_interrupted_line())
            sys.exit(130)
    click.echo(summary.as_line())
    if not summary.ok:
        sys.exit(1)


def _span(text: str) -> int:
    from .query import parse_size

    try:
        value = parse_size(text)
    except UsageError as error:
        raise click.BadParameter(str(error), param_hint="--span")
    if value and value < 64 << 10:
        raise click.BadParameter("give 0 (no checkpoints) or at least 64KiB", param_hint="--span")
    return value


# -- discovery ------------------------------------------------------------

def listing_options(fn):
    "The options every registry listing command shares: --limit, --page-size, --json and the registry options."
    for option in reversed((
        click.option("--limit", type=click.IntRange(min=1), help="Stop after this many results."),
        click.option("--page-size", type=click.IntRange(min=1), help="Results asked for per page."),
        json_option(),
        registry_options,
    )):
        fn = option(fn)
    return fn


def _echo_listing(items, as_json: bool, line, record) -> None:
    "Print a listing as it arrives (one line each), or all of it as one JSON array."
    if as_json:
        click.echo(json.dumps([record(item) for item in items], indent=2))
        return
    for item in items:
        click.echo(printable(line(item)))


@cli.command()
@click.argument("reference")
@click.option("--full-ref", is_flag=True, help="Print whole references (registry/repository:tag), not bare tags.")
@listing_options
def tags(reference, full_ref, limit, page_size, as_json, client_options):
    """List the tags of REFERENCE's repository (like `crane ls`).

    \b
    Example:
        layerslayer tags localhost:5000/team/app --full-ref | layerslayer index app.db --from-file -
    """
    from .discovery import list_tags

    refs = list_tags(client_options, reference, page_size=page_size, limit=limit)
    _echo_listing(refs, as_json, lambda r: str(r) if full_ref else r.tag,
                  lambda r: {"reference": str(r), "tag": r.tag})


@cli.command()
@click.argument("registry")
@click.option("--full-ref", is_flag=True, help="Print registry/repository, not bare repository names.")
@listing_options
def catalog(registry, full_ref, limit, page_size, as_json, client_options):
    """List the repositories of REGISTRY's catalog (like `crane catalog`).

    \b
    Example:
        layerslayer catalog localhost:5000 --limit 100
    """
    from .discovery import list_catalog

    refs = list_catalog(client_options, registry, page_size=page_size, limit=limit)
    _echo_listing(refs, as_json, lambda r: r.name if full_ref else r.repository,
                  lambda r: {"reference": r.name, "repository": r.repository})


@cli.command()
@click.argument("namespace", metavar="docker.io/NAMESPACE")
@listing_options
def repos(namespace, limit, page_size, as_json, client_options):
    """List the repositories of a Docker Hub user or organisation (the Hub's own API).

    Docker Hub has no catalog; this is its listing of one namespace. The Hub's
    address can be changed with $LAYERSLAYER_HUB_URL.

    \b
    Example:
        layerslayer repos docker.io/bitnami --limit 50 | layerslayer index hub.db --from-file -
    """
    from .discovery import HubClient, hub_namespace

    found = HubClient(client_options).repositories(hub_namespace(namespace), page_size=page_size, limit=limit)
    _echo_listing(found, as_json, lambda r: r.reference.short, lambda r: r.as_dict())


@cli.command()
@click.argument("keyword")
@click.option("--official", is_flag=True, help="Only Docker Official Images.")
@listing_options
def search(keyword, official, limit, page_size, as_json, client_options):
    """Search Docker Hub for repositories matching KEYWORD (the Hub's search API).

    \b
    Example:
        layerslayer search postgres --limit 20 --json
    """
    from .discovery import HubClient

    found = HubClient(client_options).search(keyword, page_size=page_size, limit=limit, official=official)
    _echo_listing(found, as_json, lambda r: r.reference.short, lambda r: r.as_dict())


@cli.command()
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("shards", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--quiet", "-q", is_flag=True, help="Print only errors and the summary line.")
def merge(out, shards, quiet):
    """Merge the indexes SHARDS into OUT (created if missing).

    Layers are matched by digest and each layer's listing is copied once,
    so merging is idempotent: shards may overlap, and a merge that was
    interrupted is finished by running it again. Shards of another schema
    version are refused.

    \b
    Example:
        layerslayer merge all.db crawl-a.db crawl-b.db
    """
    from . import store
    from .merge import merge_index
    db = store.open_db(out)
    totals = dict.fromkeys(("images", "platforms", "layers_indexed", "files"), 0)
    try:
        for shard in shards:
            counts = merge_index(db, shard)
            for key in totals:
                totals[key] += counts[key]
            if not quiet:
                click.echo(f"{printable(str(shard))}: {counts['images']} images, {counts['platforms']} platforms, "
                           f"{counts['layers_indexed']} layers, {counts['files']:,} files new", err=True)
    finally:
        db.close()
    click.echo(f"Merged {len(shards)} shard{'s' if len(shards) != 1 else ''}: {totals['images']} images, "
               f"{totals['platforms']} platforms, {totals['layers_indexed']} layers, {totals['files']:,} files added")


# -- save / export / extract ------------------------------------------------

_BLOB_EXIT_STATUS = """
    \b
    Exit status:
      0  everything asked for was written
      1  nothing matched, some matches were not written (see the summary),
         or another failure (not found, access denied)
      2  usage or input error (bad reference, pattern, option or index)
      3  verification failure (digest or size mismatch) or network failure
"""


def _blob_progress_factory():
    "A progress bar per blob on a terminal; nothing otherwise."

    if not sys.stderr.isatty():
        return None

    @contextlib.contextmanager
    def bar(label: str, total: int | None):
        if not total:
            yield None
            return
        with click.progressbar(length=total, label=label, file=sys.stderr, show_percent=True, width=24) as progress:
            yield progress.update

    return bar


def _explicit(value, name: str):
    "``value``, or None when it is the option's default (not typed by the user)."
    source = click.get_current_context().get_parameter_source(name)
    return None if source == click.core.ParameterSource.DEFAULT else value



def _echo_download(result) -> None:
    label = {"downloaded": "saved", "resumed": "resumed", "skipped": "skipped"}[result.status]
    note = "  (already saved, verified)" if result.skipped else ""
    click.echo(f"{label:<8} {printable(result.path)}  {human_size(result.size)}{note}")


def _echo_extract_report(report, out_dir) -> None:
    for refused in report.refused:
        where = f" (layer {refused.layer})" if refused.layer is not None else ""
        click.echo(f"refused  {printable(refused.path)}{where}: {said(refused.reason)}", err=True)
    for written in report.escaped:
        click.echo(f"escaped  {printable(written.path)!r} written as {printable(written.written_as)!r}", err=True)
    for path, layer in report.deleted:
        hint = f" (its old copy is in layer {layer}: add --layer {layer} to get it)" if layer is not None else ""
        click.echo(f"deleted  {printable(path)}: removed by a later layer{hint}", err=True)
    if report.modes_dropped:
        shown = ", ".join(printable(p) for p in report.modes_dropped[:3]) + (" ..." if len(report.modes_dropped) > 3 else "")
        click.echo(f"note: setuid/setgid bits dropped from {len(report.modes_dropped)} file(s) (--keep-modes keeps them): {shown}", err=True)

    matched = len(report.written) + len(report.refused)
    if matched:
        parts = [f"Wrote {len(report.written)} of {matched} matching entr{'y' if matched == 1 else 'ies'}"]
    else:
        parts = ["Nothing written: no " + ("visible " if report.deleted or report.shadowed else "") + "entry matches"]
    if out_dir is not None and matched:
        parts[0] += f" to {out_dir}"
    if report.refused:
        parts.append(f"{len(report.refused)} refused")
    if report.capped:
        parts.append("stopped at the output cap (--max-output raises it)")
    if report.shadowed:
        parts.append(f"{report.shadowed} older version(s) in lower layers skipped")
    complete = sum(1 for layer in report.layers if layer.complete)
    if not report.layers:
        parts.append("no layer read")
    elif complete == len(report.layers):
        parts.append(f"{len(report.layers)} layer(s) read to the end (digest verified)")
    elif complete == 0:
        parts.append(f"{len(report.layers)} layer(s) read up to the last match (digest not checked: --verify)")
    else:
        parts.append(
            f"{len(report.layers)} layer(s) read, {complete} to the end (digest verified), "
            f"{len(report.layers) - complete} up to the last match"
        )
    parts[-1] += f", {human_size(report.bytes_fetched)} downloaded in {report.seconds:.1f}s"
    click.echo(", ".join(parts), err=True)


@cli.command()
@click.argument("reference")
@platform_option(f"Platform to save ({PLATFORM_DEFAULT}).")
@layer_option("A layer to save", name="layers", multiple=True)
@click.option("--all", "all_layers", is_flag=True, help="Save every layer.")
@click.option("--config", "config", is_flag=True, help="Save the config blob too (as <digest hex>.json).")
@output_dir_option("downloads")
@click.option("--format", "fmt", type=click.Choice(["blobs", "oci", "docker-archive"]), default="blobs", show_default=True,
              help="oci: the whole image as an OCI layout directory DIR/<repo>_<tag>.oci (skopeo copy oci:..., crane); "
                   "docker-archive: as a tar DIR/<repo>_<tag>.tar (docker load).")
@registry_options
def save(reference, platform, layers, all_layers, config, out_dir, fmt, client_options):
    """Save an image's layer blobs (and config) to DIR, verified by digest.

    Blobs go to DIR/<registry>/<repository>/<digest hex>.<tar.gz|tar.zst|tar>.
    Bytes stream into a .part file, checked against the digest and size on
    the way, and renamed into place only when both match. An interrupted
    download resumes from its .part on the next run; a blob already saved
    (re-hashed, it matches) is skipped.

    \b
    Examples:
        layerslayer save alpine:3.20 --all
        layerslayer save nginx:latest --layer -1 --config -o ./blobs
    """
    from .operations import save_image

    if fmt != "blobs" and (layers or config):
        raise click.UsageError(f"--format {fmt} writes the whole image: drop --layer/--config")
    if fmt == "blobs" and not (layers or all_layers or config):
        raise click.UsageError("choose what to save: --layer N|DIGEST, --all, and/or --config")
    if layers and all_layers:
        raise click.UsageError("--layer and --all are mutually exclusive")
    summary = save_image(
        reference, options=client_options, platform=platform, layers=layers, all_layers=all_layers,
        config=config, out_dir=_explicit(out_dir, "out_dir"), progress_factory=_blob_progress_factory(), on_result=_echo_download,
        on_error=lambda digest, error: click.echo(f"failed   {printable(digest)}: {said(error)}", err=True),
        format=None if fmt == "blobs" else fmt,
    )
    if summary.written_to is not None:
        click.echo(f"wrote    {printable(summary.written_to)} ({fmt})")
    for digest in summary.foreign:
        click.echo(f"foreign  {printable(digest)}: not distributed by this registry, not saved", err=True)
    skipped = sum(1 for r in summary.results if r.skipped)
    saved = len(summary.results) - skipped
    line = f"Saved {saved} blob(s)"
    if skipped:
        line += f", {skipped} already there"
    if summary.errors:
        line += f", {len(summary.errors)} failed"
    click.echo(f"{line}; {human_size(summary.bytes_fetched)} downloaded in {summary.seconds:.1f}s", err=True)
    sys.exit(summary.exit_code)


save.help += """
    \b
    Exit status:
      0  every blob asked for was saved (or was already there, verified)
      1  the image, the platform or a blob was not found, or access was denied
      2  usage error (bad reference, option or --layer)
      3  verification failure (digest or size mismatch) or network failure
"""


@cli.command()
@db_argument
@click.option("--match", "-m", "patterns", multiple=True, metavar="PATTERN",
              help="Export the layers holding files that match (same rules as `find`). Repeatable.")
@layer_option("Export this layer of the index", name="digests", multiple=True, index=False)
@click.option("--files", is_flag=True, help="Write only the matching files, not whole blobs.")
@ignore_case_option
@click.option("--keep-modes", is_flag=True, help="With --files: keep setuid/setgid bits.")
@output_dir_option("downloads")
@click.option("--format", "fmt", type=click.Choice(["blobs", "oci", "docker-archive"]), default="blobs", show_default=True,
              help="oci / docker-archive: write each indexed image holding such a layer, whole, as `save --format` does.")
@registry_options
def export(db, patterns, digests, files, ignore_case, keep_modes, out_dir, fmt, client_options):
    """Save the layers of index DB that hold matching files (or are named).

    Each layer is fetched from a registry and repository it was indexed
    from and saved as `save` does, under
    DIR/<registry>/<repository>/<digest hex>.<ext>. With --files only the
    matching files are written, under DIR/<registry>/<repository>/<digest hex>/,
    and each layer is read only up to its last match.

    \b
    Patterns: without "/" a pattern matches the file name, with "/" the whole
    path (leading "/" optional); * ? [...] globs, * also matches "/".

    \b
    Examples:
        layerslayer export images.db --match '*.pem' --match id_rsa
        layerslayer export images.db --match '/app/.env' --files -o loot
        layerslayer export images.db --layer sha256:4abc...
    """
    from .operations import export_layers

    if not (patterns or digests):
        raise click.UsageError("choose layers with --match PATTERN or --layer DIGEST")
    if files and digests:
        raise click.UsageError("--files goes with --match, not --layer")
    if files and fmt != "blobs":
        raise click.UsageError(f"--files and --format {fmt} are mutually exclusive")
    for pattern in patterns:
        if not pattern.strip("/"):
            raise click.UsageError(f"pattern {pattern!r} is empty")

    def show(item) -> None:
        where = f"{item.registry}/{item.repository}" if item.repository else "?"
        if item.error:
            click.echo(f"failed   {printable(item.layer.digest)} from {printable(where)}: {said(item.error)}", err=True)
        elif item.download:
            _echo_download(item.download)
        elif item.files:
            for written in item.files.written:
                click.echo(f"wrote    {printable(item.files.out_dir / written.written_as)}")
            for refused in item.files.refused:
                click.echo(f"refused  {printable(refused.path)} (layer {item.layer.digest[:19]}): {said(refused.reason)}", err=True)

    summary = export_layers(
        db, patterns=patterns, digests=digests, ignore_case=ignore_case, files=files, keep_modes=keep_modes,
        out_dir=_explicit(out_dir, "out_dir"), options=client_options, progress_factory=_blob_progress_factory(), on_item=show,
        format=None if fmt == "blobs" else fmt,
    )
    for image in summary.images:
        click.echo(f"wrote    {printable(image.path)} ({fmt})")
    if not summary.items:
        click.echo("No indexed layer holds a matching file.", err=True)
    else:
        failed = len(summary.errors)
        what = "files from" if files else ""
        line = f"Exported {what + ' ' if what else ''}{len(summary.items) - failed} layer(s)"
        if failed:
            line += f", {failed} failed"
        click.echo(f"{line}; {human_size(summary.bytes_fetched)} downloaded in {summary.seconds:.1f}s", err=True)
    sys.exit(summary.exit_code)


export.help += _BLOB_EXIT_STATUS


@cli.command()
@click.argument("reference")
@click.argument("patterns", nargs=-1, required=True)
@platform_option(f"Platform to read ({PLATFORM_DEFAULT}).")
@layer_option("Read only this layer, deleted files included")
@output_dir_option(help="Directory to write the files under (image paths are kept). "
                        "[default: ./extracted/<registry>/<repository>/<tag>]")
@click.option("--force", is_flag=True, help="Replace files already in the output directory (refused by default).")
@click.option("--max-output", metavar="SIZE", default="10G", show_default=True,
              help="Stop before file contents written pass SIZE in all (10M, 1.5G; powers of 1024).")
@click.option("--follow", is_flag=True,
              help="Write the content of the file a matching symbolic link leads to (inside the image), not the link.")
@click.option("--stdout", "to_stdout", is_flag=True, help="Write the one matching file's contents to standard output.")
@click.option("--db", "db_path", type=click.Path(dir_okay=False, path_type=Path),
              help="An index holding this image: read only the layers with matches, each up to its last match.")
@ignore_case_option
@click.option("--keep-modes", is_flag=True, help="Keep setuid/setgid bits (dropped by default).")
@click.option("--verify", is_flag=True, help="Read every layer opened to its end and check its digest (no early stop).")
@registry_options
def extract(reference, patterns, platform, layer, out_dir, force, max_output, follow, to_stdout, db_path, ignore_case,
            keep_modes, verify, client_options):
    """Write the files of image REFERENCE that match PATTERN(s), without a database.

    Layers stream from the registry, top layer first, and the result is the
    image's final file system: a file written from a later layer is not
    replaced by an older copy, and files a later layer deleted are listed,
    not written (--layer N reads one layer, deleted files included). When
    every pattern is an exact path, reading stops right after the last one.

    \b
    Patterns: without "/" a pattern matches the file name, with "/" the whole
    path (leading "/" optional); * ? [...] globs, * also matches "/".

    \b
    Safety, always on: nothing is written outside the output directory
    (default: a fresh ./extracted/<registry>/<repository>/<tag>, never the
    current directory). Refused: ".." and absolute names, symbolic links
    that point outside (hard links to them too, checked where they land),
    hard links outside or to files not extracted, anything through a
    symbolic link, device files and FIFOs, and a file already in the
    output directory (--force replaces it). setuid/setgid bits are dropped
    unless --keep-modes. Names the file system cannot hold are escaped.
    A layer whose stream breaks leaves nothing behind.

    \b
    Examples:
        layerslayer extract alpine:3.20 /etc/os-release -o out
        layerslayer extract nginx:latest '*.conf' -o nginx-conf
        layerslayer extract alpine:3.20 /etc/alpine-release --stdout
    """
    from .operations import extract_image
    from .outdir import OutputDirError
    from .patterns import parse_pattern
    from .query import parse_size

    try:
        max_output = parse_size(max_output)
    except UsageError as error:
        raise click.BadParameter(str(error), param_hint="--max-output")

    if to_stdout and out_dir is not None:
        raise click.UsageError("-o and --stdout are mutually exclusive")
    if to_stdout and len(patterns) != 1:
        raise click.UsageError("--stdout writes one file: give exactly one PATTERN")

    def message(text: str) -> None:
        click.echo(f"note: {said(text)}", err=True)

    def show(written) -> None:
        click.echo(printable(written.written_as))

    try:
        report = extract_image(
            reference, patterns, options=client_options, platform=platform, layer=layer,
            out_dir=out_dir, stdout=sys.stdout.buffer if to_stdout else None, db_path=db_path,
            ignore_case=ignore_case, keep_modes=keep_modes, verify=verify, force=force, max_output=max_output,
            follow=follow, on_written=None if to_stdout else show, message=message,
        )
    except OutputDirError:
        raise  # one line, exit 2: not a mistake in how the command was typed
    except UsageError as error:
        raise click.UsageError(said(error))
    literal = {parse_pattern(p, ignore_case).literal_path for p in patterns}
    if to_stdout:
        for refused in report.refused:
            click.echo(f"Error: {said(refused.reason)}", err=True)
        if not report.written and not report.refused:
            click.echo(f"Error: no file matches {printable(patterns[0])}", err=True)
        for written in report.written:
            if written.path not in literal:  # a glob, or a link followed: say whose bytes these are
                where = f" (layer {written.layer})" if written.layer is not None else ""
                click.echo(f"note: wrote {printable(written.path)}{where}, the first file matching "
                           f"{printable(patterns[0])} (top layer first; symbolic links followed)", err=True)
        sys.exit(0 if report.written else 1)
    for written in report.written:
        if written.followed:
            click.echo(f"followed {printable(written.path)} -> {printable(written.linkname)}: wrote the content of "
                       f"{printable(written.followed)}", err=True)
        elif written.type == "symlink" and written.path in literal:
            click.echo(f"link     {printable(written.path)} -> {printable(written.linkname)}: wrote the symbolic link, "
                       f"not the file it points to (--follow writes that file's content)", err=True)
    _echo_extract_report(report, report.out_dir)
    sys.exit(report.exit_status)


extract.help += _BLOB_EXIT_STATUS


@cli.command()
@click.argument("reference")
@click.argument("path")
@platform_option(f"Platform to read ({PLATFORM_DEFAULT}).")
@layer_option("Read only this layer, deleted files included")
@click.option("--db", "db_path", type=click.Path(dir_okay=False, path_type=Path),
              help="An index of the image: read only the layer holding PATH, from the checkpoint before it.")
@click.option("--verify", is_flag=True, help="Read whole layers and check their digests (no partial reads).")
@registry_options
def cat(reference, path, platform, layer, db_path, verify, client_options):
    """Write the file PATH of image REFERENCE to standard output.

    PATH is the file as the image shows it (a later layer's copy wins;
    symbolic links are followed inside the image); --layer N reads it from
    one layer. With --db, an index made by `layerslayer index` that holds
    the image, only the layer with PATH is read, up to PATH; when the index
    has checkpoints for that layer, with one Range request from the
    checkpoint before PATH (a few MiB, not the whole layer). A partial read
    checks the file's size but not the layer's digest: --verify reads whole
    layers.

    \b
    Examples:
        layerslayer cat alpine:3.20 /etc/os-release
        layerslayer cat python:3.12 /usr/share/man/man1/python3.12.1 --db images.db | man -l -
    """
    from .operations import extract_image

    def message(text: str) -> None:
        click.echo(f"note: {said(text)}", err=True)

    try:
        report = extract_image(
            reference, [path], options=client_options, platform=platform, layer=layer,
            stdout=sys.stdout.buffer, db_path=None if verify else db_path, verify=verify, message=message,
        )
    except UsageError as error:
        raise click.UsageError(said(error))

    for refused in report.refused:
        click.echo(f"Error: {said(refused.reason)}", err=True)
    if not report.written and not report.refused:
        click.echo(f"Error: no file {printable(path)} in {printable(reference)}", err=True)
    sys.exit(0 if report.written else 1)


# -- browse ------------------------------------------------------------------


@cli.command()
@db_argument
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (anything but loopback exposes the index to the network).")
@click.option("--port", type=click.IntRange(min=0, max=65535), default=8001, show_default=True,
              help="Port to listen on (0: any free port).")
@click.option("--open/--no-open", "open_browser", default=False, show_default=True,
              help="Open the URL in a web browser.")
@registry_options
def browse(db, host, port, open_browser, client_options):
    """Explore index DB in Datasette, read-only, until Ctrl-C.

    Canned queries (files by glob, the secrets preset, ghost files, largest
    files, shared layers, images that contain a path), path search, facets,
    and on each layer the `layerslayer save` / `extract` commands that fetch
    it. DB stays read-only: an `index` run may add to it meanwhile. A
    "view" link beside each file fetches its contents from the registry
    (registry options below), as `cat --db` does.

    \b
    Examples:
        layerslayer browse images.db
        layerslayer browse images.db --port 8080 --open
    """
    from .browse.server import browse as serve

    serve(db, host=host, port=port, open_browser=open_browser,
          echo=click.echo, warn=lambda text: click.echo(text, err=True), options=client_options)


# -- find / ls / images -------------------------------------------------------

_FIND_EXIT_STATUS = """
    \b
    Exit status (like grep):
      0  something matched (or was listed)
      1  nothing matched: no output (--json prints [], --count prints 0)
      2  usage or input error (bad pattern, size or option, unknown image,
         platform or layer, a file that is not a layerslayer index)
"""


def _list_presets(ctx: click.Context, param, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        from .presets import format_presets

        click.echo(format_presets())
        ctx.exit(0)


def _open_index(db):
    "The index at ``db`` for a reading command: read-only, never migrated (store.open_db)."
    from .store import open_db

    return open_db(db, read_only=True)


def _echo_table(headers: list[str], rows: list[list[str]]) -> None:
    "Aligned columns; the last one is not padded."
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    pads = list(enumerate(widths[:-1]))
    lines = ["  ".join([*(row[i].ljust(width) for i, width in pads), row[-1]]).rstrip() for row in [headers, *rows]]
    # One write per few thousand lines, not one per line.
    for start in range(0, len(lines), 4096):
        click.echo("\n".join(lines[start : start + 4096]))


def _hit_cells(hit, with_image: bool = True) -> list[str]:
    path = printable(hit.path)
    if hit.type == "symlink":
        path += f" -> {printable(hit.linkname)}"
    elif hit.type == "hardlink":
        path += f" link to {printable(hit.linkname)}"
    if hit.whiteout == "whiteout":
        parent, _, name = hit.path.rpartition("/")
        path += f"  (whiteout: deletes {printable((parent + '/' if parent else '') + name[4:])})"
    elif hit.whiteout == "opaque":
        parent = hit.path.rpartition("/")[0]
        path += f"  (opaque: hides lower {printable(parent + '/' if parent else '/')})"
    elif hit.deleted:
        path += f"  (deleted in layer {hit.deleted_in_layer}{', recreated' if hit.recreated else ''})"
    size = human_size(hit.size) if hit.type == "file" else "-"
    owner = "-" if hit.implicit else f"{printable(hit.uname or str(hit.uid))}/{printable(hit.gname or str(hit.gid))}"
    cells = [str(hit.layer_index), hit.mode_string, owner, size, short_mtime(hit.mtime), path]
    return ([printable(hit.image), printable(hit.platform or "-")] if with_image else []) + cells


def _csv_text(records: list[dict], fields, *, header: bool, **options) -> str:

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n", **options)
    if header:
        writer.writeheader()
    writer.writerows(records)
    return out.getvalue()


def _echo_hits(hits, fmt: str | None, with_image: bool = True) -> int:
    """Print hits in ``fmt``; return how many. ``--nl`` and ``--csv`` stream
    (``hits`` may be an iterator: a big answer is never all in memory), a few
    thousand lines per write; JSON and the table need them all."""
    from .find import FIELDS

    if fmt in ("nl", "csv"):

        iterator = iter(hits)
        count = 0
        dumps = json.dumps
        while True:
            batch = list(itertools.islice(iterator, 4096))
            if not batch:
                return count
            if fmt == "nl":
                click.echo("\n".join(dumps(h.as_dict()) for h in batch))
            else:
                records = [
                    {k: ("true" if v is True else "false" if v is False else spreadsheet_safe(v))
                     for k, v in h.as_dict().items()}
                    for h in batch
                ]
                text = _csv_text(records, FIELDS, header=not count)
                if "\r" in text:
                    # The writer quotes a field holding its line end ("\n") but not a CR,
                    # which readers take as a row break: quote every field of this batch.
                    text = _csv_text(records, FIELDS, header=not count, quoting=csv.QUOTE_ALL)
                click.echo(text, nl=False)
            count += len(batch)
    hits = list(hits)
    if fmt == "json":
        click.echo(json.dumps([h.as_dict() for h in hits], indent=2))
    elif hits:
        headers = (["IMAGE", "PLATFORM"] if with_image else []) + ["LAYER", "MODE", "OWNER", "SIZE", "MTIME", "PATH"]
        _echo_table(headers, [_hit_cells(h, with_image) for h in hits])
    return len(hits)


_format_options = [
    json_option(dest="fmt", flag_value="json"),
    click.option("--nl", "fmt", flag_value="nl", help="One JSON object per line."),
    click.option("--csv", "fmt", flag_value="csv", help="CSV with a header row."),
]


def format_options(fn):
    for option in reversed(_format_options):
        fn = option(fn)
    return fn


@cli.command()
@db_argument
@click.argument("patterns", nargs=-1)
@ignore_case_option
@click.option("--preset", "presets", multiple=True, metavar="NAME",
              help="Add the patterns of a recon preset (e.g. secrets; always case-insensitive). Repeatable.")
@click.option("--list-presets", is_flag=True, is_eager=True, expose_value=False, callback=_list_presets,
              help="Print every preset and its patterns, then exit.")
@click.option("--image", "images", multiple=True, metavar="REF",
              help="Only this image: full or short reference, repository (every tag) or digest. Repeatable.")
@platform_option("Only this platform.")
@click.option("--type", "types", multiple=True, metavar="f|d|l|h|c|b|p",
              help="Only this entry type: file, dir, symlink, hardlink, char, block, fifo. Repeatable.")
@click.option("--min-size", metavar="SIZE", help="Only entries of at least SIZE bytes (10M, 1.5G, 512K; powers of 1024).")
@click.option("--max-size", metavar="SIZE", help="Only entries of at most SIZE bytes.")
@layer_option("Only this layer", note="; N needs --image (and --platform) naming one image platform")
@click.option("--deleted", is_flag=True, help="Only entries a later layer deleted (whiteout or opaque directory): still in their blob.")
@click.option("--visible", is_flag=True, help="Only entries present in the image's final filesystem.")
@click.option("--exclude", "excludes", multiple=True, metavar="GLOB",
              help="Leave out paths this pattern matches (same rules as PATTERN). Repeatable.")
@click.option("--with-secrets", is_flag=True,
              help="Only files in which `index --scan` found secrets (PATTERN optional; see `layerslayer secrets`).")
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="Print at most N rows.")
@click.option("--count", "count_only", is_flag=True, help="Print the number of matching rows only.")
@format_options
@click.option("--explain", is_flag=True, hidden=True, help="Show how each pattern is looked up (on stderr).")
@debug_option
def find(db, patterns, ignore_case, presets, images, platform, types, min_size, max_size, layer, deleted, visible,
         excludes, with_secrets, limit, count_only, fmt, explain):
    """Find files by glob across every image of index DB.

    One row per matching entry and image platform holding its layer; a
    file deleted by a later layer (a "ghost", still readable in its blob) is
    marked "(deleted in layer N)". Several patterns (and presets) are OR-ed.

    \b
    Patterns: without "/" a pattern matches the file name (like find -name),
    with "/" the whole path (leading "/" optional); * ? [...] globs, * also
    matches "/"; case-sensitive unless -i. Quote them from the shell.

    \b
    Examples:
        layerslayer find images.db '*.pem' id_rsa
        layerslayer find images.db --preset secrets --deleted
        layerslayer find images.db '*.pem' --exclude '/usr/share/*'
        layerslayer find images.db --with-secrets --deleted
        layerslayer find images.db '/etc/ssh/*' --image nginx:latest --type f
        layerslayer find images.db '*.so*' --min-size 10M --json
    """
    from .find import FindQuery

    if not patterns and not presets and not with_secrets:
        raise click.UsageError("give at least one PATTERN or --preset NAME (--list-presets shows them)")
    database = _open_index(db)
    try:
        query = FindQuery(
            database, patterns, ignore_case=ignore_case, presets=presets, images=images, platform=platform,
            types=types, min_size=min_size, max_size=max_size, layer=layer, deleted=deleted, visible=visible,
            limit=limit, exclude=excludes, with_secrets=with_secrets,
        )
        if explain:
            for line in query.explain():
                click.echo(f"plan: {line}", err=True)
        missing = query.missing_layers()
        if missing:
            click.echo(_missing_layers_note(missing), err=True)
        if count_only:
            n = query.count()
            click.echo(json.dumps({"count": n}) if fmt in ("json", "nl") else str(n))
            sys.exit(0 if n else 1)
        # --nl and --csv print as the rows come; the others need them all.
        printed = _echo_hits(query.iter_hits(lean=True) if fmt in ("nl", "csv") else query.hits(), fmt)
    finally:
        database.close()
    sys.exit(0 if printed else 1)


find.help += _FIND_EXIT_STATUS


def _missing_layers_note(missing: dict[str, int]) -> str:
    "One stderr line: how many layers of the searched images the answer cannot cover, and why."
    total = sum(missing.values())
    why = {"failed": "failed", "pending": "not indexed yet or interrupted", "foreign": "foreign, never fetched"}
    parts = ", ".join(f"{n} {why.get(status, status)}" for status, n in sorted(missing.items()))
    hint = "; `layerslayer index` on the same images retries them" if set(missing) - {"foreign"} else ""
    return (f"Note: {total} layer{'s' if total != 1 else ''} of these images {'are' if total != 1 else 'is'} "
            f"missing from the answer ({parts}){hint}")


@cli.command()
@db_argument
@click.option("--image", "images", multiple=True, metavar="REF",
              help="Only secrets this image holds (reference, repository or digest, as for find). Repeatable.")
@click.option("--detector", "detectors", multiple=True, metavar="NAME",
              help="Only this detector (private-key, aws-access-key-id, password-assignment...). Repeatable.")
@click.option("--ghost", "state", flag_value="ghost", help="Only secrets that are only in files a later layer deleted.")
@click.option("--visible", "state", flag_value="visible",
              help="Only secrets visible in some image's final filesystem, config or build steps.")
@click.option("--where", is_flag=True, help="One row per place each secret was found (image, layer, path, line).")
@format_options
@debug_option
def secrets(db, images, detectors, state, where, fmt):
    """List the secrets found by `index --scan` in index DB.

    One row per distinct secret (fingerprint: the same key in many images is
    one row) with its detector, how many images and layers hold it, its state
    (visible; ghost: only in files a later layer deleted; hidden: only in
    files a later layer overwrote) and where it was first seen. Values are
    shown redacted; they are in the index only if it was built with
    --keep-values (then --json/--nl/--csv include them).

    \b
    Examples:
        layerslayer secrets images.db
        layerslayer secrets images.db --ghost --where
        layerslayer secrets images.db --detector private-key --image app:1.0 --json
    """
    from .findings import list_secrets, scanned_anything

    database = _open_index(db)
    try:
        found = list_secrets(database, images=images, detectors=detectors, state=state, where=where)
        if not found and not scanned_anything(database):
            click.echo(f"note: nothing in {printable(str(db))} was scanned for secrets (index it again with --scan)", err=True)
    finally:
        database.close()
    if where:
        records = [
            {"fingerprint": s.fingerprint, "detector": s.detector, "preview": s.preview, **loc.as_dict(),
             **({"value": s.value} if s.value is not None else {})}
            for s in found for loc in s.locations
        ]
    else:
        records = [{k: v for k, v in s.as_dict().items() if k != "value" or v is not None} for s in found]
    if fmt == "json":
        click.echo(json.dumps(records, indent=2))
    elif fmt == "nl":
        for record in records:
            click.echo(json.dumps(record))
    elif fmt == "csv":

        out = io.StringIO()
        fields = list(dict.fromkeys(k for record in records for k in record))
        writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
        click.echo(out.getvalue(), nl=False)
    elif where and records:
        _echo_table(
            ["IMAGE", "PLATFORM", "LAYER", "STATE", "DETECTOR", "PREVIEW", "WHERE"],
            [[printable(r["image"]), printable(r["platform"]) if r["platform"] else "-",
              "-" if r["layer_position"] is None else str(r["layer_position"]),
              r["state"], r["detector"], printable(r["preview"]),
              printable(r["location"] if r["source"] == "file" else f"{r['source']} {r['location']}")
              + (f":{r['line']}" if r["line"] else "")]
             for r in records],
        )
    elif records:
        _echo_table(
            ["DETECTOR", "IMAGES", "LAYERS", "STATE", "PREVIEW", "FIRST SEEN"],
            [[s.detector, str(s.images), str(s.layers), s.state, printable(s.preview),
              f"{printable(s.first_image)} {printable(s.first_location)}"] for s in found],
        )
    sys.exit(0 if records else 1)


secrets.help += _FIND_EXIT_STATUS


@cli.command(name="ls")
@db_argument
@click.argument("reference")
@click.argument("path", required=False)
@layer_option("List one layer, its own entries, whiteout markers included")
@click.option("--merged", is_flag=True, help="List the final filesystem, whiteouts applied (the default).")
@platform_option(f"Platform to list ({PLATFORM_DEFAULT}).")
@click.option("--depth", "-d", type=click.IntRange(min=0), metavar="N",
              help="Only N levels below PATH (1: what is directly in it, like plain ls).")
@format_options
@debug_option
def ls_command(db, reference, path, layer, merged, platform, depth, fmt):
    """List the files of image REFERENCE in index DB, like `ls -lR`.

    Without --layer: the image's merged filesystem (layers applied in order,
    files deleted by whiteouts or opaque directories left out, the top
    version of each path kept), with the layer each entry comes from. With
    PATH, only PATH and what is below it (with --depth N, down to N levels;
    a directory that only deeper entries imply is shown as d?????????).

    \b
    Examples:
        layerslayer ls images.db nginx:latest /etc/nginx
        layerslayer ls images.db nginx:latest / --depth 1
        layerslayer ls images.db localhost:5000/team/app:v1 --layer -1
    """
    from .query import list_files

    if layer is not None and merged:
        raise click.UsageError("--layer and --merged exclude each other")
    database = _open_index(db)
    try:
        hits = list_files(database, reference, path, layer=layer, platform=platform, depth=depth)
    finally:
        database.close()
    _echo_hits(hits, fmt, with_image=False)
    if not hits and path:
        click.echo(printable(f"{path}: no such path in {reference}" + (f" layer {layer}" if layer is not None else "")), err=True)
    sys.exit(0 if hits else 1)


ls_command.help += """
    \b
    Exit status:
      0  something was listed
      1  nothing to list (no such PATH): no output (--json prints [])
      2  usage or input error (unknown image, platform or layer, a file that
         is not a layerslayer index)
"""


@cli.command()
@db_argument
@json_option("array of objects (with every platform)")
@debug_option
def images(db, as_json):
    """List the images of index DB: reference, digest, platforms, layers, files.

    LAYERS counts indexed/total layers when some are not indexed (yet, or
    failed: `layerslayer index` retries them).

    \b
    Exit status: 0 images listed, 1 the index is empty (--json prints []),
    2 DB is not a layerslayer index.
    """
    from .query import list_images

    database = _open_index(db)
    try:
        summaries = list_images(database)
    finally:
        database.close()
    if as_json:
        click.echo(json.dumps([s.as_dict() for s in summaries], indent=2))
    elif summaries:
        rows = []
        for s in summaries:
            layers = str(s.layers) if s.layers == s.layers_indexed else f"{s.layers_indexed}/{s.layers}"
            rows.append([
                printable(s.reference), printable(s.digest[:19]),
                printable(", ".join(p.platform or "?" for p in s.platforms) or "-"), layers,
                f"{s.files:,}", human_size(s.size), (s.indexed_at or "-").replace("T", " ")[:16],
            ])
        _echo_table(["REFERENCE", "DIGEST", "PLATFORMS", "LAYERS", "FILES", "SIZE", "INDEXED"], rows)
    sys.exit(0 if summaries else 1)
