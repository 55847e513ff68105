"""The Python SDK of Coffer.

    from coffer.client import Client

    with Client("http://127.0.0.1:8200", token, organisation="default") as client:
        key = client.keys.create("payments", "aes256-gcm96")
        sealed = client.encrypt(key.identity, b"4111 1111 1111 1111")
        assert client.decrypt(key.identity, sealed.ciphertext).plaintext == b"4111 1111 1111 1111"

Bytes in and out (base64 is only on the wire); errors are the classes of ``coffer.errors``;
``AsyncClient`` has the same methods to ``await``. Large data: ``coffer.client.envelope``.
Tink: ``coffer.client.tink_kms``. Settings not given come from ``COFFER_*`` variables or a
profile file (``coffer.client.connection``).
"""

from coffer.client.clients import AsyncClient, Client, error_from_response
from coffer.client.connection import Connection, ProfileError

__all__ = ["AsyncClient", "Client", "Connection", "ProfileError", "error_from_response"]
