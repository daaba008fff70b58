//! `keyscore quality`: a key's live quality as serving processes wrote it to the store, one
//! line per (window, version, arm), newest window first: predictions and labels, the metrics
//! of the model's task, label lag, and drift against the training reference.

use serde_json::json;

use crate::store::QualityRow;

/// How `quality` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// One aligned line per window and version, with a header.
    #[default]
    Text,
    /// One JSON object per line (for scripts).
    Json,
}

/// Arguments of `keyscore quality`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model key.
    #[arg(long)]
    pub key: String,
    /// Only this version.
    #[arg(long)]
    pub version: Option<i64>,
    /// At most this many rows, newest window first.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// What to print.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

pub(crate) async fn run(ctx: &super::Context, args: Args) -> anyhow::Result<()> {
    let store = ctx.open_store().await?;
    let key = &args.key;
    store.require_key(key).await?;
    let rows = store.quality(key, args.version, args.limit).await?;
    let mut out = String::new();
    match args.format {
        Format::Json => {
            for r in &rows {
                out.push_str(&format!("{}\n", row_json(r)));
            }
        }
        Format::Text => {
            if rows.is_empty() {
                out.push_str(&format!(
                    "{key} has no quality recorded{}: serving processes write a row per version \
                     at the end of every [quality] slice, and `keyscore score --labels` at the \
                     end of its run\n",
                    args.version
                        .map_or_else(String::new, |v| format!(" for v{v}"))
                ));
            } else {
                out.push_str(&text(&rows));
            }
        }
    }
    super::write_stdout(&out)?;
    Ok(())
}

fn num(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.digits$}"))
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{:.1}%", v * 100.0))
}

/// The rows as an aligned table.
fn text(rows: &[QualityRow]) -> String {
    let mut lines = vec![[
        "window end".to_string(),
        "version".into(),
        "predictions".into(),
        "labelled".into(),
        "metric".into(),
        "label lag".into(),
        "pred PSI".into(),
        "max feature PSI".into(),
        "missing".into(),
        "out of range".into(),
        "dead".into(),
    ]];
    for r in rows {
        let metric = match (r.rmse, r.accuracy) {
            (Some(rmse), _) => format!("rmse {rmse:.4} mae {}", num(r.mae, 4)),
            (None, Some(acc)) => format!(
                "acc {acc:.3} logloss {} brier {}",
                num(r.log_loss, 4),
                num(r.brier, 4)
            ),
            (None, None) => "-".into(),
        };
        lines.push([
            super::show::utc_time(r.window_end_ms),
            format!("v{} {}", r.version, r.arm),
            r.predictions.to_string(),
            r.labelled.to_string(),
            metric,
            r.label_lag_ms
                .map_or_else(|| "-".into(), |ms| format!("{:.1}s", ms / 1000.0)),
            num(r.prediction_psi, 3),
            match (r.max_feature_psi, worst_feature(r)) {
                (Some(psi), Some(name)) => format!("{psi:.3} ({name})"),
                (psi, _) => num(psi, 3),
            },
            pct(r.missing_share),
            pct(r.out_of_range_share),
            r.dead_letters.to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..lines[0].len())
        .map(|c| {
            lines
                .iter()
                .map(|l| l[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for l in &lines {
        let cells: Vec<String> = l
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The feature with the largest PSI, from the row's per-feature JSON.
fn worst_feature(r: &QualityRow) -> Option<String> {
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(r.feature_psi.as_deref()?).ok()?;
    map.into_iter()
        .filter_map(|(name, v)| v.as_f64().map(|p| (name, p)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(name, _)| name)
}

fn row_json(r: &QualityRow) -> serde_json::Value {
    let feature_psi: serde_json::Value = r
        .feature_psi
        .as_deref()
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or(serde_json::Value::Null);
    json!({
        "key": r.key,
        "version": r.version,
        "arm": r.arm,
        "window_end": super::show::utc_time(r.window_end_ms),
        "window_ms": r.window_ms,
        "predictions": r.predictions,
        "labelled": r.labelled,
        "mae": r.mae,
        "rmse": r.rmse,
        "accuracy": r.accuracy,
        "log_loss": r.log_loss,
        "brier": r.brier,
        "label_lag_ms": r.label_lag_ms,
        "dead_letters": r.dead_letters,
        "prediction_psi": r.prediction_psi,
        "max_feature_psi": r.max_feature_psi,
        "feature_psi": feature_psi,
        "missing_share": r.missing_share,
        "out_of_range_share": r.out_of_range_share,
        "by": r.by,
    })
}
