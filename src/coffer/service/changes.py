"""``Changes``: cache coherence across nodes.

A change that makes a cached entry wrong (a key's new state, a destroyed key, a revoked token, a
removed binding, a switched feature gate) is applied to this node's caches at once, and published
on a change bus so that every other node drops its copy too: on PostgreSQL through
``LISTEN``/``NOTIFY`` (``coffer.storage.postgres``); with SQLite there is one node and no bus. A
notification that is missed (a node reconnecting) is covered by dropping every cache on
reconnection, and the cache TTL stays the last safety net.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from coffer.domain.keys import Key
from coffer.errors import CofferError
from coffer.service.access import AccessService
from coffer.service.caches import KeyCache
from coffer.service.keyring import Keyring
from coffer.service.root import RootOfTrust

log = logging.getLogger(__name__)


class ChangeBus(Protocol):
    async def publish(self, payload: str) -> None: ...

    async def listen(self, on_change: Callable[[str], None], on_reset: Callable[[], None]) -> None:
        """Deliver notifications until cancelled; ``on_reset`` after each (re)connection."""
        ...

    async def close(self) -> None: ...


class Changes:
    def __init__(
        self,
        keys: KeyCache,
        keyring: Keyring,
        access: AccessService,
        bus: ChangeBus | None,
        root: RootOfTrust | None = None,
    ) -> None:
        self._keys = keys
        self._keyring = keyring
        self._access = access
        self._bus = bus
        self._root = root
        self._refreshing: set[asyncio.Task[None]] = set()

    async def _publish(self, payload: str) -> None:
        if self._bus is not None:
            await self._bus.publish(payload)

    async def key_changed(self, key: Key) -> None:
        self._keys.invalidate(key.identity)
        await self._publish(f"key {key.identity}")

    async def key_destroyed(self, key: Key) -> None:
        self._keys.invalidate(key.identity)
        self._keyring.forget(key.identity, key.latest_version)
        await self._publish(f"destroyed {key.identity} {key.latest_version}")

    async def access_changed(self) -> None:
        self._access.forget_all()
        await self._publish("access")

    async def organisation_shredded(self, organisation_identity: str) -> None:
        self._shredded(organisation_identity)
        await self._publish(f"shredded {organisation_identity}")

    def _shredded(self, organisation_identity: str) -> None:
        # Rare: every cached key and handle goes, rather than finding the organisation's.
        self._keys.clear()
        self._keyring.forget_organisation(organisation_identity)
        self._keyring.clear()
        self._access.forget_all()

    async def root_changed(self) -> None:
        """A root key generation began or was retired: other nodes read the generations again."""
        await self._publish("root")

    def _refresh_root(self) -> None:
        if self._root is None:
            return
        task = asyncio.get_running_loop().create_task(self._refresh_logged(self._root))
        self._refreshing.add(task)
        task.add_done_callback(self._refreshing.discard)

    @staticmethod
    async def _refresh_logged(root: RootOfTrust) -> None:
        try:
            await root.refresh()
        except CofferError as exc:  # the database away: the seal's watcher tries again soon
            log.warning("root key generations could not be read again: %s", exc.code)
        except Exception:
            log.exception("root key generations could not be read again")

    def receive(self, payload: str) -> None:
        """Apply another node's change (or an echo of this node's: applying twice is harmless)."""
        match payload.split(" "):
            case ["key", identity]:
                self._keys.invalidate(identity)
            case ["destroyed", identity, latest] if latest.isdigit():
                self._keys.invalidate(identity)
                self._keyring.forget(identity, int(latest))
            case ["access"]:
                self._access.forget_all()
            case ["shredded", organisation]:
                self._shredded(organisation)
            case ["root"]:
                self._refresh_root()
            case _:
                log.warning("unknown change notification ignored")

    def reset(self) -> None:
        """Drop what may have changed unheard (loaded key versions never change)."""
        self._keys.clear()
        self._access.forget_all()
        self._refresh_root()

    async def listen_forever(self) -> None:
        if self._bus is not None:
            await self._bus.listen(self.receive, self.reset)

    async def close(self) -> None:
        if self._bus is not None:
            await self._bus.close()
