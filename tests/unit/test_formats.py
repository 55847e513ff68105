from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coffer.domain import formats
from coffer.errors import InvalidCiphertext, InvalidSignatureFormat


@given(st.integers(min_value=1, max_value=2**31), st.binary(min_size=1, max_size=200))
def test_encode_then_decode_round_trips(version: int, body: bytes) -> None:
    text = formats.encode(version, body)
    assert text.startswith(f"thalassa:v{version}:")
    assert formats.decode(text, InvalidCiphertext) == formats.Versioned(version, body)


def test_encode_uses_standard_padded_base64() -> None:
    assert formats.encode(3, b"\xfb\xff") == "thalassa:v3:+/8="


@pytest.mark.parametrize(
    "text",
    [
        "",
        "thalassa:v1",
        "thalassa:v1:",
        "vault:v1:AAAA",
        "thalassa:1:AAAA",
        "thalassa:v0:AAAA",
        "thalassa:v01:AAAA",
        "thalassa:v-1:AAAA",
        "thalassa:vx:AAAA",
        "thalassa:v99999999999:AAAA",
        "thalassa:v1:AAA",  # missing padding
        "thalassa:v1:AA-_",  # URL-safe alphabet
        "thalassa:v1:AAAA ",
        " thalassa:v1:AAAA",
        "thalassa:v1:AA==AA",
        "THALASSA:v1:AAAA",
    ],
)
def test_decode_rejects_malformed_text(text: str) -> None:
    with pytest.raises(InvalidCiphertext):
        formats.decode(text, InvalidCiphertext)


def test_decode_rejects_non_canonical_base64() -> None:
    # "QR==" decodes to the same byte as "QQ==" with non-zero padding bits: accepting it would
    # make two different strings one ciphertext.
    assert base64.b64decode("QR==") == base64.b64decode("QQ==")
    formats.decode("thalassa:v1:QQ==", InvalidCiphertext)
    with pytest.raises(InvalidCiphertext):
        formats.decode("thalassa:v1:QR==", InvalidCiphertext)


def test_decode_raises_the_error_class_it_is_given() -> None:
    with pytest.raises(InvalidSignatureFormat):
        formats.decode("nonsense", InvalidSignatureFormat)


def test_versioned_repr_hides_the_body() -> None:
    assert "secret" not in repr(formats.Versioned(1, b"secret"))
