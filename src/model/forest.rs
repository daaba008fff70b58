//! Random forests of flat-array decision trees.
#[derive(Debug, Clone)]
pub(super) struct Forest;
