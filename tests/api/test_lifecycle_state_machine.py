"""A model of one key's life, checked against the server after every step (hypothesis)."""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from sqlalchemy import select

from coffer.storage import schema
from tests.conftest import Kms, sync_engine

KEYS = "/v1/kms/nl-01/keys"
KEEP_CIPHERTEXTS = 6


@dataclass
class Sealed:
    version: int
    ciphertext: str
    plaintext: bytes


@dataclass
class Model:
    status: str = "active"
    latest: int = 1
    min_version: int = 1
    purged: bool = False
    sealed: list[Sealed] = field(default_factory=list)

    def blocked(self) -> str | None:
        """The error code of crypto on the key in its state (None: usable)."""
        return {"active": None, "disabled": "key_disabled"}.get(self.status, "key_pending_deletion")


class KeyLife(RuleBasedStateMachine):
    def __init__(self, kms: Kms) -> None:
        super().__init__()
        self.kms = kms
        self.name = f"k-{uuid.uuid4().hex[:12]}"
        self.identity = kms.create_key(self.name)["identity"]
        self.model = Model()

    # --- helpers ----------------------------------------------------------------------------

    def call(self, method: str, op: str = "", body: Any = None) -> Any:
        path = f"{KEYS}/{self.name}" + (f"/{op}" if op else "")
        return self.kms.client.request(method, path, json=body, headers=self.kms.headers)

    def expect(self, response: Any, ok: bool, code: str | None) -> None:
        if self.model.purged:
            assert response.status_code == 404, response.text
        elif ok:
            assert response.status_code == 200, response.text
        else:
            assert response.status_code == 400, response.text
            assert response.json()["code"] == code

    # --- rules ------------------------------------------------------------------------------

    @rule()
    def rotate(self) -> None:
        ok = self.model.status == "active"
        self.expect(self.call("POST", "rotate"), ok, self.model.blocked())
        if ok and not self.model.purged:
            self.model.latest += 1

    @rule()
    def disable(self) -> None:
        ok = self.model.status == "active"
        self.expect(self.call("POST", "disable"), ok, self.model.blocked())
        if ok and not self.model.purged:
            self.model.status = "disabled"

    @rule()
    def enable(self) -> None:
        ok = self.model.status == "disabled"
        code = "key_active" if self.model.status == "active" else "key_pending_deletion"
        self.expect(self.call("POST", "enable"), ok, code)
        if ok and not self.model.purged:
            self.model.status = "active"

    @rule()
    def delete(self) -> None:
        ok = self.model.status != "pending_deletion"
        self.expect(self.call("DELETE"), ok, "key_pending_deletion")
        if ok and not self.model.purged:
            self.model.status = "pending_deletion"

    @rule()
    def cancel_deletion(self) -> None:
        ok = self.model.status == "pending_deletion"
        code = "key_active" if self.model.status == "active" else "key_disabled"
        self.expect(self.call("DELETE", "cancel-deletion"), ok, code)
        if ok and not self.model.purged:
            self.model.status = "active"

    @rule(version=st.integers(min_value=0, max_value=6))
    def set_min_version(self, version: int) -> None:
        response = self.call("PATCH", "versions", {"minDecryptionVersion": version})
        if self.model.status == "pending_deletion":
            self.expect(response, False, "key_pending_deletion")
        elif not 1 <= version <= self.model.latest:
            self.expect(response, False, "invalid_key_version")
        else:
            self.expect(response, True, None)
            if not self.model.purged:
                self.model.min_version = version

    @rule(plaintext=st.binary(min_size=1, max_size=64))
    def encrypt(self, plaintext: bytes) -> None:
        response = self.call("POST", "encrypt", {"plaintext": base64.b64encode(plaintext).decode()})
        blocked = self.model.blocked()
        self.expect(response, blocked is None, blocked)
        if blocked is None and not self.model.purged:
            body = response.json()
            assert body["keyVersion"] == str(self.model.latest)
            self.model.sealed.append(Sealed(self.model.latest, body["ciphertext"], plaintext))
            del self.model.sealed[:-KEEP_CIPHERTEXTS]

    @rule()
    def retention_elapses(self) -> None:
        self.kms.clock.advance(days=31)
        report = self.kms.run(self.kms.scheduler.run_once)
        if self.model.status == "pending_deletion" and not self.model.purged:
            assert self.identity in report.purged
            self.model.purged = True
        else:
            assert self.identity not in report.purged

    # --- invariants ---------------------------------------------------------------------------

    @invariant()
    def api_shows_the_model(self) -> None:
        response = self.call("GET")
        if self.model.purged:
            assert response.status_code == 404
            return
        key = response.json()
        assert key["status"] == self.model.status
        assert key["latestVersion"] == self.model.latest
        assert key["minDecryptionVersion"] == self.model.min_version
        assert [v["version"] for v in key["versions"]] == list(range(1, self.model.latest + 1))
        assert (key["deletionScheduledAt"] is not None) == (self.model.status == "pending_deletion")

    @invariant()
    def database_agrees_with_the_api(self) -> None:
        engine = sync_engine(self.kms.settings)
        try:
            with engine.connect() as conn:
                row = conn.execute(
                    select(schema.keys).where(schema.keys.c.identity == self.identity)
                ).first()
                versions = (
                    conn.execute(
                        select(schema.key_versions.c.version).where(
                            schema.key_versions.c.key_identity == self.identity
                        )
                    )
                    .scalars()
                    .all()
                )
        finally:
            engine.dispose()
        if self.model.purged:
            assert row is None
            assert versions == []
            return
        assert row is not None
        api = self.call("GET").json()
        assert (row.status, row.latest_version, row.min_decryption_version, row.object_version) == (
            api["status"], api["latestVersion"], api["minDecryptionVersion"], api["objectVersion"]
        )  # fmt: skip
        assert sorted(versions) == list(range(1, self.model.latest + 1))

    @invariant()
    def ciphertexts_decrypt_exactly_when_their_version_is_usable(self) -> None:
        for sealed in self.model.sealed:
            response = self.call("POST", "decrypt", {"ciphertext": sealed.ciphertext})
            if self.model.purged:
                assert response.status_code == 404
            elif self.model.blocked() is not None:
                assert response.json()["code"] == self.model.blocked()
            elif sealed.version >= self.model.min_version:
                assert response.status_code == 200, response.text
                assert base64.b64decode(response.json()["plaintext"]) == sealed.plaintext
            else:
                assert response.status_code == 400
                assert response.json()["code"] == "invalid_ciphertext"


def test_key_lifecycle_state_machine(module_kms: Kms) -> None:
    run_state_machine_as_test(
        lambda: KeyLife(module_kms),
        settings=settings(
            max_examples=30,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )
