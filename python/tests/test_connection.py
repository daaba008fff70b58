"""connection.cluster() and connect() build the driver's Cluster from keyscore's settings.

The first tests build a Cluster without connecting. The tests marked ``tls_node`` connect to a
CQL test node that accepts TLS only; ``cargo test --test store_cql_tls`` starts one and runs
this file with ``KEYSCORE_TEST_TLS_CQL_NODE`` (its ``host:port``) and ``KEYSCORE_TEST_TLS_DIR``
(its CA and client certificate files) set, then checks from keyscore what they wrote.
"""

import os

import numpy as np
import pytest
from cassandra import ConsistencyLevel
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import EXEC_PROFILE_DEFAULT, NoHostAvailable
from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy
from sklearn.linear_model import Ridge

import keyscore_sklearn
from keyscore_sklearn import connection
from keyscore_sklearn.connection import ConnectionSettingsError, cluster, connect

NODE = os.environ.get("KEYSCORE_TEST_TLS_CQL_NODE")
TLS_DIR = os.environ.get("KEYSCORE_TEST_TLS_DIR")
tls_node = pytest.mark.skipif(
    not (NODE and TLS_DIR),
    reason="needs the TLS CQL test node: run `cargo test --test store_cql_tls`",
)


def default_profile(c):
    return c.profile_manager.profiles[EXEC_PROFILE_DEFAULT]


def test_without_settings_the_cluster_is_plaintext_at_local_quorum():
    c = cluster("127.0.0.1, 127.0.0.2", 9142, env={})
    assert c.contact_points == ["127.0.0.1", "127.0.0.2"]
    assert c.port == 9142
    assert c.ssl_context is None
    assert c.auth_provider is None
    profile = default_profile(c)
    assert profile.consistency_level == ConsistencyLevel.LOCAL_QUORUM
    assert profile.serial_consistency_level == ConsistencyLevel.LOCAL_SERIAL


def test_a_local_dc_from_the_environment_routes_to_that_datacenter_only():
    c = cluster(["127.0.0.1"], env={connection.LOCAL_DC_ENV: "eu-west"})
    policy = default_profile(c).load_balancing_policy
    assert isinstance(policy, TokenAwarePolicy)
    assert isinstance(policy._child_policy, DCAwareRoundRobinPolicy)
    assert policy._child_policy.local_dc == "eu-west"
    assert policy._child_policy.used_hosts_per_remote_dc == 0


def test_an_argument_wins_over_the_environment_and_an_empty_variable_is_unset():
    c = cluster("127.0.0.1", local_dc="us-east", env={connection.LOCAL_DC_ENV: "eu-west"})
    assert default_profile(c).load_balancing_policy._child_policy.local_dc == "us-east"
    c = cluster("127.0.0.1", env={connection.TLS_CA_FILE_ENV: ""})
    assert c.ssl_context is None


def test_the_login_comes_from_the_environment_and_half_a_login_is_refused():
    c = cluster(
        "127.0.0.1", env={connection.USERNAME_ENV: "svc", connection.PASSWORD_ENV: "s3cret"}
    )
    assert isinstance(c.auth_provider, PlainTextAuthProvider)
    with pytest.raises(ConnectionSettingsError, match=connection.PASSWORD_ENV) as err:
        cluster("127.0.0.1", env={connection.USERNAME_ENV: "svc"})
    assert "svc" not in str(err.value)


def test_half_a_client_identity_is_refused_before_connecting(tmp_path):
    with pytest.raises(ConnectionSettingsError, match="tls_cert_file is set without tls_key_file"):
        cluster("127.0.0.1", tls_ca_file="ca.pem", tls_cert_file="client.pem", env={})
    with pytest.raises(ConnectionSettingsError, match="tls_key_file is set without tls_cert_file"):
        cluster("127.0.0.1", env={connection.TLS_CA_FILE_ENV: "ca.pem", connection.TLS_KEY_FILE_ENV: "k"})
    with pytest.raises(ConnectionSettingsError, match="without tls_ca_file"):
        cluster("127.0.0.1", tls_server_name="db.example.com", env={})


def test_an_unusable_ca_file_is_refused_naming_it(tmp_path):
    missing = tmp_path / "missing.pem"
    with pytest.raises(ConnectionSettingsError, match="cannot read tls_ca_file") as err:
        cluster("127.0.0.1", tls_ca_file=str(missing), env={})
    assert str(missing) in str(err.value)
    not_pem = tmp_path / "not-a-cert.pem"
    not_pem.write_text("this is not a certificate\n")
    with pytest.raises(ConnectionSettingsError, match="holds no usable CA certificate") as err:
        cluster("127.0.0.1", tls_ca_file=str(not_pem), env={})
    assert str(not_pem) in str(err.value)


def tls_file(name):
    return os.path.join(TLS_DIR, name)


def node_host_port():
    host, port = NODE.rsplit(":", 1)
    return host, int(port)


def small_spec():
    rng = np.random.default_rng(7)
    x = rng.uniform(0.0, 10.0, size=(50, 2))
    y = 3.0 + x[:, 0] - 0.5 * x[:, 1]
    return keyscore_sklearn.export(Ridge().fit(x, y), ["distance_km", "items"], author="tls")


def client_identity():
    """The client certificate: the node these tests use requires one."""
    return {"tls_cert_file": tls_file("client.pem"), "tls_key_file": tls_file("client.key")}


@tls_node
def test_upload_and_activate_over_tls_with_a_client_certificate_and_a_local_dc():
    host, port = node_host_port()
    env = {
        connection.TLS_CA_FILE_ENV: tls_file("ca.pem"),
        connection.TLS_CERT_FILE_ENV: tls_file("client.pem"),
        connection.TLS_KEY_FILE_ENV: tls_file("client.key"),
        connection.LOCAL_DC_ENV: "datacenter1",
    }
    session = connect(host, port, env=env)
    try:
        assert session.cluster.ssl_context.check_hostname
        key = os.environ["KEYSCORE_TEST_TLS_KEY"]
        version = keyscore_sklearn.upload(session, key, small_spec())
        keyscore_sklearn.activate(session, key, version)
        assert version == 1
    finally:
        session.cluster.shutdown()


@tls_node
def test_a_node_signed_by_another_ca_is_refused():
    host, port = node_host_port()
    with pytest.raises(NoHostAvailable) as err:
        connect(host, port, tls_ca_file=tls_file("other-ca.pem"), env={}, **client_identity())
    assert "CERTIFICATE_VERIFY_FAILED" in str(err.value)


@tls_node
def test_the_certificate_must_name_tls_server_name():
    host, port = node_host_port()
    session = connect(
        host,
        port,
        tls_ca_file=tls_file("ca.pem"),
        tls_server_name="cql.keyscore.test",
        env={},
        **client_identity(),
    )
    session.cluster.shutdown()
    with pytest.raises(NoHostAvailable) as err:
        connect(
            host,
            port,
            tls_ca_file=tls_file("ca.pem"),
            tls_server_name="db.elsewhere.example",
            env={},
            **client_identity(),
        )
    assert "CERTIFICATE_VERIFY_FAILED" in str(err.value)
    assert "db.elsewhere.example" in str(err.value)
