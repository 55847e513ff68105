"""Envelope encryption against a real server: sizes around the segment boundaries, the data-key
cache, every kind of damage, and a 200 MB file through ``coffer envelope`` with its peak memory
measured."""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coffer.client import Client
from coffer.client.envelope import (
    SEGMENT_SIZE,
    TAG_SIZE,
    TINK_HEADER_SIZE,
    DataKeyCache,
    Envelope,
    EnvelopeError,
    Header,
    read_header,
)
from tests.e2e.conftest import RunningCoffer
from tests.e2e.processes import COFFER

pytestmark = pytest.mark.slow

FIRST_SEGMENT = SEGMENT_SIZE - TINK_HEADER_SIZE - TAG_SIZE  # plaintext bytes in segment 0
SEGMENT = SEGMENT_SIZE - TAG_SIZE  # plaintext bytes in each later segment


@pytest.fixture(scope="module")
def client(coffer_client: Client) -> Client:
    return coffer_client


@pytest.fixture(scope="module")
def key(client: Client) -> str:
    return client.keys.create(f"envelope-{secrets.token_hex(4)}", "aes256-gcm96").slug


@pytest.mark.parametrize(
    "size",
    [0, 1, FIRST_SEGMENT - 1, FIRST_SEGMENT, FIRST_SEGMENT + 1,
     FIRST_SEGMENT + SEGMENT - 1, FIRST_SEGMENT + SEGMENT, FIRST_SEGMENT + SEGMENT + 1],
)  # fmt: skip
def test_round_trip_around_the_segment_boundaries(client: Client, key: str, size: int) -> None:
    plaintext = os.urandom(size)
    envelope = Envelope(client)
    message = envelope.encrypt(plaintext, key=key)
    header, _ = read_header(io.BytesIO(message))
    assert (header.region, header.key) == ("nl-01", key)
    assert plaintext not in message or size < 8
    assert envelope.decrypt(message) == plaintext


def test_every_message_has_a_fresh_data_key_without_a_cache(client: Client, key: str) -> None:
    envelope = Envelope(client)
    one, two = (read_header(io.BytesIO(envelope.encrypt(b"same", key=key)))[0] for _ in "12")
    assert one.data_key != two.data_key


def count_encrypts(client: Client, key: str) -> int:
    identity = client.keys.get(key).identity
    return client.audit.list(action="kms.encrypt", resource_identity=identity).total_items


def test_the_data_key_cache_bounds_messages_and_age(client: Client) -> None:
    key = client.keys.create(f"cache-{secrets.token_hex(4)}", "aes256-gcm96").slug
    envelope = Envelope(client, cache=DataKeyCache(max_messages=3, max_age=60))
    messages = [envelope.encrypt(f"message {i}".encode(), key=key) for i in range(7)]
    assert count_encrypts(client, key) == 3  # data keys for messages 1-3, 4-6, 7
    data_keys = [read_header(io.BytesIO(m))[0].data_key for m in messages]
    assert len(set(data_keys)) == 3
    assert [m for m in messages if messages.count(m) > 1] == []  # salts differ per message

    identity = client.keys.get(key).identity

    def decrypts() -> int:
        return client.audit.list(action="kms.decrypt", resource_identity=identity).total_items

    assert decrypts() == 0  # wrapping a data key is one encrypt, nothing more
    reader = Envelope(client, cache=DataKeyCache())
    assert [reader.decrypt(m) for m in messages] == [f"message {i}".encode() for i in range(7)]
    assert decrypts() == 3  # one unwrap per data key

    young = Envelope(client, cache=DataKeyCache(max_age=0.2))
    first = read_header(io.BytesIO(young.encrypt(b"a", key=key)))[0].data_key
    assert read_header(io.BytesIO(young.encrypt(b"b", key=key)))[0].data_key == first
    time.sleep(0.3)
    assert read_header(io.BytesIO(young.encrypt(b"c", key=key)))[0].data_key != first


class FailingSource(io.RawIOBase):
    """Yields ``good`` bytes, then fails like a disk or a pipe's writer that died."""

    def __init__(self, good: bytes) -> None:
        self._data = io.BytesIO(good)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        n = self._data.readinto(buffer)
        if n == 0:
            raise OSError("input went away")
        return n


def test_an_encryption_that_fails_midway_leaves_a_message_that_fails_as_truncated(
    client: Client, key: str
) -> None:
    """Closing Tink's stream writes the last segment: on a failed read it must not, or the
    output would be an authentic message of part of the data."""
    out = io.BytesIO()
    with pytest.raises(OSError, match="input went away"):
        Envelope(client).encrypt_stream(FailingSource(os.urandom(3 * SEGMENT)), out, key=key)
    assert len(out.getvalue()) > SEGMENT_SIZE  # the segments Tink had finished are there
    with pytest.raises(EnvelopeError, match="truncated"):
        Envelope(client).decrypt(out.getvalue())


# --- damage ---------------------------------------------------------------------------------


def three_segments(client: Client, key: str) -> tuple[bytes, bytes, int]:
    plaintext = os.urandom(FIRST_SEGMENT + SEGMENT + 1000)
    message = Envelope(client).encrypt(plaintext, key=key)
    _, prefix = read_header(io.BytesIO(message))
    return plaintext, message, len(prefix)


def damaged(client: Client, key: str, other_key: str) -> dict[str, bytes]:
    _, message, start = three_segments(client, key)
    body = start + TINK_HEADER_SIZE  # segment 0 starts here
    seg1 = start + SEGMENT_SIZE
    seg2 = seg1 + SEGMENT_SIZE
    header, prefix = read_header(io.BytesIO(message))
    identity = client.keys.get(key).identity

    def with_header(changed: Header) -> bytes:
        return changed.encode() + message[len(prefix) :]

    return {
        "truncated inside a segment": message[:-100],
        "truncated at a segment boundary": message[:seg2],
        "segments reordered": message[:seg1] + message[seg2:] + message[seg1:seg2],
        "a bit flipped in a segment": message[: body + 10] + bytes([message[body + 10] ^ 1])
        + message[body + 11 :],
        "a bit flipped in the tag": message[:-1] + bytes([message[-1] ^ 0x80]),
        # the same key named by its identity: the data key unwraps, the header no longer matches
        "header changed": with_header(Header(header.region, identity, header.data_key)),
        "wrong key": with_header(Header(header.region, other_key, header.data_key)),
        "not an envelope": os.urandom(5000),
        "empty": b"",
    }  # fmt: skip


def test_damage_of_every_kind_is_an_error(client: Client, key: str) -> None:
    other = client.keys.create(f"other-{secrets.token_hex(4)}", "aes256-gcm96").slug
    cases = damaged(client, key, other)
    for name, message in cases.items():
        with pytest.raises(EnvelopeError) as caught:
            Envelope(client).decrypt(message)
        if name == "wrong key":
            assert f"cannot be unwrapped with key {other!r}" in caught.value.message
        assert caught.value.code == "invalid_envelope", name


def test_the_cli_writes_no_partial_plaintext_when_decryption_fails(
    client: Client, key: str, coffer_server: RunningCoffer, tmp_path: Path
) -> None:
    other = client.keys.create(f"other-{secrets.token_hex(4)}", "aes256-gcm96").slug
    for number, (name, message) in enumerate(damaged(client, key, other).items()):
        source = tmp_path / f"bad-{number}.cfev"
        source.write_bytes(message)
        target = tmp_path / f"out-{number}"
        done = subprocess.run(
            [COFFER, "envelope", "decrypt", source, "-o", target],
            capture_output=True, text=True, env=coffer_server.env(), check=False,
        )  # fmt: skip
        assert done.returncode == 1, (name, done.stderr)
        assert done.stderr.startswith("coffer: "), name
        assert len(done.stderr.strip().splitlines()) == 1, (name, done.stderr)
        assert not target.exists(), name
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("out", ".out"))) == []


# --- a large file through the CLI -----------------------------------------------------------

#: Runs a command and writes its peak resident set size (KiB) to the file named first.
PEAK_RSS = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[2:]).returncode\n"
    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
    "sys.exit(code)\n"
)
LARGE = 200 * 1024 * 1024
PEAK_RSS_LIMIT_KIB = 100 * 1024


def test_a_200_mb_file_through_envelope_encrypt_and_decrypt_in_constant_memory(
    key: str, coffer_server: RunningCoffer, tmp_path: Path
) -> None:
    original = tmp_path / "large.bin"
    digest = hashlib.sha256()
    with original.open("wb") as out:
        for _ in range(LARGE // (1 << 20)):
            chunk = os.urandom(1 << 20)
            digest.update(chunk)
            out.write(chunk)
    env = coffer_server.env()

    def measured(rss: Path, *args: str | Path, **popen: object) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-c", PEAK_RSS, rss, COFFER, *args],
                                env=env, **popen)  # type: ignore[call-overload]  # fmt: skip

    # Files: encrypt to a file, decrypt to a file.
    sealed, opened = tmp_path / "large.cfev", tmp_path / "large.out"
    started = time.perf_counter()
    assert measured(tmp_path / "rss-enc", "envelope", "encrypt", "--key", key, original,
                    "-o", sealed).wait() == 0  # fmt: skip
    encrypt_seconds = time.perf_counter() - started
    started = time.perf_counter()
    assert measured(tmp_path / "rss-dec", "envelope", "decrypt", sealed, "-o", opened).wait() == 0
    decrypt_seconds = time.perf_counter() - started
    assert hashlib.sha256(opened.read_bytes()).hexdigest() == digest.hexdigest()
    opened.unlink()

    # A pipe: encrypt to stdout, decrypt from stdin, hash the output.
    with original.open("rb") as source:
        encrypting = measured(tmp_path / "rss-pipe-enc", "envelope", "encrypt", "--key", key,
                              "-", "-o", "-", stdin=source, stdout=subprocess.PIPE)  # fmt: skip
        decrypting = measured(tmp_path / "rss-pipe-dec", "envelope", "decrypt", "-", "-o", "-",
                              stdin=encrypting.stdout, stdout=subprocess.PIPE)  # fmt: skip
        assert encrypting.stdout is not None
        assert decrypting.stdout is not None
        encrypting.stdout.close()
        piped = hashlib.sha256()
        with decrypting.stdout:
            while chunk := decrypting.stdout.read(1 << 20):
                piped.update(chunk)
        assert (encrypting.wait(), decrypting.wait()) == (0, 0)
    assert piped.hexdigest() == digest.hexdigest()

    peaks = {name: int((tmp_path / f"rss-{name}").read_text())
             for name in ("enc", "dec", "pipe-enc", "pipe-dec")}  # fmt: skip
    report = {
        "megabytes": LARGE / 2**20,
        "encrypt_mb_per_s": round(LARGE / 2**20 / encrypt_seconds, 1),
        "decrypt_mb_per_s": round(LARGE / 2**20 / decrypt_seconds, 1),
        "peak_rss_mib": {name: round(kib / 1024, 1) for name, kib in peaks.items()},
    }
    print("envelope 200 MB:", json.dumps(report))
    assert all(kib < PEAK_RSS_LIMIT_KIB for kib in peaks.values()), report


def test_the_progress_bar_goes_to_a_terminal_on_stderr_never_into_the_data(
    client: Client, key: str, coffer_server: RunningCoffer, tmp_path: Path
) -> None:
    import pty

    plaintext = os.urandom(3 * SEGMENT_SIZE)
    source, sealed = tmp_path / "in.bin", tmp_path / "out.cfev"
    source.write_bytes(plaintext)
    controller, terminal = pty.openpty()
    try:
        with sealed.open("wb") as stdout:
            done = subprocess.run(
                [COFFER, "envelope", "encrypt", "--key", key, source, "-o", "-"],
                stdout=stdout, stderr=terminal, env=coffer_server.env(), timeout=60, check=False,
            )  # fmt: skip
    finally:
        os.close(terminal)
        os.close(controller)
    assert done.returncode == 0
    assert Envelope(client).decrypt(sealed.read_bytes()) == plaintext  # no stray byte in it
