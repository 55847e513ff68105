"""OpenID Connect bearer tokens: JWTs of a configured issuer, with keys and tokens this suite
mints itself, and a JWKS from a file or served over HTTP by the test."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from coffer.config import OidcSettings
from tests.api.test_access import error
from tests.conftest import Kms, initialised, make_settings, open_kms

ISSUER = "https://login.example.test"
AUDIENCE = "coffer"
KEYS = "/v1/kms/nl-01/keys"
SIGNING_KEY = rsa.generate_private_key(65537, 2048)
OTHER_KEY = rsa.generate_private_key(65537, 2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def jwks() -> dict[str, Any]:
    rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(SIGNING_KEY.public_key()))
    ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(EC_KEY.public_key()))
    return {"keys": [{**rsa_jwk, "kid": "rsa-1", "use": "sig"}, {**ec_jwk, "kid": "ec-1"}]}


def mint(
    subject: str = "alice",
    *,
    key: Any = SIGNING_KEY,
    kid: str = "rsa-1",
    algorithm: str = "RS256",
    **claims: Any,
) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": subject, "iat": now, "exp": now + 300, **claims}
    return jwt.encode(body, key, algorithm=algorithm, headers={"kid": kid})


def unsigned(**claims: Any) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "exp": now + 300, **claims}
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(body)}."


def hmac_with_the_public_key() -> str:
    """The algorithm-confusion attack: HS256 keyed with the issuer's public key (PyJWT will not
    make such a token, so it is made by hand)."""

    def part(value: bytes) -> str:
        return base64.urlsafe_b64encode(value).rstrip(b"=").decode()

    header = part(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "exp": int(time.time()) + 300}
    signed = f"{header}.{part(json.dumps(claims).encode())}"
    pem = SIGNING_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"{signed}.{part(hmac.new(pem, signed.encode(), hashlib.sha256).digest())}"


@pytest.fixture
def kms(tmp_path: Path) -> Iterator[Kms]:
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps(jwks()))
    oidc = OidcSettings(ISSUER, AUDIENCE, jwks_file=jwks_file, project_claim="coffer_project")
    settings = make_settings(tmp_path / "data", oidc=oidc)
    yield from open_kms(settings, initialised(settings))


def as_user(kms: Kms, token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "X-Organisation-Identity": kms.org}


def bind(kms: Kms, principal: str, policy: str, **scope: str) -> None:
    body = {"principal": principal, "policy": policy, **scope}
    response = kms.post("/v1/iam/role-bindings", body)
    assert response.status_code == 201, response.text


def test_a_user_of_the_issuer_acts_with_the_bindings_of_their_subject(kms: Kms) -> None:
    kms.create_key("k")
    token = mint("alice")
    error(kms.get(KEYS, headers=as_user(kms, token)), 403, "forbidden")  # known, not a member
    bind(kms, "oidc:alice", "kms:ReadAccess")
    listed = kms.get(KEYS, headers=as_user(kms, token))
    assert listed.status_code == 200, listed.text
    assert [k["slug"] for k in listed.json()] == ["k"]
    # An EC key of the same JWKS works too; another subject has no binding.
    assert kms.get(KEYS, headers=as_user(kms, mint("alice", key=EC_KEY, kid="ec-1",
                                                    algorithm="ES256"))).status_code == 200  # fmt: skip
    error(kms.get(KEYS, headers=as_user(kms, mint("bob"))), 403, "forbidden")
    record = kms.get("/v1/audit?limit=1").json()["items"][0]
    assert record["userIdentity"].startswith("usr-")
    assert record["principalKind"] == "user"


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(lambda: mint(iss="https://evil.example.test"), id="wrong-issuer"),
        pytest.param(lambda: mint(aud="another-service"), id="wrong-audience"),
        pytest.param(lambda: mint(exp=int(time.time()) - 120), id="expired"),
        pytest.param(lambda: mint(key=OTHER_KEY), id="bad-signature"),
        pytest.param(lambda: mint(kid="unknown"), id="unknown-kid"),
        pytest.param(unsigned, id="alg-none"),
        pytest.param(hmac_with_the_public_key, id="hmac-with-the-public-key"),
        pytest.param(lambda: mint(sub=""), id="empty-subject"),
        pytest.param(lambda: mint()[:-4] + "AAAA", id="tampered"),
        pytest.param(lambda: "a.b.c", id="garbage"),
    ],
)
def test_tokens_the_issuer_did_not_sign_as_configured_are_401(kms: Kms, token: Any) -> None:
    kms.create_key("k")
    bind(kms, "oidc:alice", "kms:FullAccess")
    assert kms.get(KEYS, headers=as_user(kms, mint("alice"))).status_code == 200
    error(kms.get(KEYS, headers=as_user(kms, token())), 401, "unauthenticated")


def test_a_token_without_exp_is_401(kms: Kms) -> None:
    bind(kms, "oidc:alice", "kms:ReadAccess")
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice"}
    token = jwt.encode(body, SIGNING_KEY, algorithm="RS256", headers={"kid": "rsa-1"})
    error(kms.get(KEYS, headers=as_user(kms, token)), 401, "unauthenticated")


def test_the_project_claim_selects_the_project(kms: Kms) -> None:
    project = kms.add_project("web")
    kms.create_key("org-key")
    created = kms.post(KEYS, {"name": "web-key", "keyType": "aes256-gcm96"},
                       headers={**kms.headers, "X-Project-Identity": "web"})  # fmt: skip
    assert created.status_code == 201, created.text
    bind(kms, "oidc:carol", "kms:ReadAccess", project=project.identity)
    token = mint("carol", coffer_project="web")
    listed = kms.get(KEYS, headers=as_user(kms, token))
    assert [k["slug"] for k in listed.json()] == ["web-key"]
    other = {**as_user(kms, token), "X-Project-Identity": "another"}
    error(kms.get(KEYS, headers=other), 403, "forbidden")


def test_the_jwks_can_be_served_over_http(tmp_path: Path) -> None:
    body = json.dumps(jwks()).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
        settings = make_settings(tmp_path / "data", oidc=OidcSettings(ISSUER, AUDIENCE,
                                                                      jwks_url=url))  # fmt: skip
        for kms in open_kms(settings, initialised(settings)):
            bind(kms, "oidc:dave", "kms:ReadAccess")
            assert kms.get(KEYS, headers=as_user(kms, mint("dave"))).status_code == 200
            error(kms.get(KEYS, headers=as_user(kms, mint("dave", key=OTHER_KEY))), 401,
                  "unauthenticated")  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()


def test_without_an_issuer_configured_a_jwt_is_just_an_unknown_token(settings: Any) -> None:
    for kms in open_kms(settings, initialised(settings)):
        error(kms.get(KEYS, headers=as_user(kms, mint("alice"))), 401, "unauthenticated")


def test_a_token_limited_to_a_project_cannot_administer_the_organisation(kms: Kms) -> None:
    kms.add_project("web")
    bind(kms, "oidc:erin", "iam:Admin")
    assert kms.get("/v1/projects", headers=as_user(kms, mint("erin"))).status_code == 200
    limited = as_user(kms, mint("erin", coffer_project="web"))
    error(kms.get("/v1/projects", headers=limited), 403, "forbidden")
    error(kms.post("/v1/iam/role-bindings", {"principal": "oidc:erin", "policy": "kms:FullAccess"},
                   headers=limited), 403, "forbidden")  # fmt: skip


def test_a_token_limited_to_a_project_reads_only_that_projects_audit_records(kms: Kms) -> None:
    """Dave may read the whole organisation's log; his token for project web reads web's."""
    project = kms.add_project("web")
    org_key = kms.create_key("org-key")["identity"]
    web = {**kms.headers, "X-Project-Identity": "web"}
    assert (
        kms.post(KEYS, {"name": "web-key", "keyType": "aes256-gcm96"}, headers=web).status_code
        == 201
    )
    assert (
        kms.post(f"{KEYS}/web-key/encrypt", {"plaintext": "AA=="}, headers=web).status_code == 200
    )
    assert kms.post(f"{KEYS}/org-key/encrypt", {"plaintext": "AA=="}).status_code == 200
    bind(kms, "oidc:dave", "audit:ReadAccess")

    everything = kms.get("/v1/audit?limit=1000", headers=as_user(kms, mint("dave"))).json()
    assert {r["projectId"] for r in everything["items"]} == {None, project.identity}

    limited = as_user(kms, mint("dave", coffer_project="web"))
    answer = kms.get("/v1/audit?limit=1000", headers=limited)
    assert answer.status_code == 200, answer.text
    items = answer.json()["items"]
    assert [r["action"] for r in items] == ["kms.encrypt", "kms.key.create"]
    assert {r["projectId"] for r in items} == {project.identity}
    assert answer.json()["totalItems"] == 2
    # Filters cannot widen it, and another project is refused.
    assert kms.get(f"/v1/audit?resourceIdentity={org_key}", headers=limited).json()["items"] == []
    assert len(kms.get(f"/v1/audit?resourceIdentity={org_key}",
                       headers=as_user(kms, mint("dave"))).json()["items"]) == 2  # fmt: skip
    error(
        kms.get("/v1/audit", headers={**limited, "X-Project-Identity": "other"}), 403, "forbidden"
    )
