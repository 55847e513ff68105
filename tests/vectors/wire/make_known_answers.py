"""Writes ``known_answers.json`` once. The file is frozen: it pins the wire format of every output
Coffer has emitted, and a change that makes old outputs unreadable must fail its test, so this
script refuses to overwrite it.

Run from the repository root: ``.venv/bin/python tests/vectors/wire/make_known_answers.py``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from coffer.crypto.aead import AeadKey
from coffer.crypto.algorithms import algorithm_for
from coffer.domain import formats
from coffer.domain.keytypes import KeyType
from coffer.domain.signing import HashAlgorithm, SignOptions

OUT = Path(__file__).with_name("known_answers.json")
MESSAGE = b"Coffer wire format, frozen on 2026-11-28"
HASHES = ["sha2-256", "sha2-384", "sha3-512"]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def seeded(label: str, size: int) -> bytes:
    out = b""
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{label}/{counter}".encode()).digest()
        counter += 1
    return out[:size]


def entry(key_type: KeyType) -> dict[str, Any]:
    algorithm = algorithm_for(key_type)
    if key_type.value.startswith(("aes", "chacha", "hmac")):
        size = len(algorithm.generate())
        material = seeded(key_type.value, size)
    else:
        material = algorithm.generate()
    handle = algorithm.load(material)
    found: dict[str, Any] = {"keyType": key_type.value, "material": b64(material)}
    if isinstance(handle, AeadKey):
        nonce = seeded(f"{key_type.value}/nonce", 12)
        found["nonce"] = b64(nonce)
        found["plaintext"] = b64(MESSAGE)
        found["ciphertext"] = formats.encode(1, handle.encrypt(MESSAGE, nonce=nonce))
    elif key_type.value.startswith("rsa"):
        found["plaintext"] = b64(MESSAGE)
        found["ciphertext"] = formats.encode(1, handle.encrypt(MESSAGE))
    if key_type.value.startswith(("rsa", "ecdsa", "ed25519")):
        found["publicKey"] = handle.public_key()
        signatures = []
        variants: list[dict[str, Any]] = []
        if key_type is KeyType.ED25519:
            variants = [{}]
        elif key_type.value.startswith("rsa"):
            variants = [{"hashAlgorithm": h, "signatureAlgorithm": s}
                        for h in HASHES for s in ("pss", "pkcs1v15")]  # fmt: skip
        else:
            variants = [{"hashAlgorithm": h, "marshalingAlgorithm": m}
                        for h in HASHES for m in ("asn1", "jws")]  # fmt: skip
        for options in variants:
            sign_options = SignOptions.for_key(
                key_type,
                hash_algorithm=options.get("hashAlgorithm"),
                signature_algorithm=options.get("signatureAlgorithm"),
                marshaling_algorithm=options.get("marshalingAlgorithm"),
            )
            deterministic = key_type is KeyType.ED25519 or options.get("signatureAlgorithm") == (
                "pkcs1v15"
            )
            signatures.append(
                {
                    **options,
                    "input": b64(MESSAGE),
                    "signature": formats.encode(1, handle.sign(MESSAGE, sign_options)),
                    "deterministic": deterministic,
                }
            )
        found["signatures"] = signatures
    if key_type.value.startswith("hmac"):
        names = {
            KeyType.HMAC: ["sha2-256", "sha2-512", "sha3-256"],
            KeyType.HMAC_SHA256: ["sha2-256"],
            KeyType.HMAC_SHA512: ["sha2-512"],
        }[key_type]
        found["hmacs"] = [
            {
                "algorithm": name,
                "input": b64(MESSAGE),
                "hmac": formats.encode(1, handle.mac(MESSAGE, HashAlgorithm(name))),
            }
            for name in names
        ]
    return found


def main() -> int:
    if OUT.exists():
        print(f"{OUT} exists and is frozen; not overwriting it", file=sys.stderr)
        return 1
    document = {
        "description": "Frozen outputs of every key type (spec §4). Never regenerate: a change "
        "that fails these breaks ciphertexts, signatures and MACs users already hold.",
        "created": "2026-11-28",
        "keys": [entry(key_type) for key_type in KeyType],
    }
    OUT.write_text(json.dumps(document, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
