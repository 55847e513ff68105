"""Known answers and properties of Shamir's secret sharing over GF(2^8) (``coffer.crypto.shamir``).

The field arithmetic is checked against FIPS 197 (the AES standard defines this very field): the
multiplication examples of §4.2 and §4.2.1, and the S-box of §5.1.1, which is the affine map of
§5.1.1 applied to the multiplicative inverse, so any wrong inverse shows as a wrong S-box entry.
The sharing itself is checked against values worked out by hand below, then by properties.
"""

from __future__ import annotations

import itertools
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coffer.crypto.shamir import combine, gf_inverse, gf_mul, split


@pytest.mark.parametrize(
    ("a", "b", "product"),
    [
        (0x57, 0x83, 0xC1),  # FIPS 197 §4.2
        (0x57, 0x13, 0xFE),  # FIPS 197 §4.2.1
        (0x57, 0x02, 0xAE),  # FIPS 197 §4.2.1: xtime({57})
        (0x57, 0x04, 0x47),
        (0x57, 0x08, 0x8E),
        (0x57, 0x10, 0x07),
    ],
)
def test_multiplication_matches_fips_197(a: int, b: int, product: int) -> None:
    assert gf_mul(a, b) == product
    assert gf_mul(b, a) == product


def _sbox(x: int) -> int:
    """FIPS 197 §5.1.1: b'_i = b_i ^ b_{i+4} ^ b_{i+5} ^ b_{i+6} ^ b_{i+7} ^ c_i, c = {63}."""
    b = gf_inverse(x)
    out = 0
    for i in range(8):
        bit = (b >> i) ^ (b >> ((i + 4) % 8)) ^ (b >> ((i + 5) % 8))
        bit ^= (b >> ((i + 6) % 8)) ^ (b >> ((i + 7) % 8)) ^ (0x63 >> i)
        out |= (bit & 1) << i
    return out


@pytest.mark.parametrize(
    ("x", "s"),
    # FIPS 197 Figure 7 (the S-box), a row of it and some scattered entries.
    [(0x00, 0x63), (0x01, 0x7C), (0x02, 0x77), (0x03, 0x7B), (0x53, 0xED), (0x10, 0xCA),
     (0x9A, 0xB8), (0xC3, 0x2E), (0xFF, 0x16), (0xF0, 0x8C), (0x7F, 0xD2), (0xA5, 0x06)],
)  # fmt: skip
def test_inverse_reproduces_the_fips_197_s_box(x: int, s: int) -> None:
    assert _sbox(x) == s


def test_every_nonzero_element_times_its_inverse_is_one() -> None:
    assert all(gf_mul(a, gf_inverse(a)) == 1 for a in range(1, 256))


def fixed(*coefficient_rows: bytes):  # type: ignore[no-untyped-def]
    """A ``random`` for ``split`` that hands out the given coefficient rows in order."""
    rows = list(coefficient_rows)
    return lambda n: rows.pop(0)[:n]


def test_a_two_of_three_split_worked_out_by_hand() -> None:
    # One byte, secret {42}, f(x) = {42} + {57}·x. {57}·{02} = {ae} (FIPS 197 §4.2.1) and
    # {57}·{03} = {57}·{02} ^ {57} = {f9}, so f(1) = {15}, f(2) = {ec}, f(3) = {bb}.
    shares = split(b"\x42", shares=3, threshold=2, random=fixed(b"\x57"))
    assert shares == [b"\x01\x15", b"\x02\xec", b"\x03\xbb"]
    for pair in itertools.permutations(shares, 2):
        assert combine(list(pair)) == b"\x42"


def test_a_three_of_five_split_worked_out_by_hand() -> None:
    # f(x) = {01} + {02}·x + {03}·x^2. f(1) = {01}^{02}^{03} = {00};
    # f(2) = {01} ^ {04} ^ {03}·{04} = {01} ^ {04} ^ {0c} = {09}; f(3) = {01} ^ {06} ^ {03}·{05};
    # {03}·{05} = {0f}, so f(3) = {08}.
    shares = split(b"\x01", shares=5, threshold=3, random=fixed(b"\x02", b"\x03"))
    assert shares[:3] == [b"\x01\x00", b"\x02\x09", b"\x03\x08"]
    for trio in itertools.combinations(shares, 3):
        assert combine(list(trio)) == b"\x01"


@settings(max_examples=60, deadline=None)
@given(
    secret=st.binary(min_size=1, max_size=40),
    threshold=st.integers(min_value=1, max_value=6),
    extra=st.integers(min_value=0, max_value=4),
    data=st.data(),
)
def test_any_threshold_shares_in_any_order_give_the_secret(
    secret: bytes, threshold: int, extra: int, data: st.DataObject
) -> None:
    shares = split(secret, threshold + extra, threshold)
    chosen = data.draw(st.permutations(shares))[:threshold]
    assert combine(chosen) == secret


def test_fewer_shares_than_the_threshold_give_something_else() -> None:
    secret = os.urandom(32)
    shares = split(secret, 5, 3)
    # With two of three shares the interpolation is of a line through them, which passes through
    # the secret only if the random polynomial happens to be one: 2^-256 for 32 bytes.
    assert all(combine(list(pair)) != secret for pair in itertools.combinations(shares, 2))


def test_shares_look_nothing_like_the_secret() -> None:
    secret = bytes(32)
    shares = split(secret, 5, 3)
    assert all(share[1:] != secret for share in shares)
    assert len({share[1:] for share in shares}) == 5


@pytest.mark.parametrize(
    "bad",
    [[], [b"\x01\x02", b"\x01\x03"], [b"\x01\x02", b"\x02\x03\x04"], [b"\x00\x02", b"\x01\x03"]],
    ids=["none", "same-x", "lengths-differ", "x-zero"],
)
def test_combine_refuses_malformed_shares(bad: list[bytes]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message differs per case
        combine(bad)


@pytest.mark.parametrize(("shares", "threshold"), [(3, 4), (0, 0), (256, 3), (5, 0)])
def test_split_refuses_impossible_thresholds(shares: int, threshold: int) -> None:
    with pytest.raises(ValueError, match="threshold"):
        split(b"secret", shares, threshold)
