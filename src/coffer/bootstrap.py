"""The composition root: settings → stores → providers → services → app.

The only module that chooses implementations. Nothing is built at import time; every caller
(the CLI, each test) builds its own.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy.exc import DBAPIError, IntegrityError
from starlette.applications import Starlette

from coffer.api.app import create_app
from coffer.api.errors import status_of
from coffer.audit.anchor import Anchor, AnchorContents, AnchorError, read_anchor
from coffer.audit.committer import BatchCommitter, Committer
from coffer.audit.events import ApplyingSink, AuditEvent, AuditSink
from coffer.audit.lines import (
    ExportedChain,
    LinesError,
    checkpoint_line,
    export_header,
    head_line,
    lines_of,
    pruned_line,
    read_lines,
)
from coffer.audit.log import AuditLog
from coffer.audit.process import ProcessCommitter, WriterStartup
from coffer.audit.sinks import RequiredSinks, SinkDelivery, destination_of
from coffer.audit.verify import Verification, verify_chain
from coffer.config import (
    ROOT_KEY_FILE,
    SEAL_FILE,
    SINK_STATE_DIR,
    ConfigError,
    Settings,
    pkcs11_environment,
    read_seal_file,
    write_seal_file,
)
from coffer.crypto.hsm import HsmUnavailable, Pkcs11Token
from coffer.crypto.integrity import RowMacs
from coffer.crypto.root import (
    RootKeyError,
    SoftwareCipher,
    make_check_value,
    open_blob,
    read_key_file,
    seal_blob,
    write_key_file,
)
from coffer.crypto.seals import (
    NEW_KEY_FILE,
    FileSeal,
    NewKey,
    Pkcs11Seal,
    Seal,
    ShamirSeal,
    new_unseal_key,
    share_digest,
)
from coffer.crypto.shamir import MAX_SHARES, split
from coffer.crypto.signing import CheckpointVerifier, legacy_signing_seed
from coffer.crypto.wrapping import kek_aad, purpose_key_aad
from coffer.domain.identity import INSTALLATION_PREFIX, new_identity
from coffer.domain.regions import Region
from coffer.domain.seal import (
    Installation,
    RootGeneration,
    SealConfig,
    SealType,
    Wrapped,
)
from coffer.errors import CofferError, InvalidUnsealKey, KeyIntegrityError
from coffer.iam.oidc import OidcVerifier
from coffer.metrics import (
    CacheMeter,
    count_rate_limited,
    observe_audit_batch,
    sink_failure_meter,
    sink_lag_meter,
)
from coffer.scheduler.jobs import Scheduler
from coffer.service.access import AccessService
from coffer.service.audit import AuditService
from coffer.service.budget import EncryptionBudget
from coffer.service.byok import WrappingKeys
from coffer.service.caches import KeyCache
from coffer.service.changes import ChangeBus, Changes
from coffer.service.crypto import CryptoService
from coffer.service.iam import MAX_TOKEN_LIFETIME, IamService, NewToken
from coffer.service.integrity import RowIntegrity
from coffer.service.keyring import Keyring
from coffer.service.keys import KeyService
from coffer.service.lifecycle import LifecycleService
from coffer.service.limits import RateLimits
from coffer.service.operations import AuthFailures, Operations
from coffer.service.purposes import CHECKPOINT_SIGNING, PurposeKeys, PurposeSigner
from coffer.service.root import RootOfTrust, WrongRootKey, share_bytes
from coffer.service.rotation import RootRotation
from coffer.service.scope import KeyScope
from coffer.service.services import Lease, Services
from coffer.service.sys import SysService
from coffer.service.tenants import Bootstrapped, TenantService
from coffer.service.work import ExpensiveWork
from coffer.storage import sql_root
from coffer.storage.database import (
    DatabaseUnreadable,
    create_engine_for,
    create_read_engine_for,
    create_sync_engine_for,
    is_known_revision,
    read_only_engine,
    schema_revision,
    upgrade,
)
from coffer.storage.postgres import PgChangeBus, PgLease
from coffer.storage.sql import SqlStore
from coffer.storage.sql_audit import AUDIT_LOCK_SUFFIX, SqlAuditStore
from coffer.storage.sql_iam import SqlIamStore
from coffer.storage.sqlite_changes import FileLease, SqliteChangeBus

log = logging.getLogger(__name__)
#: SQLite's words for a file that is not (or no longer) a sound database.
_DAMAGED = re.compile(r"not a database|malformed|corrupt", re.IGNORECASE)

#: The schema revision from which the root of trust has rows of its own.
ROOT_OF_TRUST_REVISION = "0007"

#: The lock file whose holder runs the background jobs when several workers share SQLite.
JOBS_LOCK_FILE = "jobs.lock"
SQLITE_FILES = ("", "-wal", "-shm", "-journal", AUDIT_LOCK_SUFFIX)


def utc_now() -> datetime:
    return datetime.now(UTC)


#: Allocations between two young-generation collections of a serving process (CPython: 700).
GC_YOUNG_THRESHOLD = 20_000


class _NoQueryStrings(logging.Filter):
    """Takes the query string out of uvicorn's access log lines: a client that puts a token
    there (``?access_token=…``) must not have it written to the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            path, mark, _ = args[2].partition("?")
            record.args = (args[0], args[1], path + ("?…" if mark else ""), args[3], args[4])
        return True


def redact_access_log() -> None:
    """Install the filter of the access log in this process (the server, or a worker)."""
    logging.getLogger("uvicorn.access").addFilter(_NoQueryStrings())


def settle_garbage_collector() -> None:
    """Prepare a serving process's garbage collector, once its app is built.

    Every request allocates thousands of short-lived containers, so the collector runs often,
    and each full collection walks every object alive: the modules, the app and its caches. Under
    load these pauses (~100 ms on the benchmark machine) were the p99 latency, and cost 15 % of
    the throughput (docs/benchmarks.md). ``gc.freeze()`` moves what exists after start-up out
    of the collector's reach for good (it is never garbage), and a higher young threshold makes
    collections rarer; reference cycles are still collected."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


#: Actions whose success the API answers with 201 Created.
CREATED_ACTIONS = frozenset(
    {
        "kms.key.create",
        "iam.organisation.create",
        "iam.project.create",
        "iam.service_account.create",
        "iam.token.create",
        "iam.role_binding.create",
    }
)


#: How long a BYOK wrapping key is still accepted after its successor was made.
BYOK_OVERLAP_HOURS = 24


def audit_status(action: str, error: CofferError | None) -> int:
    """The HTTP status the API answers with, for the audit record (the API's own table)."""
    if error is not None:
        return status_of(error)
    return 201 if action in CREATED_ACTIONS else 200


def regions_of(settings: Settings) -> list[Region]:
    return [
        Region(
            identity=r.identity or r.slug,
            slug=r.slug,
            name=r.name,
            kms_available=r.kms_available,
        )
        for r in settings.regions
    ]


def _coordination(settings: Settings, store: SqlStore) -> tuple[ChangeBus | None, Lease | None]:
    """How this process keeps its caches coherent with, and shares the background jobs among,
    the other processes on its database: PostgreSQL's NOTIFY and advisory lock; on SQLite with
    several workers, a polled table and a file lock; alone on SQLite, nothing to share."""
    if store.engine.dialect.name == "postgresql":
        return PgChangeBus(settings.url), PgLease(settings.url)
    if settings.workers > 1:
        return SqliteChangeBus(store.engine), FileLease(settings.data_dir / JOBS_LOCK_FILE)
    return None, None


def seals_for(settings: Settings, installation: Installation,
              generations: Sequence[RootGeneration]) -> dict[SealType, Seal]:  # fmt: skip
    """A seal for the installation's seal and for every seal a live generation still uses."""
    kinds = {installation.seal.type} | {g.seal_type for g in generations if g.live}
    seals: dict[SealType, Seal] = {}
    for kind in kinds:
        if kind is SealType.FILE:
            seals[kind] = FileSeal(settings.data_dir)
        elif kind is SealType.SHAMIR:
            seals[kind] = ShamirSeal()
        else:
            seals[kind] = Pkcs11Seal(pkcs11_token(settings.data_dir, installation.seal))
    return seals


def pkcs11_token(data_dir: Path, seal: SealConfig, library: str | None = None) -> Pkcs11Token:
    """The token of a PKCS #11 seal. The module's path is this node's own — ``library`` (init),
    ``COFFER_PKCS11_LIBRARY``, or the data directory's ``seal.json`` — and never the
    database's: whoever can write the database must not choose what code a server loads. The
    token's label is the recorded one (or ``COFFER_PKCS11_TOKEN``); the PIN is
    ``COFFER_PKCS11_PIN``."""
    env = pkcs11_environment()
    library = env.library or library or read_seal_file(data_dir).get("pkcs11Library")
    token = env.token or seal.pkcs11_token
    if not library or not token:
        raise ConfigError(
            f"the PKCS #11 seal needs its module and token label on this node: set "
            f"COFFER_PKCS11_LIBRARY (or copy {SEAL_FILE} of a node into {data_dir}) and "
            "COFFER_PKCS11_TOKEN"
        )
    return Pkcs11Token(library, token, env.pin or "")


def _read_root(settings: Settings) -> tuple[Installation | None, list[RootGeneration]]:
    engine = read_only_engine(settings.url)
    try:
        with engine.connect() as conn:
            return sql_root.read_installation(conn), sql_root.read_generations(conn)
    except DBAPIError as exc:
        raise ConfigError(
            f"the database of {settings.data_dir} cannot be read ({exc.orig})"
        ) from None
    finally:
        engine.dispose()


def open_root(settings: Settings) -> RootOfTrust:
    """The installation's root of trust, opened by its seal if the seal opens by itself (file,
    PKCS #11). ``ConfigError`` if the seal holds a key that is not this installation's."""
    installation, generations = _read_root(settings)
    if installation is None:
        raise NotInitialised(
            f"the database of {settings.data_dir} holds no Coffer installation: run "
            f"`coffer serve` or `coffer init --data-dir {settings.data_dir}` first"
        )
    root = RootOfTrust(installation, generations, seals_for(settings, installation, generations))
    try:
        root.open_sync()
    except WrongRootKey as exc:
        root.close()
        raise ConfigError(f"{exc}; nothing was changed") from None
    except RootKeyError as exc:
        root.close()
        raise ConfigError(
            f"{exc.message}. Coffer cannot decrypt any key without it: restore the root key file "
            "from your backup (mode 0600, readable by the server's user)"
        ) from None
    return root


def build_services(
    settings: Settings,
    *,
    root: RootOfTrust | None = None,
    clock: Callable[[], datetime] = utc_now,
    timer: Callable[[], float] = time.monotonic,
    observe: Callable[[AuditEvent], Awaitable[None]] | None = None,
) -> Services:
    """Everything a server runs, over ``settings``. ``observe``: keep no audit log, apply each
    change on its own and show its event to this (tests that look at events)."""
    # Reads check rows with the row MAC key, which the purpose keys load once the root is open.
    purposes: PurposeKeys
    integrity = RowIntegrity(lambda: purposes.row_macs, metered=settings.metrics)
    store = SqlStore(
        create_engine_for(settings.url, settings.database_pool_size),
        integrity,
        create_read_engine_for(settings.url),
    )
    root = root if root is not None else open_root(settings)
    root.attach(store)
    writer_engine = create_sync_engine_for(settings.url)
    purposes = PurposeKeys(root, store, clock, writer_engine)
    purposes.load_sync()  # the root open (file, PKCS #11): before the first request
    signer = PurposeSigner(purposes)
    access = AccessService(
        store,
        clock,
        cache_size=settings.cache_size,
        cache_ttl=settings.cache_ttl_seconds,
        timer=timer,
        stored_digest=purposes.token_digest_of_sha256,
        oidc=OidcVerifier(settings.oidc) if settings.oidc is not None else None,
        metered=settings.metrics,
    )
    keyring = Keyring(
        store,
        root,
        cache_size=settings.cache_size,
        timer=timer,
        metered=settings.metrics,
        report=integrity.report,
    )
    audit_store = SqlAuditStore(store, writer_engine, lambda: purposes.row_macs)
    audit_log = None
    committer: Committer | None = None
    if settings.audit_sink == "database" and observe is None:

        async def writer_startup() -> WriterStartup:
            return WriterStartup(
                settings,
                await purposes.checkpoint_seed(),
                await purposes.row_mac_key(),
                await purposes.audit_link_key(),
            )

        anchor = Anchor(settings.anchor_path)
        anchor.open()  # made now if new: its absence later means it was removed
        committer = (
            ProcessCommitter([sys.executable, "-m", "coffer.audit_writer"], writer_startup)
            if settings.audit_writer == "process"
            else BatchCommitter(
                audit_store,
                signer,
                purposes.audit_link,
                clock,
                audit_status,
                checkpoint_every=settings.audit_checkpoint_every,
                anchor=anchor,
                sinks=RequiredSinks(settings.audit_sinks),
            )
        )
        audit_log = AuditLog(
            audit_store,
            signer,
            clock,
            committer,
            anchor=anchor,
            batch_meter=observe_audit_batch if settings.metrics else None,
            sinks=RequiredSinks(settings.audit_sinks),
        )
    sink: AuditSink = audit_log or ApplyingSink(audit_store.apply_change, observe)
    failures = AuthFailures(settings.audit_auth_failures_per_minute, timer)
    limits = RateLimits(
        settings.rate_limit_per_principal,
        settings.rate_limit_auth_failures_per_second,
        timer,
        count_rate_limited if settings.metrics else None,
    )
    operations = Operations(access, sink, clock, audit_status, failures, limits)
    scope = KeyScope(
        store,
        KeyCache(
            settings.cache_size,
            settings.cache_ttl_seconds,
            timer,
            CacheMeter("key") if settings.metrics else None,
        ),
        regions_of(settings),
    )
    wrapping = WrappingKeys(
        store,
        keyring,
        clock,
        timer,
        lifetime=timedelta(days=settings.byok_wrapping_key_lifetime_days),
        overlap=timedelta(hours=BYOK_OVERLAP_HOURS),
    )
    tenants = TenantService(root, clock, purposes.token_digest)
    work = ExpensiveWork(
        settings.expensive_work_threads or os.cpu_count() or 2, settings.expensive_work_queue
    )
    bus, lease = _coordination(settings, store)
    changes = Changes(scope.keys, keyring, access, bus, root)
    rotation = RootRotation(
        root,
        store,
        changes,
        operations,
        clock,
        batch_size=settings.root_rotation_batch_size,
        grace_seconds=settings.root_rotation_grace_seconds,
    )

    async def seal_changed(sealed: bool) -> None:
        if sealed:  # no key stays in memory: not the hierarchy's, not the audit writer's
            keyring.clear()
            wrapping.clear()
            purposes.forget()
            if committer is not None:
                await committer.close()
        else:
            await purposes.load()  # before the first request is let through
            rotation.kick()  # a rotation that waited for the seal goes on

    root.on_change(seal_changed)
    budget = EncryptionBudget(store, settings.encryption_budget)
    keys = KeyService(store, operations, keyring, scope, wrapping, clock,
                      max_keys=settings.max_keys_per_organisation, budget=budget,
                      work=work)  # fmt: skip
    lifecycle = LifecycleService(
        operations,
        keyring,
        scope,
        clock,
        retention=timedelta(days=settings.deletion_retention_days),
        changes=changes,
        max_versions=settings.max_versions_per_key,
        budget=settings.encryption_budget,
        work=work,
    )
    return Services(
        settings=settings,
        store=store,
        root=root,
        purposes=purposes,
        integrity=integrity,
        rotation=rotation,
        sys=SysService(root, rotation, purposes, operations),
        operations=operations,
        access=access,
        keyring=keyring,
        keys=keys,
        crypto=CryptoService(operations, keyring, scope, budget, lifecycle.rotate_spent, work),
        lifecycle=lifecycle,
        audit=AuditService(audit_store, operations),
        audit_log=audit_log,
        audit_store=audit_store,
        tenants=tenants,
        changes=changes,
        lease=lease,
        iam=IamService(
            store,
            SqlIamStore(store),
            tenants,
            operations,
            clock,
            changes,
            oidc_issuer=settings.oidc.issuer if settings.oidc is not None else None,
        ),
    )


def build_scheduler(services: Services, clock: Callable[[], datetime] = utc_now) -> Scheduler:
    retention = services.settings.audit_retention_days
    return Scheduler(
        services.store,
        services.lifecycle,
        clock,
        services.settings.scheduler_interval_seconds,
        audit_log=services.audit_log,
        audit_retention=timedelta(days=retention) if retention is not None else None,
        lease=services.lease,
        takeover_seconds=services.settings.scheduler_takeover_seconds,
        root=services.root,
        rotation=services.rotation,
    )


def build_app(
    settings: Settings,
    *,
    clock: Callable[[], datetime] = utc_now,
    run_scheduler: bool = True,
    **overrides: Any,
) -> Starlette:
    """The ASGI app over freshly built services (``overrides`` as for ``build_services``), with
    the scheduler running in the background unless ``run_scheduler`` is false."""
    services = build_services(settings, clock=clock, **overrides)
    scheduler = build_scheduler(services, clock)

    async def watch_the_seal() -> None:
        await services.root.watch_forever(settings.seal_check_seconds)

    async def resume_rotation() -> None:
        if not services.root.sealed:
            services.rotation.kick()  # a rotation a stopped server left half done

    async def record_integrity_failures() -> None:
        await services.integrity.record_forever(services.operations)

    background = [
        services.changes.listen_forever,
        watch_the_seal,
        resume_rotation,
        record_integrity_failures,
        services.operations.record_suppressed_forever,
    ]
    if services.audit_log is not None:
        background.extend(delivery.run_forever for delivery in sink_deliveries(services))
    if run_scheduler:
        background.append(scheduler.run_forever)
    app = create_app(services, background=background)
    app.state.scheduler = scheduler
    return app


def sink_deliveries(services: Services) -> list[SinkDelivery]:
    """A delivery of the log to each optional audit sink, from the database (its buffer)."""
    settings = services.settings
    return [
        SinkDelivery(
            services.audit_store,
            destination_of(sink),
            settings.data_dir / SINK_STATE_DIR,
            batch=sink.batch_records,
            lag=sink_lag_meter(sink.name) if settings.metrics else None,
            failed=sink_failure_meter(sink.name) if settings.metrics else None,
        )
        for sink in settings.audit_sinks
        if not sink.required
    ]


class NotInitialised(ConfigError):
    """The data directory has not been set up by ``coffer init``."""


class AlreadyInitialised(ConfigError):
    """``coffer init`` on a directory that already holds a Coffer."""


@dataclass(frozen=True, slots=True)
class SealChoice:
    """The seal ``coffer init`` makes (``coffer init --seal``)."""

    type: SealType = SealType.FILE
    shares: int = 5
    threshold: int = 3
    pkcs11_library: str | None = None
    pkcs11_token: str | None = None


def _first_generation(
    settings: Settings, identity: str, choice: SealChoice
) -> tuple[SealConfig, dict[SealType, Seal], NewKey, tuple[str, ...]]:
    """The seal's settings, the seal, generation 1's key and (Shamir) the unseal key shares."""
    config, seal, shares = _new_seal(settings, identity, choice)
    if isinstance(seal, FileSeal):
        key = os.urandom(32)
        write_key_file(settings.root_key_path, key, exclusive=True)
        made = NewKey(SoftwareCipher(key), None)
    else:
        made = seal.make(identity, 1, None)
        seal.adopt(identity, 1, made)
    return config, {config.type: seal}, made, shares


def _new_seal(
    settings: Settings, identity: str, choice: SealChoice
) -> tuple[SealConfig, Seal, tuple[str, ...]]:
    """A new seal of ``choice``'s kind: its settings, the seal, and (Shamir) the unseal key
    shares. PKCS #11: the token is opened (so a wrong PIN or module is said now) and the
    module's path recorded in the data directory."""
    shares: tuple[str, ...] = ()
    if choice.type is SealType.FILE:
        config = SealConfig(SealType.FILE)
        seal: Seal = FileSeal(settings.data_dir)
    elif choice.type is SealType.SHAMIR:
        if not 1 <= choice.threshold <= choice.shares <= MAX_SHARES:
            raise ConfigError(
                f"--key-threshold must be at least 1 and at most --key-shares (at most "
                f"{MAX_SHARES})"
            )
        unseal_key = new_unseal_key()
        raw_shares = split(unseal_key, choice.shares, choice.threshold)
        shares = tuple(base64.b64encode(share).decode("ascii") for share in raw_shares)
        config = SealConfig(
            SealType.SHAMIR,
            threshold=choice.threshold,
            shares=choice.shares,
            share_digests=tuple(share_digest(identity, share) for share in raw_shares),
        )
        shamir = ShamirSeal()
        shamir.use(unseal_key)
        seal = shamir
    else:
        config = SealConfig(SealType.PKCS11, pkcs11_token=choice.pkcs11_token)
        hsm = Pkcs11Seal(pkcs11_token(settings.data_dir, config, choice.pkcs11_library))
        try:
            hsm.token.open()
        except HsmUnavailable as exc:
            raise ConfigError(f"{exc.message}; nothing was changed") from None
        write_seal_file(settings.data_dir, {"pkcs11Library": hsm.token.library})
        seal = hsm
    return config, seal, shares


async def initialise(
    settings: Settings,
    seal: SealChoice | None = None,
    *,
    admin_token_lifetime: timedelta | None = None,
) -> Bootstrapped:
    """Create the data directory, the root key in its seal, the schema, the first organisation
    and an admin token (expiring after ``admin_token_lifetime``, if given).

    Either everything is created or nothing is left behind: on failure the files this call made
    are removed again (and the HSM key it made destroyed).
    """
    choice = seal or SealChoice()
    if admin_token_lifetime is not None and not (
        timedelta(seconds=1) <= admin_token_lifetime <= MAX_TOKEN_LIFETIME
    ):
        raise ConfigError("the admin token's lifetime must be 1 second to 3650 days")
    data_dir = settings.data_dir
    existing = [p for p in (settings.database_path, settings.root_key_path) if p.exists()]
    if existing:
        raise AlreadyInitialised(
            f"{data_dir} is already initialised ({existing[0].name} exists); nothing was changed"
        )
    if settings.database_url is not None:
        try:
            current, _ = schema_revision(settings.url)
        except DatabaseUnreadable as exc:
            raise ConfigError(f"the database cannot be reached or read ({exc})") from None
        if current is not None:
            raise AlreadyInitialised(
                "the database already holds a Coffer: to add a node, give it the same seal "
                "(the file seal: copy root.key of an initialised node into its data directory) "
                "instead; nothing was changed"
            )
    if choice.type is SealType.PKCS11:
        config = SealConfig(SealType.PKCS11, pkcs11_token=choice.pkcs11_token)
        pkcs11_token(data_dir, config, choice.pkcs11_library)  # the settings, before any file
    created_dir = not data_dir.exists()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    made_files = [settings.root_key_path, data_dir / NEW_KEY_FILE, data_dir / SEAL_FILE] + [
        settings.database_path.with_name(settings.database_path.name + s) for s in SQLITE_FILES
    ]
    identity = new_identity(INSTALLATION_PREFIX)
    seals: dict[SealType, Seal] = {}
    made: NewKey | None = None
    try:
        config, seals, made, shares = _first_generation(settings, identity, choice)
        now = utc_now()
        installation = Installation(identity, config, 1, now)
        generation = RootGeneration(
            1,
            config.type,
            make_check_value(made.cipher, identity, 1),
            made.sealed_key,
            now,
            seal_ref=made.ref,
        )
        upgrade(settings.url)
        engine = create_sync_engine_for(settings.url)
        try:
            with engine.begin() as conn:
                sql_root.insert_installation(conn, installation)
                sql_root.insert_generation(conn, generation)
        finally:
            engine.dispose()
        root = RootOfTrust(installation, [generation], seals)
        root.open_sync()
        # Installing is not a request: its changes are applied on their own, with no audit log
        # (nor its anchor: that is the server's, where its config says).
        services = build_services(replace(settings, audit_sink="discard"), root=root)
        try:
            await services.purposes.load()
            boot = await services.tenants.bootstrap(
                services.audit_store.apply_change, token_lifetime=admin_token_lifetime
            )
        finally:
            await services.close()
        return replace(boot, installation=identity, unseal_keys=shares)
    except BaseException:
        for path in made_files:
            path.unlink(missing_ok=True)
        if created_dir:
            shutil.rmtree(data_dir, ignore_errors=True)
        hsm = seals.get(SealType.PKCS11)
        if isinstance(hsm, Pkcs11Seal) and made is not None:
            # The key it made names an installation that does not exist.
            hsm.abandon(identity, 1, made)
        raise


def _check_legacy_root_key(settings: Settings) -> bytes:
    """The root key of a data directory made before check values, checked against the one thing
    it wrapped that every installation has (an organisation KEK), before anything is written."""
    try:
        key = read_key_file(settings.root_key_path)
    except RootKeyError as exc:
        raise ConfigError(
            f"{exc.message}. Coffer cannot decrypt any key without it: restore the root key file "
            "from your backup (mode 0600, readable by the server's user)"
        ) from None
    engine = read_only_engine(settings.url)
    try:
        with engine.connect() as conn:
            first = sql_root.first_organisation_kek(conn)
    finally:
        engine.dispose()
    if first is not None:
        organisation, blob = first
        try:
            open_blob(SoftwareCipher(key), blob, kek_aad(organisation))
        except KeyIntegrityError:
            raise ConfigError(
                "the root key does not belong to this database; nothing was changed"
            ) from None
    return key


def _install_legacy(settings: Settings, key: bytes) -> None:
    """Give a data directory made before the root of trust had rows its installation: the file
    seal, generation 1 (the existing key) with a check value, and the checkpoint signing key it
    used (derived from the root key then, stored wrapped now so that it survives rotations)."""
    identity = new_identity(INSTALLATION_PREFIX)
    cipher = SoftwareCipher(key)
    now = utc_now()
    signing = seal_blob(cipher, 1, legacy_signing_seed(key), purpose_key_aad(CHECKPOINT_SIGNING))
    engine = create_sync_engine_for(settings.url)
    try:
        with engine.begin() as conn:
            if sql_root.read_installation(conn) is not None:
                return  # another node of this database did it first
            sql_root.insert_installation(
                conn, Installation(identity, SealConfig(SealType.FILE), 1, now), storage_version=0
            )
            check = make_check_value(cipher, identity, 1)
            sql_root.insert_generation(conn, RootGeneration(1, SealType.FILE, check, None, now))
            sql_root.insert_purpose_key(conn, CHECKPOINT_SIGNING, Wrapped(1, signing), now)
    except IntegrityError:
        return  # another node of this database did it at the same moment
    finally:
        engine.dispose()
    log.warning("data directory upgraded: installation %s, root key generation 1", identity)


def check_writable(settings: Settings) -> None:
    """``ConfigError`` naming the first file or directory a server must write but this user
    cannot (permissions, owner, an immutable attribute) — told apart from a damaged database,
    so that nobody restores a backup over a healthy one."""
    paths = [settings.anchor_path.parent, settings.anchor_path]
    if settings.database_url is None:
        database = settings.database_path
        paths = [settings.data_dir, database, Path(f"{database}-wal"), Path(f"{database}-shm"),
                 *paths]  # fmt: skip
    for path in paths:
        if path.exists() and not os.access(path, os.W_OK):
            raise ConfigError(
                f"{path} cannot be written by this user (check its owner, its mode and its "
                "attributes: lsattr). The data may well be intact: fix the access rather than "
                "restore a backup over it"
            )


def open_data_dir(settings: Settings) -> RootOfTrust:
    """Check that ``settings.data_dir`` is an initialised Coffer, check its root key, migrate
    its schema to this version, and open its root of trust. Raises ``ConfigError`` with what to
    do otherwise; a wrong root key is refused before anything is written."""
    hint = f"run `coffer init --data-dir {settings.data_dir}` first"
    if settings.database_url is None and not settings.database_path.exists():
        raise NotInitialised(
            f"{settings.data_dir} is not an initialised Coffer data directory: {hint}"
        )
    try:
        current, head = schema_revision(settings.url)
    except DatabaseUnreadable as exc:
        if _DAMAGED.search(str(exc)):
            raise ConfigError(
                f"the database of {settings.data_dir} is damaged ({exc}): restore it from your "
                "backup"
            ) from None
        raise ConfigError(
            f"the database of {settings.data_dir} cannot be opened ({exc}): check that this user "
            "may read and write the directory and its files, and that the disk has room. The "
            "database itself may be intact: do not replace it with a backup before you know"
        ) from None
    if current is None:
        raise NotInitialised(
            f"the database of {settings.data_dir} holds no Coffer schema: it was not made by "
            "`coffer init`; move it away, then run `coffer init` on the directory"
        )
    if not is_known_revision(current):
        raise ConfigError(
            f"the database's schema is at revision {current}, made by a newer Coffer than this "
            f"one (which knows up to {head}): upgrade this node to the version the other nodes "
            "run (docs/operations.md, upgrades); nothing was changed"
        )
    has_root_rows = current >= ROOT_OF_TRUST_REVISION
    installation = _read_root(settings)[0] if has_root_rows else None
    if installation is None:
        key = _check_legacy_root_key(settings)
        if current != head:
            upgrade(settings.url)
        _install_legacy(settings, key)
        return open_root(settings)
    root = open_root(settings)  # checked before any migration writes
    if current != head:
        upgrade(settings.url)
    return root


@contextlib.asynccontextmanager
async def opened_offline(
    settings: Settings, shares: Callable[[int], Sequence[str]] | None, **changes: Any
) -> AsyncIterator[Services]:
    """The services of an offline command on a data directory (its schema migrated), with the
    root of trust open — by itself, or with ``shares(threshold)`` for the Shamir seal — else
    ``ConfigError``; closed after."""
    offline = replace(settings, audit_writer="thread", **changes)
    root = open_data_dir(offline)
    services = build_services(offline, root=root)
    try:
        if root.sealed and root.seal_type is SealType.SHAMIR and shares is not None:
            await unseal_offline(root, shares(root.status().threshold))
        if root.sealed:
            raise ConfigError(f"the root of trust is sealed: {root.status().reason}")
        yield services
    finally:
        await services.close()


async def migrate_seal(
    settings: Settings,
    choice: SealChoice,
    shares: Callable[[int], Sequence[str]] | None = None,
    show: Callable[[tuple[str, ...]], None] = lambda shares: None,
) -> None:
    """Move an installation to another seal (``coffer operator migrate-seal``, every server
    stopped): a root rotation whose new generation is made by the new seal.

    ``shares(threshold)`` opens a Shamir-sealed installation. ``show`` is given the new unseal
    key shares (Shamir) as soon as the new generation is stored, before anything is rewrapped:
    if the command stops after that, running it again finishes the move (opened with the new
    shares), and the shares were already shown."""
    async with opened_offline(settings, shares, root_rotation_grace_seconds=0.0) as services:
        root = services.root
        rotating = (await services.rotation.status()).rotating
        if root.seal_type is choice.type and not rotating:
            raise ConfigError(
                f"the installation already uses the {choice.type.value} seal; to make a new root "
                "key on it, use `coffer operator rotate-root`"
            )
        if root.seal_type is not choice.type:
            if rotating:
                raise ConfigError(
                    "a root rotation is under way: let it complete (coffer operator root-status) "
                    "and run the command again"
                )
            if choice.type is SealType.FILE:
                stray = sorted(p.name for p in settings.data_dir.glob(f"{ROOT_KEY_FILE}*"))
                if stray:
                    raise ConfigError(
                        f"{', '.join(stray)} in {settings.data_dir} hold(s) no key of this "
                        "installation: move them away first; nothing was changed"
                    )
            config, seal, new_shares = _new_seal(services.settings, root.identity, choice)
            root.add_seal(seal)
            async with services.operations.begin_system("sys.seal.migrate") as op:
                op.event.resource_identity = root.identity
                await services.rotation.start(op.commit, config)
            show(new_shares)
        if not await services.rotation.run():
            raise ConfigError(
                "the move to the new seal is stored but not complete: run the command again "
                "to finish it (with the new seal's unseal key shares)"
            )


async def generate_admin_token(
    settings: Settings,
    lifetime: timedelta | None = None,
    shares: Callable[[int], Sequence[str]] | None = None,
) -> NewToken:
    """A new token for the platform administrator, made on the data directory with the root of
    trust (``coffer operator generate-admin-token``: the way back in when every administrator
    token is lost). The token's digest needs the token purpose key, which only the opened root
    can unwrap, so whoever can write the database alone cannot do this. The change is written
    with its audit record (``iam.token.create``, ``principalKind: "operator"``) in one
    transaction, as every change is. Servers may keep running: the record takes its turn on the
    chain like any other writer's.

    ``shares(threshold)`` opens a Shamir-sealed installation."""
    if lifetime is not None and not timedelta(seconds=1) <= lifetime <= MAX_TOKEN_LIFETIME:
        raise ConfigError("the token's lifetime must be 1 second to 3650 days")
    async with opened_offline(settings, shares, metrics=False) as services:
        try:
            return await services.iam.recover_admin_token(lifetime)
        except CofferError as exc:
            raise ConfigError(exc.message) from None


async def unseal_offline(root: RootOfTrust, shares: Sequence[str]) -> None:
    """Open a Shamir-sealed root with ``shares`` (an offline command's), or ``ConfigError``."""
    for text in shares:
        raw = share_bytes(text)
        if raw is None:
            raise ConfigError("an unseal key share is base64, as coffer init printed it")
        try:
            await root.submit_share(raw)
        except InvalidUnsealKey as exc:
            raise ConfigError(exc.message) from None
    if root.sealed:
        raise ConfigError(f"still sealed: {root.status().threshold} unseal key share(s) are needed")


async def verify_audit(
    settings: Settings | None,
    shares: Callable[[int], Sequence[str]] | None = None,
    *,
    anchor_path: Path | None = None,
    public_key: bytes | None = None,
    export: Path | None = None,
) -> Verification:
    """Walk the audit chain of an initialised data directory (``coffer audit verify``), or of
    an export or a sink's copy of it (``export``), and compare it with the anchor file
    (``anchor_path``, else the configured one; an export is compared only with one given).

    With the root of trust (the default) every link is checked; ``shares(threshold)`` gives the
    unseal key shares of a Shamir-sealed installation. With ``public_key`` (the checkpoint key's
    PEM) nothing of the root of trust is needed or opened — nor a data directory, for an export
    — and records are checked by count and order against the signed checkpoints."""
    copy = None
    if export is not None:
        try:
            copy = await asyncio.to_thread(_read_export, export)
        except LinesError as exc:
            raise ConfigError(f"{export}: {exc}") from None
    if public_key is not None:
        try:
            verifier = CheckpointVerifier(public_key)
        except ValueError:
            raise ConfigError("the public key is not an Ed25519 public key in PEM") from None
        if copy is not None:
            anchor = await asyncio.to_thread(_anchor_file, anchor_path) if anchor_path else None
            return await verify_chain(copy, verifier, None, anchor, copy=copy)
        assert settings is not None
        async with _stores(settings, _no_macs) as (_, audit_store):
            anchor = await _anchor_of(audit_store, anchor_path or settings.anchor_path)
            return await verify_chain(audit_store, verifier, None, anchor)
    assert settings is not None
    root = open_data_dir(settings)
    purposes: PurposeKeys
    try:
        async with _stores(settings, lambda: purposes.row_macs) as (store, audit_store):
            root.attach(store)
            if root.sealed and root.seal_type is SealType.SHAMIR and shares is not None:
                await unseal_offline(root, shares(root.status().threshold))
            if root.sealed:
                raise ConfigError(f"the root of trust is sealed: {root.status().reason}")
            purposes = PurposeKeys(root, store, utc_now)
            try:
                await purposes.load(create=False)  # verifying writes nothing
            except KeyIntegrityError:
                raise ConfigError(
                    "the audit keys are missing from the database: the chain cannot be verified "
                    "(a server makes them at its first start)"
                ) from None
            if copy is not None:
                path = anchor_path or settings.anchor_path
                anchor = await asyncio.to_thread(_anchor_file, path) if path.exists() else None
                # The installation's first keyed record, not the copy's word for it: a copy
                # could claim every record is linked the old, unkeyed way.
                keyed = await audit_store.audit_keyed_from()
                return await verify_chain(copy, purposes.signer, purposes.audit_link, anchor,
                                          copy=copy, keyed_from=keyed)  # fmt: skip
            anchor = await _anchor_of(audit_store, anchor_path or settings.anchor_path)
            return await verify_chain(audit_store, purposes.signer, purposes.audit_link, anchor)
    finally:
        root.close()


async def export_audit(settings: Settings, out: BinaryIO) -> int:
    """Write the whole chain of a data directory to ``out`` as audit lines (``coffer audit
    export --data-dir``): every record with its links, every checkpoint and prune mark, and the
    head, so that the export can be verified elsewhere (``coffer audit verify --export``). Reads
    the database only: no root of trust. Returns how many records went out."""
    async with _stores(settings, _no_macs) as (_, store):
        made = utc_now()  # before the head is read: every checkpoint it holds is older
        head_seq, head_link = await store.audit_head()
        keyed_from = await store.audit_keyed_from()
        checkpoints = [cp for cp in await store.audit_checkpoints() if cp.seq <= head_seq]
        out.write(export_header(made))
        for mark in await store.audit_prune_marks():
            out.write(pruned_line(mark))
        after = count = 0
        while after < head_seq and (rows := await store.audit_rows(after, 5000)):
            rows = [row for row in rows if row.seq <= head_seq]
            if count == 0:  # checkpoints where the records begin (old ones pruned)
                out.writelines(checkpoint_line(cp) for cp in checkpoints if cp.seq < rows[0].seq)
            out.writelines(lines_of(rows, checkpoints))
            count += len(rows)
            after = rows[-1].seq if rows else head_seq
        if count == 0:  # every record pruned: the checkpoint where they end still shows it
            out.writelines(checkpoint_line(cp) for cp in checkpoints)
        out.write(head_line(head_seq, head_link, keyed_from))
        return count


@contextlib.asynccontextmanager
async def _stores(
    settings: Settings, macs: Callable[[], RowMacs]
) -> AsyncIterator[tuple[SqlStore, SqlAuditStore]]:
    """The database of ``settings`` for an offline command that reads the audit chain."""
    store = SqlStore(create_engine_for(settings.url), RowIntegrity(macs))
    audit_store = SqlAuditStore(store, create_sync_engine_for(settings.url), macs)
    try:
        yield store, audit_store
    except DBAPIError as exc:
        raise ConfigError(f"the database cannot be read ({exc.orig})") from None
    finally:
        await audit_store.close()
        await store.close()


def _read_export(path: Path) -> ExportedChain:
    try:
        with path.open("rb") as lines:
            return read_lines(iter(lines))
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None


def _anchor_file(path: Path) -> AnchorContents:
    try:
        return read_anchor(path)
    except AnchorError as exc:
        raise ConfigError(str(exc)) from None


def _no_macs() -> RowMacs:
    raise ConfigError("verifying with the public key reads no authenticated row")


async def _anchor_of(store: SqlAuditStore, path: Path) -> AnchorContents | None:
    """The anchor file to verify against. A server makes it when it starts; without it, only a
    log that was never written is verified (``None``: a new installation whose server never
    ran; ``verify`` says there was no anchor); anything else is an error."""
    if not await asyncio.to_thread(path.exists):
        never_written = (
            (await store.audit_head())[0] == 0
            and not await store.audit_checkpoints()
            and await store.audit_keyed_from() is None  # noted by the first record ever written
        )
        if never_written:
            return None
        raise ConfigError(
            f"no audit anchor at {path}: it was deleted, or it is elsewhere (give --anchor, or "
            "--config with the server's audit_anchor_path)"
        )
    return await asyncio.to_thread(_anchor_file, path)
