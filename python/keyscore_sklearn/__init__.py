"""Export fitted scikit-learn estimators to keyscore model specs, and upload them.

>>> from sklearn.datasets import load_diabetes
>>> from sklearn.linear_model import Ridge
>>> import keyscore_sklearn
>>> data = load_diabetes()
>>> model = Ridge().fit(data.data, data.target)
>>> spec = keyscore_sklearn.export(model, data.feature_names, author="ana")
>>> spec["model"]["kind"]
'linear'
>>> keyscore_sklearn.write_json(spec, "model.json")  # doctest: +SKIP

``export(..., reference=data.data)`` also stores the training data's statistics (per-feature
decile bins, missing shares and ranges, the distribution of the model's predictions), which
keyscore compares live records with; see :mod:`keyscore_sklearn.reference`.

Then ``keyscore upload --key paris model.json``, or :func:`upload` with a cassandra-driver
session (:func:`connect` opens one with keyscore's TLS, datacenter and login settings), and
``keyscore activate --key paris --version N`` (or :func:`activate`). :func:`upload_many` and
:func:`activate_many` do the same for many keys at once, concurrently;
:func:`upload_many_embedded` uploads many keys through the ``keyscore`` command (the embedded
SQLite store, or any store URL).
"""

from .export import (
    FORMAT_VERSION,
    SUPPORTED,
    UnsupportedEstimatorError,
    dumps,
    export,
    to_json,
    write_json,
)
from .connection import ConnectionSettingsError, connect
from .store import (
    BulkReport,
    ConcurrentChangeError,
    KeyscoreCommandError,
    NothingToRollBackError,
    SpecTooLargeError,
    UnknownVersionError,
    VersionExistsError,
    activate,
    activate_many,
    canonical_text,
    rollback,
    upload,
    upload_many,
    upload_many_embedded,
)

__version__ = "0.1.0"

__all__ = [
    "BulkReport",
    "ConcurrentChangeError",
    "ConnectionSettingsError",
    "FORMAT_VERSION",
    "KeyscoreCommandError",
    "NothingToRollBackError",
    "SUPPORTED",
    "SpecTooLargeError",
    "UnknownVersionError",
    "UnsupportedEstimatorError",
    "VersionExistsError",
    "activate",
    "activate_many",
    "canonical_text",
    "connect",
    "dumps",
    "export",
    "rollback",
    "to_json",
    "upload",
    "upload_many",
    "upload_many_embedded",
    "write_json",
]
