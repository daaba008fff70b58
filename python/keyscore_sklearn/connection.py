"""Connect to keyscore's CQL store (ScyllaDB or Cassandra) with the settings keyscore uses.

Every setting is an argument or, when the argument is left out, the environment variable that
keyscore reads for its ``[store.cql]`` section, so one environment serves both:

=========================  ================================  ==================================
argument                   environment variable              effect
=========================  ================================  ==================================
``local_dc``               ``KEYSCORE_CQL_LOCAL_DC``         route to this datacenter only
``tls_ca_file``            ``KEYSCORE_CQL_TLS_CA_FILE``      PEM CA file; turns TLS on
``tls_cert_file``          ``KEYSCORE_CQL_TLS_CERT_FILE``    client certificate (PEM)
``tls_key_file``           ``KEYSCORE_CQL_TLS_KEY_FILE``     its private key (PEM)
``tls_server_name``        ``KEYSCORE_CQL_TLS_SERVER_NAME``  name the certificates must carry
``username``               ``KEYSCORE_CQL_USERNAME``         login
``password``               ``KEYSCORE_CQL_PASSWORD``         login
=========================  ================================  ==================================

An empty variable counts as unset. With TLS the nodes' certificates are checked against the
CA file and against ``tls_server_name``, else the host the driver connects to. With a local
datacenter, requests go to its nodes only (``DCAwareRoundRobinPolicy`` in a
``TokenAwarePolicy``, no remote hosts). Requests default to LOCAL_QUORUM, lightweight
transactions to LOCAL_SERIAL.

>>> session = connect("db1.example.com,db2.example.com")  # doctest: +SKIP
>>> keyscore_sklearn.upload(session, "paris", spec)  # doctest: +SKIP
>>> session.cluster.shutdown()  # doctest: +SKIP
"""

from __future__ import annotations

import os
import ssl
from typing import Any, Mapping, Optional, Sequence, Union

LOCAL_DC_ENV = "KEYSCORE_CQL_LOCAL_DC"
TLS_CA_FILE_ENV = "KEYSCORE_CQL_TLS_CA_FILE"
TLS_CERT_FILE_ENV = "KEYSCORE_CQL_TLS_CERT_FILE"
TLS_KEY_FILE_ENV = "KEYSCORE_CQL_TLS_KEY_FILE"
TLS_SERVER_NAME_ENV = "KEYSCORE_CQL_TLS_SERVER_NAME"
USERNAME_ENV = "KEYSCORE_CQL_USERNAME"
PASSWORD_ENV = "KEYSCORE_CQL_PASSWORD"


class ConnectionSettingsError(ValueError):
    """A connection setting cannot work (a TLS file that cannot be read, half a login or a
    client certificate without its key); nothing was contacted."""


def cluster(
    hosts: Union[str, Sequence[str]],
    port: int = 9042,
    *,
    local_dc: Optional[str] = None,
    tls_ca_file: Optional[str] = None,
    tls_cert_file: Optional[str] = None,
    tls_key_file: Optional[str] = None,
    tls_server_name: Optional[str] = None,
    username: Optional[str] = None,
    password: Optional[str] = None,
    env: Optional[Mapping[str, str]] = None,
    **cluster_options: Any,
) -> Any:
    """Builds a cassandra-driver ``Cluster`` for ``hosts`` (a list, or a comma-separated
    string) without connecting.

    Arguments left as ``None`` come from ``env`` (default: ``os.environ``); see the module
    documentation. ``cluster_options`` go to ``Cluster`` unchanged. Raises
    :class:`ConnectionSettingsError` naming the setting (and the file) that cannot work.
    """
    from cassandra import ConsistencyLevel
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy

    source = os.environ if env is None else env

    def setting(value: Optional[str], name: str) -> Optional[str]:
        if value is None:
            value = source.get(name)
        return value or None

    local_dc = setting(local_dc, LOCAL_DC_ENV)
    username = setting(username, USERNAME_ENV)
    password = setting(password, PASSWORD_ENV)
    if (username is None) != (password is None):
        raise ConnectionSettingsError(f"set both {USERNAME_ENV} and {PASSWORD_ENV}, or neither")

    profile_options: dict = {
        "consistency_level": ConsistencyLevel.LOCAL_QUORUM,
        "serial_consistency_level": ConsistencyLevel.LOCAL_SERIAL,
    }
    if local_dc is not None:
        profile_options["load_balancing_policy"] = TokenAwarePolicy(
            DCAwareRoundRobinPolicy(local_dc=local_dc)
        )
    options: dict = {
        "port": port,
        "execution_profiles": {EXEC_PROFILE_DEFAULT: ExecutionProfile(**profile_options)},
    }
    if username is not None:
        options["auth_provider"] = PlainTextAuthProvider(username=username, password=password)
    tls = ssl_settings(
        tls_ca_file=setting(tls_ca_file, TLS_CA_FILE_ENV),
        tls_cert_file=setting(tls_cert_file, TLS_CERT_FILE_ENV),
        tls_key_file=setting(tls_key_file, TLS_KEY_FILE_ENV),
        tls_server_name=setting(tls_server_name, TLS_SERVER_NAME_ENV),
    )
    if tls is not None:
        options["ssl_context"], ssl_options = tls
        if ssl_options:
            options["ssl_options"] = ssl_options
    options.update(cluster_options)
    contact_points = [h.strip() for h in hosts.split(",")] if isinstance(hosts, str) else hosts
    return Cluster([h for h in contact_points if h], **options)


def connect(
    hosts: Union[str, Sequence[str]],
    port: int = 9042,
    keyspace: Optional[str] = None,
    **settings: Any,
) -> Any:
    """Connects to ``hosts`` as :func:`cluster` describes and returns the ``Session``.

    Shut it down with ``session.cluster.shutdown()``. A failed connection (a refused
    certificate, an unreachable host) raises the driver's ``NoHostAvailable``, whose ``errors``
    say why for each host.
    """
    built = cluster(hosts, port, **settings)
    try:
        return built.connect(keyspace)
    except Exception:
        built.shutdown()
        raise


def ssl_settings(
    tls_ca_file: Optional[str],
    tls_cert_file: Optional[str],
    tls_key_file: Optional[str],
    tls_server_name: Optional[str],
) -> Optional[tuple]:
    """The ``(ssl_context, ssl_options)`` for the given files, or ``None`` without a CA file.

    The context verifies the nodes' certificates against ``tls_ca_file`` and checks their
    name: ``tls_server_name`` when given (passed as ``server_hostname``), else the host the
    driver connects to.
    """
    if (tls_cert_file is None) != (tls_key_file is None):
        given, missing = (
            ("tls_cert_file", "tls_key_file")
            if tls_cert_file is not None
            else ("tls_key_file", "tls_cert_file")
        )
        raise ConnectionSettingsError(
            f"{given} is set without {missing}; set both (a client certificate and its private"
            " key) or neither"
        )
    if tls_ca_file is None:
        if tls_cert_file is not None or tls_server_name is not None:
            raise ConnectionSettingsError(
                "TLS settings are given without tls_ca_file; set tls_ca_file"
                f" ({TLS_CA_FILE_ENV}) to the PEM file of the CA that signs the nodes'"
                " certificates to turn TLS on"
            )
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies chains and host names
    try:
        context.load_verify_locations(cafile=tls_ca_file)
    except FileNotFoundError as err:
        raise ConnectionSettingsError(f"cannot read tls_ca_file {tls_ca_file}: {err.strerror}") from err
    except (OSError, ssl.SSLError) as err:
        raise ConnectionSettingsError(
            f"tls_ca_file {tls_ca_file} holds no usable CA certificate; use a PEM file with"
            f" -----BEGIN CERTIFICATE----- blocks ({err})"
        ) from err
    if tls_cert_file is not None:
        for name, path in (("tls_cert_file", tls_cert_file), ("tls_key_file", tls_key_file)):
            if not os.path.isfile(path):
                raise ConnectionSettingsError(f"cannot read {name} {path}: no such file")
        try:
            context.load_cert_chain(certfile=tls_cert_file, keyfile=tls_key_file)
        except (OSError, ssl.SSLError) as err:
            raise ConnectionSettingsError(
                f"tls_cert_file {tls_cert_file} and tls_key_file {tls_key_file} are not a PEM"
                f" certificate and its private key ({err})"
            ) from err
    ssl_options = {"server_hostname": tls_server_name} if tls_server_name else {}
    return context, ssl_options
