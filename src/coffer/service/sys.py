"""``SysService``: the seal and the root key, as platform administrators and share holders use
them (``/v1/sys/...``, ``coffer operator ...``), and the audit log's public key.

Who may do what: anyone may read the seal's status and give an unseal key share (as with Vault:
the share itself is the credential, and while sealed no token can be checked); sealing, rotating
the root and reading the rotation's state take a platform administrator. Every change is audited
— an unseal once the root is open again (nothing can be written before).
"""

from __future__ import annotations

import logging

from coffer.domain.seal import RootStatus, SealStatus
from coffer.errors import Forbidden, InvalidUnsealKey
from coffer.service.context import RequestMeta
from coffer.service.operations import Operation, Operations
from coffer.service.purposes import PurposeKeys
from coffer.service.root import RootOfTrust, share_bytes
from coffer.service.rotation import RootRotation

log = logging.getLogger(__name__)


class SysService:
    def __init__(
        self,
        root: RootOfTrust,
        rotation: RootRotation,
        purposes: PurposeKeys,
        operations: Operations,
    ) -> None:
        self._root = root
        self._rotation = rotation
        self._purposes = purposes
        self._ops = operations

    @staticmethod
    async def _platform_admin(op: Operation) -> None:
        principal = await op.authenticate()
        if not principal.platform_admin:
            raise Forbidden("only a platform administrator may do this")

    def seal_status(self) -> SealStatus:
        return self._root.status()

    async def unseal(self, meta: RequestMeta, share: str | None, reset: bool) -> SealStatus:
        """Give one share (``reset``: forget the shares given so far)."""
        if reset:
            return await self._root.reset_progress()
        if not share:
            raise InvalidUnsealKey("give an unseal key share (key), or reset")
        raw = share_bytes(share)
        if raw is None:
            log.warning("unseal: a share that is not base64 was refused (request %s)",
                        meta.request_id)  # fmt: skip
            raise InvalidUnsealKey("an unseal key share is base64, as coffer init printed it")
        was_sealed = self._root.sealed
        try:
            status = await self._root.submit_share(raw)
        except InvalidUnsealKey as exc:
            # Sealed, nothing can be recorded in the audit log: the server log keeps it.
            log.warning("unseal: share refused (%s; request %s, from %s)", exc.message,
                        meta.request_id, meta.client_ip)  # fmt: skip
            raise
        if was_sealed and not status.sealed:
            async with self._ops.begin(meta, "sys.unseal") as op:
                op.event.resource_identity = self._root.identity
        return status

    async def seal(self, meta: RequestMeta) -> SealStatus:
        """Seal this server now (its record is written first: sealed, nothing can be)."""
        async with self._ops.begin(meta, "sys.seal") as op:
            await self._platform_admin(op)
            op.event.resource_identity = self._root.identity
        await self._root.seal()
        return self._root.status()

    async def root_status(self, meta: RequestMeta) -> RootStatus:
        async with self._ops.begin(meta, None) as op:
            await self._platform_admin(op)
            return await self._rotation.status()

    async def rotate_root(self, meta: RequestMeta) -> RootStatus:
        """Begin a root rotation; this node drives it in the background (``root_status``)."""
        async with self._ops.begin(meta, "sys.root.rotate") as op:
            await self._platform_admin(op)
            op.event.resource_identity = self._root.identity
            status = await self._rotation.start(op.commit)
        self._rotation.kick()
        return status

    async def audit_public_key(self, meta: RequestMeta) -> str:
        """The checkpoint signing key's public half (PEM), for whoever verifies the log."""
        async with self._ops.begin(meta, None) as op:
            await op.authenticate()
            return (await self._purposes.checkpoint_signer()).public_pem()
