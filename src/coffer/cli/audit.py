"""``coffer audit``: verify the chain locally; list and export records through the server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from coffer.cli.connect import (
    App,
    CaCert,
    DatabaseUrl,
    Org,
    Output,
    OutputFormat,
    Profile,
    ServerConfig,
    Token,
    Url,
    client,
    plain,
)
from coffer.client import Client
from coffer.config import ConfigError, load_settings

app = App(help="The audit log.")

PAGE = 1000

Action = Annotated[str | None, typer.Option(help="Only this action, e.g. kms.encrypt.")]
Resource = Annotated[str | None, typer.Option(help="Only records of this key identity.")]
Since = Annotated[str | None, typer.Option(help="From this RFC 3339 time on.")]
Until = Annotated[str | None, typer.Option(help="Before this RFC 3339 time.")]


class ExportFormat(StrEnum):
    JSONL = "jsonl"


def _fail(message: str) -> typer.Exit:
    typer.echo(f"coffer: {message}", err=True)
    return typer.Exit(1)


@app.command("verify")
def verify(
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            envvar="COFFER_DATA_DIR",
            help="The data directory whose log to verify (not needed for --export with "
            "--public-key).",
            show_default=False,
        ),
    ] = None,
    database_url: DatabaseUrl = None,
    config: ServerConfig = None,
    anchor: Annotated[
        Path | None,
        typer.Option(
            "--anchor",
            help="The audit anchor file to compare with (default: the data directory's).",
            show_default=False,
        ),
    ] = None,
    public_key: Annotated[
        Path | None,
        typer.Option(
            "--public-key",
            help="Verify with the checkpoint public key (coffer audit public-key) instead of "
            "the root of trust: signatures, checkpoints and the anchor; records by count and "
            "order only.",
            show_default=False,
        ),
    ] = None,
    export: Annotated[
        Path | None,
        typer.Option(
            "--export",
            help="Verify this file instead of the database: an export (coffer audit export "
            "--data-dir) or an audit sink's copy.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Walk the audit chain and its signed checkpoints, compare them with the anchor file, and
    report the first thing wrong. With the shamir seal (and no --public-key), the threshold's
    number of unseal key shares is read from a hidden prompt or stdin (one per line)."""
    from coffer.bootstrap import verify_audit  # the server's modules, for this command only
    from coffer.cli.operator import read_shares

    try:
        pem = public_key.read_bytes() if public_key is not None else None
    except OSError as exc:
        raise _fail(f"{public_key}: {exc.strerror}") from None
    if data_dir is None and not (export is not None and pem is not None):
        raise _fail("give --data-dir (or COFFER_DATA_DIR); an export verifies without it "
                    "only with --public-key")  # fmt: skip
    try:
        settings = None
        if data_dir is not None:
            settings = load_settings(data_dir, config_file=config, database_url=database_url)
        result = asyncio.run(
            verify_audit(settings, read_shares, anchor_path=anchor, public_key=pem, export=export)
        )
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    if not result.ok:
        typer.echo(
            f"audit chain BROKEN after {result.records} good record(s): {result.problem}", err=True
        )
        raise typer.Exit(1)
    how = "" if result.links_checked else " (links not checked: public key only)"
    typer.echo(
        f"audit chain intact{how}: {result.records} record(s) up to {result.last_seq}, "
        f"{result.checkpoints} signed checkpoint(s), {result.anchored} in the anchor"
    )
    if export is not None and result.first_seq > 1:
        typer.echo(f"note: the copy begins at record {result.first_seq}", err=True)
    if result.unsigned_tail:
        typer.echo(
            f"note: the last {result.unsigned_tail} record(s) of the copy come after its newest "
            "signed checkpoint: only the links prove them (with the root of trust)",
            err=True,
        )
    if result.beyond:
        typer.echo(
            f"note: the anchor holds {result.beyond} checkpoint(s) beyond the copy's end, up to "
            f"record {result.beyond_seq}: the copy is older than the anchor, or was cut short — "
            "compare with the log itself",
            err=True,
        )
    if export is not None and not result.anchor_found:
        typer.echo(
            "note: not compared with an anchor (give --anchor): a copy cut short before its "
            "newest checkpoints is not detected without one",
            err=True,
        )
    elif not result.anchor_found:
        typer.echo(
            "note: no audit anchor was found, and the log is empty: a new installation has no "
            "anchor until its server first starts; if the log should not be empty, verify with "
            "--anchor or --config (the anchor is what shows a wiped log)",
            err=True,
        )
    if result.unanchored is not None:
        typer.echo(
            f"note: the newest checkpoint (record {result.unanchored}) is not in the anchor yet: "
            "a server stopped between storing it and appending it",
            err=True,
        )


@app.command("public-key")
def public_key(
    token: Token = None, url: Url = None, profile: Profile = None, ca_cert: CaCert = None
) -> None:
    """The public key (PEM) that verifies the audit log's signed checkpoints: what a verifier
    outside needs. It cannot sign."""
    with client(url, token, None, None, None, profile, ca_cert=ca_cert,
                needs_org=False) as coffer:  # fmt: skip
        typer.echo(coffer.audit.public_key(), nl=False)


def _pages(coffer: Client, filters: dict[str, Any], limit: int) -> Iterator[dict[str, Any]]:
    """Up to ``limit`` records from ``GET /v1/audit``, newest first, page after page."""
    sent = 0
    page = 1
    while True:
        answer = coffer.audit.list(**filters, page=page, limit=min(PAGE, limit - sent))
        yield from plain(answer.items)
        sent += len(answer.items)
        if page >= answer.total_pages or sent >= limit:
            return
        page += 1


@app.command("list")
def list_records(
    token: Token = None,
    url: Url = None,
    org: Org = None,
    action: Action = None,
    resource: Resource = None,
    since: Since = None,
    until: Until = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.", min=1)] = 50,
    profile: Profile = None,
    ca_cert: CaCert = None,
    output: Output = OutputFormat.TEXT,
) -> None:
    """The newest records of the organisation."""
    filters: dict[str, Any] = {"action": action, "resource_identity": resource, "since": since,
                               "until": until}  # fmt: skip
    with client(url, token, org, None, None, profile, ca_cert=ca_cert) as coffer:
        records = list(_pages(coffer, filters, limit))
    if output is OutputFormat.JSON:
        typer.echo(json.dumps(records))
        return
    for record in records:
        context = record["context"]
        who = record.get("userIdentity") or record.get("serviceAccountIdentity") or "-"
        typer.echo(
            f"{record['createdAt']}  {record['action']:<24} {context['status']}  "
            f"{record.get('resourceIdentity') or '-':<24} {who}"
        )


@app.command("export")
def export(
    token: Token = None,
    url: Url = None,
    org: Org = None,
    output_format: Annotated[
        ExportFormat, typer.Option("--format", help="jsonl: one JSON object a line.")
    ] = ExportFormat.JSONL,
    action: Action = None,
    resource: Resource = None,
    since: Since = None,
    until: Until = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Export the whole chain of this data directory (no server, no root of trust): "
            "records with their links, checkpoints and the head, verifiable with coffer audit "
            "verify --export.",
            show_default=False,
        ),
    ] = None,
    database_url: DatabaseUrl = None,
    config: ServerConfig = None,
    profile: Profile = None,
    ca_cert: CaCert = None,
) -> None:
    """Every matching record of the organisation, oldest first, one JSON object per line (for a
    SIEM), through the server; or, with --data-dir, the whole verifiable chain."""
    filters: dict[str, Any] = {"action": action, "resource_identity": resource, "since": since,
                               "until": until}  # fmt: skip
    if data_dir is not None:
        if any(filters.values()):
            raise _fail("a whole-chain export (--data-dir) takes no filters: a filtered log "
                        "cannot be verified")  # fmt: skip
        from coffer.bootstrap import export_audit  # the server's modules, for this command only

        try:
            settings = load_settings(data_dir, config_file=config, database_url=database_url)
            out = typer.get_binary_stream("stdout")
            asyncio.run(export_audit(settings, out))
            out.flush()
        except ConfigError as exc:
            raise _fail(str(exc)) from None
        return
    # Paged by sequence number, not by offset: records pruned or added meanwhile shift no page.
    after = 0
    with client(url, token, org, None, None, profile, ca_cert=ca_cert) as coffer:
        while True:
            page = coffer.audit.list(**filters, order="asc", limit=PAGE, page=1, after_seq=after)
            for record in plain(page.items):
                typer.echo(json.dumps(record, separators=(",", ":")))
            if len(page.items) < PAGE:
                return
            after = page.items[-1].seq
