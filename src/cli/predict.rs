//! `keyscore predict`: score one record with a stored version, active or not, to check a
//! version before activating it. Nothing is written.

use anyhow::{bail, Context as _};
use serde_json::{json, Value};

use crate::model::{spec_checksum, ModelSpec, Output, Prediction};

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
    let record: Value = serde_json::from_str(&args.record).context("--record is not JSON")?;
    let Some(fields) = record.as_object() else {
        bail!("--record must be a JSON object with the model's features by name");
    };
    let mut x = Vec::with_capacity(model.features().len());
    for name in model.features() {
        match fields.get(name) {
            Some(Value::Number(n)) => x.push(n.as_f64().unwrap_or(f64::NAN)),
            // A model with default directions scores a missing (absent or null) feature.
            Some(Value::Null) | None if model.handles_missing() => x.push(f64::NAN),
            Some(other) => bail!("feature '{name}' is not a number in --record: {other}"),
            None => bail!(
                "feature '{name}' is missing from --record; {key} v{} reads {}",
                stored.version,
                model.features().join(", ")
            ),
        }
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
