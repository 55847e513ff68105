"""``coffer envelope encrypt|decrypt``: files of any size, with a data key wrapped by Coffer.

The interface is exact (other tools drive it)::

    coffer envelope encrypt --region REGION --key KEY IN --out OUT
    coffer envelope decrypt IN --out OUT

``-`` is stdin or stdout. ``-o OUT``, the first spelling, still works: ``-o`` is ``--output``
(the format) on every other command, so it is left out of the help. The message's header names
the region and key, so decrypt needs neither. An output file appears only when the whole input
was processed (and, for decrypt, authenticated); on an error nothing is written to it. To stdout
(``--out -``), decrypt streams each segment once it is authenticated: when it exits 1, what it
wrote must be discarded (a message cut at a segment boundary is known to be truncated only at
its end). A progress bar shows on stderr when stderr is a terminal.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, BinaryIO

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from coffer.cli.connect import (
    App,
    CaCert,
    Org,
    Profile,
    Project,
    Region,
    Token,
    Url,
    client,
)
from coffer.client.envelope import Envelope, atomic_output

app = App(help="Envelope encryption of files of any size.")

Source = Annotated[
    Path, typer.Argument(help="Input file, or - for stdin.", metavar="IN", show_default=False)
]
Target = Annotated[
    Path | None,
    typer.Option("--out", help="Output file, or - for stdout.", metavar="OUT",
                 show_default=False),
]  # fmt: skip
#: ``-o OUT``: the first spelling of ``--out``, kept for the tools that use it.
OldTarget = Annotated[Path | None, typer.Option("-o", hidden=True, show_default=False)]


def _target(out: Path | None, old: Path | None) -> Path:
    if out is not None and old is not None:
        raise typer.BadParameter("give --out once (-o is its old spelling)")
    chosen = out if out is not None else old
    if chosen is None:
        raise typer.BadParameter("give --out OUT: the output file, or - for stdout")
    return chosen


@contextlib.contextmanager
def _input(path: Path) -> Iterator[BinaryIO]:
    if str(path) == "-":
        yield sys.stdin.buffer
        return
    with path.open("rb") as stream:
        yield stream


@contextlib.contextmanager
def _output(path: Path) -> Iterator[BinaryIO]:
    if str(path) == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    with atomic_output(path) as stream:
        yield stream


@contextlib.contextmanager
def _progress(path: Path, verb: str) -> Iterator[Callable[[int], None] | None]:
    """A callback that advances a progress bar on stderr, when stderr is a terminal."""
    if not sys.stderr.isatty():
        yield None
        return
    total = path.stat().st_size if str(path) != "-" and path.is_file() else None
    columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True, console=Console(stderr=True)) as bar:
        task = bar.add_task(verb, total=total)
        yield lambda size: bar.advance(task, size)


@app.command("encrypt")
def encrypt(
    source: Source,
    key: Annotated[str, typer.Option("--key", help="Key identity or slug.", metavar="KEY",
                                     show_default=False)],
    out: Target = None,
    old_out: OldTarget = None,
    region: Region = None,
    url: Url = None, token: Token = None, org: Org = None, project: Project = None,
    profile: Profile = None, ca_cert: CaCert = None,
) -> None:  # fmt: skip
    """Encrypt IN with a fresh data key wrapped by KEY."""
    out = _target(out, old_out)
    with (
        client(url, token, org, project, region, profile, ca_cert=ca_cert, key=key) as coffer,
        _input(source) as reader,
        _output(out) as writer,
        _progress(source, "encrypting") as advance,
    ):
        Envelope(coffer).encrypt_stream(reader, writer, key=key, progress=advance)


@app.command("decrypt")
def decrypt(
    source: Source,
    out: Target = None,
    old_out: OldTarget = None,
    url: Url = None, token: Token = None, org: Org = None, project: Project = None,
    profile: Profile = None, ca_cert: CaCert = None,
) -> None:  # fmt: skip
    """Decrypt IN; its header names the region and key. To a file only if all of it is
    authentic; to stdout (--out -) as it is checked: discard the output if the exit code is 1."""
    out = _target(out, old_out)
    with (
        client(url, token, org, project, None, profile, ca_cert=ca_cert) as coffer,
        _input(source) as reader,
        _output(out) as writer,
        _progress(source, "decrypting") as advance,
    ):
        Envelope(coffer).decrypt_stream(reader, writer, progress=advance)
