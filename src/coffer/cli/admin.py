"""``coffer org|project|service-account|token|role``: administration through the running server.

The server stays the only writer, so its caches stay coherent: a revoked token or a removed
binding holds from the next request on. Commands go through ``coffer.client``: connection from
``--url``/``--token``, ``COFFER_URL``/``COFFER_TOKEN`` or a profile (see ``coffer.cli.connect``).
The interface is exact (other tools drive it): with ``--output json`` each command prints one
JSON object (lists as ``{"items": [...]}``); errors are one line on stderr and exit 1.
"""

from __future__ import annotations

import re
from typing import Annotated

import typer

from coffer.cli.connect import Output, OutputFormat, Token, Url, client, show

Org = Annotated[str, typer.Option("--org", help="Organisation identity or slug.")]
_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def parse_duration(text: str) -> int:
    """Seconds in ``90d``, ``12h``, ``30m``, ``45s``, ``1d12h`` or a plain number of seconds."""
    if text.isdigit():
        return int(text)
    match = _DURATION.fullmatch(text)
    if not text or match is None:
        raise typer.BadParameter("use a duration such as 90d, 12h, 30m, 45s or 1d12h")
    days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


# --- organisations ------------------------------------------------------------------------------

org_app = typer.Typer(help="Organisations (platform administrators).", no_args_is_help=True)
_ORG_COLUMNS = ("identity", "slug", "name", "kmsEnabled", "createdAt")


@org_app.command("create")
def org_create(
    name: str, token: Token = None, url: Url = None, output: Output = OutputFormat.TEXT
) -> None:
    """Create an organisation (KMS on), with its own key-encryption key."""
    with client(url, token, None, None) as coffer:
        show(coffer.organisations.create(name), output, _ORG_COLUMNS)


@org_app.command("list")
def org_list(token: Token = None, url: Url = None, output: Output = OutputFormat.TEXT) -> None:
    """Organisations you belong to (all of them, for a platform administrator)."""
    with client(url, token, None, None) as coffer:
        show(coffer.organisations.list(), output, _ORG_COLUMNS)


@org_app.command("enable-kms")
def org_enable_kms(
    org: str, token: Token = None, url: Url = None, output: Output = OutputFormat.TEXT
) -> None:
    """Switch the KMS feature on for ORG."""
    with client(url, token, None, None) as coffer:
        show(coffer.organisations.enable_kms(org), output, _ORG_COLUMNS)


@org_app.command("disable-kms")
def org_disable_kms(
    org: str, token: Token = None, url: Url = None, output: Output = OutputFormat.TEXT
) -> None:
    """Switch the KMS feature off for ORG: its KMS calls answer 403 kms_not_enabled."""
    with client(url, token, None, None) as coffer:
        show(coffer.organisations.disable_kms(org), output, _ORG_COLUMNS)


@org_app.command("shred")
def org_shred(
    org: str,
    confirm: Annotated[
        str, typer.Option("--confirm", help="ORG again: shredding cannot be undone.")
    ],
    token: Token = None,
    url: Url = None,
    output: Output = OutputFormat.TEXT,
) -> None:
    """Crypto-shred ORG: destroy its KEK, so that every key of it is gone at once and for good
    (its keys then answer 404). Backups taken before still hold the KEK, wrapped by the root key
    of then: see docs/security.md."""
    with client(url, token, None, None) as coffer:
        show(coffer.organisations.shred(org, confirm), output, (*_ORG_COLUMNS, "shreddedAt"))


# --- projects -------------------------------------------------------------------------------------

project_app = typer.Typer(help="Projects inside an organisation.", no_args_is_help=True)
_PROJECT_COLUMNS = ("identity", "slug", "name", "createdAt")


@project_app.command("create")
def project_create(
    name: str, org: Org, token: Token = None, url: Url = None, output: Output = OutputFormat.TEXT
) -> None:
    """Create a project in ORG."""
    with client(url, token, org, None) as coffer:
        show(coffer.projects.create(name), output, _PROJECT_COLUMNS)


@project_app.command("list")
def project_list(
    org: Org, token: Token = None, url: Url = None, output: Output = OutputFormat.TEXT
) -> None:
    """The projects of ORG."""
    with client(url, token, org, None) as coffer:
        show(coffer.projects.list(), output, _PROJECT_COLUMNS)


# --- service accounts -----------------------------------------------------------------------------

account_app = typer.Typer(help="Service accounts: the principals of applications.",
                          no_args_is_help=True)  # fmt: skip
_ACCOUNT_COLUMNS = ("identity", "name", "createdAt")


@account_app.command("create")
def account_create(
    name: str, org: Org, token: Token = None, url: Url = None, output: Output = OutputFormat.TEXT
) -> None:
    """Create a service account in ORG (names are unique in an organisation)."""
    with client(url, token, org, None) as coffer:
        show(coffer.service_accounts.create(name), output, _ACCOUNT_COLUMNS)


@account_app.command("list")
def account_list(
    org: Org, token: Token = None, url: Url = None, output: Output = OutputFormat.TEXT
) -> None:
    """The service accounts of ORG."""
    with client(url, token, org, None) as coffer:
        show(coffer.service_accounts.list(), output, _ACCOUNT_COLUMNS)


# --- tokens ---------------------------------------------------------------------------------------

token_app = typer.Typer(help="API tokens of service accounts and platform administrators.",
                        no_args_is_help=True)  # fmt: skip
_TOKEN_COLUMNS = ("identity", "principalIdentity", "serviceAccountIdentity", "createdAt",
                  "expiresAt", "revokedAt")  # fmt: skip
TokenOrg = Annotated[
    str | None,
    typer.Option("--org", help="Organisation identity or slug (none with --admin).",
                 show_default=False),
]  # fmt: skip
AdminTokens = Annotated[
    bool,
    typer.Option("--admin", help="Platform administrators' tokens (no organisation)."),
]


@token_app.command("create")
def token_create(
    org: TokenOrg = None,
    service_account: Annotated[
        str | None,
        typer.Option(
            "--service-account", help="Service account identity or name.", show_default=False
        ),
    ] = None,
    admin: AdminTokens = False,
    token: Token = None,
    expires_in: Annotated[
        str | None, typer.Option("--expires-in", help="Lifetime, e.g. 90d, 12h, 30m.")
    ] = None,
    url: Url = None,
    output: Output = OutputFormat.TEXT,
) -> None:
    """Create a token for a service account of ORG, or (--admin) for you, the platform
    administrator; it is shown this once (Coffer keeps only a keyed digest)."""
    for_account = service_account is not None and org is not None
    for_admin = admin and service_account is None and org is None
    if not (for_account or for_admin):
        raise typer.BadParameter(
            "give --org ORG --service-account SA, or --admin for a platform administrator's token"
        )
    seconds = parse_duration(expires_in) if expires_in is not None else None
    with client(url, token, None if admin else org, None) as coffer:
        created = coffer.tokens.create(service_account, expires_in_seconds=seconds)
    show(created, output, ("identity", "token", "principalIdentity", "expiresAt"))


@token_app.command("revoke")
def token_revoke(
    token_identity: Annotated[str, typer.Argument(metavar="TOKEN_IDENTITY")],
    org: TokenOrg = None,
    token: Token = None,
    url: Url = None,
    output: Output = OutputFormat.TEXT,
) -> None:
    """Revoke a token (a service account's of ORG, or a platform administrator's): refused from
    the next request on."""
    with client(url, token, org, None) as coffer:
        revoked = coffer.tokens.revoke(token_identity)
    if revoked.warning:
        typer.echo(f"warning: {revoked.warning}", err=True)
    show(revoked, output, _TOKEN_COLUMNS)


@token_app.command("list")
def token_list(
    org: TokenOrg = None,
    admin: AdminTokens = False,
    token: Token = None,
    url: Url = None,
    output: Output = OutputFormat.TEXT,
) -> None:
    """The tokens of ORG's service accounts, or (--admin) the platform administrators' tokens
    (never the tokens themselves)."""
    if admin == (org is not None):
        raise typer.BadParameter("give --org ORG, or --admin for the platform administrators'")
    with client(url, token, None if admin else org, None) as coffer:
        show(coffer.tokens.list(platform_admin=admin), output, _TOKEN_COLUMNS)


# --- role bindings --------------------------------------------------------------------------------

role_app = typer.Typer(help="Role bindings: a built-in policy for a principal on a scope.",
                       no_args_is_help=True)  # fmt: skip
_ROLE_COLUMNS = ("identity", "principalIdentity", "policy", "scope", "projectIdentity",
                 "keyIdentity")  # fmt: skip


@role_app.command("bind")
def role_bind(
    org: Org,
    principal: Annotated[
        str, typer.Option("--principal", help="Service account identity or name, or a user.")
    ],
    policy: Annotated[str, typer.Option("--policy", help="e.g. kms:CryptoUser.")],
    token: Token = None,
    project: Annotated[
        str | None, typer.Option("--project", help="Only this project's keys.")
    ] = None,
    key: Annotated[str | None, typer.Option("--key", help="Only this key (identity).")] = None,
    url: Url = None,
    output: Output = OutputFormat.TEXT,
) -> None:
    """Grant POLICY to a principal on ORG, one of its projects, or one key."""
    with client(url, token, org, None) as coffer:
        created = coffer.role_bindings.create(principal, policy, project=project, key=key)
    show(created, output, _ROLE_COLUMNS)


@role_app.command("unbind")
def role_unbind(
    binding_identity: Annotated[str, typer.Argument(metavar="BINDING_IDENTITY")],
    org: Org,
    token: Token = None,
    url: Url = None,
    output: Output = OutputFormat.TEXT,
) -> None:
    """Remove a role binding: its permissions end from the next request on."""
    with client(url, token, org, None) as coffer:
        show(coffer.role_bindings.delete(binding_identity), output, _ROLE_COLUMNS)


@role_app.command("list")
def role_list(
    org: Org, token: Token = None, url: Url = None, output: Output = OutputFormat.TEXT
) -> None:
    """The role bindings of ORG."""
    with client(url, token, org, None) as coffer:
        show(coffer.role_bindings.list(), output, _ROLE_COLUMNS)
