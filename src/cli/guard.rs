//! Checks the commands that change what scores make before they write.

use anyhow::bail;

use crate::model::ModelSpec;
use crate::store::ModelStore;

/// Why a stored version does not build, or `None` when it builds: the same decode and
/// [`ModelSpec::build`] a running scorer does before it swaps a version in.
pub(crate) fn build_problem(spec_json: &str) -> Option<crate::model::Error> {
    ModelSpec::from_json(spec_json.as_bytes())
        .and_then(|spec| spec.build())
        .err()
}

/// Fails when `version` of `key` is missing or does not build, so that it is never made to
/// score: running processes would refuse it. Returns the built model.
pub(crate) async fn check_builds(
    store: &dyn ModelStore,
    key: &str,
    version: i64,
) -> anyhow::Result<crate::model::Model> {
    let Some(stored) = store.version(key, version).await? else {
        bail!(crate::store::Error::NoSuchVersion {
            key: key.to_string(),
            version,
        });
    };
    match ModelSpec::from_json(stored.spec_json.as_bytes()).and_then(|spec| spec.build()) {
        Ok(model) => Ok(model),
        Err(problem) => bail!(
            "{key} v{version} does not build, so running processes would refuse it: {problem}; \
             nothing changed"
        ),
    }
}
