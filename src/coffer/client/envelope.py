"""Envelope encryption of data of any size, streaming, in Tink's streaming AEAD format.

A message is a small Coffer header followed by a Tink AES-GCM-HKDF streaming ciphertext::

    "CFEV"  version (1 byte, 1)  header length (4 bytes, big-endian)  header (JSON)
    Tink streaming ciphertext: its own header (salt, nonce prefix), then segments of 1 MiB

The JSON header (``{"region", "key", "dataKey"}``) names the region and the key and carries the
data key: a fresh Tink keyset (``AES256_GCM_HKDF_1MB``, Tink's binary keyset format) encrypted by
that Coffer key, the ``thalassa:vN:...`` string ``encrypt`` returned. All the bytes before the
Tink ciphertext are its associated data, so a changed header fails like a changed segment.
Tink derives each message's segment key from a random salt and numbers the segments in their
nonces with a flag on the last one: truncation, reordering, dropping or flipping a bit fail
authentication. The decision and the byte layout are in
docs/envelope.md.

Memory stays constant: data goes through in chunks, the segment size bounds what Tink holds.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import msgspec
import tink
from tink import secret_key_access, streaming_aead

from coffer.client.clients import Client
from coffer.errors import InvalidCiphertext

__all__ = [
    "MAGIC",
    "SEGMENT_SIZE",
    "DataKeyCache",
    "Envelope",
    "EnvelopeError",
    "Header",
    "atomic_output",
    "read_header",
]

MAGIC = b"CFEV"
FORMAT_VERSION = 1
SEGMENT_SIZE = 1 << 20
#: Tink's streaming header for a 32-byte key: length byte, salt, 7-byte nonce prefix.
TINK_HEADER_SIZE = 1 + 32 + 7
TAG_SIZE = 16
_PREFIX = struct.Struct(">4sBI")
_MAX_HEADER = 64 * 1024
_CHUNK = 256 * 1024

streaming_aead.register()
#: AES-256 keys, HKDF-SHA256 to 32-byte segment keys, 1 MiB ciphertext segments.
_TEMPLATE = streaming_aead.streaming_aead_key_templates.AES256_GCM_HKDF_1MB


class EnvelopeError(InvalidCiphertext):
    """The input is not an intact Coffer envelope (damaged, truncated, reordered, not one at
    all), or its data key cannot be unwrapped by the key its header names."""

    code = "invalid_envelope"
    default_message = "not an intact Coffer envelope"


class _HeaderBody(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    region: str
    key: str
    data_key: str  # the Tink keyset, encrypted by the key: "thalassa:vN:..."


@dataclass(frozen=True, slots=True)
class Header:
    region: str
    key: str
    data_key: str

    def encode(self) -> bytes:
        body = msgspec.json.encode(_HeaderBody(self.region, self.key, self.data_key))
        return _PREFIX.pack(MAGIC, FORMAT_VERSION, len(body)) + body


def read_header(source: BinaryIO) -> tuple[Header, bytes]:
    """The header of the message ``source`` starts with, and its bytes."""
    prefix = _read_exactly(source, _PREFIX.size)
    magic, format_version, length = _PREFIX.unpack(prefix)
    if magic != MAGIC:
        raise EnvelopeError("not a Coffer envelope (no CFEV header)")
    if format_version != FORMAT_VERSION:
        raise EnvelopeError(f"envelope format version {format_version} is not supported")
    if length > _MAX_HEADER:
        raise EnvelopeError("the envelope header is too long")
    body = _read_exactly(source, length)
    try:
        parsed = msgspec.json.decode(body, type=_HeaderBody)
    except msgspec.DecodeError:
        raise EnvelopeError("the envelope header is damaged") from None
    return Header(parsed.region, parsed.key, parsed.data_key), prefix + body


def _read_exactly(source: BinaryIO, size: int) -> bytes:
    data = source.read(size)
    while data is not None and len(data) < size:
        more = source.read(size - len(data))
        if not more:
            break
        data += more
    if data is None or len(data) < size:
        raise EnvelopeError("the envelope is truncated in its header")
    return data


class _Unclosed(io.RawIOBase):
    """A view of a stream that Tink may close without closing the stream (stdout, say)."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._discarding = False

    def discard(self) -> None:
        """Drop whatever is written from now on (the final segment of an aborted message)."""
        self._discarding = True

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        if not self._discarding:
            self._stream.write(data)
        return len(data)

    def close(self) -> None:
        self._stream.flush()


@dataclass(slots=True)
class _Cached:
    primitive: streaming_aead.StreamingAead
    data_key: str
    expires: float
    uses_left: int


class DataKeyCache:
    """Reuse of data keys, to save Coffer calls for many small messages: a data key serves at
    most ``max_messages`` messages and ``max_age`` seconds; at most ``max_entries`` are kept.

    Reuse is safe with this format: each message's segment key is derived from a fresh random
    salt, so no key and nonce pair repeats. What it trades is the blast radius of one leaked data
    key (the messages it served) and timeliness (a revoked permission or disabled key is noticed
    only when the entry expires)."""

    def __init__(
        self, *, max_age: float = 300.0, max_messages: int = 1000, max_entries: int = 100
    ) -> None:
        if max_age <= 0 or max_messages < 1 or max_entries < 1:
            raise ValueError("max_age, max_messages and max_entries must be positive")
        self.max_age = max_age
        self.max_messages = max_messages
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, ...], _Cached] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, name: tuple[str, ...]) -> _Cached | None:
        with self._lock:
            entry = self._entries.get(name)
            if entry is None:
                return None
            if entry.expires <= time.monotonic() or entry.uses_left <= 0:
                del self._entries[name]
                return None
            entry.uses_left -= 1
            self._entries.move_to_end(name)
            return entry

    def put(self, name: tuple[str, ...], primitive: streaming_aead.StreamingAead,
            data_key: str) -> None:  # fmt: skip
        entry = _Cached(primitive, data_key, time.monotonic() + self.max_age, self.max_messages - 1)
        with self._lock:
            self._entries[name] = entry
            self._entries.move_to_end(name)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


Progress = Callable[[int], None]


class Envelope:
    """Envelope encryption with the keys of ``client``. ``cache``: reuse data keys (see
    ``DataKeyCache``); without one, every message gets a fresh data key and one Coffer call."""

    def __init__(self, client: Client, *, cache: DataKeyCache | None = None) -> None:
        self._client = client
        self._cache = cache
        # A cache shared by clients of other servers, organisations or projects never serves
        # one of them another's data key.
        connection = client.connection
        self._scope = (connection.url, connection.organisation or "", connection.project or "")

    # --- encryption -----------------------------------------------------------------------

    def encrypt_stream(
        self,
        source: BinaryIO,
        destination: BinaryIO,
        *,
        key: str,
        region: str | None = None,
        progress: Progress | None = None,
    ) -> Header:
        """Encrypt everything ``source`` yields into ``destination``.

        If reading ``source`` fails, the message is left without its last segment, so that it
        fails as truncated: closing Tink's stream would otherwise finish it as a complete (and
        authentic) message of only the data read so far."""
        region = region or self._client.connection.region
        primitive, data_key = self._data_key(region, key)
        header = Header(region, key, data_key)
        prefix = header.encode()
        destination.write(prefix)
        sink = _Unclosed(destination)
        stream = primitive.new_encrypting_stream(sink, prefix)
        try:
            while chunk := source.read(_CHUNK):
                stream.write(chunk)
                if progress is not None:
                    progress(len(chunk))
        except BaseException:
            sink.discard()
            with contextlib.suppress(Exception):
                stream.close()
            raise
        stream.close()
        return header

    def encrypt(self, plaintext: bytes, *, key: str, region: str | None = None) -> bytes:
        out = io.BytesIO()
        self.encrypt_stream(io.BytesIO(plaintext), out, key=key, region=region)
        return out.getvalue()

    def _data_key(self, region: str, key: str) -> tuple[streaming_aead.StreamingAead, str]:
        name = (*self._scope, "encrypt", region, key)
        if self._cache is not None and (entry := self._cache.take(name)) is not None:
            return entry.primitive, entry.data_key
        handle = tink.new_keyset_handle(_TEMPLATE)
        keyset = tink.proto_keyset_format.serialize(handle, secret_key_access.TOKEN)
        data_key = self._client.encrypt(key, keyset, region=region).ciphertext
        primitive = handle.primitive(streaming_aead.StreamingAead)
        if self._cache is not None:
            self._cache.put(name, primitive, data_key)
        return primitive, data_key

    # --- decryption -----------------------------------------------------------------------

    def decrypt_stream(
        self, source: BinaryIO, destination: BinaryIO, *, progress: Progress | None = None
    ) -> Header:
        """Decrypt the message ``source`` yields into ``destination``.

        Tink releases a segment only after authenticating it, but a message cut at a segment
        boundary is known to be truncated only at its end: on an error, ``destination`` may
        have received authentic leading segments. ``atomic_output`` keeps a file out of
        place until the whole message is authentic."""
        header, prefix = read_header(source)
        primitive = self._unwrap(header)
        try:
            with primitive.new_decrypting_stream(_Unclosed(source), prefix) as stream:
                while chunk := stream.read(_CHUNK):
                    destination.write(chunk)
                    if progress is not None:
                        progress(len(chunk))
        except tink.TinkError:
            raise EnvelopeError(
                "the envelope is damaged, truncated or reordered, or its header was changed"
            ) from None
        return header

    def decrypt(self, message: bytes) -> bytes:
        out = io.BytesIO()
        self.decrypt_stream(io.BytesIO(message), out)
        return out.getvalue()

    def _unwrap(self, header: Header) -> streaming_aead.StreamingAead:
        name = (*self._scope, "decrypt", header.region, header.key, header.data_key)
        if self._cache is not None and (entry := self._cache.take(name)) is not None:
            return entry.primitive
        try:
            keyset = self._client.decrypt(header.key, header.data_key, region=header.region)
        except InvalidCiphertext as exc:
            raise EnvelopeError(
                f"the data key cannot be unwrapped with key {header.key!r} in region "
                f"{header.region!r}: {exc.message}"
            ) from None
        try:
            handle = tink.proto_keyset_format.parse(keyset.plaintext, secret_key_access.TOKEN)
            primitive = handle.primitive(streaming_aead.StreamingAead)
        except tink.TinkError:
            raise EnvelopeError("the envelope's data key is not a streaming AEAD keyset") from None
        if self._cache is not None:
            self._cache.put(name, primitive, header.data_key)
        return primitive


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[BinaryIO]:
    """A file that appears at ``path`` (durably, replacing what was there) only if the block
    completes; on an error nothing is left behind and ``path`` is untouched."""
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".part"
    )
    try:
        with os.fdopen(descriptor, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
        _sync_directory(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _sync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
