"""``coffer``: set up and run a Coffer server.

The interface of ``init`` and ``serve`` is exact: other tools drive it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from coffer.cli import admin, audit, envelope, kms
from coffer.config import ConfigError, Settings, load_settings
from coffer.metrics import multiprocess_dir, remove_multiprocess_dir

app = typer.Typer(
    help="Coffer: a self-hosted Key Management Service.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
log = logging.getLogger("coffer")


class OutputFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="COFFER_DATABASE_URL",
        help="postgresql://user:password@host:port/db (default: SQLite in the data directory).",
        show_default=False,
    ),
]
DataDir = Annotated[
    Path,
    typer.Option("--data-dir", envvar="COFFER_DATA_DIR", help="Data directory of this Coffer."),
]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"coffer: {message}", err=True)
    return typer.Exit(1)


@app.command()
def init(
    data_dir: DataDir,
    database_url: DatabaseUrl = None,
    output: Annotated[
        OutputFormat, typer.Option("--output", "-o", help="text, or json for scripts")
    ] = OutputFormat.TEXT,
) -> None:
    """Create a data directory: database, root key, organisation `default` and an admin token."""
    from coffer.bootstrap import initialise  # the server's modules: only for init and serve

    os.umask(0o077)  # the database and its journals are for the server's user alone
    try:
        result = asyncio.run(initialise(Settings(data_dir=data_dir, database_url=database_url)))
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    if output is OutputFormat.JSON:
        typer.echo(
            json.dumps(
                {
                    "organisation": result.organisation.identity,
                    "organisationSlug": result.organisation.slug,
                    "principal": result.principal.identity,
                    "token": result.token,
                }
            )
        )
        return
    typer.echo(f"Initialised Coffer in {data_dir}")
    typer.echo(f"  organisation: {result.organisation.identity} (slug {result.organisation.slug})")
    typer.echo(f"  administrator: {result.principal.identity} (platform administrator)")
    typer.echo(f"  admin token:  {result.token}")
    typer.echo("The token is shown only this once: keep it somewhere safe.")
    typer.echo(f"Back up {data_dir / 'root.key'}: without it no key can ever be decrypted.")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def uvicorn_options(settings: Settings, *, access_log: bool = False) -> dict[str, Any]:
    """The ASGI server settings of ``coffer serve`` (the benchmark's floor server uses these
    same settings, so that it measures the same server)."""
    return {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        "http": "httptools",
        "ssl_certfile": str(settings.tls_cert) if settings.tls_cert else None,
        "ssl_keyfile": str(settings.tls_key) if settings.tls_key else None,
        "log_level": settings.log_level.lower(),
        "access_log": access_log,
        "server_header": False,
    }


@app.command()
def serve(
    data_dir: DataDir,
    host: Annotated[str, typer.Option(envvar="COFFER_HOST", help="Address to listen on.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(envvar="COFFER_PORT", help="Port to listen on.")] = 8200,
    config: Annotated[
        Path | None, typer.Option("--config", envvar="COFFER_CONFIG", help="TOML settings file.")
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="PEM certificate chain: serve HTTPS.")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="PEM private key.")] = None,
    access_log: Annotated[bool, typer.Option(help="Log one line per request.")] = False,
    database_url: DatabaseUrl = None,
    workers: Annotated[
        int, typer.Option(envvar="COFFER_WORKERS", help="Server processes behind the port.")
    ] = 1,
) -> None:
    """Serve the KMS API."""
    import uvicorn

    from coffer.bootstrap import build_app, open_data_dir, settle_garbage_collector

    try:
        settings = load_settings(
            data_dir,
            host=host,
            port=port,
            config_file=config,
            tls_cert=tls_cert,
            tls_key=tls_key,
            database_url=database_url,
            workers=workers,
        )
        root = open_data_dir(settings)
    except ConfigError as exc:
        raise _fail(str(exc)) from None

    os.umask(0o077)  # the database's -wal and -shm files are for the server's user alone
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if settings.tls_cert is None and not _is_loopback(host):
        log.warning(
            "listening on %s without TLS: tokens and plaintexts cross the network in clear; "
            "use --tls-cert and --tls-key, or a TLS-terminating proxy on the same host",
            host,
        )
    options = uvicorn_options(settings, access_log=access_log)
    if settings.workers > 1:
        # Each worker builds its own app (coffer.asgi) from these settings; the schema is
        # already current (open_data_dir above), so no two workers migrate at once.
        os.environ.update(
            COFFER_DATA_DIR=str(data_dir.resolve()),
            COFFER_WORKERS=str(settings.workers),
            COFFER_CONFIG=str(config.resolve()) if config else "",
            COFFER_DATABASE_URL=database_url or "",
        )
        # Metrics of all workers are summed from files in a directory of this run's own (a
        # previous run's files would count again), removed when the server stops.
        metrics_dir = multiprocess_dir() if settings.metrics else None
        try:
            uvicorn.run(
                "coffer.asgi:from_environment", factory=True, workers=settings.workers, **options
            )
        finally:
            if metrics_dir is not None:
                remove_multiprocess_dir(metrics_dir)
        return
    # The app with its background jobs: automatic rotation, purge, audit checkpoints and pruning.
    app = build_app(settings, root=root)
    settle_garbage_collector()
    uvicorn.Server(uvicorn.Config(app, **options)).run()


app.add_typer(audit.app, name="audit")
kms.register(app)
app.add_typer(envelope.app, name="envelope")
app.add_typer(admin.org_app, name="org")
app.add_typer(admin.project_app, name="project")
app.add_typer(admin.account_app, name="service-account")
app.add_typer(admin.token_app, name="token")
app.add_typer(admin.role_app, name="role")


def main() -> None:
    app()
