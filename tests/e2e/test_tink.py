"""Tink with Coffer keys: ``KmsEnvelopeAead`` and encrypted keysets through the Coffer
``KmsClient``, against a real server, with Tink's code unchanged."""

from __future__ import annotations

import secrets

import pytest
import tink
from tink import aead

from coffer.client import Client
from coffer.client.tink_kms import CofferKmsClient, key_uri, parse_key_uri

pytestmark = pytest.mark.slow

aead.register()


@pytest.fixture(scope="module")
def client(coffer_client: Client) -> Client:
    return coffer_client


@pytest.fixture(scope="module")
def uri(client: Client) -> str:
    key = client.keys.create(f"tink-{secrets.token_hex(4)}", "aes256-gcm96")
    return key_uri("nl-01", key.slug)


def test_kms_envelope_aead_round_trips_with_a_coffer_key(client: Client, uri: str) -> None:
    remote = CofferKmsClient(client).get_aead(uri)
    envelope = aead.KmsEnvelopeAead(aead.aead_key_templates.AES256_GCM, remote)
    ciphertext = envelope.encrypt(b"card 4111", b"customer 42")
    assert b"thalassa:v1:" in ciphertext  # the wrapped data key is Coffer's ciphertext
    assert envelope.decrypt(ciphertext, b"customer 42") == b"card 4111"
    with pytest.raises(tink.TinkError):
        envelope.decrypt(ciphertext, b"customer 43")
    tampered = ciphertext[:-1] + bytes([ciphertext[-1] ^ 1])
    with pytest.raises(tink.TinkError):
        envelope.decrypt(tampered, b"customer 42")


def test_a_registered_client_serves_its_uris(client: Client, uri: str) -> None:
    tink.register_kms_client(CofferKmsClient(client, uri))
    found = tink.kms_client_from_uri(uri)
    assert found.does_support(uri)
    assert not found.does_support("coffer://nl-01/another-key")
    assert not found.does_support("aws-kms://arn:aws:kms:eu-west-1:1:key/x")
    with pytest.raises(tink.TinkError):
        found.get_aead("coffer://nl-01/another-key")
    remote = found.get_aead(uri)
    assert remote.decrypt(remote.encrypt(b"data key", b""), b"") == b"data key"


def test_a_tink_keyset_encrypted_by_a_coffer_key(client: Client, uri: str) -> None:
    remote = CofferKmsClient(client).get_aead(uri)
    handle = tink.new_keyset_handle(aead.aead_key_templates.AES256_GCM)
    stored = tink.proto_keyset_format.serialize_encrypted(handle, remote, b"")
    restored = tink.proto_keyset_format.parse_encrypted(stored, remote, b"")
    sealed = handle.primitive(aead.Aead).encrypt(b"x", b"")
    assert restored.primitive(aead.Aead).decrypt(sealed, b"") == b"x"


def test_coffer_errors_and_associated_data_are_tink_errors(client: Client, uri: str) -> None:
    remote = CofferKmsClient(client).get_aead(uri)
    with pytest.raises(tink.TinkError, match="no associated data"):
        remote.encrypt(b"x", b"context")
    with pytest.raises(tink.TinkError, match="cannot be decrypted"):
        remote.decrypt(b"thalassa:v1:AAAA", b"")
    missing = CofferKmsClient(client).get_aead("coffer://nl-01/no-such-key")
    with pytest.raises(tink.TinkError, match="key not found"):
        missing.encrypt(b"x", b"")


@pytest.mark.parametrize("bad", ["coffer://nl-01", "coffer:///key", "gcp-kms://x",
                                 "coffer://nl-01/a/b"])  # fmt: skip
def test_malformed_uris_are_refused(bad: str) -> None:
    with pytest.raises(tink.TinkError):
        parse_key_uri(bad)
