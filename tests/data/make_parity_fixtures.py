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
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingRegressor,
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


def synthetic(name):
    """Seeded frames with missing values (NaN) and integer-coded categories.

    Columns: c0 a category in 0..11, c1 a category in 0..39, n0..n4 numbers, with about 15% of
    n0, n2 and c0 missing. The held-out rows also hold categories never seen in training (up to
    60) and negative ones, which the libraries route as unknown (scikit-learn: the missing
    direction) or right (LightGBM)."""
    rng = np.random.default_rng(20261203)
    n = 1600
    c0 = rng.integers(0, 12, n).astype(float)
    c1 = rng.integers(0, 40, n).astype(float)
    num = rng.normal(size=(n, 5))
    x = np.column_stack([c0, c1, num])
    effect0 = rng.normal(size=12)
    effect1 = rng.normal(size=40)
    z = effect0[c0.astype(int)] + 0.5 * effect1[c1.astype(int)] + num[:, 0] - 0.7 * num[:, 1] * num[:, 2]
    for col in (0, 2, 4):
        x[rng.random(n) < 0.15, col] = np.nan
    if name == "synthetic_regression":
        y = z + 0.1 * rng.normal(size=n)
    elif name == "synthetic_binary":
        y = (z + 0.3 * rng.normal(size=n) > 0).astype(int)
    else:
        y = np.digitize(z + 0.3 * rng.normal(size=n), [-0.6, 0.6])
    x_train, x_test, y_train = x[:1200], x[1200:], y[:1200]
    x_test = x_test.copy()
    x_test[::17, 0] = 50.0
    x_test[5::19, 1] = 60.0
    x_test[3::23, 0] = -1.0
    x_test[7::29, 1] = -3.0
    names = ["c0", "c1", "n0", "n1", "n2", "n3", "n4"]
    return names, x_train, x_test[:MAX_ROWS], y_train


def load(name):
    if name.startswith("synthetic_"):
        return synthetic(name)
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
    ] + boosted_cases()


#: Tolerance of the boosted cases that are not bit-exact (see boosted_cases).
BOOSTED_TOLERANCE = 1e-12


def boosted_cases():
    """Boosted trees from scikit-learn, XGBoost and LightGBM. Every prediction a library makes in
    a fixed order (leaf sums in tree order, its own exp) is compared bit for bit. The exception:
    scikit-learn's multiclass probabilities go through numpy's vectorised exp, which may differ
    from the C library's in the last bit; those are compared within 1e-12 relative."""
    import lightgbm
    import xgboost
    from sklearn.ensemble import (
        GradientBoostingClassifier,
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
    )

    rs = 0
    cat = [True, True, False, False, False, False, False]
    lgb = dict(n_estimators=40, num_leaves=15, min_child_samples=5, verbose=-1, random_state=rs)
    lgb_cat = {"categorical_feature": [0, 1]}
    xgb = dict(n_estimators=40, max_depth=4, learning_rate=0.3, random_state=rs, n_jobs=1)
    return [
        ("gb_regressor", "diabetes", GradientBoostingRegressor(n_estimators=60, random_state=rs), True),
        ("gb_classifier_binary", "breast_cancer", GradientBoostingClassifier(n_estimators=40, random_state=rs), True),
        ("gb_classifier_multiclass", "iris", GradientBoostingClassifier(n_estimators=30, random_state=rs), BOOSTED_TOLERANCE),
        ("hgb_regressor", "diabetes", HistGradientBoostingRegressor(max_iter=60, random_state=rs), True),
        ("hgb_classifier_binary", "breast_cancer", HistGradientBoostingClassifier(max_iter=40, random_state=rs), True),
        ("hgb_classifier_multiclass", "iris", HistGradientBoostingClassifier(max_iter=30, random_state=rs), BOOSTED_TOLERANCE),
        (
            "hgb_regressor_categorical_missing",
            "synthetic_regression",
            HistGradientBoostingRegressor(max_iter=60, categorical_features=cat, random_state=rs),
            True,
        ),
        (
            "hgb_classifier_categorical_missing",
            "synthetic_multiclass",
            HistGradientBoostingClassifier(max_iter=40, categorical_features=cat, random_state=rs),
            BOOSTED_TOLERANCE,
        ),
        (
            "hgb_binary_categorical_missing",
            "synthetic_binary",
            HistGradientBoostingClassifier(max_iter=40, categorical_features=cat, random_state=rs),
            True,
        ),
        ("xgb_regressor", "diabetes", xgboost.XGBRegressor(**xgb), True),
        ("xgb_binary", "breast_cancer", xgboost.XGBClassifier(**xgb), True),
        ("xgb_multiclass", "iris", xgboost.XGBClassifier(**xgb), True),
        ("xgb_regressor_missing", "synthetic_regression", xgboost.XGBRegressor(**xgb), True),
        ("xgb_binary_missing", "synthetic_binary", xgboost.XGBClassifier(**xgb), True),
        ("xgb_multiclass_missing", "synthetic_multiclass", xgboost.XGBClassifier(**xgb), True),
        ("lgbm_regressor", "diabetes", lightgbm.LGBMRegressor(**lgb), True),
        ("lgbm_binary", "breast_cancer", lightgbm.LGBMClassifier(**lgb), True),
        ("lgbm_multiclass", "iris", lightgbm.LGBMClassifier(**lgb), True),
        ("lgbm_regressor_categorical_missing", "synthetic_regression", lightgbm.LGBMRegressor(**lgb), True, lgb_cat),
        ("lgbm_binary_categorical_missing", "synthetic_binary", lightgbm.LGBMClassifier(**lgb), True, lgb_cat),
        ("lgbm_multiclass_categorical_missing", "synthetic_multiclass", lightgbm.LGBMClassifier(**lgb), True, lgb_cat),
    ]


def refusals():
    """(estimator, dataset, text the refusal must contain)."""
    return [
        (
            "GradientBoostingClassifier(loss='exponential')",
            "breast_cancer",
            GradientBoostingClassifier(n_estimators=3, loss="exponential"),
            "loss='exponential'",
        ),
        (
            "GradientBoostingRegressor(init=LinearRegression)",
            "diabetes",
            GradientBoostingRegressor(n_estimators=3, init=LinearRegression()),
            "init=LinearRegression",
        ),
        (
            "HistGradientBoostingRegressor(loss='poisson')",
            "diabetes",
            HistGradientBoostingRegressor(max_iter=3, loss="poisson"),
            "loss='poisson'",
        ),
        ("XGBRegressor(objective='reg:pseudohubererror')", "diabetes", _xgb(objective="reg:pseudohubererror"), "reg:pseudohubererror"),
        ("XGBClassifier(objective='binary:logitraw')", "breast_cancer", _xgb(objective="binary:logitraw", classifier=True), "binary:logitraw"),
        ("XGBRegressor(booster='dart')", "diabetes", _xgb(booster="dart"), "'dart'"),
        ("XGBRegressor(booster='gblinear')", "diabetes", _xgb(booster="gblinear"), "'gblinear'"),
        ("XGBRegressor(missing=0)", "diabetes", _xgb(missing=0.0), "missing=0.0"),
        ("LGBMRegressor(objective='poisson')", "diabetes", _lgbm(objective="poisson"), "poisson"),
        ("LGBMClassifier(objective='multiclassova')", "iris", _lgbm(objective="multiclassova", classifier=True), "multiclassova"),
        ("LGBMRegressor(boosting_type='rf')", "diabetes", _lgbm(boosting_type="rf", subsample=0.5, subsample_freq=1), "average_output"),
        ("LGBMRegressor(linear_tree=True)", "diabetes", _lgbm(linear_tree=True), "linear_tree"),
        ("LGBMRegressor(zero_as_missing=True)", "diabetes", _lgbm(zero_as_missing=True), "zero_as_missing"),
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


def _xgb(classifier=False, **kw):
    import xgboost

    cls = xgboost.XGBClassifier if classifier else xgboost.XGBRegressor
    return cls(n_estimators=3, max_depth=2, n_jobs=1, **kw)


def _lgbm(classifier=False, **kw):
    import lightgbm

    cls = lightgbm.LGBMClassifier if classifier else lightgbm.LGBMRegressor
    return cls(n_estimators=3, num_leaves=4, verbose=-1, **kw)


def bits(values):
    arr = np.ascontiguousarray(values, dtype="<f8")
    return np.vectorize(lambda u: f"{int(u):016x}", otypes=[object])(arr.view("<u8")).tolist()


def write_case(out_dir, case, dataset, estimator, exact, fit_params=None):
    """`exact` is True (bit for bit) or a relative tolerance."""
    names, x_train, x_test, y_train = load(dataset)
    estimator.fit(x_train, y_train, **(fit_params or {}))
    spec = keyscore_sklearn.export(estimator, names, metrics={"train_score": estimator.score(x_train, y_train)})
    classifier = hasattr(estimator, "classes_")
    predicted = estimator.predict(x_test)
    fixture = {
        "case": case,
        "estimator": spec["metadata"]["estimator"],
        "exact": exact is True,
        "tolerance": None if isinstance(exact, bool) else exact,
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
