"""The backup file: a manifest, the files of an installation, and a digest over all of it.

Layout (``docs/operations.md`` describes it for operators)::

    COFFER-BACKUP/1\\n
    header\\n                 one line of JSON: the manifest, the members (name, size, SHA-256),
                             and the encryption's parameters if the body is encrypted
    body                     the members' bytes one after another, or their encryption
    SHA-256                  32 bytes: the digest of everything before it

Any changed byte is found before anything is restored: the trailing digest first, then each
member's own digest as it is written out. With a passphrase (a backup that holds the root key),
the body is AES-256-GCM in chunks of 1 MiB under a key derived with scrypt; each chunk's
associated data binds the header's digest, the chunk's number and whether it is the last, so
chunks cannot be reordered, dropped, or moved to another backup. The header stays readable
(it holds no secret) so that ``coffer restore --check`` can show what a backup is before the
passphrase is asked for.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

MAGIC = b"COFFER-BACKUP/1\n"
DIGEST_BYTES = 32
CHUNK_BYTES = 1 << 20
TAG_BYTES = 16
#: scrypt's cost: 2^17 × 8 × 128 bytes = 128 MiB of memory and ~0.5 s per guess.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 17, 8, 1
MAX_HEADER_BYTES = 1 << 20
_READ_BYTES = 1 << 20


class BackupFileError(Exception):
    """The file is not a Coffer backup, or not whole (the message says which)."""


class WrongPassphrase(BackupFileError):
    """The passphrase does not open the backup."""


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class BackupHeader:
    manifest: dict[str, Any]
    members: tuple[Member, ...]
    #: scrypt's salt and parameters and the nonce prefix; ``None``: the body is not encrypted.
    encryption: dict[str, Any] | None
    raw: bytes

    @property
    def encrypted(self) -> bool:
        return self.encryption is not None


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(_READ_BYTES):
            digest.update(block)
    return digest.hexdigest()


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _derive(passphrase: bytes, params: dict[str, Any]) -> AESGCM:
    n, r, p = int(params["n"]), int(params["r"]), int(params["p"])
    # A header is read before it is authenticated: its cost must not exhaust the machine.
    if not (2 <= n <= 1 << 20 and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16):
        raise BackupFileError("the backup's key derivation parameters are out of bounds")
    kdf = Scrypt(salt=bytes.fromhex(params["salt"]), length=32, n=n, r=r, p=p)
    return AESGCM(kdf.derive(passphrase))


def _aad(header_digest: bytes, number: int, last: bool) -> bytes:
    return header_digest + number.to_bytes(8, "big") + (b"\x01" if last else b"\x00")


def _nonce(prefix: bytes, number: int) -> bytes:
    return prefix + number.to_bytes(4, "big")


def _chunks(paths: Sequence[Path]) -> Iterator[bytes]:
    """The members' bytes in chunks of ``CHUNK_BYTES`` (the last one shorter)."""
    pending = b""
    for path in paths:
        with path.open("rb") as source:
            while block := source.read(CHUNK_BYTES - len(pending)):
                pending += block
                if len(pending) == CHUNK_BYTES:
                    yield pending
                    pending = b""
    yield pending  # possibly empty: the last chunk marks the end


class _DigestingWriter:
    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> None:
        self.digest.update(data)
        self.out.write(data)


def write_backup(
    target: Path,
    manifest: dict[str, Any],
    members: Sequence[tuple[str, Path]],
    passphrase: bytes | None = None,
) -> BackupHeader:
    """Write the backup file ``target`` (mode 0600, fsynced, put in place whole): ``members``
    are (name, file) pairs, encrypted under ``passphrase`` if one is given."""
    # An encrypted body is authenticated chunk by chunk: its members' digests would only let a
    # reader of the header confirm a guess of them (the root key's, say).
    listed = tuple(Member(name, path.stat().st_size, "" if passphrase else _file_digest(path))
                   for name, path in members)  # fmt: skip
    encryption: dict[str, Any] | None = None
    if passphrase is not None:
        encryption = {
            "kdf": "scrypt", "salt": secrets.token_bytes(16).hex(), "n": SCRYPT_N, "r": SCRYPT_R,
            "p": SCRYPT_P, "cipher": "aes-256-gcm", "chunk": CHUNK_BYTES,
            "noncePrefix": secrets.token_bytes(8).hex(),
        }  # fmt: skip
    header = {
        "manifest": manifest,
        "members": [{"name": m.name, "size": m.size, "sha256": m.sha256} for m in listed],
        "encryption": encryption,
    }
    raw = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    # A new name of this write's own (mode 0600, never an existing file or a link), renamed
    # into place whole.
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    partial = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            writer = _DigestingWriter(out)
            writer.write(MAGIC + raw + b"\n")
            paths = [path for _, path in members]
            if encryption is None:
                for chunk in _chunks(paths):
                    writer.write(chunk)
            else:
                assert passphrase is not None
                aead = _derive(passphrase, encryption)
                prefix = bytes.fromhex(encryption["noncePrefix"])
                header_digest = hashlib.sha256(raw).digest()
                chunks = _chunks(paths)
                chunk, number = next(chunks), 0
                while True:  # one chunk ahead: the last one is told by what follows it
                    following = next(chunks, None)
                    last = following is None
                    writer.write(aead.encrypt(_nonce(prefix, number), chunk,
                                              _aad(header_digest, number, last)))  # fmt: skip
                    if following is None:
                        break
                    chunk, number = following, number + 1
            out.write(writer.digest.digest())
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, target)
        _sync_directory(target.parent)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return BackupHeader(manifest, listed, encryption, raw)


def read_header(path: Path) -> BackupHeader:
    """The header of the backup file ``path``; ``BackupFileError`` if it is not one."""
    try:
        with path.open("rb") as source:
            if source.read(len(MAGIC)) != MAGIC:
                raise BackupFileError(f"{path} is not a Coffer backup")
            raw = source.readline(MAX_HEADER_BYTES + 1)
    except OSError as exc:
        raise BackupFileError(f"{path}: {exc.strerror or exc}") from None
    if not raw.endswith(b"\n"):
        raise BackupFileError(f"{path} is damaged: its header is cut off")
    raw = raw[:-1]
    try:
        header = json.loads(raw)
        members = tuple(Member(str(m["name"]), int(m["size"]), str(m["sha256"]))
                        for m in header["members"])  # fmt: skip
        manifest = header["manifest"]
        encryption = header["encryption"]
        if not isinstance(manifest, dict) or not isinstance(encryption, dict | None):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise BackupFileError(f"{path} is damaged: its header cannot be read") from None
    return BackupHeader(manifest, members, encryption, raw)


def check_digest(path: Path) -> None:
    """``BackupFileError`` unless the trailing digest matches everything before it."""
    size = path.stat().st_size
    if size < len(MAGIC) + DIGEST_BYTES:
        raise BackupFileError(f"{path} is damaged: it is cut off")
    digest = hashlib.sha256()
    with path.open("rb") as source:
        left = size - DIGEST_BYTES
        while left > 0 and (block := source.read(min(_READ_BYTES, left))):
            digest.update(block)
            left -= len(block)
        if source.read(DIGEST_BYTES) != digest.digest():
            raise BackupFileError(
                f"{path} is damaged: its digest does not match its contents (a changed or "
                "missing byte); nothing was restored"
            )


def _body(source: BinaryIO, header: BackupHeader, passphrase: bytes | None) -> Iterator[bytes]:
    """The members' bytes, decrypted if the body is encrypted."""
    total = sum(m.size for m in header.members)
    if header.encryption is None:
        left = total
        while left > 0:
            block = source.read(min(_READ_BYTES, left))
            if not block:
                raise BackupFileError("the backup is cut off")
            left -= len(block)
            yield block
        return
    if passphrase is None:
        raise WrongPassphrase("the backup is encrypted: a passphrase is needed")
    aead = _derive(passphrase, header.encryption)
    prefix = bytes.fromhex(header.encryption["noncePrefix"])
    header_digest = hashlib.sha256(header.raw).digest()
    chunks = total // CHUNK_BYTES + 1  # the last one is shorter, perhaps empty
    for number in range(chunks):
        last = number == chunks - 1
        size = (total - number * CHUNK_BYTES if last else CHUNK_BYTES) + TAG_BYTES
        sealed = source.read(size)
        try:
            yield aead.decrypt(_nonce(prefix, number), sealed, _aad(header_digest, number, last))
        except InvalidTag:
            raise WrongPassphrase(
                "the passphrase does not open this backup (or the backup was changed)"
                if number == 0
                else "the backup is damaged: an encrypted chunk does not verify"
            ) from None


def extract(
    path: Path,
    header: BackupHeader,
    destination: Callable[[str], Path | None],
    passphrase: bytes | None = None,
) -> None:
    """Write each member to ``destination(name)`` (new files, mode 0600; ``None``: skipped),
    checking its size and digest. ``check_digest`` first: this reads what it checked."""
    written: list[Path] = []
    try:
        with path.open("rb") as source:
            source.seek(len(MAGIC) + len(header.raw) + 1)
            body = _body(source, header, passphrase)
            pending = b""
            for member in header.members:
                target = destination(member.name)
                digest = hashlib.sha256()
                out = None
                if target is not None:
                    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                    fd = os.open(target, flags, 0o600)
                    written.append(target)  # made here: removed if the restore fails
                    out = os.fdopen(fd, "wb")
                try:
                    left = member.size
                    while left > 0:
                        if not pending:
                            pending = next(body, b"")
                            if not pending:
                                raise BackupFileError("the backup is cut off")
                        block, pending = pending[:left], pending[left:]
                        digest.update(block)
                        if out is not None:
                            out.write(block)
                        left -= len(block)
                    if out is not None:
                        out.flush()
                        os.fsync(out.fileno())
                finally:
                    if out is not None:
                        out.close()
                # An encrypted member was authenticated with its chunks (it has no digest).
                if (header.encrypted and member.sha256) or (
                    not header.encrypted and digest.hexdigest() != member.sha256
                ):
                    raise BackupFileError(f"the backup's {member.name} does not match its digest")
            for _ in body:  # the end: an encrypted body's last chunk is checked too
                pass
    except BaseException:
        for target in written:
            target.unlink(missing_ok=True)
        raise
