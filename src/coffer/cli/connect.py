"""What the commands that talk to a server share: connection options, errors, output.

Connection settings come from ``--url/--token/--org/--project/--region/--ca-cert`` (after the
command, or before it: ``coffer --token T encrypt ...``; after wins), then ``COFFER_URL``,
``COFFER_TOKEN``, ``COFFER_ORG``, ``COFFER_PROJECT``, ``COFFER_REGION``, ``COFFER_CA_CERT``,
then the profile (``--profile``/``COFFER_PROFILE``) of the profile file (see
``coffer.client.connection``). A command checks that it has a token (and an organisation, where
it needs one) before it sends anything. Exit codes: 0 ok, 1 error (one line on stderr), 2 usage.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from collections.abc import Iterator, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import msgspec
import typer
from rich.console import Console
from rich.table import Table
from typer._click import core as click
from typer._click import exceptions
from typer._click.globals import get_current_context
from typer.core import TyperCommand

from coffer.client import Client
from coffer.client.envelope import atomic_output
from coffer.errors import CofferError, KeyNotFound


class Command(TyperCommand):
    """A command whose usage line names its arguments plainly: ``KEY [DATA]``."""

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                name = param.metavar or (param.name or "").upper()
                name = name if param.required else f"[{name}]"
                pieces.append(f"{name}..." if param.nargs != 1 else name)
        return pieces


class App(typer.Typer):
    """A ``typer.Typer`` with plain help: no markup (``[env var: X]`` is shown as written, and
    nothing is cut at 80 columns). The top command's choice holds for every command under it."""

    def __init__(self, **options: Any) -> None:
        options.setdefault("rich_markup_mode", None)
        options.setdefault("no_args_is_help", True)
        options.setdefault("add_completion", False)
        options.setdefault("pretty_exceptions_enable", False)
        super().__init__(**options)


def plain_usage(app: typer.Typer) -> None:
    """Give every command under ``app`` the plain usage line of ``Command``."""
    for info in app.registered_commands:
        if info.cls in (None, TyperCommand):
            info.cls = Command
    for group in app.registered_groups:
        if group.typer_instance is not None:
            plain_usage(group.typer_instance)


def run(app: typer.Typer) -> None:
    """Run the command line; a usage error is one line on stderr too (exit 2)."""
    command = typer.main.get_command(app)
    try:
        code = command.main(prog_name="coffer", standalone_mode=False)
    except exceptions.NoArgsIsHelpError as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except exceptions.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "coffer"
        message = " ".join(exc.format_message().split())
        typer.echo(f"coffer: {message} (see {where} --help)", err=True)
        sys.exit(exc.exit_code)
    except exceptions.ClickException as exc:
        typer.echo(f"coffer: {' '.join(exc.format_message().split())}", err=True)
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("coffer: aborted", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


Url = Annotated[
    str | None,
    typer.Option("--url", envvar="COFFER_URL", show_envvar=True, metavar="URL",
                 help="Server address (default http://127.0.0.1:8200).", show_default=False),
]  # fmt: skip
Token = Annotated[
    str | None,
    typer.Option("--token", envvar="COFFER_TOKEN", show_envvar=True, metavar="TOKEN",
                 help="API token (or a profile's).", show_default=False),
]  # fmt: skip
Org = Annotated[
    str | None,
    typer.Option("--org", envvar="COFFER_ORG", show_envvar=True, metavar="ORG",
                 help="Organisation identity or slug.", show_default=False),
]  # fmt: skip
Project = Annotated[
    str | None,
    typer.Option("--project", envvar="COFFER_PROJECT", show_envvar=True, metavar="PROJECT",
                 help="Project identity or slug.", show_default=False),
]  # fmt: skip
Region = Annotated[
    str | None,
    typer.Option("--region", envvar="COFFER_REGION", show_envvar=True, metavar="REGION",
                 help="Region (default nl-01).", show_default=False),
]  # fmt: skip
Profile = Annotated[
    str | None,
    typer.Option("--profile", envvar="COFFER_PROFILE", show_envvar=True, metavar="NAME",
                 help="Profile of the profile file (default: default).", show_default=False),
]  # fmt: skip
# The options of the commands that work on an installation's files (init, serve, audit verify
# and export, backup, restore, the offline operator commands).
DataDir = Annotated[
    Path,
    typer.Option("--data-dir", envvar="COFFER_DATA_DIR", show_envvar=True, metavar="DIR",
                 help="Data directory of the installation."),
]  # fmt: skip
DatabaseUrl = Annotated[
    str | None,
    typer.Option("--database-url", envvar="COFFER_DATABASE_URL", show_envvar=True,
                 metavar="URL", show_default=False,
                 help="postgresql://user:password@host:port/db (default: SQLite in the data "
                 "directory)."),
]  # fmt: skip
ServerConfig = Annotated[
    Path | None,
    typer.Option("--config", envvar="COFFER_CONFIG", show_envvar=True, metavar="FILE",
                 show_default=False,
                 help="The server's TOML settings file (for its audit_anchor_path)."),
]  # fmt: skip
CaCert = Annotated[
    Path | None,
    typer.Option("--ca-cert", envvar="COFFER_CA_CERT", show_envvar=True, metavar="FILE",
                 help="PEM file of the certificate authority of an HTTPS server (a private CA).",
                 show_default=False),
]  # fmt: skip

#: ``ctx.meta`` key of the connection options given before the command (``coffer --token T ...``).
GLOBAL_OPTIONS = "coffer.connection"
#: Settings given before the command that count only for commands that have that option.
_SCOPED = frozenset({"org", "project"})


def remember_global_options(ctx: click.Context, values: dict[str, Any]) -> None:
    """Keep the connection options typed before the command (not those from the environment:
    those the command reads itself)."""
    given = {
        name: value
        for name, value in values.items()
        if value is not None and ctx.get_parameter_source(name) is click.ParameterSource.COMMANDLINE
    }
    ctx.meta[GLOBAL_OPTIONS] = given


def _settings(given: dict[str, Any]) -> dict[str, Any]:
    """``given`` (the command's own options) with the options typed before the command where the
    command's were not typed: ``coffer --org A encrypt --org B`` uses B."""
    ctx = get_current_context(silent=True)
    if ctx is None:
        return given
    before: dict[str, Any] = ctx.meta.get(GLOBAL_OPTIONS, {})
    chosen = dict(given)
    for name, value in before.items():
        if name not in chosen or (name in _SCOPED and name not in ctx.params):
            continue
        if (
            name in ctx.params
            and ctx.get_parameter_source(name) is click.ParameterSource.COMMANDLINE
        ):
            continue
        chosen[name] = value
    return chosen


class OutputFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


Output = Annotated[
    OutputFormat, typer.Option("--output", "-o", help="Output format: text, or json for scripts.")
]


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"coffer: {message}", err=True)
    return typer.Exit(code)


def describe(error: CofferError) -> str:
    where = f", request {error.request_id}" if error.request_id else ""
    return f"{error.message} ({error.code}{where})"


@contextlib.contextmanager
def client(
    url: str | None,
    token: str | None,
    org: str | None,
    project: str | None,
    region: str | None = None,
    profile: str | None = None,
    *,
    ca_cert: Path | None = None,
    needs_token: bool = True,
    needs_org: bool = True,
    key: str | None = None,
) -> Iterator[Client]:
    """A client for one command; Coffer and file errors become one line on stderr, exit 1.

    A missing token (``needs_token``) or organisation (``needs_org``) is said before anything
    is sent, with the option and variable that give it (exit 2). ``key``: the key the user
    named, repeated when the server does not find it."""
    given = {"url": url, "token": token, "org": org, "project": project, "region": region,
             "profile": profile, "ca_cert": ca_cert}  # fmt: skip
    chosen = _settings(given)
    ca = chosen["ca_cert"]
    try:
        with Client(chosen["url"], chosen["token"], organisation=chosen["org"],
                    project=chosen["project"], region=chosen["region"],
                    profile=chosen["profile"], ca_cert=str(ca) if ca else None,
                    ) as connected:  # fmt: skip
            settings = connected.connection
            if needs_token and not settings.token:
                raise fail("no token: pass --token or set COFFER_TOKEN (or use a profile)", 2)
            if needs_org and not settings.organisation:
                raise fail("no organisation: pass --org or set COFFER_ORG (or use a profile)", 2)
            try:
                yield connected
            except KeyNotFound as exc:
                if key is None or exc.message != KeyNotFound.default_message:
                    raise
                where = f", request {exc.request_id}" if exc.request_id else ""
                raise fail(
                    f"key {key!r} not found in region {settings.region} "
                    f"({exc.code}{where}): `coffer keys list` shows the keys you may use"
                ) from None
    except CofferError as exc:
        raise fail(describe(exc)) from None
    except OSError as exc:
        name = f"{exc.filename}: " if exc.filename else ""
        raise fail(f"{name}{exc.strerror or exc}") from None


def plain(value: Any) -> Any:
    """A response struct as JSON-ready builtins (camelCase names, base64 bytes)."""
    return msgspec.to_builtins(value)


def show(value: Any, output: OutputFormat, columns: Sequence[str]) -> None:
    """One JSON object (lists as ``{"items": [...]}``), or a table for people."""
    data = plain(value)
    if output is OutputFormat.JSON:
        typer.echo(json.dumps({"items": data} if isinstance(data, list) else data))
        return
    rows = data if isinstance(data, list) else [data]
    table = Table()
    for column in columns:
        table.add_column(column, overflow="fold")  # identities whole, also in a narrow terminal
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    console = Console()
    if not console.is_terminal:  # a pipe or a log: room for whole identities on one line
        console = Console(width=200)
    console.print(table)


def read_input(data: str | None, source: Path | None) -> bytes:
    """The bytes of DATA (as UTF-8), of ``--in FILE``, or of stdin (``--in -``, or neither
    given and stdin not a terminal)."""
    if data is not None and source is not None:
        raise typer.BadParameter("give DATA or --in, not both")
    if data is not None:
        return data.encode()
    if source is None and sys.stdin.isatty():
        raise typer.BadParameter("give DATA, --in FILE, or pipe the data on stdin")
    try:
        if source is not None and str(source) != "-":
            return source.read_bytes()
        return sys.stdin.buffer.read()
    except OSError as exc:
        raise fail(f"{source}: {exc.strerror or exc}") from None


def write_output(data: bytes, target: Path | None) -> None:
    """Raw bytes to ``--out FILE`` (a new file, readable by its owner alone, put in place
    whole), or to stdout."""
    if target is None or str(target) == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    with atomic_output(target) as out:
        out.write(data)


In = Annotated[
    Path | None,
    typer.Option("--in", "-i", help="Read the data from FILE ('-' for stdin).", metavar="FILE",
                 show_default=False),
]  # fmt: skip
Out = Annotated[
    Path | None,
    typer.Option(
        "--out",
        help="Write the bytes to FILE instead of stdout.",
        metavar="FILE",
        show_default=False,
    ),
]


_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_UNITS = "d (days), h (hours), m (minutes) or s (seconds)"


def parse_duration(text: str) -> int:
    """Seconds in ``90d``, ``12h``, ``30m``, ``45s`` or ``1d12h``. A unit is required: a bare
    ``90`` is refused rather than guessed (90 seconds? 90 days?)."""
    if text.isdigit():
        raise typer.BadParameter(f"{text!r} has no unit: add one of {_UNITS}, e.g. {text}d")
    match = _DURATION.fullmatch(text)
    if not text or match is None:
        raise typer.BadParameter(f"{text!r} is not a duration: use {_UNITS}, e.g. 90d or 1d12h")
    days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
    total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if total == 0:
        raise typer.BadParameter(f"{text!r} is no time at all: give a duration such as 90d")
    return total


def parse_days(text: str) -> int:
    """Whole days in a duration such as ``90d`` (or ``2160h``)."""
    seconds = parse_duration(text)
    if seconds % 86_400:
        raise typer.BadParameter(f"{text!r} is not a whole number of days: give e.g. 90d")
    return seconds // 86_400
