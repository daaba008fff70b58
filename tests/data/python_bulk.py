"""The Python side of tests/cql_python_bulk.rs: bulk uploads and activations with keyscore_sklearn,
printing what each call reported as one JSON object ({"stored", "activated", "failures",
"seconds"}, and "big_sha256" for the upload of 2,000 keys).

    python python_bulk.py cql HOST PORT upload       # 2,000 keys k0000..k1999 at v1, activated;
                                                     # k0700 and k1300 are bad specs, k1000 is
                                                     # over 1 MiB (stored in chunks)
    python python_bulk.py cql HOST PORT upload-v2    # v2 of k0000..k0499, not activated
    python python_bulk.py cql HOST PORT activate     # k0000..k0499 to v2, plus k1999 v9 and
                                                     # k0700 v1, which are not stored
    python python_bulk.py embedded STORE KEYSCORE ACTIVATE   # 300 keys e000..e299 through the
                                                     # keyscore CLI: e010 and e020 refused by the
                                                     # package, e100..e124 by keyscore, e299 at v7
"""

import hashlib
import json
import random
import sys
import time

from cassandra.cluster import Cluster

import keyscore_sklearn

KEYS = 2000
MOVED = 500


def linear(intercept, **metadata):
    """A linear spec over features a and b whose intercept tells keys and versions apart."""
    spec = {
        "format_version": 1,
        "features": ["a", "b"],
        "model": {"kind": "linear", "coefficients": [1.0, 2.0], "intercept": float(intercept)},
        "output": {"type": "regression"},
    }
    if metadata:
        spec["metadata"] = metadata
    return spec


def big_spec():
    """Over 1 MiB of text that compresses to more than one 512 KiB chunk."""
    rng = random.Random(7)
    notes = "".join(rng.choice("0123456789abcdef") for _ in range(1_200_000))
    return linear(1000, author="ana", notes=notes)


def first_items():
    for i in range(KEYS):
        key = f"k{i:04}"
        if i == 700:
            yield key, {"format_version": 1, "features": ["a", "b"], "model": {}}  # no output
        elif i == 1300:
            yield key, dict(linear(i), format_version=2)
        elif i == 1000:
            yield key, big_spec()
        else:
            yield key, linear(i, author="ana")


def report_json(report, started, **extra):
    out = {
        "stored": report.stored,
        "activated": report.activated,
        "failures": report.failures,
        "seconds": round(time.monotonic() - started, 3),
    }
    out.update(extra)
    return json.dumps(out)


def cql(host, port, mode):
    cluster = Cluster([host], port=port)
    session = cluster.connect()
    started = time.monotonic()
    if mode == "upload":
        report = keyscore_sklearn.upload_many(session, first_items(), activate=True, concurrency=64)
        text = keyscore_sklearn.canonical_text(keyscore_sklearn.dumps(big_spec()))
        print(report_json(report, started, big_sha256=hashlib.sha256(text.encode()).hexdigest()))
    elif mode == "upload-v2":
        items = ((f"k{i:04}", linear(-i)) for i in range(MOVED))
        print(report_json(keyscore_sklearn.upload_many(session, items), started))
    elif mode == "activate":
        versions = {f"k{i:04}": 2 for i in range(MOVED)}
        versions["k1999"] = 9
        versions["k0700"] = 1
        print(report_json(keyscore_sklearn.activate_many(session, versions), started))
    else:
        raise SystemExit(f"unknown mode {mode}")
    cluster.shutdown()


def embedded(store, keyscore_bin, activate):
    def items():
        for i in range(300):
            key = f"e{i:03}"
            if i in (10, 20):
                yield key, {"format_version": 1, "features": ["a", "b"]}  # refused here
            elif 100 <= i < 125:
                # Decodes but cannot build (two features, one coefficient): keyscore refuses it.
                spec = linear(i)
                spec["model"]["coefficients"] = [1.0]
                yield key, spec
            elif i == 299:
                yield key, json.dumps(linear(i), indent=2), 7
            else:
                yield key, linear(i)

    started = time.monotonic()
    report = keyscore_sklearn.upload_many_embedded(
        store, items(), activate=activate == "activate", keyscore_bin=keyscore_bin
    )
    print(report_json(report, started))


def main():
    if sys.argv[1] == "cql":
        cql(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    elif sys.argv[1] == "embedded":
        embedded(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
