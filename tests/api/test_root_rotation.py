"""Root key rotation, online: a new generation, every blob the root wraps rewrapped, the old
generation retired — old ciphertexts keep working, the old root key opens nothing any more, and
a rotation stopped half way (or one another node did not hear of) still ends right."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from sqlalchemy import func, select

from coffer.audit.chain import signed_message
from coffer.bootstrap import SealChoice, build_services, open_root
from coffer.config import ConfigError, Settings
from coffer.crypto.root import SoftwareCipher, open_blob, opens_check_value
from coffer.crypto.signing import legacy_signing_seed
from coffer.crypto.wrapping import kek_aad, purpose_key_aad
from coffer.domain.seal import SealType, StaleRootGeneration
from coffer.errors import KeyIntegrityError
from coffer.service.context import RequestMeta
from coffer.service.iam import OrganisationSpec
from coffer.service.services import Services
from coffer.storage import schema
from coffer.storage.sql_audit import _checkpoint
from tests.api.test_access import error
from tests.api.test_audit import verification
from tests.conftest import Kms, initialised, make_settings, open_kms, sync_engine

KEYS = "/v1/kms/nl-01/keys"


def rotation_settings(data_dir: Path, **overrides: Any) -> Settings:
    overrides.setdefault("root_rotation_grace_seconds", 0.0)
    overrides.setdefault("root_rotation_batch_size", 2)
    return make_settings(data_dir, **overrides)


@pytest.fixture
def kms(tmp_path: Path) -> Iterator[Kms]:
    settings = rotation_settings(tmp_path / "data")
    yield from open_kms(settings, initialised(settings))


def root_blobs(kms: Kms) -> list[tuple[str, bytes, int, bytes]]:
    """(table, blob, generation column, associated data) of every blob the root key wraps."""
    found = []
    engine = sync_engine(kms.settings)
    with engine.connect() as conn:
        for table, key, blob, aad in (
            (schema.organisation_keks, "organisation_identity", "wrapped_kek", kek_aad),
            (schema.purpose_keys, "purpose", "wrapped", purpose_key_aad),
        ):
            for row in conn.execute(select(table.c[key], table.c[blob], table.c.root_generation)):
                found.append((table.name, bytes(row[1]), row[2], aad(row[0])))
    engine.dispose()
    return found


def wait_until_rotated(kms: Kms, bound: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        state: dict[str, Any] = kms.get("/v1/sys/root").json()
        if not state["rotating"]:
            # The database says it is complete; the server's own run then destroys the old key
            # (root.key.old): wait for that run to end.
            assert kms.run(kms.services.rotation.run)
            return state
        time.sleep(0.02)
    pytest.fail(f"the root rotation did not complete within {bound} s: {state}")


def populate(kms: Kms) -> dict[str, Any]:
    """Organisations, keys of two kinds, the region's BYOK key, and what they produced."""
    for n in range(3):
        assert kms.post("/v1/organisations", {"name": f"Tenant {n}"}).status_code == 201
    kms.create_key("data")
    kms.create_key("signer", "ed25519")
    assert kms.get("/v1/kms/nl-01/wrapping-key").status_code == 200
    return {
        "ciphertext": kms.post(f"{KEYS}/data/encrypt", {"plaintext": "b2xk"}).json()["ciphertext"],
        "signature": kms.post(f"{KEYS}/signer/sign", {"input": "b2xk"}).json()["signature"],
        "wrapping": kms.get("/v1/kms/nl-01/wrapping-key").json()["publicKey"],
    }


def still_works(kms: Kms, made: dict[str, Any]) -> None:
    kms.services.keyring.clear()  # every KEK unwrapped anew, as after a restart
    kms.services.keys._wrapping.clear()
    decrypted = kms.post(f"{KEYS}/data/decrypt", {"ciphertext": made["ciphertext"]})
    assert decrypted.json()["plaintext"] == "b2xk", decrypted.text
    verified = kms.post(f"{KEYS}/signer/verify", {"input": "b2xk", "signature": made["signature"]})
    assert verified.json()["valid"] is True
    assert kms.get("/v1/kms/nl-01/wrapping-key").json()["publicKey"] == made["wrapping"]
    fresh = kms.post(f"{KEYS}/data/encrypt", {"plaintext": "bmV3"}).json()["ciphertext"]
    assert kms.post(f"{KEYS}/data/decrypt", {"ciphertext": fresh}).json()["plaintext"] == "bmV3"


def test_rotating_the_root_rewraps_everything_and_retires_the_old_key(kms: Kms) -> None:
    made = populate(kms)
    old_key = kms.settings.root_key_path.read_bytes()
    before = root_blobs(kms)
    assert {generation for _, _, generation, _ in before} == {1}
    # Four KEKs and the purpose keys (checkpoint signing, row MAC, token digest, audit link);
    # BYOK wrapping keys are wrapped by their organisation's KEK, and need no rewrapping.
    assert len(before) == 4 + 4
    signature_key = kms.run(kms.services.purposes.checkpoint_seed)

    started = kms.post("/v1/sys/rotate-root")
    assert started.status_code == 202, started.text
    assert started.json()["activeGeneration"] == 2
    done = wait_until_rotated(kms)
    assert done == {"installation": kms.boot.installation, "sealType": "file",
                    "activeGeneration": 2, "rotating": False, "previousGenerations": [],
                    "remaining": 0}  # fmt: skip

    after = root_blobs(kms)
    assert len(after) == len(before)
    assert {generation for _, _, generation, _ in after} == {2}
    new_key = kms.settings.root_key_path.read_bytes()
    assert new_key != old_key
    assert sorted(p.name for p in kms.settings.data_dir.glob("root.key*")) == ["root.key"]
    still_works(kms, made)
    # The same purpose keys, wrapped anew: signatures made before still verify.
    assert kms.run(kms.services.purposes.checkpoint_seed) == signature_key
    assert kms.services.audit_log is not None
    kms.run(kms.services.audit_log.checkpoint)
    assert verification(kms).ok

    # The old key opens nothing: no blob, not the new generation's check value.
    old = SoftwareCipher(old_key)
    for table, blob, _, aad in after:
        with pytest.raises(KeyIntegrityError):
            open_blob(old, blob, aad)
        assert open_blob(SoftwareCipher(new_key), blob, aad), table
    generations = {g.generation: g for g in kms.services.root.generations}
    assert not generations[1].live
    assert not opens_check_value(old, generations[2].check_value, kms.boot.installation, 2)

    # A server given the old key is told so before it writes anything.
    kms.settings.root_key_path.write_bytes(old_key)
    with pytest.raises(ConfigError, match="retired by a root rotation"):
        open_root(kms.settings)
    kms.settings.root_key_path.write_bytes(new_key)

    engine = sync_engine(kms.settings)
    with engine.connect() as conn:
        table = schema.audit_events
        actions = [r[0] for r in conn.execute(select(table.c.action).where(table.c.status < 400))]
    engine.dispose()
    assert actions.count("sys.root.rotate") == 1
    assert actions.count("sys.root.rotate.complete") == 1


async def begin_rotation(services: Services) -> Any:
    """What ``POST /v1/sys/rotate-root`` does, as the server itself."""
    async with services.operations.begin_system("sys.root.rotate") as op:
        return await services.rotation.start(op.commit)


async def rewrap_one_batch(services: Services) -> None:
    rows = await services.store.wrapped_by_root_below(2, 1)
    rewrapped = [(r, await services.root.rewrap(r.wrapped, kek_aad(r.ref))) for r in rows]
    await services.store.rewrap_root(rewrapped)


def test_a_rotation_stopped_half_way_resumes_at_the_next_start(tmp_path: Path) -> None:
    settings = rotation_settings(tmp_path / "data", root_rotation_batch_size=1)
    boot = initialised(settings)
    for kms in open_kms(settings, boot):
        made = populate(kms)
        # Begun, one batch rewrapped, then the server stops (its background run is not started).
        kms.run(begin_rotation, kms.services)
        kms.run(rewrap_one_batch, kms.services)
        assert kms.run(kms.services.rotation.status).remaining == 7
    for restarted in open_kms(settings, boot):
        assert wait_until_rotated(restarted)["activeGeneration"] == 2
        assert {generation for _, _, generation, _ in root_blobs(restarted)} == {2}
        still_works(restarted, made)


def test_a_node_that_did_not_hear_of_the_rotation_wraps_with_the_new_key(kms: Kms) -> None:
    """Node B still holds generation 1 as the active one when A's rotation completes: its new
    organisation is turned back by the database (503, to retry: B reads the generations again
    at once), never stored under a retired generation (docs/security.md, root rotation)."""
    populate(kms)
    other = build_services(kms.settings)  # node B: same database, same key files
    meta = RequestMeta(request_id="b", token=kms.boot.token)

    async def on_b() -> str:
        try:
            # While A's rotation is under way, B wraps with generation 1: still live, rewrapped.
            during = await other.iam.create_organisation(meta, lambda: OrganisationSpec("During"))
            await kms_rotation_completes()
            assert other.root.active_generation == 1, "B has not heard of the rotation"
            with pytest.raises(StaleRootGeneration):
                await other.iam.create_organisation(meta, lambda: OrganisationSpec("After"))
            after = await other.iam.create_organisation(meta, lambda: OrganisationSpec("After"))
            return f"{during.identity} {after.identity}"
        finally:
            await other.close()

    async def kms_rotation_completes() -> None:
        assert await kms.services.rotation.run()

    kms.run(begin_rotation, kms.services)
    during, after = kms.run(on_b).split()
    generations = {blob: generation for _, blob, generation, _ in root_blobs(kms)}
    assert set(generations.values()) == {2}
    engine = sync_engine(kms.settings)
    with engine.connect() as conn:
        table = schema.organisation_keks
        rows = {
            r[0]: r[1]
            for r in conn.execute(select(table.c.organisation_identity, table.c.root_generation))
        }
    engine.dispose()
    assert rows[during] == rows[after] == 2
    for organisation in (during, after):
        blob = kms.run(kms.services.store.wrapped_kek, organisation)
        assert len(kms.run(kms.services.root.unwrap, blob, kek_aad(organisation))) == 32


def test_one_rotation_at_a_time_and_only_for_platform_administrators(kms: Kms) -> None:
    app = kms.add_principal("kms:FullAccess")
    error(kms.client.post("/v1/sys/rotate-root", headers={"Authorization": f"Bearer {app}"}),
          403, "forbidden")  # fmt: skip
    error(kms.client.get("/v1/sys/root", headers={"Authorization": f"Bearer {app}"}),
          403, "forbidden")  # fmt: skip
    error(kms.client.post("/v1/sys/rotate-root"), 401, "unauthenticated")
    kms.run(begin_rotation, kms.services)
    error(kms.post("/v1/sys/rotate-root"), 409, "conflict")
    assert kms.run(kms.services.rotation.run)
    assert kms.post("/v1/sys/rotate-root").status_code == 202
    assert wait_until_rotated(kms)["activeGeneration"] == 3


def test_the_shamir_seal_rotates_too_and_opens_with_the_same_shares(tmp_path: Path) -> None:
    settings = rotation_settings(tmp_path / "data")
    boot = initialised(settings, SealChoice(SealType.SHAMIR, shares=3, threshold=2))
    for kms in open_kms(settings, boot):
        for share in boot.unseal_keys[:2]:
            kms.client.post("/v1/sys/unseal", json={"key": share})
        made = populate(kms)
        assert kms.post("/v1/sys/rotate-root").status_code == 202
        assert wait_until_rotated(kms)["activeGeneration"] == 2
        still_works(kms, made)
    for restarted in open_kms(settings, boot):
        error(restarted.get("/v1/kms/summary"), 503, "sealed")
        for share in boot.unseal_keys[1:]:
            restarted.client.post("/v1/sys/unseal", json={"key": share})
        still_works(restarted, made)
        engine = sync_engine(settings)
        with engine.connect() as conn:
            table = schema.root_keys
            kept = {
                r[0]: r[1] for r in conn.execute(select(table.c.generation, table.c.sealed_key))
            }
        engine.dispose()
        assert kept[1] is None, "the retired generation's sealed key is deleted"
        assert kept[2] is not None


def test_the_checkpoint_key_is_random_and_its_public_half_verifies_checkpoints(kms: Kms) -> None:
    kms.create_key("k")
    assert kms.services.audit_log is not None
    assert kms.run(kms.services.audit_log.checkpoint)
    seed = kms.run(kms.services.purposes.checkpoint_seed)
    assert seed != legacy_signing_seed(kms.settings.root_key_path.read_bytes())

    error(kms.client.get("/v1/audit/public-key"), 401, "unauthenticated")
    answer = kms.client.get(
        "/v1/audit/public-key", headers={"Authorization": kms.headers["Authorization"]}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["algorithm"] == "ed25519"
    public = load_pem_public_key(answer.json()["publicKey"].encode())
    assert isinstance(public, Ed25519PublicKey)
    engine = sync_engine(kms.settings)
    with engine.connect() as conn:
        checkpoints = conn.execute(select(schema.audit_checkpoints)).all()
    engine.dispose()
    assert checkpoints
    for row in checkpoints:
        public.verify(bytes(row.signature), signed_message(_checkpoint(row)))
    assert base64.b64encode(seed).decode() not in answer.text


def test_two_processes_beginning_a_rotation_at_once_leave_one_generation_and_its_key(
    kms: Kms,
) -> None:
    """Two servers on one data directory (or a retried request) begin a rotation at the same
    moment: one wins, the other's key is abandoned, and the winner's is on disk."""
    populate(kms)
    nodes = [build_services(kms.settings) for _ in range(2)]

    async def race() -> list[Any]:
        try:
            return list(await asyncio.gather(*(begin_rotation(n) for n in nodes),
                                             return_exceptions=True))  # fmt: skip
        finally:
            for node in nodes:
                await node.close()

    outcomes = kms.run(race)
    assert sorted(type(o).__name__ for o in outcomes) == ["Conflict", "RootStatus"], outcomes
    assert kms.run(kms.services.rotation.run)
    assert {generation for _, _, generation, _ in root_blobs(kms)} == {2}
    assert sorted(p.name for p in kms.settings.data_dir.glob("root.key*")) == ["root.key"]
    fresh = open_root(kms.settings)  # what the next start finds on disk opens generation 2
    try:
        assert (fresh.sealed, fresh.active_generation) == (False, 2)
    finally:
        fresh.close()


def test_a_database_writer_cannot_make_a_server_destroy_a_root_key(kms: Kms) -> None:
    """Marking a generation retired while blobs still need it (A5) destroys nothing; marking
    the active one retired seals the server (and says so) instead of using another key."""
    made = populate(kms)
    kms.run(begin_rotation, kms.services)  # generation 2 active, every blob still under 1
    old_key = (kms.settings.data_dir / "root.key.old").read_bytes()
    engine = sync_engine(kms.settings)
    table = schema.root_keys
    with engine.begin() as conn:
        conn.execute(table.update().where(table.c.generation == 1).values(retired_at=func.now()))
    kms.run(kms.services.root.refresh)
    assert (kms.settings.data_dir / "root.key.old").read_bytes() == old_key, "kept"
    with engine.begin() as conn:
        conn.execute(table.update().where(table.c.generation == 1).values(retired_at=None))
    assert kms.run(kms.services.rotation.run)
    still_works(kms, made)

    heard: list[bool] = []

    async def listen(sealed: bool) -> None:
        heard.append(sealed)

    kms.services.root.on_change(listen)
    with engine.begin() as conn:
        conn.execute(table.update().where(table.c.generation == 2).values(retired_at=func.now()))
    engine.dispose()
    kms.run(kms.services.root.refresh)
    assert heard == [True], "the seal's listeners hear it: caches and the writer let go"
    error(kms.post(f"{KEYS}/data/decrypt", {"ciphertext": made["ciphertext"]}), 503, "sealed")
    assert (kms.settings.data_dir / "root.key").exists()
