"""The PKCS #11 seal against a real HSM (SoftHSM2): the root key never leaves the token, no file
of the data directory holds what it wraps, a wrong token is refused, and a token that goes away
seals the server until it is back."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from coffer.bootstrap import build_services, migrate_seal, open_root
from coffer.config import ConfigError
from coffer.crypto.hsm import Pkcs11Token, key_label
from coffer.crypto.root import SoftwareCipher, open_blob
from coffer.crypto.wrapping import kek_aad
from coffer.errors import KeyIntegrityError
from tests.api.test_access import error
from tests.api.test_root_rotation import begin_rotation
from tests.conftest import (
    HsmToken,
    Kms,
    SoftHsm,
    initialised,
    make_settings,
    on_postgresql,
    open_kms,
)
from tests.e2e.test_no_raw_key_material import data_files, findings

KEYS = "/v1/kms/nl-01/keys"


@pytest.fixture
def token(softhsm: SoftHsm, request: pytest.FixtureRequest) -> HsmToken:
    return softhsm.new_token(f"t{abs(hash(request.node.name)) % 10**8}")


@pytest.fixture
def hsm_kms(
    tmp_path: Path, softhsm: SoftHsm, token: HsmToken, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Kms]:
    monkeypatch.setenv("COFFER_PKCS11_PIN", token.pin)
    settings = make_settings(tmp_path / "data")
    yield from open_kms(settings, initialised(settings, softhsm.seal(token)))


READ_KEY = """
import json, sys, pkcs11
from pkcs11 import Attribute, KeyType, ObjectClass
library, token_label, pin, label = sys.argv[1:]
session = pkcs11.lib(library).get_token(token_label=token_label).open(user_pin=pin)
key = session.get_key(object_class=ObjectClass.SECRET_KEY, key_type=KeyType.AES, label=label)
seen = {name: bool(key[getattr(Attribute, name)]) for name in
        ("EXTRACTABLE", "SENSITIVE", "NEVER_EXTRACTABLE", "ALWAYS_SENSITIVE", "TOKEN")}
try:
    seen["VALUE"] = key[Attribute.VALUE].hex()
except pkcs11.exceptions.PKCS11Error as exc:
    seen["VALUE"] = type(exc).__name__
print(json.dumps(seen))
"""


def test_the_root_key_is_made_inside_the_token_and_cannot_leave_it(
    hsm_kms: Kms, softhsm: SoftHsm, token: HsmToken
) -> None:
    # Another process, as any PKCS #11 application would: the token answers for itself.
    label = hsm_kms.services.root.generations[0].seal_ref
    assert label is not None
    assert label.startswith(key_label(hsm_kms.boot.installation, 1))
    done = subprocess.run(
        [sys.executable, "-c", READ_KEY, softhsm.library, token.label, token.pin, label],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert json.loads(done.stdout) == {
        "EXTRACTABLE": False,
        "SENSITIVE": True,
        "NEVER_EXTRACTABLE": True,
        "ALWAYS_SENSITIVE": True,
        "TOKEN": True,
        "VALUE": "AttributeSensitive",
    }


def test_the_getting_started_flow_works_and_no_file_holds_what_the_hsm_wraps(
    hsm_kms: Kms,
) -> None:
    key = hsm_kms.create_key("app-encryption")
    sealed = hsm_kms.post(f"{KEYS}/app-encryption/encrypt", {"plaintext": "aGVsbG8sIGttcw=="})
    assert sealed.status_code == 200, sealed.text
    hsm_kms.services.keyring.clear()  # the KEK unwrapped by the HSM again
    opened = hsm_kms.post(
        f"{KEYS}/{key['identity']}/decrypt", {"ciphertext": sealed.json()["ciphertext"]}
    )
    assert opened.json()["plaintext"] == "aGVsbG8sIGttcw=="
    assert not hsm_kms.settings.root_key_path.exists()

    services = hsm_kms.services
    blob = hsm_kms.run(services.store.wrapped_kek, hsm_kms.org)
    assert blob is not None
    kek = hsm_kms.run(services.root.unwrap, blob, kek_aad(hsm_kms.org))
    secrets = {
        "organisation KEK": kek,
        "checkpoint key": hsm_kms.run(services.purposes.checkpoint_seed),
    }
    files = sorted(p for p in hsm_kms.settings.data_dir.rglob("*") if p.is_file())
    if not on_postgresql():
        assert files, "the search has files to search (the SQLite database)"
    assert findings(secrets, files) == []
    assert data_files(hsm_kms.settings.data_dir) == files  # no root.key to leave out here


def test_a_token_that_holds_another_key_is_refused(
    hsm_kms: Kms, softhsm: SoftHsm, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = softhsm.new_token("other-token")
    monkeypatch.setenv("COFFER_PKCS11_TOKEN", other.label)
    monkeypatch.setenv("COFFER_PKCS11_PIN", other.pin)
    with pytest.raises(ConfigError, match=f"does not belong to this database \\(installation "
                                          f"{hsm_kms.boot.installation}\\)"):  # fmt: skip
        open_root(hsm_kms.settings)
    # Even a key under this installation's very label: the check value tells it apart.
    impostor = Pkcs11Token(softhsm.library, other.label, other.pin)
    impostor.open()
    impostor.generate_key(key_label(hsm_kms.boot.installation, 1))
    impostor.close()
    with pytest.raises(ConfigError, match="does not belong to this database"):
        open_root(hsm_kms.settings)


def test_a_wrong_pin_leaves_the_server_sealed_with_the_reason(
    tmp_path: Path, softhsm: SoftHsm, token: HsmToken, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COFFER_PKCS11_PIN", token.pin)
    settings = make_settings(tmp_path / "data")
    initialised(settings, softhsm.seal(token))  # no server of this process keeps it logged in
    monkeypatch.setenv("COFFER_PKCS11_PIN", "0000")
    root = open_root(settings)
    try:
        assert root.sealed
        assert "PIN" in (root.status().reason or "")
    finally:
        root.close()


def test_a_token_that_goes_away_seals_and_its_return_unseals_without_restart(
    hsm_kms: Kms, token: HsmToken
) -> None:
    hsm_kms.create_key("k")
    ciphertext = hsm_kms.post(f"{KEYS}/k/encrypt", {"plaintext": "aGk="}).json()["ciphertext"]
    away = token.remove()
    try:
        hsm_kms.run(hsm_kms.services.root.watch)
        response = error(
            hsm_kms.post(f"{KEYS}/k/decrypt", {"ciphertext": ciphertext}), 503, "sealed"
        )
        assert "PKCS #11" in response["message"]
        assert hsm_kms.client.get("/v1/sys/seal-status").json()["sealed"] is True
        hsm_kms.run(hsm_kms.services.root.watch)  # still away: stays sealed
        assert hsm_kms.client.get("/readyz").status_code == 503
    finally:
        token.restore(away)
    hsm_kms.run(hsm_kms.services.root.watch)
    assert hsm_kms.client.get("/readyz").status_code == 200
    opened = hsm_kms.post(f"{KEYS}/k/decrypt", {"ciphertext": ciphertext})
    assert opened.json()["plaintext"] == "aGk="


def test_migrate_seal_moves_a_file_installation_into_the_hsm(
    tmp_path: Path, softhsm: SoftHsm, token: HsmToken, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path / "data")
    boot = initialised(settings)
    for kms in open_kms(settings, boot):
        kms.create_key("k")
        ciphertext = kms.post(f"{KEYS}/k/encrypt", {"plaintext": "aGk="}).json()["ciphertext"]
    old_key = settings.root_key_path.read_bytes()
    monkeypatch.setenv("COFFER_PKCS11_PIN", token.pin)
    shown: list[tuple[str, ...]] = []
    asyncio.run(migrate_seal(settings, softhsm.seal(token), show=shown.append))
    assert shown == [()]  # no shares to show for an HSM
    assert not settings.root_key_path.exists()
    for kms in open_kms(settings, boot):
        assert kms.services.root.seal_type.value == "pkcs11"
        assert kms.services.root.active_generation == 2
        kms.services.keyring.clear()
        opened = kms.post(f"{KEYS}/k/decrypt", {"ciphertext": ciphertext})
        assert opened.json()["plaintext"] == "aGk="
        blob = kms.run(kms.services.store.wrapped_kek, kms.org)
        assert blob is not None
        with pytest.raises(KeyIntegrityError):
            open_blob(SoftwareCipher(old_key), blob, kek_aad(kms.org))
    with pytest.raises(ConfigError, match="already uses the pkcs11 seal"):
        asyncio.run(migrate_seal(settings, softhsm.seal(token)))


def test_two_rotations_begun_at_once_keep_the_winners_key_in_the_token(hsm_kms: Kms) -> None:
    hsm_kms.create_key("k")
    ciphertext = hsm_kms.post(f"{KEYS}/k/encrypt", {"plaintext": "aGk="}).json()["ciphertext"]
    settings = replace(hsm_kms.settings, root_rotation_grace_seconds=0.0)
    nodes = [build_services(settings) for _ in range(2)]

    async def race() -> list[Any]:
        try:
            outcomes = await asyncio.gather(*(begin_rotation(n) for n in nodes),
                                            return_exceptions=True)  # fmt: skip
            winner = next(n for n, o in zip(nodes, outcomes, strict=True)
                          if not isinstance(o, BaseException))  # fmt: skip
            assert await winner.rotation.run()
            return list(outcomes)
        finally:
            for node in nodes:
                await node.close()

    outcomes = hsm_kms.run(race)
    assert sorted(type(o).__name__ for o in outcomes) == ["Conflict", "RootStatus"], outcomes
    fresh = open_root(hsm_kms.settings)  # the winner's key, in the token, opens generation 2
    try:
        assert (fresh.sealed, fresh.active_generation) == (False, 2)
    finally:
        fresh.close()
    hsm_kms.run(hsm_kms.services.root.refresh)
    hsm_kms.services.keyring.clear()
    opened = hsm_kms.post(f"{KEYS}/k/decrypt", {"ciphertext": ciphertext})
    assert opened.json()["plaintext"] == "aGk="
