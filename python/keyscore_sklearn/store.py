"""Upload specs to keyscore's CQL store (ScyllaDB or Cassandra), activate and roll back, one key
at a time or many keys at once; and upload many keys to any store through the ``keyscore`` CLI.

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
* then a ``model_history`` row records the change for ``keyscore history``, and a
  ``model_changes`` row tells running keyscore processes to re-read the key.

Each operation of the protocol is written once, as a generator of the requests it sends
(:func:`_upload_steps`, :func:`_activate_steps`, :func:`_rollback_steps`): :func:`upload`,
:func:`activate` and :func:`rollback` run one with ``session.execute``; :func:`upload_many` and
:func:`activate_many` run many with ``session.execute_async``, a bounded number at a time.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import hashlib
import heapq
import itertools
import json
import os
import queue
import random
import re
import shutil
import subprocess
import tempfile
import time
import unicodedata
import uuid
from typing import (
    Any,
    Callable,
    Dict,
    Generator,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Tuple,
    Union,
)

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
#: The longest model key keyscore accepts, in bytes of UTF-8.
KEY_MAX_BYTES = 200
#: Operations :func:`upload_many` and :func:`activate_many` run at once by default.
DEFAULT_CONCURRENCY = 64


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


class KeyscoreCommandError(RuntimeError):
    """The ``keyscore`` command failed before it reported on the specs it was given."""


@dataclasses.dataclass
class BulkReport:
    """What :func:`upload_many`, :func:`activate_many` or :func:`upload_many_embedded` did, by key.

    ``stored`` maps each key to the version this call stored for it, ``activated`` each key to
    the version it made (or found) active, ``failures`` each key that failed to its reason (an
    item whose key cannot be read is named ``<item N>``, N counting from 0). A key stored but
    not activated is in ``stored`` and ``failures``. A key given more than once is written in
    the order given; ``stored`` and ``activated`` hold its last outcome, ``failures`` all of
    its reasons, joined by ``"; "``.
    """

    stored: Dict[str, int] = dataclasses.field(default_factory=dict)
    activated: Dict[str, int] = dataclasses.field(default_factory=dict)
    failures: Dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether nothing failed."""
        return not self.failures

    def fail(self, key: str, reason: str) -> None:
        """Records that ``key`` failed for ``reason``."""
        if key in self.failures:
            self.failures[key] += "; " + reason
        else:
            self.failures[key] = reason

    def __str__(self) -> str:
        lines = [f"{len(self.stored)} stored, {len(self.activated)} activated, {len(self.failures)} failed"]
        for key, reason in itertools.islice(self.failures.items(), 20):
            lines.append(f"  {key}: {reason}")
        if len(self.failures) > 20:
            lines.append(f"  ... and {len(self.failures) - 20} more")
        return "\n".join(lines)


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


# ---------------------------------------------------------------------------------------------
# One key at a time
# ---------------------------------------------------------------------------------------------


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
    Keys are 1 to 200 bytes without control characters, as keyscore's.

    Uploading does not activate the version; call :func:`activate` (or
    ``keyscore activate --key KEY --version N``) when you want it to score records.
    """
    ks = _keyspace(keyspace)
    item = _prepare_upload(key, spec, version, author, _spec_limit(max_spec_bytes))
    return _run(session, _upload_steps(_Statements(session, ks), item))


def activate(
    session: Any, key: str, version: int, keyspace: str = "keyscore", actor: Optional[str] = None
) -> Optional[int]:
    """Makes ``version`` the active version of ``key`` and returns the version it replaced.

    The version must be stored (:class:`UnknownVersionError` otherwise). The pointer moves by
    compare-and-set on its revision, then a change-feed row tells every keyscore process.
    Activating the version that is already active changes nothing (and returns it).
    """
    ks = _keyspace(keyspace)
    _check_key(key)
    _check_version(version, "version must be an integer")
    return _run(session, _activate_steps(_Statements(session, ks), key, version, _actor(actor)))


def rollback(session: Any, key: str, keyspace: str = "keyscore", actor: Optional[str] = None) -> int:
    """Re-activates the version that was active before the current one and returns it, like
    ``keyscore rollback``. :class:`NothingToRollBackError` when there is none."""
    ks = _keyspace(keyspace)
    _check_key(key)
    return _run(session, _rollback_steps(_Statements(session, ks), key, _actor(actor)))


# ---------------------------------------------------------------------------------------------
# Many keys at once
# ---------------------------------------------------------------------------------------------

#: An item of :func:`upload_many`: ``(key, spec)`` or ``(key, spec, version)``.
UploadItem = Union[Tuple[str, Union[Mapping[str, Any], str]], Tuple[str, Union[Mapping[str, Any], str], Optional[int]]]


def upload_many(
    session: Any,
    items: Iterable[UploadItem],
    keyspace: str = "keyscore",
    author: Optional[str] = None,
    max_spec_bytes: Optional[int] = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    activate: bool = False,
    actor: Optional[str] = None,
) -> BulkReport:
    """Stores many specs, ``concurrency`` keys at a time, and returns a :class:`BulkReport`.

    ``items`` yields ``(key, spec)`` or ``(key, spec, version)`` (spec a dict or JSON text,
    version as in :func:`upload`); it is read as the writes go, so it may be a generator over
    10^5 keys. Each spec is checked as :func:`upload` checks it before anything of it is
    written: a bad item is reported by key with its reason and the others still go in. Each
    key is written with :func:`upload`'s protocol (a retry with the same spec and version is a
    success), with at most ``concurrency`` requests in flight; items of one key run one after
    another, in order. With ``activate=True`` each stored version is then activated as
    :func:`activate` does (``actor`` names the writer in ``active_models.changed_by``).

    Raises only for what concerns every item (an invalid keyspace, statements the store
    refuses to prepare); anything else, database errors included, is a failure of its key.
    """
    ks = _keyspace(keyspace)
    _check_concurrency(concurrency)
    limit = _spec_limit(max_spec_bytes)
    who = _actor(actor)
    statements = _Statements(session, ks)
    statements.prepare_all(_UPLOAD_STATEMENTS + (_ACTIVATE_STATEMENTS if activate else ()))
    report = BulkReport()

    def operations() -> Iterator[Tuple[str, Generator]]:
        for index, item in enumerate(items):
            name = _item_name(index, item)
            try:
                key, spec, version = _upload_item(item)
                prepared = _prepare_upload(key, spec, version, author, limit)
            except _ITEM_ERRORS as err:
                report.fail(name, _reason(err))
                continue
            yield key, _upload_and_activate_steps(statements, prepared, activate, who)

    def done(key: str, outcome: Any, error: Optional[BaseException]) -> None:
        if isinstance(error, _NotActivated):
            report.stored[key] = error.version
            report.fail(key, f"stored as version {error.version} but not activated: {_reason(error.cause)}")
        elif error is not None:
            report.fail(key, _reason(error))
        else:
            report.stored[key] = outcome
            if activate:
                report.activated[key] = outcome

    _run_concurrently(session, operations(), concurrency, done)
    return report


def activate_many(
    session: Any,
    versions: Union[Mapping[str, int], Iterable[Tuple[str, int]]],
    keyspace: str = "keyscore",
    actor: Optional[str] = None,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> BulkReport:
    """Activates many versions, ``concurrency`` keys at a time, as :func:`activate` does each,
    and returns a :class:`BulkReport` (``activated`` and ``failures``; ``stored`` stays empty).

    ``versions`` maps keys to versions, or yields ``(key, version)`` pairs. A version that is
    not stored is reported by key (:class:`UnknownVersionError`'s message); the others are
    activated. A key already at its version is left as it is (no new revision, no feed row), so
    running the same call again changes nothing.
    """
    ks = _keyspace(keyspace)
    _check_concurrency(concurrency)
    who = _actor(actor)
    statements = _Statements(session, ks)
    statements.prepare_all(_ACTIVATE_STATEMENTS)
    pairs = versions.items() if isinstance(versions, Mapping) else versions
    report = BulkReport()

    def operations() -> Iterator[Tuple[str, Generator]]:
        for index, item in enumerate(pairs):
            name = _item_name(index, item)
            try:
                if not isinstance(item, (tuple, list)) or len(item) != 2:
                    raise ValueError("expected a (key, version) pair")
                key, version = item
                _check_key(key)
                _check_version(version, "version must be an integer")
            except _ITEM_ERRORS as err:
                report.fail(name, _reason(err))
                continue
            yield key, _activate_steps(statements, key, version, who, returns_version=True)

    def done(key: str, outcome: Any, error: Optional[BaseException]) -> None:
        if error is not None:
            report.fail(key, _reason(error))
        else:
            report.activated[key] = outcome

    _run_concurrently(session, operations(), concurrency, done)
    return report


def upload_many_embedded(
    store: Union[str, "os.PathLike[str]"],
    items: Iterable[UploadItem],
    activate: bool = False,
    keyscore_bin: str = "keyscore",
    timeout: Optional[float] = None,
) -> BulkReport:
    """Stores many specs with the ``keyscore`` command and returns a :class:`BulkReport`: for
    the embedded store (``store`` a SQLite file path or ``sqlite://PATH``), or any store URL
    keyscore takes.

    ``items`` are as for :func:`upload_many` and are checked the same way first (bad ones are
    reported by key and not sent). The others are written to a JSON-lines file and stored by
    ``keyscore --store URL upload --jsonl FILE --report REPORT [--activate]``, which checks
    them again (building each model: a spec keyscore cannot score is refused by key here too)
    and stores them in transactions of 10,000. The store must exist (``keyscore --store URL
    init``). ``keyscore_bin`` is the command's name on ``PATH`` or its path (FileNotFoundError
    naming it when there is none); ``timeout`` (seconds) bounds the run.
    Raises :class:`KeyscoreCommandError` with keyscore's message when it stored nothing and
    reported no spec (a store it cannot open, for one).
    """
    path = os.fspath(store)
    url = path if "://" in path else f"sqlite://{path}"
    binary = _find_binary(keyscore_bin)
    report = BulkReport()
    with tempfile.TemporaryDirectory(prefix="keyscore-upload-") as tmp:
        specs_path = os.path.join(tmp, "specs.jsonl")
        report_path = os.path.join(tmp, "report.jsonl")
        sent: List[str] = []
        with open(specs_path, "w", encoding="utf-8") as out:
            for index, item in enumerate(items):
                name = _item_name(index, item)
                try:
                    key, spec, version = _upload_item(item)
                    _check_key(key)
                    _check_version(version, "version must be a positive integer", positive=True, optional=True)
                    text, _ = _checked_spec(spec)
                except _ITEM_ERRORS as err:
                    report.fail(name, _reason(err))
                    continue
                line = '{"key":' + json.dumps(key) + ',"spec":' + canonical_text(text)
                if version is not None:
                    line += ',"version":' + str(version)
                out.write(line + "}\n")
                sent.append(key)
        if not sent:
            return report
        command = [binary, "--store", url, "upload", "--jsonl", specs_path, "--report", report_path]
        if activate:
            command.append("--activate")
        run = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        outcomes = []
        if os.path.exists(report_path):
            with open(report_path, encoding="utf-8") as f:
                outcomes = [json.loads(line) for line in f if line.strip()]
    summary = _SUMMARY.search(run.stdout)
    if not outcomes:
        raise KeyscoreCommandError(
            f"{binary} upload stored nothing (exit status {run.returncode}): "
            f"{(run.stderr or run.stdout).strip() or 'no output'}"
        )
    for outcome in outcomes:
        key = outcome["key"]
        version = outcome.get("version")
        error = outcome.get("error")
        if version is not None:
            report.stored[key] = version
            if outcome.get("activated"):
                report.activated[key] = version
            elif error is not None:
                report.fail(key, f"stored as version {version} but not activated: {error}")
        elif error is not None:
            report.fail(key, error)
    if summary is None or len(outcomes) < len(sent):
        # keyscore stopped part way: what it did not report was not stored.
        why = (run.stderr.strip().splitlines() or ["no message"])[-1]
        for key in sent[len(outcomes) :]:
            report.fail(key, f"not stored: keyscore upload stopped ({why})")
    elif int(summary.group("stored")) != sum(1 for o in outcomes if o.get("version") is not None):
        raise KeyscoreCommandError(
            f"{binary} upload reported {summary.group('stored')} stored but its report file lists"
            f" another number; its output:\n{run.stdout}{run.stderr}"
        )
    return report


#: The summary line of ``keyscore upload --jsonl``.
_SUMMARY = re.compile(
    r"uploaded (?P<stored>\d+) of (?P<read>\d+) specs(?:, (?P<activated>\d+) activated)?; (?P<refused>\d+) refused"
)


# ---------------------------------------------------------------------------------------------
# The protocol, as generators of requests
# ---------------------------------------------------------------------------------------------

#: A request an operation sends: a prepared statement and its values.
_Request = Tuple[Any, Tuple[Any, ...]]


class _Pause:
    """What an operation yields to wait ``seconds`` before its next request."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float):
        self.seconds = seconds


_STATEMENTS = {
    "insert_chunk": ("INSERT INTO {ks}.model_spec_chunks (spec_id, chunk, data) VALUES (?, ?, ?)", False),
    "delete_chunks": ("DELETE FROM {ks}.model_spec_chunks WHERE spec_id = ?", False),
    "newest_version": ("SELECT version FROM {ks}.model_versions WHERE key = ? LIMIT 1", False),
    "insert_version": (
        "INSERT INTO {ks}.model_versions"
        " (key, version, spec, encoding, spec_id, chunks, size, sha256, author, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS",
        True,
    ),
    "version_sha": ("SELECT sha256 FROM {ks}.model_versions WHERE key = ? AND version = ?", False),
    "insert_key": ("INSERT INTO {ks}.active_models (key) VALUES (?)", False),
    "read_pointer": ("SELECT version, previous_version, revision FROM {ks}.active_models WHERE key = ?", False),
    "move_pointer": (
        "UPDATE {ks}.active_models SET version = ?, previous_version = ?, revision = ?,"
        " changed_by = ?, changed_at = ? WHERE key = ? IF revision = ?",
        True,
    ),
    "insert_change": (
        "INSERT INTO {ks}.model_changes (day, bucket, changed_at, key, version, revision)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        False,
    ),
    "insert_history": (
        "INSERT INTO {ks}.model_history (key, pointer, revision, action, version, previous_version,"
        " changed_by, changed_at) VALUES (?, 'active', ?, ?, ?, ?, ?, ?)",
        False,
    ),
}
_UPLOAD_STATEMENTS = ("insert_chunk", "delete_chunks", "newest_version", "insert_version", "version_sha", "insert_key")
_ACTIVATE_STATEMENTS = ("version_sha", "read_pointer", "move_pointer", "insert_change", "insert_history")


class _Statements:
    """The protocol's statements for one session and keyspace, each prepared on first use
    (conditional ones with serial consistency LOCAL_SERIAL)."""

    def __init__(self, session: Any, ks: str):
        self._session = session
        self._ks = ks
        self._prepared: Dict[str, Any] = {}

    def get(self, name: str) -> Any:
        statement = self._prepared.get(name)
        if statement is None:
            cql, conditional = _STATEMENTS[name]
            cql = cql.format(ks=self._ks)
            statement = _lwt(self._session, cql) if conditional else self._session.prepare(cql)
            self._prepared[name] = statement
        return statement

    def prepare_all(self, names: Iterable[str]) -> None:
        for name in names:
            self.get(name)


@dataclasses.dataclass
class _Upload:
    """A checked spec, encoded as the store keeps it."""

    key: str
    version: Optional[int]
    text: str
    sha: str
    author: Optional[str]
    encoding: str
    inline: Optional[str]
    spec_id: Optional[uuid.UUID]
    chunks: Optional[List[bytes]]


def _prepare_upload(
    key: Any, spec: Any, version: Any, author: Optional[str], limit: int
) -> _Upload:
    """Checks an upload and encodes its spec; touches no database. Raises ValueError (or
    SpecTooLargeError) naming what is wrong."""
    _check_key(key)
    _check_version(version, "version must be a positive integer", positive=True, optional=True)
    text, parsed = _checked_spec(spec)
    text = canonical_text(text)
    if author is None:
        metadata = parsed.get("metadata")
        author = metadata.get("author") if isinstance(metadata, Mapping) else None
    raw = text.encode("utf-8")
    sha = hashlib.sha256(raw).hexdigest()
    if len(raw) <= INLINE_MAX:
        if len(raw) > limit:
            raise SpecTooLargeError(_too_large(len(raw), limit))
        return _Upload(key, version, text, sha, author, "json", text, None, None)
    compressed = _zstd().ZstdCompressor(level=3).compress(raw)
    if len(compressed) > limit:
        raise SpecTooLargeError(_too_large(len(compressed), limit))
    chunks = [compressed[i : i + CHUNK_BYTES] for i in range(0, len(compressed), CHUNK_BYTES)]
    return _Upload(key, version, text, sha, author, "zstd", None, uuid.uuid4(), chunks)


def _upload_steps(st: _Statements, item: _Upload) -> Generator[_Request, Any, int]:
    """Stores ``item``: its chunks, then its version row (``IF NOT EXISTS``), then the bare key
    in ``active_models``. Returns the version stored."""
    key = item.key
    if item.chunks:
        for number, data in enumerate(item.chunks):
            yield st.get("insert_chunk"), (item.spec_id, number, data)
    number = item.version
    if number is None:
        rows = list((yield st.get("newest_version"), (key,)))
        number = _column(rows[0], "version", 0) + 1 if rows else 1
    chunk_count = len(item.chunks) if item.chunks else None
    size = len(item.text.encode("utf-8"))
    for _ in range(CAS_ATTEMPTS):
        values = (key, number, item.inline, item.encoding, item.spec_id, chunk_count, size, item.sha, item.author, _now())
        if _applied((yield st.get("insert_version"), values)):
            yield st.get("insert_key"), (key,)
            return number
        if item.version is None:
            number += 1  # another writer took this number meanwhile
            continue
        existing = list((yield st.get("version_sha"), (key, number)))
        if item.spec_id is not None:
            # This attempt's chunks: the stored row, if any, names other ones.
            yield st.get("delete_chunks"), (item.spec_id,)
        if existing and _column(existing[0], "sha256", 0) == item.sha:
            yield st.get("insert_key"), (key,)  # a retry of the same upload
            return number
        raise VersionExistsError(
            f"version {item.version} of key {key!r} already exists with another spec; versions are"
            " immutable, upload with another version (or version=None for the next one)"
        )
    raise ConcurrentChangeError(f"{CAS_ATTEMPTS} version numbers of {key!r} were taken meanwhile; retry")


def _activate_steps(
    st: _Statements, key: str, version: int, who: str, check_stored: bool = True, returns_version: bool = False
) -> Generator[Any, Any, Optional[int]]:
    """Makes ``version`` active for ``key`` (checking first that it is stored, unless
    ``check_stored`` is False). Returns the version it replaced, or ``version`` itself with
    ``returns_version``."""
    if check_stored:
        stored = list((yield st.get("version_sha"), (key, version)))
        if not stored:
            raise UnknownVersionError(f"key {key!r} has no version {version}; upload it first")

    def decide(current_version, current_previous):
        if current_version == version:
            return None
        return version, current_version

    replaced = yield from _pointer_steps(st, key, decide, who, "activate")
    return version if returns_version else replaced


def _rollback_steps(st: _Statements, key: str, who: str) -> Generator[Any, Any, int]:
    """Re-activates the previous version of ``key`` and returns it."""
    result = {}

    def decide(current_version, current_previous):
        if current_version is None or current_previous is None:
            raise NothingToRollBackError(f"key {key!r} has no previous version to roll back to")
        result["version"] = current_previous
        return current_previous, current_version

    yield from _pointer_steps(st, key, decide, who, "rollback")
    return result["version"]


def _pointer_steps(st: _Statements, key: str, decide, who: str, action: str) -> Generator[Any, Any, Optional[int]]:
    """Moves the active pointer of ``key`` by compare-and-set to what ``decide(current version,
    current previous version)`` returns (``(version, previous)``, or None to leave it), reading
    again after a lost race, then writes the key's history row (``action``: activate or
    rollback) and the feed row. Returns the version it read last."""
    for attempt in range(CAS_ATTEMPTS):
        rows = list((yield st.get("read_pointer"), (key,)))
        current_version = current_previous = current_revision = None
        if rows:
            current_version = _column(rows[0], "version", 0)
            current_previous = _column(rows[0], "previous_version", 1)
            current_revision = _column(rows[0], "revision", 2)
        choice = decide(current_version, current_previous)
        if choice is None:
            return current_version
        new_version, new_previous = choice
        revision = (current_revision or 0) + 1
        now = _now()
        values = (new_version, new_previous, revision, who, now, key, current_revision)
        if _applied((yield st.get("move_pointer"), values)):
            yield st.get("insert_history"), (key, revision, action, new_version, current_version, who, now)
            yield st.get("insert_change"), (now.date(), feed_bucket(key), now, key, new_version, revision)
            return current_version
        yield _Pause((2 ** min(attempt, 6) + random.random() * 5) / 1000.0)
    raise ConcurrentChangeError(f"{key!r} changed {CAS_ATTEMPTS} times while this change was tried; retry")


class _NotActivated(Exception):
    """The version was stored, then activating it failed with ``cause``."""

    def __init__(self, version: int, cause: BaseException):
        super().__init__(version, cause)
        self.version = version
        self.cause = cause


def _upload_and_activate_steps(
    st: _Statements, item: _Upload, activate: bool, who: str
) -> Generator[Any, Any, int]:
    """Uploads ``item`` and, with ``activate``, activates the version stored."""
    version = yield from _upload_steps(st, item)
    if activate:
        try:
            yield from _activate_steps(st, item.key, version, who, check_stored=False)
        except Exception as err:
            raise _NotActivated(version, err) from err
    return version


# ---------------------------------------------------------------------------------------------
# Running operations
# ---------------------------------------------------------------------------------------------


def _run(session: Any, steps: Generator) -> Any:
    """Runs one operation with ``session.execute``, request after request; returns its result."""
    reply = None
    try:
        while True:
            request = steps.send(reply)
            if isinstance(request, _Pause):
                time.sleep(request.seconds)
                reply = None
            else:
                reply = session.execute(*request)
    except StopIteration as finished:
        return finished.value


def _run_concurrently(
    session: Any,
    operations: Iterator[Tuple[str, Generator]],
    concurrency: int,
    done: Callable[[str, Any, Optional[BaseException]], None],
) -> None:
    """Runs ``(key, operation)`` pairs with ``session.execute_async``: at most ``concurrency``
    operations at once (each has at most one request in flight), taken from ``operations``
    only as others finish, and one operation per key at a time, in the order given. Calls
    ``done(key, result, None)`` or ``done(key, None, error)`` for each, on this thread, which
    also runs every operation's code; the driver's threads only queue replies."""
    replies: "queue.Queue[Tuple[str, Generator, Any, Optional[BaseException]]]" = queue.Queue()
    paused: List[Tuple[float, int, str, Generator]] = []
    order = itertools.count()
    waiting: Dict[str, collections.deque] = {}
    state = {"running": 0, "waiting": 0}

    def finish(key: str, result: Any, error: Optional[BaseException]) -> None:
        done(key, result, error)
        queued = waiting.get(key)
        if queued:
            state["waiting"] -= 1
            steps = queued.popleft()
            if not queued:
                del waiting[key]
            advance(key, steps, None, None)  # the key's next operation takes the slot
        else:
            waiting.pop(key, None)
            state["running"] -= 1
            busy.discard(key)

    def advance(key: str, steps: Generator, reply: Any, error: Optional[BaseException]) -> None:
        try:
            request = steps.throw(error) if error is not None else steps.send(reply)
        except StopIteration as finished:
            finish(key, finished.value, None)
            return
        except Exception as err:
            finish(key, None, err)
            return
        if isinstance(request, _Pause):
            heapq.heappush(paused, (time.monotonic() + request.seconds, next(order), key, steps))
            return
        try:
            future = session.execute_async(*request)
        except Exception as err:
            steps.close()
            finish(key, None, err)
            return
        future.add_callbacks(
            callback=lambda _rows: replies.put((key, steps, future, None)),
            errback=lambda err: replies.put((key, steps, None, err)),
        )

    busy = set()
    source = iter(operations)
    exhausted = False
    while True:
        while not exhausted and state["running"] + state["waiting"] < concurrency:
            try:
                key, steps = next(source)
            except StopIteration:
                exhausted = True
                break
            if key in busy:
                waiting.setdefault(key, collections.deque()).append(steps)
                state["waiting"] += 1
            else:
                busy.add(key)
                state["running"] += 1
                advance(key, steps, None, None)
        if exhausted and state["running"] == 0:
            return
        if state["running"] == 0:
            continue  # every operation taken so far finished without a request
        timeout = max(0.0, paused[0][0] - time.monotonic()) if paused else None
        try:
            key, steps, future, error = replies.get(timeout=timeout)
        except queue.Empty:
            pass
        else:
            advance(key, steps, future.result() if error is None else None, error)
        now = time.monotonic()
        while paused and paused[0][0] <= now:
            _, _, key, steps = heapq.heappop(paused)
            advance(key, steps, None, None)


# ---------------------------------------------------------------------------------------------
# Checks and helpers
# ---------------------------------------------------------------------------------------------

#: What an item's checks raise; such an item is reported by key, not raised.
_ITEM_ERRORS = (ValueError, TypeError, LookupError, ImportError)


def _upload_item(item: Any) -> Tuple[Any, Any, Any]:
    """``(key, spec, version)`` from an item of :func:`upload_many`."""
    if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
        raise ValueError("expected a (key, spec) or (key, spec, version) tuple")
    key, spec, version = item if len(item) == 3 else (item[0], item[1], None)
    return key, spec, version


def _item_name(index: int, item: Any) -> str:
    """The name a failed item is reported under: its key when it has one."""
    if isinstance(item, (tuple, list)) and item and isinstance(item[0], str) and item[0]:
        return item[0]
    return f"<item {index}>"


def _reason(err: BaseException) -> str:
    if isinstance(err, (ValueError, LookupError, ConcurrentChangeError)) and str(err):
        return str(err)
    return f"{type(err).__name__}: {err}"


def _check_concurrency(concurrency: Any) -> None:
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be a positive integer, got {concurrency!r}")


def _check_version(version: Any, message: str, positive: bool = False, optional: bool = False) -> None:
    if version is None and optional:
        return
    if isinstance(version, bool) or not isinstance(version, int) or (positive and version < 1):
        raise ValueError(f"{message}, got {version!r}")


def _spec_limit(max_spec_bytes: Optional[int]) -> int:
    return max_spec_bytes or int(os.environ.get("KEYSCORE_CQL_MAX_SPEC_BYTES") or DEFAULT_MAX_SPEC_BYTES)


def _actor(actor: Optional[str]) -> str:
    return actor or f"python:{os.environ.get('USER', 'unknown')}"


def _find_binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(
            f"the keyscore command {name!r} was not found (not an executable file, nor on PATH);"
            " install keyscore or pass keyscore_bin='/path/to/keyscore'"
        )
    return found


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
    if not isinstance(keyspace, str) or not _IDENTIFIER.match(keyspace):
        raise ValueError(f"invalid keyspace name {keyspace!r}")
    return keyspace


def _check_key(key: Any) -> None:
    """Refuses what keyscore refuses as a key: empty, over 200 bytes, control characters."""
    if not isinstance(key, str) or not key:
        raise ValueError("key must be a non-empty string")
    if len(key.encode("utf-8")) > KEY_MAX_BYTES or any(unicodedata.category(c) == "Cc" for c in key):
        raise ValueError(
            f"invalid model key {key!r}: use 1 to {KEY_MAX_BYTES} bytes without control characters"
        )


def _checked_spec(spec: Union[Mapping[str, Any], str]) -> Tuple[str, Mapping[str, Any]]:
    """The spec's JSON text and the spec, after the checks every upload makes."""
    parsed = json.loads(spec) if isinstance(spec, str) else spec
    if not isinstance(parsed, Mapping):
        raise ValueError("spec must be a JSON object")
    missing = [f for f in ("format_version", "features", "model", "output") if f not in parsed]
    if missing:
        raise ValueError(f"spec is missing {', '.join(missing)}; export it with keyscore_sklearn.export")
    if parsed["format_version"] != FORMAT_VERSION:
        raise ValueError(f"spec format_version {parsed['format_version']!r} is not {FORMAT_VERSION}")
    return (spec if isinstance(spec, str) else dumps(spec)), parsed


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
