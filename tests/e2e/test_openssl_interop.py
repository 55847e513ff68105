"""Interoperability with the real ``openssl`` command line (OpenSSL 3).

Everything a user does with openssl next to the API is done here with the ``openssl`` binary and
exactly the flags of ``docs/byok.md``: signatures of every asymmetric key type and every hash
verify with ``openssl dgst`` / ``openssl pkeyutl`` against the API's public key, RSA ciphertexts
cross between the API and ``openssl pkeyutl`` in both directions, and keys generated and wrapped by
openssl (``genpkey``, ``rand``, ``pkeyutl -encrypt``, ``enc -id-aes256-wrap-pad``) import and then
behave as the key bytes openssl holds say they must (spec §3, §4, §5.5–5.11).

The server is the in-process app of the API tests; only openssl runs as a real process, with its
files in the test's temporary directory.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import utils
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from coffer.domain.identity import new_identity
from tests.conftest import SUITE_SECRETS, Kms, initialised, make_settings, open_kms

KEYS = "/v1/kms/nl-01/keys"
RSA = ["rsa-2048", "rsa-3072", "rsa-4096"]
ECDSA = ["ecdsa-p256", "ecdsa-p384", "ecdsa-p521"]
ASYMMETRIC = [*RSA, *ECDSA, "ed25519"]
#: The API's hash names and openssl's digest names for them.
OPENSSL_DIGEST = {
    "sha2-224": "sha224", "sha2-256": "sha256", "sha2-384": "sha384", "sha2-512": "sha512",
    "sha3-224": "sha3-224", "sha3-256": "sha3-256", "sha3-384": "sha3-384", "sha3-512": "sha3-512",
}  # fmt: skip
HASHES = list(OPENSSL_DIGEST)
#: Bytes of r and of s in a JWS (r ‖ s) ECDSA signature.
ECDSA_WIDTH = {"ecdsa-p256": 32, "ecdsa-p384": 48, "ecdsa-p521": 66}
#: Largest RSA-OAEP (SHA-256) plaintext per key size: k - 2·32 - 2.
OAEP_LIMIT = {"rsa-2048": 190, "rsa-3072": 318, "rsa-4096": 446}
#: SubjectPublicKeyInfo DER of an Ed25519 key, up to its 32 raw bytes (RFC 8410).
ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")

PSS = ("-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:digest")
OAEP_SHA256 = ("-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:sha256",
               "-pkeyopt", "rsa_mgf1_md:sha256")  # fmt: skip
MESSAGE = b"the quick brown fox signs a contract with openssl"

VERIFIED = b"Verified OK\n"  # openssl dgst -verify
VERIFY_FAILED = b"Verification failure\n"
PKEYUTL_VERIFIED = b"Signature Verified Successfully\n"  # openssl pkeyutl -verify
PKEYUTL_FAILED = b"Signature Verification Failure\n"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def body_of(value: str) -> bytes:
    """The base64 body of a ``thalassa:vN:<base64>`` ciphertext or signature."""
    return base64.b64decode(value.split(":", 2)[2])


def remember(*secrets: bytes) -> None:
    """Key material and plaintexts made outside the API: no audit record may contain them."""
    for secret in secrets:
        SUITE_SECRETS.update({secret.hex(), b64(secret)})


# --- openssl ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def openssl_binary() -> str:
    binary = shutil.which("openssl")
    if binary is None:
        pytest.fail(
            "the `openssl` binary is not on PATH: these tests check interoperability with the "
            "openssl command line itself, so install OpenSSL 3 (CI does) rather than skipping them"
        )
    version = subprocess.run(
        [binary, "version"], capture_output=True, text=True, check=False, timeout=30
    )
    if version.returncode != 0 or not version.stdout.startswith("OpenSSL 3."):
        pytest.fail(f"these tests need OpenSSL 3 (`openssl version` said {version.stdout!r})")
    return binary


@dataclass(frozen=True)
class OpenSSL:
    """``openssl`` run in one directory, so that commands read as in docs/byok.md."""

    binary: str
    cwd: Path

    def __call__(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[bytes]:
        result = subprocess.run(
            [self.binary, *args],
            cwd=self.cwd,
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
            check=False,
        )
        if ok:
            assert result.returncode == 0, (
                f"openssl {' '.join(args)} exited {result.returncode}: "
                f"stdout={result.stdout!r} stderr={result.stderr!r}"
            )
        return result

    def write(self, name: str, data: bytes | str) -> Path:
        path = self.cwd / name
        if isinstance(data, str):
            path.write_text(data)
        else:
            path.write_bytes(data)
        return path

    def read(self, name: str) -> bytes:
        return (self.cwd / name).read_bytes()


@pytest.fixture
def openssl(openssl_binary: str, tmp_path: Path) -> OpenSSL:
    return OpenSSL(openssl_binary, tmp_path)


# --- the server -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kms(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kms]:
    """One server with one key of every asymmetric type; the RSA keys may be exported."""
    settings = make_settings(tmp_path_factory.mktemp("openssl-interop") / "data")
    for running in open_kms(settings, initialised(settings)):
        for key_type in ASYMMETRIC:
            running.create_key(key_type, key_type, exportAllowed=key_type in RSA)
        yield running


def sign(kms: Kms, key: str, data: bytes = MESSAGE, **options: Any) -> bytes:
    response = kms.post(f"{KEYS}/{key}/sign", {"input": b64(data), **options})
    assert response.status_code == 200, response.text
    signature: str = response.json()["signature"]
    assert signature.startswith("thalassa:v1:")
    return body_of(signature)


def api_verifies(kms: Kms, key: str, signature: bytes, **options: Any) -> bool:
    body = {"input": b64(MESSAGE), "signature": f"thalassa:v1:{b64(signature)}", **options}
    response = kms.post(f"{KEYS}/{key}/verify", body)
    assert response.status_code == 200, response.text
    valid: bool = response.json()["valid"]
    return valid


def public_key(kms: Kms, key: str) -> str:
    response = kms.get(f"{KEYS}/{key}/public-key")
    assert response.status_code == 200, response.text
    shown: str = response.json()["keys"]["1"]
    return shown


def ed25519_pem(openssl: OpenSSL, raw_b64: str) -> bytes:
    """The PEM of an Ed25519 public key the API shows as base64 of its 32 raw bytes."""
    raw = base64.b64decode(raw_b64)
    assert len(raw) == 32
    openssl.write("pub.der", ED25519_SPKI_PREFIX + raw)
    openssl("pkey", "-pubin", "-inform", "DER", "-in", "pub.der", "-out", "pub.pem")
    return openssl.read("pub.pem")


def write_public_pem(kms: Kms, openssl: OpenSSL, key: str) -> None:
    """``pub.pem``: the key's public key as the API shows it, as PEM."""
    shown = public_key(kms, key)
    if key == "ed25519":
        ed25519_pem(openssl, shown)
    else:
        openssl.write("pub.pem", shown)


def dgst_verify(
    openssl: OpenSSL, hash_name: str, *sigopts: str
) -> subprocess.CompletedProcess[bytes]:
    return openssl("dgst", f"-{OPENSSL_DIGEST[hash_name]}", "-verify", "pub.pem",
                   "-signature", "sig.bin", *sigopts, "data", ok=False)  # fmt: skip


def jws_to_der(openssl: OpenSSL, jws: bytes, width: int) -> bytes:
    """An ECDSA r ‖ s signature as ASN.1 DER, built by ``openssl asn1parse -genconf``."""
    assert len(jws) == 2 * width
    r, s = jws[:width], jws[width:]
    openssl.write(
        "sig.cnf", f"asn1=SEQUENCE:sig\n[sig]\nr=INTEGER:0x{r.hex()}\ns=INTEGER:0x{s.hex()}\n"
    )
    openssl("asn1parse", "-genconf", "sig.cnf", "-out", "sig.der", "-noout")
    der = openssl.read("sig.der")
    expected = utils.encode_dss_signature(int.from_bytes(r, "big"), int.from_bytes(s, "big"))
    assert der == expected
    return der


# --- (a) signatures verify with openssl -------------------------------------------------------


@pytest.mark.parametrize("key_type", RSA)
@pytest.mark.parametrize("scheme", ["pss", "pkcs1v15"])
@pytest.mark.parametrize("hash_name", HASHES)
def test_rsa_signatures_verify_with_openssl_dgst(
    kms: Kms, openssl: OpenSSL, key_type: str, scheme: str, hash_name: str
) -> None:
    write_public_pem(kms, openssl, key_type)
    openssl.write("data", MESSAGE)
    signature = sign(kms, key_type, hashAlgorithm=hash_name, signatureAlgorithm=scheme)
    assert len(signature) == int(key_type.removeprefix("rsa-")) // 8
    openssl.write("sig.bin", signature)
    sigopts = PSS if scheme == "pss" else ()
    result = dgst_verify(openssl, hash_name, *sigopts)
    assert (result.returncode, result.stdout) == (0, VERIFIED), result.stderr
    # The other padding does not accept it: openssl really checked the scheme.
    other = () if scheme == "pss" else PSS
    assert dgst_verify(openssl, hash_name, *other).returncode != 0


@pytest.mark.parametrize("key_type", ECDSA)
@pytest.mark.parametrize("hash_name", HASHES)
def test_ecdsa_signatures_verify_with_openssl_dgst_in_asn1_and_jws_form(
    kms: Kms, openssl: OpenSSL, key_type: str, hash_name: str
) -> None:
    write_public_pem(kms, openssl, key_type)
    openssl.write("data", MESSAGE)
    openssl.write("sig.bin", sign(kms, key_type, hashAlgorithm=hash_name))
    result = dgst_verify(openssl, hash_name)
    assert (result.returncode, result.stdout) == (0, VERIFIED), result.stderr
    jws = sign(kms, key_type, hashAlgorithm=hash_name, marshalingAlgorithm="jws")
    openssl.write("sig.bin", jws_to_der(openssl, jws, ECDSA_WIDTH[key_type]))
    result = dgst_verify(openssl, hash_name)
    assert (result.returncode, result.stdout) == (0, VERIFIED), result.stderr


@pytest.mark.parametrize("hash_name", HASHES)
def test_ed25519_signatures_verify_with_openssl_pkeyutl(
    kms: Kms, openssl: OpenSSL, hash_name: str
) -> None:
    write_public_pem(kms, openssl, "ed25519")
    public = serialization.load_pem_public_key(openssl.read("pub.pem"))
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert b64(raw) == public_key(kms, "ed25519")
    openssl.write("data", MESSAGE)
    openssl.write("sig.bin", sign(kms, "ed25519", hashAlgorithm=hash_name))
    result = openssl("pkeyutl", "-verify", "-pubin", "-inkey", "pub.pem", "-rawin",
                     "-in", "data", "-sigfile", "sig.bin", ok=False)  # fmt: skip
    assert (result.returncode, result.stdout) == (0, PKEYUTL_VERIFIED), result.stderr


@pytest.mark.parametrize(
    ("key_type", "options"),
    [("rsa-2048", {"signatureAlgorithm": "pss"}),
     ("rsa-3072", {"signatureAlgorithm": "pkcs1v15"}),
     ("ecdsa-p256", {}),
     ("ecdsa-p521", {"marshalingAlgorithm": "jws"}),
     ("ed25519", {})],
)  # fmt: skip
def test_openssl_refuses_a_signature_of_a_message_with_one_byte_flipped(
    kms: Kms, openssl: OpenSSL, key_type: str, options: dict[str, str]
) -> None:
    write_public_pem(kms, openssl, key_type)
    signature = sign(kms, key_type, **options)
    if options.get("marshalingAlgorithm") == "jws":
        signature = jws_to_der(openssl, signature, ECDSA_WIDTH[key_type])
    openssl.write("sig.bin", signature)
    for index in (0, len(MESSAGE) // 2, len(MESSAGE) - 1):
        flipped = bytearray(MESSAGE)
        flipped[index] ^= 0x01
        openssl.write("data", bytes(flipped))
        if key_type == "ed25519":
            result = openssl("pkeyutl", "-verify", "-pubin", "-inkey", "pub.pem", "-rawin",
                             "-in", "data", "-sigfile", "sig.bin", ok=False)  # fmt: skip
            assert (result.returncode, result.stdout) == (1, PKEYUTL_FAILED), result.stderr
        else:
            pss = options.get("signatureAlgorithm") == "pss"
            result = dgst_verify(openssl, "sha2-256", *(PSS if pss else ()))
            assert (result.returncode, result.stdout) == (1, VERIFY_FAILED), result.stderr


@pytest.mark.parametrize(
    ("key_type", "scheme"),
    [("rsa-2048", "pss"), ("rsa-4096", "pkcs1v15"), ("ecdsa-p256", None), ("ecdsa-p384", None)],
)
@pytest.mark.parametrize("hash_name", ["sha2-256", "sha2-512", "sha3-384"])
def test_a_digest_from_openssl_signed_prehashed_verifies_with_openssl(
    kms: Kms, openssl: OpenSSL, key_type: str, scheme: str | None, hash_name: str
) -> None:
    write_public_pem(kms, openssl, key_type)
    openssl.write("data", MESSAGE)
    digest_name = OPENSSL_DIGEST[hash_name]
    openssl("dgst", f"-{digest_name}", "-binary", "-out", "digest.bin", "data")
    options = {"signatureAlgorithm": scheme} if scheme else {}
    digest = openssl.read("digest.bin")
    signature = sign(kms, key_type, digest, prehashed=True, hashAlgorithm=hash_name, **options)
    openssl.write("sig.bin", signature)
    # It is the signature of the message ...
    result = dgst_verify(openssl, hash_name, *(PSS if scheme == "pss" else ()))
    assert (result.returncode, result.stdout) == (0, VERIFIED), result.stderr
    # ... and of the digest, for a verifier that also only holds the digest.
    pkeyopts = ("-pkeyopt", "rsa_padding_mode:pss", "-pkeyopt", "rsa_pss_saltlen:digest")
    result = openssl("pkeyutl", "-verify", "-pubin", "-inkey", "pub.pem", "-in", "digest.bin",
                     "-sigfile", "sig.bin", "-pkeyopt", f"digest:{digest_name}",
                     *(pkeyopts if scheme == "pss" else ()), ok=False)  # fmt: skip
    assert (result.returncode, result.stdout) == (0, PKEYUTL_VERIFIED), result.stderr
    assert api_verifies(kms, key_type, signature, hashAlgorithm=hash_name, **options)


# --- (b) RSA encryption both ways -------------------------------------------------------------


@pytest.mark.parametrize("key_type", RSA)
def test_an_api_rsa_ciphertext_decrypts_with_openssl_and_the_exported_key(
    kms: Kms, openssl: OpenSSL, key_type: str
) -> None:
    exported = kms.post(f"{KEYS}/{key_type}/export")
    assert exported.status_code == 200, exported.text
    openssl.write("key.der", base64.b64decode(exported.json()["keyMaterial"]))
    # The exported key is the one behind the public key the API shows.
    openssl("pkey", "-inform", "DER", "-in", "key.der", "-pubout", "-out", "exported.pub.pem")
    assert openssl.read("exported.pub.pem").decode() == public_key(kms, key_type)

    plaintext = os.urandom(OAEP_LIMIT[key_type])
    remember(plaintext)
    sealed = kms.post(f"{KEYS}/{key_type}/encrypt", {"plaintext": b64(plaintext)})
    assert sealed.status_code == 200, sealed.text
    openssl.write("ciphertext.bin", body_of(sealed.json()["ciphertext"]))
    openssl("pkeyutl", "-decrypt", "-inkey", "key.der", "-keyform", "DER", "-in", "ciphertext.bin",
            "-out", "plaintext.bin", *OAEP_SHA256)  # fmt: skip
    assert openssl.read("plaintext.bin") == plaintext
    # OAEP with SHA-1 (openssl's default) is not what the API used.
    wrong = openssl("pkeyutl", "-decrypt", "-inkey", "key.der", "-keyform", "DER",
                    "-in", "ciphertext.bin", "-pkeyopt", "rsa_padding_mode:oaep",
                    ok=False)  # fmt: skip
    assert wrong.returncode != 0


@pytest.mark.parametrize("key_type", RSA)
def test_an_openssl_rsa_ciphertext_decrypts_with_the_api(
    kms: Kms, openssl: OpenSSL, key_type: str
) -> None:
    write_public_pem(kms, openssl, key_type)
    for size in (1, OAEP_LIMIT[key_type]):
        plaintext = os.urandom(size)
        remember(plaintext)
        openssl.write("plaintext.bin", plaintext)
        openssl("pkeyutl", "-encrypt", "-pubin", "-inkey", "pub.pem", "-in", "plaintext.bin",
                "-out", "ciphertext.bin", *OAEP_SHA256)  # fmt: skip
        ciphertext = f"thalassa:v1:{b64(openssl.read('ciphertext.bin'))}"
        opened = kms.post(f"{KEYS}/{key_type}/decrypt", {"ciphertext": ciphertext})
        assert opened.status_code == 200, opened.text
        assert base64.b64decode(opened.json()["plaintext"]) == plaintext


# --- (c) keys generated and wrapped by openssl ------------------------------------------------


def wrap_with_openssl(kms: Kms, openssl: OpenSSL, target: str, hash_function: str) -> str:
    """``importKeyMaterial`` for the key in file ``target``, made with openssl as docs/byok.md
    says: RSA-OAEP of a fresh AES-256 key under the wrapping key, then AES-KWP of the target."""
    response = kms.get("/v1/kms/nl-01/wrapping-key")
    assert response.status_code == 200, response.text
    assert response.json()["algorithm"] == "RSA_OAEP_AES_KWP"
    openssl.write("wrapping.pem", response.json()["publicKey"])
    openssl("rand", "-out", "ephemeral.key", "32")
    ephemeral = openssl.read("ephemeral.key")
    remember(ephemeral, openssl.read(target))
    openssl("pkeyutl", "-encrypt", "-pubin", "-inkey", "wrapping.pem", "-in", "ephemeral.key",
            "-out", "head.bin", "-pkeyopt", "rsa_padding_mode:oaep",
            "-pkeyopt", f"rsa_oaep_md:{hash_function}",
            "-pkeyopt", f"rsa_mgf1_md:{hash_function}")  # fmt: skip
    openssl("enc", "-id-aes256-wrap-pad", "-iv", "A65959A6", "-K", ephemeral.hex(),
            "-in", target, "-out", "tail.bin")  # fmt: skip
    head, tail = openssl.read("head.bin"), openssl.read("tail.bin")
    assert len(head) == 512  # RSA-4096
    assert len(tail) == (len(openssl.read(target)) + 7) // 8 * 8 + 8  # RFC 5649
    return b64(head + tail)


def import_key(kms: Kms, key_type: str, material: str, hash_function: str) -> str:
    body = {"name": new_identity("imp"), "keyType": key_type, "importKeyMaterial": material}
    if hash_function != "sha256":  # the default; sent explicitly for the others
        body["hashFunction"] = hash_function
    response = kms.post(KEYS, body)
    assert response.status_code == 201, response.text
    assert response.json()["imported"] is True
    identity: str = response.json()["identity"]
    return identity


@pytest.mark.parametrize(
    ("key_type", "size", "hash_function"),
    [("aes256-gcm96", 32, "sha256"),
     ("aes256-gcm96", 32, "sha1"),
     ("aes256-gcm96", 32, "sha224"),
     ("aes256-gcm96", 32, "sha384"),
     ("aes256-gcm96", 32, "sha512"),
     ("aes128-gcm96", 16, "sha256"),
     ("chacha20-poly1305", 32, "sha512")],
)  # fmt: skip
def test_a_symmetric_key_from_openssl_rand_imports_and_encrypts_as_its_bytes_say(
    kms: Kms, openssl: OpenSSL, key_type: str, size: int, hash_function: str
) -> None:
    openssl("rand", "-out", "target.key", str(size))
    target = openssl.read("target.key")
    assert len(target) == size
    material = wrap_with_openssl(kms, openssl, "target.key", hash_function)
    key = import_key(kms, key_type, material, hash_function)
    aead = ChaCha20Poly1305(target) if key_type == "chacha20-poly1305" else AESGCM(target)
    plaintext = b"data for a key the caller brought"
    sealed = kms.post(f"{KEYS}/{key}/encrypt", {"plaintext": b64(plaintext)})
    assert sealed.status_code == 200, sealed.text
    body = body_of(sealed.json()["ciphertext"])
    assert aead.decrypt(body[:12], body[12:], None) == plaintext
    opened = kms.post(f"{KEYS}/{key}/decrypt", {"ciphertext": sealed.json()["ciphertext"]})
    assert opened.status_code == 200, opened.text
    assert base64.b64decode(opened.json()["plaintext"]) == plaintext
    # And the other way: sealed locally with the caller's own bytes, opened by the API.
    nonce = os.urandom(12)
    local = f"thalassa:v1:{b64(nonce + aead.encrypt(nonce, plaintext, None))}"
    opened = kms.post(f"{KEYS}/{key}/decrypt", {"ciphertext": local})
    assert opened.status_code == 200, opened.text
    assert base64.b64decode(opened.json()["plaintext"]) == plaintext


GENPKEY = {
    "rsa-2048": ("-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"),
    "rsa-3072": ("-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:3072"),
    "ecdsa-p256": ("-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"),
    "ecdsa-p384": ("-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"),
    "ecdsa-p521": ("-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-521"),
    "ed25519": ("-algorithm", "ED25519"),
}


@pytest.mark.parametrize(
    ("key_type", "hash_function"),
    [("rsa-2048", "sha256"),
     ("rsa-3072", "sha512"),
     ("ecdsa-p256", "sha1"),
     ("ecdsa-p384", "sha256"),
     ("ecdsa-p521", "sha512"),
     ("ed25519", "sha256"),
     ("ed25519", "sha1")],
)  # fmt: skip
def test_an_asymmetric_key_from_openssl_genpkey_imports_with_its_own_public_key(
    kms: Kms, openssl: OpenSSL, key_type: str, hash_function: str
) -> None:
    openssl("genpkey", *GENPKEY[key_type], "-out", "target.pem")
    openssl("pkcs8", "-topk8", "-nocrypt", "-in", "target.pem", "-outform", "DER",
            "-out", "target.der")  # fmt: skip
    openssl("pkey", "-in", "target.pem", "-pubout", "-out", "expected.pub.pem")
    expected = openssl.read("expected.pub.pem")
    material = wrap_with_openssl(kms, openssl, "target.der", hash_function)
    key = import_key(kms, key_type, material, hash_function)

    shown = public_key(kms, key)
    if key_type == "ed25519":
        assert ed25519_pem(openssl, shown) == expected
    else:
        assert shown == expected.decode()

    # The API signs with the imported key; openssl verifies with its own public key ...
    openssl.write("data", MESSAGE)
    openssl.write("sig.bin", sign(kms, key))
    if key_type == "ed25519":
        result = openssl("pkeyutl", "-verify", "-pubin", "-inkey", "expected.pub.pem", "-rawin",
                         "-in", "data", "-sigfile", "sig.bin", ok=False)  # fmt: skip
        assert (result.returncode, result.stdout) == (0, PKEYUTL_VERIFIED), result.stderr
    else:
        sigopts = PSS if key_type.startswith("rsa-") else ()
        result = openssl("dgst", "-sha256", "-verify", "expected.pub.pem", "-signature", "sig.bin",
                         *sigopts, "data", ok=False)  # fmt: skip
        assert (result.returncode, result.stdout) == (0, VERIFIED), result.stderr

    # ... and openssl signs with the key it made; the API verifies.
    if key_type == "ed25519":
        openssl("pkeyutl", "-sign", "-inkey", "target.pem", "-rawin", "-in", "data",
                "-out", "openssl.sig")  # fmt: skip
    else:
        sigopts = PSS if key_type.startswith("rsa-") else ()
        openssl("dgst", "-sha256", "-sign", "target.pem", *sigopts, "-out", "openssl.sig", "data")
    assert api_verifies(kms, key, openssl.read("openssl.sig"))

    if key_type.startswith("rsa-"):  # an API ciphertext opens with the key openssl holds
        plaintext = b"sealed for an imported RSA key"
        sealed = kms.post(f"{KEYS}/{key}/encrypt", {"plaintext": b64(plaintext)})
        assert sealed.status_code == 200, sealed.text
        openssl.write("ciphertext.bin", body_of(sealed.json()["ciphertext"]))
        openssl("pkeyutl", "-decrypt", "-inkey", "target.pem", "-in", "ciphertext.bin",
                "-out", "plaintext.bin", *OAEP_SHA256)  # fmt: skip
        assert openssl.read("plaintext.bin") == plaintext
