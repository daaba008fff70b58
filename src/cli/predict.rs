//! `keyscore predict`: score one record with a stored version, active or not, to check a
//! version before activating it. Nothing is written.

use anyhow::{bail, Context as _};
use serde_json::{json, Value};

use crate::{
    model::{spec_checksum, ModelSpec, Output, Prediction},
    stream::record::{decode, KeySource, Reason, RecordFormat},
};

/// Arguments of `keyscore predict`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model key.
    #[arg(long)]
    pub key: String,
    /// A stored version; default: the active one.
    #[arg(long)]
    pub version: Option<i64>,
    /// The record, a JSON object with the model's features by name.
    #[arg(long)]
    pub record: String,
}

pub(crate) async fn run(ctx: &super::Context, args: Args) -> anyhow::Result<()> {
    let store = ctx.open_store().await?;
    let key = &args.key;
    let stored = match args.version {
        Some(v) => store.version(key, v).await?,
        None => store.active(key).await?.map(|a| a.model),
    };
    let Some(stored) = stored else {
        store.require_key(key).await?;
        match args.version {
            Some(v) => bail!(crate::store::Error::NoSuchVersion {
                key: key.clone(),
                version: v,
            }),
            None => bail!("{key} has no active version; name one with --version"),
        }
    };
    let model = ModelSpec::from_json(stored.spec_json.as_bytes())
        .and_then(|spec| spec.build())
        .with_context(|| format!("{key} v{} does not build", stored.version))?;
    // The record is read as the scorer reads it: nested paths, string categories, missing
    // values the model accepts.
    let format = RecordFormat {
        key: KeySource::MessageKey,
        ..RecordFormat::default()
    };
    let record = match decode(args.record.as_bytes(), &format, Some(key.as_bytes())) {
        Ok(record) => record,
        Err(rejection) if rejection.reason == Reason::NotJson => {
            bail!("--record must be a JSON object with the model's features by name")
        }
        Err(rejection) => bail!("--record: {}", rejection.message),
    };
    let mut x = Vec::with_capacity(model.features().len());
    if let Err(rejection) = record.read_model_features(&model, &mut x) {
        if rejection.reason == Reason::MissingFeature {
            bail!(
                "{}; {key} v{} reads {}",
                rejection
                    .message
                    .replace(" is missing", " is missing from --record"),
                stored.version,
                model.features().join(", ")
            );
        }
        bail!("{} in --record", rejection.message);
    }
    let prediction = match (model.predict(&x)?, model.output()) {
        (Prediction::Value(v), _) => json!({ "value": v }),
        (
            Prediction::Class {
                index,
                probabilities,
            },
            Output::Classification(classes),
        ) => {
            let by_class: serde_json::Map<String, Value> = classes
                .iter()
                .cloned()
                .zip(probabilities.iter().map(|p| json!(p)))
                .collect();
            json!({ "class": classes[index], "probabilities": by_class })
        }
        (Prediction::Class { index, .. }, Output::Regression) => json!({ "class": index }),
    };
    let out = json!({
        "key": key,
        "prediction": prediction,
        "model_version": stored.version,
        "model_checksum": spec_checksum(&stored.spec_json),
    });
    super::write_stdout(&format!("{out}\n"))
}
