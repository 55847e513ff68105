"""The key hierarchy of ARCHITECTURE §2: root key → organisation KEK → key version material."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from sqlalchemy import select, update

from coffer.crypto.root import RootKeyError, SoftwareCipher, read_key_file, write_key_file
from coffer.crypto.wrapping import Wrapper, kek_aad, key_version_aad
from coffer.errors import KeyIntegrityError
from coffer.storage import schema
from tests.conftest import Kms, sync_engine

ROW = ("org-a", "kms-a", 1, "aes256-gcm96")


def test_wrap_then_unwrap_returns_the_material() -> None:
    wrapper = Wrapper(os.urandom(32))
    blob = wrapper.wrap(b"material", key_version_aad(*ROW))
    assert b"material" not in blob
    assert wrapper.unwrap(blob, key_version_aad(*ROW)) == b"material"


@pytest.mark.parametrize(
    "other_row",
    [
        ("org-b", "kms-a", 1, "aes256-gcm96"),
        ("org-a", "kms-b", 1, "aes256-gcm96"),
        ("org-a", "kms-a", 2, "aes256-gcm96"),
        ("org-a", "kms-a", 1, "aes128-gcm96"),
    ],
)
def test_a_blob_moved_to_another_row_does_not_unwrap(other_row: tuple[str, str, int, str]) -> None:
    wrapper = Wrapper(os.urandom(32))
    blob = wrapper.wrap(b"material", key_version_aad(*ROW))
    with pytest.raises(KeyIntegrityError):
        wrapper.unwrap(blob, key_version_aad(*other_row))


def test_a_kek_of_one_organisation_does_not_unwrap_as_another() -> None:
    root = Wrapper(os.urandom(32))
    blob = root.wrap(os.urandom(32), kek_aad("org-a"))
    with pytest.raises(KeyIntegrityError):
        root.unwrap(blob, kek_aad("org-b"))


def test_a_flipped_bit_or_another_wrapping_key_is_detected() -> None:
    wrapper = Wrapper(os.urandom(32))
    blob = bytearray(wrapper.wrap(b"material", b"aad"))
    blob[-1] ^= 1
    with pytest.raises(KeyIntegrityError):
        wrapper.unwrap(bytes(blob), b"aad")
    with pytest.raises(KeyIntegrityError):
        Wrapper(os.urandom(32)).unwrap(wrapper.wrap(b"material", b"aad"), b"aad")


def test_root_key_file_is_written_whole_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "root.key"
    key = os.urandom(32)
    write_key_file(path, key, exclusive=True)
    assert read_key_file(path) == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["root.key"]  # no .part left behind
    with pytest.raises(FileExistsError):
        write_key_file(path, os.urandom(32), exclusive=True)
    assert read_key_file(path) == key


def test_root_key_of_the_wrong_size_or_missing_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RootKeyError):
        read_key_file(tmp_path / "missing.key")
    short = tmp_path / "short.key"
    short.write_bytes(b"x" * 31)
    with pytest.raises(RootKeyError):
        read_key_file(short)


def test_repr_of_key_holders_shows_no_material() -> None:
    material = os.urandom(32)
    assert material.hex() not in repr(SoftwareCipher(material))
    assert "redacted" in repr(SoftwareCipher(material))
    assert "redacted" in repr(Wrapper(material))


def test_swapping_wrapped_material_between_stored_keys_fails_closed(kms: Kms) -> None:
    first = kms.create_key("first")
    second = kms.create_key("second")
    ciphertext = kms.post("/v1/kms/nl-01/keys/first/encrypt", {"plaintext": "c2VjcmV0"}).json()[
        "ciphertext"
    ]

    engine = sync_engine(kms.settings)
    versions = schema.key_versions
    with engine.begin() as conn:
        blob_of_second = conn.scalar(
            select(versions.c.wrapped_material).where(versions.c.key_identity == second["identity"])
        )
        conn.execute(
            update(versions)
            .where(versions.c.key_identity == first["identity"])
            .values(wrapped_material=blob_of_second)
        )
    engine.dispose()

    # A fresh keyring (as after a restart) must refuse the moved blob instead of using it.
    services = kms.client.app.state.services  # type: ignore[attr-defined]
    services.keyring._handles.clear()
    response = kms.post("/v1/kms/nl-01/keys/first/decrypt", {"ciphertext": ciphertext})
    assert response.status_code == 503
    assert response.json()["code"] == "integrity"
    assert "material" not in response.text
