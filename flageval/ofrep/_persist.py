"""The persisted evaluation (ADR-0009) as a file: format, reading, atomic writing.

One file per provider identity (the bulk URL without credentials, plus
``cache_key_prefix``) in the cache directory, holding one entry: the last successful
bulk evaluation for one targeting key. Its JSON fields:

- ``version``: `FORMAT_VERSION`; any other is a miss (a later format is never misread);
- ``cacheKeyHash``: sha256 of ``prefix:targetingKey`` (of ``targetingKey`` without a
  prefix), the only form in which the targeting key is written;
- ``contextHash``: sha256 of the prefix and the whole canonical context: the stored
  ETag is reused as If-None-Match only for the very same context;
- ``etag``, ``writtenAt`` (Unix seconds), ``payload``: the ``flags`` of the answer and
  its ``eventStreams`` without any whose URL has a query (it may hold a token), and
  ``streamsWithheld`` saying some were left out. Configured headers are never written.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

FORMAT_VERSION = 1
#: A persisted entry larger than this is not written (nor read): 4 MiB holds ~20,000
#: flags with metadata, far beyond a service's usual answer of a few kB.
MAX_ENTRY_BYTES = 4 * 1024 * 1024
# A temporary file this old belongs to a writer that died before its rename.
_STALE_TMP_S = 600.0


class CacheUnusable(OSError):
    """The cache directory cannot be trusted or used."""


@dataclass(frozen=True, slots=True)
class Entry:
    key_hash: str
    context_hash: str
    etag: str | None
    written_at: float
    payload: dict[str, Any]  # {"flags": [...], "eventStreams": [...]}
    streams_withheld: bool


class _Stored(msgspec.Struct, rename="camel"):
    version: int
    cache_key_hash: str
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


def key_hash(prefix: str | None, targeting_key: str) -> str:
    text = f"{prefix}:{targeting_key}" if prefix else targeting_key
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def context_hash(prefix: str | None, body: bytes) -> str:
    return hashlib.sha256(
        (prefix or "").encode("utf-8", "surrogatepass") + b"\0" + body
    ).hexdigest()


def file_name(identity: str, prefix: str | None) -> str:
    digest = hashlib.sha256(f"{identity}\n{prefix or ''}".encode("utf-8", "surrogatepass"))
    return f"ofrep-{digest.hexdigest()[:32]}.json"


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
        """The entry, None when there is none; ValueError when it is not one of ours."""
        try:
            self._check_directory(create=False)
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        with os.fdopen(fd, "rb") as file:
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
