"""``coffer org|project|service-account|token|role``: administration through the running server.

The server stays the only writer, so its caches stay coherent: a revoked token or a removed
binding holds from the next request on. Connection from ``--url``/``--token`` or ``COFFER_URL``/
``COFFER_TOKEN``. The interface is exact (other tools drive it): with ``--output json`` each
command prints one JSON object (lists as ``{"items": [...]}``); errors are one line on stderr and
exit 1.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import httpx
import typer

from coffer.cli.connect import Output, OutputFormat, fail, show

Url = Annotated[
    str, typer.Option("--url", envvar="COFFER_URL", help="Server address.", show_default=True)
]
Token = Annotated[
    str, typer.Option("--token", envvar="COFFER_TOKEN", help="API token.", show_default=False)
]
Org = Annotated[str, typer.Option("--org", help="Organisation identity or slug.")]
DEFAULT_URL = "http://127.0.0.1:8200"
_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def _call(
    method: str,
    url: str,
    token: str,
    path: str,
    *,
    org: str | None = None,
    body: dict[str, Any] | None = None,
) -> Any:
    headers = {"Authorization": f"Bearer {token}"}
    if org is not None:
        headers["X-Organisation-Identity"] = org
    try:
        response = httpx.request(
            method, f"{url.rstrip('/')}{path}", headers=headers, json=body, timeout=30
        )
    except httpx.HTTPError as exc:
        raise fail(f"cannot reach {url}: {exc}") from None
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if response.status_code >= 400:
        detail = answer.get("message") if isinstance(answer, dict) else response.text
        code = answer.get("code") if isinstance(answer, dict) else None
        raise fail(f"{detail} ({response.status_code} {code or 'error'})")
    return answer


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
    name: str, token: Token, url: Url = DEFAULT_URL, output: Output = OutputFormat.TEXT
) -> None:
    """Create an organisation (KMS on), with its own key-encryption key."""
    created = _call("POST", url, token, "/v1/organisations", body={"name": name})
    show(created, output, _ORG_COLUMNS)


@org_app.command("list")
def org_list(token: Token, url: Url = DEFAULT_URL, output: Output = OutputFormat.TEXT) -> None:
    """Organisations you belong to (all of them, for a platform administrator)."""
    show(_call("GET", url, token, "/v1/organisations"), output, _ORG_COLUMNS)


@org_app.command("enable-kms")
def org_enable_kms(
    org: str, token: Token, url: Url = DEFAULT_URL, output: Output = OutputFormat.TEXT
) -> None:
    """Switch the KMS feature on for ORG."""
    show(_call("POST", url, token, f"/v1/organisations/{org}/enable-kms"), output, _ORG_COLUMNS)


@org_app.command("disable-kms")
def org_disable_kms(
    org: str, token: Token, url: Url = DEFAULT_URL, output: Output = OutputFormat.TEXT
) -> None:
    """Switch the KMS feature off for ORG: its KMS calls answer 403 kms_not_enabled."""
    show(_call("POST", url, token, f"/v1/organisations/{org}/disable-kms"), output, _ORG_COLUMNS)


# --- projects -------------------------------------------------------------------------------------

project_app = typer.Typer(help="Projects inside an organisation.", no_args_is_help=True)
_PROJECT_COLUMNS = ("identity", "slug", "name", "createdAt")


@project_app.command("create")
def project_create(
    name: str, org: Org, token: Token, url: Url = DEFAULT_URL, output: Output = OutputFormat.TEXT
) -> None:
    """Create a project in ORG."""
    created = _call("POST", url, token, "/v1/projects", org=org, body={"name": name})
    show(created, output, _PROJECT_COLUMNS)


@project_app.command("list")
def project_list(
    org: Org, token: Token, url: Url = DEFAULT_URL, output: Output = OutputFormat.TEXT
) -> None:
    """The projects of ORG."""
    show(_call("GET", url, token, "/v1/projects", org=org), output, _PROJECT_COLUMNS)


# --- service accounts -----------------------------------------------------------------------------

account_app = typer.Typer(help="Service accounts: the principals of applications.",
                          no_args_is_help=True)  # fmt: skip
_ACCOUNT_COLUMNS = ("identity", "name", "createdAt")


@account_app.command("create")
def account_create(
    name: str, org: Org, token: Token, url: Url = DEFAULT_URL, output: Output = OutputFormat.TEXT
) -> None:
    """Create a service account in ORG (names are unique in an organisation)."""
    created = _call("POST", url, token, "/v1/iam/service-accounts", org=org, body={"name": name})
    show(created, output, _ACCOUNT_COLUMNS)


@account_app.command("list")
def account_list(
    org: Org, token: Token, url: Url = DEFAULT_URL, output: Output = OutputFormat.TEXT
) -> None:
    """The service accounts of ORG."""
    show(_call("GET", url, token, "/v1/iam/service-accounts", org=org), output, _ACCOUNT_COLUMNS)


# --- tokens ---------------------------------------------------------------------------------------

token_app = typer.Typer(help="API tokens of service accounts.", no_args_is_help=True)
_TOKEN_COLUMNS = ("identity", "serviceAccountIdentity", "createdAt", "expiresAt", "revokedAt")


@token_app.command("create")
def token_create(
    org: Org,
    service_account: Annotated[
        str, typer.Option("--service-account", help="Service account identity or name.")
    ],
    token: Token,
    expires_in: Annotated[
        str | None, typer.Option("--expires-in", help="Lifetime, e.g. 90d, 12h, 30m.")
    ] = None,
    url: Url = DEFAULT_URL,
    output: Output = OutputFormat.TEXT,
) -> None:
    """Create a token; it is shown this once (Coffer keeps only its SHA-256 digest)."""
    body: dict[str, Any] = {"serviceAccount": service_account}
    if expires_in is not None:
        body["expiresInSeconds"] = parse_duration(expires_in)
    created = _call("POST", url, token, "/v1/iam/tokens", org=org, body=body)
    show(created, output, ("identity", "token", "serviceAccountIdentity", "expiresAt"))


@token_app.command("revoke")
def token_revoke(
    token_identity: Annotated[str, typer.Argument(metavar="TOKEN_IDENTITY")],
    org: Org,
    token: Token,
    url: Url = DEFAULT_URL,
    output: Output = OutputFormat.TEXT,
) -> None:
    """Revoke a token: refused from the next request on."""
    revoked = _call("DELETE", url, token, f"/v1/iam/tokens/{token_identity}", org=org)
    show(revoked, output, _TOKEN_COLUMNS)


@token_app.command("list")
def token_list(
    org: Org, token: Token, url: Url = DEFAULT_URL, output: Output = OutputFormat.TEXT
) -> None:
    """The tokens of ORG's service accounts (never the tokens themselves)."""
    show(_call("GET", url, token, "/v1/iam/tokens", org=org), output, _TOKEN_COLUMNS)


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
    token: Token,
    project: Annotated[
        str | None, typer.Option("--project", help="Only this project's keys.")
    ] = None,
    key: Annotated[str | None, typer.Option("--key", help="Only this key (identity).")] = None,
    url: Url = DEFAULT_URL,
    output: Output = OutputFormat.TEXT,
) -> None:
    """Grant POLICY to a principal on ORG, one of its projects, or one key."""
    body = {"principal": principal, "policy": policy, "project": project, "key": key}
    created = _call("POST", url, token, "/v1/iam/role-bindings", org=org,
                    body={k: v for k, v in body.items() if v is not None})  # fmt: skip
    show(created, output, _ROLE_COLUMNS)


@role_app.command("unbind")
def role_unbind(
    binding_identity: Annotated[str, typer.Argument(metavar="BINDING_IDENTITY")],
    org: Org,
    token: Token,
    url: Url = DEFAULT_URL,
    output: Output = OutputFormat.TEXT,
) -> None:
    """Remove a role binding: its permissions end from the next request on."""
    removed = _call("DELETE", url, token, f"/v1/iam/role-bindings/{binding_identity}", org=org)
    show(removed, output, _ROLE_COLUMNS)


@role_app.command("list")
def role_list(
    org: Org, token: Token, url: Url = DEFAULT_URL, output: Output = OutputFormat.TEXT
) -> None:
    """The role bindings of ORG."""
    show(_call("GET", url, token, "/v1/iam/role-bindings", org=org), output, _ROLE_COLUMNS)
