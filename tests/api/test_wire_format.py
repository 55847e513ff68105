"""The frozen known answers of ``tests/vectors/wire/known_answers.json``: every output format
Coffer has emitted (ciphertexts, signatures, MACs, public keys of every key type) must still be
read, verified or reproduced by the server, through HTTP (spec §4)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from coffer.crypto.aead import AeadKey
from coffer.crypto.algorithms import algorithm_for
from coffer.domain.keys import KeySpec
from coffer.domain.keytypes import KeyType
from coffer.storage.changes import AddKey
from tests.conftest import SUITE_SECRETS, Kms, initialised, make_settings, open_kms

KEYS = "/v1/kms/nl-01/keys"
DOCUMENT = json.loads(
    (Path(__file__).parents[1] / "vectors" / "wire" / "known_answers.json").read_text()
)
ENTRIES: list[dict[str, Any]] = DOCUMENT["keys"]
SIGN_FIELDS = ("hashAlgorithm", "signatureAlgorithm", "marshalingAlgorithm")


def test_the_file_covers_every_key_type() -> None:
    assert sorted(e["keyType"] for e in ENTRIES) == sorted(t.value for t in KeyType)


def plant(kms: Kms, key_type: str, material: bytes) -> str:
    """Store a key whose version 1 has ``material`` (as BYOK would, for every type)."""
    SUITE_SECRETS.update({material.hex(), base64.b64encode(material).decode()})
    key = KeySpec.build(name=f"frozen-{key_type}", key_type=key_type).new_key(
        organisation_identity=kms.org,
        region="nl-01",
        project_identity=None,
        imported=True,
        now=datetime.now(UTC),
    )

    async def add() -> None:
        wrapped = await kms.services.keyring.wrap(key, 1, material)
        await kms.services.audit_store.apply_change(AddKey(key, {1: wrapped}))

    kms.run(add)
    return key.identity


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Kms, dict[str, str]]]:
    settings = make_settings(tmp_path_factory.mktemp("wire") / "data")
    for kms in open_kms(settings, initialised(settings)):
        identities = {
            e["keyType"]: plant(kms, e["keyType"], base64.b64decode(e["material"])) for e in ENTRIES
        }
        yield kms, identities


def ids(entries: list[dict[str, Any]]) -> list[str]:
    return [e["keyType"] for e in entries]


@pytest.mark.parametrize("entry", [e for e in ENTRIES if "ciphertext" in e],
                         ids=ids([e for e in ENTRIES if "ciphertext" in e]))  # fmt: skip
def test_frozen_ciphertexts_decrypt(
    planted: tuple[Kms, dict[str, str]], entry: dict[str, Any]
) -> None:
    kms, identities = planted
    response = kms.post(
        f"{KEYS}/{identities[entry['keyType']]}/decrypt", {"ciphertext": entry["ciphertext"]}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"plaintext": entry["plaintext"], "keyVersion": "1"}


@pytest.mark.parametrize("entry", [e for e in ENTRIES if "nonce" in e],
                         ids=ids([e for e in ENTRIES if "nonce" in e]))  # fmt: skip
def test_symmetric_encryption_with_the_frozen_nonce_reproduces_the_ciphertext(
    entry: dict[str, Any],
) -> None:
    handle = algorithm_for(KeyType(entry["keyType"])).load(base64.b64decode(entry["material"]))
    assert isinstance(handle, AeadKey)
    body = handle.encrypt(
        base64.b64decode(entry["plaintext"]), nonce=base64.b64decode(entry["nonce"])
    )
    assert "thalassa:v1:" + base64.b64encode(body).decode() == entry["ciphertext"]


SIGNATURES = [(e["keyType"], s) for e in ENTRIES for s in e.get("signatures", [])]


@pytest.mark.parametrize(("key_type", "frozen"), SIGNATURES,
                         ids=[f"{t}-{'-'.join(s.get(f, '') for f in SIGN_FIELDS)}"
                              for t, s in SIGNATURES])  # fmt: skip
def test_frozen_signatures_verify_and_deterministic_ones_are_reproduced(
    planted: tuple[Kms, dict[str, str]], key_type: str, frozen: dict[str, Any]
) -> None:
    kms, identities = planted
    options = {f: frozen[f] for f in SIGN_FIELDS if f in frozen}
    path = f"{KEYS}/{identities[key_type]}"
    checked = kms.post(
        f"{path}/verify", {"input": frozen["input"], "signature": frozen["signature"], **options}
    )
    assert checked.json() == {"valid": True}
    if frozen["deterministic"]:
        signed = kms.post(f"{path}/sign", {"input": frozen["input"], **options})
        assert signed.json() == {"signature": frozen["signature"], "keyVersion": "1"}


MACS = [(e["keyType"], m) for e in ENTRIES for m in e.get("hmacs", [])]


@pytest.mark.parametrize(("key_type", "frozen"), MACS,
                         ids=[f"{t}-{m['algorithm']}" for t, m in MACS])  # fmt: skip
def test_frozen_hmacs_are_reproduced_and_verify(
    planted: tuple[Kms, dict[str, str]], key_type: str, frozen: dict[str, Any]
) -> None:
    kms, identities = planted
    path = f"{KEYS}/{identities[key_type]}"
    made = kms.post(f"{path}/hmac", {"input": frozen["input"], "algorithm": frozen["algorithm"]})
    assert made.json() == {"hmac": frozen["hmac"], "keyVersion": "1"}
    body = {"input": frozen["input"], "hmac": frozen["hmac"], "hashAlgorithm": frozen["algorithm"]}
    assert kms.post(f"{path}/verify-hmac", body).json() == {"valid": True, "keyVersion": "1"}


@pytest.mark.parametrize("entry", [e for e in ENTRIES if "publicKey" in e],
                         ids=ids([e for e in ENTRIES if "publicKey" in e]))  # fmt: skip
def test_public_keys_keep_their_format(
    planted: tuple[Kms, dict[str, str]], entry: dict[str, Any]
) -> None:
    kms, identities = planted
    response = kms.get(f"{KEYS}/{identities[entry['keyType']]}/public-key")
    assert response.json() == {"keys": {"1": entry["publicKey"]}}
