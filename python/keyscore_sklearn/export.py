"""Export fitted scikit-learn estimators to keyscore model specs (``format_version`` 1).

The spec format is keyscore's contract (documented in keyscore's ``src/model/spec.rs``); this
module writes it so that keyscore predicts what scikit-learn predicts: within about 1e-9 for
linear, logistic and MLP models (floating-point summation order differs) and bit for bit for
trees and forests. Boosted trees (scikit-learn, XGBoost, LightGBM) are exported by
:mod:`keyscore_sklearn.boosted`.

Only what can be scored exactly is exported; everything else raises
:class:`UnsupportedEstimatorError` naming the estimator or option at fault.
"""

from __future__ import annotations

import datetime
import json
import math
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import scipy.sparse
import sklearn
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import ElasticNet, Lasso, LinearRegression, LogisticRegression, Ridge
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor
from sklearn.utils.validation import check_is_fitted

from . import boosted, preprocess
from . import reference as _reference
from .errors import UnsupportedEstimatorError

#: The spec format version this exporter writes.
FORMAT_VERSION = 1

_HIDDEN_ACTIVATIONS = ("identity", "logistic", "tanh", "relu")
_TREE_LEAF = -1




def export(
    estimator: Any,
    feature_names: Optional[Sequence[str]] = None,
    *,
    author: Optional[str] = None,
    metrics: Optional[Mapping[str, float]] = None,
    metadata: Optional[Mapping[str, Any]] = None,
    reference: Any = None,
) -> dict:
    """Returns the keyscore model spec of a fitted estimator, as a JSON-ready dict.

    ``estimator`` is one of the supported estimators (see :data:`SUPPORTED`), or a ``Pipeline``
    of an optional ``StandardScaler`` or ``ColumnTransformer`` (see
    :mod:`keyscore_sklearn.preprocess`) followed by one. ``feature_names`` are the record fields
    keyscore feeds the model, in the order of the training matrix's columns; when ``None``, the
    estimator's ``feature_names_in_`` (set when it was fitted on a DataFrame) are used. With a
    ``ColumnTransformer`` the spec lists only the columns it reads (``remainder='drop'`` drops
    the rest), and a column name may be a dotted path into nested records (``"user.age"``).

    The spec's metadata holds ``trained_at`` (the export time, UTC), ``author`` and ``metrics``
    when given, plus ``sklearn_version`` and ``estimator`` (the class names); ``metadata`` adds
    or overrides fields and must be JSON-serialisable.

    ``reference`` (optional) is the training data, or other data the model's inputs should keep
    resembling: a 2-D array with the estimator's input columns (the columns of the matrix or
    frame it was fitted on, in order) or a DataFrame holding them by name. With it the spec gets
    ``reference``, the statistics keyscore compares live data with: ``rows``; per feature,
    decile bins of the present values (at most 10; one for a constant), the share of missing
    values (None or NaN), the smallest and largest value; a string feature a
    ``ColumnTransformer`` encodes is binned by category code (one bin per code, -1 for an
    unknown value first; deciles of the codes above 100 categories); and ``prediction``, bins
    of the model's own value on the rows (deciles of the regression value or of a binary
    classifier's probability of ``classes[1]``; one bin per class index for a multiclass
    classifier). See :mod:`keyscore_sklearn.reference`.

    Raises :class:`UnsupportedEstimatorError` for an estimator or option keyscore cannot score
    exactly, ``sklearn.exceptions.NotFittedError`` for an unfitted one, and ``ValueError`` for
    bad feature names, non-finite parameters or reference data that does not fit the model
    (columns missing, a column without any value, values the model cannot score).
    """
    scaler, model = _split_pipeline(estimator)
    prep = scaler if isinstance(scaler, ColumnTransformer) else None
    if prep is not None:
        scaler = None
    exporter = _EXPORTERS.get(type(model))
    library = boosted.library_exporter(model) if exporter is None else None
    if exporter is None and library is None:
        raise UnsupportedEstimatorError(
            f"{type(model).__name__} is not supported; keyscore exports {', '.join(SUPPORTED)}"
            " (optionally in a Pipeline after one StandardScaler), XGBoost and LightGBM models"
        )
    if library is not None:
        exporter, count = library
        n_features = count(model)
    else:
        check_is_fitted(model)
        n_features = _n_features(model)
    if scaler is not None:
        check_is_fitted(scaler)
    if prep is not None:
        check_is_fitted(prep)
        names, preprocess_spec, width = preprocess.column_transformer(prep, feature_names)
        input_names = preprocess.input_names(prep, feature_names)
        if width != n_features:
            raise ValueError(
                f"the ColumnTransformer writes {width} columns but {type(model).__name__} reads"
                f" {n_features}"
            )
    else:
        names = _feature_names(estimator, feature_names, n_features)
        input_names = names
    params, output = exporter(model, n_features)

    spec: dict = {"format_version": FORMAT_VERSION, "features": names}
    if scaler is not None:
        spec["scaler"] = _scaler(scaler, n_features)
    if prep is not None:
        spec["preprocess"] = preprocess_spec
    spec["model"] = params
    spec["output"] = output
    spec["metadata"] = _metadata(estimator, scaler or prep, model, author, metrics, metadata)
    if reference is not None:
        spec["reference"] = _reference.reference(estimator, spec, reference, input_names)
    return spec


def to_json(estimator: Any, feature_names: Optional[Sequence[str]] = None, **kwargs: Any) -> str:
    """Like :func:`export`, returning the spec as compact JSON text."""
    return dumps(export(estimator, feature_names, **kwargs))


def dumps(spec: Mapping[str, Any]) -> str:
    """Encodes a spec as compact JSON. Floats are written with the shortest text that reads back
    as the same double, so no precision is lost; NaN and infinities are refused."""
    return json.dumps(spec, separators=(",", ":"), allow_nan=False)


def write_json(spec: Mapping[str, Any], path: Any) -> None:
    """Writes a spec to ``path`` as JSON, ready for ``keyscore upload --key KEY FILE``."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(dumps(spec))
        f.write("\n")


# ---------------------------------------------------------------------------------------------
# Pipeline, features and metadata


def _split_pipeline(estimator: Any) -> tuple:
    if not isinstance(estimator, Pipeline):
        return None, estimator
    steps = [step for _, step in estimator.steps if step is not None and step != "passthrough"]
    if not steps:
        raise UnsupportedEstimatorError("Pipeline has no estimator")
    *pre, model = steps
    for step in pre:
        if type(step) not in (StandardScaler, ColumnTransformer):
            raise UnsupportedEstimatorError(
                f"Pipeline step {type(step).__name__} is not supported; a pipeline may hold only"
                " one StandardScaler or ColumnTransformer before the estimator"
            )
    if len(pre) > 1:
        raise UnsupportedEstimatorError(
            "Pipeline with more than one StandardScaler or ColumnTransformer is not supported;"
            " put the preprocessing in one ColumnTransformer"
        )
    if type(model) in (StandardScaler, ColumnTransformer) or isinstance(model, Pipeline):
        raise UnsupportedEstimatorError(
            f"Pipeline ending in {type(model).__name__} is not supported; it must end in an"
            " estimator"
        )
    return (pre[0] if pre else None), model


def _n_features(model: Any) -> int:
    n = getattr(model, "n_features_in_", None)
    if n is None:
        raise UnsupportedEstimatorError(
            f"{type(model).__name__} does not record n_features_in_; refit it with"
            " scikit-learn >= 1.0"
        )
    return int(n)


def _feature_names(estimator: Any, feature_names: Optional[Sequence[str]], n: int) -> list:
    fitted = getattr(estimator, "feature_names_in_", None)
    if feature_names is None:
        if fitted is None:
            raise ValueError(
                "feature_names is required: the estimator was not fitted on a DataFrame, so it"
                " does not know its feature names"
            )
        feature_names = list(fitted)
    names = list(feature_names)
    if isinstance(feature_names, str) or not all(isinstance(f, str) for f in names):
        raise ValueError("feature_names must be a sequence of strings")
    if len(names) != n:
        raise ValueError(f"{len(names)} feature names given but the estimator has {n} features")
    duplicates = sorted({f for f in names if names.count(f) > 1})
    if duplicates:
        raise ValueError(f"feature names must be unique; repeated: {', '.join(duplicates)}")
    if fitted is not None and list(fitted) != names:
        raise ValueError(
            "feature_names differ from the estimator's feature_names_in_ (order matters):"
            f" {list(fitted)}"
        )
    return names


def _describe(estimator: Any, scaler: Any, model: Any) -> str:
    if isinstance(estimator, Pipeline):
        inner = [type(s).__name__ for s in (scaler, model) if s is not None]
        return f"Pipeline({', '.join(inner)})"
    return type(model).__name__


def _metadata(estimator, scaler, model, author, metrics, extra) -> dict:
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    meta: dict = {"trained_at": now.strftime("%Y-%m-%dT%H:%M:%SZ")}
    if author is not None:
        meta["author"] = str(author)
    if metrics:
        meta["metrics"] = metrics
    meta["sklearn_version"] = sklearn.__version__
    meta["estimator"] = _describe(estimator, scaler, model)
    if extra:
        meta.update(extra)
    if "metrics" in meta:
        meta["metrics"] = _metrics(meta["metrics"])
    try:
        dumps(meta)
    except (TypeError, ValueError) as err:
        raise ValueError(f"metadata is not JSON-serialisable: {err}") from err
    return meta


def _metrics(metrics: Mapping[str, Any]) -> dict:
    out = {}
    for name, value in dict(metrics).items():
        v = float(value)
        if not math.isfinite(v):
            raise ValueError(f"metric {name!r} is not a finite number: {value!r}")
        out[str(name)] = v
    return out


# ---------------------------------------------------------------------------------------------
# Parameters


def _floats(values: Any, what: str) -> Any:
    """A finite float64 array as nested Python lists (exact: tolist() keeps every bit)."""
    if scipy.sparse.issparse(values):
        values = values.toarray()
    arr = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} contains NaN or infinity; the model cannot be exported")
    return arr.tolist()


def _scaler(scaler: StandardScaler, n: int) -> dict:
    mean = np.zeros(n) if scaler.mean_ is None or not scaler.with_mean else scaler.mean_
    scale = np.ones(n) if scaler.scale_ is None or not scaler.with_std else scaler.scale_
    if len(mean) != n or len(scale) != n:
        raise ValueError(f"StandardScaler was fitted on {len(mean)} features, the model on {n}")
    return {"mean": _floats(mean, "StandardScaler.mean_"), "scale": _floats(scale, "StandardScaler.scale_")}


def _classes(model: Any) -> list:
    classes = [str(c) for c in model.classes_]
    if len(classes) < 2:
        raise UnsupportedEstimatorError(
            f"{type(model).__name__} fitted on a single class is not supported"
        )
    if len(set(classes)) != len(classes):
        raise UnsupportedEstimatorError(
            f"{type(model).__name__} class labels are not distinct as strings: {classes}"
        )
    return classes


def _dense(values: Any) -> np.ndarray:
    return values.toarray() if scipy.sparse.issparse(values) else np.asarray(values)


def _linear(model: Any, n: int) -> tuple:
    name = type(model).__name__
    coef = _dense(model.coef_).astype(np.float64)
    intercept = np.asarray(model.intercept_, dtype=np.float64).reshape(-1)
    if coef.ndim == 2:
        if coef.shape[0] != 1:
            raise UnsupportedEstimatorError(
                f"{name} with {coef.shape[0]} targets (multi-output) is not supported; fit one"
                " model per target"
            )
        coef = coef[0]
    if intercept.size != 1 or coef.shape != (n,):
        raise UnsupportedEstimatorError(f"{name} with coef_ of shape {coef.shape} is not supported")
    params = {
        "kind": "linear",
        "coefficients": _floats(coef, f"{name}.coef_"),
        "intercept": _floats(intercept, f"{name}.intercept_")[0],
    }
    return params, {"type": "regression"}


def _logistic(model: LogisticRegression, n: int) -> tuple:
    classes = _classes(model)
    coef = _dense(model.coef_).astype(np.float64)
    intercept = np.asarray(model.intercept_, dtype=np.float64).reshape(-1)
    # scikit-learn < 1.8 has `multi_class`; "auto" (or "deprecated") means one-vs-rest for binary
    # problems and for the liblinear solver, multinomial otherwise. From 1.8 on the option is
    # gone: binary models use the sigmoid and multiclass models the softmax.
    multi_class = getattr(model, "multi_class", "auto")
    if multi_class in ("auto", "deprecated"):
        ovr = len(classes) == 2 or getattr(model, "solver", None) == "liblinear"
    elif multi_class in ("ovr", "warn"):
        ovr = True
    elif multi_class == "multinomial":
        ovr = False
    else:
        raise UnsupportedEstimatorError(
            f"LogisticRegression with multi_class={multi_class!r} is not supported"
        )
    if len(classes) == 2:
        if coef.shape != (1, n) or intercept.size != 1:
            raise UnsupportedEstimatorError(
                f"LogisticRegression with coef_ of shape {coef.shape} is not supported"
            )
        if not ovr:
            # A binary multinomial model scores softmax([-d, d]), which is sigmoid(2d); doubling
            # is exact in floating point.
            coef, intercept = 2.0 * coef, 2.0 * intercept
    else:
        if ovr:
            raise UnsupportedEstimatorError(
                "LogisticRegression with multi_class='ovr' (one-vs-rest, also implied by"
                " solver='liblinear') is not supported for more than two classes: keyscore"
                " scores multiclass logistic models with the softmax; refit with"
                " multi_class='multinomial' or another solver"
            )
        if coef.shape != (len(classes), n) or intercept.size != len(classes):
            raise UnsupportedEstimatorError(
                f"LogisticRegression with coef_ of shape {coef.shape} is not supported"
            )
    params = {
        "kind": "logistic",
        "coefficients": _floats(coef, "LogisticRegression.coef_"),
        "intercepts": _floats(intercept, "LogisticRegression.intercept_"),
    }
    return params, {"type": "classification", "classes": classes}


def _single_output(model: Any) -> None:
    n_outputs = getattr(model, "n_outputs_", 1)
    if n_outputs != 1:
        raise UnsupportedEstimatorError(
            f"{type(model).__name__} with n_outputs_={n_outputs} (multi-output) is not"
            " supported; fit one model per target"
        )


def _forest(model: Any, n: int) -> tuple:
    _single_output(model)
    classifier = hasattr(model, "classes_")
    estimators = getattr(model, "estimators_", None) or [model]
    trees = [_tree(est, n, classifier) for est in estimators]
    params = {"kind": "random_forest", "trees": trees, "threshold_precision": "f32"}
    if classifier:
        classes = _classes(model)
        for tree in trees:
            if any(len(v) != len(classes) for v in tree["value"]):
                raise UnsupportedEstimatorError(
                    f"{type(model).__name__} has a tree whose classes differ from the forest's"
                )
        return params, {"type": "classification", "classes": classes}
    return params, {"type": "regression"}


def _tree(est: Any, n: int, classifier: bool) -> dict:
    _single_output(est)
    t = est.tree_
    left = np.asarray(t.children_left, dtype=np.int64)
    right = np.asarray(t.children_right, dtype=np.int64)
    feature = np.asarray(t.feature, dtype=np.int64)
    threshold = np.array(t.threshold, dtype=np.float64)
    # A split learnt with missing values may send every finite value left with an infinite
    # threshold; the largest double does the same for every finite feature.
    threshold[np.isposinf(threshold)] = np.finfo(np.float64).max
    threshold[np.isneginf(threshold)] = -np.finfo(np.float64).max
    if classifier:
        value = _tree_probabilities(est, n)
    else:
        value = np.asarray(t.value, dtype=np.float64)[:, 0, :1]
    return {
        "feature": feature.tolist(),
        "threshold": _floats(threshold, f"{type(est).__name__}.tree_.threshold"),
        "left": left.tolist(),
        "right": right.tolist(),
        "value": _floats(value, f"{type(est).__name__}.tree_.value"),
    }


def _tree_probabilities(est: Any, n: int) -> np.ndarray:
    """Per-node class probabilities, bit for bit what ``est.predict_proba`` returns at each leaf.

    scikit-learn < 1.4 stores weighted class counts and normalises them in ``predict_proba``;
    1.4 stores fractions and still normalises; later versions return the fractions as stored.
    Rather than track that, each leaf's probabilities are read from ``predict_proba`` itself,
    with one probe row per leaf built to reach it (checked with ``apply``). Split nodes, which
    never score, get their values divided by their sum.
    """
    t = est.tree_
    n_classes = int(np.ravel(est.n_classes_)[0])
    value = np.array(t.value[:, 0, :n_classes], dtype=np.float64)
    sums = value.sum(axis=1, keepdims=True)
    sums[sums == 0.0] = 1.0
    value /= sums

    leaves, rows = _leaf_probes(t, n)
    if leaves:
        probe = np.array(rows, dtype=np.float32)
        reached = est.apply(probe)
        if not np.array_equal(reached, np.array(leaves)):
            raise RuntimeError(
                f"{type(est).__name__}: could not build a probe row for every leaf; please"
                " report this with the model"
            )
        value[leaves] = est.predict_proba(probe)
    return value


def _leaf_probes(t: Any, n: int) -> tuple:
    """For every reachable leaf, a float32 row that the tree routes to it."""
    leaves, rows = [], []
    stack = [(0, np.full(n, -np.inf), np.full(n, np.inf))]
    while stack:
        node, lo, hi = stack.pop()
        if t.children_left[node] == _TREE_LEAF:
            row = _point_in(lo, hi)
            if row is not None:  # None: no float32 reaches this leaf, so it never scores
                leaves.append(node)
                rows.append(row)
            continue
        f, th = t.feature[node], t.threshold[node]
        hi_left, lo_right = hi.copy(), lo.copy()
        hi_left[f] = min(hi[f], th)
        lo_right[f] = max(lo[f], th)
        stack.append((t.children_right[node], lo_right, hi))
        stack.append((t.children_left[node], lo, hi_left))
    return leaves, rows


def _point_in(lo: np.ndarray, hi: np.ndarray) -> Optional[np.ndarray]:
    """A float32 vector x with lo < x <= hi element-wise (compared in float64), or None."""
    x = np.zeros(len(lo), dtype=np.float32)
    with np.errstate(over="ignore"):
        for j, (a, b) in enumerate(zip(lo, hi)):
            if np.isfinite(b):
                v = np.float32(b)
                if float(v) > b:
                    v = np.nextafter(v, np.float32(-np.inf))
            elif np.isfinite(a):
                v = np.float32(a)
                if float(v) <= a:
                    v = np.nextafter(v, np.float32(np.inf))
            else:
                v = np.float32(0.0)
            if not (float(v) > a and float(v) <= b and np.isfinite(v)):
                return None
            x[j] = v
    return x


def _mlp(model: Any, n: int) -> tuple:
    name = type(model).__name__
    if model.activation not in _HIDDEN_ACTIVATIONS:
        raise UnsupportedEstimatorError(
            f"{name} with activation={model.activation!r} is not supported; use one of"
            f" {', '.join(_HIDDEN_ACTIVATIONS)}"
        )
    out = model.out_activation_
    if isinstance(model, MLPClassifier):
        binarizer = getattr(model, "_label_binarizer", None)
        if getattr(binarizer, "y_type_", None) == "multilabel-indicator":
            raise UnsupportedEstimatorError(f"{name} fitted on multilabel targets is not supported")
        classes = _classes(model)
        expected = ("logistic", 1) if len(classes) == 2 else ("softmax", len(classes))
        if (out, model.n_outputs_) != expected:
            raise UnsupportedEstimatorError(
                f"{name} with out_activation_={out!r} and {model.n_outputs_} outputs for"
                f" {len(classes)} classes is not supported"
            )
        output = {"type": "classification", "classes": classes}
    else:
        _single_output(model)
        if out != "identity":
            raise UnsupportedEstimatorError(
                f"{name} with out_activation_={out!r} (loss={getattr(model, 'loss', None)!r}) is"
                " not supported; keyscore regression MLPs use the identity output"
            )
        output = {"type": "regression"}
    if model.coefs_[0].shape[0] != n:
        raise UnsupportedEstimatorError(f"{name} first layer has {model.coefs_[0].shape[0]} inputs, expected {n}")
    layers = [
        {
            "weights": _floats(w, f"{name}.coefs_[{i}]"),
            "biases": _floats(b, f"{name}.intercepts_[{i}]"),
        }
        for i, (w, b) in enumerate(zip(model.coefs_, model.intercepts_))
    ]
    params = {
        "kind": "mlp",
        "layers": layers,
        "hidden_activation": model.activation,
        "output_activation": out,
    }
    return params, output


_EXPORTERS = {
    LinearRegression: _linear,
    Ridge: _linear,
    Lasso: _linear,
    ElasticNet: _linear,
    LogisticRegression: _logistic,
    DecisionTreeRegressor: _forest,
    DecisionTreeClassifier: _forest,
    RandomForestRegressor: _forest,
    RandomForestClassifier: _forest,
    ExtraTreesRegressor: _forest,
    ExtraTreesClassifier: _forest,
    MLPRegressor: _mlp,
    MLPClassifier: _mlp,
    GradientBoostingRegressor: boosted.gradient_boosting,
    GradientBoostingClassifier: boosted.gradient_boosting,
    HistGradientBoostingRegressor: boosted.hist_gradient_boosting,
    HistGradientBoostingClassifier: boosted.hist_gradient_boosting,
}

#: Names of the estimators :func:`export` accepts.
SUPPORTED = tuple(cls.__name__ for cls in _EXPORTERS)
