"""The exporter writes specs that, scored as keyscore's spec format documents, give scikit-learn's
predictions; and it refuses what keyscore cannot score, naming the culprit.

`score` below is a plain reading of the spec format (keyscore's src/model/spec.rs), independent
of keyscore's Rust code; tests/sklearn_parity.rs checks the Rust scorer itself.
"""

import json
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_linnerud
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import ElasticNet, Lasso, LinearRegression, LogisticRegression, Ridge
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, PolynomialFeatures, StandardScaler
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

import keyscore_sklearn
from keyscore_sklearn import UnsupportedEstimatorError, export



def _name(est):
    steps = getattr(est, "steps", None)
    return "+".join(type(s).__name__ for _, s in steps) if steps else type(est).__name__


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _activate(name, z):
    return {
        "identity": lambda v: v,
        "relu": lambda v: np.maximum(v, 0.0),
        "tanh": np.tanh,
        "logistic": _sigmoid,
        "softmax": _softmax,
    }[name](z)


def _tree_value(tree, x, f32):
    node = 0
    while tree["left"][node] != -1:
        v = x[tree["feature"][node]]
        v = float(np.float32(v)) if f32 else v
        node = tree["left"][node] if v <= tree["threshold"][node] else tree["right"][node]
    return np.array(tree["value"][node])


def score(spec, X):
    """Scores rows as the spec format documents: values, or class probabilities."""
    spec = json.loads(keyscore_sklearn.dumps(spec))  # what keyscore reads back
    X = np.asarray(X, dtype=np.float64)
    if "scaler" in spec:
        X = (X - np.array(spec["scaler"]["mean"])) / np.array(spec["scaler"]["scale"])
    m = spec["model"]
    if m["kind"] == "linear":
        return X @ np.array(m["coefficients"]) + m["intercept"]
    if m["kind"] == "logistic":
        z = X @ np.array(m["coefficients"]).T + np.array(m["intercepts"])
        if z.shape[1] == 1:
            p = _sigmoid(z[:, 0])
            return np.column_stack([1 - p, p])
        return _softmax(z)
    if m["kind"] == "random_forest":
        f32 = m["threshold_precision"] == "f32"
        out = []
        for x in X:
            total = np.zeros(len(m["trees"][0]["value"][0]))
            for tree in m["trees"]:
                total += _tree_value(tree, x, f32)
            out.append(total / len(m["trees"]))
        out = np.array(out)
        return out[:, 0] if spec["output"]["type"] == "regression" else out
    if m["kind"] == "mlp":
        a = X
        for i, layer in enumerate(m["layers"]):
            a = a @ np.array(layer["weights"]) + np.array(layer["biases"])
            last = i == len(m["layers"]) - 1
            a = _activate(m["output_activation"] if last else m["hidden_activation"], a)
        if spec["output"]["type"] == "regression":
            return a[:, 0]
        if a.shape[1] == 1:
            return np.column_stack([1 - a[:, 0], a[:, 0]])
        return a
    raise AssertionError(m["kind"])


def _data(loader):
    d = loader()
    return d.data, d.target, list(d.feature_names)


REGRESSORS = [
    LinearRegression(),
    Ridge(alpha=0.3),
    Lasso(alpha=0.1),
    ElasticNet(alpha=0.1),
    make_pipeline(StandardScaler(), Ridge()),
    make_pipeline(StandardScaler(with_mean=False), Lasso(alpha=0.1)),
    make_pipeline(StandardScaler(with_std=False), LinearRegression()),
    make_pipeline(StandardScaler(), MLPRegressor(hidden_layer_sizes=(8, 4), max_iter=200, random_state=0)),
]
EXACT_REGRESSORS = [
    DecisionTreeRegressor(max_depth=6, random_state=0),
    RandomForestRegressor(n_estimators=5, random_state=0),
    ExtraTreesRegressor(n_estimators=5, random_state=0),
    make_pipeline(StandardScaler(), DecisionTreeRegressor(random_state=0)),
]
CLASSIFIERS = [
    make_pipeline(StandardScaler(), LogisticRegression()),
    make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(8,), activation="tanh", max_iter=200, random_state=0)),
    make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(6, 6), activation="logistic", max_iter=200, random_state=0)),
]
EXACT_CLASSIFIERS = [
    DecisionTreeClassifier(random_state=0),
    RandomForestClassifier(n_estimators=7, random_state=0),
    ExtraTreesClassifier(n_estimators=7, random_state=0),
    make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=3, random_state=0)),
]


@pytest.mark.parametrize("est", REGRESSORS + EXACT_REGRESSORS, ids=_name)
def test_regressors_score_like_sklearn(est):
    X, y, names = _data(load_diabetes)
    est.fit(X[:300], y[:300])
    got, want = score(export(est, names), X[300:]), est.predict(X[300:])
    if est in EXACT_REGRESSORS:
        assert np.array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("est", CLASSIFIERS + EXACT_CLASSIFIERS, ids=_name)
@pytest.mark.parametrize("loader", [load_iris, load_breast_cancer], ids=["iris", "breast_cancer"])
def test_classifiers_score_like_sklearn(est, loader):
    X, y, names = _data(loader)
    rows = np.random.default_rng(0).permutation(len(X))
    train, test = rows[: len(X) * 2 // 3], rows[len(X) * 2 // 3 :]
    est.fit(X[train], y[train])
    spec = export(est, names)
    got, want = score(spec, X[test]), est.predict_proba(X[test])
    if est in EXACT_CLASSIFIERS:
        assert np.array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
    labels = np.array(spec["output"]["classes"])
    assert list(labels[got.argmax(axis=1)]) == [str(c) for c in est.predict(X[test])]


def test_spec_fields_and_metadata():
    X, y, names = _data(load_iris)
    est = make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=2, random_state=0)).fit(X, y)
    spec = export(est, names, author="ana", metrics={"accuracy": np.float64(0.9)}, metadata={"city": "paris"})
    assert spec["format_version"] == 1
    assert spec["features"] == names
    assert spec["output"] == {"type": "classification", "classes": ["0", "1", "2"]}
    assert spec["model"]["threshold_precision"] == "f32"
    assert spec["scaler"]["mean"] == est[0].mean_.tolist()
    meta = spec["metadata"]
    assert meta["author"] == "ana" and meta["metrics"] == {"accuracy": 0.9} and meta["city"] == "paris"
    assert meta["estimator"] == "Pipeline(StandardScaler, RandomForestClassifier)"
    assert meta["sklearn_version"] and meta["trained_at"].endswith("Z")
    assert json.loads(keyscore_sklearn.to_json(est, names)) ["model"] == spec["model"]


def test_string_labels():
    X, y, names = _data(load_iris)
    labels = np.array(["setosa", "versicolor", "virginica"])[y]
    est = LogisticRegression(max_iter=500).fit(X, labels)
    assert export(est, names)["output"]["classes"] == ["setosa", "versicolor", "virginica"]


def test_write_json_round_trips(tmp_path):
    X, y, names = _data(load_diabetes)
    spec = export(Ridge().fit(X, y), names)
    keyscore_sklearn.write_json(spec, tmp_path / "model.json")
    assert json.loads((tmp_path / "model.json").read_text()) == spec


def test_binary_multinomial_logistic_of_older_sklearn_is_doubled():
    # scikit-learn < 1.8 scores a binary multi_class="multinomial" model as softmax([-d, d]).
    X, y, names = _data(load_breast_cancer)
    est = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    est[-1].multi_class = "multinomial"
    spec = export(est, names)
    d = est.decision_function(X)
    np.testing.assert_allclose(score(spec, X), _softmax(np.column_stack([-d, d])), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda: HistGradientBoostingRegressor(max_iter=3, loss="poisson"), "loss='poisson'"),
        (lambda: make_pipeline(PolynomialFeatures(), LogisticRegression()), "PolynomialFeatures"),
        (lambda: make_pipeline(MinMaxScaler(), LogisticRegression()), "MinMaxScaler"),
        (lambda: make_pipeline(StandardScaler(), StandardScaler(), LogisticRegression()), "more than one StandardScaler"),
        (lambda: make_pipeline(StandardScaler()), "Pipeline ending in StandardScaler"),
    ],
)
def test_unsupported_estimators_are_refused_by_name(make, expected):
    X, y, names = _data(load_iris)
    est = make().fit(X, y)
    with pytest.raises(UnsupportedEstimatorError, match=expected):
        export(est, names)


def test_one_vs_rest_multiclass_logistic_is_refused():
    X, y, names = _data(load_iris)
    est = LogisticRegression(max_iter=500).fit(X, y)
    est.multi_class = "ovr"  # as fitted by scikit-learn < 1.8
    with pytest.raises(UnsupportedEstimatorError, match="multi_class='ovr'"):
        export(est, names)
    binary = LogisticRegression(max_iter=5000).fit(X[y < 2], y[y < 2])
    binary.multi_class = "ovr"  # one row: the sigmoid, which keyscore scores exactly
    assert export(binary, names)["model"]["kind"] == "logistic"


def test_multi_output_is_refused():
    d = load_linnerud()
    names = list(d.feature_names)
    for est, expected in [
        (RandomForestRegressor(n_estimators=2, random_state=0), "n_outputs_=3"),
        (DecisionTreeRegressor(random_state=0), "n_outputs_=3"),
        (MLPRegressor(hidden_layer_sizes=(3,), max_iter=5, random_state=0), "n_outputs_=3"),
        (LinearRegression(), "3 targets"),
    ]:
        est.fit(d.data, d.target)
        with pytest.raises(UnsupportedEstimatorError, match=expected):
            export(est, names)


def test_unknown_activation_is_refused():
    X, y, names = _data(load_iris)
    est = MLPClassifier(hidden_layer_sizes=(3,), max_iter=5, random_state=0).fit(X, y)
    est.activation = "softplus"
    with pytest.raises(UnsupportedEstimatorError, match="activation='softplus'"):
        export(est, names)
    est = MLPRegressor(hidden_layer_sizes=(3,), loss="poisson", max_iter=5, random_state=0).fit(X, y + 1)
    with pytest.raises(UnsupportedEstimatorError, match="MLPRegressor with out_activation_='exp'"):
        export(est, names)


def test_bad_inputs_are_refused():
    X, y, names = _data(load_iris)
    with pytest.raises(NotFittedError):
        export(LogisticRegression(), names)
    est = LogisticRegression(max_iter=500).fit(X, y)
    with pytest.raises(ValueError, match="3 feature names"):
        export(est, names[:3])
    with pytest.raises(ValueError, match="unique"):
        export(est, [names[0]] * 4)
    with pytest.raises(ValueError, match="feature_names is required"):
        export(est, None)
    with pytest.raises(ValueError, match="metric 'loss'"):
        export(est, names, metrics={"loss": float("nan")})
    est.coef_[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        export(est, names)
