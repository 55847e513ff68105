"""Shamir's secret sharing over GF(2^8), byte by byte (A. Shamir, "How to share a secret", 1979).

The field is the one AES uses (FIPS 197 §4.2: polynomial x^8 + x^4 + x^3 + x + 1), as in Vault's
``shamir`` package. Each byte of the secret is the constant term of its own random polynomial of
degree ``threshold - 1``; share ``i`` holds the value of every polynomial at ``x = i``. Any
``threshold`` shares give the secret back by Lagrange interpolation at ``x = 0``; fewer give no
information about it.

A share is ``x (1 byte) ‖ y (one byte per byte of the secret)``. Nothing here tells a wrong share
from a right one: the caller checks shares against digests made at split time.

No maintained Python library does this over GF(2^8) for a 32-byte secret (PyCryptodome's works in
GF(2^128) on 16-byte secrets); it is small enough to own, with known-answer tests
(``tests/unit/test_shamir.py``). Arithmetic runs without branches on secret values.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

MAX_SHARES = 255


def gf_mul(a: int, b: int) -> int:
    """``a • b`` in GF(2^8) (FIPS 197 §4.2.1: shift-and-add with reduction by {1b})."""
    product = 0
    for _ in range(8):
        product ^= -(b & 1) & a
        carry = a >> 7
        a = ((a << 1) ^ (-carry & 0x1B)) & 0xFF
        b >>= 1
    return product & 0xFF


def gf_inverse(a: int) -> int:
    """``a^-1`` in GF(2^8) as ``a^254`` (``a^255 = 1`` for every ``a ≠ 0``); ``0`` maps to 0."""
    result = 1
    power = a
    for bit in range(8):
        # 254 = 0b11111110: every bit but the lowest.
        if (254 >> bit) & 1:
            result = gf_mul(result, power)
        power = gf_mul(power, power)
    return result


def split(
    secret: bytes,
    shares: int,
    threshold: int,
    random: Callable[[int], bytes] = os.urandom,
) -> list[bytes]:
    """``shares`` shares of ``secret``, any ``threshold`` of which recover it. ``random`` is
    injectable so that known-answer tests can fix the polynomials."""
    if not secret:
        raise ValueError("the secret must not be empty")
    if not 1 <= threshold <= shares <= MAX_SHARES:
        raise ValueError(f"need 1 <= threshold <= shares <= {MAX_SHARES}")
    # coefficients[d][i]: the coefficient of x^d of byte i's polynomial (d = 0 is the secret).
    coefficients = [secret, *(random(len(secret)) for _ in range(threshold - 1))]
    made = []
    for x in range(1, shares + 1):
        y = bytearray(len(secret))
        for i in range(len(secret)):
            value = 0
            for degree in reversed(range(threshold)):  # Horner's rule
                value = gf_mul(value, x) ^ coefficients[degree][i]
            y[i] = value
        made.append(bytes([x]) + bytes(y))
    return made


def combine(shares: Sequence[bytes]) -> bytes:
    """The secret that ``shares`` (at least the threshold's number, all distinct) interpolate."""
    if not shares:
        raise ValueError("no shares")
    length = len(shares[0])
    xs = [share[0] for share in shares]
    if length < 2 or any(len(share) != length for share in shares):
        raise ValueError("shares differ in length")
    if 0 in xs or len(set(xs)) != len(xs):
        raise ValueError("shares must have distinct, non-zero x coordinates")
    # Lagrange basis at 0: l_j(0) = prod_{m != j} x_m / (x_m - x_j); minus is xor in GF(2^8).
    weights = []
    for j, xj in enumerate(xs):
        weight = 1
        for m, xm in enumerate(xs):
            if m != j:
                weight = gf_mul(weight, gf_mul(xm, gf_inverse(xm ^ xj)))
        weights.append(weight)
    secret = bytearray(length - 1)
    for share, weight in zip(shares, weights, strict=True):
        for i in range(length - 1):
            secret[i] ^= gf_mul(share[1 + i], weight)
    return bytes(secret)
