"""The hash names of the API mapped to ``cryptography`` hash objects."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes

from coffer.domain.signing import HashAlgorithm, ImportHash

_HASHES: dict[HashAlgorithm, type[hashes.HashAlgorithm]] = {
    HashAlgorithm.SHA2_224: hashes.SHA224,
    HashAlgorithm.SHA2_256: hashes.SHA256,
    HashAlgorithm.SHA2_384: hashes.SHA384,
    HashAlgorithm.SHA2_512: hashes.SHA512,
    HashAlgorithm.SHA3_224: hashes.SHA3_224,
    HashAlgorithm.SHA3_256: hashes.SHA3_256,
    HashAlgorithm.SHA3_384: hashes.SHA3_384,
    HashAlgorithm.SHA3_512: hashes.SHA3_512,
}

_IMPORT_HASHES: dict[ImportHash, type[hashes.HashAlgorithm]] = {
    ImportHash.SHA1: hashes.SHA1,
    ImportHash.SHA224: hashes.SHA224,
    ImportHash.SHA256: hashes.SHA256,
    ImportHash.SHA384: hashes.SHA384,
    ImportHash.SHA512: hashes.SHA512,
}


def hash_of(algorithm: HashAlgorithm) -> hashes.HashAlgorithm:
    return _HASHES[algorithm]()


def import_hash_of(algorithm: ImportHash) -> hashes.HashAlgorithm:
    return _IMPORT_HASHES[algorithm]()
