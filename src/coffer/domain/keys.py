"""The key object: metadata, status and versions, and the rules that govern them (spec §2, §5)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

from coffer.domain.identity import KEY_PREFIX, new_identity
from coffer.domain.keytypes import MAX_PLAINTEXT_BYTES, KeyType
from coffer.domain.slugs import slugify
from coffer.errors import (
    ExportNotAllowed,
    InvalidKeyVersion,
    InvalidPlaintext,
    InvalidRequest,
    KeyActive,
    KeyDisabled,
    KeyPendingDeletion,
    RotationNotAllowed,
)

MAX_NAME_LENGTH = 255
MAX_DESCRIPTION_LENGTH = 1024
MAX_LABELS = 64
MAX_LABEL_VALUE_LENGTH = 255
MIN_ROTATION_DAYS = 1
MAX_ROTATION_DAYS = 3650
_LABEL_KEY = re.compile(r"[A-Za-z0-9._/-]{1,63}")


class KeyStatus(StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"
    PENDING_DELETION = "pending_deletion"


class VersionStatus(StrEnum):
    """``active`` versions (at or above ``minDecryptionVersion``) are usable; older are archived."""

    ACTIVE = "active"
    ARCHIVED = "archived"


@dataclass(frozen=True, slots=True)
class KeyVersion:
    version: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Key:
    identity: str
    organisation_identity: str
    region: str
    project_identity: str | None
    name: str
    slug: str
    description: str | None
    key_type: KeyType
    status: KeyStatus
    export_allowed: bool
    imported: bool
    allow_rotation: bool
    key_rotation_enabled: bool
    rotation_period_days: int | None
    latest_version: int
    min_decryption_version: int
    versions: tuple[KeyVersion, ...]
    created_at: datetime
    updated_at: datetime
    object_version: int
    deletion_scheduled_at: datetime | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)

    def version_status(self, version: int) -> VersionStatus:
        if version >= self.min_decryption_version:
            return VersionStatus.ACTIVE
        return VersionStatus.ARCHIVED

    def ensure_usable(self) -> None:
        """Cryptography is only allowed on ``active`` keys."""
        if self.status is KeyStatus.DISABLED:
            raise KeyDisabled()
        if self.status is KeyStatus.PENDING_DELETION:
            raise KeyPendingDeletion()

    def ensure_exportable(self) -> None:
        """Export (spec §5.10) needs ``exportAllowed`` and an ``active`` key."""
        if not self.export_allowed:
            raise ExportNotAllowed()
        self.ensure_usable()

    def version_for_use(self, requested: int | None) -> int:
        """The version to encrypt or sign with: ``requested``, or the latest."""
        if requested is None:
            return self.latest_version
        if not self.min_decryption_version <= requested <= self.latest_version:
            raise InvalidKeyVersion(
                f"keyVersion must be between {self.min_decryption_version} "
                f"and {self.latest_version}"
            )
        return requested

    def can_decrypt(self, version: int) -> bool:
        return self.min_decryption_version <= version <= self.latest_version

    # --- lifecycle (spec §5.9, §5.12) ----------------------------------------------------------
    #
    # Each transition returns the changed key and leaves this one as it was: the service computes
    # the change in memory, persists it, and only then lets anyone see it. A refused transition
    # raises the error named after the state that forbids it: key_active, key_disabled or
    # key_pending_deletion.

    def _changed(self, now: datetime, **changes: object) -> Key:
        return replace(
            self,
            updated_at=now,
            object_version=self.object_version + 1,
            **changes,  # type: ignore[arg-type]
        )

    @property
    def last_rotated_at(self) -> datetime:
        return self.versions[-1].created_at if self.versions else self.created_at

    @property
    def rotation_due_at(self) -> datetime | None:
        """When automatic rotation is next due (``None``: never, as things stand)."""
        if not self.key_rotation_enabled or self.rotation_period_days is None:
            return None
        if self.imported and not self.allow_rotation:
            return None
        return self.last_rotated_at + timedelta(days=self.rotation_period_days)

    def rotation_due(self, now: datetime) -> bool:
        due = self.rotation_due_at
        return self.status is KeyStatus.ACTIVE and due is not None and now >= due

    def rotate(self, now: datetime) -> Key:
        """The key with a new latest version (its material is made by the caller)."""
        self.ensure_usable()
        if self.imported and not self.allow_rotation:
            raise RotationNotAllowed()
        version = self.latest_version + 1
        return self._changed(
            now, latest_version=version, versions=(*self.versions, KeyVersion(version, now))
        )

    def update_rotation(
        self, now: datetime, *, enabled: bool | None, period_days: int | None
    ) -> Key:
        if self.status is KeyStatus.PENDING_DELETION:
            raise KeyPendingDeletion()
        if period_days is not None and not MIN_ROTATION_DAYS <= period_days <= MAX_ROTATION_DAYS:
            raise InvalidRequest(
                f"rotationPeriodInDays must be between {MIN_ROTATION_DAYS} and {MAX_ROTATION_DAYS}"
            )
        new_enabled = self.key_rotation_enabled if enabled is None else enabled
        new_period = self.rotation_period_days if period_days is None else period_days
        if new_enabled and new_period is None:
            raise InvalidRequest("rotationPeriodInDays is required when keyRotationEnabled is true")
        return self._changed(now, key_rotation_enabled=new_enabled, rotation_period_days=new_period)

    def disable(self, now: datetime) -> Key:
        if self.status is not KeyStatus.ACTIVE:
            self.ensure_usable()
        return self._changed(now, status=KeyStatus.DISABLED)

    def enable(self, now: datetime) -> Key:
        if self.status is KeyStatus.ACTIVE:
            raise KeyActive("the key is already active")
        if self.status is KeyStatus.PENDING_DELETION:
            raise KeyPendingDeletion()
        return self._changed(now, status=KeyStatus.ACTIVE)

    def schedule_deletion(self, now: datetime, retention: timedelta) -> Key:
        if self.status is KeyStatus.PENDING_DELETION:
            raise KeyPendingDeletion("the key is already scheduled for deletion")
        return self._changed(
            now, status=KeyStatus.PENDING_DELETION, deletion_scheduled_at=now + retention
        )

    def cancel_deletion(self, now: datetime) -> Key:
        if self.status is KeyStatus.ACTIVE:
            raise KeyActive("the key is not scheduled for deletion")
        if self.status is KeyStatus.DISABLED:
            raise KeyDisabled("the key is not scheduled for deletion")
        return self._changed(now, status=KeyStatus.ACTIVE, deletion_scheduled_at=None)

    def purge_due(self, now: datetime) -> bool:
        return (
            self.status is KeyStatus.PENDING_DELETION
            and self.deletion_scheduled_at is not None
            and now >= self.deletion_scheduled_at
        )

    def set_min_decryption_version(self, now: datetime, version: int) -> Key:
        """Retire (or bring back) versions below ``version`` (Vault's min_decryption_version).

        Material is kept, so lowering the minimum again restores decryption; no version is ever
        destroyed before its key is purged.
        """
        if self.status is KeyStatus.PENDING_DELETION:
            raise KeyPendingDeletion()
        if not 1 <= version <= self.latest_version:
            raise InvalidKeyVersion(
                f"minDecryptionVersion must be between 1 and {self.latest_version}"
            )
        return self._changed(now, min_decryption_version=version)


@dataclass(frozen=True, slots=True)
class KeyFilter:
    """List filters of spec §5.2; every given one must match."""

    identity: str | None = None
    name: str | None = None
    slug: str | None = None
    status: KeyStatus | None = None
    key_type: KeyType | None = None
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class KeySpec:
    """A validated request to create a key (everything but its material)."""

    name: str
    slug: str
    key_type: KeyType
    description: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    export_allowed: bool = False
    key_rotation_enabled: bool = False
    rotation_period_days: int | None = None
    allow_rotation: bool = False

    @classmethod
    def build(
        cls,
        *,
        name: str,
        key_type: str,
        description: str | None = None,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        export_allowed: bool = False,
        key_rotation_enabled: bool = False,
        rotation_period_days: int | None = None,
        allow_rotation: bool = False,
    ) -> KeySpec:
        if not 1 <= len(name) <= MAX_NAME_LENGTH:
            raise InvalidRequest(f"name must be 1 to {MAX_NAME_LENGTH} characters")
        if description is not None and len(description) > MAX_DESCRIPTION_LENGTH:
            raise InvalidRequest(f"description must be at most {MAX_DESCRIPTION_LENGTH} characters")
        _check_labels("labels", labels or {})
        _check_labels("annotations", annotations or {})
        if rotation_period_days is not None and not (
            MIN_ROTATION_DAYS <= rotation_period_days <= MAX_ROTATION_DAYS
        ):
            raise InvalidRequest(
                f"rotationPeriodInDays must be between {MIN_ROTATION_DAYS} and {MAX_ROTATION_DAYS}"
            )
        if key_rotation_enabled and rotation_period_days is None:
            raise InvalidRequest("rotationPeriodInDays is required when keyRotationEnabled is true")
        return cls(
            name=name,
            slug=slugify(name),
            key_type=KeyType.parse(key_type),
            description=description,
            labels=dict(labels or {}),
            annotations=dict(annotations or {}),
            export_allowed=export_allowed,
            key_rotation_enabled=key_rotation_enabled,
            rotation_period_days=rotation_period_days,
            allow_rotation=allow_rotation,
        )

    def new_key(
        self,
        *,
        organisation_identity: str,
        region: str,
        project_identity: str | None,
        imported: bool,
        now: datetime,
    ) -> Key:
        """The key as created: ``active``, one version."""
        return Key(
            identity=new_identity(KEY_PREFIX),
            organisation_identity=organisation_identity,
            region=region,
            project_identity=project_identity,
            name=self.name,
            slug=self.slug,
            description=self.description,
            key_type=self.key_type,
            status=KeyStatus.ACTIVE,
            export_allowed=self.export_allowed,
            imported=imported,
            allow_rotation=self.allow_rotation,
            key_rotation_enabled=self.key_rotation_enabled,
            rotation_period_days=self.rotation_period_days,
            latest_version=1,
            min_decryption_version=1,
            versions=(KeyVersion(1, now),),
            created_at=now,
            updated_at=now,
            object_version=1,
            labels=self.labels,
            annotations=self.annotations,
        )


def _check_labels(field_name: str, labels: Mapping[str, str]) -> None:
    if len(labels) > MAX_LABELS:
        raise InvalidRequest(f"{field_name} may have at most {MAX_LABELS} entries")
    for key, value in labels.items():
        if _LABEL_KEY.fullmatch(key) is None:
            raise InvalidRequest(f"{field_name} keys must be 1-63 characters of [A-Za-z0-9._/-]")
        if len(value) > MAX_LABEL_VALUE_LENGTH:
            raise InvalidRequest(
                f"{field_name} values must be at most {MAX_LABEL_VALUE_LENGTH} characters"
            )


def check_plaintext_size(size: int, limit: int = MAX_PLAINTEXT_BYTES) -> None:
    if not 1 <= size <= limit:
        raise InvalidPlaintext(f"plaintext must be between 1 and {limit} bytes")
