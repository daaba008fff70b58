//! The quality stage's periodic work: at the end of every slice, write each live window to the
//! store as a [`QualityRow`](crate::store::QualityRow) and decide the automatic canaries (and
//! roll back those whose version does not build, which no process can score).
//!
//! Cost per slice: one store write per tracked (key, version, arm) window (the rows of a key go
//! to that key's own rows) and one rollout read per key with a canary window; nothing is done
//! for keys without recent records.
//!
//! Who decides a canary: every process holding figures for it may reach a verdict, but the
//! verdict is written with [`ModelStore::decide_canary`], a conditional write that applies only
//! while the version is still the key's canary, so exactly one write applies and the others
//! find nothing to do. With records keyed by model key (the default partitioning), all of a
//! key's records, and so all its figures, are in one member of the consumer group: that member
//! decides.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{
    now_ms,
    verdict::{decide, refused, Decision, Evidence},
    Arm, Quality, VersionFigures,
};
use crate::{
    registry::ModelRegistry,
    store::{self, ModelStore, Verdict},
};

/// What one flush did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Flushed {
    /// Quality rows written.
    pub rows: usize,
    /// Verdicts this process wrote: key, canary version, the verdict and why.
    pub verdicts: Vec<Applied>,
}

/// A verdict written to the store.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The model key.
    pub key: String,
    /// The canary version decided.
    pub version: i64,
    /// Promoted (true) or rolled back (false).
    pub promoted: bool,
    /// Why, in one line.
    pub reason: String,
}

/// Writes every live window's row and applies the automatic verdicts due, at `now_ms`.
pub async fn flush(
    quality: &Quality,
    store: &dyn ModelStore,
    now_ms: i64,
) -> Result<Flushed, store::Error> {
    flush_with(quality, store, &[], now_ms).await
}

/// [`flush`], also rolling back the automatic canaries among `refused`: (key, version, why)
/// of canary versions this process refused because they do not build
/// ([`ModelRegistry::refused_canaries`]).
pub async fn flush_with(
    quality: &Quality,
    store: &dyn ModelStore,
    refused: &[(String, i64, String)],
    now_ms: i64,
) -> Result<Flushed, store::Error> {
    let figures = quality.figures(now_ms);
    let by = store::actor();
    let rows: Vec<_> = figures.iter().map(|f| f.row(Some(&by))).collect();
    store.record_quality(&rows).await?;
    let mut verdicts = roll_back_refused(quality, store, refused).await?;
    verdicts.extend(decide_canaries(quality, store, &figures).await?);
    Ok(Flushed {
        rows: rows.len(),
        verdicts,
    })
}

/// Rolls back each automatic canary whose version does not build.
async fn roll_back_refused(
    quality: &Quality,
    store: &dyn ModelStore,
    refused_canaries: &[(String, i64, String)],
) -> Result<Vec<Applied>, store::Error> {
    if refused_canaries.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<String> = refused_canaries.iter().map(|(k, _, _)| k.clone()).collect();
    let rollouts = store.rollouts(&keys).await?;
    let mut applied = Vec::new();
    for ((key, version, why), rollout) in refused_canaries.iter().zip(rollouts) {
        let Some(running) = rollout.and_then(|r| r.canary) else {
            continue;
        };
        let Some(criteria) = running
            .auto
            .as_ref()
            .filter(|_| running.version == *version)
        else {
            continue;
        };
        let evidence = refused(criteria, *version, why);
        applied.extend(apply(quality, store, key, *version, Verdict::RollBack, evidence).await?);
    }
    Ok(applied)
}

/// Writes one verdict; what applied, when this call's write did.
async fn apply(
    quality: &Quality,
    store: &dyn ModelStore,
    key: &str,
    version: i64,
    verdict: Verdict,
    evidence: Evidence,
) -> Result<Option<Applied>, store::Error> {
    let changed = store
        .decide_canary(key, version, verdict, &evidence.json.to_string())
        .await?;
    if !changed.changed {
        return Ok(None);
    }
    let promoted = matches!(verdict, Verdict::Promote);
    let name = if promoted { "promoted" } else { "rolled_back" };
    quality.metrics().verdicts.with_label_values(&[name]).inc();
    info!(
        key,
        version,
        verdict = name,
        "automatic canary verdict: {}",
        evidence.reason
    );
    Ok(Some(Applied {
        key: key.to_string(),
        version,
        promoted,
        reason: evidence.reason,
    }))
}

/// Decides each canary with figures whose rollout asks for automatic verdicts.
async fn decide_canaries(
    quality: &Quality,
    store: &dyn ModelStore,
    figures: &[VersionFigures],
) -> Result<Vec<Applied>, store::Error> {
    let canaries: Vec<&VersionFigures> = figures.iter().filter(|f| f.arm == Arm::Canary).collect();
    if canaries.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<String> = canaries.iter().map(|f| f.key.clone()).collect();
    let rollouts = store.rollouts(&keys).await?;
    let mut applied = Vec::new();
    for (canary, rollout) in canaries.into_iter().zip(rollouts) {
        let Some(running) = rollout.and_then(|r| r.canary) else {
            continue;
        };
        let Some(criteria) = running.auto.as_ref() else {
            continue;
        };
        if running.version != canary.version {
            continue;
        }
        // The active version's window over the same time: the busiest active window of the key.
        let Some(active) = figures
            .iter()
            .filter(|f| f.key == canary.key && f.arm == Arm::Active)
            .max_by_key(|f| f.figures.sums.predictions)
        else {
            continue;
        };
        let (verdict, evidence) = match decide(
            criteria,
            canary.version,
            &canary.figures,
            active.version,
            &active.figures,
            canary.window_ms,
        ) {
            Decision::Wait(_) => continue,
            Decision::Promote(e) => (Verdict::Promote, e),
            Decision::RollBack(e) => (Verdict::RollBack, e),
        };
        applied.extend(
            apply(
                quality,
                store,
                &canary.key,
                canary.version,
                verdict,
                evidence,
            )
            .await?,
        );
    }
    Ok(applied)
}

/// Flushes at the end of every slice until `cancel` fires, then once more. A store error is
/// logged (once until the store answers again) and the next slice tries again; scoring goes on.
pub async fn run(quality: Arc<Quality>, registry: Arc<ModelRegistry>, cancel: CancellationToken) {
    let store = registry.store();
    let slice = Duration::from_millis(quality.config().slice_ms() as u64);
    let mut failing = false;
    loop {
        let stop = tokio::select! {
            () = cancel.cancelled() => true,
            () = tokio::time::sleep(slice) => false,
        };
        let refused = registry.refused_canaries();
        match flush_with(&quality, store.as_ref(), &refused, now_ms()).await {
            Ok(_) => {
                if failing {
                    info!("model quality is written to the store again");
                }
                failing = false;
            }
            Err(err) => {
                if !failing {
                    warn!(
                        error = %crate::telemetry::ErrorChain(&err),
                        "cannot write model quality to the store; trying again every {}s",
                        slice.as_secs()
                    );
                }
                failing = true;
            }
        }
        if stop {
            break;
        }
    }
}
