//! Scoring single records and batches.
use ndarray::ArrayView2;

use super::{Error, Model, Prediction};

pub(super) fn predict(_model: &Model, _x: &[f64]) -> Result<Prediction, Error> {
    Err(Error::NonFiniteOutput)
}

pub(super) fn predict_batch(
    model: &Model,
    x: ArrayView2<'_, f64>,
) -> Result<Vec<Prediction>, Error> {
    x.rows()
        .into_iter()
        .map(|r| predict(model, r.as_slice().unwrap_or(&r.to_vec())))
        .collect()
}
