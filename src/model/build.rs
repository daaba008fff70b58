//! Checks a [`ModelSpec`] and builds a [`Model`].
use super::{Error, Model, ModelSpec};

pub(super) fn build(_spec: &ModelSpec) -> Result<Model, Error> {
    Err(Error::Invalid(
        "building models is not implemented yet".into(),
    ))
}
