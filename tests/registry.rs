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
