"""The storage ports the service layer depends on.

Reads go through ``Store``; every write happens inside one ``Transaction`` (all or nothing), so a
failed request never leaves a partial write behind.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from coffer.domain.audit import AuditFilter, ChainRow, ChainTip, Checkpoint, PruneMark
from coffer.domain.keys import Key, KeyFilter, KeyStatus
from coffer.domain.paging import EVERYTHING, Paged, PageRequest
from coffer.domain.permissions import RoleBinding
from coffer.domain.seal import (
    Installation,
    RootGeneration,
    RootWrappedRow,
    Wrapped,
)
from coffer.domain.tenants import Organisation, Principal, Project, TokenInfo
from coffer.errors import CofferError


@dataclass(frozen=True, slots=True)
class TokenRecord:
    identity: str
    principal: Principal
    expires_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class WrappingKeyRecord:
    """One BYOK wrapping key of an organisation in a region, its private key wrapped by the
    organisation's KEK (``schema.byok_wrapping_keys``)."""

    identity: str
    organisation_identity: str
    region: str
    number: int
    wrapped_private: bytes = field(repr=False)
    created_at: datetime
    expires_at: datetime


class Macs(Protocol):
    """Row MACs under the root of trust's purpose key (``coffer.crypto.integrity.RowMacs``)."""

    def of(self, table: str, values: tuple[Any, ...]) -> bytes: ...

    def verify(self, table: str, values: tuple[Any, ...], mac: bytes | None) -> bool: ...


class Integrity(Protocol):
    """What reads do with authenticated rows (``coffer.service.integrity``)."""

    def check(self, table: str, identity: str, values: tuple[Any, ...], mac: bytes | None) -> bool:
        """Whether ``mac`` is the row's; a row that fails is reported (log, metric, audit) and
        must be treated as absent."""
        ...

    def report(self, table: str, identity: str, what: str) -> None:
        """Report an integrity failure of another kind (a row rolled back, …)."""
        ...


class Change(Protocol):
    """A write of one request (``coffer.storage.changes``), applied in the transaction of its
    audit record: all of it or none of it."""

    @property
    def quiet_if_refused(self) -> bool:
        """Whether a refusal (a race another node won) leaves no audit record either."""
        ...

    @property
    def object_version(self) -> int | None:
        """The version of the row it changes, after it (``None``: a row without versions, or
        several rows), written into its audit record as ``objectVersion``."""
        ...

    def apply(self, conn: Any, macs: Macs) -> None:
        """Run its statements on ``conn`` (a synchronous SQLAlchemy connection), writing each
        authenticated row with its MAC; raise a ``CofferError`` (``Conflict``, …) to refuse."""
        ...


class Transaction(Protocol):
    @property
    def connection(self) -> Any: ...


class RootStore(Protocol):
    """The root of trust's rows (``coffer.storage.sql_root`` says how writes and rotations keep
    every blob under a live generation)."""

    async def installation(self) -> Installation | None: ...

    async def root_state(self) -> tuple[Installation | None, Sequence[RootGeneration]]:
        """The installation and its generations, read as one snapshot."""
        ...

    async def all_root_wrapped(self) -> Sequence[RootWrappedRow]:
        """Every blob the root key wraps."""
        ...

    async def forget_deleted(self) -> None:
        """Drop what the engine keeps of deleted and replaced rows, where it can (after a
        crypto-shred or a root rotation)."""
        ...

    async def root_generations(self) -> Sequence[RootGeneration]: ...

    async def wrapped_by_root_below(
        self, generation: int, limit: int
    ) -> Sequence[RootWrappedRow]: ...

    async def rewrap_root(self, rewrapped: Sequence[tuple[RootWrappedRow, Wrapped]]) -> None:
        """Store each row's new blob unless another node did already."""
        ...

    async def count_wrapped_by_root_below(self, generation: int) -> int: ...

    async def purpose_keys(self) -> Mapping[str, Wrapped]: ...

    async def add_purpose_key(self, purpose: str, wrapped: Wrapped, now: datetime) -> None:
        """``Conflict`` if the purpose has a key already (another node made it first)."""
        ...


class Store(RootStore, Protocol):
    def transaction(self) -> AbstractAsyncContextManager[Transaction]: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise ``Unavailable`` if the database cannot be reached."""
        ...

    async def find_organisation(self, ref: str) -> Organisation | None: ...

    async def wrapped_kek(self, organisation_identity: str) -> bytes | None: ...

    async def find_project(self, organisation_identity: str, ref: str) -> Project | None: ...

    async def find_token(self, digest: bytes) -> TokenRecord | None: ...

    async def bindings(
        self, principal_identity: str, organisation_identity: str
    ) -> Sequence[RoleBinding]: ...

    async def find_key(
        self,
        organisation_identity: str,
        region: str,
        project_identity: str | None,
        ref: str,
    ) -> Key | None:
        """The key of that scope whose identity or slug is ``ref`` (identity wins)."""
        ...

    async def list_keys(
        self,
        organisation_identity: str,
        region: str,
        project_identity: str | None,
        key_filter: KeyFilter,
        page: PageRequest = EVERYTHING,
    ) -> Paged[Key]:
        """Keys of one scope, ordered by (createdAt, identity), one page of them."""
        ...

    async def count_keys(
        self, organisation_identity: str, project_identity: str | None
    ) -> Mapping[tuple[str, KeyStatus], int]:
        """Number of keys of one scope by (region, status)."""
        ...

    async def reserve_encryptions(
        self, key_identity: str, version: int, wanted: int, budget: int
    ) -> int:
        """Reserve up to ``wanted`` encryptions of a key version against ``budget``, durably;
        how many were granted (``wanted``, or 1 near the end, or 0 once it is spent)."""
        ...

    async def reserve_encryptions_of(
        self, versions: Sequence[tuple[str, int]], wanted: int, budget: int
    ) -> list[int]:
        """``reserve_encryptions`` of several (key identity, version) pairs in one durable
        transaction (one commit for all: a group commit); the grants, in order."""
        ...

    async def encryption_counts(self, key_identity: str) -> Mapping[int, int]:
        """Encryptions reserved so far, by version."""
        ...

    async def count_organisation_keys(self, organisation_identity: str) -> int:
        """Keys of an organisation, every region, project and state (not yet purged)."""
        ...

    async def keys_due_for_rotation(
        self, now: datetime, limit: int, after: str = ""
    ) -> tuple[Sequence[Key], str | None]:
        """Active keys whose automatic rotation is due at ``now``, of identity after ``after``
        (at most ``limit`` rows read), and the last identity read (``None``: none left). Rows
        refused by the storage barrier are left out but still move the cursor on."""
        ...

    async def keys_due_for_purge(
        self, now: datetime, limit: int, after: str = ""
    ) -> tuple[Sequence[Key], str | None]:
        """Keys pending deletion whose retention has elapsed at ``now``, as above."""
        ...

    async def wrapped_version(self, key_identity: str, version: int) -> bytes | None: ...

    async def wrapping_keys(
        self, organisation_identity: str, region: str, limit: int
    ) -> Sequence[WrappingKeyRecord]:
        """The organisation's newest BYOK wrapping keys in the region, newest first."""
        ...


#: Given the outcome of each key write (``None``: applied), the chain rows to append and an
#: optional checkpoint. Runs inside the transaction, so it must not block.
#: Given each change's refusal (``None``: applied) and the chain's end as locked by the
#: transaction, the rows to append and the checkpoint to sign, if one is due.
BuildRows = Callable[
    [Sequence[CofferError | None], ChainTip],
    tuple[Sequence[ChainRow], Checkpoint | None],
]


class AuditStore(Protocol):
    async def probe_write(self) -> None:
        """``Unavailable`` unless the database can be written now (a write that changes
        nothing)."""
        ...

    async def close(self) -> None: ...

    async def audit_head(self) -> tuple[int, bytes]:
        """(sequence number, hash) of the newest record: (0, 32 zero bytes) when empty."""
        ...

    async def append_audit(self, changes: Sequence[Change | None], build: BuildRows) -> None:
        """One durable transaction: lock the chain head, apply each change (each on its own,
        so one that is refused leaves the others), then append the rows ``build`` makes knowing
        which were refused and where the chain stands, and move the head."""
        ...

    async def apply_change(self, change: Change) -> None:
        """Apply a change on its own, in a transaction of its own (``coffer init``, and a sink
        that keeps no records); raises its refusal."""
        ...

    async def add_audit_checkpoint(
        self, build: Callable[[ChainTip], Checkpoint | None]
    ) -> Checkpoint | None:
        """Record the checkpoint ``build`` makes of the chain's end, with the head locked (so
        that it follows the newest checkpoint); ``None`` if it makes none."""
        ...

    async def audit_keyed_from(self) -> int | None:
        """The first record whose link is keyed (records before were linked with SHA-256);
        ``None`` until the first record is written since keyed links."""
        ...

    async def audit_rows(self, after_seq: int, limit: int) -> Sequence[ChainRow]:
        """Stored records after ``after_seq``, in sequence order."""
        ...

    async def audit_checkpoints(self) -> Sequence[Checkpoint]: ...

    async def audit_page(
        self, organisation_identity: str, audit_filter: AuditFilter, offset: int, limit: int
    ) -> tuple[Sequence[str], int]:
        """One page of an organisation's records (canonical JSON) and the total."""
        ...

    async def prune_audit(self, mark: PruneMark) -> int:
        """Delete records up to ``mark.seq`` (a checkpointed sequence number) and keep the mark."""
        ...

    async def audit_prune_marks(self) -> Sequence[PruneMark]: ...


class IamStore(Protocol):
    """The reads of IAM administration."""

    async def organisations(
        self, member: str | None, page: PageRequest = EVERYTHING
    ) -> Paged[Organisation]: ...

    async def projects(
        self, organisation_identity: str, page: PageRequest = EVERYTHING
    ) -> Paged[Project]: ...

    async def service_accounts(
        self, organisation_identity: str, page: PageRequest = EVERYTHING
    ) -> Paged[Principal]: ...

    async def find_service_account(
        self, organisation_identity: str, ref: str
    ) -> Principal | None: ...

    async def find_principal(self, identity: str) -> Principal | None: ...

    async def platform_admins(self) -> Sequence[Principal]: ...

    async def platform_tokens(self, page: PageRequest = EVERYTHING) -> Paged[TokenInfo]: ...

    async def tokens(
        self, organisation_identity: str, page: PageRequest = EVERYTHING
    ) -> Paged[TokenInfo]: ...

    async def find_token(self, organisation_identity: str, identity: str) -> TokenInfo | None: ...

    async def role_bindings(
        self, organisation_identity: str, page: PageRequest = EVERYTHING
    ) -> Paged[RoleBinding]: ...

    async def has_key(self, organisation_identity: str, key_identity: str) -> bool: ...
