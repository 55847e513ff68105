"""``coffer operator``: the seal and the root key.

Through the running server (``--url``/``COFFER_URL``): ``seal-status``, ``unseal``, ``seal``,
``root-status`` and ``rotate-root``. Offline, on a data directory whose servers are stopped:
``migrate-seal``; on a data directory, with the root of trust: ``generate-admin-token``. An
unseal key share is read from a hidden prompt, or one line of stdin — never from the command
line, where other users of the machine and the shell's history would see it.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import sys
import time
from enum import StrEnum
from typing import Annotated, Any

import typer

from coffer.cli.connect import (
    App,
    CaCert,
    DataDir,
    Output,
    OutputFormat,
    Profile,
    Token,
    Url,
    client,
    fail,
    parse_duration,
    plain,
)
from coffer.config import ConfigError, Settings
from coffer.schemas import RootStatusResponse, SealStatusResponse

app = App(help="The seal and the root key.")

#: How often ``rotate-root`` asks how far the rotation is.
POLL_SECONDS = 0.5


class Seal(StrEnum):
    FILE = "file"
    SHAMIR = "shamir"
    PKCS11 = "pkcs11"


def read_share(number: int | None = None, of: int | None = None) -> str:
    """One unseal key share from a hidden prompt (a terminal) or one line of stdin."""
    if sys.stdin.isatty():
        which = f" {number} of {of}" if number is not None else ""
        return getpass.getpass(f"Unseal key share{which} (input hidden): ").strip()
    line = sys.stdin.readline()
    if not line.strip():
        raise fail("no unseal key share on stdin")
    return line.strip()


def read_shares(threshold: int) -> list[str]:
    """``threshold`` shares (an offline command on a Shamir-sealed installation)."""
    return [read_share(n, threshold) for n in range(1, threshold + 1)]


def _show_seal(status: SealStatusResponse, output: OutputFormat) -> None:
    if output is OutputFormat.JSON:
        typer.echo(json.dumps(plain(status)))
        return
    state = "sealed" if status.sealed else "unsealed"
    typer.echo(f"{state} ({status.type} seal, installation {status.installation})")
    if status.type == "shamir" and status.sealed:
        typer.echo(f"  unseal progress: {status.progress} of {status.threshold} share(s) given")
    if status.reason:
        typer.echo(f"  reason: {status.reason}")


def _show_root(status: RootStatusResponse, output: OutputFormat) -> None:
    if output is OutputFormat.JSON:
        typer.echo(json.dumps(plain(status)))
        return
    typer.echo(
        f"root key generation {status.active_generation} ({status.seal_type} seal, "
        f"installation {status.installation})"
    )
    if status.rotating:
        previous = ", ".join(map(str, status.previous_generations))
        typer.echo(f"  rotating: {status.remaining} blob(s) still under generation(s) {previous}")


@app.command("seal-status")
def seal_status(
    url: Url = None, profile: Profile = None, ca_cert: CaCert = None,
    output: Output = OutputFormat.TEXT,
) -> None:  # fmt: skip
    """Whether the server is sealed, and how far unsealing is (no token needed)."""
    with client(url, None, None, None, None, profile, ca_cert=ca_cert, needs_token=False,
                needs_org=False) as coffer:  # fmt: skip
        _show_seal(coffer.sys.seal_status(), output)


@app.command("unseal")
def unseal(
    url: Url = None,
    reset: Annotated[bool, typer.Option(help="Forget the shares given so far.")] = False,
    profile: Profile = None,
    ca_cert: CaCert = None,
    output: Output = OutputFormat.TEXT,
) -> None:
    """Give the server one unseal key share (shamir seal), read from a hidden prompt or stdin.
    Each share holder runs it once; at the threshold the server opens."""
    share = None if reset else read_share()
    with client(url, None, None, None, None, profile, ca_cert=ca_cert, needs_token=False,
                needs_org=False) as coffer:  # fmt: skip
        _show_seal(coffer.sys.unseal(share, reset=reset), output)


@app.command("seal")
def seal(
    token: Token = None, url: Url = None, profile: Profile = None, ca_cert: CaCert = None,
    output: Output = OutputFormat.TEXT,
) -> None:  # fmt: skip
    """Seal the server now: every key leaves its memory (platform administrators). The shamir
    seal opens again with its shares; the file and pkcs11 seals at the next start."""
    with client(url, token, None, None, None, profile, ca_cert=ca_cert,
                needs_org=False) as coffer:  # fmt: skip
        _show_seal(coffer.sys.seal(), output)


@app.command("root-status")
def root_status(
    token: Token = None, url: Url = None, profile: Profile = None, ca_cert: CaCert = None,
    output: Output = OutputFormat.TEXT,
) -> None:  # fmt: skip
    """The root key's generation, and any rotation under way (platform administrators)."""
    with client(url, token, None, None, None, profile, ca_cert=ca_cert,
                needs_org=False) as coffer:  # fmt: skip
        _show_root(coffer.sys.root_status(), output)


@app.command("rotate-root")
def rotate_root(
    token: Token = None,
    url: Url = None,
    wait: Annotated[bool, typer.Option(help="Wait until the rotation is complete.")] = True,
    profile: Profile = None,
    ca_cert: CaCert = None,
    output: Output = OutputFormat.TEXT,
) -> None:
    """Make a new root key and rewrap everything the root wraps, online (platform
    administrators). Old ciphertexts keep decrypting; the old root key is useless afterwards."""
    with client(url, token, None, None, None, profile, ca_cert=ca_cert,
                needs_org=False) as coffer:  # fmt: skip
        status = coffer.sys.rotate_root()
        if output is OutputFormat.TEXT:
            typer.echo(f"root rotation to generation {status.active_generation} begun")
        while wait and status.rotating:
            time.sleep(POLL_SECONDS)
            status = coffer.sys.root_status()
        _show_root(status, output)


@app.command("migrate-seal")
def migrate_seal(
    data_dir: DataDir,
    to: Annotated[Seal, typer.Option("--to", help="The seal to move to.")],
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            envvar="COFFER_DATABASE_URL",
            metavar="URL",
            help="postgresql://... (default: SQLite in the data directory).",
            show_default=False,
        ),
    ] = None,
    key_shares: Annotated[int, typer.Option(help="shamir: shares to make.", min=1, max=255)] = 5,
    key_threshold: Annotated[
        int, typer.Option(help="shamir: shares that unseal.", min=1, max=255)
    ] = 3,
    pkcs11_library: Annotated[
        str | None, typer.Option(help="pkcs11: the PKCS #11 module.", show_default=False)
    ] = None,
    pkcs11_token: Annotated[
        str | None,
        typer.Option(help="pkcs11: the token label (PIN: COFFER_PKCS11_PIN).", show_default=False),
    ] = None,
    output: Output = OutputFormat.TEXT,
) -> None:
    """Move the installation to another seal, offline (stop every server first): a new root key
    made by the new seal, everything rewrapped, the old root key retired."""
    from coffer.bootstrap import SealChoice
    from coffer.bootstrap import migrate_seal as migrate
    from coffer.domain.seal import SealType

    if to is Seal.PKCS11 and not (pkcs11_library and pkcs11_token):
        raise fail("--to pkcs11 needs --pkcs11-library and --pkcs11-token")
    if to is Seal.SHAMIR and key_threshold > key_shares:
        raise fail("--key-threshold cannot be more than --key-shares")
    choice = SealChoice(SealType(to.value), key_shares, key_threshold, pkcs11_library,
                        pkcs11_token)  # fmt: skip

    def show(shares: tuple[str, ...]) -> None:
        # Printed the moment the new seal is stored, before the rewrap: they are never lost.
        if output is OutputFormat.JSON:
            shown: dict[str, Any] = {"seal": to.value}
            if shares:
                shown["unsealKeys"] = list(shares)
                shown["unsealThreshold"] = key_threshold
            typer.echo(json.dumps(shown))
            return
        for number, share in enumerate(shares, start=1):
            typer.echo(f"  unseal key {number}: {share}")
        if shares:
            typer.echo(
                f"The {key_shares} unseal keys are shown only this once: {key_threshold} of "
                "them unseal each server (coffer operator unseal)."
            )

    try:
        settings = Settings(data_dir=data_dir, database_url=database_url)
        asyncio.run(migrate(settings, choice, read_shares, show))
    except ConfigError as exc:
        raise fail(str(exc)) from None
    if output is OutputFormat.TEXT:
        typer.echo(
            f"the installation now uses the {to.value} seal; the previous root key is retired"
        )


@app.command("generate-admin-token")
def generate_admin_token(
    data_dir: DataDir,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            envvar="COFFER_DATABASE_URL",
            metavar="URL",
            help="postgresql://... (default: SQLite in the data directory).",
            show_default=False,
        ),
    ] = None,
    expires_in: Annotated[
        int | None,
        typer.Option(
            "--expires-in",
            parser=parse_duration,
            metavar="DURATION",
            help="Lifetime with its unit, e.g. 30d or 12h (default: until revoked).",
            show_default=False,
        ),
    ] = None,
    output: Output = OutputFormat.TEXT,
) -> None:
    """Make a new platform administrator token on the data directory, with the root of trust
    (the root key file, the unseal key shares, or the HSM): the way back in when every
    administrator token is lost or revoked. Audited. Shown this once."""
    from datetime import timedelta

    from coffer.bootstrap import generate_admin_token as generate

    lifetime = timedelta(seconds=expires_in) if expires_in is not None else None
    try:
        settings = Settings(data_dir=data_dir, database_url=database_url)
        created = asyncio.run(generate(settings, lifetime, read_shares))
    except ConfigError as exc:
        raise fail(str(exc)) from None
    shown = {
        "identity": created.info.identity,
        "token": created.token,
        "principalIdentity": created.owner.identity,
        "expiresAt": created.info.expires_at.isoformat() if created.info.expires_at else None,
    }
    if output is OutputFormat.JSON:
        typer.echo(json.dumps(shown))
        return
    typer.echo(
        f"platform administrator {created.owner.identity}: new token {created.info.identity}"
    )
    typer.echo(f"  admin token:  {created.token}")
    if created.info.expires_at is not None:
        typer.echo(f"  expires:      {created.info.expires_at:%Y-%m-%d %H:%M:%S} UTC")
    typer.echo("The token is shown only this once: keep it somewhere safe.")
