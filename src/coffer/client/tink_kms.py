"""Coffer keys for Tink: a ``KmsClient`` for ``coffer://<region>/<key>`` URIs.

    import tink
    from tink import aead
    from coffer.client import Client
    from coffer.client.tink_kms import CofferKmsClient

    aead.register()
    kms = CofferKmsClient(Client())               # settings from COFFER_* or a profile
    remote = kms.get_aead("coffer://nl-01/payments")
    envelope = aead.KmsEnvelopeAead(aead.aead_key_templates.AES256_GCM, remote)
    ciphertext = envelope.encrypt(b"data", b"associated data")

The remote AEAD is Coffer's ``encrypt``/``decrypt`` of the key: its ciphertext is the
``thalassa:vN:...`` string as ASCII bytes. Coffer's API takes no associated data, so the remote
AEAD refuses any that is not empty (``KmsEnvelopeAead`` and Tink's encrypted keysets pass none
to it; the associated data of ``KmsEnvelopeAead.encrypt`` binds the data key's ciphertext, not
the wrapped key).
"""

from __future__ import annotations

import tink
from tink import aead

from coffer.client.clients import Client
from coffer.errors import CofferError

SCHEME = "coffer://"

__all__ = ["SCHEME", "CofferAead", "CofferKmsClient", "key_uri", "parse_key_uri"]


def key_uri(region: str, key: str) -> str:
    return f"{SCHEME}{region}/{key}"


def parse_key_uri(uri: str) -> tuple[str, str]:
    """``(region, key)`` of ``coffer://<region>/<key>``."""
    if not uri.startswith(SCHEME):
        raise tink.TinkError(f"not a Coffer key URI: {uri!r}")
    region, _, key = uri[len(SCHEME) :].partition("/")
    if not region or not key or "/" in key:
        raise tink.TinkError(f"a Coffer key URI is coffer://<region>/<key>, not {uri!r}")
    return region, key


class CofferAead(aead.Aead):
    """Tink's ``Aead`` on one Coffer key."""

    def __init__(self, client: Client, region: str, key: str) -> None:
        self._client = client
        self._region = region
        self._key = key

    def encrypt(self, plaintext: bytes, associated_data: bytes) -> bytes:
        if associated_data:
            raise tink.TinkError("Coffer keys take no associated data")
        try:
            sealed = self._client.encrypt(self._key, plaintext, region=self._region)
        except CofferError as exc:
            raise tink.TinkError(f"Coffer encrypt with {self._key}: {exc.message}") from exc
        return sealed.ciphertext.encode("ascii")

    def decrypt(self, ciphertext: bytes, associated_data: bytes) -> bytes:
        if associated_data:
            raise tink.TinkError("Coffer keys take no associated data")
        try:
            text = ciphertext.decode("ascii")
        except UnicodeDecodeError:
            raise tink.TinkError("not a Coffer ciphertext") from None
        try:
            return self._client.decrypt(self._key, text, region=self._region).plaintext
        except CofferError as exc:
            raise tink.TinkError(f"Coffer decrypt with {self._key}: {exc.message}") from exc


class CofferKmsClient(tink.KmsClient):
    """Serves ``coffer://`` URIs (or, with ``key_uri``, that one key only) with ``client``."""

    def __init__(self, client: Client, key_uri: str | None = None) -> None:
        if key_uri is not None:
            parse_key_uri(key_uri)
        self._client = client
        self._key_uri = key_uri

    def does_support(self, key_uri: str) -> bool:
        if self._key_uri is not None:
            return key_uri == self._key_uri
        return key_uri.startswith(SCHEME)

    def get_aead(self, key_uri: str) -> aead.Aead:
        if not self.does_support(key_uri):
            raise tink.TinkError(f"this client does not serve {key_uri!r}")
        region, key = parse_key_uri(key_uri)
        return CofferAead(self._client, region, key)
