"""The parts of the write protocol that need no database: canonical text, feed buckets and the
checks made before anything is written. The protocol itself runs against a CQL node in the
Rust integration tests (tests/cql_data_scientist.rs, tests/cql_writers.rs)."""

import hashlib
import json

import pytest
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge

import keyscore_sklearn
from keyscore_sklearn import SpecTooLargeError, canonical_text, upload
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
