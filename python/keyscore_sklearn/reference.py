"""Reference statistics of the training data, written into a spec's ``reference``.

keyscore compares live data with them (population stability per feature and for the
predictions). Per spec feature: decile bins of the values keyscore gives the model (the number
read from the record; for a string feature an encoder of the spec's ``preprocess`` stage reads,
its category code: the index in the encoder's categories, -1 when unknown), the share of rows
where the feature is missing, and the range of the present values; and the distribution of the
model's own value on the same rows (the regression value, a binary classifier's probability of
its second class, a multiclass classifier's predicted class index).

Decile edges are values of the data: with ``n`` present values sorted, the distinct values at
positions ``n * k // 10`` for k = 1..9 that are above the minimum. So every bin holds at least
one row (a bin starts at its edge) and a constant feature has no edges and one bin. A value
``v`` falls in bin "number of edges ``<= v``", keyscore's ``Bins::bin``; shares count
the present values with that rule (``numpy.searchsorted(edges, v, side="right")``), so keyscore
binning the same rows finds the same shares.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np
import scipy.sparse

#: The most edges keyscore accepts in one set of bins.
MAX_EDGES = 100
#: The deciles k / 10 whose values are the edges of a numeric feature's bins, as k.
DECILES = np.arange(1, 10)


def reference(estimator: Any, spec: dict, data: Any, input_names: Sequence[str]) -> dict:
    """The ``reference`` object of ``spec`` (already exported from ``estimator``) for the rows of
    ``data``: a 2-D array whose columns are ``input_names`` (the columns the estimator was
    fitted on, in order), or a DataFrame holding those columns by name."""
    features = list(spec["features"])
    columns, n_rows = _columns(data, features, list(input_names))
    categories = _encoded_categories(spec, len(features))
    stats = []
    for name, column, cats in zip(features, columns, categories):
        values = _numbers(column, name) if cats is None else _codes(column, cats, name)
        stats.append(_feature(values, name, cats))
    out: dict = {"rows": n_rows, "features": stats}
    out["prediction"] = _prediction(estimator, spec, data, list(input_names), n_rows)
    return out


# ---------------------------------------------------------------------------------------------
# Columns


def _is_frame(data: Any) -> bool:
    return hasattr(data, "columns") and hasattr(data, "iloc")


def _columns(data: Any, features: list, input_names: list) -> tuple:
    """The column of each spec feature, as a 1-D array, and the number of rows."""
    if _is_frame(data):
        absent = [f for f in features if f not in data.columns]
        if absent:
            raise ValueError(
                f"reference has no column {absent[0]!r}; it needs the model's input columns"
                f" {input_names}"
            )
        n_rows = len(data)
        columns = [data[f].to_numpy() for f in features]
    else:
        arr = _array(data)
        if arr.shape[1] != len(input_names):
            raise ValueError(
                f"reference has {arr.shape[1]} columns but the model reads {len(input_names)}"
                f" ({', '.join(input_names)})"
            )
        n_rows = arr.shape[0]
        columns = [arr[:, input_names.index(f)] for f in features]
    if n_rows == 0:
        raise ValueError("reference has no rows")
    return columns, n_rows


def _array(data: Any) -> np.ndarray:
    if scipy.sparse.issparse(data):
        data = data.toarray()
    arr = np.asarray(data)
    if arr.ndim != 2:
        raise ValueError(
            f"reference must be a 2-D array (rows x input columns) or a DataFrame, not an array"
            f" of shape {arr.shape}"
        )
    return arr


def _encoded_categories(spec: dict, n: int) -> list:
    """Per spec feature: the categories of the encoder reading it, or None."""
    out: list = [None] * n
    for col in spec.get("preprocess", {}).get("columns", []):
        if col["op"] in ("one_hot", "ordinal"):
            out[col["feature"]] = list(col["categories"])
    return out


def _is_missing(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, (float, np.floating)):
        return math.isnan(v)
    # pandas.NA and pandas.NaT, without importing pandas.
    return type(v).__name__ in ("NAType", "NaTType")


def _numbers(column: np.ndarray, name: str) -> np.ndarray:
    """A numeric column as float64, NaN where missing."""
    if column.dtype.kind in "biuf":
        values = column.astype(np.float64)
    else:
        values = np.empty(len(column), dtype=np.float64)
        for i, v in enumerate(column):
            if _is_missing(v):
                values[i] = np.nan
            elif isinstance(v, (bool, int, float, np.number)):
                values[i] = float(v)
            else:
                raise ValueError(f"reference column {name!r} holds {v!r}, not a number")
    if np.any(np.isinf(values)):
        raise ValueError(f"reference column {name!r} holds an infinite value")
    return values


def _codes(column: np.ndarray, categories: list, name: str) -> np.ndarray:
    """An encoded string column as keyscore gives it to the model: the index of each value in
    ``categories``, -1 when unknown, NaN when missing."""
    index = {c: i for i, c in enumerate(categories)}
    codes = np.empty(len(column), dtype=np.float64)
    for i, v in enumerate(column):
        if _is_missing(v):
            codes[i] = np.nan
        elif isinstance(v, str):
            codes[i] = index.get(v, -1)
        else:
            raise ValueError(
                f"reference column {name!r} holds {v!r}; its encoder reads strings"
            )
    return codes


# ---------------------------------------------------------------------------------------------
# Bins


def _feature(values: np.ndarray, name: str, categories: Optional[list]) -> dict:
    present = values[~np.isnan(values)]
    if present.size == 0:
        raise ValueError(
            f"reference column {name!r} is missing in every row; the reference needs a value of"
            " every feature"
        )
    if categories is not None and len(categories) <= MAX_EDGES:
        bins = _bins_at(_code_edges(len(categories)), present)
    else:
        bins = _deciles(present)
    bins["missing"] = float(np.count_nonzero(np.isnan(values)) / len(values))
    bins["min"] = float(present.min())
    bins["max"] = float(present.max())
    return bins


def _code_edges(n: int) -> np.ndarray:
    """Edges giving each of the codes -1 (unknown), 0, ..., n - 2 its own bin and n - 1 the
    last: -0.5, 0.5, ..., n - 1.5."""
    return np.arange(n, dtype=np.float64) - 0.5


def _deciles(values: np.ndarray) -> dict:
    """Bins at the deciles of ``values``: the distinct values at positions ``n * k // 10``
    (k = 1..9) of the sorted values, above the minimum. Each edge is a value, so no bin is
    empty (a bin starts at its edge, which it holds); at most 10 bins, one for a constant."""
    ordered = np.sort(values)
    edges = np.unique(ordered[len(ordered) * DECILES // 10])
    return _bins_at(edges[edges > ordered[0]], values)


def _bins_at(edges: np.ndarray, values: np.ndarray) -> dict:
    """The share of ``values`` in each bin of ``edges``, binned as keyscore bins."""
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    return {
        "edges": [float(e) for e in edges],
        "shares": [float(c) for c in counts / len(values)],
    }


# ---------------------------------------------------------------------------------------------
# Predictions


def _prediction(estimator: Any, spec: dict, data: Any, input_names: list, n_rows: int) -> dict:
    """Bins of the model's value on the reference rows."""
    output = spec["output"]
    x = _model_input(estimator, data, input_names)
    if output["type"] == "regression":
        values = np.asarray(_call(estimator, "predict", x), dtype=np.float64).reshape(-1)
    else:
        k = len(output["classes"])
        proba = np.asarray(_call(estimator, "predict_proba", x), dtype=np.float64)
        if proba.ndim == 1:  # a library Booster's binary model: the second class's probability
            proba = np.column_stack([1.0 - proba, proba])
        if proba.shape != (n_rows, k):
            raise ValueError(
                f"the model's probabilities on the reference have shape {proba.shape}, expected"
                f" ({n_rows}, {k})"
            )
        if k == 2:
            values = proba[:, 1]
        else:
            # The predicted class index, first on ties as keyscore picks it.
            index = np.argmax(proba, axis=1).astype(np.float64)
            if k - 1 <= MAX_EDGES:
                return _bins_at(np.arange(1, k, dtype=np.float64) - 0.5, index)
            return _deciles(index)
    if values.shape != (n_rows,) or not np.all(np.isfinite(values)):
        raise ValueError("the model's predictions on the reference are not one finite number per row")
    return _deciles(values)


def _model_input(estimator: Any, data: Any, input_names: list) -> Any:
    """``data`` as the fitted estimator takes it: a frame when it was fitted on one (with its
    columns, in order), otherwise an array (float64 when numeric)."""
    fitted_on_frame = getattr(estimator, "feature_names_in_", None) is not None
    if _is_frame(data):
        frame = data[input_names]
        if fitted_on_frame:
            return frame
        data = frame.to_numpy()
    arr = _array(data)
    if fitted_on_frame:
        import pandas as pd

        return pd.DataFrame(arr, columns=input_names)
    if arr.dtype.kind in "biuf":
        arr = arr.astype(np.float64)
    return arr


def _call(estimator: Any, method: str, x: Any) -> Any:
    """``estimator.method(x)``; a library ``Booster`` has one ``predict`` for values and
    probabilities (XGBoost's in place, without a DMatrix)."""
    if type(estimator).__name__ == "Booster" and hasattr(estimator, "inplace_predict"):
        fn = estimator.inplace_predict
    elif hasattr(estimator, method):
        fn = getattr(estimator, method)
    else:
        fn = estimator.predict
    try:
        return fn(x)
    except (ValueError, TypeError) as err:
        raise ValueError(f"the model cannot score the reference rows: {err}") from err
