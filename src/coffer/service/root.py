"""``RootOfTrust``: the root key, opened by its seal, and the seal's state.

While the root key is open ("unsealed") this object wraps and unwraps for the key hierarchy:
organisation KEKs, regions' BYOK wrapping keys and purpose keys. Each blob names the generation
of the root key that wrapped it (``coffer.crypto.root``); every live generation is held open, so a
blob written before a rotation still opens while the rotation rewraps it.

Sealed, it holds no key at all: every use raises ``Sealed`` (503 ``sealed``), nothing is written or
signed, and ``GET /v1/sys/seal-status`` says why. A server is sealed

* with the Shamir seal, from start until enough unseal key shares were given, and again after
  ``coffer operator seal``;
* with the PKCS #11 seal, while its token cannot be reached or refuses the PIN: a watcher asks the
  token every few seconds and reopens it when it is back, without a restart;
* with any seal, after ``coffer operator seal`` (the file and PKCS #11 seals open again at the next
  start).

Every generation that is opened is checked against its check value first: a wrong root key is
refused, never used.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from typing import TypeVar

from coffer.crypto.hsm import HsmUnavailable, calls_of
from coffer.crypto.root import (
    RootCipher,
    RootKeyError,
    SoftwareCipher,
    check_aad,
    generation_of,
    make_check_value,
    open_blob,
    opens_check_value,
    seal_blob,
)
from coffer.crypto.seals import FileSeal, NewKey, Pkcs11Seal, Seal, ShamirSeal, share_matches
from coffer.crypto.shamir import combine
from coffer.domain.seal import (
    Installation,
    RootGeneration,
    SealConfig,
    SealStatus,
    SealType,
    StaleRootGeneration,
    Wrapped,
)
from coffer.errors import CofferError, Conflict, InvalidUnsealKey, KeyIntegrityError, Sealed
from coffer.storage.repositories import RootStore

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Called with ``True`` when the root is sealed and ``False`` when it opens.
Listener = Callable[[bool], Awaitable[None]]


class WrongRootKey(Exception):
    """The root key offered is not this installation's (or was retired by a rotation)."""


def share_bytes(text: str) -> bytes | None:
    """The bytes of an unseal key share as operators type it (base64), or ``None``."""
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None


class RootOfTrust:
    def __init__(
        self,
        installation: Installation,
        generations: Sequence[RootGeneration],
        seals: Mapping[SealType, Seal],
    ) -> None:
        self._installation = installation
        self._generations = {g.generation: g for g in generations}
        self._seals = dict(seals)
        self._ciphers: dict[int, RootCipher] = {}
        self._store: RootStore | None = None
        self._listeners: list[Listener] = []
        self._shares: list[bytes] = []
        #: Retired generations whose keys this process has destroyed (once is enough).
        self._forgotten: set[int] = set()
        self._manual = False
        self._reason: str | None = "the root key is not opened yet"
        self._hsm: ThreadPoolExecutor | None = None
        self._add_executor()
        self._lock = asyncio.Lock()

    def _add_executor(self) -> None:
        # The HSM's calls all run on the one thread of its module in this process (a session
        # is used by one thread at a time); the other seals work in memory, on the caller's.
        hsm = self._seals.get(SealType.PKCS11)
        if self._hsm is None and isinstance(hsm, Pkcs11Seal):
            self._hsm = calls_of(hsm.token.library)

    def add_seal(self, seal: Seal) -> None:
        """A seal for new generations of another kind (``coffer operator migrate-seal``)."""
        self._seals[seal.type] = seal
        self._add_executor()

    def __repr__(self) -> str:
        return (
            f"RootOfTrust(installation={self.identity!r}, seal={self.seal_type.value!r}, "
            f"sealed={self.sealed})"
        )

    # --- what it is -----------------------------------------------------------------------------

    @property
    def identity(self) -> str:
        return self._installation.identity

    @property
    def installation(self) -> Installation:
        return self._installation

    @property
    def seal_type(self) -> SealType:
        return self._installation.seal.type

    @property
    def active_generation(self) -> int:
        return self._installation.active_generation

    @property
    def generations(self) -> Sequence[RootGeneration]:
        return [self._generations[n] for n in sorted(self._generations)]

    @property
    def sealed(self) -> bool:
        return self._installation.active_generation not in self._ciphers

    def attach(self, store: RootStore) -> None:
        """The store it reads new generations from (a rotation made by another node)."""
        self._store = store

    def on_change(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def sealed_error(self) -> Sealed:
        """What a request meets while sealed: 503 ``sealed``, with the reason."""
        return Sealed(f"Coffer is sealed: {self._reason or 'see GET /v1/sys/seal-status'}")

    def status(self) -> SealStatus:
        seal = self._installation.seal
        shamir = seal.type is SealType.SHAMIR
        return SealStatus(
            sealed=self.sealed,
            type=seal.type,
            threshold=(seal.threshold or 1) if shamir else 1,
            shares=(seal.shares or 1) if shamir else 1,
            progress=len(self._shares),
            installation=self.identity,
            reason=self._reason if self.sealed else None,
        )

    def _seal(self, kind: SealType) -> Seal:
        found = self._seals.get(kind)
        if found is None:
            raise Sealed(f"this server has no {kind.value} seal configured")
        return found

    async def _run(self, work: Callable[[], T]) -> T:
        if self._hsm is None:
            return work()
        return await asyncio.get_running_loop().run_in_executor(self._hsm, work)

    def _run_sync(self, work: Callable[[], T]) -> T:
        """``work`` on the seal's thread, waited for (before or after the event loop)."""
        if self._hsm is None:
            return work()
        return self._hsm.submit(work).result()

    # --- opening and sealing ----------------------------------------------------------------------

    def open_sync(self) -> None:
        """Open every live generation (at start, before any event loop). ``WrongRootKey`` if the
        seal holds another root key; a seal that cannot be used now (a token away, the Shamir
        seal) leaves the root sealed with the reason."""
        try:
            self._run_sync(self._open_all)
        except Sealed as exc:
            self._reason = exc.message
        except HsmUnavailable as exc:
            self._reason = exc.message
            log.error("sealed: %s", exc.message)

    def _open_all(self) -> None:
        """Open every live generation of the state held now (``_opened``) and take the result."""
        self._ciphers = self._opened(self._installation, self._generations, {})
        self._reason = None
        self._keep()

    def _opened(
        self,
        installation: Installation,
        generations: Mapping[int, RootGeneration],
        held: Mapping[int, RootCipher],
    ) -> dict[int, RootCipher]:
        """The ciphers of every live generation of ``generations``: those ``held`` already, the
        others opened by their seals and checked against their check values. Raises
        ``WrongRootKey`` if the active one does not open, ``Sealed`` or ``HsmUnavailable`` if a
        seal cannot be used now. Changes no state of this object and destroys nothing: the
        caller takes the result whole, and retires old generations only after (``_retire``)."""
        opened = dict(held)
        for number in sorted(generations):
            generation = generations[number]
            if not generation.live:
                opened.pop(number, None)
                continue
            if number in opened:
                continue
            cipher = self._seal(generation.seal_type).open(self.identity, generation, opened)
            if cipher is not None and opens_check_value(
                cipher, generation.check_value, self.identity, number
            ):
                opened[number] = cipher
        if installation.active_generation not in opened:
            raise WrongRootKey(self._wrong_key_message())
        return opened

    def _keep(self) -> None:
        live = {g.generation for g in self._generations.values() if g.live}
        for seal in self._seals.values():
            seal.keep(self.identity, live, self._installation.active_generation)

    def _wrong_key_message(self) -> str:
        message = f"the root key does not belong to this database (installation {self.identity})"
        file_seal = self._seals.get(SealType.FILE)
        if isinstance(file_seal, FileSeal):
            retired = [g for g in self.generations if not g.live]
            for key in file_seal.key_files().values():
                for generation in retired:
                    if opens_check_value(
                        SoftwareCipher(key), generation.check_value, self.identity,
                        generation.generation,
                    ):  # fmt: skip
                        return (
                            f"{message}: it is generation {generation.generation}, retired by a "
                            f"root rotation on {generation.retired_at:%Y-%m-%d %H:%M} UTC; copy "
                            "root.key from a node that has the current one"
                        )
        return message

    async def _notify(self, sealed: bool) -> None:
        for listener in self._listeners:
            try:
                await listener(sealed)
            except Exception:
                log.exception("a listener of the seal failed")

    async def _drop(self, reason: str) -> None:
        """Forget every key: sealed."""
        was_open = not self.sealed
        self._ciphers = {}
        self._shares = []
        self._reason = reason
        shamir = self._seals.get(SealType.SHAMIR)
        if isinstance(shamir, ShamirSeal):
            shamir.use(None)
        hsm = self._seals.get(SealType.PKCS11)
        if isinstance(hsm, Pkcs11Seal):
            await self._run(hsm.token.close)
        if was_open:
            await self._notify(True)

    async def seal(self, reason: str = "sealed by an operator") -> None:
        """Seal now (``coffer operator seal``): every key leaves memory. The file and PKCS #11
        seals stay shut until the next start; the Shamir seal until its shares are given again."""
        async with self._lock:
            self._manual = True
            await self._drop(reason)
        log.warning("sealed: %s", reason)

    async def submit_share(self, share: bytes) -> SealStatus:
        """One unseal key share (Shamir). A share that is not one of this installation's, or was
        given already, is refused and does not count; at the threshold the root opens."""
        async with self._lock:
            seal = self._installation.seal
            if seal.type is not SealType.SHAMIR:
                raise InvalidUnsealKey(
                    f"this server's seal is {seal.type.value}: it takes no shares"
                )
            if not self.sealed:
                return self.status()
            if not share_matches(self.identity, share, seal.share_digests):
                raise InvalidUnsealKey()
            if share in self._shares or share[:1] in {s[:1] for s in self._shares}:
                raise InvalidUnsealKey("this share was given already")
            self._shares.append(share)
            if len(self._shares) < (seal.threshold or 1):
                return self.status()
            shamir = self._seal(SealType.SHAMIR)
            assert isinstance(shamir, ShamirSeal)
            shares, self._shares = self._shares, []
            shamir.use(combine(shares))
            opened = False
            try:
                await self._reload()
                await self._run(self._open_all)
                opened = True
            except (WrongRootKey, Sealed, HsmUnavailable, KeyIntegrityError) as exc:
                log.error("the unseal key shares did not open the root key: %s", exc)
                raise InvalidUnsealKey(
                    "these shares do not open the root key; give the threshold's number again"
                ) from None
            finally:
                if not opened:  # whatever went wrong (the database away too): nothing kept
                    shamir.use(None)
            self._manual = False
        log.warning("unsealed with %d share(s)", len(shares))
        await self._notify(False)
        return self.status()

    async def reset_progress(self) -> SealStatus:
        async with self._lock:
            self._shares = []
        return self.status()

    # --- wrapping --------------------------------------------------------------------------------

    def _cipher(self, generation: int) -> RootCipher:
        cipher = self._ciphers.get(generation)
        if cipher is None:
            if self.sealed:
                raise self.sealed_error()
            raise StaleRootGeneration()
        return cipher

    async def wrap(self, plaintext: bytes, aad: bytes) -> Wrapped:
        """``plaintext`` wrapped by the active generation, bound to ``aad``."""
        generation = self._installation.active_generation
        cipher = self._cipher(generation)
        blob = await self._guarded(lambda: seal_blob(cipher, generation, plaintext, aad))
        return Wrapped(generation, blob)

    def wrap_sync(self, plaintext: bytes, aad: bytes) -> Wrapped:
        """``wrap`` at start, before any event loop."""
        generation = self._installation.active_generation
        cipher = self._cipher(generation)
        blob = self._run_sync(lambda: seal_blob(cipher, generation, plaintext, aad))
        return Wrapped(generation, blob)

    def unwrap_sync(self, blob: bytes, aad: bytes) -> bytes:
        """``unwrap`` at start, before any event loop (of a generation held open)."""
        cipher = self._cipher(generation_of(blob))
        return self._run_sync(lambda: open_blob(cipher, blob, aad))

    async def unwrap(self, blob: bytes, aad: bytes) -> bytes:
        """The plaintext of a blob wrapped by any live generation. ``StaleRootGeneration`` if
        its generation was retired (read the row again: a rotation rewrapped it)."""
        generation = generation_of(blob)
        if generation not in self._ciphers and not self.sealed:
            await self.refresh()
        cipher = self._cipher(generation)
        return await self._guarded(lambda: open_blob(cipher, blob, aad))

    async def unwrap_stored(self, read: Callable[[], Awaitable[bytes | None]], aad: bytes) -> bytes:
        """Read a blob and unwrap it, reading it once more if a rotation retired the generation
        it was read under meanwhile. ``KeyIntegrityError`` if there is none."""
        for attempt in range(2):
            blob = await read()
            if blob is None:
                raise KeyIntegrityError()
            try:
                return await self.unwrap(blob, aad)
            except StaleRootGeneration:
                if attempt == 1:
                    raise KeyIntegrityError() from None
        raise AssertionError("unreachable")

    async def write_wrapped(
        self, plaintext: bytes, aad: bytes, write: Callable[[Wrapped], Awaitable[T]]
    ) -> T:
        """Wrap ``plaintext`` and store it with ``write``, wrapping again with the newest
        generation if a rotation retired the one used meanwhile (``write`` raised
        ``StaleRootGeneration``, its transaction rolled back)."""
        for attempt in range(2):
            try:
                return await write(await self.wrap(plaintext, aad))
            except StaleRootGeneration:
                if attempt == 1:
                    raise
                await self.refresh()
        raise AssertionError("unreachable")

    async def rewrap(self, wrapped: Wrapped, aad: bytes) -> Wrapped:
        """``wrapped``'s content, wrapped again by the active generation (a root rotation)."""
        return await self.wrap(await self.unwrap(wrapped.blob, aad), aad)

    async def _guarded(self, work: Callable[[], T], *, locked: bool = False) -> T:
        """``work`` on the seal's thread; an HSM that fails seals this server (``locked``: the
        caller holds the lock already)."""
        try:
            return await self._run(work)
        except HsmUnavailable as exc:
            if locked:
                if not self.sealed:
                    log.error("sealed: %s", exc.message)
                    await self._drop(exc.message)
            else:
                await self._lost(exc.message)
            raise self.sealed_error() from None

    async def _lost(self, reason: str) -> None:
        async with self._lock:
            if not self.sealed:
                log.error("sealed: %s", reason)
                await self._drop(reason)

    # --- generations ------------------------------------------------------------------------------

    async def _read(self) -> tuple[Installation, dict[int, RootGeneration]]:
        """The installation and its generations as stored now, read as one snapshot (as held,
        without a store)."""
        if self._store is None:
            return self._installation, dict(self._generations)
        installation, generations = await self._store.root_state()
        return installation or self._installation, {g.generation: g for g in generations}

    async def _reload(self) -> None:
        self._installation, self._generations = await self._read()

    async def refresh(self) -> None:
        """Read the generations again (another node rotated): open new ones, and take the new
        state all at once — requests never see a state between the two. Retired generations'
        keys are destroyed after (``_retire``). If the active generation cannot be opened here,
        this node seals itself."""
        async with self._lock:
            installation, generations = await self._read()
            if self.sealed:
                self._installation, self._generations = installation, generations
                return
            try:
                ciphers = await self._run(
                    lambda: self._opened(installation, generations, self._ciphers)
                )
            except RootKeyError as exc:
                # The key file went (an operator's mistake): the keys held stay in use, and
                # readiness says what is wrong before a restart would fail.
                log.error("root key generation %d cannot be read: %s",
                          installation.active_generation, exc.message)  # fmt: skip
                return
            except (WrongRootKey, Sealed, HsmUnavailable) as exc:
                reason = (
                    f"root key generation {installation.active_generation} cannot be opened: {exc}"
                )
                log.error("sealed: %s", reason)
                await self._drop(reason)  # while the state held still says open: listeners hear
                self._installation, self._generations = installation, generations
                return
            retired = [n for n, g in generations.items() if not g.live and n not in self._forgotten]
            if retired:
                ciphers = await self._retire(retired, generations, ciphers)
            self._installation, self._generations, self._ciphers = (
                installation, generations, ciphers,
            )  # fmt: skip
            await self._run(self._keep)

    async def _retire(
        self,
        numbers: Sequence[int],
        generations: Mapping[int, RootGeneration],
        ciphers: dict[int, RootCipher],
    ) -> dict[int, RootCipher]:
        """Destroy what is kept of newly retired generations (``root.key.old``, the HSM key
        object), but only once no stored blob names one of them — each blob's own authenticated
        header says which generation wrapped it, whatever a column says. A generation that the
        database calls retired while blobs still need it keeps its key, with an alarm: a writer
        of the database must not make a server destroy a key."""
        assert self._store is not None
        needed = set()
        for row in await self._store.all_root_wrapped():
            try:
                needed.add(generation_of(row.wrapped.blob))
            except KeyIntegrityError:
                log.error("integrity: the %s blob of %s is not a root-wrapped blob", row.table,
                          row.ref)  # fmt: skip
        kept = dict(ciphers)
        for number in numbers:
            generation = generations[number]
            if number in needed:
                log.error(
                    "integrity: root key generation %d is marked retired but stored blobs still "
                    "need it; its key is kept", number,
                )  # fmt: skip
                if number in self._ciphers:
                    kept[number] = self._ciphers[number]
                continue
            held = number in self._ciphers
            if generation.seal_type in self._seals:
                seal = self._seals[generation.seal_type]
                await self._run(partial(seal.forget, self.identity, generation, held=held))
            self._forgotten.add(number)
        return kept

    async def rotate(
        self,
        seal: SealConfig,
        store: Callable[[RootGeneration], Awaitable[None]],
    ) -> RootGeneration:
        """Make the next generation's key with the seal ``seal`` describes and store it, as
        the active generation (``seal`` the installation's seal from then on), with ``store`` —
        holding this object's lock throughout, so that nothing of this process runs between the
        key's making and its storing. If ``store`` refuses (``Conflict``: another rotation began
        first) the key is abandoned; after any other failure (whether the commit happened is
        unknown) it is left where it is."""
        async with self._lock:
            if self.sealed:
                raise self.sealed_error()
            active = self._installation.active_generation
            previous = (active, self._cipher(active))
            number = active + 1
            maker = self._seal(seal.type)

            def make() -> tuple[NewKey, bytes]:
                made = maker.make(self.identity, number, previous)
                return made, make_check_value(made.cipher, self.identity, number)

            made, check = await self._guarded(make, locked=True)
            generation = RootGeneration(number, seal.type, check, made.sealed_key,
                                        datetime.now(UTC), None, made.ref)  # fmt: skip
            try:
                await store(generation)
            except Conflict:
                await self._run(lambda: maker.abandon(self.identity, number, made))
                raise
            await self._run(lambda: maker.adopt(self.identity, number, made))
            self._installation = Installation(self.identity, seal, number,
                                              self._installation.created_at)  # fmt: skip
            self._generations[number] = generation
            self._ciphers[number] = made.cipher
            await self._run(self._keep)
            return generation

    # --- health -----------------------------------------------------------------------------------

    async def check(self) -> None:
        """Raise ``Sealed`` while sealed, ``RootKeyError`` if the file seal's key file went."""
        if self.sealed:
            raise self.sealed_error()
        file_seal = self._seals.get(SealType.FILE)
        if self.seal_type is SealType.FILE and isinstance(file_seal, FileSeal):
            file_seal.check()  # an operator who removed or locked it hears it before a restart

    async def watch(self) -> None:
        """One look at the HSM: seal if the token went away, open again when it is back."""
        hsm = self._seals.get(SealType.PKCS11)
        if not isinstance(hsm, Pkcs11Seal) or self._manual:
            return
        if not self.sealed:
            generation = self._generations[self.active_generation]
            cipher = self._ciphers.get(generation.generation)
            if cipher is None:
                return
            try:
                await self._guarded(
                    lambda: open_blob(cipher, generation.check_value,
                                      check_aad(self.identity, generation.generation))
                )  # fmt: skip
            except Sealed:
                return
            return
        async with self._lock:
            if not self.sealed or self._manual:
                return
            try:
                await self._reload()
                await self._run(hsm.token.open)
                await self._run(self._open_all)
            except (HsmUnavailable, Sealed) as exc:
                self._reason = exc.message
                return
            except WrongRootKey as exc:
                self._reason = str(exc)
                log.error("the PKCS #11 token is back but holds another root key: %s", exc)
                return
        log.warning("unsealed: the PKCS #11 token is reachable again")
        await self._notify(False)

    async def watch_forever(self, interval: float) -> None:
        """Every ``interval``: read the generations again (a rotation another node began, even if
        its notification was missed) and look at the HSM."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh()
                await self.watch()
            except CofferError:
                continue  # the database or the seal away: said once where it changes state
            except Exception:
                log.exception("the seal's watcher failed")

    def close(self) -> None:
        hsm = self._seals.get(SealType.PKCS11)
        if isinstance(hsm, Pkcs11Seal):
            with contextlib.suppress(Exception):
                self._run_sync(hsm.token.close)
