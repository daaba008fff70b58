//! The registry as the scorer uses it: lazy loads coalesced, hot swaps under concurrent scoring
//! with nothing lost and no half-built model served, refused versions, store outages, fallback
//! and rollback.

use std::{
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use keyscore::{
    model::Prediction,
    registry::{ModelRegistry, RegistryConfig, Resolved},
    store::ModelStore,
    stream::{Input, Outcome, Reason, RecordFormat, Scorer},
};
use keyscore_testkit::faulty::FaultyStore;

/// A linear model over features a and b: `a + 2b + intercept`.
fn linear(intercept: f64) -> String {
    format!(
        r#"{{"format_version":1,"features":["a","b"],"model":{{"kind":"linear","coefficients":[1.0,2.0],"intercept":{intercept}}},"output":{{"type":"regression"}}}}"#
    )
}

fn config(fallback: Option<&str>) -> RegistryConfig {
    RegistryConfig {
        capacity: 1000,
        max_bytes: 1 << 30,
        fallback_key: fallback.map(str::to_string),
        refresh_interval: Duration::from_millis(20),
        resync_every: 0,
    }
}

async fn setup(fallback: Option<&str>) -> (Arc<FaultyStore>, Arc<ModelRegistry>) {
    let store = Arc::new(FaultyStore::new());
    store
        .put_version("paris", Some(1), &linear(100.0))
        .await
        .unwrap();
    store
        .put_version("paris", Some(2), &linear(200.0))
        .await
        .unwrap();
    store
        .put_version("_default", Some(1), &linear(0.0))
        .await
        .unwrap();
    store.activate("paris", 1).await.unwrap();
    store.activate("_default", 1).await.unwrap();
    let registry = Arc::new(ModelRegistry::new(
        Arc::clone(&store) as Arc<dyn ModelStore>,
        config(fallback),
    ));
    (store, registry)
}

fn value(o: &Outcome) -> (i64, f64) {
    match o {
        Outcome::Scored(s) => match s.prediction {
            Prediction::Value(v) => (s.model.version, v),
            ref other => panic!("expected a value, got {other:?}"),
        },
        Outcome::Rejected(r) => panic!("record rejected: {} {}", r.reason, r.message),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_uses_of_a_key_load_it_once() {
    let (store, registry) = setup(None).await;
    store.active_delay_ms.store(50, Ordering::SeqCst);
    let before = store.active_calls.load(Ordering::SeqCst);
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let r = Arc::clone(&registry);
        tasks.push(tokio::spawn(async move { r.get("paris").await.unwrap() }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().expect("paris has a model").version, 1);
    }
    assert_eq!(store.active_calls.load(Ordering::SeqCst) - before, 1);
    assert_eq!(registry.stats().loads.get(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hot_swap_under_concurrent_scoring_loses_nothing_and_never_goes_back() {
    /// Batches every worker scores before the activation is written.
    const BEFORE: usize = 50;
    /// Batches every worker scores after it first sees v2.
    const AFTER: usize = 50;
    /// How long a worker may wait for the swap: far beyond the 20 ms refresh interval.
    const SWAP_DEADLINE: Duration = Duration::from_secs(30);
    const WORKERS: usize = 4;
    const BATCH: usize = 16;

    let (store, registry) = setup(None).await;
    let cancel = tokio_util::sync::CancellationToken::new();
    let watcher = registry.spawn_watcher(cancel.clone());
    let scorer = Scorer::new(Arc::clone(&registry), RecordFormat::default());
    let record = br#"{"id":"x","city":"paris","a":1,"b":1}"#.to_vec();

    // Each worker reports once it has scored BEFORE batches, then scores until it has seen v2
    // and AFTER more batches.
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(WORKERS);
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let scorer = scorer.clone();
        let record = record.clone();
        let ready = ready_tx.clone();
        workers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut batches = 0;
            let mut since_v2: Option<usize> = None;
            let mut deadline: Option<Instant> = None;
            loop {
                let inputs = vec![
                    Input {
                        payload: &record,
                        key: None
                    };
                    BATCH
                ];
                let out = scorer.score(&inputs, None).await.outcomes;
                assert_eq!(out.len(), inputs.len(), "one outcome per input");
                let start = seen.len();
                seen.extend(out.iter().map(value));
                batches += 1;
                if batches == BEFORE {
                    deadline = Some(Instant::now() + SWAP_DEADLINE);
                    ready.send(()).await.expect("the test is waiting");
                }
                if since_v2.is_none() && seen[start..].iter().any(|(version, _)| *version == 2) {
                    since_v2 = Some(0);
                }
                if let Some(n) = since_v2.as_mut() {
                    *n += 1;
                    if *n > AFTER {
                        break;
                    }
                }
                assert!(
                    deadline.is_none_or(|d| Instant::now() < d),
                    "v2 not seen within {SWAP_DEADLINE:?} of the activation"
                );
                tokio::task::yield_now().await;
            }
            (seen, batches)
        }));
    }
    drop(ready_tx);
    // Every worker is scoring with v1: the activation lands mid-stream.
    for _ in 0..WORKERS {
        tokio::time::timeout(SWAP_DEADLINE, ready_rx.recv())
            .await
            .expect("every worker scores its first batches")
            .expect("a worker stopped before its first batches");
    }
    store.activate("paris", 2).await.unwrap();

    let mut total = 0;
    let mut sent = 0;
    for w in workers {
        let (seen, batches) = w.await.unwrap();
        assert!(batches > BEFORE + AFTER, "{batches} batches");
        sent += batches * BATCH;
        total += seen.len();
        let mut swapped = false;
        for (version, v) in seen {
            // The value proves which model scored it: never a mix of two versions.
            let expected = match version {
                1 => 103.0,
                2 => 203.0,
                other => panic!("unexpected version {other}"),
            };
            assert_eq!(v, expected, "v{version} scored {v}");
            if version == 2 {
                swapped = true;
            } else {
                assert!(
                    !swapped,
                    "a record was scored by v1 after this worker saw v2"
                );
            }
        }
        assert!(swapped, "a worker never saw v2");
    }
    assert_eq!(total, sent, "one outcome per record sent");
    assert_eq!(registry.get("paris").await.unwrap().unwrap().version, 2);
    assert_eq!(registry.stats().swaps.get(), 1);
    let swaps = registry.swaps();
    assert_eq!((swaps[0].from, swaps[0].to), (Some(1), 2));
    cancel.cancel();
    watcher.await.unwrap();
}

#[tokio::test]
async fn a_version_that_does_not_build_is_refused_and_the_old_one_keeps_scoring() {
    let (store, registry) = setup(None).await;
    assert_eq!(registry.get("paris").await.unwrap().unwrap().version, 1);
    store
        .plant(
            "paris",
            3,
            r#"{"format_version":1,"features":["a","b"],"model":{"kind":"linear","coefficients":[1.0],"intercept":0},"output":{"type":"regression"}}"#,
        )
        .await;
    store.activate_now("paris", 3).await;
    registry.poll().await.unwrap();
    assert_eq!(registry.get("paris").await.unwrap().unwrap().version, 1);
    assert_eq!(registry.stats().build_failures.get(), 1);
    let status = registry.key_status();
    let paris = status.iter().find(|k| k.key == "paris").unwrap();
    assert_eq!(paris.served_version, Some(1));
    assert_eq!(paris.refused_version, Some(3));
    // The same revision is not rebuilt at every poll.
    registry.poll().await.unwrap();
    registry.resync().await.unwrap();
    assert_eq!(registry.stats().build_failures.get(), 1);
    // A later good version is taken.
    store.activate("paris", 2).await.unwrap();
    registry.poll().await.unwrap();
    assert_eq!(registry.get("paris").await.unwrap().unwrap().version, 2);
}

#[tokio::test]
async fn a_key_whose_only_active_version_is_refused_has_no_model_and_says_why() {
    let store = Arc::new(FaultyStore::new());
    store.plant("rome", 1, r#"{"format_version":1,"features":[],"model":{"kind":"linear","coefficients":[],"intercept":0},"output":{"type":"regression"}}"#).await;
    store.activate_now("rome", 1).await;
    let registry = Arc::new(ModelRegistry::new(store, config(None)));
    match registry.resolve("rome").await.unwrap() {
        Resolved::Missing(why) => assert!(why.contains("rome version 1"), "{why}"),
        other => panic!("expected no model, got {other:?}"),
    }
}

#[tokio::test]
async fn store_outage_keeps_cached_models_scoring_and_catches_up_after() {
    let (store, registry) = setup(Some("_default")).await;
    registry.poll().await.unwrap();
    assert_eq!(registry.get("paris").await.unwrap().unwrap().version, 1);
    assert!(registry.store_healthy());

    store.failing.store(true, Ordering::SeqCst);
    store.activate_now("paris", 2).await;
    assert!(registry.poll().await.is_err());
    assert!(!registry.store_healthy());
    // Cached keys keep scoring with what the process has.
    assert_eq!(registry.get("paris").await.unwrap().unwrap().version, 1);
    // An uncached key cannot be loaded: the scorer dead-letters it as store_unavailable.
    let scorer = Scorer::new(Arc::clone(&registry), RecordFormat::default());
    let rec = br#"{"city":"lyon","a":1,"b":1}"#;
    let out = scorer
        .score(
            &[Input {
                payload: rec,
                key: None,
            }],
            None,
        )
        .await
        .outcomes;
    match &out[0] {
        Outcome::Rejected(r) => assert_eq!(r.reason, Reason::StoreUnavailable),
        other => panic!("expected a store_unavailable dead letter, got {other:?}"),
    }

    store.failing.store(false, Ordering::SeqCst);
    registry.poll().await.unwrap();
    assert!(registry.store_healthy());
    assert_eq!(registry.get("paris").await.unwrap().unwrap().version, 2);
}

#[tokio::test]
async fn unknown_keys_use_the_fallback_and_say_so() {
    let (_store, registry) = setup(Some("_default")).await;
    let scorer = Scorer::new(Arc::clone(&registry), RecordFormat::default());
    let recs: [&[u8]; 2] = [
        br#"{"id":1,"city":"lyon","a":1,"b":1}"#,
        br#"{"id":2,"city":"paris","a":1,"b":1}"#,
    ];
    let inputs: Vec<Input<'_>> = recs
        .iter()
        .map(|p| Input {
            payload: p,
            key: None,
        })
        .collect();
    let out = scorer.score(&inputs, None).await.outcomes;
    let Outcome::Scored(lyon) = &out[0] else {
        panic!("{:?}", out[0])
    };
    assert!(lyon.fallback);
    assert_eq!(lyon.key, "lyon");
    assert_eq!(lyon.model.key, "_default");
    assert_eq!(lyon.prediction, Prediction::Value(3.0));
    let Outcome::Scored(paris) = &out[1] else {
        panic!("{:?}", out[1])
    };
    assert!(!paris.fallback);
    let mut line = Vec::new();
    lyon.encode_into(&mut line);
    let json: serde_json::Value = serde_json::from_slice(&line).unwrap();
    assert_eq!(json["fallback"], true);
    assert_eq!(json["model_key"], "_default");
    assert_eq!(json["key"], "lyon");
    assert_eq!(json["id"], 1);
}

#[tokio::test]
async fn without_a_fallback_unknown_keys_are_dead_letters() {
    let (_store, registry) = setup(None).await;
    let scorer = Scorer::new(registry, RecordFormat::default());
    let out = scorer
        .score(
            &[Input {
                payload: br#"{"city":"lyon","a":1,"b":1}"#,
                key: None,
            }],
            None,
        )
        .await
        .outcomes;
    let Outcome::Rejected(r) = &out[0] else {
        panic!("{:?}", out[0])
    };
    assert_eq!(r.reason, Reason::NoModel);
    assert!(r.message.contains("lyon"), "{}", r.message);
}

#[tokio::test]
async fn a_key_activated_after_its_first_miss_is_picked_up() {
    let (store, registry) = setup(None).await;
    registry.poll().await.unwrap();
    assert!(registry.get("oslo").await.unwrap().is_none());
    store
        .put_version("oslo", Some(1), &linear(5.0))
        .await
        .unwrap();
    store.activate("oslo", 1).await.unwrap();
    registry.poll().await.unwrap();
    assert_eq!(registry.get("oslo").await.unwrap().unwrap().version, 1);
}

#[tokio::test]
async fn rollback_is_a_newer_revision_and_is_served() {
    let (store, registry) = setup(None).await;
    registry.poll().await.unwrap();
    assert_eq!(registry.get("paris").await.unwrap().unwrap().version, 1);
    store.activate("paris", 2).await.unwrap();
    registry.poll().await.unwrap();
    assert_eq!(registry.get("paris").await.unwrap().unwrap().version, 2);
    assert_eq!(store.rollback("paris").await.unwrap(), 1);
    registry.poll().await.unwrap();
    assert_eq!(registry.get("paris").await.unwrap().unwrap().version, 1);
}

#[tokio::test]
async fn a_key_evicted_from_a_small_cache_is_never_served_stale() {
    let store = Arc::new(FaultyStore::new());
    let keys: Vec<String> = (0..200).map(|i| format!("k{i}")).collect();
    for key in &keys {
        store.put_version(key, Some(1), &linear(1.0)).await.unwrap();
        store.put_version(key, Some(2), &linear(2.0)).await.unwrap();
        store.activate(key, 1).await.unwrap();
    }
    let registry = ModelRegistry::new(
        Arc::clone(&store) as Arc<dyn ModelStore>,
        RegistryConfig {
            capacity: 10,
            ..config(None)
        },
    );
    registry.poll().await.unwrap();
    for _ in 0..3 {
        for key in &keys {
            assert_eq!(registry.get(key).await.unwrap().unwrap().version, 1);
        }
    }
    for key in &keys {
        store.activate(key, 2).await.unwrap();
    }
    registry.poll().await.unwrap();
    for key in &keys {
        assert_eq!(
            registry.get(key).await.unwrap().unwrap().version,
            2,
            "{key} served a version the store replaced"
        );
    }
}

/// A store holding `n` keys `b0..`, each with v1 (intercept 1) active and v2 (intercept 2)
/// stored, written in bulk.
async fn many_keys(store: &FaultyStore, prefix: &str, n: usize) -> Vec<String> {
    use keyscore::store::NewVersion;
    let keys: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
    let items: Vec<NewVersion> = keys
        .iter()
        .flat_map(|k| {
            [1.0, 2.0].map(|intercept| NewVersion {
                key: k.clone(),
                version: Some(intercept as i64),
                spec_json: linear(intercept),
            })
        })
        .collect();
    for r in store.inner().put_versions(&items).await.unwrap() {
        r.unwrap();
    }
    let pairs: Vec<(String, i64)> = keys.iter().map(|k| (k.clone(), 1)).collect();
    for r in store.inner().activate_many(&pairs).await.unwrap() {
        r.unwrap();
    }
    keys
}

fn own_version(r: &Result<Resolved, Arc<keyscore::registry::Error>>) -> i64 {
    match r {
        Ok(Resolved::Own(m)) => m.version,
        other => panic!("expected the key's own model, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_of_missing_keys_is_read_once_and_concurrent_batches_share_models() {
    let store = Arc::new(FaultyStore::new());
    let keys = many_keys(&store, "b", 300).await;
    let registry = Arc::new(ModelRegistry::new(
        Arc::clone(&store) as Arc<dyn ModelStore>,
        config(None),
    ));
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let resolved = registry.resolve_many(&refs).await;
    assert!(resolved.iter().all(|r| own_version(r) == 1));
    assert_eq!(
        store.active_many_calls.load(Ordering::SeqCst),
        1,
        "one read for the batch"
    );
    assert_eq!(
        store.active_calls.load(Ordering::SeqCst),
        0,
        "no per-key reads"
    );
    assert_eq!(registry.stats().loads.get(), 300);
    // Cached now: no more reads.
    registry.resolve_many(&refs).await;
    assert_eq!(store.active_many_calls.load(Ordering::SeqCst), 1);

    // Four batches of the same new keys at once, behind a slow store: each key is built once
    // and every batch gets that one model.
    let fresh = many_keys(&store, "c", 200).await;
    store.active_delay_ms.store(50, Ordering::SeqCst);
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let registry = Arc::clone(&registry);
            let fresh = fresh.clone();
            tokio::spawn(async move {
                let refs: Vec<&str> = fresh.iter().map(String::as_str).collect();
                registry.resolve_many(&refs).await
            })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    for i in 0..fresh.len() {
        let first = match &results[0][i] {
            Ok(Resolved::Own(m)) => Arc::clone(m),
            other => panic!("{}: {other:?}", fresh[i]),
        };
        for r in &results[1..] {
            match &r[i] {
                Ok(Resolved::Own(m)) => assert!(Arc::ptr_eq(m, &first), "{} built twice", fresh[i]),
                other => panic!("{}: {other:?}", fresh[i]),
            }
        }
    }
}

#[tokio::test]
async fn a_key_that_fails_to_load_does_not_fail_the_rest_of_its_batch() {
    let store = Arc::new(FaultyStore::new().with_down_keys(["d7"]));
    let keys = many_keys(&store, "d", 20).await;
    let registry = Arc::new(ModelRegistry::new(
        Arc::clone(&store) as Arc<dyn ModelStore>,
        config(None),
    ));
    let scorer = Scorer::new(Arc::clone(&registry), RecordFormat::default());
    let lines: Vec<String> = keys
        .iter()
        .map(|k| format!(r#"{{"city":"{k}","a":1.0,"b":1.0}}"#))
        .collect();
    let inputs: Vec<Input<'_>> = lines
        .iter()
        .map(|l| Input {
            payload: l.as_bytes(),
            key: None,
        })
        .collect();
    let out = scorer.score(&inputs, None).await.outcomes;
    for (key, outcome) in keys.iter().zip(&out) {
        if key == "d7" {
            match outcome {
                Outcome::Rejected(r) => assert_eq!(r.reason, Reason::StoreUnavailable),
                other => panic!("d7 was scored: {other:?}"),
            }
        } else {
            assert_eq!(value(outcome), (1, 4.0), "{key}");
        }
    }
}

#[tokio::test]
async fn a_store_outage_mid_batch_fails_only_the_keys_not_cached() {
    let store = Arc::new(FaultyStore::new());
    let keys = many_keys(&store, "e", 20).await;
    let registry = Arc::new(ModelRegistry::new(
        Arc::clone(&store) as Arc<dyn ModelStore>,
        config(None),
    ));
    let (cached, fresh) = keys.split_at(10);
    let cached: Vec<&str> = cached.iter().map(String::as_str).collect();
    let all: Vec<&str> = keys.iter().map(String::as_str).collect();
    registry.resolve_many(&cached).await;
    store.failing.store(true, Ordering::SeqCst);
    let during = registry.resolve_many(&all).await;
    for (key, r) in all.iter().zip(&during) {
        if fresh.iter().any(|f| f == key) {
            assert!(r.is_err(), "{key} resolved during the outage: {r:?}");
        } else {
            assert_eq!(own_version(r), 1, "{key}");
        }
    }
    assert!(!registry.store_healthy());
    store.failing.store(false, Ordering::SeqCst);
    let after = registry.resolve_many(&all).await;
    assert!(after.iter().all(|r| own_version(r) == 1));
}

#[tokio::test]
async fn the_cache_stays_under_its_byte_bound_and_never_serves_stale() {
    let store = Arc::new(FaultyStore::new());
    let keys = many_keys(&store, "w", 50).await;
    let one = {
        let registry = ModelRegistry::new(Arc::clone(&store) as Arc<dyn ModelStore>, config(None));
        registry.get("w0").await.unwrap().unwrap().heap_bytes() as u64
    };
    // Room for about five models, whatever the key bound.
    let max_bytes = one * 5 + one / 2;
    let registry = ModelRegistry::new(
        Arc::clone(&store) as Arc<dyn ModelStore>,
        RegistryConfig {
            capacity: 1000,
            max_bytes,
            ..config(None)
        },
    );
    registry.poll().await.unwrap();
    for key in &keys {
        assert_eq!(registry.get(key).await.unwrap().unwrap().version, 1);
    }
    let (entries, bytes) = registry.cache_weight().await;
    assert!(
        bytes <= max_bytes,
        "{bytes} bytes cached, bound {max_bytes}"
    );
    assert!(
        (1..=6).contains(&entries),
        "{entries} entries for a bound of ~5 models"
    );
    for key in &keys {
        store.activate(key, 2).await.unwrap();
    }
    registry.poll().await.unwrap();
    for key in &keys {
        assert_eq!(
            registry.get(key).await.unwrap().unwrap().version,
            2,
            "{key} served a version the store replaced"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_swap_while_100k_keys_are_cached_is_served_and_never_undone() {
    let store = Arc::new(FaultyStore::new());
    let keys = many_keys(&store, "h", 100_000).await;
    let registry = Arc::new(ModelRegistry::new(
        Arc::clone(&store) as Arc<dyn ModelStore>,
        RegistryConfig {
            capacity: 200_000,
            ..config(None)
        },
    ));
    registry.poll().await.unwrap(); // the watcher's cursor
    for chunk in keys.chunks(1000) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        assert!(registry
            .resolve_many(&refs)
            .await
            .iter()
            .all(|r| own_version(r) == 1));
    }
    assert_eq!(registry.cache_weight().await.0, 100_000);
    // Swap every hundredth key.
    let swapped: Vec<(String, i64)> = keys.iter().step_by(100).map(|k| (k.clone(), 2)).collect();
    for r in store.inner().activate_many(&swapped).await.unwrap() {
        r.unwrap();
    }
    assert_eq!(registry.poll().await.unwrap(), swapped.len());
    for round in 0..3 {
        for chunk in keys.chunks(1000) {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            for (key, r) in refs.iter().zip(registry.resolve_many(&refs).await) {
                let expected = if swapped.iter().any(|(k, _)| k == key) {
                    2
                } else {
                    1
                };
                assert_eq!(own_version(&r), expected, "{key} in round {round}");
            }
        }
        registry.poll().await.unwrap();
    }
    assert_eq!(registry.stats().swaps.get(), swapped.len() as u64);
}
