//! `keyscore canary`: let a candidate version score a share of a key's records.

use anyhow::bail;

use crate::store::{AutoCriteria, Canary, CanaryChange};

/// Arguments of `keyscore canary`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model key.
    #[arg(long)]
    pub key: String,
    /// The candidate version (it must be stored and build, and not be the active version).
    #[arg(long)]
    pub version: i64,
    /// The share of the key's records it scores, greater than 0 and at most 1.
    #[arg(long)]
    pub share: f64,
    /// The version you believe is active: refused, changing nothing, when another is.
    #[arg(long, value_name = "N")]
    pub expect_version: Option<i64>,
    /// Replace a canary of another version or share that already runs (else refused).
    #[arg(long)]
    pub replace: bool,
    /// Let the serving processes decide: promote the canary when its live metric, over at
    /// least --min-labelled labelled predictions, is no worse than the active version's by
    /// more than --margin; roll it back when it is worse, or when its dead-letter rate or its
    /// prediction PSI is over the limit. Each verdict is written once, with its evidence
    /// (`keyscore history`).
    #[arg(long)]
    pub auto: bool,
    /// With --auto: the metric compared (rmse, mae, log_loss, brier or accuracy; default
    /// rmse for a regressor, log_loss for a classifier).
    #[arg(long, requires = "auto")]
    pub metric: Option<String>,
    /// With --auto: labelled predictions needed of each version before a verdict.
    #[arg(long, requires = "auto", default_value_t = 500)]
    pub min_labelled: u64,
    /// With --auto: how much worse than the active version the canary may be and still be
    /// promoted, in the metric's units.
    #[arg(long, requires = "auto", default_value_t = 0.0)]
    pub margin: f64,
    /// With --auto: roll back when more than this share of the canary's records are dead
    /// letters.
    #[arg(long, requires = "auto", default_value_t = 0.01)]
    pub max_dead_letter_rate: f64,
    /// With --auto: roll back when the canary's prediction PSI (against its training
    /// predictions) is over this.
    #[arg(long, requires = "auto", default_value_t = 0.25)]
    pub max_prediction_psi: f64,
}

pub(crate) async fn run(ctx: &super::Context, args: Args) -> anyhow::Result<()> {
    let store = ctx.open_store().await?;
    let key = &args.key;
    store.require_key(key).await?;
    crate::store::check_share(args.share)?;
    let active = store
        .pointers(std::slice::from_ref(key))
        .await?
        .pop()
        .flatten()
        .map(|p| p.version);
    if let Some(expect) = args.expect_version {
        if active != Some(expect) {
            bail!(crate::store::Error::UnexpectedVersion {
                key: key.clone(),
                expected: expect,
                active,
            });
        }
    }
    if active == Some(args.version) {
        bail!(
            "{key} v{} is the active version; a canary is another version to compare with it; \
             nothing changed",
            args.version
        );
    }
    let model = super::guard::check_builds(store.as_ref(), key, args.version).await?;
    let auto = match args.auto {
        false => None,
        true => {
            let metric = match &args.metric {
                Some(m) => m.clone(),
                None => match model.output() {
                    crate::model::Output::Regression => "rmse".into(),
                    crate::model::Output::Classification(_) => "log_loss".into(),
                },
            };
            let fits = match model.output() {
                crate::model::Output::Regression => ["rmse", "mae"].contains(&metric.as_str()),
                crate::model::Output::Classification(_) => {
                    ["log_loss", "brier", "accuracy"].contains(&metric.as_str())
                }
            };
            if !fits {
                bail!(
                    "--metric {metric} cannot judge {key} v{}: a regressor is judged by rmse or \
             mae, a classifier by log_loss, brier or accuracy; nothing changed",
                    args.version
                );
            }
            let criteria = AutoCriteria {
                min_labelled: args.min_labelled,
                metric,
                margin: args.margin,
                max_dead_letter_rate: args.max_dead_letter_rate,
                max_prediction_psi: args.max_prediction_psi,
            };
            crate::store::check_criteria(&criteria)?;
            Some(criteria)
        }
    };
    let wanted = Canary {
        version: args.version,
        share: args.share,
        auto: auto.clone(),
    };
    // One conditional write: a canary started meanwhile by someone else is not replaced
    // without --replace.
    let changed = store
        .change_canary(
            key,
            CanaryChange::Start {
                canary: wanted,
                replace: args.replace,
            },
        )
        .await?;
    if !changed.changed {
        println!(
            "the canary of {key} v{} on {}% of its records already runs; nothing changed",
            args.version,
            args.share * 100.0
        );
        return Ok(());
    }
    if let Some(before) = changed.before {
        println!(
            "replaced the canary of {key} v{} on {}%",
            before.version,
            before.share * 100.0
        );
    }
    println!(
        "canary {key} v{} on {}% of its records; `keyscore promote --key {key}` activates it, `keyscore rollback --key {key} --from {}` ends it",
        args.version,
        args.share * 100.0,
        args.version
    );
    if let Some(c) = auto {
        println!(
            "decided automatically: after {} labelled predictions of each version, promoted \
             when its {} is no worse than the active version's by more than {}; rolled back \
             when worse, or over {}% dead letters, or a prediction PSI over {} \
             (`keyscore quality --key {key}` shows the figures)",
            c.min_labelled,
            c.metric,
            c.margin,
            c.max_dead_letter_rate * 100.0,
            c.max_prediction_psi
        );
    }
    Ok(())
}
