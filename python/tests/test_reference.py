"""`export(..., reference=X)` writes the training data's statistics as keyscore's spec format
documents them (src/model/reference.rs): decile bins with shares counted by keyscore's rule (a
value falls in bin "number of edges <= value"), missing shares, ranges, category codes for
encoded string features and the model's own prediction distribution; and keyscore itself
accepts what is written and refuses a broken reference."""

import json
import os
import pathlib
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

import keyscore_sklearn
from keyscore_sklearn import export

REPO = pathlib.Path(__file__).resolve().parents[2]


def _bin(edges, v):
    """keyscore's Bins::bin, written out: the number of edges <= v."""
    return sum(1 for e in edges if e <= v)


def _check_bins(bins, values):
    """`bins` is a valid set of keyscore bins whose shares are those of `values`."""
    edges, shares = bins["edges"], bins["shares"]
    assert edges == sorted(set(edges)) and len(edges) <= 100
    assert len(shares) == len(edges) + 1
    counts = [0] * len(shares)
    for v in values:
        counts[_bin(edges, v)] += 1
    assert shares == [c / len(values) for c in counts]
    assert abs(sum(shares) - 1.0) < 1e-9


def _hgb(x, y):
    return HistGradientBoostingRegressor(max_iter=10, random_state=0).fit(x, y)


def test_no_reference_without_the_argument():
    x = np.arange(20.0).reshape(10, 2)
    spec = export(LinearRegression().fit(x, x[:, 0]), ["a", "b"])
    assert "reference" not in spec


def test_a_known_column_gives_hand_computed_deciles():
    # 10 rows, one missing: present values sorted 1 1 1 2 2 3 4 5 10; the values at positions
    # 9 * k // 10 (k = 1..9) are 1 1 1 2 2 3 4 5 10, and those above the minimum 1 are the edges.
    a = np.array([5.0, 1.0, 3.0, 2.0, 4.0, np.nan, 1.0, 1.0, 2.0, 10.0])
    b = np.full(10, 7.5)  # constant: no edges, one bin
    x = np.column_stack([a, b])
    model = _hgb(x, np.nan_to_num(a) * 2.0)
    ref = export(model, ["a", "b"], reference=x)["reference"]
    assert ref["rows"] == 10
    fa, fb = ref["features"]
    assert fa == {
        "edges": [2.0, 3.0, 4.0, 5.0, 10.0],
        "shares": [3 / 9, 2 / 9, 1 / 9, 1 / 9, 1 / 9, 1 / 9],
        "missing": 0.1,
        "min": 1.0,
        "max": 10.0,
    }
    assert fb == {"edges": [], "shares": [1.0], "missing": 0.0, "min": 7.5, "max": 7.5}
    # The prediction bins are the deciles of the model's own predictions, NaN row included.
    predicted = model.predict(x)
    _check_bins(ref["prediction"], predicted)
    ordered = np.sort(predicted)
    deciles = {float(ordered[10 * k // 10]) for k in range(1, 10)}
    assert ref["prediction"]["edges"] == sorted(e for e in deciles if e > ordered[0])


def test_every_bin_of_a_continuous_column_holds_about_a_tenth():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1000, 3))
    ref = export(LinearRegression().fit(x, x @ [1.0, 2.0, 3.0]), ["a", "b", "c"], reference=x)["reference"]
    for j, f in enumerate(ref["features"]):
        assert len(f["edges"]) == 9
        assert f["shares"] == [0.1] * 10
        assert (f["min"], f["max"]) == (x[:, j].min(), x[:, j].max())
        _check_bins(f, x[:, j])
    assert ref["prediction"]["shares"] == [0.1] * 10


def test_missing_values_are_counted_apart_and_a_column_without_values_is_refused():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 2))
    x[::4, 0] = np.nan
    model = _hgb(x, np.nan_to_num(x[:, 0]) + x[:, 1])
    f = export(model, ["a", "b"], reference=x)["reference"]["features"][0]
    assert f["missing"] == 0.25
    _check_bins(f, x[~np.isnan(x[:, 0]), 0])
    # A frame with None in an object column reads the same.
    frame = pd.DataFrame({"a": [None if np.isnan(v) else v for v in x[:, 0]], "b": x[:, 1]}, dtype=object)
    assert export(model, ["a", "b"], reference=frame)["reference"] == export(model, ["a", "b"], reference=x)["reference"]
    x[:, 0] = np.nan
    with pytest.raises(ValueError, match="'a' is missing in every row"):
        export(model, ["a", "b"], reference=x)


def test_bad_reference_data_is_refused_by_name():
    x = np.arange(20.0).reshape(10, 2)
    model = LinearRegression().fit(x, x[:, 0])
    with pytest.raises(ValueError, match="reference has 3 columns but the model reads 2"):
        export(model, ["a", "b"], reference=np.zeros((4, 3)))
    with pytest.raises(ValueError, match="reference has no rows"):
        export(model, ["a", "b"], reference=np.zeros((0, 2)))
    with pytest.raises(ValueError, match="2-D array"):
        export(model, ["a", "b"], reference=np.zeros(4))
    with pytest.raises(ValueError, match="reference has no column 'b'"):
        export(model, ["a", "b"], reference=pd.DataFrame({"a": [1.0]}))
    with pytest.raises(ValueError, match="'b' holds 'x', not a number"):
        export(model, ["a", "b"], reference=pd.DataFrame({"a": [1.0], "b": ["x"]}))
    with pytest.raises(ValueError, match="'a' holds an infinite value"):
        export(model, ["a", "b"], reference=np.array([[np.inf, 1.0]]))
    with pytest.raises(ValueError, match="cannot score the reference rows"):
        export(model, ["a", "b"], reference=np.array([[np.nan, 1.0], [1.0, 2.0]]))


def _categorical_pipeline():
    train = pd.DataFrame(
        {
            "color": ["red", "blue", "green", "red", "blue", "red"] * 10,
            "size": np.linspace(1.0, 6.0, 60),
            "unused": np.zeros(60),
        }
    )
    y = (train["color"] == "red") * 2.0 + train["size"]
    prep = ColumnTransformer(
        [
            ("color", OneHotEncoder(handle_unknown="ignore"), ["color"]),
            ("size", make_pipeline(SimpleImputer(), StandardScaler()), ["size"]),
        ],
        remainder="drop",
    )
    return Pipeline([("prep", prep), ("model", LinearRegression())]).fit(train, y)


def test_an_encoded_string_feature_is_binned_by_category_code():
    model = _categorical_pipeline()
    # Categories as exported: blue 0, green 1, red 2; an unknown value is -1, None missing.
    frame = pd.DataFrame(
        {
            "color": ["red", "red", "blue", None, "green", "violet"],
            "size": [1.0, 2.0, np.nan, 4.0, 5.0, 6.0],
            "unused": np.zeros(6),
        }
    )
    spec = export(model, reference=frame)
    assert spec["features"] == ["color", "size"]
    color, size = spec["reference"]["features"]
    assert color == {
        "edges": [-0.5, 0.5, 1.5],
        "shares": [0.2, 0.2, 0.2, 0.4],
        "missing": 1 / 6,
        "min": -1.0,
        "max": 2.0,
    }
    assert size["missing"] == 1 / 6 and (size["min"], size["max"]) == (1.0, 6.0)
    _check_bins(size, [1.0, 2.0, 4.0, 5.0, 6.0])
    _check_bins(spec["reference"]["prediction"], model.predict(frame))
    # The same rows as an array of the frame's columns.
    array = frame.to_numpy(dtype=object)
    assert export(model, reference=array)["reference"] == spec["reference"]


def test_an_ordinal_feature_with_many_categories_falls_back_to_deciles_of_codes():
    cats = [f"shop-{i:03d}" for i in range(150)]
    train = pd.DataFrame({"shop": cats * 2, "n": np.arange(300.0)})
    prep = ColumnTransformer(
        [("shop", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1), ["shop"])],
        remainder="passthrough",
    )
    model = Pipeline([("prep", prep), ("model", LinearRegression())]).fit(train, train["n"])
    f = export(model, reference=train)["reference"]["features"][0]
    assert len(f["edges"]) == 9 and (f["min"], f["max"]) == (0.0, 149.0)
    _check_bins(f, [float(i) for i in range(150)] * 2)


def test_a_binary_classifier_bins_the_probability_of_its_second_class():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, 2))
    y = np.where(x[:, 0] + 0.5 * rng.normal(size=300) > 0, "late", "on_time")
    model = LogisticRegression().fit(x, y)
    spec = export(model, ["a", "b"], reference=x)
    assert spec["output"]["classes"] == ["late", "on_time"]
    p = model.predict_proba(x)[:, 1]
    _check_bins(spec["reference"]["prediction"], p)
    assert spec["reference"]["prediction"]["shares"] == [0.1] * 10


def test_a_multiclass_classifier_bins_the_predicted_class_index():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(300, 2))
    y = np.digitize(x[:, 0], [-0.5, 0.7])
    model = LogisticRegression().fit(x, y)
    prediction = export(model, ["a", "b"], reference=x)["reference"]["prediction"]
    index = np.argmax(model.predict_proba(x), axis=1)
    assert prediction["edges"] == [0.5, 1.5]
    assert prediction["shares"] == [np.count_nonzero(index == k) / 300 for k in range(3)]


def test_library_boosters_bin_their_own_predictions():
    lightgbm = pytest.importorskip("lightgbm")
    xgboost = pytest.importorskip("xgboost")
    rng = np.random.default_rng(7)
    x = rng.normal(size=(400, 3))
    x[::5, 1] = np.nan
    y = (np.nan_to_num(x[:, 1]) + x[:, 0] > 0).astype(int)
    for model, proba in [
        (xgboost.XGBClassifier(n_estimators=5, max_depth=2, n_jobs=1), None),
        (lightgbm.LGBMClassifier(n_estimators=5, num_leaves=4, verbose=-1), None),
    ]:
        model.fit(x, y)
        p = model.predict_proba(x)[:, 1]
        for exported in (model, model.get_booster() if hasattr(model, "get_booster") else model.booster_):
            ref = export(exported, ["a", "b", "c"], reference=x)["reference"]
            assert ref["features"][1]["missing"] == 0.2
            _check_bins(ref["prediction"], np.asarray(p, dtype=np.float64))


def test_a_scaled_pipeline_bins_the_raw_features():
    rng = np.random.default_rng(8)
    x = rng.normal(10.0, 2.0, size=(100, 2))
    model = make_pipeline(StandardScaler(), LinearRegression()).fit(x, x[:, 0])
    ref = export(model, ["a", "b"], reference=x)["reference"]
    assert ref["features"][0]["min"] == x[:, 0].min()
    _check_bins(ref["features"][1], x[:, 1])


# ---------------------------------------------------------------------------------------------
# keyscore reads what is written


def _keyscore_binary():
    """The keyscore binary: $KEYSCORE_BIN, else the debug build of this checkout."""
    candidates = []
    if os.environ.get("KEYSCORE_BIN"):
        candidates.append(pathlib.Path(os.environ["KEYSCORE_BIN"]))
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    candidates += [target / "debug" / "keyscore", target / "release" / "keyscore"]
    found = shutil.which("keyscore")
    if found:
        candidates.append(pathlib.Path(found))
    for path in candidates:
        if path.is_file():
            return str(path)
    pytest.fail(
        "these tests run keyscore itself: build it (cargo build) or set KEYSCORE_BIN to its path;"
        f" looked at {', '.join(str(c) for c in candidates)}"
    )


def _validate(spec, tmp_path):
    path = tmp_path / "model.json"
    keyscore_sklearn.write_json(spec, path)
    return subprocess.run(
        [_keyscore_binary(), "validate", str(path)], capture_output=True, text=True, timeout=60
    )


def test_keyscore_accepts_exported_references_and_refuses_broken_ones(tmp_path):
    model = _categorical_pipeline()
    frame = pd.DataFrame(
        {"color": ["red", None, "violet", "blue"] * 5, "size": np.linspace(0.0, 9.0, 20), "unused": np.zeros(20)}
    )
    spec = export(model, reference=frame)
    done = _validate(spec, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("valid: linear model, 2 features")

    rng = np.random.default_rng(9)
    x = rng.normal(size=(500, 3))
    x[::3, 2] = np.nan
    y = np.digitize(x[:, 0], [-0.3, 0.4])
    hgb = HistGradientBoostingRegressor(max_iter=5).fit(x, y)
    done = _validate(export(hgb, ["a", "b", "c"], reference=x), tmp_path)
    assert done.returncode == 0, done.stderr

    broken = json.loads(json.dumps(spec))
    broken["reference"]["features"][0]["shares"][0] += 0.5
    done = _validate(broken, tmp_path)
    assert done.returncode != 0
    assert "reference.features[0].shares: sum to" in done.stderr, done.stderr
    broken = json.loads(json.dumps(spec))
    broken["reference"]["features"][1]["edges"].reverse()
    done = _validate(broken, tmp_path)
    assert done.returncode != 0
    assert "reference.features[1].edges: not strictly increasing" in done.stderr, done.stderr
