//! Conformance checks of live model quality: [`ModelStore::record_quality`] and
//! [`ModelStore::quality`].

use keyscore::store::{Error, ModelStore, QualityRow};

use crate::unique_key;

/// A regression row of `key` with every field set: `predictions` 100, `labelled` 40.
fn row(key: &str, version: i64, arm: &str, window_end_ms: i64) -> QualityRow {
    QualityRow {
        key: key.to_string(),
        version,
        arm: arm.to_string(),
        window_end_ms,
        window_ms: 60_000,
        predictions: 100,
        labelled: 40,
        mae: Some(0.5),
        rmse: Some(0.75),
        accuracy: None,
        log_loss: None,
        brier: None,
        label_lag_ms: Some(1_500.0),
        dead_letters: 2,
        prediction_psi: Some(0.01),
        max_feature_psi: Some(0.125),
        feature_psi: Some(r#"{"a":0.125,"b":0.0}"#.to_string()),
        missing_share: Some(0.0),
        out_of_range_share: Some(0.25),
        by: Some("keyscore:serve@test".to_string()),
    }
}

/// A classifier's row: the regression metrics empty, the classification ones set.
fn classifier_row(key: &str, version: i64, arm: &str, window_end_ms: i64) -> QualityRow {
    QualityRow {
        mae: None,
        rmse: None,
        accuracy: Some(0.875),
        log_loss: Some(0.3),
        brier: Some(0.0625),
        feature_psi: None,
        by: None,
        ..row(key, version, arm, window_end_ms)
    }
}

/// `(window_end_ms, version, arm)` of each row, in order.
fn identities(rows: &[QualityRow]) -> Vec<(i64, i64, String)> {
    rows.iter()
        .map(|r| (r.window_end_ms, r.version, r.arm.clone()))
        .collect()
}

/// Rows come back exactly as written, newest window first (then version descending, arm
/// ascending), at most `limit`, of one version when asked, of the key asked only.
pub async fn quality_rows_are_stored_and_read_newest_first(store: &dyn ModelStore) {
    let key = unique_key("quality");
    let other = unique_key("quality-other");
    let t = 1_700_000_000_000;
    let written = vec![
        row(&key, 1, "active", t),
        row(&key, 1, "active", t + 60_000),
        classifier_row(&key, 2, "canary", t + 60_000),
        row(&key, 2, "shadow", t + 60_000),
        row(&key, 2, "canary", t + 120_000),
        row(&key, 1, "active", t + 120_000),
        row(&other, 1, "active", t + 180_000),
    ];
    store
        .record_quality(&written)
        .await
        .expect("record_quality");

    let all = store.quality(&key, None, 100).await.expect("quality");
    let w = |dt: i64, version: i64, arm: &str| (t + dt, version, arm.to_string());
    assert_eq!(
        identities(&all),
        [
            w(120_000, 2, "canary"),
            w(120_000, 1, "active"),
            w(60_000, 2, "canary"),
            w(60_000, 2, "shadow"),
            w(60_000, 1, "active"),
            w(0, 1, "active"),
        ],
        "newest window first, then version descending, arm ascending"
    );
    for r in &all {
        let original = written
            .iter()
            .find(|w| (w.version, &w.arm, w.window_end_ms) == (r.version, &r.arm, r.window_end_ms))
            .expect("a row that was written");
        assert_eq!(r, original, "a row comes back exactly as written");
    }
    let newest = store.quality(&key, None, 3).await.unwrap();
    assert_eq!(newest, all[..3].to_vec(), "limit keeps the newest");
    let v2 = store.quality(&key, Some(2), 100).await.unwrap();
    assert_eq!(
        identities(&v2),
        [
            w(120_000, 2, "canary"),
            w(60_000, 2, "canary"),
            w(60_000, 2, "shadow")
        ],
        "one version's rows"
    );
    assert_eq!(store.quality(&key, Some(1), 1).await.unwrap(), all[1..2]);
    assert!(store.quality(&key, Some(9), 10).await.unwrap().is_empty());
    assert!(store
        .quality(&unique_key("quality-none"), None, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        identities(&store.quality(&other, None, 10).await.unwrap()),
        [w(180_000, 1, "active")],
        "another key's rows stay apart"
    );
}

/// Writing a window again (labels arrived late) replaces it: one row, the later write winning
/// in every column, a value gone included. Recording the same rows twice is harmless.
pub async fn quality_rows_are_idempotent_and_the_later_write_wins(store: &dyn ModelStore) {
    let key = unique_key("quality-again");
    let t = 1_700_000_000_000;
    let first = row(&key, 3, "canary", t);
    store
        .record_quality(std::slice::from_ref(&first))
        .await
        .unwrap();
    store
        .record_quality(std::slice::from_ref(&first))
        .await
        .unwrap();
    let stored = store.quality(&key, None, 10).await.unwrap();
    assert_eq!(stored, std::slice::from_ref(&first));
    let later = QualityRow {
        labelled: 90,
        rmse: Some(0.5),
        mae: None,
        feature_psi: None,
        by: Some("keyscore:serve@other".to_string()),
        ..first.clone()
    };
    store
        .record_quality(&[later.clone(), row(&key, 3, "canary", t + 60_000)])
        .await
        .unwrap();
    let rows = store.quality(&key, Some(3), 10).await.unwrap();
    assert_eq!(rows.len(), 2, "{rows:#?}");
    assert_eq!(rows[1], later, "the later write wins in every column");
    // Empty input writes nothing and succeeds.
    store.record_quality(&[]).await.unwrap();
}

/// A batch with one unusable row is refused whole, naming the field, and writes nothing.
pub async fn quality_rows_refuse_bad_input_and_write_nothing(store: &dyn ModelStore) {
    let key = unique_key("quality-bad");
    let t = 1_700_000_000_000;
    let bad_rows: Vec<(QualityRow, &str)> = vec![
        (
            QualityRow {
                arm: "blue".into(),
                ..row(&key, 1, "active", t)
            },
            "arm",
        ),
        (
            QualityRow {
                rmse: Some(f64::NAN),
                ..row(&key, 1, "active", t)
            },
            "rmse",
        ),
        (
            QualityRow {
                labelled: 101,
                ..row(&key, 1, "active", t)
            },
            "labelled",
        ),
        (
            QualityRow {
                accuracy: Some(1.5),
                ..row(&key, 1, "active", t)
            },
            "accuracy",
        ),
        (
            QualityRow {
                version: 0,
                ..row(&key, 1, "active", t)
            },
            "version",
        ),
    ];
    for (bad, field) in bad_rows {
        let err = store
            .record_quality(&[row(&key, 1, "active", t + 60_000), bad])
            .await
            .expect_err("a batch with an unusable row was stored");
        assert!(
            matches!(&err, Error::InvalidQuality { field: f, .. } if *f == field),
            "{field}: {err:?}"
        );
        assert!(err.to_string().contains(field), "{err}");
    }
    let err = store
        .record_quality(&[row("", 1, "active", t)])
        .await
        .expect_err("a row without a key was stored");
    assert!(matches!(err, Error::InvalidKey(_)), "{err:?}");
    assert!(
        store.quality(&key, None, 10).await.unwrap().is_empty(),
        "a refused batch wrote rows"
    );
}

/// One call with the rows of many keys (a serving process's flush) stores each key's rows.
pub async fn quality_rows_of_many_keys_are_written_in_one_call(store: &dyn ModelStore) {
    let keys: Vec<String> = (0..40)
        .map(|i| unique_key(&format!("quality-many-{i}")))
        .collect();
    let t = 1_700_000_000_000;
    let mut rows = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        // Key i has i % 3 + 1 windows of its active version and one of a canary, interleaved
        // with other keys' rows as a flush would have them; key 0 has 20 windows, more than
        // one request carries.
        let windows = if i == 0 { 20 } else { i % 3 + 1 };
        for w in 0..windows {
            rows.push(row(key, 1, "active", t + 60_000 * w as i64));
        }
        rows.push(row(key, 2, "canary", t));
    }
    rows.sort_by_key(|r| r.window_end_ms);
    store.record_quality(&rows).await.expect("record_quality");
    for (i, key) in keys.iter().enumerate() {
        let windows = if i == 0 { 20 } else { i % 3 + 1 };
        let stored = store.quality(key, None, 100).await.unwrap();
        assert_eq!(stored.len(), windows + 1, "{key}: {stored:#?}");
        assert!(stored.iter().all(|r| r.key == *key));
    }
}
