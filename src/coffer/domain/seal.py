"""The root of trust as stored: one installation, its seal, and the generations of its root key.

Every installation has an identity chosen at ``coffer init``. Its root key has generations: the
first is made by ``init``, each root rotation (or seal migration) adds the next and, once every
blob the root wraps has been rewrapped, retires the ones before. Each generation carries a check
value (an AEAD of a constant under that generation's key, bound to the installation and the
generation), so that a root key can be told apart from any other before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from coffer.errors import Unavailable


class SealType(StrEnum):
    """Where the root key lives at rest, and how a server gets it (docs/security.md)."""

    #: 32 bytes in ``<data-dir>/root.key`` (development: whoever copies the directory has it).
    FILE = "file"
    #: Encrypted by an unseal key that exists only as Shamir shares held by operators.
    SHAMIR = "shamir"
    #: A non-extractable AES-256 key inside a PKCS #11 token (an HSM).
    PKCS11 = "pkcs11"


@dataclass(frozen=True, slots=True)
class SealConfig:
    """The non-secret settings of a seal, recorded in the database at ``coffer init``."""

    type: SealType
    #: Shamir: how many shares unseal, and how many were made.
    threshold: int | None = None
    shares: int | None = None
    #: Shamir: SHA-256 digests of the shares (hex), so that a wrong share is refused at once.
    share_digests: tuple[str, ...] = ()
    #: PKCS #11: the token's label (a node may override it). The module's path is never taken
    #: from the database, whose writer must not choose what code a server loads: it is in the
    #: data directory's ``seal.json`` or ``COFFER_PKCS11_LIBRARY``.
    pkcs11_token: str | None = None


@dataclass(frozen=True, slots=True)
class Installation:
    identity: str
    seal: SealConfig
    #: The root key generation that wraps everything written from now on.
    active_generation: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class RootGeneration:
    generation: int
    seal_type: SealType
    #: AEAD of a constant under this generation's key (``coffer.crypto.root.check_aad``).
    check_value: bytes = field(repr=False)
    #: The generation's key, sealed so that other nodes can open it: under the unseal key
    #: (shamir), or, while a rotation of the file seal runs, under the previous generation.
    sealed_key: bytes | None = field(repr=False)
    created_at: datetime
    retired_at: datetime | None = None
    #: Where the seal keeps the key, if it says (PKCS #11: the key object's label).
    seal_ref: str | None = None

    @property
    def live(self) -> bool:
        return self.retired_at is None


@dataclass(frozen=True, slots=True)
class SealStatus:
    """``GET /v1/sys/seal-status``: what anyone may know about the seal."""

    sealed: bool
    type: SealType
    threshold: int
    shares: int
    progress: int
    installation: str
    #: Why the server is sealed, when it is (a token that cannot be reached, a manual seal, …).
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class RootStatus:
    """Where the root key stands: the active generation and any rotation under way."""

    installation: str
    seal_type: SealType
    active_generation: int
    #: Generations still live besides the active one: a rotation is under way.
    previous_generations: tuple[int, ...]
    #: Blobs still wrapped by a previous generation.
    remaining: int

    @property
    def rotating(self) -> bool:
        return bool(self.previous_generations)


@dataclass(frozen=True, slots=True)
class Wrapped:
    """A blob the root key wrapped, and the generation that wrapped it."""

    generation: int
    blob: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class RootWrappedRow:
    """A stored blob the root key wrapped: an organisation KEK, a region's BYOK wrapping key or
    a purpose key, as a root rotation finds and rewraps it."""

    table: str
    #: The row's key (organisation identity, region, purpose), also the blob's associated data.
    ref: str
    wrapped: Wrapped


class StaleRootGeneration(Unavailable):
    """A blob wrapped (or to be opened) by a root key generation that was retired meanwhile:
    read or wrap again with the active one (a write's transaction rolled back). Callers retry
    once; if it reaches a client, it is a 503 to retry."""

    default_message = "the root key was rotated meanwhile; retry"
