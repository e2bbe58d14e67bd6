"""The persisted evaluation (ADR-0009) as a file: format, reading, atomic writing.

One file per provider identity in the cache directory, holding one entry: the last
successful bulk evaluation for one context. The identity is everything that decides
whose values a server answers with: the base URL as configured (userinfo included),
every configured header name and value, and ``cache_key_prefix``; it is written only
as a sha256 (`identity_hash`), which also names the file. Its JSON fields:

- ``version``: `FORMAT_VERSION`; any other is a miss (a later format is never misread,
  and entries of the first format, keyed without the headers, are never served);
- ``identity``: the identity's sha256: an entry of another identity is a miss, whatever
  its file name;
- ``cacheKeyHash``: sha256 of ``prefix:targetingKey`` (of ``targetingKey`` without a
  prefix), the only form in which the targeting key is written; null for a context
  without a targeting key, which then matches on ``contextHash`` alone;
- ``contextHash``: sha256 of the prefix and the whole canonical context: the stored
  ETag is reused as If-None-Match only for the very same context;
- ``etag``, ``writtenAt`` (Unix seconds), ``payload``: the ``flags`` of the answer (no
  ``eventStreams``: their URLs may hold tokens, in the query or the path), and
  ``streamsWithheld`` saying the answer listed some. No header value is ever written.

Writes go to a temporary file in the same directory (0600), then ``os.replace``: a
reader, in this process or another (gunicorn workers share the directory), sees the old
entry or the new one, never a part; two writers race to a whole file each (the last
wins). The directory is created 0700, and neither read nor written when another user
owns it or can write to it. An entry over `MAX_ENTRY_BYTES` is refused. Everything here
is blocking file I/O: the coordinator runs it in a worker thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

FORMAT_VERSION = 2
#: A persisted entry larger than this is not written (nor read): 4 MiB holds ~20,000
#: flags with metadata, far beyond a service's usual answer of a few kB.
MAX_ENTRY_BYTES = 4 * 1024 * 1024
# A temporary file this old belongs to a writer that died before its rename.
_STALE_TMP_S = 600.0


class CacheUnusable(OSError):
    """The cache directory cannot be trusted or used."""


@dataclass(frozen=True, slots=True)
class Entry:
    identity: str
    key_hash: str | None  # None: a context without a targeting key
    context_hash: str
    etag: str | None
    written_at: float
    payload: dict[str, Any]  # {"flags": [...], "eventStreams": [...]}
    streams_withheld: bool


class _Stored(msgspec.Struct, rename="camel"):
    version: int
    identity: str
    cache_key_hash: str | None
    context_hash: str
    etag: str | None
    written_at: float
    payload: dict[str, Any]
    streams_withheld: bool = False


class _Version(msgspec.Struct):
    version: int


_decode_version = msgspec.json.Decoder(_Version).decode
_decode_entry = msgspec.json.Decoder(_Stored).decode
_encode = msgspec.json.Encoder().encode


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def identity_hash(base_url: str, headers: Mapping[str, str], prefix: str | None) -> str:
    """sha256 over the base URL, every header (names case-folded, sorted) and the prefix,
    each field length-prefixed so that no two identities hash the same text."""
    fields = [base_url, prefix or ""]
    for name, value in sorted((n.lower(), v) for n, v in headers.items()):
        fields += [name, value]
    digest = hashlib.sha256(b"flageval-ofrep identity")
    for field in fields:
        data = _utf8(field)
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()


def key_hash(prefix: str | None, targeting_key: str) -> str:
    text = f"{prefix}:{targeting_key}" if prefix else targeting_key
    return hashlib.sha256(_utf8(text)).hexdigest()


def context_hash(prefix: str | None, body: bytes) -> str:
    return hashlib.sha256(_utf8(prefix or "") + b"\0" + body).hexdigest()


def file_name(identity: str) -> str:
    return f"ofrep-{identity[:32]}.json"


class Store:
    """One entry file. ``read``/``write`` raise OSError (`CacheUnusable` included) and
    ValueError (a bad or foreign file); the caller counts and logs."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.path = directory / name
        self._name = name

    def _check_directory(self, create: bool) -> None:
        if create:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(self.directory)
        if not stat.S_ISDIR(info.st_mode):
            raise CacheUnusable("the cache path is not a directory")
        if info.st_uid != os.getuid():
            raise CacheUnusable("the cache directory belongs to another user")
        if stat.S_IMODE(info.st_mode) & 0o077:
            if not create:
                raise CacheUnusable("the cache directory is open to other users")
            os.chmod(self.directory, 0o700)  # ours: tightened, not trusted as it was

    def read(self) -> Entry | None:
        """The entry, None when there is none; ValueError when it is not one of ours.
        Only a regular file is opened, and without blocking: opening a FIFO (or a
        device) for reading waits for a writer, for ever."""
        try:
            self._check_directory(create=False)
            if not stat.S_ISREG(os.lstat(self.path).st_mode):
                raise CacheUnusable("the cache path is not a regular file")
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
            fd = os.open(self.path, flags)
        except FileNotFoundError:
            return None
        with os.fdopen(fd, "rb") as file:
            # Checked again on what was opened: the path may have been replaced between.
            info = os.fstat(file.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
                raise CacheUnusable("the cache file is not a regular file of ours")
            if info.st_size > MAX_ENTRY_BYTES:
                raise ValueError("the cache file is larger than the limit")
            raw = file.read(MAX_ENTRY_BYTES + 1)
        try:
            if _decode_version(raw).version != FORMAT_VERSION:
                raise ValueError("the cache file has another format version")
            stored = _decode_entry(raw)
        except msgspec.DecodeError:
            raise ValueError("the cache file is not a valid entry") from None
        return Entry(
            identity=stored.identity,
            key_hash=stored.cache_key_hash,
            context_hash=stored.context_hash,
            etag=stored.etag,
            written_at=stored.written_at,
            payload=stored.payload,
            streams_withheld=stored.streams_withheld,
        )

    def encode(self, entry: Entry) -> bytes:
        stored = _Stored(
            version=FORMAT_VERSION,
            identity=entry.identity,
            cache_key_hash=entry.key_hash,
            context_hash=entry.context_hash,
            etag=entry.etag,
            written_at=entry.written_at,
            payload=entry.payload,
            streams_withheld=entry.streams_withheld,
        )
        return _encode(stored)

    def write(self, data: bytes) -> None:
        """Replace the entry with ``data`` (from `encode`) in one rename."""
        self._check_directory(create=True)
        self._remove_stale_temporaries()
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{self._name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as file:
                os.fchmod(file.fileno(), 0o600)
                file.write(data)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _remove_stale_temporaries(self) -> None:
        now = time.time()
        with contextlib.suppress(OSError), os.scandir(self.directory) as found:
            for item in found:
                if item.name.startswith(f".{self._name}.") and item.name.endswith(".tmp"):
                    with contextlib.suppress(OSError):
                        if now - item.stat(follow_symlinks=False).st_mtime > _STALE_TMP_S:
                            os.unlink(item.path)
