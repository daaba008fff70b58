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

Every spec is exported with its training rows as `reference`, and the fixture holds those rows
too (`reference_x`, or `reference_records` for the ColumnTransformer cases), so the test can bin
them as keyscore bins and compare with the exported shares.
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


PREPROCESS_TOLERANCE = 1e-12
COLORS = ["red", "green", "blue", "violet", "black"]
SHOPS = [f"shop-{i}" for i in range(12)]


def string_frame(n, seed, unseen):
    """A seeded frame with string categories and missing values: `color` (one of COLORS,
    about 15% missing), `shop` (one of SHOPS), numbers `user.age` (read from the nested record
    field `user.age`, about 20% missing), `size` and `noise`. With `unseen`, about 10% of
    `color` and `shop` are categories never seen in training."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    color = rng.choice(COLORS, n).astype(object)
    shop = rng.choice(SHOPS, n).astype(object)
    if unseen:
        color[rng.random(n) < 0.1] = "ultraviolet"
        shop[rng.random(n) < 0.1] = "shop-new"
    color[rng.random(n) < 0.15] = None
    age = rng.normal(40.0, 12.0, n)
    age[rng.random(n) < 0.2] = np.nan
    size = rng.gamma(2.0, 3.0, n)
    noise = rng.normal(size=n)
    frame = pd.DataFrame({"color": color, "shop": shop, "user.age": age, "size": size, "noise": noise})
    bonus = {"red": 3.0, "green": -1.0, "blue": 0.5, "violet": 2.0, "black": -2.5}
    signal = (
        np.array([bonus.get(c, 0.0) if c is not None else 1.0 for c in color])
        + 0.05 * np.nan_to_num(age, nan=30.0)
        + 0.3 * size
        + np.array([int(s.split("-")[1]) % 3 if s != "shop-new" else 0 for s in shop])
    )
    return frame, signal + rng.normal(0.0, 0.5, n)


def records(frame):
    """The frame's rows as JSON records as a producer writes them: `user.age` nested in a
    `user` object, a missing value alternately absent and null."""
    out = []
    for i, row in enumerate(frame.to_dict("records")):
        rec = {"id": i, "city": "parity"}
        for name, value in row.items():
            missing = value is None or (isinstance(value, float) and np.isnan(value))
            if missing and i % 2 == 0:
                continue
            v = None if missing else value
            if "." in name:
                outer, inner = name.split(".", 1)
                rec.setdefault(outer, {})[inner] = v
            else:
                rec[name] = v
        out.append(json.dumps(rec, allow_nan=False))
    return out


def preprocess_cases():
    """(case, pipeline, classes or None, exact or tolerance) over string_frame."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

    def one_hot_prep():
        return ColumnTransformer(
            [
                ("color", OneHotEncoder(handle_unknown="ignore"), ["color"]),
                (
                    "numbers",
                    Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]),
                    ["user.age", "size"],
                ),
            ],
            remainder="drop",
        )

    def ordinal_prep():
        return ColumnTransformer(
            [("categories", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1), ["color", "shop"])],
            remainder="passthrough",
        )

    return [
        ("prep_onehot_hgb_regressor", Pipeline([("prep", one_hot_prep()), ("model", HistGradientBoostingRegressor(max_iter=40, random_state=0))]), None, True),
        ("prep_onehot_logistic_binary", Pipeline([("prep", one_hot_prep()), ("model", LogisticRegression(max_iter=500))]), 2, PREPROCESS_TOLERANCE),
        ("prep_ordinal_hgb_binary", Pipeline([("prep", ordinal_prep()), ("model", HistGradientBoostingClassifier(max_iter=30, random_state=0))]), 2, True),
        ("prep_ordinal_hgb_multiclass", Pipeline([("prep", ordinal_prep()), ("model", HistGradientBoostingClassifier(max_iter=30, random_state=0))]), 3, PREPROCESS_TOLERANCE),
    ]


def write_preprocess_case(out_dir, case, pipeline, classes, exact):
    """A Pipeline(ColumnTransformer, model) fitted on string_frame; the fixture holds the
    held-out rows as JSON records (with unseen categories and missing values) instead of x."""
    x_train, y_train = string_frame(600, 1, unseen=False)
    x_test, y_test = string_frame(MAX_ROWS, 2, unseen=True)
    if classes is not None:
        cuts = np.quantile(y_train, np.linspace(0, 1, classes + 1)[1:-1])
        y_train = np.array([f"q{k}" for k in np.searchsorted(cuts, y_train)])
    pipeline.fit(x_train, y_train)
    spec = keyscore_sklearn.export(pipeline, reference=x_train)
    predicted = pipeline.predict(x_test)
    fixture = {
        "case": case,
        "estimator": spec["metadata"]["estimator"],
        "exact": exact is True,
        "tolerance": None if isinstance(exact, bool) else exact,
        "x": [],
        "records": records(x_test),
        "reference_records": records(x_train),
        "predict": [str(label) for label in predicted] if classes else bits(predicted),
        "proba": bits(pipeline.predict_proba(x_test)) if classes else None,
    }
    keyscore_sklearn.write_json(spec, os.path.join(out_dir, f"{case}.spec.json"))
    with open(os.path.join(out_dir, f"{case}.json"), "w", encoding="utf-8") as f:
        json.dump(fixture, f)


def preprocess_refusals():
    """(name, pipeline, text the refusal must contain), fitted on string_frame."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import KBinsDiscretizer, OneHotEncoder

    def pipe(*transformers, remainder="drop"):
        ct = ColumnTransformer(list(transformers), remainder=remainder)
        return Pipeline([("prep", ct), ("model", Ridge())])

    return [
        ("KBinsDiscretizer", pipe(("bins", KBinsDiscretizer(n_bins=3), ["size"])), "KBinsDiscretizer"),
        (
            "OneHotEncoder(handle_unknown='infrequent_if_exist')",
            pipe(("c", OneHotEncoder(handle_unknown="infrequent_if_exist"), ["shop"])),
            "infrequent_if_exist",
        ),
        ("OneHotEncoder(drop='first')", pipe(("c", OneHotEncoder(drop="first"), ["shop"])), "drop='first'"),
        (
            "SimpleImputer(add_indicator=True)",
            pipe(("n", SimpleImputer(add_indicator=True), ["user.age"])),
            "add_indicator",
        ),
        (
            "ColumnTransformer(remainder=StandardScaler)",
            pipe(
                ("c", OneHotEncoder(), ["color", "shop"]),
                ("n", StandardScaler(), ["size"]),
                remainder=StandardScaler(),
            ),
            "remainder=StandardScaler",
        ),
    ]


def bits(values):
    arr = np.ascontiguousarray(values, dtype="<f8")
    return np.vectorize(lambda u: f"{int(u):016x}", otypes=[object])(arr.view("<u8")).tolist()


def write_case(out_dir, case, dataset, estimator, exact, fit_params=None):
    """`exact` is True (bit for bit) or a relative tolerance."""
    names, x_train, x_test, y_train = load(dataset)
    estimator.fit(x_train, y_train, **(fit_params or {}))
    spec = keyscore_sklearn.export(
        estimator, names, metrics={"train_score": estimator.score(x_train, y_train)}, reference=x_train
    )
    classifier = hasattr(estimator, "classes_")
    predicted = estimator.predict(x_test)
    fixture = {
        "case": case,
        "estimator": spec["metadata"]["estimator"],
        "exact": exact is True,
        "tolerance": None if isinstance(exact, bool) else exact,
        "x": bits(x_test),
        "reference_x": bits(x_train),
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
    x_train, y_train = string_frame(200, 3, unseen=False)
    x_train = x_train.fillna({"user.age": 40.0})
    for name, estimator, expect in preprocess_refusals():
        estimator.fit(x_train, y_train)
        try:
            keyscore_sklearn.export(estimator)
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
    for case in preprocess_cases():
        write_preprocess_case(out_dir, *case)
    write_refusals(out_dir)


if __name__ == "__main__":
    main()
