//! Boosted trees next to the libraries that trained them: keyscore's `Model::predict` (one
//! record) and `Model::predict_batch` (64 records) on models exported from XGBoost and LightGBM.
//!
//! Guards against regressions in the boosted-tree kernel (`src/model/boosted.rs`). The goals
//! (issue 16): at most 2 us per record for 100 trees of depth 6 on 16 features, and at least
//! twice as fast as XGBoost's single-row `inplace_predict`.
//!
//! The models and rows come from `benches/boosted/compare.py`, which trains them, measures the
//! libraries' own single-row and batch predict in the same run, then runs this bench on its
//! output directory and prints both side by side:
//!
//! ```sh
//! python benches/boosted/compare.py   # needs xgboost, lightgbm and keyscore_sklearn
//! ```
//!
//! Run alone: `cargo bench --bench boosted -- DIR`, DIR holding `<case>.spec.json` and
//! `<case>.rows.json` (`{"x": [[...]], "want": [[...]]}`: rows and the library's predictions).
//! Before measuring, every row's prediction is checked against the library's, bit for bit.

use std::{hint::black_box, path::PathBuf, time::Duration};

use keyscore::model::{ModelSpec, Prediction};
use keyscore_testkit::rounds::{self, Case};
use ndarray::{Array2, Axis, Slice};

/// Records per batch for `predict_batch`.
const BATCH: usize = 64;

#[derive(serde::Deserialize)]
struct Rows {
    x: Vec<Vec<f64>>,
    want: Vec<Vec<f64>>,
}

fn numbers(p: &Prediction) -> Vec<f64> {
    match p {
        Prediction::Value(v) => vec![*v],
        Prediction::Class { probabilities, .. } => probabilities.clone(),
    }
}

fn main() {
    let Some(dir) = std::env::args().skip(1).find(|a| !a.starts_with("--")) else {
        println!("usage: cargo bench --bench boosted -- DIR (see benches/boosted/compare.py)");
        return;
    };
    let dir = PathBuf::from(dir);
    let mut cases: Vec<String> = std::fs::read_dir(&dir)
        .expect("bench dir")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".spec.json").map(str::to_string)
        })
        .collect();
    cases.sort();
    let mut measured = Vec::new();
    for case in &cases {
        let spec = std::fs::read(dir.join(format!("{case}.spec.json"))).expect("spec");
        let model = ModelSpec::from_json(&spec)
            .and_then(|s| s.build())
            .unwrap_or_else(|err| panic!("{case}: {err}"));
        let rows: Rows = serde_json::from_slice(
            &std::fs::read(dir.join(format!("{case}.rows.json"))).expect("rows"),
        )
        .expect("rows decode");
        for (x, want) in rows.x.iter().zip(&rows.want) {
            let got = numbers(&model.predict(x).expect("scores"));
            assert!(
                got.iter()
                    .zip(want)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{case}: keyscore {got:?}, library {want:?}"
            );
        }
        let n = rows.x.len();
        let width = rows.x[0].len();
        let flat: Vec<f64> = rows.x.iter().flatten().copied().collect();
        let batch = Array2::from_shape_vec((n, width), flat).expect("rectangular rows");
        measured.push((case.clone(), model, rows.x, batch));
    }
    let mut cases: Vec<Case<'_>> = Vec::new();
    for (name, model, x, batch) in &measured {
        let mut i = 0;
        cases.push(Case::calls(format!("{name} predict"), 1, move || {
            i = (i + 1) % x.len();
            black_box(model.predict(black_box(&x[i])).expect("scores"));
        }));
        let mut start = 0;
        let n = batch.nrows();
        cases.push(Case::calls(
            format!("{name} predict_batch/{BATCH}"),
            BATCH as u64,
            move || {
                start = (start + BATCH) % (n - BATCH);
                let view = batch.slice_axis(Axis(0), Slice::from(start..start + BATCH));
                black_box(model.predict_batch(black_box(view)).expect("scores"));
            },
        ));
    }
    let figures = rounds::run(&mut cases, 21, Duration::from_millis(40));
    println!(
        "\n{:<44} {:>14} {:>14}",
        "keyscore case", "ns/record", "(best round)"
    );
    for (case, f) in cases.iter().zip(&figures) {
        println!(
            "{:<44} {:>14} {:>14}",
            case.name,
            rounds::ns(f.median),
            rounds::ns(f.best)
        );
        // One machine-readable line per case for compare.py.
        println!("RESULT {} {:.1}", case.name.replace(' ', ":"), f.median);
    }
}
