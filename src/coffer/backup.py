"""``coffer backup`` and ``coffer restore``: an installation to one file and back, losing nothing.

A backup holds a consistent snapshot of the database (``coffer.storage.snapshot``), the audit
anchor's checkpoints that the snapshot holds, the data directory's ``seal.json`` if there is one,
and — only when asked, for the file seal — the root key files, the whole body then encrypted
under a passphrase. Its manifest says what it is (installation, schema revision, seal, audit head
and newest checkpoint, counts, time); the file's layout is ``coffer.crypto.backup_file``'s.

A restore checks the whole file before it writes anything, refuses a backup whose installation
already lives in the target or whose root key is not the installation's, verifies the restored
audit chain with the root of trust, and removes what it wrote if any step fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from coffer.audit.lines import LinesError, read_lines
from coffer.bootstrap import open_data_dir, verify_audit
from coffer.config import (
    ANCHOR_FILE,
    DATABASE_FILE,
    ROOT_KEY_FILE,
    SEAL_FILE,
    ConfigError,
    Settings,
)
from coffer.crypto.backup_file import (
    BackupFileError,
    BackupHeader,
    check_digest,
    extract,
    read_header,
    write_backup,
)
from coffer.crypto.root import sync_directory
from coffer.crypto.seals import KEY_FILES
from coffer.storage.snapshot import (
    SnapshotError,
    SnapshotFacts,
    check_empty,
    describe,
    restore_postgres,
    snapshot_postgres,
    snapshot_sqlite,
    upgrade_snapshot,
)

FORMAT = "coffer-backup/1"
SNAPSHOT = "coffer.db"

#: Changes a restore undoes that weaken access control or bring back what was destroyed.
UNDONE_PROTECTIONS = {
    "iam.token.revoke": "token revoked",
    "iam.role_binding.delete": "role binding removed",
    "iam.organisation.disable_kms": "organisation's KMS disabled",
    "iam.organisation.shred": "organisation shredded",
    "kms.key.disable": "key disabled",
    "kms.key.delete": "key scheduled for deletion",
    "kms.key.purge": "key purged",
    "kms.versions.update": "key versions changed (minimum decryption version, state)",
}
#: Changes a restore loses: what was encrypted under them cannot be decrypted by the restore.
LOST_KEYS = {
    "kms.key.create": "key created",
    "kms.rotate": "key rotated",
    "kms.rotate.scheduled": "key rotated (schedule)",
    "kms.rotate.budget": "key rotated (encryption budget)",
}


def coffer_version() -> str:
    try:
        return version("coffer")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _anchor_lines(anchor: Path, facts: SnapshotFacts) -> bytes | None:
    """The anchor file's header and those of its checkpoints the snapshot holds (a checkpoint
    appended after the snapshot was taken is not in it; the restored anchor must not claim it)."""
    try:
        raw = anchor.read_bytes()
    except FileNotFoundError:
        return None
    held = set(facts.checkpoints)
    kept = []
    for line in raw.splitlines(keepends=True):
        if not line.strip():
            continue
        try:
            fields = json.loads(line)
        except ValueError:
            raise ConfigError(f"{anchor} is damaged: a line is not JSON") from None
        if "seq" not in fields or (int(fields["seq"]), bytes.fromhex(fields["link"])) in held:
            kept.append(line if line.endswith(b"\n") else line + b"\n")
    return b"".join(kept)


def _manifest(settings: Settings, facts: SnapshotFacts, root_key: bool) -> dict[str, Any]:
    assert facts.installation is not None
    checkpoint = None
    if facts.checkpoints:
        seq, link = facts.checkpoints[-1]
        at = facts.newest_checkpoint_at
        checkpoint = {"seq": seq, "link": link.hex(), "createdAt": _iso(at) if at else None}
    return {
        "format": FORMAT,
        "cofferVersion": coffer_version(),
        "schemaRevision": facts.revision,
        "installation": facts.installation,
        "sealType": facts.seal_type,
        "engine": "sqlite" if settings.database_url is None else "postgresql",
        "createdAt": _iso(datetime.now(UTC)),
        "auditHead": {"seq": facts.audit_head[0], "link": facts.audit_head[1].hex()},
        "checkpoint": checkpoint,
        "counts": facts.counts,
        "rootKeyIncluded": root_key,
    }


@contextlib.contextmanager
def _workspace(near: Path) -> Iterator[Path]:
    """A private directory on the same file system as ``near`` (snapshots can be large)."""
    near.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=".coffer-backup-", dir=near))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def backup(settings: Settings, target: Path, passphrase: bytes | None = None) -> dict[str, Any]:
    """Write a backup of the installation of ``settings`` to ``target`` while its servers run;
    with ``passphrase``, the root key files too (file seal only), the body encrypted. Returns
    the manifest."""
    if settings.database_url is None and not settings.database_path.exists():
        raise ConfigError(f"{settings.data_dir} is not an initialised Coffer data directory")
    if target.is_dir():
        raise ConfigError(f"{target} is a directory: name the backup file to write")
    with _workspace(target.resolve().parent) as work:
        snapshot = work / SNAPSHOT
        try:
            if settings.database_url is None:
                snapshot_sqlite(settings.database_path, snapshot)
            else:
                snapshot_postgres(settings.url, snapshot)
        except SnapshotError as exc:
            raise ConfigError(str(exc)) from None
        facts = describe(snapshot)
        if facts.installation is None:
            raise ConfigError("the database holds no Coffer installation: nothing to back up")
        members: list[tuple[str, Path]] = [(DATABASE_FILE, snapshot)]
        anchor = _anchor_lines(settings.anchor_path, facts)
        if anchor is not None:
            (work / ANCHOR_FILE).write_bytes(anchor)
            members.append((ANCHOR_FILE, work / ANCHOR_FILE))
        if (settings.data_dir / SEAL_FILE).exists():
            members.append((SEAL_FILE, settings.data_dir / SEAL_FILE))
        if passphrase is not None:
            if facts.seal_type != "file":
                raise ConfigError(
                    f"--include-root-key is for the file seal; this installation uses the "
                    f"{facts.seal_type} seal, whose root key never leaves it (unseal key shares "
                    "held by people, or an HSM): back those up their own way"
                )
            keys = [(name, settings.data_dir / name) for name in KEY_FILES
                    if (settings.data_dir / name).exists()]  # fmt: skip
            if not keys:
                raise ConfigError(f"no {ROOT_KEY_FILE} in {settings.data_dir} to include")
            members += keys
        manifest = _manifest(settings, facts, passphrase is not None)
        write_backup(target, manifest, members, passphrase)
        return manifest


def inspect(path: Path, passphrase: Callable[[], bytes] | None = None) -> BackupHeader:
    """The header of the backup ``path`` after checking every byte of it (and, if encrypted and
    ``passphrase`` is given, that it opens); ``ConfigError`` otherwise."""
    try:
        header = read_header(path)
        check_digest(path)
        if header.manifest.get("format") != FORMAT:
            raise ConfigError(f"{path} is not a backup this Coffer can read")
        if header.encrypted and passphrase is not None:
            extract(path, header, lambda name: None, passphrase())
        elif not header.encrypted:
            extract(path, header, lambda name: None)
    except BackupFileError as exc:
        raise ConfigError(str(exc)) from None
    return header


@dataclass(frozen=True, slots=True)
class LaterChange:
    seq: int
    at: str
    action: str
    what: str
    resource: str | None
    organisation: str | None


@dataclass(slots=True)
class RestoreReport:
    manifest: dict[str, Any]
    verified_records: int
    #: From ``--audit-copy``: changes after the backup that the restore undoes.
    undone: list[LaterChange] = field(default_factory=list)
    lost: list[LaterChange] = field(default_factory=list)
    #: Records after the backup in the audit copy (``None``: no copy was given).
    later_records: int | None = None


def _later_changes(copy: Path, after: int) -> tuple[int, list[LaterChange], list[LaterChange]]:
    try:
        with copy.open("rb") as lines:
            chain = read_lines(iter(lines))
    except OSError as exc:
        raise ConfigError(f"{copy}: {exc.strerror or exc}") from None
    except LinesError as exc:
        raise ConfigError(f"{copy}: {exc}") from None
    later = [row for row in chain.rows if row.seq > after]
    undone: list[LaterChange] = []
    lost: list[LaterChange] = []
    for row in later:
        if not 200 <= row.status < 300:
            continue
        kinds = (UNDONE_PROTECTIONS, undone), (LOST_KEYS, lost)
        for table, found in kinds:
            if row.action in table:
                found.append(LaterChange(row.seq, _iso(row.created_at), row.action,
                                         table[row.action], row.resource_identity,
                                         row.organisation_identity))  # fmt: skip
    return len(later), undone, lost


def restore(
    path: Path,
    settings: Settings,
    *,
    passphrase: Callable[[], bytes],
    root_key: Path | None = None,
    shares: Callable[[int], Sequence[str]] | None = None,
    audit_copy: Path | None = None,
) -> RestoreReport:
    """Restore the backup ``path`` into the data directory of ``settings`` (new or empty; and
    the empty PostgreSQL database of ``settings.database_url``). ``root_key``: the installation's
    ``root.key`` for a backup that does not hold it (file seal). ``shares(threshold)``: unseal
    key shares (Shamir seal) to verify the audit chain with. ``audit_copy``: an audit export or
    sink file newer than the backup, to list what the restore undoes."""
    header = inspect(path)
    manifest = header.manifest
    installation = str(manifest["installation"])
    data_dir = settings.data_dir
    taken = [name for name in (DATABASE_FILE, ANCHOR_FILE, SEAL_FILE, *KEY_FILES)
             if (data_dir / name).exists()]  # fmt: skip
    if settings.audit_anchor_path is not None and settings.audit_anchor_path.exists():
        taken.append(str(settings.audit_anchor_path))
    if taken:
        raise ConfigError(
            f"{data_dir} already holds {', '.join(taken)}: restore into a new directory, never "
            "over an installation (move it away first if you mean to replace it)"
        )
    names = {m.name for m in header.members}
    if manifest.get("sealType") == "file" and not (names & set(KEY_FILES)) and root_key is None:
        raise ConfigError(
            "the backup holds no root key (file seal): give --root-key with the installation's "
            f"{ROOT_KEY_FILE}, or restore a backup made with --include-root-key"
        )
    if settings.database_url is not None:
        try:
            check_empty(settings.url)
        except SnapshotError as exc:
            raise ConfigError(str(exc)) from None
    later = None
    if audit_copy is not None:
        later = _later_changes(audit_copy, int(manifest["auditHead"]["seq"]))
    created_dir = not data_dir.exists()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    written: list[Path] = []

    def destination(name: str) -> Path | None:
        if name == DATABASE_FILE and settings.database_url is not None:
            target = work / name  # copied into PostgreSQL below
        elif name == ANCHOR_FILE:
            target = settings.anchor_path
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        else:
            target = data_dir / name
        written.append(target)
        return target

    restored_pg = False
    try:
        with _workspace(data_dir) as work:
            extract(path, header, destination, passphrase() if header.encrypted else None)
            if root_key is not None and not (names & set(KEY_FILES)):
                shutil.copyfile(root_key, data_dir / ROOT_KEY_FILE)
                os.chmod(data_dir / ROOT_KEY_FILE, 0o600)
                written.append(data_dir / ROOT_KEY_FILE)
            snapshot = work / DATABASE_FILE if settings.database_url else data_dir / DATABASE_FILE
            if manifest["schemaRevision"] != describe(snapshot).revision:
                raise ConfigError("the backup's database is not the one its manifest names")
            if settings.database_url is not None:
                upgrade_snapshot(snapshot)
                restore_postgres(snapshot, settings.url)  # removes its schema if it fails
                restored_pg = True
            sync_directory(data_dir)
        root = open_data_dir(settings)  # migrates an older backup; refuses a foreign root key
        try:
            if root.identity != installation:
                raise ConfigError("the backup's database is not the installation it names")
        finally:
            root.close()
        verification = asyncio.run(verify_audit(settings, shares))
        if not verification.ok:
            raise ConfigError(f"the restored audit chain does not verify: {verification.problem}")
    except BaseException as exc:
        for target in written:
            target.unlink(missing_ok=True)
        for suffix in ("-wal", "-shm"):
            Path(f"{data_dir / DATABASE_FILE}{suffix}").unlink(missing_ok=True)
        if restored_pg:
            _drop_restored(settings)
        if created_dir:
            shutil.rmtree(data_dir, ignore_errors=True)
        if isinstance(exc, BackupFileError):
            raise ConfigError(str(exc)) from None
        if isinstance(exc, SnapshotError):
            raise ConfigError(str(exc)) from None
        raise
    report = RestoreReport(manifest, verification.records)
    if later is not None:
        report.later_records, report.undone, report.lost = later
    return report


def _drop_restored(settings: Settings) -> None:
    """Remove the schema a failed restore made in PostgreSQL (it held nothing before)."""
    from coffer.storage.database import plain_engine
    from coffer.storage.schema import metadata

    engine = plain_engine(settings.url)
    try:
        with engine.begin() as conn:
            metadata.drop_all(conn)
            conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
    finally:
        engine.dispose()
