"""``KeyService``: the KMS operations on keys (spec §5)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from coffer.crypto.algorithms import algorithm_for
from coffer.domain import formats
from coffer.domain.keys import Key, KeyFilter, KeySpec, KeyStatus, check_plaintext_size
from coffer.domain.keytypes import Operation as KeyOperation
from coffer.domain.keytypes import require
from coffer.domain.permissions import Action
from coffer.domain.regions import Region
from coffer.errors import Conflict, InvalidCiphertext
from coffer.service.context import Caller, Input, RequestMeta
from coffer.service.keyring import Keyring
from coffer.service.operations import Operations
from coffer.service.scope import KeyScope
from coffer.storage.repositories import Store


@dataclass(frozen=True, slots=True)
class EncryptInput:
    plaintext: bytes
    key_version: int | None

    def __repr__(self) -> str:
        return (
            f"EncryptInput(plaintext=<{len(self.plaintext)} bytes>, key_version={self.key_version})"
        )


@dataclass(frozen=True, slots=True)
class RegionSummary:
    region: Region
    counts: Mapping[KeyStatus, int]


@dataclass(frozen=True, slots=True)
class KmsSummary:
    feature_enabled: bool
    regions: Sequence[RegionSummary]


@dataclass(frozen=True, slots=True)
class Encrypted:
    ciphertext: str
    key_version: int


@dataclass(frozen=True, slots=True)
class Decrypted:
    plaintext: bytes
    key_version: int

    def __repr__(self) -> str:
        return f"Decrypted(plaintext=<redacted>, key_version={self.key_version})"


@dataclass(frozen=True, slots=True)
class Scoped:
    """A key together with the organisation it belongs to (what a key response shows)."""

    key: Key
    caller: Caller


class KeyService:
    def __init__(
        self,
        store: Store,
        operations: Operations,
        keyring: Keyring,
        scope: KeyScope,
        clock: Callable[[], datetime],
    ) -> None:
        self._store = store
        self._ops = operations
        self._keyring = keyring
        self._scope = scope
        self._clock = clock

    # --- operations -------------------------------------------------------------------------

    async def summary(self, meta: RequestMeta) -> KmsSummary:
        async with self._ops.begin(meta, None) as op:
            caller = await op.authorise(require_feature=False)
            enabled = caller.organisation.kms_enabled
            # Counts are list-level information (spec §7): members without it see zeros.
            may_list = Action.LIST in caller.grants.in_scope(caller.project_identity)
            counts = (
                await self._store.count_keys(caller.organisation.identity, caller.project_identity)
                if enabled and may_list
                else {}
            )
            return KmsSummary(
                feature_enabled=enabled,
                regions=[
                    RegionSummary(
                        region,
                        {status: counts.get((region.identity, status), 0) for status in KeyStatus},
                    )
                    for region in self._scope.regions
                ],
            )

    async def list_keys(
        self, meta: RequestMeta, region_ref: str, key_filter: Input[KeyFilter]
    ) -> tuple[Caller, Sequence[Key]]:
        async with self._ops.begin(meta, "kms.key.list") as op:
            caller = await op.authorise()
            region = self._scope.region(op, region_ref)
            self._scope.require_collection(caller, Action.LIST)
            keys = await self._store.list_keys(
                caller.organisation.identity,
                region.identity,
                caller.project_identity,
                key_filter(),
            )
            return caller, keys

    async def create_key(self, meta: RequestMeta, region_ref: str, spec: Input[KeySpec]) -> Scoped:
        async with self._ops.begin(meta, "kms.key.create") as op:
            caller = await op.authorise()
            region = self._scope.region(op, region_ref)
            self._scope.require_collection(caller, Action.CREATE)
            new = spec()
            algorithm = algorithm_for(new.key_type)
            # Generating material can be slow (RSA); keep it off the event loop.
            material = await asyncio.to_thread(algorithm.generate)
            handle = algorithm.load(material)
            key = new.new_key(
                organisation_identity=caller.organisation.identity,
                region=region.identity,
                project_identity=caller.project_identity,
                imported=False,
                now=self._clock(),
            )
            op.touch(key)
            wrapped = await self._keyring.wrap(key, 1, material)
            try:
                async with self._store.transaction() as tx:
                    await tx.add_key(key, {1: wrapped})
            except Conflict:
                raise Conflict(
                    f"a key with slug {key.slug!r} already exists in this region and scope"
                ) from None
            self._keyring.remember(key, 1, handle)
            op.event.key_version = 1
            return Scoped(key, caller)

    async def get_key(self, meta: RequestMeta, region_ref: str, key_ref: str) -> Scoped:
        async with self._ops.begin(meta, "kms.key.read") as op:
            caller = await op.authorise()
            region = self._scope.region(op, region_ref)
            key = await self._scope.authorised_key(op, caller, region, key_ref, Action.READ)
            return Scoped(key, caller)

    async def encrypt(
        self,
        meta: RequestMeta,
        region_ref: str,
        key_ref: str,
        request: Input[EncryptInput],
    ) -> Encrypted:
        async with self._ops.begin(meta, "kms.encrypt") as op:
            caller = await op.authorise()
            region = self._scope.region(op, region_ref)
            key = await self._scope.authorised_key(op, caller, region, key_ref, Action.ENCRYPT)
            given = request()
            require(key.key_type, KeyOperation.ENCRYPT)
            key.ensure_usable()
            use = key.version_for_use(given.key_version)
            op.event.key_version = use
            op.event.plaintext_bytes = len(given.plaintext)
            check_plaintext_size(len(given.plaintext))
            body = (await self._keyring.handle(key, use)).encrypt(given.plaintext)
            op.event.ciphertext_bytes = len(body)
            return Encrypted(formats.encode(use, body), use)

    async def decrypt(
        self, meta: RequestMeta, region_ref: str, key_ref: str, ciphertext: Input[str]
    ) -> Decrypted:
        async with self._ops.begin(meta, "kms.decrypt") as op:
            caller = await op.authorise()
            region = self._scope.region(op, region_ref)
            key = await self._scope.authorised_key(op, caller, region, key_ref, Action.DECRYPT)
            given = ciphertext()
            require(key.key_type, KeyOperation.DECRYPT)
            key.ensure_usable()
            versioned = formats.decode(given, InvalidCiphertext)
            op.event.ciphertext_bytes = len(versioned.body)
            if not key.can_decrypt(versioned.version):
                raise InvalidCiphertext()
            op.event.key_version = versioned.version
            plaintext = (await self._keyring.handle(key, versioned.version)).decrypt(versioned.body)
            op.event.plaintext_bytes = len(plaintext)
            return Decrypted(plaintext, versioned.version)
