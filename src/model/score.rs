//! Scoring single records and batches.
//!
//! [`predict`] and [`predict_batch`] share one kernel, [`predict_row`], so a batch gives
//! bitwise the same predictions as scoring its rows one by one. Scratch space (the scaled
//! input, MLP activations) is local to the call: on the stack when small, otherwise one
//! allocation per call or per batch.

use ndarray::ArrayView2;

use super::{Error, Kind, Model, Prediction};

pub(super) fn predict(model: &Model, x: &[f64]) -> Result<Prediction, Error> {
    check_len(model, x.len())?;
    with_scratch(model.scratch_len, |scratch| predict_row(model, x, scratch))
}

pub(super) fn predict_batch(
    model: &Model,
    x: ArrayView2<'_, f64>,
) -> Result<Vec<Prediction>, Error> {
    check_len(model, x.ncols())?;
    let mut scratch = vec![0.0; model.scratch_len];
    // Rows of a column-major or strided view are not contiguous: copy them first.
    let mut row_copy = Vec::new();
    let mut out = Vec::with_capacity(x.nrows());
    for row in x.rows() {
        out.push(match row.as_slice() {
            Some(r) => predict_row(model, r, &mut scratch)?,
            None => {
                row_copy.clear();
                row_copy.extend(row.iter().copied());
                predict_row(model, &row_copy, &mut scratch)?
            }
        });
    }
    Ok(out)
}

fn check_len(model: &Model, got: usize) -> Result<(), Error> {
    let expected = model.features.len();
    if got == expected {
        Ok(())
    } else {
        Err(Error::FeatureCount { expected, got })
    }
}

/// Runs `f` with `len` zeroed numbers of scratch, on the stack when `len` is small.
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f64]) -> R) -> R {
    const SMALL: usize = 32;
    const MEDIUM: usize = 256;
    if len == 0 {
        f(&mut [])
    } else if len <= SMALL {
        f(&mut [0.0; SMALL][..len])
    } else if len <= MEDIUM {
        f(&mut [0.0; MEDIUM][..len])
    } else {
        f(&mut vec![0.0; len])
    }
}

/// The one scoring kernel. `x.len()` is already checked; `scratch` holds
/// `model.scratch_len` numbers.
fn predict_row(model: &Model, x: &[f64], scratch: &mut [f64]) -> Result<Prediction, Error> {
    // A model that handles missing values takes NaN as "missing"; infinities never score.
    let bad = if let Some(p) = &model.preprocess {
        x.iter()
            .enumerate()
            .position(|(i, v)| v.is_infinite() || (v.is_nan() && !p.accepts_missing(i)))
    } else if model.handles_missing {
        x.iter().position(|v| v.is_infinite())
    } else {
        x.iter().position(|v| !v.is_finite())
    };
    if let Some(i) = bad {
        return Err(Error::NonFiniteFeature(model.features[i].clone()));
    }
    let (transformed, scratch) = match &model.preprocess {
        Some(p) => {
            let (t, rest) = scratch.split_at_mut(p.width());
            p.transform(x, t, &model.features)?;
            (Some(&*t), rest)
        }
        None => (None, scratch),
    };
    let x = transformed.unwrap_or(x);
    let uses_input_scratch = model.scaler.is_some() || model.round_to_f32;
    let (input, rest) = scratch.split_at_mut(if uses_input_scratch { x.len() } else { 0 });
    let x = if uses_input_scratch {
        prepare(model, x, input);
        &*input
    } else {
        x
    };
    match &model.kind {
        Kind::Linear(m) => m.predict(x),
        Kind::Logistic(m) => m.predict(x),
        Kind::Forest(m) => m.predict(x),
        Kind::Boosted(m) => m.predict(x, rest),
        Kind::Mlp(m) => m.predict(x, rest),
    }
}

/// Writes the scaled (`(x - mean) / scale`, as scikit-learn's `StandardScaler`) and, for
/// `f32` forests, rounded features into `out`.
fn prepare(model: &Model, x: &[f64], out: &mut [f64]) {
    match &model.scaler {
        Some(s) => {
            for (((o, x), m), d) in out.iter_mut().zip(x).zip(&s.mean).zip(&s.scale) {
                *o = (x - m) / d;
            }
        }
        None => out.copy_from_slice(x),
    }
    if model.round_to_f32 {
        for o in out.iter_mut() {
            *o = f64::from(*o as f32);
        }
    }
}

/// The logistic sigmoid as SciPy's `expit` computes it: `1 / (1 + e^-z)`. It saturates to 0
/// or 1 and never gives NaN for a non-NaN `z`.
#[inline]
pub(super) fn expit(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// Softmax as scikit-learn computes it: subtract the maximum, exponentiate, divide by the sum
/// (summed in order).
pub(super) fn softmax_in_place(z: &mut [f64]) {
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for v in z.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in z.iter_mut() {
        *v /= sum;
    }
}

/// Builds a class prediction: the first most probable class (as numpy's `argmax`).
pub(super) fn classify(probabilities: Vec<f64>) -> Result<Prediction, Error> {
    if probabilities.iter().any(|p| !p.is_finite()) {
        return Err(Error::NonFiniteOutput);
    }
    let mut index = 0;
    for (i, &p) in probabilities.iter().enumerate().skip(1) {
        if p > probabilities[index] {
            index = i;
        }
    }
    Ok(Prediction::Class {
        index,
        probabilities,
    })
}

#[cfg(test)]
mod tests {
    use ndarray::{Array2, ShapeBuilder};
    use proptest::prelude::*;

    use crate::model::{spec::*, testing::*, Error, Model, Prediction};

    /// A prediction's class index and the bits of its numbers, for bitwise comparison.
    fn bits(p: &Prediction) -> (Option<usize>, Vec<u64>) {
        match p {
            Prediction::Value(v) => (None, vec![v.to_bits()]),
            Prediction::Class {
                index,
                probabilities,
            } => (
                Some(*index),
                probabilities.iter().map(|p| p.to_bits()).collect(),
            ),
        }
    }

    fn models() -> Vec<Model> {
        one_of_each_kind()
            .iter()
            .map(|s| s.build().unwrap())
            .collect()
    }

    #[test]
    fn wrong_feature_count_is_refused() {
        for m in models() {
            assert!(matches!(
                m.predict(&[1.0, 2.0]),
                Err(Error::FeatureCount {
                    expected: 3,
                    got: 2
                })
            ));
            let x = Array2::<f64>::zeros((2, 4));
            assert!(matches!(
                m.predict_batch(x.view()),
                Err(Error::FeatureCount {
                    expected: 3,
                    got: 4
                })
            ));
        }
    }

    #[test]
    fn non_finite_features_are_named() {
        // Models whose preprocessing imputes or encodes missing values score NaN.
        for m in models().into_iter().filter(|m| !m.accepts_missing(1)) {
            match m.predict(&[0.0, f64::NAN, 1.0]) {
                Err(Error::NonFiniteFeature(name)) => assert_eq!(name, "f1"),
                other => panic!("{} gave {other:?}", m.kind_name()),
            }
            match m.predict(&[0.0, 1.0, f64::NEG_INFINITY]) {
                Err(Error::NonFiniteFeature(name)) => assert_eq!(name, "f2"),
                other => panic!("{} gave {other:?}", m.kind_name()),
            }
            let mut x = Array2::<f64>::zeros((3, 3));
            x[[2, 0]] = f64::INFINITY;
            match m.predict_batch(x.view()) {
                Err(Error::NonFiniteFeature(name)) => assert_eq!(name, "f0"),
                other => panic!("{} gave {other:?}", m.kind_name()),
            }
        }
    }

    #[test]
    fn an_empty_batch_scores_nothing() {
        for m in models() {
            let x = Array2::<f64>::zeros((0, 3));
            assert!(m.predict_batch(x.view()).unwrap().is_empty());
        }
    }

    #[test]
    fn scaled_input_overflow_is_still_scored() {
        // A tiny scale sends a finite feature to infinity; a tree still routes it.
        let t = tree(&[split(0, 0.0, 1, 2), leaf(&[1.0]), leaf(&[2.0])]);
        let mut s = spec(1, forest(vec![t]), OutputSpec::Regression);
        s.scaler = Some(ScalerSpec {
            mean: vec![0.0],
            scale: vec![1e-300],
        });
        let m = s.build().unwrap();
        assert_eq!(m.predict(&[1e10]).unwrap(), Prediction::Value(2.0));
        assert_eq!(m.predict(&[-1e10]).unwrap(), Prediction::Value(1.0));
    }

    fn rows() -> impl Strategy<Value = (usize, Vec<f64>)> {
        (0usize..12).prop_flat_map(|n| (Just(n), prop::collection::vec(-4.0f64..4.0, n * 3)))
    }

    proptest! {
        #[test]
        fn batch_equals_row_by_row_bitwise((n, data) in rows()) {
            let row_major = Array2::from_shape_vec((n, 3), data.clone()).unwrap();
            let column_major = Array2::from_shape_vec((n, 3).f(), data).unwrap();
            for m in models() {
                for x in [row_major.view(), column_major.view()] {
                    let batch = m.predict_batch(x).unwrap();
                    prop_assert_eq!(batch.len(), n);
                    for (row, p) in x.rows().into_iter().zip(&batch) {
                        let single = m.predict(&row.to_vec()).unwrap();
                        prop_assert_eq!(bits(p), bits(&single), "{}", m.kind_name());
                    }
                }
            }
        }

        #[test]
        fn probabilities_are_in_range_and_sum_to_one(
            x in prop::collection::vec(-50.0f64..50.0, 3),
            coefficients in prop::collection::vec(prop::collection::vec(-30.0f64..30.0, 3), 3..7),
            binary in prop::collection::vec(-30.0f64..30.0, 3),
        ) {
            let k = coefficients.len();
            let labels: Vec<String> = (0..k).map(|i| format!("c{i}")).collect();
            let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
            let mut specs = vec![
                spec(3, ParamsSpec::Logistic {
                    coefficients,
                    intercepts: vec![0.5; k],
                }, classes(&labels)),
                spec(3, ParamsSpec::Logistic {
                    coefficients: vec![binary],
                    intercepts: vec![-0.5],
                }, classes(&["no", "yes"])),
            ];
            specs.extend(one_of_each_kind().into_iter().filter(|s| {
                matches!(s.output, OutputSpec::Classification { .. })
            }));
            for s in specs {
                // Models computing in f32 (XGBoost's) sum to 1 within f32 rounding.
                let f32_model = matches!(
                    &s.model,
                    ParamsSpec::BoostedTrees(b) if b.accumulation == Accumulation::F32
                );
                let tolerance = if f32_model { 1e-6 } else { 1e-12 };
                let (index, p) = class(s.build().unwrap().predict(&x).unwrap());
                prop_assert!(p.iter().all(|p| (0.0..=1.0).contains(p)), "{:?}", p);
                prop_assert!((p.iter().sum::<f64>() - 1.0).abs() <= tolerance, "{:?}", p);
                prop_assert!(p.iter().all(|&q| q <= p[index]));
                prop_assert!(p[..index].iter().all(|&q| q < p[index]));
            }
        }
    }
}
