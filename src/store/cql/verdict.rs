//! Automatic canary verdicts on CQL: which write decides, and how a promotion lands.
//!
//! A promotion changes two rows of two tables, `model_rollouts` (the canary ends) and
//! `active_models` (the pointer moves), and no single write can condition on both: a
//! conditional batch must stay within one partition of one table (Cassandra refuses "Batch
//! with conditions cannot span multiple tables"; ScyllaDB likewise), and the test node
//! enforces it. So:
//!
//! 1. **The rollout's compare-and-set decides.** Read the pointer's revision `p`, then end the
//!    canary `IF revision = <read>` only if the row read shows `version` running. Of two
//!    processes deciding at once (whatever their verdicts), one applies; the other re-reads,
//!    finds the canary ended and writes nothing. A retry finds the same. For a promotion the
//!    same write records `promote_version = version, promote_from_revision = p`.
//! 2. **A promotion then moves the pointer** by [`CqlModelStore::move_pointer`] with
//!    [`plan_move`]'s promotion, and only while the pointer's revision is still `p`: the move
//!    lands at most once, and never over a pointer someone moved since (their change wins; the
//!    canary stays ended and the skipped promotion is logged).
//! 3. **A writer that stopped between 1 and 2** left the promotion recorded: the next
//!    promotion verdict for that version (a retry, or the loser of a race) finds it and lands
//!    it, under the same revision guard, answering that it did not decide. Any later rollout
//!    change clears the record, and a pointer moved since makes it inert.
//!
//! A reader between 1 and 2 sees the canary ended and the old version active: for those
//! milliseconds the canary's records are scored by the active version.

use super::{CqlModelStore, RolloutChange};
use crate::store::auto::promotion;
use crate::store::{
    check_evidence, check_key, plan_move, CanaryChanged, ChangeAction, Error, MovePlan, Verdict,
};

impl CqlModelStore {
    /// [`crate::store::ModelStore::decide_canary`] on CQL, as the module says.
    pub(super) async fn decide(
        &self,
        key: &str,
        version: i64,
        verdict: Verdict,
        evidence: &str,
    ) -> Result<CanaryChanged, Error> {
        check_key(key)?;
        check_evidence(evidence)?;
        let pointers = self.statements().await?;
        let decided_against = self.read_pointer(pointers, key).await?.revision;
        let promoted = (verdict == Verdict::Promote).then_some((version, decided_against));
        let (read, changed) = self
            .change_rollout(key, |current| {
                Ok(current
                    .canary
                    .as_ref()
                    .filter(|c| c.version == version)
                    .map(|_| RolloutChange::Verdict {
                        promotion: promoted,
                        evidence: evidence.to_string(),
                    }))
            })
            .await?;
        if changed {
            if let Some((version, from)) = promoted {
                if !self.land_promotion(key, version, from, evidence).await? {
                    tracing::warn!(
                        key,
                        version,
                        "The canary's promotion was decided but not made: the active version \
                         changed meanwhile, and that change stands. The canary has ended."
                    );
                }
            }
            return Ok(CanaryChanged {
                before: read.canary,
                after: None,
                changed: true,
            });
        }
        if verdict == Verdict::Promote {
            if let Some((version, from)) = read.promotion.filter(|(v, _)| *v == version) {
                self.land_promotion(key, version, from, evidence).await?;
            }
        }
        Ok(CanaryChanged {
            before: read.canary.clone(),
            after: read.canary,
            changed: false,
        })
    }

    /// Makes `version` active for a promotion decided against the pointer revision `from`:
    /// one compare-and-set, written only while the pointer's revision is `from` (nothing when
    /// it moved since, by this promotion or by anything else). Answers whether `version` is
    /// active after it.
    async fn land_promotion(
        &self,
        key: &str,
        version: i64,
        from: Option<i64>,
        evidence: &str,
    ) -> Result<bool, Error> {
        let action = ChangeAction::Promote;
        let landed = self
            .move_pointer(key, action, Some(evidence), |current| {
                if current.revision != from {
                    return Ok(None);
                }
                let active = current.version.map(|v| (v, current.previous));
                match plan_move(key, active, promotion(version, current.version))? {
                    MovePlan::Write {
                        version, previous, ..
                    } => Ok(Some((version, previous))),
                    MovePlan::Done(_) => Ok(None),
                }
            })
            .await?;
        Ok(landed.version == Some(version))
    }
}
