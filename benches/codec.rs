//! Record decoding and encoding, and the whole scoring step of a batch, per record.
//!
//! Guards against regressions in `keyscore::stream::decode` with `Decoded::features_into`
//! on a realistic delivery record of about 450 bytes (id, city and 20 numbers, 18 of which
//! the model reads), in `Scored::encode_into` and `OutputFormat::encode` (each output shape:
//! `enriched` copies the input's bytes), and in `Scorer::score_batch` over 64 such
//! records from 8 cities (decode, one registry resolve per distinct key, feature
//! extraction, a linear model).
//!
//! `decode/lite` is a prototype defined here, not in the crate: one pass of a borrowing
//! `serde_json` visitor that keeps the key, the id and every numeric field as a
//! (borrowed name, number) pair instead of building a `Map<String, Value>`, and then reads the
//! model's features by name from that list. Whenever it cannot produce the same answer as the
//! crate's decoder (bad JSON, bad key, a feature missing or not a finite number) it says so,
//! and the caller would fall back to the crate's decoder for the exact rejection. The setup
//! checks that both give the same key, id and features on every record of the pool.
//!
//! Run with `cargo bench --bench codec`.

// criterion_group! defines an undocumented public function.
#![allow(missing_docs)]

use std::{borrow::Cow, fmt, hint::black_box, sync::Arc, time::Duration};

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use keyscore::{
    model::{
        spec::{OutputSpec, ParamsSpec, FORMAT_VERSION},
        spec_checksum, ModelSpec, Prediction,
    },
    registry::{ModelRegistry, RegistryConfig, ServedModel},
    store::{MemoryModelStore, ModelStore},
    stream::{
        decode,
        record::{Origin, OutputFormat, OutputShape, ScoredAt, Source},
        Input, Level, Outcome, RecordFormat, Scored, Scorer,
    },
    synth::Xoshiro256StarStar as Rng,
};
use keyscore_testkit::rounds::{self, Case};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// Records in the pool the benches cycle through.
const POOL: usize = 1024;
/// Records per `score_batch` call.
const BATCH: usize = 64;
const CITIES: [&str; 8] = [
    "paris",
    "lyon",
    "marseille",
    "lille",
    "nantes",
    "bordeaux",
    "toulouse",
    "nice",
];
/// The record's numeric fields, in record order; the model reads the first 18.
const NUMERIC: [&str; 20] = [
    "distance_km",
    "items",
    "basket_eur",
    "weight_kg",
    "prep_min",
    "hour",
    "weekday",
    "rain_mm",
    "temp_c",
    "traffic_index",
    "courier_load",
    "courier_rating",
    "restaurant_load",
    "tip_eur",
    "promo",
    "first_order",
    "pickup_lat",
    "pickup_lon",
    "dropoff_lat",
    "dropoff_lon",
];

/// One delivery record as JSON: numbers printed as a producer would (integers for counts,
/// a few decimals for measures, full precision for coordinates).
fn record(rng: &mut Rng, n: usize) -> String {
    let city = CITIES[rng.below(CITIES.len())];
    let mut s = format!(r#"{{"id":"r-{n:08}","city":"{city}""#);
    for (j, name) in NUMERIC.iter().enumerate() {
        let v = match *name {
            "items" | "hour" | "weekday" | "promo" | "first_order" | "prep_min" => {
                rng.below(24).to_string()
            }
            "pickup_lat" | "dropoff_lat" => format!("{}", rng.range(43.0, 51.0)),
            "pickup_lon" | "dropoff_lon" => format!("{}", rng.range(-1.5, 7.5)),
            _ => format!("{:.4}", rng.range(0.0, 10.0 + j as f64)),
        };
        s.push_str(&format!(r#","{name}":{v}"#));
    }
    s.push('}');
    s
}

fn pool() -> Vec<String> {
    let mut rng = Rng::new(7);
    (0..POOL).map(|n| record(&mut rng, n)).collect()
}

/// The model's features: 18 of the record's numbers, in an order unlike the record's.
fn model_features() -> Vec<String> {
    let mut f: Vec<String> = NUMERIC[..18].iter().map(|s| s.to_string()).collect();
    f.reverse();
    f.swap(0, 7);
    f
}

fn spec(classes: Option<&[&str]>) -> ModelSpec {
    let features = model_features();
    let n = features.len();
    let coefficients: Vec<f64> = (0..n).map(|i| 0.1 * i as f64 - 0.8).collect();
    let (model, output) = match classes {
        None => (
            ParamsSpec::Linear {
                coefficients,
                intercept: 12.0,
            },
            OutputSpec::Regression,
        ),
        Some(c) => (
            ParamsSpec::Logistic {
                coefficients: vec![coefficients],
                intercepts: vec![-1.0],
            },
            OutputSpec::Classification {
                classes: c.iter().map(|s| s.to_string()).collect(),
            },
        ),
    };
    ModelSpec {
        format_version: FORMAT_VERSION,
        features,
        scaler: None,
        preprocess: None,
        model,
        output,
        metadata: None,
        reference: None,
    }
}

fn served(key: &str, spec: &ModelSpec) -> Arc<ServedModel> {
    Arc::new(ServedModel {
        key: key.into(),
        version: 3,
        revision: 17,
        checksum: spec_checksum(&spec.to_json()),
        model: spec.build().expect("builds"),
        loaded_at: std::time::SystemTime::now(),
    })
}

// ---- The prototype decoder -------------------------------------------------------------

/// A record reduced to what scoring reads, borrowing field names from the payload.
#[derive(Debug, Default)]
struct Lite<'de> {
    key: Option<Value>,
    id: Option<Value>,
    /// Every other field: its name and its value if a number, else NaN (never a JSON number).
    numbers: Vec<(Cow<'de, str>, f64)>,
}

enum Field<'de> {
    Key,
    Id,
    Other(Cow<'de, str>),
}

struct FieldSeed<'f> {
    key: &'f str,
    id: &'f str,
}

impl<'de> DeserializeSeed<'de> for FieldSeed<'_> {
    type Value = Field<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Field<'de>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for FieldSeed<'_> {
    type Value = Field<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Field<'de>, E> {
        Ok(self.classify(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Field<'de>, E> {
        Ok(self.classify(Cow::Owned(v.to_string())))
    }
}

impl FieldSeed<'_> {
    fn classify<'de>(&self, name: Cow<'de, str>) -> Field<'de> {
        if name == self.key {
            Field::Key
        } else if name == self.id {
            Field::Id
        } else {
            Field::Other(name)
        }
    }
}

/// A field's value as a number, or NaN for anything else (skipped without allocating).
struct NumberOrNaN;

impl<'de> DeserializeSeed<'de> for NumberOrNaN {
    type Value = f64;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<f64, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NumberOrNaN {
    type Value = f64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_f64<E>(self, v: f64) -> Result<f64, E> {
        Ok(v)
    }
    fn visit_i64<E>(self, v: i64) -> Result<f64, E> {
        Ok(v as f64)
    }
    fn visit_u64<E>(self, v: u64) -> Result<f64, E> {
        Ok(v as f64)
    }
    fn visit_bool<E>(self, _: bool) -> Result<f64, E> {
        Ok(f64::NAN)
    }
    fn visit_str<E>(self, _: &str) -> Result<f64, E> {
        Ok(f64::NAN)
    }
    fn visit_unit<E>(self) -> Result<f64, E> {
        Ok(f64::NAN)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<f64, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(f64::NAN)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<f64, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(f64::NAN)
    }
}

struct RecordVisitor<'f> {
    key: &'f str,
    id: &'f str,
}

impl<'de> Visitor<'de> for RecordVisitor<'_> {
    type Value = Lite<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Lite<'de>, A::Error> {
        let mut lite = Lite {
            numbers: Vec::with_capacity(24),
            ..Lite::default()
        };
        let seed = || FieldSeed {
            key: self.key,
            id: self.id,
        };
        while let Some(field) = map.next_key_seed(seed())? {
            match field {
                Field::Key => lite.key = Some(map.next_value()?),
                Field::Id => lite.id = Some(map.next_value()?),
                Field::Other(name) => {
                    let v = map.next_value_seed(NumberOrNaN)?;
                    lite.numbers.push((name, v));
                }
            }
        }
        Ok(lite)
    }
}

/// The prototype: the key, the id and `features` in order, or `None` when the crate's
/// decoder must run to give the exact rejection. Field names match `RecordFormat::default()`.
fn decode_lite(
    payload: &[u8],
    features: &[String],
    out: &mut Vec<f64>,
) -> Option<(String, Option<Value>)> {
    let mut de = serde_json::Deserializer::from_slice(payload);
    let lite = de
        .deserialize_map(RecordVisitor {
            key: "city",
            id: "id",
        })
        .ok()?;
    de.end().ok()?;
    let key = match lite.key? {
        Value::String(s) if !s.is_empty() => s,
        Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
        _ => return None,
    };
    out.clear();
    for name in features {
        // The last occurrence wins, as in a JSON map.
        let &(_, v) = lite.numbers.iter().rev().find(|(n, _)| n == name)?;
        if !v.is_finite() {
            return None;
        }
        out.push(v);
    }
    Some((key, lite.id))
}

// ---- Benches ----------------------------------------------------------------------------

fn decoding(c: &mut Criterion) {
    let records = pool();
    let format = RecordFormat::default();
    let features = model_features();
    let bytes: usize = records.iter().map(String::len).sum();
    // The prototype must agree with the crate on every record.
    let mut a = Vec::new();
    let mut b = Vec::new();
    for r in &records {
        let d = decode(r.as_bytes(), &format, None).expect("decodes");
        d.features_into(&features, &mut a)
            .expect("has every feature");
        let (key, id) = decode_lite(r.as_bytes(), &features, &mut b).expect("lite decodes");
        let crate_id =
            d.id.map(|r| serde_json::from_str::<Value>(r.get()).expect("raw id is JSON"));
        assert_eq!((key, id, &b), (d.key, crate_id, &a));
    }
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(1));
    let label = format!("{}B", bytes / POOL);
    let mut i = 0;
    group.bench_function(BenchmarkId::new("crate", &label), |bench| {
        bench.iter(|| {
            i = (i + 1) % POOL;
            let d = decode(black_box(records[i].as_bytes()), &format, None).expect("decodes");
            d.features_into(&features, &mut a).expect("features");
            black_box((&d, &a));
        })
    });
    group.bench_function(BenchmarkId::new("crate_decode_only", &label), |bench| {
        bench.iter(|| {
            i = (i + 1) % POOL;
            black_box(decode(black_box(records[i].as_bytes()), &format, None))
        })
    });
    group.bench_function(BenchmarkId::new("lite", &label), |bench| {
        bench.iter(|| {
            i = (i + 1) % POOL;
            black_box(decode_lite(
                black_box(records[i].as_bytes()),
                &features,
                &mut b,
            ));
        })
    });
    group.finish();
}

/// A scored record as the pipeline would produce it, from a regression model (`None`) or a
/// binary classifier with these class labels.
fn scored(classes: Option<&[&str]>) -> Scored {
    let prediction = match classes {
        None => Prediction::Value(31.418_592_653_589_79),
        Some(_) => Prediction::Class {
            index: 1,
            probabilities: vec![0.273_471_112_948_113_5, 0.726_528_887_051_886_5],
        },
    };
    Scored {
        id: Some(
            serde_json::value::RawValue::from_string(r#""r-00012345""#.into()).expect("JSON text"),
        ),
        key: "paris".into(),
        prediction,
        model: served("paris", &spec(classes)),
        fallback: false,
        level: Level::Own,
        fallback_cause: None,
        canary: false,
        shadow: false,
        inputs: None,
    }
}

fn encoding(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(1));
    for (name, scored) in [
        ("regression", scored(None)),
        ("binary_class", scored(Some(&["on_time", "late"]))),
    ] {
        let mut out = Vec::with_capacity(512);
        scored.encode_into(&mut out);
        let len = out.len();
        group.bench_function(BenchmarkId::new(name, format!("{len}B")), |b| {
            b.iter(|| {
                out.clear();
                black_box(&scored).encode_into(&mut out);
                black_box(&out);
            })
        });
    }
    // Each output shape, for one regression record of the pool's kind.
    let record = pool().swap_remove(0);
    let mut scored = scored(None);
    scored.inputs = Some(vec![1.5; scored.model.model.features().len()].into());
    let source = Source {
        payload: record.as_bytes(),
        origin: Origin::Kafka {
            topic: "records",
            partition: 3,
            offset: 123_456,
        },
    };
    let at = ScoredAt::now();
    for shape in [
        OutputShape::Scored,
        OutputShape::Enriched,
        OutputShape::PredictionLog,
    ] {
        let format = OutputFormat::new(shape, "keyscore", Arc::new([]));
        let mut out = Vec::with_capacity(1024);
        format.encode(&scored, &source, &at, &mut out);
        let len = out.len();
        group.bench_function(
            BenchmarkId::new(format!("shape_{}", shape.as_str()), format!("{len}B")),
            |b| {
                b.iter(|| {
                    out.clear();
                    black_box(&format).encode(black_box(&scored), &source, &at, &mut out);
                    black_box(&out);
                })
            },
        );
    }
    group.finish();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A scorer over an in-memory store holding one linear model per city.
fn scorer(rt: &tokio::runtime::Runtime) -> Scorer {
    let store = Arc::new(MemoryModelStore::new());
    let json = spec(None).to_json();
    rt.block_on(async {
        for city in CITIES {
            let v = store.put_version(city, None, &json).await.unwrap();
            store.activate(city, v).await.unwrap();
        }
    });
    let registry = Arc::new(ModelRegistry::new(store, RegistryConfig::default()));
    Scorer::new(registry, RecordFormat::default())
}

fn batches(records: &[String]) -> Vec<Vec<Input<'_>>> {
    records
        .chunks(BATCH)
        .map(|chunk| {
            chunk
                .iter()
                .map(|r| Input {
                    payload: r.as_bytes(),
                    key: None,
                })
                .collect()
        })
        .collect()
}

fn scoring(c: &mut Criterion) {
    let rt = runtime();
    let scorer = scorer(&rt);
    let records = pool();
    let batches = batches(&records);
    // Load every city's model, and check every record scores.
    for batch in &batches {
        let outcomes = rt.block_on(scorer.score(batch, None)).outcomes;
        assert!(outcomes.iter().all(|o| matches!(o, Outcome::Scored(_))));
    }
    let mut group = c.benchmark_group("score_batch_64");
    group.throughput(Throughput::Elements(BATCH as u64));
    let mut k = 0;
    group.bench_function("linear_18_features_8_keys", |b| {
        b.iter(|| {
            k = (k + 1) % batches.len();
            black_box(rt.block_on(scorer.score(black_box(&batches[k]), None)))
        })
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = decoding, encoding, scoring
}

/// Medians of interleaved rounds: decoding with the crate and with the prototype, encoding,
/// and a whole batch, all per record, so the shares of a batch's time can be read off.
fn summary() {
    let records = pool();
    let format = RecordFormat::default();
    let features = model_features();
    let rt = runtime();
    let scorer = scorer(&rt);
    let batches = batches(&records);
    let regression = scored(None);
    let binary = scored(Some(&["on_time", "late"]));
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let (mut out1, mut out2) = (Vec::with_capacity(512), Vec::with_capacity(512));
    let (mut i, mut j, mut k) = (0, 0, 0);
    let mut cases = vec![
        Case::calls("decode + features_into (crate)", 1, || {
            i = (i + 1) % POOL;
            let d = decode(records[i].as_bytes(), &format, None).expect("decodes");
            d.features_into(&features, &mut a).expect("features");
            black_box((&d, &a));
        }),
        Case::calls("decode_lite + features (prototype)", 1, || {
            j = (j + 1) % POOL;
            black_box(decode_lite(records[j].as_bytes(), &features, &mut b));
        }),
        Case::calls("encode_into, regression", 1, || {
            out1.clear();
            black_box(&regression).encode_into(&mut out1);
            black_box(&out1);
        }),
        Case::calls("encode_into, binary class", 1, || {
            out2.clear();
            black_box(&binary).encode_into(&mut out2);
            black_box(&out2);
        }),
        Case::calls("score_batch(64), per record", BATCH as u64, || {
            k = (k + 1) % batches.len();
            black_box(rt.block_on(scorer.score(&batches[k], None)));
        }),
    ];
    let figures = rounds::run(&mut cases, 21, Duration::from_millis(20));
    println!("\ncodec: medians (best) of 21 interleaved rounds, ns per record");
    println!("| step | median (best) | / score_batch per record |");
    println!("|---|---|---|");
    let whole = figures[4].median;
    for (c, f) in cases.iter().zip(&figures) {
        println!(
            "| {} | {} ({}) | {:.2} |",
            c.name,
            rounds::ns(f.median),
            rounds::ns(f.best),
            f.median / whole
        );
    }
    println!(
        "prototype / crate decode: {:.2}",
        figures[1].median / figures[0].median
    );
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    if rounds::benching() {
        summary();
    }
}
