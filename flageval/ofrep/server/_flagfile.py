"""One flagd flag-definition file: read, checked by flagd's own parser, ready to evaluate.

A file is taken whole or not at all: flagd's ``FlagStore`` validates every flag (state,
variants, defaultVariant, metadata) and resolves ``$evaluators``; any failure rejects
the file, and the caller keeps what it had. Each flag gets a canonical form (sorted-key
JSON of its resolved definition and merged metadata) from which flag-set fingerprints
are computed, so that two processes reading the same files agree byte for byte.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.contrib.tools.flagd.core.model.flag_store import FlagStore

#: A flag file past this size is refused unread (a runaway generator, not a flag file).
MAX_FILE_BYTES = 64 * 1024 * 1024

_canonical = msgspec.json.Encoder(order="sorted")
_decode = msgspec.json.Decoder()

# The resolver each flag is evaluated with, from the type of its variants' values.
BOOLEAN, STRING, INTEGER, FLOAT, OBJECT = "boolean", "string", "integer", "float", "object"


class FlagFileError(Exception):
    """A file that cannot be used; the message names the file and the reason, never values."""


@dataclasses.dataclass(frozen=True, slots=True)
class FlagDef:
    """What a flag set needs of one flag."""

    key: str
    set_id: str | None  # the flag's own metadata.flagSetId, else its file's
    kind: str
    canonical: bytes  # sorted-key JSON of the resolved definition (fingerprints)
    volatile: bool  # its targeting reads $flagd.timestamp: not the same answer twice


@dataclasses.dataclass(frozen=True, slots=True)
class Source:
    """A file as last parsed: its evaluator, its flags and what identifies the read."""

    path: Path
    core: FlagdCore
    flags: Mapping[str, FlagDef]
    metadata: Mapping[str, Any]  # the file's flag-set metadata
    mtime_s: int
    digest: str  # SHA-256 of the bytes read


def digest_of(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def parse(path: Path, raw: bytes, mtime_s: int) -> Source:
    """A :class:`Source` from a file's bytes, or :class:`FlagFileError`."""
    if len(raw) > MAX_FILE_BYTES:
        raise FlagFileError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
    try:
        data = _decode.decode(raw)
    except (msgspec.DecodeError, RecursionError) as err:
        raise FlagFileError(f"{path}: not JSON ({_first_line(err)})") from None
    if not isinstance(data, dict) or not isinstance(data.get("flags"), dict):
        raise FlagFileError(f"{path}: not a flagd flag file (no 'flags' object)")
    try:
        store = FlagStore()
        store.update(copy.deepcopy(data))  # from_dict mutates what it is given
        core = FlagdCore()
        core.set_flags(copy.deepcopy(data))
    except Exception as err:
        raise FlagFileError(f"{path}: rejected by flagd's parser ({_first_line(err)})") from None
    file_meta = dict(store.flag_set_metadata)
    file_set = _set_id(file_meta)
    flags: dict[str, FlagDef] = {}
    try:
        for key, flag in store.flags.items():
            meta = {**file_meta, **(flag.metadata or {})}  # as flagd-core merges them
            variants = dict(flag.variants)
            targeting = _canonical.encode(flag.targeting) if flag.targeting else b""
            canonical = _canonical.encode(
                {
                    "key": key,
                    "state": flag.state,
                    "variants": variants,
                    "defaultVariant": flag.default_variant,
                    "targeting": flag.targeting or None,
                    "metadata": meta,
                }
            )
            flags[key] = FlagDef(
                key=key,
                set_id=_set_id(flag.metadata or {}) or file_set,
                kind=kind_of(variants, flag.default_variant),
                canonical=canonical,
                volatile=b'"$flagd.timestamp' in targeting or b'"$flagd"' in targeting,
            )
    except (TypeError, ValueError, msgspec.EncodeError) as err:
        raise FlagFileError(f"{path}: a flag cannot be encoded ({_first_line(err)})") from None
    return Source(path, core, flags, file_meta, mtime_s, digest_of(raw))


def _set_id(meta: Mapping[str, Any]) -> str | None:
    value = meta.get("flagSetId")
    return value if isinstance(value, str) and value else None


def kind_of(variants: Mapping[str, Any], default_variant: object) -> str:
    """The resolver for a flag: the type all its values share; when they differ, its
    default variant's (the other values then answer TYPE_MISMATCH, as in flagd)."""
    kinds = {_kind(v) for v in variants.values()}
    if kinds == {INTEGER, FLOAT}:
        return FLOAT
    if len(kinds) == 1:
        return kinds.pop()
    if isinstance(default_variant, bool):
        default_variant = str(default_variant).lower()
    if isinstance(default_variant, str) and default_variant in variants:
        return _kind(variants[default_variant])
    return _kind(next(iter(variants.values())))


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, str):
        return STRING
    if isinstance(value, int):
        return INTEGER
    if isinstance(value, float):
        return FLOAT
    return OBJECT


def _first_line(err: BaseException) -> str:
    """An exception's first line, capped: flagd's messages may quote a whole rule."""
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return text if len(text) <= 200 else text[:200] + "..."
