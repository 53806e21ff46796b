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
