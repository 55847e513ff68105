"""Blobs the root key wraps name their generation, and check values tell root keys apart."""

from __future__ import annotations

import os

import pytest

from coffer.crypto.root import (
    SoftwareCipher,
    generation_of,
    make_check_value,
    open_blob,
    opens_check_value,
    seal_blob,
)
from coffer.crypto.wrapping import Wrapper, kek_aad
from coffer.errors import KeyIntegrityError

AAD = kek_aad("org-a")


def test_a_blob_names_the_generation_that_wrapped_it() -> None:
    cipher = SoftwareCipher(os.urandom(32))
    blob = seal_blob(cipher, 7, b"kek", AAD)
    assert generation_of(blob) == 7
    assert open_blob(cipher, blob, AAD) == b"kek"


def test_a_blob_claiming_another_generation_does_not_open() -> None:
    cipher = SoftwareCipher(os.urandom(32))
    blob = bytearray(seal_blob(cipher, 2, b"kek", AAD))
    blob[4] = 3  # the generation is in the associated data
    assert generation_of(bytes(blob)) == 3
    with pytest.raises(KeyIntegrityError):
        open_blob(cipher, bytes(blob), AAD)


def test_a_blob_moved_to_another_row_or_flipped_does_not_open() -> None:
    cipher = SoftwareCipher(os.urandom(32))
    blob = seal_blob(cipher, 1, b"kek", AAD)
    with pytest.raises(KeyIntegrityError):
        open_blob(cipher, blob, kek_aad("org-b"))
    flipped = bytearray(blob)
    flipped[-1] ^= 1
    with pytest.raises(KeyIntegrityError):
        open_blob(cipher, bytes(flipped), AAD)
    with pytest.raises(KeyIntegrityError):
        open_blob(SoftwareCipher(os.urandom(32)), blob, AAD)


def test_blobs_from_before_generations_are_generation_1() -> None:
    key = os.urandom(32)
    legacy = Wrapper(key).wrap(b"kek", AAD)  # the format every version before wrote
    assert generation_of(legacy) == 1
    assert open_blob(SoftwareCipher(key), legacy, AAD) == b"kek"


@pytest.mark.parametrize("blob", [b"", b"\x02\x00", b"\x03" + bytes(40), b"\x01" + bytes(10)])
def test_anything_else_is_no_blob(blob: bytes) -> None:
    with pytest.raises(KeyIntegrityError):
        generation_of(blob)


def test_a_check_value_opens_only_with_its_key_installation_and_generation() -> None:
    cipher = SoftwareCipher(os.urandom(32))
    check = make_check_value(cipher, "ins-a", 1)
    assert opens_check_value(cipher, check, "ins-a", 1)
    assert not opens_check_value(SoftwareCipher(os.urandom(32)), check, "ins-a", 1)
    assert not opens_check_value(cipher, check, "ins-b", 1)
    assert not opens_check_value(cipher, check, "ins-a", 2)
