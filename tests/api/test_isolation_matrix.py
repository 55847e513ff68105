"""The isolation matrix: every KMS endpoint of spec §5 against every kind of caller.

Each cell asserts the exact status and error ``code`` that spec §1.1 (order of checks) and §7
(verbs and built-in policies) give. The expectations are written down here, from the spec text,
independently of ``coffer.domain.permissions``: a wrong entry in the server's policy table makes
cells fail.

The app is shared by the module (``module_kms``); every cell makes its own key (and, where the
scenario needs one, its own project and principal), so each cell's answer depends on nothing
another cell did.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from coffer.domain.permissions import ScopeKind
from tests.api.test_access import error
from tests.conftest import SUITE_SECRETS, Kms

REGION = "nl-01"
KEYS = f"/v1/kms/{REGION}/keys"
PLAINTEXT = base64.b64encode(b"isolation matrix message").decode()
UNKNOWN_PROJECT = "prj-matrixdoesnotexist0"

# --- what the spec grants (§7), written from the spec text ----------------------------------

# The fine-grained actions of spec §7 (one per endpoint of §5).
LIST, READ, CREATE = "list", "read", "create"
ENCRYPT, DECRYPT, SIGN, VERIFY, HMAC, VERIFY_HMAC = (
    "encrypt", "decrypt", "sign", "verify", "hmac", "verify-hmac"
)  # fmt: skip
ROTATE, ROTATION_SETTINGS, EXPORT = "rotate", "rotation-settings", "export"
DISABLE, ENABLE, DELETE, CANCEL_DELETION = "disable", "enable", "delete", "cancel-deletion"

CRYPTO = frozenset({ENCRYPT, DECRYPT, SIGN, VERIFY, HMAC, VERIFY_HMAC})
EVERYTHING = frozenset(
    {LIST, READ, CREATE, ROTATE, ROTATION_SETTINGS, EXPORT, DISABLE, ENABLE, DELETE,
     CANCEL_DELETION} | CRYPTO
)  # fmt: skip

#: Spec §7 "Built-in policies": what each one grants.
SPEC_POLICIES: dict[str, frozenset[str]] = {
    # "everything on kms_key"
    "kms:FullAccess": EVERYTHING,
    # "list, read (auditors, reviewers): no crypto, no lifecycle"
    "kms:ReadAccess": frozenset({LIST, READ}),
    # "create, read, list, rotate, rotation settings, disable, enable, delete, cancel-deletion —
    # no crypto, no export"
    "kms:KeyAdministrator": frozenset(
        {CREATE, READ, LIST, ROTATE, ROTATION_SETTINGS, DISABLE, ENABLE, DELETE, CANCEL_DELETION}
    ),
    # "that one action (plus read of the key)"
    "kms:Encrypt": frozenset({ENCRYPT, READ}),
    "kms:Decrypt": frozenset({DECRYPT, READ}),
    "kms:Sign": frozenset({SIGN, READ}),
    "kms:Verify": frozenset({VERIFY, READ}),
    "kms:Hmac": frozenset({HMAC, READ}),
    "kms:VerifyHmac": frozenset({VERIFY_HMAC, READ}),
    # "encrypt, decrypt, sign, verify, hmac, verify-hmac (applications)", plus read of the key
    "kms:CryptoUser": CRYPTO | {READ},
    # "read the audit log of the organisation": nothing on kms_key
    "audit:ReadAccess": frozenset(),
}

# --- the rows: spec §5 ------------------------------------------------------------------------

_names = itertools.count(1)


def unique(prefix: str) -> str:
    return f"m{next(_names)}-{prefix}"


def admin_call(kms: Kms, path: str, body: Any = None, method: str = "POST") -> Any:
    response = kms.client.request(method, path, json=body, headers=kms.headers)
    assert response.status_code == 200, response.text
    return response.json()


def admin_output(kms: Kms, key: dict[str, Any], action: str, field_name: str) -> str:
    """A ciphertext, signature or MAC made by the administrator with ``key``."""
    body = {"plaintext": PLAINTEXT} if action == "encrypt" else {"input": PLAINTEXT}
    response = kms.post(f"{KEYS}/{key['identity']}/{action}", body)
    assert response.status_code == 200, response.text
    made: str = response.json()[field_name]
    SUITE_SECRETS.add(made)
    return made


@dataclass(frozen=True)
class Endpoint:
    name: str
    method: str
    path: str  # ``{key}`` is the cell's key identity
    level: str  # "summary", "collection" or "key"
    action: str | None
    key_type: str = "aes256-gcm96"
    success: int = 200
    body: Callable[[Kms, dict[str, Any]], Any] | None = None
    #: Brings the key into the state the operation needs to succeed (as the administrator).
    prepare: Callable[[Kms, dict[str, Any]], None] | None = None
    #: Checks the body of a successful answer.
    check: Callable[[dict[str, Any], Any], bool] | None = None

    def __str__(self) -> str:
        return self.name


def _same_key(key: dict[str, Any], body: Any) -> bool:
    return bool(body["identity"] == key["identity"])


def _valid(key: dict[str, Any], body: Any) -> bool:
    return body["valid"] is True


KEY = f"{KEYS}/{{key}}"

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("summary", "GET", "/v1/kms/summary", "summary", None),
    Endpoint("list", "GET", KEYS, "collection", LIST),
    Endpoint("create", "POST", KEYS, "collection", CREATE, success=201,
             body=lambda kms, key: {"name": unique("created"), "keyType": "aes256-gcm96"}),
    Endpoint("get", "GET", KEY, "key", READ, check=_same_key),
    Endpoint("wrapping-key", "GET", f"/v1/kms/{REGION}/wrapping-key", "collection", CREATE,
             check=lambda key, body: body["publicKey"].startswith("-----BEGIN PUBLIC KEY-----")),
    Endpoint("public-key", "GET", f"{KEY}/public-key", "key", READ, key_type="ecdsa-p256",
             check=lambda key, body: list(body["keys"]) == ["1"]),
    Endpoint("encrypt", "POST", f"{KEY}/encrypt", "key", ENCRYPT,
             body=lambda kms, key: {"plaintext": PLAINTEXT},
             check=lambda key, body: body["ciphertext"].startswith("thalassa:v1:")),
    Endpoint("decrypt", "POST", f"{KEY}/decrypt", "key", DECRYPT,
             body=lambda kms, key: {"ciphertext": admin_output(kms, key, "encrypt", "ciphertext")},
             check=lambda key, body: body["plaintext"] == PLAINTEXT),
    Endpoint("sign", "POST", f"{KEY}/sign", "key", SIGN, key_type="ecdsa-p256",
             body=lambda kms, key: {"input": PLAINTEXT},
             check=lambda key, body: body["signature"].startswith("thalassa:v1:")),
    Endpoint("verify", "POST", f"{KEY}/verify", "key", VERIFY, key_type="ecdsa-p256",
             body=lambda kms, key: {"input": PLAINTEXT,
                                    "signature": admin_output(kms, key, "sign", "signature")},
             check=_valid),
    Endpoint("hmac", "POST", f"{KEY}/hmac", "key", HMAC, key_type="hmac",
             body=lambda kms, key: {"input": PLAINTEXT},
             check=lambda key, body: body["hmac"].startswith("thalassa:v1:")),
    Endpoint("verify-hmac", "POST", f"{KEY}/verify-hmac", "key", VERIFY_HMAC, key_type="hmac",
             body=lambda kms, key: {"input": PLAINTEXT,
                                    "hmac": admin_output(kms, key, "hmac", "hmac")},
             check=_valid),
    Endpoint("rotation", "PATCH", f"{KEY}/rotation", "key", ROTATION_SETTINGS,
             body=lambda kms, key: {"keyRotationEnabled": True, "rotationPeriodInDays": 30},
             check=lambda key, body: body["rotationPeriodInDays"] == 30),
    Endpoint("rotate", "POST", f"{KEY}/rotate", "key", ROTATE,
             check=lambda key, body: body["latestVersion"] == 2),
    Endpoint("export", "POST", f"{KEY}/export", "key", EXPORT, body=lambda kms, key: {},
             check=lambda key, body: len(base64.b64decode(body["keyMaterial"])) == 32),
    Endpoint("disable", "POST", f"{KEY}/disable", "key", DISABLE,
             check=lambda key, body: body["status"] == "disabled"),
    Endpoint("enable", "POST", f"{KEY}/enable", "key", ENABLE,
             prepare=lambda kms, key: admin_call(kms, f"{KEYS}/{key['identity']}/disable"),
             check=lambda key, body: body["status"] == "active"),
    Endpoint("delete", "DELETE", KEY, "key", DELETE,
             check=lambda key, body: body["status"] == "pending_deletion"),
    Endpoint("cancel-deletion", "DELETE", f"{KEY}/cancel-deletion", "key", CANCEL_DELETION,
             prepare=lambda kms, key: admin_call(kms, f"{KEYS}/{key['identity']}", None, "DELETE"),
             check=lambda key, body: body["status"] == "active"),
)  # fmt: skip

# --- the columns: who calls -------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    #: "none", "revoked", "expired", "foreign-principal" (a member of another organisation only)
    #: or "valid"
    token: str = "valid"
    #: X-Project-Identity: "none", "foreign" (a project of another organisation), "unknown", or
    #: "fresh" (a new project of the organisation, made for the cell)
    project: str = "none"
    policy: str = "kms:FullAccess"
    #: Where the policy is bound: "organisation", "project" (the module's project, or the cell's
    #: fresh project when the scenario sends one), "other-key" (another key of the
    #: organisation) or "this-key" (the cell's key)
    scope: str = "organisation"

    def __str__(self) -> str:
        return self.name


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("no-token", token="none"),
    Scenario("revoked-token", token="revoked"),
    Scenario("expired-token", token="expired"),
    Scenario("other-organisation", token="foreign-principal"),
    Scenario("project-of-other-organisation", project="foreign"),
    Scenario("unknown-project", project="unknown"),
    Scenario("organisation-key-with-project-header", project="fresh"),
    *(Scenario(policy, policy=policy) for policy in SPEC_POLICIES),
    Scenario("project-binding-without-project-header", scope="project"),
    Scenario("project-binding-in-its-project", project="fresh", scope="project"),
    Scenario("key-binding-on-another-key", scope="other-key"),
    Scenario("key-binding-on-the-key", scope="this-key"),
    Scenario("kms:CryptoUser-on-the-key", policy="kms:CryptoUser", scope="this-key"),
)

# --- what the spec answers (§1.1) --------------------------------------------------------------


def scope_grants(scenario: Scenario) -> frozenset[str]:
    """What the caller may do on the collection of keys of the scope it acts in (the
    organisation's keys, or with X-Project-Identity that project's keys). A binding on the
    organisation covers its projects too; a project binding covers that project only."""
    policy = SPEC_POLICIES[scenario.policy]
    if scenario.scope == "organisation":
        return policy
    if scenario.scope == "project" and scenario.project == "fresh":
        return policy
    return frozenset()


def expected(endpoint: Endpoint, scenario: Scenario) -> tuple[int, str | None]:
    """(status, error code) of spec §1.1; the code is None for a success."""
    if scenario.token in ("none", "revoked", "expired"):
        return 401, "unauthenticated"  # step 1
    if scenario.token == "foreign-principal" or scenario.project in ("foreign", "unknown"):
        return 403, "forbidden"  # step 3 (an unknown project: docs/api.md "Unknown project")
    if endpoint.level == "summary":
        return 200, None  # §5.1: always 200 for a member
    assert endpoint.action is not None
    in_scope = scope_grants(scenario)
    if endpoint.level == "collection":  # step 6
        return (endpoint.success, None) if endpoint.action in in_scope else (403, "forbidden")
    # Step 7. The cell's key is organisation-scoped: with a project header it is in another
    # scope, whatever the caller's grants.
    if scenario.project == "fresh":
        return 404, "key_not_found"
    on_key = in_scope | (SPEC_POLICIES[scenario.policy] if scenario.scope == "this-key" else set())
    if not on_key:
        return 404, "key_not_found"
    if endpoint.action in on_key:
        return endpoint.success, None
    return 403, "forbidden"


# --- the callers, made once per module ---------------------------------------------------------


@dataclass
class World:
    kms: Kms
    org_tokens: dict[str, str] = field(default_factory=dict)
    project_token: str = ""
    other_key_token: str = ""
    revoked: str = ""
    expired: str = ""
    foreign_principal: str = ""
    foreign_project: str = ""

    def headers(self, token: str | None, project: str | None = None) -> dict[str, str]:
        headers = {"X-Organisation-Identity": self.kms.org}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if project is not None:
            headers["X-Project-Identity"] = project
        return headers

    def caller(self, scenario: Scenario, key: dict[str, Any]) -> tuple[dict[str, str], str | None]:
        """Headers for the scenario, and the identity of the cell's fresh project if any."""
        kms = self.kms
        project = {"none": None, "foreign": self.foreign_project, "unknown": UNKNOWN_PROJECT,
                   "fresh": None}[scenario.project]  # fmt: skip
        fresh = None
        if scenario.project == "fresh":
            fresh = project = kms.add_project(unique("project")).identity
        if scenario.token == "none":
            return self.headers(None, project), fresh
        token = {
            "revoked": self.revoked,
            "expired": self.expired,
            "foreign-principal": self.foreign_principal,
        }.get(scenario.token)
        if token is None:
            if scenario.scope == "organisation":
                token = self.org_tokens[scenario.policy]
            elif scenario.scope == "project" and fresh is not None:
                token = kms.add_principal(scenario.policy, ScopeKind.PROJECT, fresh)
            elif scenario.scope == "project":
                token = self.project_token
            elif scenario.scope == "other-key":
                token = self.other_key_token
            else:
                token = kms.add_principal(scenario.policy, ScopeKind.KEY, key["identity"])
        return self.headers(token, project), fresh


def _ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def _http_token(kms: Kms, name: str, **token_fields: Any) -> str:
    """A service account with kms:FullAccess on the organisation and a token for it, made
    through the administration API."""
    account = _ok(kms.post("/v1/iam/service-accounts", {"name": name}), 201)
    _ok(kms.post("/v1/iam/role-bindings",
                 {"principal": account["identity"], "policy": "kms:FullAccess"}), 201)  # fmt: skip
    created = _ok(kms.post("/v1/iam/tokens", {"serviceAccount": account["identity"],
                                               **token_fields}), 201)  # fmt: skip
    token: str = created["token"]
    SUITE_SECRETS.add(token)
    # Before it is revoked or expires, the token works: the scenario's 401 is its state alone.
    _ok(kms.get(KEYS, headers={**kms.headers, "Authorization": f"Bearer {token}"}))
    return token


@pytest.fixture(scope="module")
def world(module_kms: Kms) -> World:
    kms = module_kms
    found = World(kms)
    # The region's wrapping key is made (RSA-4096) on its first request: not inside a cell.
    _ok(kms.get(f"/v1/kms/{REGION}/wrapping-key"))
    found.org_tokens = {policy: kms.add_principal(policy) for policy in SPEC_POLICIES}
    found.project_token = kms.add_principal(
        "kms:FullAccess", ScopeKind.PROJECT, kms.add_project("matrix-bound").identity
    )
    other_key = kms.create_key(unique("other-key"))
    found.other_key_token = kms.add_principal("kms:FullAccess", ScopeKind.KEY,
                                              other_key["identity"])  # fmt: skip

    found.revoked = _http_token(kms, "matrix-revoked")
    tokens = _ok(kms.get("/v1/iam/tokens"))
    accounts = {a["name"]: a["identity"] for a in _ok(kms.get("/v1/iam/service-accounts"))}
    (revoked,) = [t for t in tokens if t["serviceAccountIdentity"] == accounts["matrix-revoked"]]
    _ok(kms.client.delete(f"/v1/iam/tokens/{revoked['identity']}", headers=kms.headers))

    found.expired = _http_token(kms, "matrix-expired", expiresInSeconds=60)
    kms.clock.advance(seconds=61)

    other_org = _ok(kms.post("/v1/organisations", {"name": "Matrix Elsewhere"}), 201)
    elsewhere = {**kms.headers, "X-Organisation-Identity": other_org["identity"]}
    found.foreign_project = _ok(
        kms.post("/v1/projects", {"name": "elsewhere"}, headers=elsewhere), 201
    )["identity"]
    found.foreign_principal = kms.add_principal(
        "kms:FullAccess", organisation=other_org["identity"]
    )
    # At home, the foreign principal and project work: the scenarios' 403 is isolation alone.
    home = {**elsewhere, "Authorization": f"Bearer {found.foreign_principal}"}
    _ok(kms.get(KEYS, headers=home))
    _ok(kms.get(KEYS, headers={**home, "X-Project-Identity": found.foreign_project}))
    return found


# --- the matrix --------------------------------------------------------------------------------

CELLS = [pytest.param(e, s, id=f"{e}-{s}") for e in ENDPOINTS for s in SCENARIOS]


def test_matrix_size() -> None:
    n = len(CELLS)
    assert n == len(ENDPOINTS) * len(SCENARIOS)
    assert len({cell.id for cell in CELLS}) == n
    # Every row of the endpoint table of spec §5 (1-19), every built-in policy of §7.
    assert len(ENDPOINTS) == 19
    assert {s.policy for s in SCENARIOS if s.scope == "organisation"} == set(SPEC_POLICIES)
    print(f"isolation matrix: {len(ENDPOINTS)} endpoints x {len(SCENARIOS)} scenarios = {n} cells")


def test_the_expectations_are_not_trivial() -> None:
    """Every answer of §1.1 that the matrix can give occurs in it."""
    answers = {expected(e, s) for e in ENDPOINTS for s in SCENARIOS}
    assert answers == {
        (401, "unauthenticated"), (403, "forbidden"), (404, "key_not_found"), (200, None),
        (201, None),
    }  # fmt: skip


def _send(kms: Kms, method: str, path: str, body: Any, headers: dict[str, str]) -> Any:
    if method == "POST":  # kms.post remembers plaintexts and outputs as suite secrets
        return kms.post(path, body, headers=headers)
    return kms.client.request(method, path, json=body, headers=headers)


@pytest.mark.parametrize(("endpoint", "scenario"), CELLS)
def test_cell(world: World, endpoint: Endpoint, scenario: Scenario) -> None:
    kms = world.kms
    extra = {"exportAllowed": True} if endpoint.key_type == "aes256-gcm96" else {}
    key = kms.create_key(unique(endpoint.name), endpoint.key_type, **extra)
    body = endpoint.body(kms, key) if endpoint.body is not None else None
    if endpoint.prepare is not None:
        endpoint.prepare(kms, key)
    headers, fresh_project = world.caller(scenario, key)

    response = _send(kms, endpoint.method, endpoint.path.format(key=key["identity"]), body,
                     headers)  # fmt: skip

    status, code = expected(endpoint, scenario)
    if code is not None:
        error(response, status, code)
        if status == 401:
            assert response.headers["www-authenticate"] == "Bearer"
        return
    assert response.status_code == status, response.text
    answer = response.json()
    if endpoint.check is not None:
        assert endpoint.check(key, answer), answer
    may_list = LIST in scope_grants(scenario)
    if endpoint.name == "summary":
        assert answer["featureEnabled"] is True
        counts = {r["slug"]: r["totalKeys"] for r in answer["regions"]}
        if may_list and fresh_project is None:
            assert counts[REGION] >= 1  # at least this cell's key
        else:  # no list permission, or a new project: no key of the organisation is counted
            assert set(counts.values()) == {0}, counts
    elif endpoint.name == "list":
        listed = [k["identity"] for k in answer]
        if fresh_project is None:
            assert key["identity"] in listed
        else:  # the organisation's keys are not the project's
            assert listed == []
    elif endpoint.name == "create":
        assert answer["projectId"] == fresh_project
