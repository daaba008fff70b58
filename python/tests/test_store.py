"""upload() and activate() issue the statements keyscore's CQL schema expects.

A fake session stands in for cassandra-driver's: it records each statement and answers from a
small in-memory model of the three tables.
"""

import datetime
import json
from types import SimpleNamespace

import pytest
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge

import keyscore_sklearn
from keyscore_sklearn import UnknownVersionError, VersionExistsError, activate, upload


class FakeSession:
    def __init__(self):
        self.versions = {}  # (key, version) -> row
        self.active = {}  # key -> (version, previous_version)
        self.changes = []
        self.statements = []

    def execute(self, query, params=()):
        self.statements.append((query, params))
        q = " ".join(query.split())
        if q.startswith("SELECT version FROM ks.model_versions WHERE key = %s LIMIT 1"):
            found = sorted((v for k, v in self.versions if k == params[0]), reverse=True)
            return [SimpleNamespace(version=v) for v in found[:1]]
        if q.startswith("SELECT version FROM ks.model_versions WHERE key = %s AND version = %s"):
            return [SimpleNamespace(version=params[1])] if tuple(params) in self.versions else []
        if q.startswith("SELECT version FROM ks.active_models"):
            return [SimpleNamespace(version=self.active[params[0]][0])] if params[0] in self.active else []
        if q.startswith("INSERT INTO ks.model_versions") and q.endswith("IF NOT EXISTS"):
            key, version, spec, author, created_at = params
            applied = (key, version) not in self.versions
            if applied:
                self.versions[(key, version)] = dict(spec=spec, author=author, created_at=created_at)
            return SimpleNamespace(was_applied=applied)
        if q.startswith("BEGIN BATCH UPDATE ks.active_models") and q.endswith("APPLY BATCH"):
            version, previous, key, day, changed_at, key2, version2 = params
            assert (key, version) == (key2, version2)
            self.active[key] = (version, previous)
            self.changes.append((day, changed_at, key, version))
            return []
        raise AssertionError(f"unexpected statement: {q}")


@pytest.fixture
def spec():
    d = load_diabetes()
    return keyscore_sklearn.export(Ridge().fit(d.data, d.target), list(d.feature_names), author="ana")


def test_upload_takes_the_next_version_and_never_overwrites(spec):
    session = FakeSession()
    assert upload(session, "paris", spec, keyspace="ks") == 1
    assert upload(session, "paris", keyscore_sklearn.dumps(spec), keyspace="ks", author="bo") == 2
    assert upload(session, "lyon", spec, keyspace="ks") == 1
    assert upload(session, "paris", spec, version=10, keyspace="ks") == 10
    assert upload(session, "paris", spec, keyspace="ks") == 11
    with pytest.raises(VersionExistsError, match="version 2 of key 'paris' already exists"):
        upload(session, "paris", spec, version=2, keyspace="ks")

    row = session.versions[("paris", 1)]
    assert json.loads(row["spec"]) == spec
    assert row["author"] == "ana"  # from the spec's metadata
    assert session.versions[("paris", 2)]["author"] == "bo"
    assert row["created_at"].tzinfo is not None
    assert not session.active, "upload must not activate"


def test_upload_refuses_what_is_not_a_spec():
    with pytest.raises(ValueError, match="missing"):
        upload(FakeSession(), "paris", {"features": []}, keyspace="ks")
    with pytest.raises(ValueError, match="invalid keyspace"):
        upload(FakeSession(), "paris", {}, keyspace="ks; DROP TABLE x")
    with pytest.raises(ValueError, match="positive integer"):
        upload(FakeSession(), "paris", {"format_version": 1, "features": [], "model": {}, "output": {}}, version=0, keyspace="ks")


def test_activate_batches_pointer_and_change_feed(spec):
    session = FakeSession()
    upload(session, "paris", spec, keyspace="ks")
    upload(session, "paris", spec, keyspace="ks")
    before = datetime.datetime.now(datetime.timezone.utc)

    assert activate(session, "paris", 1, keyspace="ks") is None
    assert activate(session, "paris", 2, keyspace="ks") == 1
    assert session.active["paris"] == (2, 1)
    assert activate(session, "paris", 2, keyspace="ks") == 2  # already active: no change
    assert len(session.changes) == 2

    day, changed_at, key, version = session.changes[-1]
    assert (key, version) == ("paris", 2)
    assert day == changed_at.strftime("%Y-%m-%d") and changed_at.tzinfo is not None
    assert changed_at >= before.replace(microsecond=before.microsecond // 1000 * 1000)
    batches = [" ".join(q.split()) for q, _ in session.statements if q.startswith("BEGIN BATCH")]
    assert len(batches) == 2
    batch = batches[-1]
    assert batch.startswith("BEGIN BATCH UPDATE ks.active_models SET version = %s, previous_version = %s WHERE key = %s;")
    assert "INSERT INTO ks.model_changes (day, changed_at, key, version) VALUES (%s, %s, %s, %s);" in batch


def test_activate_refuses_a_version_that_was_never_uploaded():
    with pytest.raises(UnknownVersionError, match="no version 3"):
        activate(FakeSession(), "paris", 3, keyspace="ks")
