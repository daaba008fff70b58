"""Upload specs to keyscore's CQL store (ScyllaDB or Cassandra), activate and roll back.

Works with any cassandra-driver ``Session``; :func:`keyscore_sklearn.connection.connect` opens
one with keyscore's settings (TLS, local datacenter, login from the same ``KEYSCORE_CQL_*``
environment variables). Follows the one write protocol every keyscore
writer uses (see keyscore's ``cql/`` schema files):

* a version is written once, with ``INSERT ... IF NOT EXISTS`` on ``model_versions``; a spec
  is stored as its canonical text (JSON without whitespace outside strings), inline up to
  256 KiB, else compressed with zstd into chunks of at most 512 KiB in ``model_spec_chunks``,
  with its size and SHA-256;
* the active pointer moves by compare-and-set on ``active_models.revision`` (a lightweight
  transaction, serial consistency LOCAL_SERIAL): ``UPDATE ... IF revision = <read>``, retried
  after a fresh read when another writer won;
* then a ``model_changes`` row tells running keyscore processes to re-read the key.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import random
import re
import time
import uuid
from typing import Any, Mapping, Optional, Union

from .export import FORMAT_VERSION, dumps

_IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,47}$")

#: Specs up to this many bytes of text are stored inline.
INLINE_MAX = 256 * 1024
#: The largest chunk of a compressed spec.
CHUNK_BYTES = 512 * 1024
#: The largest stored (compressed) spec by default; ``KEYSCORE_CQL_MAX_SPEC_BYTES`` changes it.
DEFAULT_MAX_SPEC_BYTES = 32 << 20
#: Buckets of the change feed's day partitions.
FEED_BUCKETS = 16
#: How many times a compare-and-set is tried against concurrent writers.
CAS_ATTEMPTS = 50


class VersionExistsError(ValueError):
    """The version is already stored for the key with another spec; versions are immutable."""


class UnknownVersionError(LookupError):
    """The version to activate is not stored for the key."""


class SpecTooLargeError(ValueError):
    """The spec is larger than the store accepts."""


class NothingToRollBackError(LookupError):
    """The key has no previous version to roll back to."""


class ConcurrentChangeError(RuntimeError):
    """Other writers kept changing the key while this change was tried; retry."""


def canonical_text(text: str) -> str:
    """The canonical text of a spec: the JSON with whitespace outside strings removed. Key
    order, number spelling and strings are kept, so keyscore computes the same text (and the
    same checksum) from any writer's spec."""
    out = []
    in_string = escaped = False
    for c in text:
        if in_string:
            out.append(c)
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
            out.append(c)
        elif c not in " \t\n\r":
            out.append(c)
    return "".join(out)


def feed_bucket(key: str) -> int:
    """The change-feed bucket keyscore uses for ``key``."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") % FEED_BUCKETS


def upload(
    session: Any,
    key: str,
    spec: Union[Mapping[str, Any], str],
    version: Optional[int] = None,
    keyspace: str = "keyscore",
    author: Optional[str] = None,
    max_spec_bytes: Optional[int] = None,
) -> int:
    """Stores ``spec`` as a new version of ``key`` and returns the version number.

    ``spec`` is a dict from :func:`keyscore_sklearn.export` or its JSON text. ``version=None``
    takes the newest stored version plus one (1 for a new key). A version is never
    overwritten: the insert is a lightweight transaction (``IF NOT EXISTS``). Uploading the
    same spec again under the same explicit version is a retry and returns it; another spec
    raises :class:`VersionExistsError`. A spec whose stored size exceeds ``max_spec_bytes``
    raises :class:`SpecTooLargeError`. ``author`` defaults to the spec's ``metadata.author``.

    Uploading does not activate the version; call :func:`activate` (or
    ``keyscore activate --key KEY --version N``) when you want it to score records.
    """
    ks = _keyspace(keyspace)
    _check_key(key)
    text = canonical_text(_spec_text(spec))
    if author is None:
        author = (json.loads(text).get("metadata") or {}).get("author")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 1):
        raise ValueError(f"version must be a positive integer, got {version!r}")
    limit = max_spec_bytes or int(os.environ.get("KEYSCORE_CQL_MAX_SPEC_BYTES") or DEFAULT_MAX_SPEC_BYTES)
    raw = text.encode("utf-8")
    sha = hashlib.sha256(raw).hexdigest()
    spec_id = None
    chunks = None
    if len(raw) <= INLINE_MAX:
        if len(raw) > limit:
            raise SpecTooLargeError(_too_large(len(raw), limit))
        encoding, inline = "json", text
    else:
        compressed = _zstd().ZstdCompressor(level=3).compress(raw)
        if len(compressed) > limit:
            raise SpecTooLargeError(_too_large(len(compressed), limit))
        encoding, inline = "zstd", None
        spec_id = uuid.uuid4()
        chunks = [compressed[i : i + CHUNK_BYTES] for i in range(0, len(compressed), CHUNK_BYTES)]
        insert_chunk = session.prepare(
            f"INSERT INTO {ks}.model_spec_chunks (spec_id, chunk, data) VALUES (?, ?, ?)"
        )
        for number, data in enumerate(chunks):
            session.execute(insert_chunk, (spec_id, number, data))
    number = version
    if number is None:
        rows = list(session.execute(f"SELECT version FROM {ks}.model_versions WHERE key = %s LIMIT 1", (key,)))
        number = _column(rows[0], "version", 0) + 1 if rows else 1
    insert = _lwt(
        session,
        f"INSERT INTO {ks}.model_versions"
        " (key, version, spec, encoding, spec_id, chunks, size, sha256, author, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS",
    )
    for _ in range(CAS_ATTEMPTS):
        values = (key, number, inline, encoding, spec_id, len(chunks) if chunks else None, len(raw), sha, author, _now())
        if _applied(session.execute(insert, values)):
            session.execute(f"INSERT INTO {ks}.active_models (key) VALUES (%s)", (key,))
            return number
        existing = list(
            session.execute(
                f"SELECT sha256 FROM {ks}.model_versions WHERE key = %s AND version = %s", (key, number)
            )
        )
        if existing and _column(existing[0], "sha256", 0) == sha and version is not None:
            return number  # a retry of the same upload
        if version is not None:
            if spec_id is not None:
                session.execute(f"DELETE FROM {ks}.model_spec_chunks WHERE spec_id = %s", (spec_id,))
            raise VersionExistsError(
                f"version {version} of key {key!r} already exists with another spec; versions are"
                " immutable, upload with another version (or version=None for the next one)"
            )
        number += 1
    raise ConcurrentChangeError(f"{CAS_ATTEMPTS} version numbers of {key!r} were taken meanwhile; retry")


def activate(
    session: Any, key: str, version: int, keyspace: str = "keyscore", actor: Optional[str] = None
) -> Optional[int]:
    """Makes ``version`` the active version of ``key`` and returns the version it replaced.

    The version must be stored (:class:`UnknownVersionError` otherwise). The pointer moves by
    compare-and-set on its revision, then a change-feed row tells every keyscore process.
    Activating the version that is already active changes nothing.
    """
    ks = _keyspace(keyspace)
    _check_key(key)
    if isinstance(version, bool) or not isinstance(version, int):
        raise ValueError(f"version must be an integer, got {version!r}")
    stored = session.execute(
        f"SELECT version FROM {ks}.model_versions WHERE key = %s AND version = %s", (key, version)
    )
    if not list(stored):
        raise UnknownVersionError(f"key {key!r} has no version {version}; upload it first")

    def decide(current_version, current_previous):
        if current_version == version:
            return None
        return version, current_version

    replaced = {}

    def remember(current_version, current_previous):
        choice = decide(current_version, current_previous)
        replaced["previous"] = current_version
        return choice

    _move_pointer(session, ks, key, remember, actor)
    return replaced.get("previous")


def rollback(session: Any, key: str, keyspace: str = "keyscore", actor: Optional[str] = None) -> int:
    """Re-activates the version that was active before the current one and returns it, like
    ``keyscore rollback``. :class:`NothingToRollBackError` when there is none."""
    ks = _keyspace(keyspace)
    _check_key(key)
    result = {}

    def decide(current_version, current_previous):
        if current_version is None or current_previous is None:
            raise NothingToRollBackError(f"key {key!r} has no previous version to roll back to")
        result["version"] = current_previous
        return current_previous, current_version

    _move_pointer(session, ks, key, decide, actor)
    return result["version"]


def _move_pointer(session: Any, ks: str, key: str, decide, actor: Optional[str]) -> None:
    read = session.prepare(f"SELECT version, previous_version, revision FROM {ks}.active_models WHERE key = ?")
    update = _lwt(
        session,
        f"UPDATE {ks}.active_models SET version = ?, previous_version = ?, revision = ?,"
        " changed_by = ?, changed_at = ? WHERE key = ? IF revision = ?",
    )
    feed = session.prepare(
        f"INSERT INTO {ks}.model_changes (day, bucket, changed_at, key, version, revision)"
        " VALUES (?, ?, ?, ?, ?, ?)"
    )
    who = actor or f"python:{os.environ.get('USER', 'unknown')}"
    for attempt in range(CAS_ATTEMPTS):
        rows = list(session.execute(read, (key,)))
        current_version = current_previous = current_revision = None
        if rows:
            current_version = _column(rows[0], "version", 0)
            current_previous = _column(rows[0], "previous_version", 1)
            current_revision = _column(rows[0], "revision", 2)
        choice = decide(current_version, current_previous)
        if choice is None:
            return
        new_version, new_previous = choice
        revision = (current_revision or 0) + 1
        now = _now()
        if _applied(session.execute(update, (new_version, new_previous, revision, who, now, key, current_revision))):
            session.execute(feed, (now.date(), feed_bucket(key), now, key, new_version, revision))
            return
        time.sleep((2 ** min(attempt, 6) + random.random() * 5) / 1000.0)
    raise ConcurrentChangeError(f"{key!r} changed {CAS_ATTEMPTS} times while this change was tried; retry")


def _lwt(session: Any, cql: str) -> Any:
    """A prepared conditional statement with serial consistency LOCAL_SERIAL."""
    from cassandra import ConsistencyLevel

    statement = session.prepare(cql)
    statement.serial_consistency_level = ConsistencyLevel.LOCAL_SERIAL
    return statement


def _zstd():
    try:
        import zstandard
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "specs over 256 KiB are stored compressed with zstd; pip install zstandard"
        ) from err
    return zstandard


def _too_large(size: int, limit: int) -> str:
    return (
        f"the spec is {size} bytes as stored, over the store's limit of {limit} bytes"
        " (KEYSCORE_CQL_MAX_SPEC_BYTES); make the model smaller or raise the limit"
    )


def _keyspace(keyspace: str) -> str:
    if not _IDENTIFIER.match(keyspace):
        raise ValueError(f"invalid keyspace name {keyspace!r}")
    return keyspace


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not key:
        raise ValueError("key must be a non-empty string")


def _spec_text(spec: Union[Mapping[str, Any], str]) -> str:
    parsed = json.loads(spec) if isinstance(spec, str) else spec
    if not isinstance(parsed, Mapping):
        raise ValueError("spec must be a JSON object")
    missing = [f for f in ("format_version", "features", "model", "output") if f not in parsed]
    if missing:
        raise ValueError(f"spec is missing {', '.join(missing)}; export it with keyscore_sklearn.export")
    if parsed["format_version"] != FORMAT_VERSION:
        raise ValueError(f"spec format_version {parsed['format_version']!r} is not {FORMAT_VERSION}")
    return spec if isinstance(spec, str) else dumps(spec)


def _column(row: Any, name: str, index: int) -> Any:
    if isinstance(row, Mapping):
        value = row[name]
    elif hasattr(row, name):
        value = getattr(row, name)
    else:
        value = row[index]
    return None if value is None else value


def _applied(result: Any) -> bool:
    applied = getattr(result, "was_applied", None)
    if applied is not None:
        return bool(applied)
    rows = list(result)  # a row factory without was_applied: the [applied] column comes first
    row = rows[0]
    return bool(row["[applied]"] if isinstance(row, Mapping) else row[0])


def _now() -> datetime.datetime:
    # Cassandra timestamps have millisecond resolution.
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)
