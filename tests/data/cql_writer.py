"""One writer of tests/cql_writers.rs: activates and rolls back keys with keyscore_sklearn, with
its clock skewed (the feed rows it writes are stamped 90 s ahead, 20 s behind, or on time, in
turn), and prints one JSON line per change it reports as done.

    python cql_writer.py HOST PORT ROUNDS SEED KEY [KEY...]
"""

import datetime
import json
import random
import sys

from cassandra.cluster import Cluster

import keyscore_sklearn
from keyscore_sklearn import NothingToRollBackError
from keyscore_sklearn import store as ks_store


def main():
    host, port, rounds, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    keys = sys.argv[5:]
    rng = random.Random(seed)
    cluster = Cluster([host], port=port)
    session = cluster.connect()
    real_now = ks_store._now
    skews = [datetime.timedelta(seconds=90), datetime.timedelta(seconds=-20), datetime.timedelta(0)]
    for i in range(rounds):
        skew = skews[i % len(skews)]
        ks_store._now = lambda: real_now() + skew
        key = rng.choice(keys)
        if rng.random() < 0.25:
            try:
                version = keyscore_sklearn.rollback(session, key, keyspace="keyscore")
            except NothingToRollBackError:
                continue
            print(json.dumps({"op": "rollback", "key": key, "version": version}), flush=True)
        else:
            version = rng.randint(1, 4)
            keyscore_sklearn.activate(session, key, version, keyspace="keyscore")
            print(json.dumps({"op": "activate", "key": key, "version": version}), flush=True)
    cluster.shutdown()


if __name__ == "__main__":
    main()
