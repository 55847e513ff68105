"""What the commands that talk to a server share: connection options, errors, output.

Connection settings come from ``--url/--token/--org/--project/--region``, then ``COFFER_URL``,
``COFFER_TOKEN``, ``COFFER_ORG``, ``COFFER_PROJECT``, ``COFFER_REGION``, then the profile
(``--profile``/``COFFER_PROFILE``) of the profile file (see ``coffer.client.connection``).
Exit codes: 0 ok, 1 error (one line on stderr), 2 usage.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import msgspec
import typer
from rich.console import Console
from rich.table import Table

from coffer.client import Client
from coffer.client.envelope import atomic_output
from coffer.errors import CofferError

Url = Annotated[
    str | None, typer.Option("--url", help="Server address [env COFFER_URL].", show_default=False)
]
Token = Annotated[
    str | None,
    typer.Option("--token", help="API token [env COFFER_TOKEN].", show_default=False),
]
Org = Annotated[
    str | None,
    typer.Option("--org", help="Organisation identity or slug [env COFFER_ORG].",
                 show_default=False),
]  # fmt: skip
Project = Annotated[
    str | None,
    typer.Option("--project", help="Project identity or slug [env COFFER_PROJECT].",
                 show_default=False),
]  # fmt: skip
Region = Annotated[
    str | None,
    typer.Option("--region", help="Region [env COFFER_REGION, default nl-01].",
                 show_default=False),
]  # fmt: skip
Profile = Annotated[
    str | None,
    typer.Option("--profile", help="Profile of the profile file [env COFFER_PROFILE].",
                 show_default=False),
]  # fmt: skip


class OutputFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


Output = Annotated[OutputFormat, typer.Option("--output", "-o", help="text or json.")]


def fail(message: str) -> typer.Exit:
    typer.echo(f"coffer: {message}", err=True)
    return typer.Exit(1)


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
) -> Iterator[Client]:
    """A client for one command; Coffer and file errors become one line on stderr, exit 1."""
    try:
        with Client(url, token, organisation=org, project=project, region=region,
                    profile=profile) as connected:  # fmt: skip
            yield connected
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
    typer.Option("--in", "-i", help="Read the data from FILE ('-' for stdin).",
                 show_default=False),
]  # fmt: skip
Out = Annotated[
    Path | None,
    typer.Option("--out", help="Write the bytes to FILE instead of stdout.", show_default=False),
]
