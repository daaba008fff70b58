"""Boosted tree ensembles as keyscore ``boosted_trees`` specs.

Exporters for scikit-learn's ``GradientBoostingRegressor/Classifier`` and
``HistGradientBoostingRegressor/Classifier``, XGBoost (``gbtree`` boosters with
``reg:squarederror``, ``binary:logistic`` or ``multi:softprob``) and LightGBM (``regression``,
``binary``, ``multiclass``). Each returns ``(params, output)`` for :func:`keyscore_sklearn.export`,
which accepts these estimators (and XGBoost / LightGBM ``Booster`` objects) directly.

Each exporter writes what the library computes at predict time:

* scikit-learn ``GradientBoosting*``: features rounded to ``float32`` and compared ``<=`` with the
  ``float64`` threshold, the init estimator's raw prediction as base score, leaves multiplied by
  the learning rate (the product scikit-learn adds), sums in ``float64``. No missing values
  (scikit-learn refuses NaN for these models).
* ``HistGradientBoosting*``: ``float64`` comparisons, the baseline prediction as base score,
  leaves as stored (already shrunk), each node's missing-value direction, categorical splits as
  their left-category bitsets and each categorical feature's known categories (an unknown
  category goes the missing direction, as in scikit-learn). scikit-learn ordinal-encodes
  categorical columns before its trees see them; the bitsets are translated back to the
  category values, which must be integers in [0, 2^20).
* XGBoost: features rounded to ``float32``, ``x < threshold``, leaf values and base margin in
  ``float32``, sums and the link in ``float32``; the base margin of ``binary:logistic`` is
  ``-logf(1 / base_score - 1)`` as XGBoost computes it.
* LightGBM: ``float64`` throughout, ``x <= threshold``; a node whose missing type is ``None``
  sends a missing value where ``0.0`` goes (LightGBM reads NaN as 0 there); categorical splits
  send NaN and negative values right.

Whatever cannot be reproduced exactly raises :class:`UnsupportedEstimatorError` naming it.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from .errors import UnsupportedEstimatorError

_LEAF = -1


def _finite(values: Any, what: str) -> list:
    arr = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} contains NaN or infinity; the model cannot be exported")
    return arr.tolist()


def _bitset(categories: Any) -> list:
    """The u32 words of a bitset holding ``categories`` (non-negative integers)."""
    cats = [int(c) for c in categories]
    if not cats:
        return []
    words = [0] * (max(cats) // 32 + 1)
    for c in cats:
        words[c // 32] |= 1 << (c % 32)
    return words


def _classes(model: Any) -> list:
    classes = [str(c) for c in model.classes_]
    if len(set(classes)) != len(classes):
        raise UnsupportedEstimatorError(
            f"{type(model).__name__} class labels are not distinct as strings: {classes}"
        )
    return classes


def _params(trees, base, link, *, threshold_precision="f64", accumulation="f64", split="less_or_equal", known=None):
    params = {
        "kind": "boosted_trees",
        "trees": trees,
        "base_score": _finite(base, "base score"),
        "link": link,
        "threshold_precision": threshold_precision,
        "accumulation": accumulation,
        "split": split,
    }
    if known is not None:
        params["known_categories"] = known
    return params


# ---------------------------------------------------------------------------------------------
# scikit-learn


def gradient_boosting(model: Any, n: int) -> tuple:
    """``GradientBoostingRegressor`` / ``GradientBoostingClassifier``."""
    name = type(model).__name__
    init = model.init_
    if not (isinstance(init, str) and init == "zero") and type(init).__name__ not in (
        "DummyRegressor",
        "DummyClassifier",
    ):
        raise UnsupportedEstimatorError(
            f"{name} with init={type(init).__name__} is not supported: its initial prediction"
            " depends on the record; use the default init or init='zero'"
        )
    classifier = hasattr(model, "classes_")
    if classifier and model.loss != "log_loss":
        raise UnsupportedEstimatorError(
            f"{name} with loss={model.loss!r} is not supported; keyscore scores loss='log_loss'"
        )
    # The init estimator's raw prediction is the same for every record.
    base = model._raw_predict_init(np.zeros((1, n), dtype=np.float32))[0]
    lr = np.float64(model.learning_rate)
    estimators = model.estimators_
    k_outputs = estimators.shape[1]
    trees = []
    for stage in estimators:
        for k, est in enumerate(stage):
            t = est.tree_
            value = np.asarray(t.value, dtype=np.float64)[:, 0, 0]
            trees.append(
                {
                    "output": k,
                    "feature": np.asarray(t.feature, dtype=np.int64).tolist(),
                    "threshold": _finite(t.threshold, f"{name} threshold"),
                    "left": np.asarray(t.children_left, dtype=np.int64).tolist(),
                    "right": np.asarray(t.children_right, dtype=np.int64).tolist(),
                    # scikit-learn adds learning_rate * value, one float64 product per leaf.
                    "value": _finite(lr * value, f"{name} leaf value"),
                }
            )
    if classifier:
        classes = _classes(model)
        link = "logistic" if k_outputs == 1 else "softmax"
        output = {"type": "classification", "classes": classes}
    else:
        link, output = "identity", {"type": "regression"}
    return _params(trees, base, link, threshold_precision="f32"), output


_HGB_IDENTITY_LOSSES = ("squared_error", "absolute_error", "quantile")


def _hgb_categories(model: Any, n: int) -> tuple:
    """How a ``HistGradientBoosting*`` model with categorical features reads them.

    scikit-learn ordinal-encodes the categorical columns (unknown values and NaN become NaN),
    puts them first, then the numeric columns, and learns on that. Returns ``remap`` (tree
    feature index -> column of the record) and, per encoded column, its category values
    (code -> value). keyscore reads category values directly, so they must be non-negative
    integers; negative and unknown values take the missing-value direction, as the encoder's
    NaN does."""
    name = type(model).__name__
    is_cat = np.asarray(model.is_categorical_, dtype=bool)
    cat_cols, num_cols = np.flatnonzero(is_cat), np.flatnonzero(~is_cat)
    remap = np.concatenate([cat_cols, num_cols]).astype(int).tolist()
    encoder = model._preprocessor.named_transformers_["encoder"]
    values = []
    for j, col in enumerate(cat_cols):
        cats = [c for c in encoder.categories_[j] if not (isinstance(c, float) and math.isnan(c))]
        for c in cats:
            if isinstance(c, str) or not float(c).is_integer() or not 0 <= float(c) < 2**20:
                raise UnsupportedEstimatorError(
                    f"{name} categorical feature {col} has category {c!r}; keyscore reads"
                    " categories as integers in [0, 2^20): encode them so (strings: put an"
                    " OrdinalEncoder in the exported Pipeline)"
                )
        values.append([int(float(c)) for c in cats])
    return remap, values


def _decode_bitset(words: Any, values: list) -> list:
    """A bitset over codes, as a bitset over the category values ``values[code]``."""
    codes = [c for c in range(len(words) * 32) if int(words[c // 32]) >> (c % 32) & 1]
    return _bitset(values[c] for c in codes if c < len(values))


def hist_gradient_boosting(model: Any, n: int) -> tuple:
    """``HistGradientBoostingRegressor`` / ``HistGradientBoostingClassifier``."""
    name = type(model).__name__
    classifier = hasattr(model, "classes_")
    if classifier:
        classes = _classes(model)
        link = "logistic" if model.n_trees_per_iteration_ == 1 else "softmax"
        output = {"type": "classification", "classes": classes}
    else:
        if model.loss not in _HGB_IDENTITY_LOSSES:
            raise UnsupportedEstimatorError(
                f"{name} with loss={model.loss!r} is not supported (its predictions go through a"
                f" log link); keyscore scores losses {', '.join(_HGB_IDENTITY_LOSSES)}"
            )
        link, output = "identity", {"type": "regression"}
    known = None
    remap, values = list(range(n)), []
    if getattr(model, "_preprocessor", None) is not None:
        remap, values = _hgb_categories(model, n)
        bitsets, f_idx_map = model._bin_mapper.make_known_categories_bitsets()
        known = [[] for _ in range(n)]
        for j, vals in enumerate(values):
            known[remap[j]] = _decode_bitset(bitsets[f_idx_map[j]], vals)
    trees = []
    for predictors in model._predictors:
        for k, predictor in enumerate(predictors):
            nodes = predictor.nodes
            leaf = nodes["is_leaf"].astype(bool)
            categorical = nodes["is_categorical"].astype(bool)
            threshold = np.array(nodes["num_threshold"], dtype=np.float64)
            # A split that sends every non-missing value left has threshold +inf; the largest
            # double sends every finite value the same way.
            threshold[np.isposinf(threshold)] = np.finfo(np.float64).max
            threshold[np.isneginf(threshold)] = -np.finfo(np.float64).max
            threshold[leaf | categorical] = 0.0
            bitsets = predictor.raw_left_cat_bitsets
            # A categorical split may send no category left (only missing and unknown values):
            # its bitset is [0], which keyscore reads as categorical all the same.
            cats = [
                _decode_bitset(bitsets[nodes["bitset_idx"][i]], values[nodes["feature_idx"][i]]) or [0]
                if categorical[i] and not leaf[i]
                else []
                for i in range(len(nodes))
            ]
            tree = {
                "output": k,
                "feature": [-2 if leaf[i] else remap[int(f)] for i, f in enumerate(nodes["feature_idx"])],
                "threshold": _finite(threshold, f"{name} threshold"),
                "left": np.where(leaf, _LEAF, nodes["left"].astype(np.int64)).tolist(),
                "right": np.where(leaf, _LEAF, nodes["right"].astype(np.int64)).tolist(),
                "value": _finite(np.where(leaf, nodes["value"], 0.0), f"{name} leaf value"),
                "default_left": [bool(v) for v in nodes["missing_go_to_left"]],
            }
            if any(cats):
                tree["categories"] = cats
            trees.append(tree)
    base = np.asarray(model._baseline_prediction, dtype=np.float64).ravel()
    return _params(trees, base, link, known=known), output


# ---------------------------------------------------------------------------------------------
# XGBoost


_XGB_LINKS = {"reg:squarederror": "identity", "binary:logistic": "logistic", "multi:softprob": "softmax"}


def _logit_f32(p: np.float32) -> np.float32:
    """XGBoost's base margin of a probability: ``-logf(1.0f / p - 1.0f)``, in float32, with ``p``
    clamped to [1e-6, 1 - 1e-6] as XGBoost does (``logf`` is correctly rounded in glibc; the
    float64 log rounded to float32 gives the same value)."""
    eps = np.float32(1e-6)
    p = min(max(np.float32(p), eps), np.float32(1.0) - eps)
    v = np.float32(np.float32(1.0) / p - np.float32(1.0))
    return -np.float32(math.log(float(v)))


def xgboost(model: Any, n: int) -> tuple:
    """An XGBoost ``Booster``, ``XGBRegressor`` or ``XGBClassifier``."""
    booster = model.get_booster() if hasattr(model, "get_booster") else model
    missing = getattr(model, "missing", np.nan)
    if missing is not None and not (isinstance(missing, float) and math.isnan(missing)):
        raise UnsupportedEstimatorError(
            f"XGBoost missing={missing!r} is not supported: keyscore's missing values are absent"
            " or null fields (NaN)"
        )
    doc = json.loads(booster.save_raw(raw_format="json"))
    learner = doc["learner"]
    objective = learner["objective"]["name"]
    link = _XGB_LINKS.get(objective)
    if link is None:
        raise UnsupportedEstimatorError(
            f"XGBoost objective {objective!r} is not supported; keyscore scores"
            f" {', '.join(_XGB_LINKS)}"
        )
    gb = learner["gradient_booster"]
    if gb["name"] != "gbtree":
        raise UnsupportedEstimatorError(
            f"XGBoost booster {gb['name']!r} is not supported; keyscore scores booster='gbtree'"
        )
    if getattr(booster, "best_iteration", None) is not None and hasattr(model, "get_booster"):
        if booster.num_boosted_rounds() != booster.best_iteration + 1:
            raise UnsupportedEstimatorError(
                "XGBoost early stopping (best_iteration before the last round) is not supported;"
                " refit with the best number of rounds"
            )
    lmp = learner["learner_model_param"]
    if int(lmp.get("num_target", "1")) != 1:
        raise UnsupportedEstimatorError("XGBoost multi-target models (num_target > 1) are not supported")
    num_class = int(lmp.get("num_class", "0"))
    k_outputs = max(num_class, 1)
    base = [np.float32(float(v)) for v in lmp["base_score"].strip("[]").split(",")]
    if len(base) == 1:
        base = base * k_outputs
    if len(base) != k_outputs:
        raise UnsupportedEstimatorError(f"XGBoost base_score {lmp['base_score']} does not match num_class={num_class}")
    if objective == "binary:logistic":
        base = [_logit_f32(b) for b in base]
    tmodel = gb["model"]
    trees = []
    for t, info in zip(tmodel["trees"], tmodel["tree_info"]):
        if int(t["tree_param"].get("size_leaf_vector", "1")) > 1:
            raise UnsupportedEstimatorError("XGBoost vector-leaf trees (multi_strategy) are not supported")
        if any(int(s) != 0 for s in t.get("split_type", [])):
            raise UnsupportedEstimatorError(
                "XGBoost categorical splits (enable_categorical) are not supported; one-hot or"
                " ordinal-encode the feature, or use LightGBM or HistGradientBoosting"
            )
        left = [int(c) for c in t["left_children"]]
        right = [int(c) for c in t["right_children"]]
        cond = [float(np.float32(c)) for c in t["split_conditions"]]
        feature = [int(f) for f in t["split_indices"]]
        is_leaf = [c == -1 for c in left]
        trees.append(
            {
                "output": int(info),
                "feature": [-2 if lf else f for f, lf in zip(feature, is_leaf)],
                "threshold": [0.0 if lf else c for c, lf in zip(cond, is_leaf)],
                "left": left,
                "right": right,
                "value": [c if lf else 0.0 for c, lf in zip(cond, is_leaf)],
                "default_left": [bool(int(d)) for d in t["default_left"]],
            }
        )
    if link == "identity":
        output = {"type": "regression"}
    else:
        classes = _classes(model) if hasattr(model, "classes_") else [str(i) for i in range(max(k_outputs, 2))]
        output = {"type": "classification", "classes": classes}
    params = _params(
        trees,
        [float(b) for b in base],
        link,
        threshold_precision="f32",
        accumulation="f32",
        split="less",
    )
    return params, output


def xgboost_features(model: Any) -> int:
    booster = model.get_booster() if hasattr(model, "get_booster") else model
    return int(booster.num_features())


# ---------------------------------------------------------------------------------------------
# LightGBM


def lightgbm(model: Any, n: int) -> tuple:
    """A LightGBM ``Booster``, ``LGBMRegressor`` or ``LGBMClassifier``."""
    booster = model.booster_ if hasattr(model, "booster_") else model
    if getattr(booster, "pandas_categorical", None):
        raise UnsupportedEstimatorError(
            "LightGBM pandas_categorical (categories taken from a DataFrame's category dtype) is"
            " not supported; fit on integer-coded categories"
        )
    dump = booster.dump_model()
    objective, *options = dump["objective"].split()
    opts = dict(o.split(":", 1) for o in options if ":" in o)
    if objective == "regression" and not options:
        link = "identity"
    elif objective == "binary" and opts.get("sigmoid") == "1":
        link = "logistic"
    elif objective == "multiclass":
        link = "softmax"
    else:
        raise UnsupportedEstimatorError(
            f"LightGBM objective {dump['objective']!r} is not supported; keyscore scores"
            " 'regression', 'binary' (sigmoid:1) and 'multiclass'"
        )
    if dump.get("average_output"):
        raise UnsupportedEstimatorError("LightGBM average_output (boosting='rf') is not supported")
    k_outputs = int(dump["num_tree_per_iteration"])
    trees = [_lightgbm_tree(info, i % k_outputs) for i, info in enumerate(dump["tree_info"])]
    if link == "identity":
        output = {"type": "regression"}
    else:
        classes = _classes(model) if hasattr(model, "classes_") else [str(i) for i in range(max(k_outputs, 2))]
        output = {"type": "classification", "classes": classes}
    return _params(trees, [0.0] * k_outputs, link), output


def _lightgbm_tree(info: dict, output: int) -> dict:
    tree = {"output": output, "feature": [], "threshold": [], "left": [], "right": [], "value": [], "default_left": [], "categories": []}
    stack = [(info["tree_structure"], None, None)]
    while stack:
        node, parent, side = stack.pop()
        i = len(tree["feature"])
        if parent is not None:
            tree[side][parent] = i
        if "leaf_value" in node:
            if "leaf_coeff" in node:
                raise UnsupportedEstimatorError("LightGBM linear_tree is not supported")
            tree["feature"].append(-2)
            tree["threshold"].append(0.0)
            tree["value"].append(float(node["leaf_value"]))
            tree["default_left"].append(False)
            tree["categories"].append([])
            tree["left"].append(_LEAF)
            tree["right"].append(_LEAF)
            continue
        tree["feature"].append(int(node["split_feature"]))
        tree["value"].append(0.0)
        tree["left"].append(0)
        tree["right"].append(0)
        if node["decision_type"] == "==":
            cats = [int(c) for c in str(node["threshold"]).split("||")]
            if any(c < 0 for c in cats):
                raise UnsupportedEstimatorError("LightGBM categorical split on a negative category is not supported")
            tree["threshold"].append(0.0)
            tree["categories"].append(_bitset(cats))
            # LightGBM sends NaN and negative values right at a categorical split.
            tree["default_left"].append(False)
        elif node["decision_type"] == "<=":
            threshold = float(node["threshold"])
            missing = node["missing_type"]
            if missing == "Zero":
                raise UnsupportedEstimatorError(
                    "LightGBM zero_as_missing (missing_type 'Zero') is not supported"
                )
            tree["threshold"].append(threshold)
            tree["categories"].append([])
            # Missing type None: LightGBM reads NaN as 0.0 and compares.
            tree["default_left"].append(bool(node["default_left"]) if missing == "NaN" else 0.0 <= threshold)
        else:
            raise UnsupportedEstimatorError(f"LightGBM decision_type {node['decision_type']!r} is not supported")
        stack.append((node["right_child"], i, "right"))
        stack.append((node["left_child"], i, "left"))
    _finite(tree["threshold"], "LightGBM threshold")
    _finite(tree["value"], "LightGBM leaf value")
    if not any(tree["categories"]):
        del tree["categories"]
    return tree


def lightgbm_features(model: Any) -> int:
    booster = model.booster_ if hasattr(model, "booster_") else model
    return int(booster.num_feature())


def _naming_the_class(exporter):
    """``exporter``, with every refusal's message starting with the model's class name."""

    def export(model: Any, n: int) -> tuple:
        try:
            return exporter(model, n)
        except UnsupportedEstimatorError as err:
            raise UnsupportedEstimatorError(f"{type(model).__name__}: {err}") from None

    return export


def library_exporter(model: Any):
    """``(exporter, n_features)`` for an XGBoost or LightGBM model, or None."""
    module = type(model).__module__.split(".")[0]
    if module == "xgboost":
        return _naming_the_class(xgboost), xgboost_features
    if module == "lightgbm":
        return _naming_the_class(lightgbm), lightgbm_features
    return None
