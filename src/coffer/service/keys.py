"""``KeyService``: the KMS operations on keys (spec §5)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from coffer.crypto.algorithms import KeyAlgorithm, algorithm_for
from coffer.crypto.byok import UNWRAP_FAILED, WrappingKey
from coffer.domain.keys import Key, KeyFilter, KeySpec, KeyStatus
from coffer.domain.keytypes import Operation as KeyOperation
from coffer.domain.keytypes import require
from coffer.domain.paging import EVERYTHING, Paged, PageRequest
from coffer.domain.permissions import Action
from coffer.domain.regions import Region
from coffer.domain.signing import ImportHash
from coffer.errors import Conflict, InvalidKeyMaterial, OrganisationShredded, QuotaExceeded
from coffer.service.budget import BUDGETED, EncryptionBudget
from coffer.service.byok import WrappingKeys
from coffer.service.context import Caller, Input, RequestMeta
from coffer.service.keyring import Keyring
from coffer.service.operations import Operations
from coffer.service.scope import KeyScope
from coffer.service.work import ExpensiveWork
from coffer.storage.changes import AddKey
from coffer.storage.repositories import Store


@dataclass(frozen=True, slots=True)
class RegionSummary:
    region: Region
    counts: Mapping[KeyStatus, int]


@dataclass(frozen=True, slots=True)
class KmsSummary:
    feature_enabled: bool
    regions: Sequence[RegionSummary]


@dataclass(frozen=True, slots=True)
class CreateInput:
    """A new key's settings and, for BYOK (spec §5.11), its wrapped material."""

    spec: KeySpec
    import_material: bytes | None = None
    hash_function: ImportHash = ImportHash.SHA256

    def __repr__(self) -> str:
        return f"CreateInput(spec={self.spec!r}, imported={self.import_material is not None})"


@dataclass(frozen=True, slots=True)
class Scoped:
    """A key together with the organisation it belongs to (what a key response shows)."""

    key: Key
    caller: Caller
    #: Encryptions counted per version (one budgeted key read on its own), else ``None``.
    encryptions: Mapping[int, int] | None = None


class KeyService:
    def __init__(
        self,
        store: Store,
        operations: Operations,
        keyring: Keyring,
        scope: KeyScope,
        wrapping: WrappingKeys,
        clock: Callable[[], datetime],
        *,
        max_keys: int = 10_000,
        budget: EncryptionBudget | None = None,
        work: ExpensiveWork | None = None,
    ) -> None:
        self._work = work or ExpensiveWork(threads=2, queue=64)
        self._max_keys = max_keys
        self._budget = budget
        self._store = store
        self._wrapping = wrapping
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
        self,
        meta: RequestMeta,
        region_ref: str,
        key_filter: Input[KeyFilter],
        page: Input[PageRequest] = lambda: EVERYTHING,
    ) -> tuple[Caller, Paged[Key]]:
        async with self._ops.begin(meta, "kms.key.list") as op:
            caller = await op.authorise()
            region = self._scope.region(op, region_ref)
            self._scope.require_collection(caller, Action.LIST)
            keys = await self._store.list_keys(
                caller.organisation.identity,
                region.identity,
                caller.project_identity,
                key_filter(),
                page(),
            )
            return caller, keys

    async def create_key(
        self, meta: RequestMeta, region_ref: str, request: Input[CreateInput]
    ) -> Scoped:
        async with self._ops.begin(meta, "kms.key.create") as op:
            caller = await op.authorise()
            region = self._scope.region(op, region_ref)
            self._scope.require_collection(caller, Action.CREATE)
            if caller.organisation.shredded_at is not None:
                raise OrganisationShredded()
            given = request()
            held = await self._store.count_organisation_keys(caller.organisation.identity)
            if held >= self._max_keys:
                raise QuotaExceeded(
                    f"the organisation has {held} keys, its quota is {self._max_keys}: delete "
                    "keys (they count until purged) or ask the operator to raise "
                    "max_keys_per_organisation"
                )
            new = given.spec
            algorithm = algorithm_for(new.key_type)
            if given.import_material is None:
                # Generating material can be slow (RSA): on the bounded pool, off the loop.
                material = await self._work.generate(new.key_type, algorithm.generate)
            else:
                require(new.key_type, KeyOperation.IMPORT)
                # Only this organisation's keys: a blob wrapped for another does not open.
                accepted = await self._wrapping.accepted(caller.organisation.identity, region)
                material = await self._work.run(
                    self._unwrap, accepted, algorithm, given.import_material, given.hash_function
                )
            handle = algorithm.load(material)
            key = new.new_key(
                organisation_identity=caller.organisation.identity,
                region=region.identity,
                project_identity=caller.project_identity,
                imported=given.import_material is not None,
                now=self._clock(),
            )
            op.touch(key)
            wrapped = await self._keyring.wrap(key, 1, material)
            try:
                await op.commit(AddKey(key, {1: wrapped}))
            except Conflict:
                raise Conflict(
                    f"a key with slug {key.slug!r} already exists in this region and scope"
                ) from None
            self._keyring.remember(key, 1, handle)
            op.event.key_version = 1
            return Scoped(key, caller)

    @staticmethod
    def _unwrap(
        accepted: Sequence[WrappingKey],
        algorithm: KeyAlgorithm,
        blob: bytes,
        hash_function: ImportHash,
    ) -> bytes:
        # An RSA-4096 decryption and, for RSA targets, a full key check: milliseconds of CPU.
        # Every accepted key is tried; whichever fails, the caller sees the one unwrap error.
        failed: InvalidKeyMaterial | None = None
        for wrapping in accepted:
            try:
                return algorithm.import_material(wrapping.unwrap(blob, hash_function))
            except InvalidKeyMaterial as refused:
                failed = refused
        raise failed or InvalidKeyMaterial(UNWRAP_FAILED)

    async def wrapping_key(self, meta: RequestMeta, region_ref: str) -> tuple[str, datetime]:
        """The calling organisation's BYOK wrapping key in the region, PEM SubjectPublicKeyInfo
        (spec §5.11 step 1), and when it stops being handed out."""
        async with self._ops.begin(meta, "kms.wrapping_key.read") as op:
            caller = await op.authorise()
            region = self._scope.region(op, region_ref)
            self._scope.require_collection(caller, Action.CREATE)
            key, expires_at = await self._wrapping.current(
                caller.organisation.identity, region, op.commit
            )
            return key.public_pem, expires_at

    async def get_key(self, meta: RequestMeta, region_ref: str, key_ref: str) -> Scoped:
        async with self._ops.begin(meta, "kms.key.read") as op:
            caller = await op.authorise()
            region = self._scope.region(op, region_ref)
            key = await self._scope.authorised_key(op, caller, region, key_ref, Action.READ)
            counts = None
            if key.key_type in BUDGETED:
                counts = (
                    await self._budget.made(key.identity)
                    if self._budget is not None
                    else dict(await self._store.encryption_counts(key.identity))
                )
            return Scoped(key, caller, counts)
