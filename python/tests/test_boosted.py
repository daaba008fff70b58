"""Boosted-tree exports: a plain reading of the ``boosted_trees`` spec format (keyscore's
src/model/spec.rs), independent of keyscore's Rust code, predicts what the library predicts;
and what cannot be reproduced is refused by name. tests/sklearn_parity.rs checks the Rust
scorer itself, bit for bit."""

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.ensemble import GradientBoostingRegressor, HistGradientBoostingRegressor

import keyscore_sklearn
from keyscore_sklearn import UnsupportedEstimatorError, export


def _frame(seed=3, n=600):
    """Integer categories in column 0 (0..7), numbers elsewhere, 20% of column 1 missing."""
    rng = np.random.default_rng(seed)
    c = rng.integers(0, 8, n).astype(float)
    num = rng.normal(size=(n, 3))
    x = np.column_stack([c, num])
    y = np.sin(c) + num[:, 0] - num[:, 1] ** 2
    x[rng.random(n) < 0.2, 1] = np.nan
    return x, y


def _in(words, c):
    return c // 32 < len(words) and (words[c // 32] >> (c % 32)) & 1 == 1


def _leaf(tree, x, known):
    i = 0
    while tree["left"][i] != -1:
        v = x[tree["feature"][i]]
        cats = (tree.get("categories") or [[]] * len(tree["left"]))[i]
        missing = (tree.get("default_left") or [False] * len(tree["left"]))[i]
        if np.isnan(v):
            left = missing
        elif cats:
            k = (known or [[]] * len(x))[tree["feature"][i]]
            c = int(v)
            left = missing if v < 0 or (k and not _in(k, c)) else _in(cats, c)
        else:
            left = v <= tree["threshold"][i]
        i = tree["left"][i] if left else tree["right"][i]
    return tree["value"][i]


def _score(spec, x):
    m = spec["model"]
    assert m["accumulation"] == "f64" and m["threshold_precision"] == "f64"
    z = list(m["base_score"])
    for t in m["trees"]:
        z[t["output"]] += _leaf(t, x, m.get("known_categories"))
    if m["link"] == "identity":
        return z[0]
    if m["link"] == "logistic":
        p = 1.0 / (1.0 + np.exp(-z[0]))
        return [1.0 - p, p]
    e = np.exp(np.array(z) - max(z))
    return list(e / e.sum())


def test_hist_gradient_boosting_with_categories_and_missing_values():
    x, y = _frame()
    est = HistGradientBoostingRegressor(max_iter=30, categorical_features=[0], random_state=0)
    est.fit(x[:400], y[:400])
    test = x[400:].copy()
    test[::7, 0] = 30.0  # a category never seen: scikit-learn's missing direction
    test[::11, 0] = np.nan
    spec = export(est, ["city_zone", "a", "b", "c"])
    assert spec["model"]["kind"] == "boosted_trees"
    assert any(t.get("categories") for t in spec["model"]["trees"])
    want = est.predict(test)
    got = np.array([_score(spec, row) for row in test])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_lightgbm_binary_with_missing_values():
    lightgbm = pytest.importorskip("lightgbm")
    x, y = _frame(seed=5)
    est = lightgbm.LGBMClassifier(n_estimators=20, num_leaves=7, verbose=-1, random_state=0)
    est.fit(x[:400], (y[:400] > 0).astype(int), categorical_feature=[0])
    spec = export(est, ["zone", "a", "b", "c"])
    assert spec["output"]["classes"] == ["0", "1"]
    got = np.array([_score(spec, row) for row in x[400:]])
    np.testing.assert_allclose(got, est.predict_proba(x[400:]), rtol=1e-12, atol=1e-15)


def test_xgboost_boosters_and_estimators_export_the_same_trees():
    xgboost = pytest.importorskip("xgboost")
    data = load_breast_cancer()
    est = xgboost.XGBClassifier(n_estimators=5, max_depth=3).fit(data.data, data.target)
    names = list(data.feature_names)
    from_estimator = export(est, names)["model"]
    from_booster = export(est.get_booster(), names)["model"]
    assert from_estimator == from_booster
    assert from_estimator["accumulation"] == "f32" and from_estimator["split"] == "less"
    # Every number of an f32 model is an f32 value.
    for t in from_estimator["trees"]:
        assert all(float(np.float32(v)) == v for v in t["value"] + t["threshold"])


def test_gradient_boosting_leaves_are_scaled_by_the_learning_rate():
    data = load_diabetes()
    est = GradientBoostingRegressor(n_estimators=4, learning_rate=0.3, random_state=0)
    est.fit(data.data, data.target)
    spec = export(est, list(data.feature_names))
    t0 = spec["model"]["trees"][0]
    raw = est.estimators_[0, 0].tree_.value[:, 0, 0]
    leaves = [i for i, l in enumerate(t0["left"]) if l == -1]
    assert [t0["value"][i] for i in leaves] == [0.3 * raw[i] for i in leaves]
    assert spec["model"]["threshold_precision"] == "f32"
    assert spec["model"]["base_score"] == [float(np.mean(data.target))]


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda xgb, lgb: xgb.XGBRegressor(n_estimators=2, objective="reg:absoluteerror"), "reg:absoluteerror"),
        (lambda xgb, lgb: xgb.XGBRegressor(n_estimators=2, booster="gblinear"), "'gblinear'"),
        (lambda xgb, lgb: lgb.LGBMRegressor(n_estimators=2, objective="gamma", verbose=-1), "gamma"),
        (lambda xgb, lgb: lgb.LGBMRegressor(n_estimators=2, objective="regression", reg_sqrt=True, verbose=-1), "sqrt"),
    ],
)
def test_library_options_keyscore_cannot_reproduce_are_refused_by_name(make, expected):
    xgboost = pytest.importorskip("xgboost")
    lightgbm = pytest.importorskip("lightgbm")
    data = load_diabetes()
    est = make(xgboost, lightgbm).fit(data.data, np.abs(data.target))
    with pytest.raises(UnsupportedEstimatorError, match=expected) as err:
        export(est, list(data.feature_names))
    assert type(est).__name__ in str(err.value)


def test_string_categories_are_refused_with_the_fix():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"zone": ["a", "b", "c", "a"] * 50, "v": np.arange(200.0)})
    est = HistGradientBoostingRegressor(max_iter=3, categorical_features=["zone"])
    est.fit(frame, np.arange(200.0))
    with pytest.raises(UnsupportedEstimatorError, match="category 'a'"):
        keyscore_sklearn.export(est)
