"""Upload specs to keyscore's CQL store (ScyllaDB or Cassandra) and activate them.

Works with any cassandra-driver ``Session`` (``session.execute(query, params)``);
:func:`keyscore_sklearn.connection.connect` opens one with keyscore's settings (TLS, local
datacenter, login from the same ``KEYSCORE_CQL_*`` environment variables). Writes the tables of
keyscore's ``cql/`` schema: ``model_versions`` (immutable versions), ``active_models`` (the
active pointer) and ``model_changes`` (the change feed keyscore polls).
"""

from __future__ import annotations

import datetime
import json
import re
from typing import Any, Mapping, Optional, Union

from .export import FORMAT_VERSION, dumps

_IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,47}$")


class VersionExistsError(ValueError):
    """The version is already stored for the key; versions are immutable."""


class UnknownVersionError(LookupError):
    """The version to activate is not stored for the key."""


def upload(
    session: Any,
    key: str,
    spec: Union[Mapping[str, Any], str],
    version: Optional[int] = None,
    keyspace: str = "keyscore",
    author: Optional[str] = None,
) -> int:
    """Stores ``spec`` as a new version of ``key`` and returns the version number.

    ``spec`` is a dict from :func:`keyscore_sklearn.export` or its JSON text. ``version=None``
    takes the newest stored version plus one (1 for a new key). An existing version is never
    overwritten: the insert is a lightweight transaction (``IF NOT EXISTS``) and
    :class:`VersionExistsError` is raised when it does not apply. ``author`` defaults to the
    spec's ``metadata.author``.

    Uploading does not activate the version; call :func:`activate` (or
    ``keyscore activate --key KEY --version N``) when you want it to score records.
    """
    ks = _keyspace(keyspace)
    _check_key(key)
    text = _spec_text(spec)
    if author is None:
        author = (json.loads(text).get("metadata") or {}).get("author")
    if version is None:
        rows = list(
            session.execute(f"SELECT version FROM {ks}.model_versions WHERE key = %s LIMIT 1", (key,))
        )
        version = _first_version(rows) + 1 if rows else 1
    elif isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"version must be a positive integer, got {version!r}")
    result = session.execute(
        f"INSERT INTO {ks}.model_versions (key, version, spec, author, created_at)"
        " VALUES (%s, %s, %s, %s, %s) IF NOT EXISTS",
        (key, version, text, author, _now()),
    )
    if not _applied(result):
        raise VersionExistsError(
            f"version {version} of key {key!r} already exists; versions are immutable, upload"
            " with another version (or version=None for the next one)"
        )
    return version


def activate(session: Any, key: str, version: int, keyspace: str = "keyscore") -> Optional[int]:
    """Makes ``version`` the active version of ``key`` and returns the version it replaced.

    The version must be stored (:class:`UnknownVersionError` otherwise). One logged batch
    updates ``active_models`` (remembering the replaced version for rollback) and appends to
    the ``model_changes`` feed, so every keyscore process picks up the change. Activating the
    version that is already active changes nothing.
    """
    ks = _keyspace(keyspace)
    _check_key(key)
    if isinstance(version, bool) or not isinstance(version, int):
        raise ValueError(f"version must be an integer, got {version!r}")
    stored = session.execute(
        f"SELECT version FROM {ks}.model_versions WHERE key = %s AND version = %s",
        (key, version),
    )
    if not list(stored):
        raise UnknownVersionError(f"key {key!r} has no version {version}; upload it first")
    rows = list(session.execute(f"SELECT version FROM {ks}.active_models WHERE key = %s", (key,)))
    previous = _first_version(rows) if rows else None
    if previous == version:
        return previous
    now = _now()
    session.execute(
        "BEGIN BATCH"
        f" UPDATE {ks}.active_models SET version = %s, previous_version = %s WHERE key = %s;"
        f" INSERT INTO {ks}.model_changes (day, changed_at, key, version) VALUES (%s, %s, %s, %s);"
        " APPLY BATCH",
        (version, previous, key, now.strftime("%Y-%m-%d"), now, key, version),
    )
    return previous


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


def _first_version(rows: list) -> Optional[int]:
    row = rows[0]
    value = row.version if hasattr(row, "version") else row[0]
    return None if value is None else int(value)


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
