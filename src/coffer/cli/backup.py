"""``coffer backup`` and ``coffer restore`` (``docs/operations.md``).

The passphrase of a backup that holds the root key is read from a hidden prompt (asked twice
when it is made), or from one line of stdin — never from the command line.
"""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from coffer.cli.connect import DatabaseUrl, DataDir, Output, OutputFormat, ServerConfig, fail
from coffer.config import ConfigError, load_settings

UNKNOWN_LATER = (
    "Anything changed after the backup is not in it: tokens revoked and role bindings removed "
    "since are valid again, keys created or rotated since are missing. Give --audit-copy (an "
    "audit sink's file or a newer `coffer audit export`) to list them."
)
#: A passphrase guards every key of the installation: shorter ones are refused.
MIN_PASSPHRASE = 12


def _passphrase(confirm: bool) -> bytes:
    if sys.stdin.isatty():
        first = getpass.getpass("Backup passphrase (input hidden): ")
        if confirm and getpass.getpass("Again: ") != first:
            raise fail("the passphrases differ; nothing was written")
    else:
        first = sys.stdin.readline().rstrip("\r\n")
    if len(first) < MIN_PASSPHRASE:
        raise fail(f"the passphrase must be at least {MIN_PASSPHRASE} characters")
    return first.encode()


def _settings(data_dir: Path, database_url: str | None, config: Path | None) -> Any:
    try:
        return load_settings(data_dir, config_file=config, database_url=database_url)
    except ConfigError as exc:
        raise fail(str(exc)) from None


def backup(
    out: Annotated[Path, typer.Argument(help="The backup file to write.", show_default=False)],
    data_dir: DataDir,
    database_url: DatabaseUrl = None,
    config: ServerConfig = None,
    include_root_key: Annotated[
        bool,
        typer.Option(
            "--include-root-key",
            help="File seal: put the root key in the backup too, "
            "the whole backup then encrypted with a passphrase (prompt or stdin).",
        ),
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace OUT if it exists.")] = False,
    output: Output = OutputFormat.TEXT,
) -> None:
    """Write a consistent backup of a running installation to one file (never copy coffer.db)."""
    from coffer.backup import backup as make_backup

    settings = _settings(data_dir, database_url, config)
    passphrase = (lambda: _passphrase(confirm=True)) if include_root_key else None
    try:
        manifest = make_backup(settings, out, passphrase, force=force)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    if output is OutputFormat.JSON:
        typer.echo(json.dumps(manifest))
        return
    counts = manifest["counts"]
    typer.echo(
        f"Backed up installation {manifest['installation']} to {out}: {counts['keys']} keys, "
        f"{counts['keyVersions']} versions, audit record {manifest['auditHead']['seq']}"
    )
    if include_root_key:
        typer.echo("The backup holds the root key, encrypted under the passphrase.")
    elif manifest["sealType"] == "file":
        typer.echo(
            f"The root key is not in it: keep {data_dir / 'root.key'} safe elsewhere (restore "
            "needs it: --root-key), or back up with --include-root-key."
        )


def restore(
    source: Annotated[Path, typer.Argument(help="The backup file.", show_default=False)],
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            envvar="COFFER_DATA_DIR",
            show_envvar=True,
            show_default=False,
            help="The new data directory to restore into.",
        ),
    ] = None,
    database_url: DatabaseUrl = None,
    config: ServerConfig = None,
    root_key: Annotated[
        Path | None,
        typer.Option(
            "--root-key",
            show_default=False,
            help="File seal: the installation's root.key, if the backup does not hold it.",
        ),
    ] = None,
    audit_copy: Annotated[
        Path | None,
        typer.Option(
            "--audit-copy",
            show_default=False,
            help="An audit sink's file or `coffer audit export` newer than the backup: "
            "lists the changes the restore undoes.",
        ),
    ] = None,
    check: Annotated[
        bool, typer.Option("--check", help="Only check the backup and show its manifest.")
    ] = False,
    output: Output = OutputFormat.TEXT,
) -> None:
    """Restore a backup into a new data directory (and an empty PostgreSQL database)."""
    from coffer.backup import inspect
    from coffer.backup import restore as restore_backup
    from coffer.cli.operator import read_shares

    if check:
        try:
            header = inspect(source)
        except ConfigError as exc:
            raise fail(str(exc)) from None
        if output is OutputFormat.JSON:
            typer.echo(json.dumps(header.manifest))
            return
        state = (
            "encrypted (the passphrase is asked when it is restored)"
            if header.encrypted
            else "not encrypted"
        )
        typer.echo(f"{source}: a whole Coffer backup, {state}")
        for name, value in header.manifest.items():
            typer.echo(f"  {name}: {json.dumps(value)}")
        return
    if data_dir is None:
        raise fail("give --data-dir: the new data directory to restore into")
    settings = _settings(data_dir, database_url, config)
    try:
        report = restore_backup(source, settings, passphrase=lambda: _passphrase(confirm=False),
                                root_key=root_key, shares=read_shares,
                                audit_copy=audit_copy)  # fmt: skip
    except ConfigError as exc:
        raise fail(str(exc)) from None
    manifest = report.manifest
    if output is OutputFormat.JSON:
        typer.echo(json.dumps({
            "manifest": manifest, "verifiedRecords": report.verified_records,
            "laterRecords": report.later_records,
            "warning": None if report.later_records is not None else UNKNOWN_LATER,
            "undone": [vars_of(c) for c in report.undone],
            "lost": [vars_of(c) for c in report.lost],
        }))  # fmt: skip
        return
    typer.echo(
        f"Restored installation {manifest['installation']} as of {manifest['createdAt']} into "
        f"{data_dir}: the audit chain verifies ({report.verified_records} records)."
    )
    if report.later_records is None:
        typer.echo(UNKNOWN_LATER)
    elif not report.undone and not report.lost:
        typer.echo(f"The audit copy shows {report.later_records} record(s) after the backup, "
                   "none of which the restore undoes.")  # fmt: skip
    for change in report.undone:
        typer.echo(f"  UNDONE  record {change.seq} {change.at}: {change.what} "
                   f"({change.resource}) — do it again")  # fmt: skip
    for change in report.lost:
        typer.echo(f"  LOST    record {change.seq} {change.at}: {change.what} "
                   f"({change.resource}) — what was encrypted under it cannot be "
                   "decrypted")  # fmt: skip
    typer.echo(f"Start it with: coffer serve --data-dir {data_dir}")


def vars_of(change: Any) -> dict[str, Any]:
    return {"seq": change.seq, "at": change.at, "action": change.action, "what": change.what,
            "resource": change.resource, "organisation": change.organisation}  # fmt: skip


def register(app: typer.Typer) -> None:
    app.command()(backup)
    app.command()(restore)
