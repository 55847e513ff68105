"""``coffer audit``: verify the chain locally; list and export records through the server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from coffer.config import ConfigError, Settings

app = typer.Typer(help="The audit log.", no_args_is_help=True)

PAGE = 1000

Url = Annotated[str, typer.Option(envvar="COFFER_URL", help="Server address.")]
Token = Annotated[str, typer.Option(envvar="COFFER_TOKEN", help="API token.", show_default=False)]
Org = Annotated[str, typer.Option(envvar="COFFER_ORG", help="Organisation identity or slug.")]
Action = Annotated[str | None, typer.Option(help="Only this action, e.g. kms.encrypt.")]
Resource = Annotated[str | None, typer.Option(help="Only records of this key identity.")]
Since = Annotated[str | None, typer.Option(help="From this RFC 3339 time on.")]
Until = Annotated[str | None, typer.Option(help="Before this RFC 3339 time.")]


class OutputFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class ExportFormat(StrEnum):
    JSONL = "jsonl"


def _fail(message: str) -> typer.Exit:
    typer.echo(f"coffer: {message}", err=True)
    return typer.Exit(1)


@app.command("verify")
def verify(
    data_dir: Annotated[Path, typer.Option("--data-dir", envvar="COFFER_DATA_DIR")],
    database_url: Annotated[
        str | None,
        typer.Option("--database-url", envvar="COFFER_DATABASE_URL", show_default=False),
    ] = None,
) -> None:
    """Walk the audit chain and its signed checkpoints; report the first broken link."""
    from coffer.bootstrap import verify_audit  # the server's modules, for this command only

    try:
        settings = Settings(data_dir=data_dir, database_url=database_url)
        result = asyncio.run(verify_audit(settings))
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    if not result.ok:
        typer.echo(
            f"audit chain BROKEN after {result.records} good record(s): {result.problem}", err=True
        )
        raise typer.Exit(1)
    typer.echo(
        f"audit chain intact: {result.records} record(s) up to {result.last_seq}, "
        f"{result.checkpoints} signed checkpoint(s)"
    )


def _get(url: str, token: str, org: str, params: dict[str, Any]) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}", "X-Organisation-Identity": org}
    query = {k: v for k, v in params.items() if v is not None}
    try:
        response = httpx.get(f"{url}/v1/audit", params=query, headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        raise _fail(f"cannot reach {url}: {exc}") from None
    if response.status_code != 200:
        raise _fail(f"the server answered {response.status_code}: {response.text}")
    body: dict[str, Any] = response.json()
    return body


def _pages(
    url: str, token: str, org: str, params: dict[str, Any], limit: int
) -> Iterator[dict[str, Any]]:
    """Up to ``limit`` records from ``GET /v1/audit``, page after page."""
    sent = 0
    page = 1
    while True:
        body = _get(url, token, org, {**params, "page": page, "limit": min(PAGE, limit - sent)})
        yield from body["items"]
        sent += len(body["items"])
        if page >= body["totalPages"] or sent >= limit:
            return
        page += 1


@app.command("list")
def list_records(
    token: Token,
    url: Url = "http://127.0.0.1:8200",
    org: Org = "default",
    action: Action = None,
    resource: Resource = None,
    since: Since = None,
    until: Until = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 50,
    output: Annotated[OutputFormat, typer.Option("--output", "-o")] = OutputFormat.TEXT,
) -> None:
    """The newest records of the organisation."""
    params = {"action": action, "resourceIdentity": resource, "since": since, "until": until}
    records = list(_pages(url, token, org, params, limit))
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
    token: Token,
    url: Url = "http://127.0.0.1:8200",
    org: Org = "default",
    output_format: Annotated[ExportFormat, typer.Option("--format")] = ExportFormat.JSONL,
    action: Action = None,
    resource: Resource = None,
    since: Since = None,
    until: Until = None,
) -> None:
    """Every matching record, oldest first, one JSON object per line (for a SIEM)."""
    params: dict[str, Any] = {
        "action": action,
        "resourceIdentity": resource,
        "since": since,
        "until": until,
        "order": "asc",
        "limit": PAGE,
        "page": 1,
    }
    # Paged by sequence number, not by offset: records pruned or added meanwhile shift no page.
    after = 0
    while True:
        records = _get(url, token, org, {**params, "afterSeq": after})["items"]
        for record in records:
            typer.echo(json.dumps(record, separators=(",", ":")))
        if len(records) < PAGE:
            return
        after = records[-1]["seq"]
