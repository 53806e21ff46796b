"""The command line: a thin click layer over the library modules."""

from __future__ import annotations

import functools
import json
import logging
import sys
from pathlib import Path

import click

from . import __version__
from .errors import LayerslayerError
from .options import ClientOptions


def _enable_debug(ctx: click.Context, param, value: bool) -> bool:
    if value:
        ctx.meta["layerslayer.debug"] = True
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="debug: %(name)s: %(message)s")
    return value


debug_option = click.option(
    "--debug", is_flag=True, expose_value=False, is_eager=True, callback=_enable_debug,
    help="Show debug logging, and a traceback on errors.",
)


class LayerslayerGroup(click.Group):
    "Turns LayerslayerError into one line on stderr and its exit status."

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except LayerslayerError as error:
            if ctx.meta.get("layerslayer.debug"):
                raise
            click.echo(f"Error: {error}", err=True)
            ctx.exit(error.exit_code)
        except KeyboardInterrupt:
            if ctx.meta.get("layerslayer.debug"):
                raise
            click.echo("Interrupted.", err=True)
            ctx.exit(130)


def registry_options(fn):
    "Options for talking to registries; the command receives client_options=ClientOptions."

    @click.option("--username", "-u", help="Registry user name (else docker's config.json is used).")
    @click.option("--password", "-p", help="Registry password or token (prefer --password-stdin).")
    @click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
    @click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path), help="A ready bearer token (default: ./token.txt, for Docker Hub only).")
    @click.option("--plain-http", is_flag=True, help="Use HTTP instead of HTTPS (automatic for localhost).")
    @click.option("--insecure", is_flag=True, help="Do not verify TLS certificates.")
    @click.option("--timeout", type=click.FloatRange(min=0.1), default=60.0, show_default=True, help="Read timeout in seconds.")
    @click.option("--retries", type=click.IntRange(min=1), default=4, show_default=True, help="Attempts per request on 429, 5xx and dropped connections.")
    @debug_option
    @functools.wraps(fn)
    def wrapper(*args, username, password, password_stdin, token_file, plain_http, insecure, timeout, retries, **kwargs):
        if password_stdin:
            if password is not None:
                raise click.UsageError("--password and --password-stdin are mutually exclusive")
            password = sys.stdin.readline().rstrip("\r\n")
        if password is not None and username is None:
            raise click.UsageError("--password needs --username")
        kwargs["client_options"] = ClientOptions(
            username=username, password=password, token_file=token_file,
            plain_http=plain_http, insecure=insecure, timeout=timeout, retries=retries,
        )
        return fn(*args, **kwargs)

    return wrapper


@click.group(cls=LayerslayerGroup)
@click.version_option(__version__, prog_name="layerslayer")
@debug_option
def cli():
    """Daemonless container-image recon over the Registry HTTP API v2.

    Inspect images on any OCI/Docker registry, index their layers' file
    listings into SQLite, find files across images, and fetch exactly the
    bytes you want, verified by digest.
    """


@cli.command()
@click.argument("reference")
@click.option("--platform", metavar="OS/ARCH[/VARIANT]", help="Platform to show (default: this machine's, else the first).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@registry_options
def inspect(reference: str, platform: str | None, as_json: bool, client_options: ClientOptions):
    """Show an image's platforms, layers and build steps.

    \b
    Example:
        layerslayer inspect alpine:3.20 --platform linux/arm64/v8
    """
    from .image import inspect_image

    report = inspect_image(reference, platform=platform, options=client_options)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        click.echo(report.as_text())


class TerminalProgress:
    "Progress for `index` on a terminal: one live status line, one line per finished layer."

    def __init__(self, total_hint: int = 0):
        from .indexer import Progress  # noqa: F401  (the interface this follows)

        self.started: dict[str, float] = {}
        self.bytes: dict[str, int] = {}
        self.entries: dict[str, int] = {}
        self.sizes: dict[str, int] = {}
        self.finished = 0
        self.last_draw = 0.0
        import threading

        self.lock = threading.Lock()

    def _draw(self, force: bool = False) -> None:
        import time

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
        import time

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
        import time

        with self.lock:
            seconds = time.monotonic() - self.started.pop(job.digest, time.monotonic())
            size = self.bytes.pop(job.digest, 0)
            self.entries.pop(job.digest, None)
            self.sizes.pop(job.digest, None)
            click.echo("\r\033[K", nl=False, err=True)
            if error:
                click.echo(f"failed   {job.digest}: {error}", err=True)
            else:
                click.echo(f"indexed  {job.digest}  {entries:,} entries  {size / 1e6:.1f} MB  {seconds:.1f}s", err=True)
            self._draw(force=True)

    def message(self, text: str) -> None:
        with self.lock:
            click.echo(f"\r\033[K{text}", err=True)


class QuietProgress:
    "No progress, errors only (for --quiet, and when stderr is not a terminal)."

    def layer_started(self, job) -> None: ...
    def layer_advanced(self, job, nbytes: int, entries: int) -> None: ...

    def layer_finished(self, job, entries: int, error: str | None) -> None:
        if error:
            click.echo(f"failed   {job.digest}: {error}", err=True)

    def message(self, text: str) -> None:
        click.echo(text, err=True)


def _progress(quiet: bool):
    if quiet or not sys.stderr.isatty():
        return QuietProgress()
    return TerminalProgress()


db_argument = click.argument("db", type=click.Path(dir_okay=False, path_type=Path))


@cli.command()
@db_argument
@click.argument("references", nargs=-1, required=True)
@click.option("--platform", metavar="OS/ARCH[/VARIANT]", help="Platform to index (default: this machine's, else the first).")
@click.option("--all-platforms", is_flag=True, help="Index every platform of multi-arch images.")
@click.option("--all-tags", is_flag=True, help="Index every tag of each repository named.")
@click.option("--catalog", is_flag=True, help="REFERENCES are registry hosts: index every tag of every repository in their catalog.")
@click.option("--limit", type=click.IntRange(min=1), help="With --catalog: at most this many repositories.")
@click.option("--page-size", type=click.IntRange(min=1), help="Page size for tag and catalog listings.")
@click.option("--jobs", "-j", type=click.IntRange(min=1, max=32), default=2, show_default=True, help="Layers downloaded at once.")
@click.option("--quiet", "-q", is_flag=True, help="Print only errors and the summary line.")
@registry_options
def index(db, references, platform, all_platforms, all_tags, catalog, limit, page_size, jobs, quiet, client_options):
    """Index layer file listings of images into the SQLite database DB.

    Layers are streamed from the registry and only their tar headers kept;
    a layer already in DB is never downloaded again.

    \b
    Examples:
        layerslayer index images.db alpine:3.20 nginx:latest
        layerslayer index images.db localhost:5000/team/app --all-tags
        layerslayer index images.db localhost:5000 --catalog --limit 50
    """
    from .indexer import catalog_references, index_images
    from .reference import parse_reference

    if platform and all_platforms:
        raise click.UsageError("--platform and --all-platforms are mutually exclusive")
    if limit and not catalog:
        raise click.UsageError("--limit goes with --catalog")
    if catalog:
        refs = []
        for registry in references:
            if "/" in registry or "@" in registry:
                raise click.UsageError(f"--catalog takes registry hosts such as localhost:5000, not {registry!r}")
            refs += catalog_references(client_options, registry, limit=limit, page_size=page_size)
    else:
        refs = [parse_reference(text) for text in references]
    summary = index_images(
        db, refs, options=client_options, platform=platform, all_platforms=all_platforms,
        all_tags=all_tags, jobs=jobs, page_size=page_size, progress=_progress(quiet),
    )
    click.echo(summary.as_line())
    if not summary.ok:
        sys.exit(1)
