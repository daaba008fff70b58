"""Writes the scikit-learn parity fixtures that tests/sklearn_parity.rs checks keyscore against.

Usage: python make_parity_fixtures.py OUT_DIR

For each supported estimator this fits a small but real model on a dataset shipped with
scikit-learn, exports it with keyscore_sklearn and writes two files: OUT_DIR/<case>.spec.json,
the spec exactly as keyscore_sklearn.write_json writes it for upload, and OUT_DIR/<case>.json:

    {"case": ..., "estimator": ..., "exact": bool,
     "x": [[bits, ...], ...], "predict": [...], "proba": [[bits, ...], ...] | null}

`x` holds held-out rows only. Every float in it (x, regression predictions, probabilities) is
written as the 16 hex digits of its IEEE-754 bits, so the test reads back exactly what
scikit-learn computed. `predict` holds class labels as strings for classifiers.
OUT_DIR/refusals.json lists estimators the exporter must refuse, with the text the refusal
must contain and the message it gave (null: not refused).
"""

import json
import os
import sys
import warnings

import numpy as np
from sklearn import datasets
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import (
    ElasticNet,
    Lasso,
    LinearRegression,
    LogisticRegression,
    Ridge,
    SGDClassifier,
)
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import PolynomialFeatures, StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

import keyscore_sklearn

MAX_ROWS = 300


def load(name):
    data = getattr(datasets, f"load_{name}")()
    x_train, x_test, y_train, y_test = train_test_split(
        data.data, data.target, test_size=0.3, random_state=7
    )
    return list(data.feature_names), x_train, x_test[:MAX_ROWS], y_train


def cases():
    """(case, dataset, estimator, exact)."""
    rs = 0
    scaled = lambda est, **kw: make_pipeline(StandardScaler(**kw), est)  # noqa: E731
    return [
        ("linear_regression", "diabetes", LinearRegression(), False),
        ("ridge", "diabetes", Ridge(alpha=0.5), False),
        ("lasso", "diabetes", Lasso(alpha=0.05), False),
        ("elastic_net_scaled", "diabetes", scaled(ElasticNet(alpha=0.1, l1_ratio=0.3)), False),
        ("ridge_scaled_std_only", "diabetes", scaled(Ridge(), with_mean=False), False),
        ("logistic_binary_scaled", "breast_cancer", scaled(LogisticRegression(max_iter=1000)), False),
        ("logistic_multinomial", "iris", LogisticRegression(max_iter=1000), False),
        ("logistic_multinomial_scaled", "wine", scaled(LogisticRegression(C=0.5)), False),
        ("decision_tree_regressor", "diabetes", DecisionTreeRegressor(max_depth=8, random_state=rs), True),
        ("decision_tree_classifier", "wine", DecisionTreeClassifier(random_state=rs), True),
        ("decision_tree_classifier_scaled", "iris", scaled(DecisionTreeClassifier(random_state=rs)), True),
        ("random_forest_regressor", "diabetes", RandomForestRegressor(n_estimators=30, random_state=rs), True),
        ("random_forest_classifier", "digits", RandomForestClassifier(n_estimators=20, random_state=rs), True),
        (
            "random_forest_classifier_weighted",
            "breast_cancer",
            RandomForestClassifier(n_estimators=15, class_weight="balanced", max_depth=6, random_state=rs),
            True,
        ),
        ("extra_trees_regressor", "diabetes", ExtraTreesRegressor(n_estimators=20, random_state=rs), True),
        ("extra_trees_classifier", "wine", ExtraTreesClassifier(n_estimators=25, random_state=rs), True),
        (
            "mlp_regressor_relu_scaled",
            "diabetes",
            scaled(MLPRegressor(hidden_layer_sizes=(32, 16), max_iter=500, random_state=rs)),
            False,
        ),
        (
            "mlp_regressor_tanh",
            "diabetes",
            MLPRegressor(hidden_layer_sizes=(16,), activation="tanh", max_iter=300, random_state=rs),
            False,
        ),
        (
            "mlp_classifier_binary_logistic_scaled",
            "breast_cancer",
            scaled(MLPClassifier(hidden_layer_sizes=(16, 8), activation="logistic", max_iter=500, random_state=rs)),
            False,
        ),
        (
            "mlp_classifier_softmax_scaled",
            "digits",
            scaled(MLPClassifier(hidden_layer_sizes=(32, 16), max_iter=300, random_state=rs)),
            False,
        ),
        (
            "mlp_classifier_identity",
            "iris",
            MLPClassifier(hidden_layer_sizes=(8,), activation="identity", max_iter=1000, random_state=rs),
            False,
        ),
    ]


def refusals():
    """(estimator, dataset, text the refusal must contain)."""
    return [
        ("GradientBoostingRegressor", "diabetes", GradientBoostingRegressor(n_estimators=5), "GradientBoostingRegressor"),
        ("SVC", "iris", SVC(), "SVC"),
        ("SGDClassifier", "iris", SGDClassifier(random_state=0), "SGDClassifier"),
        (
            "Pipeline(PolynomialFeatures, Ridge)",
            "diabetes",
            make_pipeline(PolynomialFeatures(), Ridge()),
            "PolynomialFeatures",
        ),
        (
            "MLPRegressor(loss='poisson')",
            "diabetes",
            MLPRegressor(hidden_layer_sizes=(4,), loss="poisson", max_iter=20, random_state=0),
            "out_activation_='exp'",
        ),
        (
            "RandomForestRegressor (multi-output)",
            "linnerud",
            RandomForestRegressor(n_estimators=3, random_state=0),
            "n_outputs_=3",
        ),
        ("Ridge (multi-output)", "linnerud", Ridge(), "multi-output"),
    ]


def bits(values):
    arr = np.ascontiguousarray(values, dtype="<f8")
    return np.vectorize(lambda u: f"{int(u):016x}", otypes=[object])(arr.view("<u8")).tolist()


def write_case(out_dir, case, dataset, estimator, exact):
    names, x_train, x_test, y_train = load(dataset)
    estimator.fit(x_train, y_train)
    spec = keyscore_sklearn.export(estimator, names, metrics={"train_score": estimator.score(x_train, y_train)})
    classifier = hasattr(estimator, "classes_")
    predicted = estimator.predict(x_test)
    fixture = {
        "case": case,
        "estimator": spec["metadata"]["estimator"],
        "exact": exact,
        "x": bits(x_test),
        "predict": [str(label) for label in predicted] if classifier else bits(predicted),
        "proba": bits(estimator.predict_proba(x_test)) if classifier else None,
    }
    keyscore_sklearn.write_json(spec, os.path.join(out_dir, f"{case}.spec.json"))
    with open(os.path.join(out_dir, f"{case}.json"), "w", encoding="utf-8") as f:
        json.dump(fixture, f)


def write_refusals(out_dir):
    results = []
    for name, dataset, estimator, expect in refusals():
        data = getattr(datasets, f"load_{dataset}")()
        estimator.fit(data.data, data.target)
        try:
            keyscore_sklearn.export(estimator, list(data.feature_names))
            message = None
        except keyscore_sklearn.UnsupportedEstimatorError as err:
            message = str(err)
        results.append({"estimator": name, "expect": expect, "message": message})
    with open(os.path.join(out_dir, "refusals.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make_parity_fixtures.py OUT_DIR")
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    warnings.simplefilter("ignore")  # convergence warnings of the deliberately small models
    for case in cases():
        write_case(out_dir, *case)
    write_refusals(out_dir)


if __name__ == "__main__":
    main()
