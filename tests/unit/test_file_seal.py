"""The file seal's key files: put in place in an order that survives a crash, and never taken
from another process (or an operator) that holds a key this one does not know."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from coffer.crypto.root import SoftwareCipher, make_check_value
from coffer.crypto.seals import FileSeal
from coffer.domain.seal import RootGeneration, SealType

INSTALLATION = "ins-test"


def generation(key: bytes, number: int, retired: bool = False) -> RootGeneration:
    check = make_check_value(SoftwareCipher(key), INSTALLATION, number)
    now = datetime.now(UTC)
    return RootGeneration(number, SealType.FILE, check, None, now, now if retired else None)


def files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_a_rotation_keeps_both_keys_until_the_old_one_is_retired(tmp_path: Path) -> None:
    k1 = os.urandom(32)
    (tmp_path / "root.key").write_bytes(k1)
    seal = FileSeal(tmp_path)
    opened = {1: seal.open(INSTALLATION, generation(k1, 1), {})}
    assert opened[1] is not None
    made = seal.make(INSTALLATION, 2, (1, opened[1]))
    k2 = files(tmp_path)["root.key.new"]  # written before the generation is stored
    assert k2 != k1
    assert made.sealed_key is not None  # the transit copy, under generation 1
    seal.keep(INSTALLATION, {1}, 1)  # before it is stored: nothing changes
    assert files(tmp_path) == {"root.key": k1, "root.key.new": k2}
    seal.adopt(INSTALLATION, 2, made)
    seal.keep(INSTALLATION, {1, 2}, 2)
    assert files(tmp_path) == {"root.key": k2, "root.key.old": k1}
    seal.forget(INSTALLATION, generation(k1, 1, retired=True), held=True)
    seal.keep(INSTALLATION, {2}, 2)
    assert files(tmp_path) == {"root.key": k2}


def test_an_abandoned_key_leaves_nothing_but_another_attempts_key(tmp_path: Path) -> None:
    k1 = os.urandom(32)
    (tmp_path / "root.key").write_bytes(k1)
    seal = FileSeal(tmp_path)
    cipher = seal.open(INSTALLATION, generation(k1, 1), {})
    assert cipher is not None
    lost = seal.make(INSTALLATION, 2, (1, cipher))
    won = seal.make(INSTALLATION, 2, (1, cipher))  # another attempt, a moment later
    seal.abandon(INSTALLATION, 2, lost)
    assert files(tmp_path) == {"root.key": k1, "root.key.new": won.raw}
    seal.abandon(INSTALLATION, 2, won)
    assert files(tmp_path) == {"root.key": k1}


def test_another_node_takes_the_new_key_from_its_transit_copy(tmp_path: Path) -> None:
    k1 = os.urandom(32)
    here, there = tmp_path / "a", tmp_path / "b"
    for directory in (here, there):
        directory.mkdir()
        (directory / "root.key").write_bytes(k1)
    maker, other = FileSeal(here), FileSeal(there)
    one = generation(k1, 1)
    cipher = maker.open(INSTALLATION, one, {})
    assert cipher is not None
    made = maker.make(INSTALLATION, 2, (1, cipher))
    k2 = files(here)["root.key.new"]
    two = RootGeneration(2, SealType.FILE, generation(k2, 2).check_value, made.sealed_key,
                         datetime.now(UTC))  # fmt: skip
    held = {1: other.open(INSTALLATION, one, {})}
    assert held[1] is not None
    assert other.open(INSTALLATION, two, held) is not None  # from the transit copy
    other.keep(INSTALLATION, {1, 2}, 2)
    assert files(there) == {"root.key": k2, "root.key.old": k1}


def test_a_process_that_has_not_heard_of_a_new_key_leaves_it_alone(tmp_path: Path) -> None:
    k1, k2 = os.urandom(32), os.urandom(32)
    (tmp_path / "root.key").write_bytes(k1)
    stale = FileSeal(tmp_path)
    assert stale.open(INSTALLATION, generation(k1, 1), {}) is not None
    # Another worker on this directory rotated: root.key is a key this process does not know,
    # and a key of a rotation being made waits in root.key.new.
    (tmp_path / "root.key").write_bytes(k2)
    (tmp_path / "root.key.old").write_bytes(k1)
    pending = os.urandom(32)
    (tmp_path / "root.key.new").write_bytes(pending)
    stale.keep(INSTALLATION, {1}, 1)
    assert files(tmp_path) == {"root.key": k2, "root.key.new": pending, "root.key.old": k1}


def test_a_retired_key_an_operator_put_in_root_key_stays(tmp_path: Path) -> None:
    k1, k2 = os.urandom(32), os.urandom(32)
    (tmp_path / "root.key").write_bytes(k1)  # say, the key of an old backup
    (tmp_path / "root.key.old").write_bytes(k1)  # left by a rotation that completed
    seal = FileSeal(tmp_path)
    seal.forget(INSTALLATION, generation(k1, 1, retired=True), held=False)
    assert files(tmp_path) == {"root.key": k1}
    assert seal.open(INSTALLATION, generation(k2, 2), {}) is None
