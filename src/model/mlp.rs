//! Multi-layer perceptrons of dense layers.
#[derive(Debug, Clone)]
pub(super) struct Mlp;
