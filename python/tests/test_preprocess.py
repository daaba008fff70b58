"""A fitted Pipeline(ColumnTransformer, estimator) exports as a spec whose `preprocess` stage,
applied as keyscore's spec format documents, gives the ColumnTransformer's own output; and
transformers or options keyscore cannot apply are refused by name."""

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import (
    KBinsDiscretizer,
    MinMaxScaler,
    OneHotEncoder,
    OrdinalEncoder,
    StandardScaler,
)

from keyscore_sklearn import UnsupportedEstimatorError, export


def _frame(n, seed, unseen=False):
    rng = np.random.default_rng(seed)
    color = rng.choice(["red", "green", "blue"], n).astype(object)
    if unseen:
        color[::7] = "ultraviolet"
    color[rng.random(n) < 0.2] = None
    age = rng.normal(40, 10, n)
    age[rng.random(n) < 0.2] = np.nan
    return pd.DataFrame({"color": color, "age": age, "size": rng.gamma(2, 3, n), "noise": rng.normal(size=n)})


def _apply(spec, frame):
    """The spec's preprocess stage, read from the spec format's documentation."""
    features = spec["features"]
    rows = []
    for rec in frame.to_dict("records"):
        out = []
        for col in spec["preprocess"]["columns"]:
            v = rec[features[col["feature"]]]
            missing = v is None or (isinstance(v, float) and np.isnan(v))
            if col["op"] == "numeric":
                if missing and "impute" in col:
                    v = col["impute"]
                out.append((float(v) - col.get("mean", 0.0)) / col.get("scale", 1.0))
            elif col["op"] == "one_hot":
                cats = col["categories"]
                slots = [0.0] * (len(cats) + int(col.get("missing_is_category", False)))
                if missing and col.get("missing_is_category"):
                    slots[-1] = 1.0
                elif not missing and v in cats:
                    slots[cats.index(v)] = 1.0
                out.extend(slots)
            else:
                cats = col["categories"]
                if missing and col.get("missing_is_category"):
                    out.append(col.get("encoded_missing_value", np.nan))
                elif not missing and v in cats:
                    out.append(float(cats.index(v)))
                else:
                    out.append(col.get("unknown_value", np.nan))
        rows.append(out)
    return np.array(rows)


@pytest.mark.parametrize(
    "ct",
    [
        lambda: ColumnTransformer(
            [
                ("c", OneHotEncoder(handle_unknown="ignore"), ["color"]),
                ("n", Pipeline([("i", SimpleImputer(strategy="median")), ("s", StandardScaler())]), ["age", "size"]),
            ]
        ),
        lambda: ColumnTransformer(
            [
                ("c", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-2), ["color"]),
                ("n", SimpleImputer(strategy="constant", fill_value=7.5), ["age"]),
            ],
            remainder="passthrough",
        ),
        lambda: ColumnTransformer(
            [("n", SimpleImputer(strategy="most_frequent"), ["age"]), ("s", StandardScaler(with_mean=False), ["size"])],
            remainder="drop",
        ),
    ],
)
def test_the_exported_stage_gives_the_column_transformers_output(ct):
    train, test = _frame(300, 1), _frame(100, 2, unseen=True)
    pipe = Pipeline([("prep", ct()), ("model", Ridge())]).fit(train, np.arange(300.0))
    spec = export(pipe)
    want = pipe.named_steps["prep"].transform(test)
    got = _apply(spec, test[spec["features"]])
    np.testing.assert_array_equal(got, want)
    assert spec["metadata"]["estimator"] == "Pipeline(ColumnTransformer, Ridge)"


def test_remainder_drop_leaves_unread_columns_out_of_the_features():
    ct = ColumnTransformer([("s", StandardScaler(), ["size"])], remainder="drop")
    spec = export(Pipeline([("prep", ct), ("model", Ridge())]).fit(_frame(50, 3), np.arange(50.0)))
    assert spec["features"] == ["size"]


@pytest.mark.parametrize(
    "transformers, remainder, expect",
    [
        ([("b", KBinsDiscretizer(n_bins=3), ["size"])], "drop", "KBinsDiscretizer"),
        ([("m", MinMaxScaler(), ["size"])], "drop", "MinMaxScaler"),
        ([("c", OneHotEncoder(handle_unknown="infrequent_if_exist"), ["color"])], "drop", "infrequent_if_exist"),
        ([("c", OneHotEncoder(drop="first"), ["color"])], "drop", "drop='first'"),
        ([("c", OneHotEncoder(min_frequency=5), ["color"])], "drop", "min_frequency"),
        ([("c", OrdinalEncoder(max_categories=2), ["color"])], "drop", "max_categories"),
        ([("n", SimpleImputer(add_indicator=True), ["age"])], "drop", "add_indicator"),
        ([("s", StandardScaler(), ["size"])], StandardScaler(), "remainder=StandardScaler"),
    ],
)
def test_unsupported_transformers_and_options_are_refused_by_name(transformers, remainder, expect):
    frame = _frame(100, 4).fillna({"age": 40.0, "color": "red"})
    if remainder != "drop":
        frame = frame[["size", "age", "noise"]]
    pipe = Pipeline([("prep", ColumnTransformer(transformers, remainder=remainder)), ("model", Ridge())])
    pipe.fit(frame, np.arange(100.0))
    with pytest.raises(UnsupportedEstimatorError, match=expect.replace("(", r"\(").replace(")", r"\)")):
        export(pipe)
