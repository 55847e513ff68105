"""The SDK against a real ``coffer serve``: every method of ``Client`` and of ``AsyncClient``,
and every error code a healthy server can answer, raised as its ``coffer.errors`` class."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding

from coffer import errors
from coffer.client import AsyncClient, Client
from tests.conftest import SUITE_SECRETS
from tests.e2e.conftest import RunningCoffer

pytestmark = pytest.mark.slow

NAMESPACES = {"keys", "audit", "organisations", "projects", "service_accounts", "tokens",
              "role_bindings"}  # fmt: skip


class Blocking:
    """An ``AsyncClient`` (or one of its namespaces) with its coroutines run to completion, so
    that one scenario drives both clients."""

    def __init__(self, target: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._target, self._loop = target, loop

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if name in NAMESPACES:
            return Blocking(value, self._loop)
        if name != "connection" and callable(value):
            return lambda *a, **kw: self._loop.run_until_complete(value(*a, **kw))
        return value


Factory = Callable[..., Any]


@pytest.fixture(params=["Client", "AsyncClient"])
def connect(request: pytest.FixtureRequest, coffer_server: RunningCoffer) -> Iterator[Factory]:
    """``connect(token=..., organisation=...)``: a client of the kind under test."""
    opened: list[Any] = []
    loop = asyncio.new_event_loop()

    def make(token: str | None = None, organisation: str | None = None) -> Any:
        settings = {"url": coffer_server.url, "token": token or coffer_server.token,
                    "organisation": organisation or coffer_server.organisation}  # fmt: skip
        if request.param == "Client":
            client = Client(**settings)
            opened.append(client.close)
            return client
        async_client = AsyncClient(**settings)
        opened.append(lambda: loop.run_until_complete(async_client.aclose()))
        return Blocking(async_client, loop)

    yield make
    for close in opened:
        close()
    loop.close()


def test_keys_and_their_life_cycle(connect: Factory) -> None:
    c = connect()
    run = secrets.token_hex(4)
    summary = c.summary()
    assert summary.feature_enabled is True
    assert "nl-01" in [r.slug for r in summary.regions]

    key = c.keys.create(f"sdk-{run}", "aes256-gcm96", description="for the SDK test",
                        labels={"run": run}, export_allowed=True)  # fmt: skip
    assert (key.status, key.latest_version, key.labels) == ("active", 1, {"run": run})
    assert [k.identity for k in c.keys.list(labels={"run": run})] == [key.identity]
    assert [k.identity for k in c.keys.list(labels={"run": run}, status="disabled")] == []
    assert c.keys.get(key.slug).identity == key.identity
    assert c.summary().regions[0].total_keys >= 1

    plaintext = b"\x00\xff binary \x80"
    first = c.encrypt(key.slug, plaintext)
    assert first.ciphertext.startswith("thalassa:v1:")
    opened = c.decrypt(key.identity, first.ciphertext)
    assert (opened.plaintext, opened.key_version) == (plaintext, "1")

    assert c.keys.rotate(key.slug).latest_version == 2
    assert c.encrypt(key.slug, b"again").key_version == "2"
    assert c.encrypt(key.slug, b"again", version=1).key_version == "1"
    assert c.keys.set_min_decryption_version(key.slug, 2).min_decryption_version == 2
    with pytest.raises(errors.InvalidCiphertext):
        c.decrypt(key.slug, first.ciphertext)

    rotation = c.keys.update_rotation(key.slug, key_rotation_enabled=True,
                                      rotation_period_in_days=30)  # fmt: skip
    assert (rotation.key_rotation_enabled, rotation.rotation_period_in_days) == (True, 30)
    exported = c.keys.export(key.slug, version=2)
    assert (len(exported.key_material), exported.key_version) == (32, "2")
    SUITE_SECRETS.add(exported.key_material.hex())

    assert c.keys.disable(key.slug).status == "disabled"
    with pytest.raises(errors.KeyDisabled):
        c.encrypt(key.slug, b"x")
    assert c.keys.enable(key.slug).status == "active"
    deleted = c.keys.delete(key.slug)
    assert deleted.status == "pending_deletion"
    assert deleted.deletion_scheduled_at is not None
    with pytest.raises(errors.KeyPendingDeletion):
        c.encrypt(key.slug, b"x")
    assert c.keys.cancel_deletion(key.slug).status == "active"


def test_signatures_macs_public_keys_and_byok(connect: Factory) -> None:
    c = connect()
    run = secrets.token_hex(4)
    signer = c.keys.create(f"sdk-sig-{run}", "ecdsa-p256")
    signed = c.sign(signer.slug, b"message", hash_algorithm="sha2-384")
    assert c.verify(signer.slug, b"message", signed.signature, hash_algorithm="sha2-384") is True
    assert c.verify(signer.slug, b"other", signed.signature, hash_algorithm="sha2-384") is False
    jws = c.sign(signer.slug, b"message", marshaling_algorithm="jws")
    assert c.verify(signer.slug, b"message", jws.signature, marshaling_algorithm="jws") is True

    # The public key verifies the signature outside Coffer.
    pem = c.keys.public_key(signer.slug).keys["1"]
    public = serialization.load_pem_public_key(pem.encode())
    assert isinstance(public, ec.EllipticCurvePublicKey)
    der = __import__("base64").b64decode(signed.signature.split(":", 2)[2])
    public.verify(der, b"message", ec.ECDSA(hashes.SHA384()))
    assert c.keys.public_key(signer.slug, version=1).keys.keys() == {"1"}

    mac_key = c.keys.create(f"sdk-mac-{run}", "hmac-sha512")
    mac = c.hmac(mac_key.slug, b"data")
    assert mac.hmac.startswith("thalassa:v1:")
    assert c.verify_hmac(mac_key.slug, b"data", mac.hmac) is True
    assert c.verify_hmac(mac_key.slug, b"data!", mac.hmac) is False

    # Bring your own key: wrapped as docs/byok.md says, with the region's wrapping key.
    wrapping = c.keys.wrapping_key()
    assert wrapping.algorithm == "RSA_OAEP_AES_KWP"
    rsa_public = serialization.load_pem_public_key(wrapping.public_key.encode())
    target, ephemeral = os.urandom(32), os.urandom(32)
    SUITE_SECRETS.update({target.hex(), ephemeral.hex()})
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    material = rsa_public.encrypt(ephemeral, oaep) + aes_key_wrap_with_padding(ephemeral, target)  # type: ignore[union-attr]
    imported = c.keys.create(f"sdk-byok-{run}", "aes256-gcm96", import_key_material=material,
                             export_allowed=True)  # fmt: skip
    assert imported.imported is True
    sealed = c.encrypt(imported.slug, b"byok")
    assert c.decrypt(imported.slug, sealed.ciphertext).plaintext == b"byok"
    assert c.keys.export(imported.slug).key_material == target
    with pytest.raises(errors.RotationNotAllowed):
        c.keys.rotate(imported.slug)

    page = c.audit.list(action="kms.sign", resource_identity=signer.identity, limit=10)
    assert page.total_items == 2
    assert {item.action for item in page.items} == {"kms.sign"}


def test_administration(connect: Factory, coffer_server: RunningCoffer) -> None:
    c = connect()
    run = secrets.token_hex(4)
    org = c.organisations.create(f"SDK {run}")
    assert org.kms_enabled is True
    assert org.identity in [o.identity for o in c.organisations.list()]
    assert c.organisations.disable_kms(org.identity).kms_enabled is False
    assert c.organisations.enable_kms(org.slug).kms_enabled is True

    admin = connect(organisation=org.slug)
    project = admin.projects.create("checkout")
    assert [p.identity for p in admin.projects.list()] == [project.identity]
    account = admin.service_accounts.create("checkout-api")
    assert [a.identity for a in admin.service_accounts.list()] == [account.identity]
    issued = admin.tokens.create("checkout-api", expires_in_seconds=3600)
    SUITE_SECRETS.add(issued.token)
    assert issued.identity in [t.identity for t in admin.tokens.list()]

    app = connect(token=issued.token, organisation=org.slug)
    with pytest.raises(errors.Forbidden):  # no binding in the organisation: not a member
        app.keys.list()
    binding = admin.role_bindings.create("checkout-api", "kms:ReadAccess")
    assert binding.identity in [b.identity for b in admin.role_bindings.list()]
    assert app.keys.list() == []
    assert admin.role_bindings.delete(binding.identity).identity == binding.identity
    with pytest.raises(errors.Forbidden):
        app.keys.list()
    assert admin.tokens.revoke(issued.identity).revoked_at is not None
    with pytest.raises(errors.Unauthenticated):
        app.summary()


# --- every error code a healthy server answers ----------------------------------------------


@pytest.fixture(scope="module")
def world(coffer_server: RunningCoffer) -> Iterator[dict[str, Any]]:
    """Keys in each state, and principals, for the error table."""
    with Client(coffer_server.url, coffer_server.token,
                organisation=coffer_server.organisation) as c:  # fmt: skip
        run = secrets.token_hex(4)
        w: dict[str, Any] = {"c": c, "run": run}
        w["aes"] = c.keys.create(f"err-aes-{run}", "aes256-gcm96").slug
        w["ed"] = c.keys.create(f"err-ed-{run}", "ed25519").slug
        w["disabled"] = c.keys.create(f"err-off-{run}", "aes256-gcm96").slug
        c.keys.disable(w["disabled"])
        w["pending"] = c.keys.create(f"err-del-{run}", "aes256-gcm96").slug
        c.keys.delete(w["pending"])
        off = c.organisations.create(f"Off {run}", kms_enabled=False)
        w["off_org"] = off.slug
        scoped = Client(coffer_server.url, coffer_server.token, organisation=off.slug)
        scoped.service_accounts.create("member")
        scoped.role_bindings.create("member", "kms:ReadAccess")  # a member of the organisation
        w["member"] = scoped.tokens.create("member").token
        SUITE_SECRETS.add(w["member"])
        scoped.close()
        yield w


def _other(w: dict[str, Any], server: RunningCoffer, **settings: Any) -> Any:
    client = Client(server.url, **settings)
    w.setdefault("opened", []).append(client)
    return client


ERROR_CASES: dict[str, Callable[[dict[str, Any], RunningCoffer], Any]] = {
    "unauthenticated": lambda w, s: _other(w, s, token="not-a-token", organisation="x").summary(),
    "organisation_required": lambda w, s: _other(w, s, token=s.token).keys.list(),
    # not a member of that organisation
    "forbidden": lambda w, s: _other(w, s, token=s.token, organisation=w["off_org"]).keys.list(),
    "kms_not_enabled": lambda w, s: _other(w, s, token=w["member"], organisation=w["off_org"]).keys.list(),
    "not_found": lambda w, s: w["c"].organisations.enable_kms("no-such-organisation"),
    "region_not_found": lambda w, s: w["c"].keys.list(region="zz-99"),
    "key_not_found": lambda w, s: w["c"].keys.get("no-such-key"),
    "invalid_request": lambda w, s: w["c"].keys.create("", "aes256-gcm96"),
    "request_too_large": lambda w, s: w["c"].encrypt(w["aes"], b"x" * 2_000_000),
    "unsupported_key_type": lambda w, s: w["c"].keys.create(f"des-{w['run']}", "des"),
    "unsupported_operation": lambda w, s: w["c"].sign(w["aes"], b"x"),
    "invalid_plaintext": lambda w, s: w["c"].encrypt(w["aes"], b""),
    "invalid_ciphertext": lambda w, s: w["c"].decrypt(w["aes"], "thalassa:v1:AAAA"),
    "invalid_signature_format": lambda w, s: w["c"].verify(w["ed"], b"x", "not a signature"),
    "invalid_key_version": lambda w, s: w["c"].encrypt(w["aes"], b"x", version=99),
    "invalid_key_material": lambda w, s: w["c"].keys.create(
        f"bad-{w['run']}", "aes256-gcm96", import_key_material=b"junk" * 200),
    "key_disabled": lambda w, s: w["c"].encrypt(w["disabled"], b"x"),
    "key_pending_deletion": lambda w, s: w["c"].encrypt(w["pending"], b"x"),
    "key_active": lambda w, s: w["c"].keys.cancel_deletion(w["aes"]),
    "export_not_allowed": lambda w, s: w["c"].keys.export(w["aes"]),
    "conflict": lambda w, s: w["c"].keys.create(f"err-aes-{w['run']}", "aes256-gcm96"),
}  # fmt: skip


@pytest.mark.parametrize("code", sorted(ERROR_CASES))
def test_each_error_code_raises_its_class(
    code: str, world: dict[str, Any], coffer_server: RunningCoffer
) -> None:
    with pytest.raises(errors.CofferError) as caught:
        ERROR_CASES[code](world, coffer_server)
    assert caught.value.code == code
    assert type(caught.value) is errors.error_class_for_code(code)
    assert caught.value.request_id  # the server's, to quote in a support request
    for client in world.pop("opened", []):
        client.close()


def test_an_unreachable_server_is_unavailable_after_the_retries() -> None:
    client = Client("http://127.0.0.1:9", "t", organisation="o", retries=1, backoff=0.01)
    with client, pytest.raises(errors.Unavailable, match="cannot reach"):
        client.summary()
