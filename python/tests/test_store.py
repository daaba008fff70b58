"""The parts of the write protocol that need no database: canonical text, feed buckets, the
checks made before anything is written, and the bulk functions' item parsing, reports and
bounded concurrency (with an in-memory fake session). The protocol itself runs against a CQL
node in the Rust integration tests (tests/cql_data_scientist.rs, tests/cql_writers.rs,
tests/cql_python_bulk.rs, which also runs the embedded path with the keyscore binary)."""

import hashlib
import json
import random
import threading

import pytest
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge

import keyscore_sklearn
from keyscore_sklearn import (
    SpecTooLargeError,
    activate_many,
    canonical_text,
    upload,
    upload_many,
    upload_many_embedded,
)
from keyscore_sklearn.store import feed_bucket


class NoSession:
    """A session that must not be used: the call is refused before reaching the database."""

    def __getattr__(self, name):
        raise AssertionError(f"the database was used ({name}) for a refused call")


@pytest.fixture
def spec():
    d = load_diabetes()
    return keyscore_sklearn.export(Ridge().fit(d.data, d.target), list(d.feature_names), author="ana")


def test_canonical_text_matches_keyscore():
    # The same case as keyscore's model::tests::canonical_text_drops_whitespace_outside_strings_only.
    pretty = '{\n  "features": ["a b", "c\\"\\t d"],\r\n\t"x": 1.000 , "é": " "\n}\n'
    assert canonical_text(pretty) == '{"features":["a b","c\\"\\t d"],"x":1.000,"é":" "}'
    assert json.loads(canonical_text(pretty)) == json.loads(pretty)


def test_the_checksum_keyscore_stamps_is_the_canonical_texts(spec):
    pretty = json.dumps(spec, indent=2)
    compact = keyscore_sklearn.dumps(spec)
    assert canonical_text(pretty) == canonical_text(compact)
    assert hashlib.sha256(canonical_text(pretty).encode()).hexdigest()[:16] == hashlib.sha256(compact.encode()).hexdigest()[:16]


def test_feed_buckets_match_keyscore():
    # keyscore's store::cql::feed::tests::buckets_are_stable_and_spread has paris in bucket 4.
    assert feed_bucket("paris") == 4
    assert all(0 <= feed_bucket(f"key-{i}") < 16 for i in range(1000))


def test_upload_refuses_what_is_not_a_spec_before_writing():
    with pytest.raises(ValueError, match="missing"):
        upload(NoSession(), "paris", {"features": []}, keyspace="ks")
    with pytest.raises(ValueError, match="invalid keyspace"):
        upload(NoSession(), "paris", {}, keyspace="ks; DROP TABLE x")
    with pytest.raises(ValueError, match="positive integer"):
        upload(NoSession(), "paris", {"format_version": 1, "features": [], "model": {}, "output": {}}, version=0, keyspace="ks")


def test_upload_refuses_a_spec_over_the_limit_naming_size_and_limit(spec):
    size = len(keyscore_sklearn.dumps(spec).encode())
    with pytest.raises(SpecTooLargeError, match=rf"{size} bytes .* limit of 100 bytes"):
        upload(NoSession(), "paris", spec, keyspace="ks", max_spec_bytes=100)


# ---------------------------------------------------------------------------------------------
# upload_many, activate_many and upload_many_embedded: the checks made before writing, item
# parsing and the bounded concurrent runner, with a fake session. The real protocol against a
# CQL node, and the embedded path with the keyscore binary, are in tests/cql_python_bulk.rs.
# ---------------------------------------------------------------------------------------------


def linear(intercept, **metadata):
    spec = {
        "format_version": 1,
        "features": ["a", "b"],
        "model": {"kind": "linear", "coefficients": [1.0, 2.0], "intercept": intercept},
        "output": {"type": "regression"},
    }
    if metadata:
        spec["metadata"] = metadata
    return spec


class FakeStatement:
    def __init__(self, cql):
        self.cql = cql
        self.serial_consistency_level = None


class FakeResult(list):
    def __init__(self, rows=(), applied=None):
        super().__init__(rows)
        if applied is not None:
            self.was_applied = applied


class FakeFuture:
    def __init__(self):
        self._callbacks = None
        self._outcome = None
        self._lock = threading.Lock()

    def add_callbacks(self, callback, errback):
        with self._lock:
            if self._outcome is None:
                self._callbacks = (callback, errback)
                return
        self._call(callback, errback)

    def complete(self, result=None, error=None):
        with self._lock:
            self._outcome = (result, error)
            callbacks = self._callbacks
        if callbacks:
            self._call(*callbacks)

    def _call(self, callback, errback):
        result, error = self._outcome
        if error is None:
            callback(list(result))
        else:
            errback(error)

    def result(self):
        result, error = self._outcome
        if error is not None:
            raise error
        return result


class MemorySession:
    """Runs the store's statements on dicts. ``execute_async`` requests complete on another
    thread, in random order, counting how many are in flight at once. A key in ``broken`` makes
    its version insert fail as a driver error would."""

    def __init__(self, broken=(), seed=0):
        self.versions = {}  # (key, version) -> row dict
        self.chunks = {}  # (spec_id, n) -> bytes
        self.pointers = {}  # key -> {"version", "previous_version", "revision"}
        self.feed = []  # (key, version, revision)
        self.history = []  # (key, revision, action, version, previous)
        self.broken = set(broken)
        self.keys_written = set()
        self.max_in_flight = 0
        self._pending = []
        self._cond = threading.Condition()
        self._rng = random.Random(seed)
        self._closed = False
        self._worker = threading.Thread(target=self._complete_pending, daemon=True)
        self._worker.start()

    def prepare(self, cql):
        return FakeStatement(cql)

    def execute(self, statement, values=()):
        return self._apply(statement.cql, values)

    def execute_async(self, statement, values=()):
        future = FakeFuture()
        with self._cond:
            self._pending.append((future, statement.cql, values))
            self.max_in_flight = max(self.max_in_flight, len(self._pending))
            self._cond.notify()
        return future

    def close(self):
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._worker.join()

    def _complete_pending(self):
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                # Let more requests arrive, then answer one of them, not the oldest.
                self._cond.wait(0.0005)
                future, cql, values = self._pending.pop(self._rng.randrange(len(self._pending)))
            try:
                result, error = self._apply(cql, values), None
            except Exception as err:  # a driver error
                result, error = None, err
            future.complete(result, error)

    def _apply(self, cql, values):
        if cql.startswith("INSERT INTO ks.model_spec_chunks"):
            spec_id, n, data = values
            self.chunks[(spec_id, n)] = data
        elif cql.startswith("DELETE FROM ks.model_spec_chunks"):
            for k in [k for k in self.chunks if k[0] == values[0]]:
                del self.chunks[k]
        elif cql.startswith("SELECT version FROM ks.model_versions"):
            stored = [v for (k, v) in self.versions if k == values[0]]
            return FakeResult([{"version": max(stored)}] if stored else [])
        elif cql.startswith("INSERT INTO ks.model_versions"):
            key, version, spec, encoding, spec_id, chunks, size, sha, author, _ = values
            self.keys_written.add(key)
            if key in self.broken:
                raise RuntimeError("OperationTimedOut: the node did not answer")
            if (key, version) in self.versions:
                return FakeResult([{"[applied]": False}], applied=False)
            self.versions[(key, version)] = {"spec": spec, "encoding": encoding, "spec_id": spec_id,
                                             "chunks": chunks, "size": size, "sha256": sha, "author": author}
            return FakeResult([{"[applied]": True}], applied=True)
        elif cql.startswith("SELECT sha256 FROM ks.model_versions"):
            row = self.versions.get(tuple(values))
            return FakeResult([{"sha256": row["sha256"]}] if row else [])
        elif cql.startswith("INSERT INTO ks.active_models"):
            self.pointers.setdefault(values[0], {"version": None, "previous_version": None, "revision": None})
        elif cql.startswith("SELECT version, previous_version, revision FROM ks.active_models"):
            row = self.pointers.get(values[0])
            return FakeResult([dict(row)] if row else [])
        elif cql.startswith("UPDATE ks.active_models"):
            version, previous, revision, _who, _at, key, expected = values
            row = self.pointers.setdefault(key, {"version": None, "previous_version": None, "revision": None})
            if row["revision"] != expected:
                return FakeResult([{"[applied]": False}], applied=False)
            row.update(version=version, previous_version=previous, revision=revision)
            return FakeResult([{"[applied]": True}], applied=True)
        elif cql.startswith("INSERT INTO ks.model_changes"):
            _day, _bucket, _at, key, version, revision = values
            self.feed.append((key, version, revision))
        elif cql.startswith("INSERT INTO ks.model_history"):
            key, revision, action, version, previous, _who, _at = values
            self.history.append((key, revision, action, version, previous))
        else:
            raise AssertionError(f"unexpected statement {cql}")
        return FakeResult()


@pytest.fixture
def memory():
    session = MemorySession()
    yield session
    session.close()


def test_upload_many_reports_bad_items_by_key_and_stores_the_rest(memory):
    items = [
        ("good-1", linear(1.0)),
        ("no-model", {"format_version": 1, "features": ["a"], "output": {}}),
        ("future-format", dict(linear(2.0), format_version=2)),
        ("not-json", "{not json"),
        ("bad-version", linear(3.0), 0),
        ("too\nlong", linear(4.0)),
        ("x" * 201, linear(5.0)),
        ("not-a-pair",),
        "not-a-tuple",
        (42, linear(6.0)),
        ("nan", linear(float("nan"))),
        ("good-2", keyscore_sklearn.dumps(linear(7.0)), 5),
        ("huge", linear(8.0, notes="x" * 1000)),
    ]
    report = upload_many(memory, items, keyspace="ks", max_spec_bytes=900)
    assert report.stored == {"good-1": 1, "good-2": 5}
    assert report.activated == {}
    assert set(report.failures) == {
        "no-model", "future-format", "not-json", "bad-version", "too\nlong", "x" * 201,
        "not-a-pair", "<item 8>", "<item 9>", "nan", "huge",
    }
    assert "missing model" in report.failures["no-model"]
    assert "format_version 2" in report.failures["future-format"]
    assert "Expecting property name" in report.failures["not-json"]
    assert "positive integer" in report.failures["bad-version"]
    assert "control characters" in report.failures["too\nlong"]
    assert "200 bytes" in report.failures["x" * 201]
    assert "(key, spec)" in report.failures["<item 8>"]
    assert "key must be a non-empty string" in report.failures["<item 9>"]
    assert "Out of range float" in report.failures["nan"]
    assert "limit of 900 bytes" in report.failures["huge"]
    assert not report.ok
    # Nothing of a refused item reached the store.
    assert memory.keys_written == {"good-1", "good-2"}
    assert str(report).startswith("2 stored, 0 activated, 11 failed")


def test_upload_many_refuses_what_concerns_every_item_before_writing():
    with pytest.raises(ValueError, match="invalid keyspace"):
        upload_many(NoSession(), [("paris", {})], keyspace="ks; DROP TABLE x")
    with pytest.raises(ValueError, match="concurrency"):
        upload_many(NoSession(), [("paris", {})], keyspace="ks", concurrency=0)
    with pytest.raises(ValueError, match="concurrency"):
        activate_many(NoSession(), {"paris": 1}, keyspace="ks", concurrency="8")


def test_upload_many_streams_items_with_a_bounded_number_in_flight(memory):
    pulled = []

    def items():
        for i in range(2000):
            pulled.append(i)
            # Items are read as the writes go: never more than `concurrency` ahead of the store.
            assert len(pulled) - len(memory.feed) <= 16, "items were read ahead of the writes"
            yield f"k{i:04}", linear(float(i))

    report = upload_many(memory, items(), keyspace="ks", concurrency=16, activate=True)
    assert report.ok, str(report)
    assert report.stored == {f"k{i:04}": 1 for i in range(2000)}
    assert report.activated == report.stored
    assert 1 < memory.max_in_flight <= 16
    assert sorted(memory.feed) == sorted((f"k{i:04}", 1, 1) for i in range(2000))
    assert all(p == {"version": 1, "previous_version": None, "revision": 1} for p in memory.pointers.values())


def test_items_of_one_key_run_in_the_order_given(memory):
    items = [("paris", linear(float(i))) for i in range(5)] + [("lyon", linear(9.0))]
    report = upload_many(memory, items, keyspace="ks", concurrency=8, activate=True)
    assert report.ok, str(report)
    assert report.stored == {"paris": 5, "lyon": 1}
    assert report.activated == {"paris": 5, "lyon": 1}
    for i in range(5):
        assert f'"intercept":{float(i)}' in memory.versions[("paris", i + 1)]["spec"]
    assert [f for f in memory.feed if f[0] == "paris"] == [("paris", v, v) for v in range(1, 6)]
    assert memory.pointers["paris"] == {"version": 5, "previous_version": 4, "revision": 5}


def test_a_retry_with_the_same_version_is_a_success_and_another_spec_is_refused(memory):
    big = linear(1.0, notes="".join(random.Random(1).choice("0123456789abcdef") for _ in range(600_000)))
    first = upload_many(memory, [("paris", big, 3), ("lyon", linear(1.0), 1)], keyspace="ks")
    assert first.stored == {"paris": 3, "lyon": 1}
    row = memory.versions[("paris", 3)]
    assert row["encoding"] == "zstd" and row["chunks"] == 1 and row["spec"] is None
    again = upload_many(memory, [("paris", big, 3), ("lyon", linear(2.0), 1)], keyspace="ks")
    assert again.stored == {"paris": 3}
    assert "already exists with another spec" in again.failures["lyon"]
    # The retry's own chunks were removed: only the stored row's remain.
    assert {spec_id for spec_id, _ in memory.chunks} == {row["spec_id"]}


def test_a_driver_error_fails_its_key_only():
    session = MemorySession(broken={"k0007"})
    try:
        report = upload_many(session, ((f"k{i:04}", linear(1.0)) for i in range(50)), keyspace="ks", concurrency=4)
    finally:
        session.close()
    assert set(report.failures) == {"k0007"}
    assert "RuntimeError: OperationTimedOut" in report.failures["k0007"]
    assert len(report.stored) == 49


def test_activate_many_reports_unknown_versions_and_a_repeat_changes_nothing(memory):
    upload_many(memory, [(f"k{i}", linear(float(i))) for i in range(20)], keyspace="ks", activate=True)
    upload_many(memory, [(f"k{i}", linear(-float(i))) for i in range(10)], keyspace="ks")
    wanted = {f"k{i}": 2 for i in range(10)}
    wanted["k15"] = 7
    report = activate_many(memory, wanted, keyspace="ks", concurrency=4)
    assert report.activated == {f"k{i}": 2 for i in range(10)}
    assert report.stored == {}
    assert list(report.failures) == ["k15"]
    assert "has no version 7" in report.failures["k15"]
    feed, pointers = list(memory.feed), {k: dict(v) for k, v in memory.pointers.items()}
    assert pointers["k3"] == {"version": 2, "previous_version": 1, "revision": 2}
    # Each change is in the key's history, with the revision it won.
    assert [h for h in memory.history if h[0] == "k3"] == [
        ("k3", 1, "activate", 1, None),
        ("k3", 2, "activate", 2, 1),
    ]
    history = list(memory.history)

    again = activate_many(memory, list(wanted.items()), keyspace="ks")
    assert again.activated == report.activated and again.failures == report.failures
    assert memory.feed == feed and memory.pointers == pointers and memory.history == history

    bad = activate_many(memory, [("k1", "2"), ("k2",), ("k3", True)], keyspace="ks")
    assert bad.activated == {}
    assert set(bad.failures) == {"k1", "k2", "k3"}


def test_upload_many_embedded_names_a_missing_binary(tmp_path):
    with pytest.raises(FileNotFoundError, match="no-such-keyscore"):
        upload_many_embedded(tmp_path / "models.db", [("paris", linear(1.0))], keyscore_bin="no-such-keyscore")


def test_upload_many_embedded_checks_items_before_running_keyscore(tmp_path):
    # Every item is refused, so keyscore is not run (an executable that would fail if it were).
    fake = tmp_path / "keyscore"
    fake.write_text("#!/bin/sh\necho ran >&2\nexit 3\n")
    fake.chmod(0o755)
    report = upload_many_embedded(
        tmp_path / "models.db", [("paris", {"features": []}), ("", linear(1.0))], keyscore_bin=str(fake)
    )
    assert set(report.failures) == {"paris", "<item 1>"}
    assert report.stored == {}
    # With one good item, keyscore runs; a failure that reports nothing raises with its message.
    with pytest.raises(keyscore_sklearn.KeyscoreCommandError, match="exit status 3.*ran"):
        upload_many_embedded(tmp_path / "models.db", [("paris", linear(1.0))], keyscore_bin=str(fake))
