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
    x.rows()
        .into_iter()
        .map(|row| match row.as_slice() {
            Some(r) => predict_row(model, r, &mut scratch),
            None => {
                row_copy.clear();
                row_copy.extend(row.iter().copied());
                predict_row(model, &row_copy, &mut scratch)
            }
        })
        .collect()
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
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFiniteFeature(model.features[i].clone()));
    }
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
