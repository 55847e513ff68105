"""Fixtures shared by the whole suite: a fresh data directory and an app over it per test."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
import shutil
import sqlite3
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from starlette.testclient import TestClient

from coffer.bootstrap import SealChoice, build_app, initialise
from coffer.config import RegionSettings, Settings
from coffer.domain.identity import SERVICE_ACCOUNT_PREFIX, new_identity
from coffer.domain.permissions import RoleBinding, ScopeKind
from coffer.domain.seal import SealType
from coffer.domain.tenants import Principal, PrincipalKind, Project
from coffer.iam.tokens import new_token
from coffer.scheduler.jobs import Scheduler
from coffer.service.services import Services
from coffer.service.tenants import Bootstrapped
from coffer.storage.changes import AddBinding, AddPrincipal, AddProject, AddToken, ChangeSet
from tests.postgres import new_schema, private_cluster

T = TypeVar("T")

REGIONS = (
    RegionSettings(slug="nl-01", name="Netherlands 01", kms_available=True),
    RegionSettings(slug="de-01", name="Germany 01", kms_available=True),
    RegionSettings(slug="be-01", name="Belgium 01", kms_available=False),
)


class FakeClock:
    """The real time plus an offset that tests move forward (days pass in an instant)."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, **delta: float) -> None:
        self.offset += timedelta(**delta)


@dataclass
class Kms:
    """A running app (through its ASGI interface) and the identity ``coffer init`` printed."""

    client: TestClient
    settings: Settings
    boot: Bootstrapped
    clock: FakeClock = field(default_factory=FakeClock)

    @property
    def scheduler(self) -> Scheduler:
        found: Scheduler = self.client.app.state.scheduler  # type: ignore[attr-defined]
        return found

    @property
    def org(self) -> str:
        return self.boot.organisation.identity

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.boot.token}", "X-Organisation-Identity": self.org}

    def get(self, path: str, **kwargs: Any) -> Any:
        kwargs.setdefault("headers", self.headers)
        return self.client.get(path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        kwargs.setdefault("headers", self.headers)
        for field_name in SECRET_REQUEST_FIELDS:
            if isinstance(body, dict) and isinstance(body.get(field_name), str):
                remember_plaintext(body[field_name])
        response = self.client.post(path, json=body, **kwargs)
        if response.status_code == 200 and response.headers.get("content-type", "").startswith(
            "application/json"
        ):
            answer = response.json()
            for field_name in SECRET_RESPONSE_FIELDS:
                if isinstance(answer, dict) and isinstance(answer.get(field_name), str):
                    remember_plaintext(answer[field_name])
        return response

    @property
    def services(self) -> Services:
        found: Services = self.client.app.state.services  # type: ignore[attr-defined]
        return found

    def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run an async service call on the app's own event loop."""
        assert self.client.portal is not None
        return self.client.portal.call(fn, *args)

    def add_principal(
        self,
        policy: str | None,
        scope_kind: ScopeKind = ScopeKind.ORGANISATION,
        scope_identity: str | None = None,
        organisation: str | None = None,
    ) -> str:
        """A service account with one role binding (or none); returns its token."""

        async def add() -> str:
            now = datetime.now(UTC)
            principal = Principal(
                new_identity(SERVICE_ACCOUNT_PREFIX),
                PrincipalKind.SERVICE_ACCOUNT,
                "sa",
                False,
                now,
            )
            token = new_token()
            changes: list[Any] = [
                AddPrincipal(principal),
                AddToken(
                    new_identity("tok"),
                    principal.identity,
                    self.services.purposes.token_digest(token),
                    now,
                    None,
                ),
            ]
            if policy is not None:
                binding = RoleBinding(
                    new_identity("rb"),
                    principal.identity,
                    organisation or self.org,
                    policy,
                    scope_kind,
                    scope_identity,
                )
                changes.append(AddBinding(binding, now))
            await self.services.audit_store.apply_change(ChangeSet(changes))
            return token

        token = self.run(add)
        SUITE_SECRETS.add(token)
        return token

    def add_project(self, name: str) -> Project:
        project = Project(new_identity("prj"), self.org, name, name, datetime.now(UTC))

        self.run(self.services.audit_store.apply_change, AddProject(project))
        return project

    def create_key(
        self, name: str, key_type: str = "aes256-gcm96", **fields: Any
    ) -> dict[str, Any]:
        response = self.post("/v1/kms/nl-01/keys", {"name": name, "keyType": key_type, **fields})
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        key = self.run(self.services.store.find_key, self.org, "nl-01", None, created["identity"])
        if key is not None:  # project-scoped keys are created through other headers
            material = self.run(self.services.keyring.material, key, 1)
            SUITE_SECRETS.update({material.hex(), base64.b64encode(material).decode()})
        return created


#: ``postgresql://user@host:port/db`` of a PostgreSQL cluster to run the suite on (each app gets a
#: database of its own there); unset, every app uses SQLite in its data directory.
TEST_DATABASE_URL = os.environ.get("COFFER_TEST_DATABASE_URL") or None
CREATED_SCHEMAS: list[str] = []


def fresh_database_url() -> str | None:
    """A new, empty schema of the test cluster's database when the suite runs on PostgreSQL
    (else ``None``): a schema per app is as isolated as a database and costs nothing to make."""
    if TEST_DATABASE_URL is None:
        return None
    url = new_schema(TEST_DATABASE_URL)
    CREATED_SCHEMAS.append(url.rsplit("%3D", 1)[1])
    return url


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[tuple[str, Path | None]]:
    """A PostgreSQL cluster for tests of several nodes: the suite's (``COFFER_TEST_DATABASE_URL``)
    or a private one; (URL of its ``postgres`` database, data directory if private)."""
    if TEST_DATABASE_URL is not None:
        yield TEST_DATABASE_URL, None
        return
    with private_cluster() as (url, data):
        yield url, data


def on_postgresql() -> bool:
    return TEST_DATABASE_URL is not None


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings for an in-process app. Its audit batches commit on a worker thread (one writer
    process per test would cost a Python start-up each); real servers in ``tests/e2e`` and
    ``tests/api/test_audit_writer.py`` use the writer process, the default."""
    overrides.setdefault("audit_writer", "thread")
    if "database_url" not in overrides:
        overrides["database_url"] = fresh_database_url()
    return Settings(data_dir=data_dir, regions=REGIONS, **overrides)


def sync_engine(settings: Settings) -> Any:
    """A plain SQLAlchemy engine on the settings' database (SQLite file or PostgreSQL)."""
    from coffer.storage.database import create_sync_engine_for

    return create_sync_engine_for(settings.url)


def initialised(settings: Settings, seal: SealChoice | None = None) -> Bootstrapped:
    boot = asyncio.run(initialise(settings, seal))
    SUITE_SECRETS.add(boot.token)
    SUITE_SECRETS.update(boot.unseal_keys)
    return boot


# --- a real HSM: SoftHSM2 -----------------------------------------------------------------------

SOFTHSM_LIBRARIES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
)


@dataclass(frozen=True)
class HsmToken:
    label: str
    pin: str
    directory: Path

    def remove(self) -> Path:
        """Take the token away (as a pulled token or an unreachable HSM); returns where it went."""
        # Out of the token directory: SoftHSM takes any directory in it for a token.
        away = self.directory.parent.parent / (self.directory.name + ".away")
        self.directory.rename(away)
        return away

    def restore(self, away: Path) -> None:
        away.rename(self.directory)


@dataclass(frozen=True)
class SoftHsm:
    """SoftHSM2 with a token directory of the test session's own (``SOFTHSM2_CONF`` is set for
    this process and so for every ``coffer`` process the tests start)."""

    conf: Path
    library: str
    tokens: Path

    def new_token(self, label: str) -> HsmToken:
        before = set(self.tokens.iterdir())
        pin = secrets.token_hex(8)
        subprocess.run(
            ["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", pin,
             "--so-pin", secrets.token_hex(8)],
            check=True, capture_output=True, env={**os.environ, "SOFTHSM2_CONF": str(self.conf)},
            timeout=30,
        )  # fmt: skip
        (made,) = set(self.tokens.iterdir()) - before
        return HsmToken(label, pin, made)

    def seal(self, token: HsmToken) -> SealChoice:
        return SealChoice(SealType.PKCS11, pkcs11_library=self.library, pkcs11_token=token.label)


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> SoftHsm:
    library = next((path for path in SOFTHSM_LIBRARIES if Path(path).exists()), None)
    if library is None or shutil.which("softhsm2-util") is None:
        pytest.fail("SoftHSM2 is not installed (apt-get install softhsm2): the PKCS #11 seal is "
                    "tested against it for real")  # fmt: skip
    directory = tmp_path_factory.mktemp("softhsm")
    tokens = directory / "tokens"
    tokens.mkdir()
    conf = directory / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    os.environ["SOFTHSM2_CONF"] = str(conf)
    return SoftHsm(conf, library, tokens)


# --- no secret in any audit record of the whole suite -------------------------------------------

#: Plaintexts (base64 and decoded), tokens and key material (hex and base64) the suite used.
SUITE_SECRETS: set[str] = set()
MIN_SECRET_LENGTH = 8  # shorter strings ("AA==") occur by chance in any text


#: Fields whose values must never reach an audit record (data, outputs, key material).
SECRET_REQUEST_FIELDS = ("plaintext", "input", "importKeyMaterial", "signature", "hmac")
SECRET_RESPONSE_FIELDS = ("plaintext", "keyMaterial", "signature", "hmac", "ciphertext")


def remember_plaintext(b64: str) -> None:
    SUITE_SECRETS.add(b64)
    try:
        raw = base64.b64decode(b64, validate=True)
    except ValueError:
        return
    SUITE_SECRETS.add(raw.hex())
    with contextlib.suppress(UnicodeDecodeError):
        SUITE_SECRETS.add(raw.decode())


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_any_audit_record(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """After the whole suite: every audit record of every database the tests made is searched
    for every plaintext, token and key the tests used."""
    yield
    wanted = sorted(s for s in SUITE_SECRETS if len(s) >= MIN_SECRET_LENGTH)
    scanned = 0
    found: list[str] = []
    texts: list[tuple[str, list[str]]] = []
    for database in tmp_path_factory.getbasetemp().rglob("coffer.db"):
        connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
        try:
            rows = connection.execute("SELECT record FROM audit_events").fetchall()
        except sqlite3.DatabaseError:
            continue  # a database a test corrupted on purpose, or one without the schema
        finally:
            connection.close()
        texts.append((str(database), [row[0] for row in rows]))
    if TEST_DATABASE_URL is not None and CREATED_SCHEMAS:
        import psycopg

        with psycopg.connect(TEST_DATABASE_URL, autocommit=True) as connection:
            for schema in CREATED_SCHEMAS:
                try:
                    rows = connection.execute(f'SELECT record FROM "{schema}".audit_events')
                    texts.append((schema, [row[0] for row in rows.fetchall()]))
                except psycopg.Error:
                    continue  # a schema an app never migrated
    for where, records in texts:
        text = "\n".join(records)
        scanned += len(records)
        found += [f"{secret[:12]}… in {where}" for secret in wanted if secret in text]
    if scanned and wanted:
        assert found == [], found


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data")


def open_kms(settings: Settings, boot: Bootstrapped) -> Iterator[Kms]:
    clock = FakeClock()
    app = build_app(settings, clock=clock, run_scheduler=False)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Kms(client, settings, boot, clock)


@pytest.fixture
def kms(settings: Settings) -> Iterator[Kms]:
    yield from open_kms(settings, initialised(settings))


@pytest.fixture(scope="module")
def module_kms(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kms]:
    """One app for a whole module (property tests run many examples against it)."""
    settings = make_settings(tmp_path_factory.mktemp("kms") / "data")
    yield from open_kms(settings, initialised(settings))


#: Markers of the tests a PostgreSQL run leaves out.
NOT_ON_POSTGRESQL = ("sqlite_only", "one_engine")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On a PostgreSQL run, tests about SQLite's own files (journal files, a corrupt database
    file) do not apply, and end-to-end tests of what the engine does not change ran already in
    the SQLite run: they are deselected, and the count is shown."""
    if TEST_DATABASE_URL is None:
        return

    def left_out_here(item: pytest.Item) -> bool:
        return any(item.get_closest_marker(name) is not None for name in NOT_ON_POSTGRESQL)

    kept = [item for item in items if not left_out_here(item)]
    left_out = [item for item in items if left_out_here(item)]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = kept
