//! Live-quality rows on the CQL store expire: they are written `USING TTL` (`[store.cql]
//! quality_ttl_secs`, 30 days by default), so a key's partition stops growing. Checked on the
//! project's CQL test node, which expires cells on a clock tests can move forward.

use std::time::Duration;

use keyscore::store::{CqlModelStore, CqlOptions, Error, ModelStore, QualityRow};
use keyscore_testkit::cqlnode::CqlTestNode;

fn row(key: &str, window_end_ms: i64) -> QualityRow {
    QualityRow {
        key: key.to_string(),
        version: 1,
        arm: "active".to_string(),
        window_end_ms,
        window_ms: 60_000,
        predictions: 10,
        labelled: 0,
        mae: None,
        rmse: None,
        accuracy: None,
        log_loss: None,
        brier: None,
        label_lag_ms: None,
        dead_letters: 0,
        prediction_psi: None,
        max_feature_psi: None,
        feature_psi: None,
        missing_share: None,
        out_of_range_share: None,
        by: None,
    }
}

/// The TTL left on a row's `predictions` cell, in seconds.
async fn ttl_left(node: &CqlTestNode, key: &str) -> i32 {
    let (ttl,): (Option<i32>,) = node
        .session()
        .await
        .query_unpaged(
            "SELECT TTL(predictions) FROM ks.model_quality WHERE key = ? AND version = 1",
            (key,),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .first_row()
        .unwrap();
    ttl.expect("the row was written with a TTL")
}

#[tokio::test]
async fn quality_rows_are_written_with_the_configured_ttl_and_expire() {
    let node = CqlTestNode::start().await;
    let url = format!("{}/ks", node.addr());
    let default = CqlModelStore::connect(&url).await.unwrap();
    default.init().await.unwrap();
    default
        .record_quality(&[row("paris", 1_700_000_000_000)])
        .await
        .unwrap();
    let left = ttl_left(&node, "paris").await;
    assert!(
        (30 * 24 * 3600 - 60..=30 * 24 * 3600).contains(&left),
        "30 days by default, {left} s left"
    );

    let mut short = CqlModelStore::connect(&url).await.unwrap();
    short.set_quality_ttl(Duration::from_secs(3600)).unwrap();
    short
        .record_quality(&[row("lyon", 1_700_000_000_000)])
        .await
        .unwrap();
    let left = ttl_left(&node, "lyon").await;
    assert!((3540..=3600).contains(&left), "{left} s left of 3600");
    node.advance_ttl_clock(Duration::from_secs(3601));
    assert!(
        short.quality("lyon", None, 10).await.unwrap().is_empty(),
        "the row outlived its TTL"
    );
    assert_eq!(short.quality("paris", None, 10).await.unwrap().len(), 1);

    let options = CqlOptions {
        quality_ttl_secs: 21 * 365 * 24 * 3600,
        ..CqlOptions::default()
    };
    let err = CqlModelStore::connect_with(&url, &options)
        .await
        .expect_err("a TTL over the servers' limit");
    assert!(matches!(err, Error::Setting { .. }), "{err:?}");
    assert!(err.to_string().contains("quality_ttl_secs"), "{err}");
    assert!(short
        .set_quality_ttl(Duration::from_secs(21 * 365 * 24 * 3600))
        .is_err());
}
