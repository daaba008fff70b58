//! Linear and logistic regression.
#[derive(Debug, Clone)]
pub(super) struct Linear;
#[derive(Debug, Clone)]
pub(super) struct Logistic;
