"""Drives the CQL test node with the Python cassandra-driver, as keyscore's operators' tools do.

Usage: python_driver_client.py HOST PORT

Connects (letting the driver negotiate the protocol version), checks the schema metadata the
driver built from system_schema, writes rows with simple and prepared statements and a batch,
reads them back, and prints one JSON object describing what it saw.
"""

import datetime
import json
import logging
import sys

from cassandra.cluster import Cluster
from cassandra.query import BatchStatement, SimpleStatement


class Recorder(logging.Handler):
    """Keeps the driver's log messages, to see how it negotiated the protocol version."""

    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    recorder = Recorder()
    logging.getLogger("cassandra").addHandler(recorder)
    logging.getLogger("cassandra").setLevel(logging.INFO)
    cluster = Cluster([host], port=port)
    session = cluster.connect()
    out = {
        "protocol_version": cluster.protocol_version,
        "downgraded": any("Downgrading" in m for m in recorder.messages),
    }

    ks = cluster.metadata.keyspaces["keyscore"]
    mv = ks.tables["model_versions"]
    out["model_versions_partition_key"] = [c.name for c in mv.partition_key]
    out["model_versions_clustering_key"] = [c.name for c in mv.clustering_key]
    out["model_versions_version_desc"] = mv.columns["version"].is_reversed
    out["model_versions_cql"] = mv.export_as_string()

    session.set_keyspace("keyscore")
    session.execute(
        "INSERT INTO model_versions (key, version, spec, author, created_at) "
        "VALUES ('lyon', 1, '{\"kind\": \"linear\"}', 'py', toTimestamp(now()))"
    )
    insert = session.prepare(
        "INSERT INTO model_versions (key, version, spec, author, created_at) "
        "VALUES (?, ?, ?, ?, toTimestamp(now()))"
    )
    for version in range(2, 5):
        session.execute(insert, ("lyon", version, "{}", "py"))

    activate = BatchStatement()
    activate.add(
        session.prepare(
            "UPDATE active_models SET version = ?, previous_version = ?, revision = ? WHERE key = ?"
        ),
        (4, 1, 1, "lyon"),
    )
    activate.add(
        session.prepare(
            "INSERT INTO model_changes (day, bucket, changed_at, key, version, revision)"
            " VALUES (?, ?, ?, ?, ?, ?)"
        ),
        (datetime.date(2024, 3, 1), 0, 1709296200000, "lyon", 4, 1),
    )
    session.execute(activate)

    paged = SimpleStatement(
        "SELECT version FROM model_versions WHERE key = %s", fetch_size=2
    )
    out["versions"] = [row.version for row in session.execute(paged, ("lyon",))]
    row = session.execute(
        "SELECT version, previous_version, WRITETIME(version) AS wt "
        "FROM active_models WHERE key = 'lyon'"
    ).one()
    out["active"] = [row.version, row.previous_version, row.wt > 0]
    cluster.shutdown()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
