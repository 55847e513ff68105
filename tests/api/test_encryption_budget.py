"""The encryption budget of AES-GCM and ChaCha20-Poly1305 key versions (random 96-bit nonces,
NIST SP 800-38D §8.3): a version never encrypts more than its budget — across concurrent
requests, restarts and several servers — and the key rotates by itself when it is spent."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coffer.bootstrap import build_services
from coffer.config import Settings
from tests.api.test_access import error
from tests.api.test_audit import records
from tests.api.test_byok import import_key, wrap
from tests.conftest import Kms, initialised, make_settings, open_kms

KEYS = "/v1/kms/nl-01/keys"
BUDGET = 10


@pytest.fixture
def budgeted(tmp_path: Path) -> Iterator[Kms]:
    settings = make_settings(tmp_path / "data", encryption_budget=BUDGET)
    yield from open_kms(settings, initialised(settings))


def encrypt(kms: Kms, key: str = "k", **fields: Any) -> Any:
    return kms.post(f"{KEYS}/{key}/encrypt", {"plaintext": "YnVkZ2V0", **fields})


def counts(kms: Kms, key: str = "k") -> list[tuple[int, int | None]]:
    return [
        (v["version"], v.get("encryptions")) for v in kms.get(f"{KEYS}/{key}").json()["versions"]
    ]


@pytest.mark.parametrize("key_type", ["aes256-gcm96", "aes128-gcm96", "chacha20-poly1305"])
def test_a_spent_version_rotates_the_key_by_itself(budgeted: Kms, key_type: str) -> None:
    budgeted.create_key("k", key_type)  # automatic rotation off
    answers = [encrypt(budgeted).json() for _ in range(BUDGET + 3)]
    assert [a["keyVersion"] for a in answers] == ["1"] * BUDGET + ["2"] * 3
    assert counts(budgeted) == [(1, BUDGET), (2, 3)]
    rotations = [r for r in records(budgeted) if r["action"] == "kms.rotate.budget"]
    assert len(rotations) == 1
    assert (rotations[0]["principalKind"], rotations[0]["context"]["keyVersion"]) == ("system", 2)
    decrypted = budgeted.post(f"{KEYS}/k/decrypt", {"ciphertext": answers[0]["ciphertext"]})
    assert decrypted.json()["plaintext"] == "YnVkZ2V0", "what the spent version made still opens"
    # Asked for by name, the spent version refuses rather than hand out another one.
    error(encrypt(budgeted, keyVersion=1), 400, "encryption_budget_exhausted")
    assert counts(budgeted) == [(1, BUDGET), (2, 3)]


def test_other_key_types_have_no_budget(budgeted: Kms) -> None:
    budgeted.create_key("mac", "hmac")
    for _ in range(BUDGET + 1):
        assert budgeted.post(f"{KEYS}/mac/hmac", {"input": "AA=="}).status_code == 200
    assert counts(budgeted, "mac") == [(1, None)]


def test_an_imported_key_that_may_not_rotate_refuses_once_spent(budgeted: Kms) -> None:
    created = import_key(budgeted, "aes256-gcm96", wrap(budgeted, os.urandom(32)), name="imp")
    assert created.status_code == 201, created.text
    for _ in range(BUDGET):
        assert encrypt(budgeted, "imp").status_code == 200
    answer = encrypt(budgeted, "imp")
    error(answer, 400, "encryption_budget_exhausted")
    assert "import new material" in answer.json()["message"]
    assert budgeted.get(f"{KEYS}/imp").json()["latestVersion"] == 1
    assert not [r for r in records(budgeted) if r["action"] == "kms.rotate.budget"]


def test_concurrent_requests_never_pass_the_budget(budgeted: Kms) -> None:
    budgeted.create_key("k")

    async def burst() -> list[int]:
        services = budgeted.services
        crypto = services.crypto
        from coffer.service.context import RequestMeta
        from coffer.service.crypto import EncryptInput

        meta = RequestMeta("burst", budgeted.boot.token, budgeted.org)
        done = await asyncio.gather(*(
            crypto.encrypt(meta, "nl-01", "k", lambda: EncryptInput(b"x", None))
            for _ in range(3 * BUDGET)
        ))  # fmt: skip
        assert all(d.value.startswith(f"thalassa:v{d.key_version}:") for d in done)
        return [d.key_version for d in done]

    versions = budgeted.run(burst)
    assert sorted(versions) == [1] * BUDGET + [2] * BUDGET + [3] * BUDGET
    assert counts(budgeted) == [(1, BUDGET), (2, BUDGET), (3, BUDGET)]
    assert len([r for r in records(budgeted) if r["action"] == "kms.rotate.budget"]) == 2


def test_the_count_survives_a_restart_and_is_shared_by_servers(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", encryption_budget=BUDGET)
    boot = initialised(settings)
    for kms in open_kms(settings, boot):
        kms.create_key("k")
        for _ in range(6):
            assert encrypt(kms).json()["keyVersion"] == "1"
    for kms in open_kms(settings, boot):  # a restart
        assert [encrypt(kms).json()["keyVersion"] for _ in range(5)] == ["1"] * 4 + ["2"]

        assert kms.run(two_servers, settings, kms.org) == BUDGET - 1
        assert counts(kms) == [(1, BUDGET), (2, BUDGET)]


async def two_servers(settings: Settings, organisation: str) -> int:
    """Two more servers on the same database reserve from the same count, in turns, until the
    version is spent; how many they were granted."""
    from coffer.domain.keys import KeyFilter

    nodes = [build_services(settings) for _ in range(2)]
    try:
        (key,) = await nodes[0].store.list_keys(organisation, "nl-01", None, KeyFilter())
        granted = 0
        while await nodes[granted % 2].crypto._budget.take(key.identity, 2):  # type: ignore[union-attr]
            granted += 1
        return granted
    finally:
        for node in nodes:
            await node.close()


def test_get_key_reads_the_counts_once_a_second_and_after_a_reservation_of_its_own(
    kms: Kms, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read of a key shows its encryptions exactly for this process, without a database read
    per request: the counts are read again when they are a second old, or when this process
    reserved a new block of one of the key's versions."""
    from sqlalchemy import event

    from coffer.service import budget

    kms.create_key("k")
    for _ in range(3):
        assert encrypt(kms).status_code == 200
    reads: list[str] = []
    engine = kms.services.store.engine.sync_engine  # type: ignore[attr-defined]

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "encryptions" in statement and "key_versions" in statement:
            reads.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        monkeypatch.setattr(budget, "COUNTS_TTL_SECONDS", 3600.0)
        for _ in range(20):
            assert counts(kms) == [(1, 3)]  # 4,096 reserved, 4,093 of them not made
        assert len(reads) == 1
        assert kms.post(f"{KEYS}/k/rotate", {}).status_code == 200
        assert encrypt(kms).json()["keyVersion"] == "2"  # a block of version 2: read again
        assert counts(kms) == [(1, 3), (2, 1)]
        assert len(reads) == 3  # the reservation's update, and the read after it
        monkeypatch.setattr(budget, "COUNTS_TTL_SECONDS", 0.0)
        for _ in range(4):
            assert counts(kms) == [(1, 3), (2, 1)]
        assert len(reads) == 7
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_reservations_asked_for_together_are_committed_together(kms: Kms) -> None:
    """The first encryptions of many keys at once reserve their blocks in a few commits (a
    group commit), not a commit each; each version gets its whole block."""
    from sqlalchemy import event

    from coffer.service.budget import EncryptionBudget

    identities = [kms.create_key(f"k{n}")["identity"] for n in range(40)]
    budget = EncryptionBudget(kms.services.store, 1 << 30)
    engine = kms.services.store.engine.sync_engine  # type: ignore[attr-defined]
    commits: list[object] = []
    updates: list[str] = []

    def on_commit(conn: Any) -> None:
        commits.append(conn)

    def on_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("UPDATE key_versions"):
            updates.append(statement)

    async def first_encryptions() -> list[bool]:
        return await asyncio.gather(*(budget.take(identity, 1) for identity in identities))

    event.listen(engine, "commit", on_commit)
    event.listen(engine, "before_cursor_execute", on_execute)
    try:
        assert kms.run(first_encryptions) == [True] * 40
    finally:
        event.remove(engine, "commit", on_commit)
        event.remove(engine, "before_cursor_execute", on_execute)
    assert len(updates) == 40
    assert 1 <= len(commits) <= 3, len(commits)
    assert all(budget.unused(identity) == {1: budget.block - 1} for identity in identities)
