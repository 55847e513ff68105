"""``coffer backup`` and ``coffer restore``: an installation to one file and back, losing nothing.

A backup holds a consistent snapshot of the database (``coffer.storage.snapshot``), the audit
anchor's checkpoints that the snapshot holds, the data directory's ``seal.json`` if there is one,
and — only when asked, for the file seal — the root key files, the whole body then encrypted
under a passphrase. Its manifest says what it is (installation, schema revision, seal, audit head
and newest checkpoint, counts, time); the file's layout is ``coffer.crypto.backup_file``'s.

A restore checks the whole file before it writes anything, writes only into a new or empty
directory (and an empty PostgreSQL database), refuses a root key that is not the installation's,
verifies the restored audit chain with the root of trust, and removes what it wrote if any step
fails.
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
from pathlib import Path
from typing import Any

from sqlalchemy.exc import DBAPIError

import coffer
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
from coffer.crypto.root import (
    RootKeyError,
    SoftwareCipher,
    opens_check_value,
    read_key_file,
    sync_directory,
    write_key_file,
)
from coffer.crypto.seals import KEY_FILES
from coffer.errors import CofferError
from coffer.storage.database import DatabaseUnreadable, is_known_revision, plain_engine
from coffer.storage.schema import metadata
from coffer.storage.snapshot import (
    SnapshotError,
    SnapshotFacts,
    check_empty,
    describe,
    restore_postgres,
    snapshot_postgres,
    snapshot_revision,
    snapshot_sqlite,
    upgrade_snapshot,
)

FORMAT = "coffer-backup/1"
SNAPSHOT = "coffer.db"
#: The only members a backup may hold (a name is never a path: it is looked up here).
MEMBERS = frozenset({DATABASE_FILE, ANCHOR_FILE, SEAL_FILE, *KEY_FILES})

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
    "kms.rotation.update": "rotation settings changed",
    "sys.root.rotate": "root key rotated (the restore needs the root key of before)",
}
#: Changes a restore loses: what was encrypted under them cannot be decrypted by the restore.
LOST_KEYS = {
    "kms.key.create": "key created",
    "kms.rotate": "key rotated",
    "kms.rotate.scheduled": "key rotated (schedule)",
    "kms.rotate.budget": "key rotated (encryption budget)",
}


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _read_anchor(anchor: Path) -> bytes:
    try:
        return anchor.read_bytes()
    except FileNotFoundError:
        return b""


def _checkpoint_of(line: bytes, anchor: Path) -> tuple[int, bytes] | None:
    """(seq, link) of an anchor line; ``None`` for its header line."""
    try:
        fields = json.loads(line)
        return (int(fields["seq"]), bytes.fromhex(fields["link"])) if "seq" in fields else None
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"{anchor} is damaged: a line is not an anchor line") from None


def _anchor_for(anchor: Path, before: bytes, after: bytes, facts: SnapshotFacts) -> bytes | None:
    """The anchor lines the backup holds: every line there was before the snapshot began —
    each checkpoint of which the snapshot must hold as it is, or the database was rolled back or
    edited — and those appended while it was taken that it holds (a checkpoint committed after
    the snapshot is not in it, and the restored anchor must not claim it)."""
    if not after:
        return None
    before = before[: before.rfind(b"\n") + 1]  # a line being appended meanwhile is not yet one
    if not after.startswith(before):
        raise ConfigError(
            f"{anchor} changed while the backup ran other than by appends: it was replaced or "
            "cut (run `coffer audit verify`); nothing was written"
        )
    held = set(facts.checkpoints)
    for line in before.splitlines():
        checkpoint = _checkpoint_of(line, anchor) if line.strip() else None
        if checkpoint is not None and checkpoint not in held:
            raise ConfigError(
                f"the anchor holds the checkpoint at record {checkpoint[0]} but the database does "
                "not hold it as signed: the database was rolled back or edited (run `coffer "
                "audit verify`); a backup of it would hide that, so nothing was written"
            )
    kept = [line for line in after[len(before) :].splitlines(keepends=True)
            if line.strip() and _checkpoint_of(line, anchor) in held]  # fmt: skip
    return before + b"".join(kept)


def _check_root_keys(keys: list[tuple[str, Path]], facts: SnapshotFacts) -> None:
    """``ConfigError`` unless one of the key files opens the snapshot's active root generation
    (a file of another installation, or of before a rotation, would make a backup that cannot
    be restored)."""
    assert facts.installation is not None
    for _, path in keys:
        try:
            cipher = SoftwareCipher(read_key_file(path))
        except (RootKeyError, ValueError):
            continue
        if opens_check_value(cipher, facts.root_check_value, facts.installation,
                             facts.root_generation):  # fmt: skip
            return
    raise ConfigError(
        f"no root key file in the data directory opens the installation's root key generation "
        f"{facts.root_generation} (a rotation under way, or a file of another installation): "
        "nothing was written"
    )


def _manifest(settings: Settings, facts: SnapshotFacts, root_key: bool) -> dict[str, Any]:
    assert facts.installation is not None
    checkpoint = None
    if facts.checkpoints:
        seq, link = facts.checkpoints[-1]
        at = facts.newest_checkpoint_at
        checkpoint = {"seq": seq, "link": link.hex(), "createdAt": _iso(at) if at else None}
    return {
        "format": FORMAT,
        "cofferVersion": coffer.version(),
        "schemaRevision": facts.revision,
        "installation": facts.installation,
        "sealType": facts.seal_type,
        "engine": "sqlite" if settings.database_url is None else "postgresql",
        "createdAt": _iso(datetime.now(UTC)),
        "auditHead": {"seq": facts.audit_head[0], "link": facts.audit_head[1].hex()},
        "checkpoint": checkpoint,
        "counts": facts.counts,
        "rootKeyIncluded": root_key,
        "rootGeneration": facts.root_generation,
    }


@contextlib.contextmanager
def _workspace(near: Path) -> Iterator[Path]:
    """A private directory on the same file system as ``near`` (snapshots can be large)."""
    path = Path(tempfile.mkdtemp(prefix=".coffer-backup-", dir=near))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def backup(
    settings: Settings,
    target: Path,
    passphrase: Callable[[], bytes] | None = None,
    *,
    force: bool = False,
) -> dict[str, Any]:
    """Write a backup of the installation of ``settings`` to ``target`` while its servers run;
    with ``passphrase`` (asked once the installation is known to use the file seal), the root key
    files too, the body encrypted. ``force``: replace an existing ``target``. Returns the
    manifest."""
    if settings.database_url is None and not settings.database_path.exists():
        raise ConfigError(f"{settings.data_dir} is not an initialised Coffer data directory")
    if target.is_dir():
        raise ConfigError(f"{target} is a directory: name the backup file to write")
    if os.path.lexists(target) and not force:
        raise ConfigError(f"{target} exists: name a new file, or give --force to replace it")
    if not target.resolve().parent.is_dir():
        raise ConfigError(f"{target.parent} is not a directory")
    try:
        return _backup(settings, target, passphrase)
    except OSError as exc:
        raise ConfigError(f"{exc.filename or target}: {exc.strerror or exc}") from None
    except DBAPIError as exc:
        raise ConfigError(f"the database cannot be read ({exc.orig})") from None
    except (SnapshotError, DatabaseUnreadable) as exc:
        raise ConfigError(str(exc)) from None


def _backup(
    settings: Settings, target: Path, passphrase: Callable[[], bytes] | None
) -> dict[str, Any]:
    with _workspace(target.resolve().parent) as work:
        snapshot = work / SNAPSHOT
        anchor_before = _read_anchor(settings.anchor_path)  # all of it committed before
        if settings.database_url is None:
            snapshot_sqlite(settings.database_path, snapshot)
        else:
            snapshot_postgres(settings.url, snapshot)
        facts = describe(snapshot)
        if facts.installation is None:
            raise ConfigError("the database holds no Coffer installation: nothing to back up")
        members: list[tuple[str, Path]] = [(DATABASE_FILE, snapshot)]
        anchor = _anchor_for(settings.anchor_path, anchor_before,
                             _read_anchor(settings.anchor_path), facts)  # fmt: skip
        if anchor is not None:
            (work / ANCHOR_FILE).write_bytes(anchor)
            members.append((ANCHOR_FILE, work / ANCHOR_FILE))
        if (settings.data_dir / SEAL_FILE).exists():
            members.append((SEAL_FILE, settings.data_dir / SEAL_FILE))
        secret = None
        if passphrase is not None:
            if facts.seal_type != "file":
                raise ConfigError(
                    f"--include-root-key is for the file seal; this installation uses the "
                    f"{facts.seal_type} seal, whose root key never leaves it (unseal key shares "
                    "held by people, or an HSM): back those up their own way"
                )
            keys = [(name, settings.data_dir / name) for name in KEY_FILES
                    if (settings.data_dir / name).exists()]  # fmt: skip
            _check_root_keys(keys, facts)
            members += keys
            secret = passphrase()
        manifest = _manifest(settings, facts, secret is not None)
        write_backup(target, manifest, members, secret)
        return manifest


def inspect(path: Path) -> BackupHeader:
    """The header of the backup ``path`` after checking every byte of it against its digest
    (an encrypted body's passphrase is checked when it is restored); ``ConfigError`` if it is
    damaged, not a backup, or made by a newer Coffer."""
    try:
        header = read_header(path)
        check_digest(path)
    except BackupFileError as exc:
        raise ConfigError(str(exc)) from None
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from None
    manifest = header.manifest
    if manifest.get("format") != FORMAT:
        raise ConfigError(f"{path} is not a backup this Coffer can read")
    try:
        revision = str(manifest["schemaRevision"])
        str(manifest["installation"]), bytes.fromhex(manifest["auditHead"]["link"])
        int(manifest["auditHead"]["seq"])
        included = bool(manifest["rootKeyIncluded"])
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"{path} is damaged: its manifest is incomplete") from None
    if not is_known_revision(revision):
        raise ConfigError(
            f"{path} was made by a newer Coffer (schema revision {revision}): restore it with "
            "that version or a newer one"
        )
    names = [m.name for m in header.members]
    if len(set(names)) != len(names) or not set(names) <= MEMBERS or DATABASE_FILE not in names:
        raise ConfigError(f"{path} is not a backup this Coffer can read: unexpected members")
    if set(names) & set(KEY_FILES) and not (header.encrypted and included):
        raise ConfigError(
            f"{path} holds a root key without encryption: a backup made by `coffer backup` "
            "never does; refused"
        )
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


def _later_changes(copy: Path, head: tuple[int, bytes]) -> tuple[int, list[LaterChange],
                                                                list[LaterChange]]:  # fmt: skip
    """The changes after the backup's ``head`` (seq, link) that ``copy`` shows. The copy must
    hold the backup's newest record with the same link — the same installation, the same
    history — and go beyond it."""
    try:
        with copy.open("rb") as lines:
            chain = read_lines(iter(lines))
    except OSError as exc:
        raise ConfigError(f"{copy}: {exc.strerror or exc}") from None
    except LinesError as exc:
        raise ConfigError(f"{copy}: {exc}") from None
    seq, link = head
    at_head = [row for row in chain.rows if row.seq == seq]
    if seq > 0 and (not at_head or at_head[0].hash != link):
        raise ConfigError(
            f"{copy} does not hold the backup's newest audit record ({seq}) as the backup does: "
            "it is not a copy of this installation's log from before the backup onwards"
        )
    later = [row for row in chain.rows if row.seq > seq]
    if not later:
        raise ConfigError(
            f"{copy} ends at the backup's newest record or before: give a copy taken after the "
            "backup"
        )
    undone: list[LaterChange] = []
    lost: list[LaterChange] = []
    for row in later:
        if not 200 <= row.status < 300:
            continue
        for table, found in ((UNDONE_PROTECTIONS, undone), (LOST_KEYS, lost)):
            if row.action in table:
                found.append(LaterChange(row.seq, _iso(row.created_at), row.action,
                                         table[row.action], row.resource_identity,
                                         row.organisation_identity))  # fmt: skip
    return len(later), undone, lost


def _free(path: Path) -> bool:
    """Nothing at ``path``, not even a dangling symbolic link."""
    return not os.path.lexists(path)


class _Written:
    """What a restore made, removed again if it fails: files, then directories (newest first)."""

    def __init__(self) -> None:
        self.files: list[Path] = []
        self.dirs: list[Path] = []

    def mkdir(self, path: Path) -> None:
        missing = []
        for parent in [path, *path.parents]:
            if os.path.lexists(parent):
                break
            missing.append(parent)
        for directory in reversed(missing):
            directory.mkdir(mode=0o700)
            self.dirs.append(directory)

    def undo(self, emptied: Path | None) -> None:
        """Remove what was made; and everything in ``emptied``, a directory that was empty."""
        for path in reversed(self.files):
            path.unlink(missing_ok=True)
        for directory in reversed(self.dirs):
            shutil.rmtree(directory, ignore_errors=True)
        if emptied is not None and emptied.is_dir():
            for child in emptied.iterdir():  # the database's -wal and -shm files, made by SQLite
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)


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
    data_dir = settings.data_dir
    if os.path.lexists(data_dir) and (not data_dir.is_dir() or any(data_dir.iterdir())):
        raise ConfigError(
            f"{data_dir} is not empty: restore into a new or empty directory, never over an "
            "installation (move it away first if you mean to replace it)"
        )
    if not _free(settings.anchor_path):
        raise ConfigError(f"{settings.anchor_path} exists: the restore writes a new anchor there")
    has_key = bool({m.name for m in header.members} & set(KEY_FILES))
    if has_key and root_key is not None:
        raise ConfigError("the backup holds the root key: do not give --root-key")
    if manifest.get("sealType") == "file" and not has_key and root_key is None:
        raise ConfigError(
            "the backup holds no root key (file seal): give --root-key with the installation's "
            f"{ROOT_KEY_FILE}, or restore a backup made with --include-root-key"
        )
    key = None
    if root_key is not None:
        try:
            key = read_key_file(root_key)
        except RootKeyError as exc:
            raise ConfigError(exc.message) from None
    if settings.database_url is not None:
        try:
            check_empty(settings.url)
        except (SnapshotError, DatabaseUnreadable) as exc:
            raise ConfigError(str(exc)) from None
        except DBAPIError as exc:
            raise ConfigError(f"the database cannot be reached ({exc.orig})") from None
    later = None
    if audit_copy is not None:
        head = int(manifest["auditHead"]["seq"]), bytes.fromhex(manifest["auditHead"]["link"])
        later = _later_changes(audit_copy, head)
    secret = passphrase() if header.encrypted else None
    emptied = data_dir if os.path.lexists(data_dir) else None  # checked empty above
    written = _Written()
    restored_pg = False
    try:
        written.mkdir(data_dir)
        written.mkdir(settings.anchor_path.parent)
        with _workspace(data_dir) as work:

            def destination(name: str) -> Path:
                if name == DATABASE_FILE and settings.database_url is not None:
                    return work / name  # copied into PostgreSQL below
                target = settings.anchor_path if name == ANCHOR_FILE else data_dir / name
                written.files.append(target)
                return target

            extract(path, header, destination, secret)
            if key is not None:
                write_key_file(data_dir / ROOT_KEY_FILE, key, exclusive=True)
                written.files.append(data_dir / ROOT_KEY_FILE)
            snapshot = work / DATABASE_FILE if settings.database_url else data_dir / DATABASE_FILE
            if snapshot_revision(snapshot) != manifest["schemaRevision"]:
                raise ConfigError("the backup's database is not the one its manifest names")
            if settings.database_url is not None:
                upgrade_snapshot(snapshot)
                restore_postgres(snapshot, settings.url)  # removes its schema if it fails
                restored_pg = True
            sync_directory(data_dir)
        root = open_data_dir(settings)  # migrates an older backup; refuses a foreign root key
        try:
            if root.identity != manifest["installation"]:
                raise ConfigError("the backup's database is not the installation it names")
        finally:
            root.close()
        verification = asyncio.run(verify_audit(settings, shares))
        if not verification.ok:
            raise ConfigError(f"the restored audit chain does not verify: {verification.problem}")
    except BaseException as exc:
        written.undo(emptied)
        if restored_pg:
            _drop_restored(settings)
        if isinstance(exc, CofferError):
            raise ConfigError(exc.message) from None
        if isinstance(exc, BackupFileError | SnapshotError | DatabaseUnreadable):
            raise ConfigError(str(exc)) from None
        if isinstance(exc, OSError):
            raise ConfigError(f"{exc.filename or data_dir}: {exc.strerror or exc}") from None
        if isinstance(exc, DBAPIError):
            raise ConfigError(f"the database cannot be written ({exc.orig})") from None
        raise
    report = RestoreReport(manifest, verification.records)
    if later is not None:
        report.later_records, report.undone, report.lost = later
    return report


def _drop_restored(settings: Settings) -> None:
    """Remove the schema a failed restore made in PostgreSQL (it held nothing before)."""
    engine = plain_engine(settings.url)
    try:
        with engine.begin() as conn:
            metadata.drop_all(conn)
            conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
    finally:
        engine.dispose()
