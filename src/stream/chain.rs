//! The fallback chain of a batch's records whose key has no usable model: the keys their
//! `[records] fallback_fields` name, in order, then the `[store] fallback_key`. The scorer
//! looks the batch's own keys up first; the distinct chain keys it does not already hold are
//! looked up here together, once per batch, and each record takes the first level with a
//! model.

use std::{borrow::Cow, sync::Arc};

use foldhash::{HashMap, HashMapExt};

use super::record::{Decoded, Level, Reason, Rejection};
use crate::{
    registry::{self, KeyRollout, Lookup, ModelRegistry, ServedModel},
    telemetry::ErrorChain,
};

/// What a key's records are scored with in one batch: its own model (and rollout), or why it
/// has none.
pub(super) type KeyModels = Result<(Lookup, Option<Arc<KeyRollout>>), Rejection>;

/// A dead letter for a record whose key's model could not be read from the store.
pub(super) fn store_rejection(err: &registry::Error) -> Rejection {
    Rejection::new(
        Reason::StoreUnavailable,
        format!("could not load the model for this key: {}", ErrorChain(err)),
    )
}

/// The model a record is scored with, when it is not its key's own.
pub(super) enum Pick {
    /// The model at this level of the chain.
    Found(Level, Arc<ServedModel>),
    /// No level has a model; the text says why.
    Missing(Arc<str>),
    /// A key of the chain could not be read from the store.
    Failed(Rejection),
}

/// For each record whose key has no usable model (by index; `None` for the others), the model
/// that scores it: the first found along its chain, the keys its `fallback_fields` name and
/// then the registry's fallback key. `key_of` is each record's index in the batch's keys,
/// `models` what each of them resolved to, `index` the keys' indexes by name. The chain's keys
/// that are not among the batch's own keys are looked up together, each distinct key once.
pub(super) async fn fallbacks<'a>(
    registry: &'a ModelRegistry,
    fallback_fields: &[String],
    decoded: &'a [Result<Decoded<'a>, Rejection>],
    key_of: &[usize],
    models: &[KeyModels],
    index: &HashMap<&'a str, usize>,
) -> Vec<Option<Pick>> {
    let default = registry.fallback_key();
    // (record, level, key) for every level of every chain, in chain order.
    let mut chain: Vec<(usize, Level, Cow<'a, str>)> = Vec::new();
    for (i, d) in decoded.iter().enumerate() {
        let Ok(d) = d else { continue };
        let Ok((own, _)) = &models[key_of[i]] else {
            continue;
        };
        if own.model.is_some() {
            continue;
        }
        let before = chain.len();
        for (f, field) in fallback_fields.iter().enumerate() {
            if let Some(key) = d.key_field(field).filter(|k| *k != d.key) {
                chain.push((i, Level::Field(f as u8), key));
            }
        }
        if let Some(default) = default.filter(|k| *k != d.key) {
            chain.push((i, Level::Default, Cow::Borrowed(default)));
        }
        if chain.len() == before {
            // A chain without levels: a marker that says the record needs a pick.
            chain.push((i, Level::Own, Cow::Borrowed("")));
        }
    }
    let mut picks: Vec<Option<Pick>> = Vec::new();
    if chain.is_empty() {
        return picks;
    }
    picks.resize_with(decoded.len(), || None);
    // Chain keys resolve to the batch's own lookups when the batch has them as keys, else
    // to a second batched lookup.
    let mut more: HashMap<&str, usize> = HashMap::new();
    let mut more_keys: Vec<&str> = Vec::new();
    let at: Vec<Option<Result<usize, usize>>> = chain
        .iter()
        .map(|(_, level, key)| {
            if *level == Level::Own {
                return None;
            }
            Some(match index.get(key.as_ref()) {
                Some(&k) => Ok(k),
                None => Err(*more.entry(key.as_ref()).or_insert_with(|| {
                    more_keys.push(key.as_ref());
                    more_keys.len() - 1
                })),
            })
        })
        .collect();
    let more_looked = if more_keys.is_empty() {
        Vec::new()
    } else {
        registry.lookup_many(&more_keys).await
    };
    for ((i, level, _), at) in chain.iter().zip(at) {
        if picks[*i]
            .as_ref()
            .is_some_and(|p| !matches!(p, Pick::Missing(_)))
        {
            continue; // Found or failed at an earlier level.
        }
        let model: Result<Option<&Arc<ServedModel>>, Rejection> = match at {
            None => Ok(None),
            Some(Ok(k)) => match &models[k] {
                Ok((own, _)) => Ok(own.model.as_ref()),
                Err(rejection) => Err(rejection.clone()),
            },
            Some(Err(k)) => match &more_looked[k] {
                Ok(own) => Ok(own.model.as_ref()),
                Err(err) => Err(store_rejection(err)),
            },
        };
        picks[*i] = Some(match model {
            Ok(Some(model)) => Pick::Found(*level, Arc::clone(model)),
            Err(rejection) => Pick::Failed(rejection),
            Ok(None) => Pick::Missing(Arc::from("")),
        });
    }
    // Records without a model anywhere along their chain: say why.
    for (i, pick) in picks.iter_mut().enumerate() {
        if let Some(Pick::Missing(why)) = pick {
            let Ok(d) = &decoded[i] else { continue };
            let Ok((own, _)) = &models[key_of[i]] else {
                continue;
            };
            *why = match &own.refused {
                Some(refused) => format!("{refused}; and no model along its fallback chain").into(),
                None if fallback_fields.is_empty() => {
                    format!("no active model for key '{}' and no fallback model", d.key).into()
                }
                None => format!(
                    "no active model for key '{}' nor along its fallback chain ({}, then \
                         the fallback key)",
                    d.key,
                    fallback_fields.join(", ")
                )
                .into(),
            };
        }
    }
    picks
}
