"""The composition root: settings → stores → providers → services → app.

The only module that chooses implementations. Nothing is built at import time; every caller
(the CLI, each test) builds its own.
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from starlette.applications import Starlette

from coffer.api.app import create_app
from coffer.api.errors import status_of
from coffer.audit.committer import BatchCommitter, Committer
from coffer.audit.events import AuditSink, DiscardingSink
from coffer.audit.log import AuditLog
from coffer.audit.process import ProcessCommitter
from coffer.audit.verify import Verification, verify_chain
from coffer.config import ConfigError, Settings
from coffer.crypto.root import FileRootKey, RootKeyError, RootKeyProvider
from coffer.crypto.signing import CheckpointSigner
from coffer.domain.regions import Region
from coffer.errors import CofferError
from coffer.iam.oidc import OidcVerifier
from coffer.metrics import CacheMeter, observe_audit_batch
from coffer.scheduler.jobs import Scheduler
from coffer.service.access import AccessService
from coffer.service.audit import AuditService
from coffer.service.byok import WrappingKeys
from coffer.service.caches import KeyCache
from coffer.service.changes import ChangeBus, Changes
from coffer.service.crypto import CryptoService
from coffer.service.iam import IamService
from coffer.service.keyring import Keyring
from coffer.service.keys import KeyService
from coffer.service.lifecycle import LifecycleService
from coffer.service.operations import Operations
from coffer.service.scope import KeyScope
from coffer.service.services import Lease, Services
from coffer.service.tenants import Bootstrapped, TenantService
from coffer.storage.database import (
    DatabaseUnreadable,
    create_engine_for,
    create_read_engine_for,
    create_sync_engine_for,
    schema_revision,
    upgrade,
)
from coffer.storage.postgres import PgChangeBus, PgLease
from coffer.storage.sql import SqlStore
from coffer.storage.sql_audit import AUDIT_LOCK_SUFFIX, SqlAuditStore
from coffer.storage.sql_iam import SqlIamStore
from coffer.storage.sqlite_changes import FileLease, SqliteChangeBus

#: The lock file whose holder runs the background jobs when several workers share SQLite.
JOBS_LOCK_FILE = "jobs.lock"
SQLITE_FILES = ("", "-wal", "-shm", "-journal", AUDIT_LOCK_SUFFIX)


def utc_now() -> datetime:
    return datetime.now(UTC)


#: Allocations between two young-generation collections of a serving process (CPython: 700).
GC_YOUNG_THRESHOLD = 20_000


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


def build_services(
    settings: Settings,
    *,
    root: RootKeyProvider | None = None,
    clock: Callable[[], datetime] = utc_now,
    timer: Callable[[], float] = time.monotonic,
    audit_sink: AuditSink | None = None,
) -> Services:
    store = SqlStore(
        create_engine_for(settings.url, settings.database_pool_size),
        create_read_engine_for(settings.url),
    )
    root = root if root is not None else FileRootKey.load(settings.root_key_path)
    access = AccessService(
        store,
        clock,
        cache_size=settings.cache_size,
        cache_ttl=settings.cache_ttl_seconds,
        timer=timer,
        oidc=OidcVerifier(settings.oidc) if settings.oidc is not None else None,
        metered=settings.metrics,
    )
    keyring = Keyring(
        store, root, cache_size=settings.cache_size, timer=timer, metered=settings.metrics
    )
    audit_store = SqlAuditStore(store, create_sync_engine_for(settings.url))
    audit_log = None
    if settings.audit_sink == "database":
        signer = CheckpointSigner(root)
        committer: Committer = (
            ProcessCommitter([sys.executable, "-m", "coffer.audit_writer"], settings)
            if settings.audit_writer == "process"
            else BatchCommitter(
                audit_store,
                signer,
                clock,
                audit_status,
                checkpoint_every=settings.audit_checkpoint_every,
            )
        )
        audit_log = AuditLog(
            audit_store,
            signer,
            clock,
            committer,
            batch_meter=observe_audit_batch if settings.metrics else None,
        )
    sink: AuditSink = audit_sink or audit_log or DiscardingSink()
    operations = Operations(access, sink, clock, audit_status, audit_store.apply_key_write)
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
    wrapping = WrappingKeys(store, root, clock, timer)
    tenants = TenantService(store, root, clock)
    bus, lease = _coordination(settings, store)
    changes = Changes(scope.keys, keyring, access, bus)
    keys = KeyService(store, operations, keyring, scope, wrapping, clock)
    lifecycle = LifecycleService(
        operations,
        keyring,
        scope,
        clock,
        retention=timedelta(days=settings.deletion_retention_days),
        changes=changes,
    )
    return Services(
        settings=settings,
        store=store,
        root=root,
        access=access,
        keyring=keyring,
        keys=keys,
        crypto=CryptoService(operations, keyring, scope),
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
    background = [services.changes.listen_forever]
    if run_scheduler:
        background.append(scheduler.run_forever)
    app = create_app(services, background=background)
    app.state.scheduler = scheduler
    return app


class NotInitialised(ConfigError):
    """The data directory has not been set up by ``coffer init``."""


class AlreadyInitialised(ConfigError):
    """``coffer init`` on a directory that already holds a Coffer."""


async def initialise(settings: Settings) -> Bootstrapped:
    """Create the data directory, root key, schema, first organisation and admin token.

    Either everything is created or nothing is left behind: on failure the files this call made
    are removed again.
    """
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
                "the database already holds a Coffer: to add a node, copy the root key of an "
                "initialised node into this data directory instead; nothing was changed"
            )
    created_dir = not data_dir.exists()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    made: list[Path] = []
    try:
        root = FileRootKey.create(settings.root_key_path)
        made.append(settings.root_key_path)
        made += [
            settings.database_path.with_name(settings.database_path.name + s) for s in SQLITE_FILES
        ]
        upgrade(settings.url)
        return await _bootstrap(settings, root)
    except BaseException:
        for path in made:
            path.unlink(missing_ok=True)
        if created_dir:
            data_dir.rmdir()
        raise


async def _bootstrap(settings: Settings, root: RootKeyProvider) -> Bootstrapped:
    services = build_services(settings, root=root)
    try:
        return await services.tenants.bootstrap()
    finally:
        await services.close()


def open_data_dir(settings: Settings) -> RootKeyProvider:
    """Check that ``settings.data_dir`` is an initialised Coffer, migrate its schema to this
    version, and load its root key. Raises ``ConfigError`` with what to do otherwise."""
    hint = f"run `coffer init --data-dir {settings.data_dir}` first"
    if settings.database_url is None and not settings.database_path.exists():
        raise NotInitialised(
            f"{settings.data_dir} is not an initialised Coffer data directory: {hint}"
        )
    try:
        current, head = schema_revision(settings.url)
    except DatabaseUnreadable as exc:
        raise ConfigError(
            f"the database of {settings.data_dir} cannot be read ({exc}): restore it from your "
            "backup"
        ) from None
    if current is None:
        raise NotInitialised(
            f"the database of {settings.data_dir} holds no Coffer schema: it was not made by "
            "`coffer init`; move it away, then run `coffer init` on the directory"
        )
    if current != head:
        upgrade(settings.url)
    try:
        return FileRootKey.load(settings.root_key_path)
    except RootKeyError as exc:
        raise ConfigError(
            f"{exc.message}. Coffer cannot decrypt any key without it: restore the root key file "
            "from your backup (mode 0600, readable by the server's user)"
        ) from None


async def verify_audit(settings: Settings) -> Verification:
    """Walk the audit chain of an initialised data directory (``coffer audit verify``)."""
    root = open_data_dir(settings)
    store = SqlStore(create_engine_for(settings.url))
    audit_store = SqlAuditStore(store, create_sync_engine_for(settings.url))
    try:
        return await verify_chain(audit_store, CheckpointSigner(root))
    finally:
        await audit_store.close()
        await store.close()
