"""``coffer``: set up and run a Coffer server.

The interface of ``init`` and ``serve`` is exact: other tools drive it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

import coffer
from coffer.cli import admin, audit, backup, envelope, kms, operator
from coffer.cli.connect import (
    App,
    CaCert,
    DatabaseUrl,
    DataDir,
    Org,
    Profile,
    Project,
    Region,
    Token,
    Url,
    parse_duration,
    plain_usage,
    remember_global_options,
    run,
)
from coffer.config import ConfigError, Settings, load_settings
from coffer.metrics import multiprocess_dir, remove_multiprocess_dir

app = App(help="Coffer: a self-hosted Key Management Service.")
log = logging.getLogger("coffer")


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"coffer {coffer.version()}")
        raise typer.Exit()


@app.callback()
def connection_options(
    ctx: typer.Context,
    url: Url = None, token: Token = None, org: Org = None, project: Project = None,
    region: Region = None, profile: Profile = None, ca_cert: CaCert = None,
    show_version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True,
                     help="Print the version and exit."),
    ] = False,
) -> None:  # fmt: skip
    """Coffer: a self-hosted Key Management Service.

    The connection options may come before the command (coffer --token T encrypt ...) or
    after it; after wins. init and serve do not use them."""
    given = {"url": url, "token": token, "org": org, "project": project, "region": region,
             "profile": profile, "ca_cert": ca_cert}  # fmt: skip
    remember_global_options(ctx, given)


class OutputFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class SealKind(StrEnum):
    FILE = "file"
    SHAMIR = "shamir"
    PKCS11 = "pkcs11"


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
    seal: Annotated[
        SealKind,
        typer.Option(
            help="Where the root key lives: file (development: root.key in the data "
            "directory), shamir (unseal key shares held by operators) or pkcs11 (an HSM)."
        ),
    ] = SealKind.FILE,
    key_shares: Annotated[
        int, typer.Option(help="shamir: how many unseal key shares to make.", min=1, max=255)
    ] = 5,
    key_threshold: Annotated[
        int, typer.Option(help="shamir: how many shares unseal.", min=1, max=255)
    ] = 3,
    pkcs11_library: Annotated[
        str | None,
        typer.Option(help="pkcs11: the PKCS #11 module (.so) of the HSM.", show_default=False),
    ] = None,
    pkcs11_token: Annotated[
        str | None,
        typer.Option(
            help="pkcs11: the token's label (the PIN comes from COFFER_PKCS11_PIN).",
            show_default=False,
        ),
    ] = None,
    admin_token_ttl: Annotated[
        int | None,
        typer.Option(
            parser=parse_duration,
            metavar="DURATION",
            help="Lifetime of the admin token with its unit, e.g. 30d or 12h (default: until "
            "revoked).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Create a data directory: database, root key, organisation `default` and an admin token."""
    from coffer.bootstrap import SealChoice, initialise  # the server's modules: init and serve
    from coffer.domain.seal import SealType

    lifetime = timedelta(seconds=admin_token_ttl) if admin_token_ttl is not None else None

    if seal is SealKind.PKCS11 and not (pkcs11_library and pkcs11_token):
        raise _fail("--seal pkcs11 needs --pkcs11-library and --pkcs11-token")
    if seal is SealKind.SHAMIR and key_threshold > key_shares:
        raise _fail("--key-threshold cannot be more than --key-shares")
    choice = SealChoice(SealType(seal.value), key_shares, key_threshold, pkcs11_library,
                        pkcs11_token)  # fmt: skip
    os.umask(0o077)  # the database and its journals are for the server's user alone
    try:
        result = asyncio.run(
            initialise(
                Settings(data_dir=data_dir, database_url=database_url),
                choice,
                admin_token_lifetime=lifetime,
            )
        )
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    if output is OutputFormat.JSON:
        shown: dict[str, Any] = {
            "organisation": result.organisation.identity,
            "organisationSlug": result.organisation.slug,
            "principal": result.principal.identity,
            "token": result.token,
            "tokenExpiresAt": (
                result.token_expires_at.isoformat() if result.token_expires_at else None
            ),
            "installation": result.installation,
            "seal": seal.value,
        }
        if result.unseal_keys:
            shown["unsealKeys"] = list(result.unseal_keys)
            shown["unsealThreshold"] = key_threshold
        typer.echo(json.dumps(shown))
        return
    typer.echo(f"Initialised Coffer in {data_dir} (installation {result.installation})")
    typer.echo(f"  organisation: {result.organisation.identity} (slug {result.organisation.slug})")
    typer.echo(f"  administrator: {result.principal.identity} (platform administrator)")
    typer.echo(f"  admin token:  {result.token}")
    if lifetime is not None:
        typer.echo(f"  expires:      {result.token_expires_at:%Y-%m-%d %H:%M:%S} UTC")
    typer.echo("The token is shown only this once: keep it somewhere safe.")
    if seal is SealKind.SHAMIR:
        for number, share in enumerate(result.unseal_keys, start=1):
            typer.echo(f"  unseal key {number}: {share}")
        typer.echo(
            f"The {key_shares} unseal keys are shown only this once and never stored: give each "
            f"to another person. The server starts sealed; {key_threshold} of them unseal it "
            "(coffer operator unseal)."
        )
    elif seal is SealKind.PKCS11:
        typer.echo(
            f"The root key is in PKCS #11 token {pkcs11_token!r}: `coffer serve` needs "
            "COFFER_PKCS11_PIN."
        )
    else:
        typer.echo(
            f"Back up {data_dir / 'root.key'}: without it no key can ever be decrypted. The file "
            "seal is for development: see docs/security.md for the shamir and pkcs11 seals."
        )


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
    from coffer.api.transport import GuardedHttpToolsProtocol  # the server's, loaded for it only

    return {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        "ssl_certfile": str(settings.tls_cert) if settings.tls_cert else None,
        "ssl_keyfile": str(settings.tls_key) if settings.tls_key else None,
        "log_level": settings.log_level.lower(),
        "access_log": access_log,
        "server_header": False,
        "http": GuardedHttpToolsProtocol,
        "timeout_keep_alive": settings.keep_alive_seconds,
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
    access_log: Annotated[
        bool, typer.Option(help="Log one line per request (without its query string).")
    ] = False,
    database_url: DatabaseUrl = None,
    workers: Annotated[
        int, typer.Option(envvar="COFFER_WORKERS", help="Server processes behind the port.")
    ] = 1,
    log_format: Annotated[
        LogFormat | None,
        typer.Option(
            envvar="COFFER_LOG_FORMAT",
            help="text, or json (an object a line, for log shippers). [default: text]",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve the KMS API."""
    import uvicorn

    from coffer.api.transport import TransportLimits
    from coffer.api.transport import configure as configure_transport
    from coffer.bootstrap import (
        build_app,
        check_writable,
        open_data_dir,
        redact_access_log,
        settle_garbage_collector,
    )
    from coffer.logs import configure as configure_logging
    from coffer.logs import logging_config

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
            log_format=log_format.value if log_format is not None else None,
        )
        check_writable(settings)
        root = open_data_dir(settings)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    if root.seal_type.value == "shamir" and settings.workers > 1:
        root.close()
        raise _fail(
            "the shamir seal is opened per server process: run one worker per node (several "
            "nodes on PostgreSQL scale out, each unsealed like Vault's), or use the pkcs11 seal"
        )

    os.umask(0o077)  # the database's -wal and -shm files are for the server's user alone
    configure_logging(settings.log_level, settings.log_format)
    if settings.tls_cert is None and not _is_loopback(host):
        log.warning(
            "listening on %s without TLS: tokens and plaintexts cross the network in clear; "
            "use --tls-cert and --tls-key, or a TLS-terminating proxy on the same host",
            host,
        )
    if root.seal_type.value == "file" and not _is_loopback(host):
        log.warning(
            "the file seal keeps the root key in %s, next to the database: whoever copies the "
            "data directory or a backup of it can decrypt every key. It is meant for "
            "development; in production use `coffer init --seal shamir` (unseal key shares held "
            "by operators) or `--seal pkcs11` (an HSM), or move an installation with "
            "`coffer operator migrate-seal` (docs/security.md)",
            settings.root_key_path,
        )
    options = uvicorn_options(settings, access_log=access_log)
    # uvicorn sets up the logging of each process it runs (each worker) from this.
    options["log_config"] = logging_config(settings.log_level, settings.log_format)
    redact_access_log()
    limits = configure_transport(TransportLimits.of(settings))
    log.info("limits: %d connections, %d requests in progress, headers %d bytes / %d fields",
             limits.max_connections, limits.max_concurrent_requests, limits.max_header_bytes,
             limits.max_headers)  # fmt: skip
    if settings.workers > 1:
        # Each worker builds its own app (coffer.asgi) from these settings; the schema is
        # already current (open_data_dir above), so no two workers migrate at once.
        os.environ.update(
            COFFER_DATA_DIR=str(data_dir.resolve()),
            COFFER_WORKERS=str(settings.workers),
            COFFER_CONFIG=str(config.resolve()) if config else "",
            COFFER_DATABASE_URL=database_url or "",
            COFFER_LOG_FORMAT=settings.log_format,
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
app.add_typer(operator.app, name="operator")
kms.register(app)
backup.register(app)
app.add_typer(envelope.app, name="envelope")
app.add_typer(admin.org_app, name="org")
app.add_typer(admin.project_app, name="project")
app.add_typer(admin.account_app, name="service-account")
app.add_typer(admin.token_app, name="token")
app.add_typer(admin.role_app, name="role")


def main() -> None:
    plain_usage(app)
    run(app)
