from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from coffer.domain.identity import looks_like_identity
from coffer.domain.keys import KeySpec, KeyStatus, VersionStatus, check_plaintext_size
from coffer.domain.keytypes import CAPABILITIES, KeyType, Operation, require, supports
from coffer.errors import (
    InvalidKeyVersion,
    InvalidPlaintext,
    InvalidRequest,
    KeyDisabled,
    KeyPendingDeletion,
    RotationNotAllowed,
    UnsupportedKeyType,
    UnsupportedOperation,
)

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def new_key(**spec: object):  # type: ignore[no-untyped-def]
    fields = {"name": "App Key", "key_type": "aes256-gcm96", **spec}
    return KeySpec.build(**fields).new_key(  # type: ignore[arg-type]
        organisation_identity="org-a",
        region="nl-01",
        project_identity=None,
        imported=False,
        now=NOW,
    )


def test_a_new_key_is_active_with_one_version() -> None:
    key = new_key()
    assert looks_like_identity(key.identity, "kms")
    assert key.slug == "app-key"
    assert key.status is KeyStatus.ACTIVE
    assert (key.latest_version, key.min_decryption_version) == (1, 1)
    assert [v.version for v in key.versions] == [1]
    assert key.object_version == 1
    assert key.created_at == key.updated_at == NOW


def test_identities_are_never_reused() -> None:
    assert len({new_key().identity for _ in range(200)}) == 200


@pytest.mark.parametrize(
    "spec",
    [
        {"name": ""},
        {"name": "x" * 256},
        {"name": "!!!"},
        {"description": "d" * 1025},
        {"labels": {f"k{i}": "v" for i in range(65)}},
        {"labels": {"bad key": "v"}},
        {"labels": {"": "v"}},
        {"labels": {"k": "v" * 256}},
        {"annotations": {"k" * 64: "v"}},
        {"rotation_period_days": 0},
        {"rotation_period_days": 3651},
        {"key_rotation_enabled": True},
    ],
)
def test_invalid_key_specs_are_rejected(spec: dict[str, object]) -> None:
    with pytest.raises(InvalidRequest):
        new_key(**spec)


def test_unknown_key_type_is_unsupported_key_type_and_lists_the_valid_ones() -> None:
    with pytest.raises(UnsupportedKeyType) as refused:
        new_key(key_type="aes512-gcm")
    assert "'aes512-gcm'" in refused.value.message
    assert "aes256-gcm96, chacha20-poly1305" in refused.value.message
    assert "hmac-sha512" in refused.value.message


def test_rotation_needs_a_period_when_enabled() -> None:
    key = new_key(key_rotation_enabled=True, rotation_period_days=90)
    assert key.key_rotation_enabled
    assert key.rotation_period_days == 90


@pytest.mark.parametrize(
    ("status", "error"),
    [(KeyStatus.DISABLED, KeyDisabled), (KeyStatus.PENDING_DELETION, KeyPendingDeletion)],
)
def test_only_active_keys_are_usable(status: KeyStatus, error: type[Exception]) -> None:
    new_key().ensure_usable()
    with pytest.raises(error):
        replace(new_key(), status=status).ensure_usable()


def test_version_selection_stays_between_min_and_latest() -> None:
    key = replace(new_key(), latest_version=5, min_decryption_version=3)
    assert key.version_for_use(None) == 5
    assert key.version_for_use(3) == 3
    for bad in (1, 2, 6):
        with pytest.raises(InvalidKeyVersion):
            key.version_for_use(bad)
    assert [key.can_decrypt(v) for v in range(1, 7)] == [False, False, True, True, True, False]
    assert key.version_status(2) is VersionStatus.ARCHIVED
    assert key.version_status(3) is VersionStatus.ACTIVE


@pytest.mark.parametrize("size", [0, 65_536])
def test_plaintext_size_limits(size: int) -> None:
    check_plaintext_size(1)
    check_plaintext_size(65_535)
    with pytest.raises(InvalidPlaintext):
        check_plaintext_size(size)


def test_every_key_type_has_capabilities_and_hmac_types_cannot_encrypt() -> None:
    assert set(CAPABILITIES) == set(KeyType)
    assert len(KeyType) == 13
    assert supports(KeyType.AES256_GCM96, Operation.ENCRYPT)
    assert not supports(KeyType.ED25519, Operation.ENCRYPT)
    with pytest.raises(UnsupportedOperation):
        require(KeyType.HMAC_SHA256, Operation.ENCRYPT)
    assert not supports(KeyType.HMAC, Operation.IMPORT)


def test_imported_keys_rotate_only_when_allowed() -> None:
    imported = replace(new_key(), imported=True, allow_rotation=False)
    with pytest.raises(RotationNotAllowed):
        imported.rotate(NOW)
    allowed = replace(imported, allow_rotation=True)
    assert allowed.rotate(NOW).latest_version == 2


def test_rotation_is_due_a_period_after_the_last_rotation() -> None:
    key = new_key(key_rotation_enabled=True, rotation_period_days=7)
    assert key.rotation_due_at == NOW + timedelta(days=7)
    assert not key.rotation_due(NOW + timedelta(days=6, hours=23))
    assert key.rotation_due(NOW + timedelta(days=7))
    rotated = key.rotate(NOW + timedelta(days=8))
    assert rotated.rotation_due_at == NOW + timedelta(days=15)
    assert not replace(key, status=KeyStatus.DISABLED).rotation_due(NOW + timedelta(days=9))
    assert replace(key, imported=True).rotation_due_at is None
    assert new_key().rotation_due_at is None


def test_a_transition_leaves_the_original_key_unchanged() -> None:
    key = new_key()
    later = NOW + timedelta(hours=1)
    disabled = key.disable(later)
    assert key.status is KeyStatus.ACTIVE
    assert (disabled.status, disabled.object_version, disabled.updated_at) == (
        KeyStatus.DISABLED,
        2,
        later,
    )
