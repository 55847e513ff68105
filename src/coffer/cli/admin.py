"""``coffer org|project|service-account|token|role``: administration through the running server.

The server stays the only writer, so its caches stay coherent: a revoked token or a removed
binding holds from the next request on. Commands go through ``coffer.client``: connection from
``--url``/``--token``, ``COFFER_URL``/``COFFER_TOKEN`` or a profile (see ``coffer.cli.connect``).
The interface is exact (other tools drive it): with ``--output json`` each command prints one
JSON object (lists as ``{"items": [...]}``); errors are one line on stderr and exit 1.
"""

from __future__ import annotations

from typing import Annotated

import typer

from coffer.cli.connect import (
    App,
    CaCert,
    Org,
    Output,
    OutputFormat,
    Profile,
    Region,
    Token,
    Url,
    client,
    parse_duration,
    show,
)
from coffer.client import Client
from coffer.errors import Forbidden, NotFound

__all__ = ["parse_duration"]  # also used by ``init`` and ``operator generate-admin-token``


# --- organisations ------------------------------------------------------------------------------

org_app = App(help="Organisations (platform administrators).")
_ORG_COLUMNS = ("identity", "slug", "name", "kmsEnabled", "createdAt")


@org_app.command("create")
def org_create(
    name: str,
    token: Token = None,
    url: Url = None,
    profile: Profile = None,
    ca_cert: CaCert = None,
    output: Output = OutputFormat.TEXT,
) -> None:
    """Create an organisation (KMS on), with its own key-encryption key."""
    with client(url, token, None, None, None, profile, ca_cert=ca_cert, needs_org=False) as coffer:
        show(coffer.organisations.create(name), output, _ORG_COLUMNS)


@org_app.command("list")
def org_list(
    token: Token = None,
    url: Url = None,
    profile: Profile = None,
    ca_cert: CaCert = None,
    output: Output = OutputFormat.TEXT,
) -> None:
    """Organisations you belong to (all of them, for a platform administrator)."""
    with client(url, token, None, None, None, profile, ca_cert=ca_cert, needs_org=False) as coffer:
        show(coffer.organisations.list(), output, _ORG_COLUMNS)


@org_app.command("enable-kms")
def org_enable_kms(
    org: str,
    token: Token = None,
    url: Url = None,
    profile: Profile = None,
    ca_cert: CaCert = None,
    output: Output = OutputFormat.TEXT,
) -> None:
    """Switch the KMS feature on for ORG."""
    with client(url, token, None, None, None, profile, ca_cert=ca_cert, needs_org=False) as coffer:
        show(coffer.organisations.enable_kms(org), output, _ORG_COLUMNS)


@org_app.command("disable-kms")
def org_disable_kms(
    org: str,
    token: Token = None,
    url: Url = None,
    profile: Profile = None,
    ca_cert: CaCert = None,
    output: Output = OutputFormat.TEXT,
) -> None:
    """Switch the KMS feature off for ORG: its KMS calls answer 403 kms_not_enabled."""
    with client(url, token, None, None, None, profile, ca_cert=ca_cert, needs_org=False) as coffer:
        show(coffer.organisations.disable_kms(org), output, _ORG_COLUMNS)


@org_app.command("shred")
def org_shred(
    org: str,
    confirm: Annotated[
        str, typer.Option("--confirm", help="ORG again: shredding cannot be undone.")
    ],
    token: Token = None,
    url: Url = None,
    profile: Profile = None,
    ca_cert: CaCert = None,
    output: Output = OutputFormat.TEXT,
) -> None:
    """Crypto-shred ORG: destroy its KEK, so that every key of it is gone at once and for good
    (its keys then answer 404). Backups taken before still hold the KEK, wrapped by the root key
    of then: see docs/security.md."""
    with client(url, token, None, None, None, profile, ca_cert=ca_cert, needs_org=False) as coffer:
        show(coffer.organisations.shred(org, confirm), output, (*_ORG_COLUMNS, "shreddedAt"))


# --- projects -------------------------------------------------------------------------------------

project_app = App(help="Projects inside an organisation.")
_PROJECT_COLUMNS = ("identity", "slug", "name", "createdAt")


@project_app.command("create")
def project_create(
    name: str,
    org: Org = None,
    token: Token = None,
    url: Url = None,
    profile: Profile = None,
    ca_cert: CaCert = None,
    output: Output = OutputFormat.TEXT,
) -> None:
    """Create a project in ORG."""
    with client(url, token, org, None, None, profile, ca_cert=ca_cert) as coffer:
        show(coffer.projects.create(name), output, _PROJECT_COLUMNS)


@project_app.command("list")
def project_list(
    org: Org = None,
    token: Token = None,
    url: Url = None,
    profile: Profile = None,
    ca_cert: CaCert = None,
    output: Output = OutputFormat.TEXT,
) -> None:
    """The projects of ORG."""
    with client(url, token, org, None, None, profile, ca_cert=ca_cert) as coffer:
        show(coffer.projects.list(), output, _PROJECT_COLUMNS)


# --- service accounts -----------------------------------------------------------------------------

account_app = App(help="Service accounts: the principals of applications.")
_ACCOUNT_COLUMNS = ("identity", "name", "createdAt")


@account_app.command("create")
def account_create(
    name: str,
    org: Org = None,
    token: Token = None,
    url: Url = None,
    profile: Profile = None,
    ca_cert: CaCert = None,
    output: Output = OutputFormat.TEXT,
) -> None:
    """Create a service account in ORG (names are unique in an organisation)."""
    with client(url, token, org, None, None, profile, ca_cert=ca_cert) as coffer:
        show(coffer.service_accounts.create(name), output, _ACCOUNT_COLUMNS)


@account_app.command("list")
def account_list(
    org: Org = None,
    token: Token = None,
    url: Url = None,
    profile: Profile = None,
    ca_cert: CaCert = None,
    output: Output = OutputFormat.TEXT,
) -> None:
    """The service accounts of ORG."""
    with client(url, token, org, None, None, profile, ca_cert=ca_cert) as coffer:
        show(coffer.service_accounts.list(), output, _ACCOUNT_COLUMNS)


# --- tokens ---------------------------------------------------------------------------------------

token_app = App(help="API tokens of service accounts and platform administrators.")
_TOKEN_COLUMNS = ("identity", "principalIdentity", "serviceAccountIdentity", "createdAt",
                  "expiresAt", "revokedAt")  # fmt: skip
TokenOrg = Annotated[
    str | None,
    typer.Option("--org", metavar="ORG", show_default=False,
                 help="Organisation identity or slug (default: COFFER_ORG or the profile's; "
                 "none with --admin)."),
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
        typer.Option("--service-account", metavar="SA", show_default=False,
                     help="Service account identity or name."),
    ] = None,
    admin: AdminTokens = False,
    token: Token = None,
    expires_in: Annotated[
        int | None,
        typer.Option("--expires-in", parser=parse_duration, metavar="DURATION",
                     help="Lifetime with its unit: 90d, 12h, 30m or 45s (default: until "
                     "revoked)."),
    ] = None,
    url: Url = None,
    profile: Profile = None,
    ca_cert: CaCert = None,
    output: Output = OutputFormat.TEXT,
) -> None:  # fmt: skip
    """Create a token for a service account of ORG, or (--admin) for you, the platform
    administrator; it is shown this once (Coffer keeps only a keyed digest)."""
    if admin == (service_account is not None) or (admin and org is not None):
        raise typer.BadParameter(
            "give --service-account SA (of --org ORG), or --admin for a platform "
            "administrator's token"
        )
    with client(url, token, None if admin else org, None, None, profile, ca_cert=ca_cert,
                needs_org=not admin) as coffer:  # fmt: skip
        created = coffer.tokens.create(service_account, expires_in_seconds=expires_in)
    show(created, output, ("identity", "token", "principalIdentity", "expiresAt"))


@token_app.command("revoke")
def token_revoke(
    token_identity: Annotated[str, typer.Argument(metavar="TOKEN_IDENTITY")],
    org: TokenOrg = None,
    token: Token = None,
    url: Url = None,
    profile: Profile = None,
    ca_cert: CaCert = None,
    output: Output = OutputFormat.TEXT,
) -> None:
    """Revoke a token (a service account's of ORG, or a platform administrator's): refused from
    the next request on."""
    with client(url, token, org, None, None, profile, ca_cert=ca_cert,
                needs_org=False) as coffer:  # fmt: skip
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
    profile: Profile = None,
    ca_cert: CaCert = None,
    output: Output = OutputFormat.TEXT,
) -> None:
    """The tokens of ORG's service accounts, or (--admin) the platform administrators' tokens
    (never the tokens themselves)."""
    if admin and org is not None:
        raise typer.BadParameter("give --org ORG, or --admin for the platform administrators'")
    with client(url, token, None if admin else org, None, None, profile, ca_cert=ca_cert,
                needs_org=not admin) as coffer:  # fmt: skip
        show(coffer.tokens.list(platform_admin=admin), output, _TOKEN_COLUMNS)


# --- role bindings --------------------------------------------------------------------------------

role_app = App(help="Role bindings: a built-in policy for a principal on a scope.")
_ROLE_COLUMNS = ("identity", "principalIdentity", "policy", "scope", "projectIdentity",
                 "keyIdentity")  # fmt: skip


@role_app.command("bind")
def role_bind(
    principal: Annotated[
        str,
        typer.Option("--principal", metavar="PRINCIPAL",
                     help="Service account identity or name, or a user."),
    ],
    policy: Annotated[
        str, typer.Option("--policy", metavar="POLICY", help="e.g. kms:CryptoUser.")
    ],
    org: Org = None,
    token: Token = None,
    scope_project: Annotated[
        str | None,
        typer.Option("--project", metavar="PROJECT", show_default=False,
                     help="Only this project's keys (identity or slug)."),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option("--key", metavar="KEY", show_default=False,
                     help="Only this key (identity, or slug in --region)."),
    ] = None,
    region: Region = None,
    url: Url = None,
    profile: Profile = None,
    ca_cert: CaCert = None,
    output: Output = OutputFormat.TEXT,
) -> None:  # fmt: skip
    """Grant POLICY to a principal on ORG, one of its projects, or one key."""
    with client(url, token, org, None, region, profile, ca_cert=ca_cert, key=key) as coffer:
        identity = _key_identity(coffer, key) if key is not None else None
        created = coffer.role_bindings.create(
            principal, policy, project=scope_project, key=identity
        )
    show(created, output, _ROLE_COLUMNS)


def _key_identity(coffer: Client, key: str) -> str:
    """The identity of the key ``key`` names, by identity or (in the client's region) by slug,
    as every other command takes it; bindings name keys by identity."""
    try:
        return coffer.keys.get(key).identity
    except (NotFound, Forbidden):
        return key  # not visible to this caller: the server says what it knows of it


@role_app.command("unbind")
def role_unbind(
    binding_identity: Annotated[str, typer.Argument(metavar="BINDING_IDENTITY")],
    org: Org = None,
    token: Token = None,
    url: Url = None,
    profile: Profile = None,
    ca_cert: CaCert = None,
    output: Output = OutputFormat.TEXT,
) -> None:
    """Remove a role binding: its permissions end from the next request on."""
    with client(url, token, org, None, None, profile, ca_cert=ca_cert) as coffer:
        show(coffer.role_bindings.delete(binding_identity), output, _ROLE_COLUMNS)


@role_app.command("list")
def role_list(
    org: Org = None,
    token: Token = None,
    url: Url = None,
    profile: Profile = None,
    ca_cert: CaCert = None,
    output: Output = OutputFormat.TEXT,
) -> None:
    """The role bindings of ORG."""
    with client(url, token, org, None, None, profile, ca_cert=ca_cert) as coffer:
        show(coffer.role_bindings.list(), output, _ROLE_COLUMNS)
