"""No key material is ever written to disk unwrapped (ARCHITECTURE §2: every stored key is wrapped
under the key one level up).

The test takes each key version's unwrapped material from the service layer (the keyring), checks
that it is the key in use (it opens a ciphertext the API made) and that it is what the stored blob
unwraps to, and then searches every byte of the data directory (database, ``-wal`` and ``-shm``)
for it.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from starlette.testclient import TestClient

from coffer.bootstrap import build_app
from coffer.config import Settings
from coffer.crypto.wrapping import Wrapper, kek_aad, key_version_aad
from coffer.service.services import Services
from tests.conftest import Kms, initialised

KEY_BYTES = {"aes128-gcm96": 16, "aes256-gcm96": 32, "chacha20-poly1305": 32}
KEYS_PER_TYPE = 3
PLAINTEXT = b"secret"


def encodings(secret: bytes) -> dict[str, bytes]:
    """The forms a careless store might write ``secret`` in."""
    return {
        "raw": secret,
        "hex": secret.hex().encode(),
        "HEX": secret.hex().upper().encode(),
        "base64": base64.b64encode(secret).rstrip(b"="),
        "base64url": base64.urlsafe_b64encode(secret).rstrip(b"="),
    }


def data_files(data_dir: Path) -> list[Path]:
    """Every file of the data directory except the root key, which is the one allowed secret."""
    return sorted(p for p in data_dir.rglob("*") if p.is_file() and p.name != "root.key")


def findings(secrets: dict[str, bytes], files: Iterable[Path]) -> list[str]:
    found = []
    for path in files:
        content = path.read_bytes()
        for label, secret in secrets.items():
            for form, needle in encodings(secret).items():
                if needle in content:
                    found.append(f"{label} ({form}) in {path.name}")
    return found


def build_services_of(client: TestClient) -> Services:
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    return services


def unwrapped_material(
    kms: Kms, services: Services, keys: dict[str, str], sealed: dict[str, str]
) -> dict[str, bytes]:
    """The organisation KEK and version 1 of every key in ``keys`` (identity → type)."""
    portal = kms.client.portal
    assert portal is not None, "the TestClient must be entered (its lifespan running)"
    call = portal.call
    wrapped_kek = call(services.store.wrapped_kek, kms.org)
    assert wrapped_kek is not None
    kek_bytes = call(services.root.unwrap, wrapped_kek, kek_aad(kms.org))
    kek = Wrapper(kek_bytes)
    secrets = {
        "organisation KEK": kek_bytes,
        "checkpoint signing key": call(services.purposes.checkpoint_seed),
    }
    for identity, key_type in keys.items():
        key = call(services.store.find_key, kms.org, "nl-01", None, identity)
        assert key is not None
        material = call(services.keyring.material, key, 1)
        assert len(material) == KEY_BYTES[key_type], (identity, key_type)
        # It is the key in use: it opens what the API sealed with it ...
        body = base64.b64decode(sealed[identity].removeprefix("thalassa:v1:"))
        cipher = ChaCha20Poly1305 if key_type == "chacha20-poly1305" else AESGCM
        assert cipher(material).decrypt(body[:12], body[12:], None) == PLAINTEXT
        # ... and it is what the stored blob unwraps to.
        blob = call(services.store.wrapped_version, identity, 1)
        assert blob is not None
        assert kek.unwrap(blob, key_version_aad(kms.org, identity, 1, key_type)) == material
        secrets[f"{key_type} key {identity} v1"] = material
    return secrets


@pytest.mark.sqlite_only
def test_data_directory_never_holds_unwrapped_key_material(settings: Settings) -> None:
    boot = initialised(settings)
    with TestClient(build_app(settings), raise_server_exceptions=False) as client:
        kms = Kms(client, settings, boot)
        keys: dict[str, str] = {}
        sealed: dict[str, str] = {}
        for key_type in KEY_BYTES:
            for n in range(KEYS_PER_TYPE):
                key = kms.create_key(f"{key_type}-{n}", key_type)
                keys[key["identity"]] = key_type
                path = f"/v1/kms/nl-01/keys/{key['identity']}"
                encrypted = kms.post(f"{path}/encrypt", {"plaintext": "c2VjcmV0"})
                assert encrypted.status_code == 200, encrypted.text
                sealed[key["identity"]] = encrypted.json()["ciphertext"]
                decrypted = kms.post(
                    f"{path}/decrypt", {"ciphertext": encrypted.json()["ciphertext"]}
                )
                assert decrypted.json()["plaintext"] == "c2VjcmV0", decrypted.text

        services: Services = build_services_of(client)
        secrets = unwrapped_material(kms, services, keys, sealed)
        secrets["root key"] = settings.root_key_path.read_bytes()
        assert len(secrets) == 3 + len(KEY_BYTES) * KEYS_PER_TYPE
        assert len(set(secrets.values())) == len(secrets), "every secret is distinct"

        # The search can fail: each secret, in each form, is found in a file that holds it.
        for label, secret in secrets.items():
            for form, needle in encodings(secret).items():
                scratch = settings.data_dir.parent / "scratch.bin"
                scratch.write_bytes(b"\x00padding" + needle + b"padding\x00")
                assert f"{label} ({form}) in scratch.bin" in findings({label: secret}, [scratch])

        live = data_files(settings.data_dir)
        assert {p.name for p in live} >= {"coffer.db", "coffer.db-wal", "coffer.db-shm"}, live
        assert findings(secrets, live) == []

    # Closing the last connection checkpoints the WAL into the database file.
    closed = data_files(settings.data_dir)
    assert "coffer.db" in {p.name for p in closed}
    assert findings(secrets, closed) == []
