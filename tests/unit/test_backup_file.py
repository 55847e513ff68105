"""The backup file's container: what it holds comes back byte for byte, and every way of changing
it — a byte, a cut, an edit whose trailing digest was recomputed, chunks swapped — is refused."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from coffer.crypto import backup_file
from coffer.crypto.backup_file import (
    CHUNK_BYTES,
    DIGEST_BYTES,
    TAG_BYTES,
    BackupFileError,
    WrongPassphrase,
    check_digest,
    extract,
    read_header,
    write_backup,
)

pytestmark = pytest.mark.one_engine

PASSPHRASE = b"correct horse battery staple"


@pytest.fixture(autouse=True)
def _cheap_scrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backup_file, "SCRYPT_N", 1 << 10)  # the format, not the cost, is tested


def members(tmp_path: Path) -> list[tuple[str, Path]]:
    """Three files: one across a chunk boundary, an empty one, a small one."""
    sizes = {"big": CHUNK_BYTES + 12_345, "empty": 0, "small": 17}
    made = []
    for name, size in sizes.items():
        path = tmp_path / f"in-{name}"
        path.write_bytes(os.urandom(size))
        made.append((name, path))
    return made


def restored(tmp_path: Path, backup: Path, passphrase: bytes | None) -> dict[str, bytes]:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    header = read_header(backup)
    check_digest(backup)
    extract(backup, header, lambda name: out / name, passphrase)
    return {p.name: p.read_bytes() for p in out.iterdir()}


def with_digest(data: bytes) -> bytes:
    """``data`` (a backup without its last 32 bytes) with a freshly computed trailing digest."""
    return data + hashlib.sha256(data).digest()


@pytest.mark.parametrize("passphrase", [None, PASSPHRASE], ids=["plain", "encrypted"])
def test_members_come_back_byte_for_byte(tmp_path: Path, passphrase: bytes | None) -> None:
    made = members(tmp_path)
    header = write_backup(tmp_path / "b", {"format": "x"}, made, passphrase)
    assert header.encrypted is (passphrase is not None)
    assert os.stat(tmp_path / "b").st_mode & 0o777 == 0o600
    assert restored(tmp_path, tmp_path / "b", passphrase) == {n: p.read_bytes() for n, p in made}
    assert read_header(tmp_path / "b").manifest == {"format": "x"}


def test_an_edit_with_a_recomputed_digest_is_refused_by_the_members_digest(
    tmp_path: Path,
) -> None:
    write_backup(tmp_path / "b", {}, members(tmp_path))
    raw = bytearray((tmp_path / "b").read_bytes()[:-DIGEST_BYTES])
    raw[-5] ^= 0xFF  # in the last member
    (tmp_path / "b").write_bytes(with_digest(bytes(raw)))
    check_digest(tmp_path / "b")  # the attacker's digest matches...
    with pytest.raises(BackupFileError, match="does not match its digest"):
        restored(tmp_path, tmp_path / "b", None)
    assert not any((tmp_path / "out").iterdir())  # ...and nothing is left written


def test_encrypted_chunks_swapped_are_refused(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(os.urandom(3 * CHUNK_BYTES))
    header = write_backup(tmp_path / "b", {}, [("big", big)], PASSPHRASE)
    raw = (tmp_path / "b").read_bytes()[:-DIGEST_BYTES]
    body = len(backup_file.MAGIC) + len(header.raw) + 1
    sealed = CHUNK_BYTES + TAG_BYTES
    first, second = raw[body : body + sealed], raw[body + sealed : body + 2 * sealed]
    swapped = raw[:body] + second + first + raw[body + 2 * sealed :]
    (tmp_path / "b").write_bytes(with_digest(swapped))
    with pytest.raises(WrongPassphrase):
        restored(tmp_path, tmp_path / "b", PASSPHRASE)


def test_a_cut_file_and_a_wrong_passphrase_are_refused(tmp_path: Path) -> None:
    write_backup(tmp_path / "b", {}, members(tmp_path), PASSPHRASE)
    whole = (tmp_path / "b").read_bytes()
    (tmp_path / "cut").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(BackupFileError, match="digest does not match"):
        check_digest(tmp_path / "cut")
    with pytest.raises(WrongPassphrase, match="passphrase does not open"):
        restored(tmp_path, tmp_path / "b", b"another passphrase")
    (tmp_path / "other").write_bytes(b"SQLite format 3\x00" + whole[16:])
    with pytest.raises(BackupFileError, match="not a Coffer backup"):
        read_header(tmp_path / "other")
