"""``CryptoService``: the operations that use a key's material (spec §5.5–5.8, §5.10).

Each follows spec §1.1: the caller, the region, the key and the permission first; then what the
request asks, checked against the key type's capabilities and the key's state; then the
cryptography, on a handle loaded once per key version and cached.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from coffer.crypto.handles import KeyHandle
from coffer.domain import formats
from coffer.domain.keys import Key, check_plaintext_size
from coffer.domain.keytypes import Operation as KeyOperation
from coffer.domain.keytypes import max_plaintext, require
from coffer.domain.permissions import Action
from coffer.domain.signing import SignOptions, check_input_size, check_no_context, mac_hash
from coffer.errors import (
    EncryptionBudgetExhausted,
    InvalidCiphertext,
    InvalidKeyVersion,
    InvalidSignatureFormat,
)
from coffer.service.budget import BUDGETED, EncryptionBudget
from coffer.service.context import Input, RequestMeta
from coffer.service.keyring import Keyring
from coffer.service.operations import Operation, Operations
from coffer.service.scope import KeyScope
from coffer.service.work import ExpensiveWork

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class EncryptInput:
    plaintext: bytes
    key_version: int | None

    def __repr__(self) -> str:
        return (
            f"EncryptInput(plaintext=<{len(self.plaintext)} bytes>, key_version={self.key_version})"
        )


@dataclass(frozen=True, slots=True)
class SignInput:
    data: bytes
    key_version: int | None
    hash_algorithm: str | None
    prehashed: bool
    signature_algorithm: str | None
    marshaling_algorithm: str | None
    context: bytes | None

    def __repr__(self) -> str:
        return f"SignInput(data=<{len(self.data)} bytes>, key_version={self.key_version})"

    def options(self, key: Key) -> SignOptions:
        check_no_context(self.context)
        options = SignOptions.for_key(
            key.key_type,
            hash_algorithm=self.hash_algorithm,
            prehashed=self.prehashed,
            signature_algorithm=self.signature_algorithm,
            marshaling_algorithm=self.marshaling_algorithm,
        )
        options.check_input(self.data)
        return options


@dataclass(frozen=True, slots=True)
class MacInput:
    data: bytes
    key_version: int | None
    algorithm: str | None

    def __repr__(self) -> str:
        return f"MacInput(data=<{len(self.data)} bytes>, key_version={self.key_version})"


@dataclass(frozen=True, slots=True)
class Checked:
    """A signature or MAC to check, in its ``thalassa:vN:`` form."""

    value: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Versioned:
    """An output string (ciphertext, signature, MAC) or bytes, and the key version behind it."""

    value: str
    key_version: int


@dataclass(frozen=True, slots=True)
class Plain:
    """Bytes for the caller (plaintext, exported key) and the version they came from."""

    data: bytes
    key_version: int

    def __repr__(self) -> str:
        return f"Plain(data=<redacted>, key_version={self.key_version})"


@dataclass(frozen=True, slots=True)
class Verdict:
    valid: bool
    key_version: int


class CryptoService:
    def __init__(
        self,
        operations: Operations,
        keyring: Keyring,
        scope: KeyScope,
        budget: EncryptionBudget | None = None,
        rotate_spent: Callable[[Key, int], Awaitable[Key]] | None = None,
        work: ExpensiveWork | None = None,
    ) -> None:
        self._work = work or ExpensiveWork(threads=2, queue=64)
        self._ops = operations
        self._keyring = keyring
        self._scope = scope
        self._budget = budget
        self._rotate_spent = rotate_spent

    async def _key(self, op: Operation, region_ref: str, key_ref: str, action: Action) -> Key:
        caller = await op.authorise()
        region = self._scope.region(op, region_ref)
        return await self._scope.authorised_key(op, caller, region, key_ref, action)

    @staticmethod
    def _usable(key: Key, operation: KeyOperation) -> None:
        require(key.key_type, operation)
        key.ensure_usable()

    @staticmethod
    def _checkable_version(key: Key, value: str, what: str) -> formats.Versioned:
        """The version and body of a signature or MAC to verify."""
        versioned = formats.decode(value, InvalidSignatureFormat)
        if not key.can_decrypt(versioned.version):
            raise InvalidKeyVersion(
                f"the {what} names key version {versioned.version}; this key verifies versions "
                f"{key.min_decryption_version} to {key.latest_version}"
            )
        return versioned

    # --- encrypt / decrypt (§5.5) ---------------------------------------------------------------

    async def encrypt(
        self, meta: RequestMeta, region_ref: str, key_ref: str, request: Input[EncryptInput]
    ) -> Versioned:
        async with self._ops.begin(meta, "kms.encrypt") as op:
            key = await self._key(op, region_ref, key_ref, Action.ENCRYPT)
            given = request()
            self._usable(key, KeyOperation.ENCRYPT)
            use = key.version_for_use(given.key_version)
            op.event.key_version = use
            op.event.plaintext_bytes = len(given.plaintext)
            check_plaintext_size(len(given.plaintext), max_plaintext(key.key_type))
            budget = self._budget
            if (
                budget is not None
                and key.key_type in BUDGETED
                and not budget.take_reserved(key.identity, use)
            ):
                key, use = await self._within_budget(key, use, given.key_version is not None)
                op.event.key_version = use
            body = (await self._keyring.handle(key, use)).encrypt(given.plaintext)
            op.event.ciphertext_bytes = len(body)
            return Versioned(formats.encode(use, body), use)

    async def _private(self, handle: KeyHandle, operation: Callable[..., T], *args: Any) -> T:
        """A private-key operation inline, or on the bounded pool if the handle's are slow."""
        if handle.slow_private_operations:
            return await self._work.run(operation, *args)
        return operation(*args)

    async def _within_budget(self, key: Key, use: int, asked: bool) -> tuple[Key, int]:
        """Count this encryption against the version's budget; when it is spent, the key is
        rotated and the new version used — unless the caller asked for this version."""
        assert self._budget is not None
        while not await self._budget.take(key.identity, use):
            if asked or self._rotate_spent is None:
                raise EncryptionBudgetExhausted(
                    f"version {use} has made its {self._budget.budget} encryptions: encrypt "
                    "with the latest version (leave keyVersion out)"
                )
            key = await self._rotate_spent(key, use)
            use = key.latest_version
        return key, use

    async def decrypt(
        self, meta: RequestMeta, region_ref: str, key_ref: str, ciphertext: Input[str]
    ) -> Plain:
        async with self._ops.begin(meta, "kms.decrypt") as op:
            key = await self._key(op, region_ref, key_ref, Action.DECRYPT)
            given = ciphertext()
            self._usable(key, KeyOperation.DECRYPT)
            versioned = formats.decode(given, InvalidCiphertext)
            op.event.ciphertext_bytes = len(versioned.body)
            if not key.can_decrypt(versioned.version):
                raise InvalidCiphertext()
            op.event.key_version = versioned.version
            handle = await self._keyring.handle(key, versioned.version)
            plaintext = await self._private(handle, handle.decrypt, versioned.body)
            op.event.plaintext_bytes = len(plaintext)
            return Plain(plaintext, versioned.version)

    # --- sign / verify (§5.6) -------------------------------------------------------------------

    async def sign(
        self, meta: RequestMeta, region_ref: str, key_ref: str, request: Input[SignInput]
    ) -> Versioned:
        async with self._ops.begin(meta, "kms.sign") as op:
            key = await self._key(op, region_ref, key_ref, Action.SIGN)
            given = request()
            self._usable(key, KeyOperation.SIGN)
            options = given.options(key)
            use = key.version_for_use(given.key_version)
            op.event.key_version = use
            op.event.plaintext_bytes = len(given.data)
            handle = await self._keyring.handle(key, use)
            signature = await self._private(handle, handle.sign, given.data, options)
            return Versioned(formats.encode(use, signature), use)

    async def verify(
        self,
        meta: RequestMeta,
        region_ref: str,
        key_ref: str,
        request: Input[tuple[SignInput, str]],
    ) -> Verdict:
        async with self._ops.begin(meta, "kms.verify") as op:
            key = await self._key(op, region_ref, key_ref, Action.VERIFY)
            given, signature = request()
            self._usable(key, KeyOperation.VERIFY)
            options = given.options(key)
            op.event.plaintext_bytes = len(given.data)
            versioned = self._checkable_version(key, signature, "signature")
            op.event.key_version = versioned.version
            handle = await self._keyring.handle(key, versioned.version)
            return Verdict(handle.verify(given.data, versioned.body, options), versioned.version)

    # --- HMAC (§5.7) ----------------------------------------------------------------------------

    async def hmac(
        self, meta: RequestMeta, region_ref: str, key_ref: str, request: Input[MacInput]
    ) -> Versioned:
        async with self._ops.begin(meta, "kms.hmac") as op:
            key = await self._key(op, region_ref, key_ref, Action.HMAC)
            given = request()
            self._usable(key, KeyOperation.HMAC)
            digest = mac_hash(key.key_type, given.algorithm)
            check_input_size(given.data)
            use = key.version_for_use(given.key_version)
            op.event.key_version = use
            op.event.plaintext_bytes = len(given.data)
            tag = (await self._keyring.handle(key, use)).mac(given.data, digest)
            return Versioned(formats.encode(use, tag), use)

    async def verify_hmac(
        self,
        meta: RequestMeta,
        region_ref: str,
        key_ref: str,
        request: Input[tuple[MacInput, str]],
    ) -> Verdict:
        async with self._ops.begin(meta, "kms.verify_hmac") as op:
            key = await self._key(op, region_ref, key_ref, Action.VERIFY_HMAC)
            given, mac = request()
            self._usable(key, KeyOperation.VERIFY_HMAC)
            digest = mac_hash(key.key_type, given.algorithm, "hashAlgorithm")
            check_input_size(given.data)
            op.event.plaintext_bytes = len(given.data)
            versioned = self._checkable_version(key, mac, "hmac")
            op.event.key_version = versioned.version
            handle = await self._keyring.handle(key, versioned.version)
            return Verdict(handle.verify_mac(given.data, versioned.body, digest), versioned.version)

    # --- public key (§5.8) and export (§5.10) ---------------------------------------------------

    async def public_key(
        self, meta: RequestMeta, region_ref: str, key_ref: str, version: Input[int | None]
    ) -> Mapping[int, str]:
        async with self._ops.begin(meta, "kms.public_key.read") as op:
            key = await self._key(op, region_ref, key_ref, Action.READ)
            requested = version()
            self._usable(key, KeyOperation.PUBLIC_KEY)
            if requested is not None:
                versions = [key.version_for_use(requested)]
                op.event.key_version = requested
            else:
                versions = list(range(key.min_decryption_version, key.latest_version + 1))
            return {v: (await self._keyring.handle(key, v)).public_key() for v in versions}

    async def export(
        self, meta: RequestMeta, region_ref: str, key_ref: str, version: Input[int | None]
    ) -> Plain:
        async with self._ops.begin(meta, "kms.export") as op:
            key = await self._key(op, region_ref, key_ref, Action.EXPORT)
            requested = version()
            key.ensure_exportable()
            use = key.version_for_use(requested)
            op.event.key_version = use
            return Plain(await self._keyring.material(key, use), use)
