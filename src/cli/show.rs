//! `keyscore show`: a key's active (or a given) version, summarised with the key's rollout
//! state and whether the version builds, as text or JSON, or the stored spec alone.

use anyhow::bail;
use serde_json::json;

use crate::model::{spec_checksum, ModelSpec, Output};

/// How `show` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Aligned `name: value` lines.
    #[default]
    Text,
    /// One JSON object (for scripts), the spec included.
    Json,
    /// The stored spec JSON only, exactly as stored.
    Spec,
}

/// Arguments of `keyscore show`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model key.
    #[arg(long)]
    pub key: String,
    /// A stored version; default: the active one.
    #[arg(long)]
    pub version: Option<i64>,
    /// What to print.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    /// Print the stored spec JSON only (the same as `--format spec`).
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
}

pub(crate) async fn run(ctx: &super::Context, args: Args) -> anyhow::Result<()> {
    let store = ctx.open_store().await?;
    let key = &args.key;
    let format = if args.json { Format::Spec } else { args.format };
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
            None => bail!("{key} has no active version; `keyscore activate` makes one active"),
        }
    };
    if format == Format::Spec {
        super::write_stdout(&format!("{}\n", stored.spec_json))?;
        return Ok(());
    }
    let pointer = store
        .pointers(std::slice::from_ref(key))
        .await?
        .pop()
        .flatten();
    let rollout = store.rollout(key).await?.unwrap_or_default();
    let activation = store.activation(key).await?.unwrap_or_default();
    let activated_at = activation.at_ms.map(utc_time);
    let spec = ModelSpec::from_json(stored.spec_json.as_bytes());
    let built = spec
        .as_ref()
        .map_err(ToString::to_string)
        .and_then(|s| s.build().map_err(|e| e.to_string()));
    let problem = built.as_ref().err().cloned();
    let kind = spec
        .as_ref()
        .ok()
        .and_then(|s| serde_json::to_value(&s.model).ok())
        .and_then(|m| m["kind"].as_str().map(str::to_string));
    let output = built.as_ref().ok().map(|m| match m.output() {
        Output::Regression => "regression".to_string(),
        Output::Classification(c) => format!("classes {}", c.join(", ")),
    });
    let checksum = spec_checksum(&stored.spec_json);
    if format == Format::Json {
        let spec_value: serde_json::Value =
            serde_json::from_str(&stored.spec_json).unwrap_or(serde_json::Value::Null);
        let doc = json!({
            "key": key,
            "version": stored.version,
            "active": pointer.map(|p| p.version),
            "previous": pointer.and_then(|p| p.previous),
            "canary": rollout.canary.as_ref().map(|c| json!({
                "version": c.version,
                "share": c.share,
                "auto": c.auto,
            })),
            "shadow": rollout.shadow,
            "activated_by": activation.by,
            "activated_at": activated_at,
            "checksum": checksum,
            "kind": kind,
            "builds": problem.is_none(),
            "problem": problem,
            "spec": spec_value,
        });
        super::write_stdout(&format!("{doc}\n"))?;
        return Ok(());
    }
    let mut text = String::new();
    let mut line = |name: &str, value: &str| text.push_str(&format!("{name:<10} {value}\n"));
    let v = |n: i64| format!("v{n}");
    line("key:", key);
    line("version:", &stored.version.to_string());
    line(
        "active:",
        &match pointer {
            Some(p) => match p.previous {
                Some(prev) => format!("{} (rollback returns to {})", v(p.version), v(prev)),
                None => v(p.version),
            },
            None => "none".into(),
        },
    );
    line(
        "canary:",
        &rollout.canary.as_ref().map_or("none".into(), |c| {
            let auto = c.auto.as_ref().map_or(String::new(), |a| {
                format!(", decided automatically on {}", a.metric)
            });
            format!("{} on {}% of records{auto}", v(c.version), c.share * 100.0)
        }),
    );
    line("shadow:", &rollout.shadow.map_or("none".into(), v));
    if pointer.is_some() {
        line(
            "activated:",
            &format!(
                "{} by {}",
                activated_at.as_deref().unwrap_or("(time not recorded)"),
                activation.by.as_deref().unwrap_or("(not recorded)")
            ),
        );
    }
    line("checksum:", &checksum);
    line("kind:", kind.as_deref().unwrap_or("?"));
    if let Ok(spec) = &spec {
        line("features:", &spec.features.join(", "));
    }
    if let Some(output) = &output {
        line("output:", output);
    }
    match &problem {
        None => line("builds:", "yes"),
        Some(problem) => line(
            "builds:",
            &format!("no: it does not build, so running processes refuse it: {problem}"),
        ),
    }
    if let Some(meta) = spec.as_ref().ok().and_then(|s| s.metadata.as_ref()) {
        line("metadata:", &serde_json::to_string(meta)?);
    }
    super::write_stdout(&text)?;
    Ok(())
}

/// `ms` (Unix milliseconds) as an RFC 3339 UTC time, to the second.
pub(crate) fn utc_time(ms: i64) -> String {
    let at = crate::stream::ScoredAt::from_unix_ms(ms);
    // "YYYY-MM-DDTHH:MM:SS.mmmZ" without the milliseconds.
    format!("{}Z", &at.as_str()[..19])
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_time_is_rfc3339() {
        assert_eq!(super::utc_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::utc_time(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(super::utc_time(1_796_300_000_123), "2026-12-03T12:13:20Z");
    }
}
