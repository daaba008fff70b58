"""Export a fitted ``ColumnTransformer`` as a keyscore spec's ``preprocess`` stage.

Supported transformers, each on whole columns of the input frame:

* ``OneHotEncoder`` on string columns, ``handle_unknown`` ``'error'`` or ``'ignore'``, with
  ``drop=None`` and no infrequent categories;
* ``OrdinalEncoder`` on string columns, ``handle_unknown`` ``'error'`` or
  ``'use_encoded_value'`` (any ``unknown_value``), any ``encoded_missing_value``, no
  infrequent categories;
* ``SimpleImputer`` (``mean``, ``median``, ``most_frequent``, ``constant``; ``missing_values``
  NaN, no indicator), ``StandardScaler``, or a ``Pipeline`` of a ``SimpleImputer`` then a
  ``StandardScaler`` on numeric columns;
* ``'passthrough'`` and ``'drop'``, and ``remainder`` ``'drop'`` or ``'passthrough'``.

Anything else raises :class:`UnsupportedEstimatorError` naming the transformer or option.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, OrdinalEncoder, StandardScaler

from .errors import UnsupportedEstimatorError

_STRATEGIES = ("mean", "median", "most_frequent", "constant")


def column_transformer(ct: ColumnTransformer, feature_names: Optional[Sequence[str]]) -> tuple:
    """Returns ``(features, preprocess, width)``: the input columns the stage reads (in the
    order of the frame it was fitted on), the spec's ``preprocess`` object and the number of
    model inputs it writes."""
    names = input_names(ct, feature_names)
    if isinstance(ct.remainder, str):
        if ct.remainder not in ("drop", "passthrough"):
            raise UnsupportedEstimatorError(f"ColumnTransformer remainder={ct.remainder!r}")
    else:
        raise UnsupportedEstimatorError(
            f"ColumnTransformer remainder={type(ct.remainder).__name__} is not supported; use"
            " 'drop' or 'passthrough'"
        )
    columns: list = []
    used: list = []
    for name, transformer, selection in ct.transformers_:
        indices = _indices(selection, names, name)
        if not indices or transformer == "drop":
            continue
        if name == "remainder" and ct.remainder == "passthrough":
            transformer = "passthrough"
        what = f"transformer {name!r}"
        for k, i in enumerate(indices):
            columns.extend(_columns(transformer, k, i, what))
            used.append(i)
    if not columns:
        raise UnsupportedEstimatorError("ColumnTransformer writes no columns")
    # The spec lists the columns the stage reads, in frame order; columns refer to them.
    read = sorted(set(used))
    position = {i: p for p, i in enumerate(read)}
    for c in columns:
        c["feature"] = position[c["feature"]]
    width = sum(
        len(c["categories"]) + int(c.get("missing_is_category", False)) if c["op"] == "one_hot" else 1
        for c in columns
    )
    slices = getattr(ct, "output_indices_", None)
    if slices is not None:
        total = max((s.stop for s in slices.values()), default=0)
        if total != width:
            raise ValueError(
                f"the ColumnTransformer writes {total} columns but the exported stage {width}"
            )
    return [names[i] for i in read], {"columns": columns}, width


def input_names(ct: ColumnTransformer, feature_names: Optional[Sequence[str]]) -> list:
    """The names of every column of the frame ``ct`` was fitted on, in order (those it drops
    included): ``feature_names`` when given, else its ``feature_names_in_``."""
    fitted = getattr(ct, "feature_names_in_", None)
    if feature_names is None:
        if fitted is None:
            raise ValueError(
                "feature_names is required: the ColumnTransformer was not fitted on a DataFrame,"
                " so it does not know its column names"
            )
        feature_names = list(fitted)
    names = [str(f) for f in feature_names]
    if len(names) != ct.n_features_in_:
        raise ValueError(
            f"{len(names)} feature names given but the ColumnTransformer has"
            f" {ct.n_features_in_} input columns"
        )
    if fitted is not None and list(fitted) != names:
        raise ValueError(
            f"feature_names differ from the ColumnTransformer's feature_names_in_: {list(fitted)}"
        )
    return names


def _indices(selection: Any, names: list, transformer: str) -> list:
    if isinstance(selection, slice):
        return list(range(len(names)))[selection]
    if callable(selection):
        raise UnsupportedEstimatorError(f"transformer {transformer!r}: a callable column selection")
    if isinstance(selection, (str, int, np.integer)):
        selection = [selection]
    selection = list(selection)
    if selection and all(isinstance(s, (bool, np.bool_)) for s in selection):
        return [i for i, keep in enumerate(selection) if keep]
    out = []
    for s in selection:
        if isinstance(s, str):
            if s not in names:
                raise ValueError(f"transformer {transformer!r} reads unknown column {s!r}")
            out.append(names.index(s))
        elif isinstance(s, (int, np.integer)):
            out.append(int(s) % len(names))
        else:
            raise UnsupportedEstimatorError(
                f"transformer {transformer!r}: column selection {s!r} is not supported"
            )
    return out


def _columns(transformer: Any, k: int, feature: int, what: str) -> list:
    """The spec columns for input column ``feature``, the ``k``-th the transformer reads."""
    if isinstance(transformer, str) and transformer == "passthrough":
        return [{"op": "numeric", "feature": feature}]
    if isinstance(transformer, FunctionTransformer) and transformer.func is None:
        return [{"op": "numeric", "feature": feature}]
    kind = type(transformer)
    if kind is OneHotEncoder:
        return [_one_hot(transformer, k, feature, what)]
    if kind is OrdinalEncoder:
        return [_ordinal(transformer, k, feature, what)]
    if kind in (SimpleImputer, StandardScaler):
        return [_numeric([transformer], k, feature, what)]
    if kind is Pipeline:
        steps = [s for _, s in transformer.steps if s is not None and s != "passthrough"]
        kinds = [type(s) for s in steps]
        if kinds not in ([SimpleImputer], [StandardScaler], [SimpleImputer, StandardScaler]):
            raise UnsupportedEstimatorError(
                f"{what}: Pipeline({', '.join(t.__name__ for t in kinds)}) is not supported; a"
                " column pipeline may hold a SimpleImputer then a StandardScaler"
            )
        return [_numeric(steps, k, feature, what)]
    raise UnsupportedEstimatorError(
        f"{what}: {kind.__name__} is not supported; keyscore reads OneHotEncoder, OrdinalEncoder,"
        " SimpleImputer, StandardScaler and 'passthrough' columns"
    )


def _numeric(steps: list, k: int, feature: int, what: str) -> dict:
    col: dict = {"op": "numeric", "feature": feature}
    for step in steps:
        if isinstance(step, SimpleImputer):
            if step.strategy not in _STRATEGIES or callable(step.strategy):
                raise UnsupportedEstimatorError(f"{what}: SimpleImputer strategy={step.strategy!r}")
            if not (isinstance(step.missing_values, float) and math.isnan(step.missing_values)):
                raise UnsupportedEstimatorError(
                    f"{what}: SimpleImputer missing_values={step.missing_values!r}; only NaN"
                )
            if step.add_indicator:
                raise UnsupportedEstimatorError(f"{what}: SimpleImputer add_indicator=True")
            stat = float(np.asarray(step.statistics_, dtype=np.float64)[k])
            if not math.isfinite(stat):
                raise UnsupportedEstimatorError(
                    f"{what}: SimpleImputer has no statistic for column {k} (it was all missing)"
                )
            col["impute"] = stat
        else:
            if step.with_mean:
                col["mean"] = _finite(step.mean_[k], f"{what}: StandardScaler.mean_")
            if step.with_std:
                col["scale"] = _finite(step.scale_[k], f"{what}: StandardScaler.scale_")
    return col


def _finite(v: Any, what: str) -> float:
    v = float(v)
    if not math.isfinite(v):
        raise ValueError(f"{what} is not finite")
    return v


def _string_categories(values: Any, what: str) -> tuple:
    """The string categories, and whether missing values (None or NaN, sorted last by
    scikit-learn) were seen in training as a category."""
    cats = list(values)
    missing = False
    if cats and not isinstance(cats[-1], str) and (cats[-1] is None or _is_nan(cats[-1])):
        missing = True
        cats = cats[:-1]
    bad = [c for c in cats if not isinstance(c, str)]
    if bad:
        raise UnsupportedEstimatorError(
            f"{what}: category {bad[0]!r} is not a string; keyscore encodes string columns"
        )
    return cats, missing


def _is_nan(v: Any) -> bool:
    try:
        return math.isnan(v)
    except TypeError:
        return False


def _no_infrequent(enc: Any, what: str) -> None:
    for option in ("min_frequency", "max_categories"):
        if getattr(enc, option, None) is not None:
            raise UnsupportedEstimatorError(f"{what}: {type(enc).__name__} {option}")


def _one_hot(enc: OneHotEncoder, k: int, feature: int, what: str) -> dict:
    if enc.handle_unknown not in ("error", "ignore"):
        raise UnsupportedEstimatorError(
            f"{what}: OneHotEncoder handle_unknown={enc.handle_unknown!r} is not supported; use"
            " 'error' or 'ignore'"
        )
    if enc.drop is not None:
        raise UnsupportedEstimatorError(f"{what}: OneHotEncoder drop={enc.drop!r}")
    _no_infrequent(enc, what)
    cats, missing = _string_categories(enc.categories_[k], what)
    col = {
        "op": "one_hot",
        "feature": feature,
        "categories": cats,
        "handle_unknown": enc.handle_unknown,
    }
    if missing:
        col["missing_is_category"] = True
    return col


def _ordinal(enc: OrdinalEncoder, k: int, feature: int, what: str) -> dict:
    if enc.handle_unknown not in ("error", "use_encoded_value"):
        raise UnsupportedEstimatorError(
            f"{what}: OrdinalEncoder handle_unknown={enc.handle_unknown!r}"
        )
    _no_infrequent(enc, what)
    cats, missing = _string_categories(enc.categories_[k], what)
    col: dict = {
        "op": "ordinal",
        "feature": feature,
        "categories": cats,
        "handle_unknown": enc.handle_unknown,
    }
    if enc.handle_unknown == "use_encoded_value" and not _is_nan(enc.unknown_value):
        col["unknown_value"] = float(enc.unknown_value)
    if missing:
        col["missing_is_category"] = True
        if not _is_nan(enc.encoded_missing_value):
            col["encoded_missing_value"] = float(enc.encoded_missing_value)
    return col
