"""keyscore's boosted-tree scoring next to XGBoost's and LightGBM's own predict, in one run.

Trains two regression models on a seeded synthetic frame of 16 features (20,000 rows):
XGBoost with 100 trees of depth 6, and LightGBM with 500 trees of 31 leaves. Exports them with
keyscore_sklearn, measures each library's single-row predict (XGBoost ``inplace_predict``,
LightGBM ``Booster.predict``, one thread) and its predict of 64-row batches, XGBoost's C API
single-row path (``xgboost_c_api.c``, compiled with ``cc`` against the installed libxgboost,
when a C compiler is there), then runs
``cargo bench --bench boosted`` on the exported models (which first checks that keyscore
predicts what the library predicts, bit for bit) and prints ns per record side by side.

Usage (from the repository root, with xgboost, lightgbm and ./python importable):

    python benches/boosted/compare.py [OUT_DIR]
"""

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import lightgbm
import numpy as np
import xgboost

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "python"))
import keyscore_sklearn  # noqa: E402

N_FEATURES = 16
BATCH = 64
ROUNDS = 11


def frame(seed=16):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(22048, N_FEATURES)) * (1 + np.arange(N_FEATURES) / 8) + np.arange(N_FEATURES)
    y = np.sin(x[:, 0]) + x[:, 1] * x[:, 2] / 10 - np.abs(x[:, 3] - 3) + 0.1 * rng.normal(size=len(x))
    return x[:20000], y[:20000], x[20000:]


def per_record(fn, rows, per_call):
    """Median over ROUNDS rounds of ns per record, each round about 0.2 s."""
    calls = max(1, int(0.2 / max(timed(fn, rows, 20) / 20, 1e-9)))
    figures = [timed(fn, rows, calls) / calls / per_call * 1e9 for _ in range(ROUNDS)]
    return statistics.median(figures)


def timed(fn, rows, calls):
    start = time.perf_counter()
    for i in range(calls):
        fn(rows[i % len(rows)])
    return time.perf_counter() - start


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="boosted-bench-")
    os.makedirs(out, exist_ok=True)
    x, y, test = frame()
    names = [f"f{i}" for i in range(N_FEATURES)]
    xgb = xgboost.XGBRegressor(n_estimators=100, max_depth=6, n_jobs=1, random_state=0).fit(x, y)
    lgb = lightgbm.LGBMRegressor(n_estimators=500, num_leaves=31, n_jobs=1, verbose=-1, random_state=0).fit(x, y)
    booster = xgb.get_booster()
    booster.set_param({"nthread": 1})
    lbooster = lgb.booster_
    singles = [test[i : i + 1] for i in range(len(test))]
    batches = [test[i : i + BATCH] for i in range(0, len(test) - BATCH, BATCH)]
    library = {
        "xgb_100x6": (
            "XGBoost inplace_predict",
            lambda r: booster.inplace_predict(r),
            booster.inplace_predict(test).astype(np.float64),
        ),
        "lgbm_500x31": (
            "LightGBM Booster.predict",
            lambda r: lbooster.predict(r, num_threads=1),
            lbooster.predict(test, num_threads=1),
        ),
    }
    for case, model in (("xgb_100x6", xgb), ("lgbm_500x31", lgb)):
        keyscore_sklearn.write_json(keyscore_sklearn.export(model, names), os.path.join(out, f"{case}.spec.json"))
        want = library[case][2]
        with open(os.path.join(out, f"{case}.rows.json"), "w", encoding="utf-8") as f:
            json.dump({"x": test.tolist(), "want": [[float(v)] for v in want]}, f)
    lib = {}
    for case, (name, fn, _) in library.items():
        lib[case] = (name, per_record(fn, singles, 1), per_record(fn, batches, BATCH))
    c_api = xgboost_c_api(booster, test, out)
    run = subprocess.run(
        ["cargo", "bench", "--bench", "boosted", "--", out],
        check=True,
        capture_output=True,
        text=True,
    )
    ours = {}
    for line in run.stdout.splitlines():
        m = re.match(r"RESULT (\S+):predict(_batch/\d+)? ([\d.]+)", line)
        if m:
            ours[(m.group(1), bool(m.group(2)))] = float(m.group(3))
    print(f"{'model':<14} {'library':<26} {'library 1 row':>14} {'keyscore 1':>11} {'speed-up':>9}"
          f" {'library 64':>11} {'keyscore 64':>12} {'speed-up':>9}   (ns per record)")
    for case, (name, one, many) in lib.items():
        k1, k64 = ours[(case, False)], ours[(case, True)]
        print(f"{case:<14} {name:<26} {one:>14.0f} {k1:>11.0f} {one / k1:>8.1f}x {many:>11.0f} {k64:>12.0f} {many / k64:>8.1f}x")
    if c_api is not None:
        k1 = ours[("xgb_100x6", False)]
        print(f"{'xgb_100x6':<14} {'XGBoost C API (dense)':<26} {c_api:>14.0f} {k1:>11.0f} {c_api / k1:>8.1f}x")


def xgboost_c_api(booster, test, out):
    """ns per single-row XGBoosterPredictFromDense call, or None without a C compiler."""
    lib_dir = os.path.join(os.path.dirname(xgboost.__file__), "lib")
    exe = os.path.join(out, "xgboost_c_api")
    source = os.path.join(os.path.dirname(__file__), "xgboost_c_api.c")
    try:
        subprocess.run(
            ["cc", "-O2", source, f"-L{lib_dir}", "-lxgboost", f"-Wl,-rpath,{lib_dir}", "-o", exe],
            check=True,
        )
    except (OSError, subprocess.CalledProcessError) as err:
        print(f"XGBoost C API path not measured: {err}", file=sys.stderr)
        return None
    model = os.path.join(out, "xgb_100x6.model.json")
    rows = os.path.join(out, "xgb_100x6.rows.f32")
    booster.save_model(model)
    np.asarray(test[:2048], dtype=np.float32).tofile(rows)
    run = subprocess.run([exe, model, rows], check=True, capture_output=True, text=True)
    return float(run.stdout.strip())


if __name__ == "__main__":
    main()
