//! Model specs the store tests write: two valid ones over features `a` and `b`, and two that
//! a store must refuse.

/// A valid spec: a linear regression over two features.
pub const VALID_SPEC: &str = r#"{"format_version":1,"features":["a","b"],"model":{"kind":"linear","coefficients":[1.0,2.0],"intercept":0.5},"output":{"type":"regression"}}"#;

/// Another valid spec, so versions of one key differ.
pub const VALID_SPEC_2: &str = r#"{"format_version":1,"features":["a","b"],"model":{"kind":"linear","coefficients":[-3.0,0.25],"intercept":7.0},"output":{"type":"regression"}}"#;

/// A spec that does not decode: the model kind does not exist.
pub const UNKNOWN_KIND_SPEC: &str = r#"{"format_version":1,"features":["a","b"],"model":{"kind":"quantum","coefficients":[1.0,2.0],"intercept":0.5},"output":{"type":"regression"}}"#;

/// A spec that decodes but cannot build: two features, one coefficient.
pub const SHAPE_MISMATCH_SPEC: &str = r#"{"format_version":1,"features":["a","b"],"model":{"kind":"linear","coefficients":[1.0],"intercept":0.5},"output":{"type":"regression"}}"#;

/// A full binary tree of `depth` splits for benchmarks, in the spec's flat layout: node `i`
/// splits on a feature drawn uniformly from `n_features` at `threshold(rng, feature)`, its
/// children are `2i + 1` and `2i + 2`, and each leaf holds one value drawn from
/// `[0, leaf_max)`. Draws happen in node order, so a seed gives the same tree every time.
pub fn full_tree(
    rng: &mut keyscore::synth::Xoshiro256StarStar,
    n_features: usize,
    depth: u32,
    threshold: impl Fn(&mut keyscore::synth::Xoshiro256StarStar, usize) -> f64,
    leaf_max: f64,
) -> keyscore::model::spec::TreeSpec {
    let splits = (1usize << depth) - 1;
    let nodes = (1usize << (depth + 1)) - 1;
    let mut t = keyscore::model::spec::TreeSpec {
        feature: Vec::with_capacity(nodes),
        threshold: Vec::with_capacity(nodes),
        left: Vec::with_capacity(nodes),
        right: Vec::with_capacity(nodes),
        value: Vec::with_capacity(nodes),
    };
    for i in 0..nodes {
        if i < splits {
            let f = rng.below(n_features);
            t.feature.push(f as i64);
            t.threshold.push(threshold(rng, f));
            t.left.push(2 * i as i64 + 1);
            t.right.push(2 * i as i64 + 2);
            t.value.push(vec![]);
        } else {
            t.feature.push(-2);
            t.threshold.push(-2.0);
            t.left.push(-1);
            t.right.push(-1);
            t.value.push(vec![rng.range(0.0, leaf_max)]);
        }
    }
    t
}

/// A random-forest spec of at least `bytes` bytes of JSON, for tests of large specs: full trees
/// of depth 10 over 8 features with full-precision thresholds drawn from a normal distribution
/// (as a scikit-learn forest's are: they compress about as badly), seeded so a seed gives the
/// same text every time.
pub fn large_forest_json(bytes: usize, seed: u64) -> String {
    use keyscore::model::spec::{OutputSpec, ParamsSpec, ThresholdPrecision, FORMAT_VERSION};
    let mut rng = keyscore::synth::Xoshiro256StarStar::new(seed);
    let first = full_tree(&mut rng, 8, 10, |rng, _| rng.normal(), 100.0);
    let per_tree = serde_json::to_string(&first)
        .expect("a tree serialises")
        .len()
        .max(1);
    let mut trees = vec![first];
    while trees.len() * per_tree < bytes {
        trees.push(full_tree(&mut rng, 8, 10, |rng, _| rng.normal(), 100.0));
    }
    let spec = keyscore::model::ModelSpec {
        format_version: FORMAT_VERSION,
        features: (0..8).map(|i| format!("f{i}")).collect(),
        scaler: None,
        preprocess: None,
        model: ParamsSpec::RandomForest {
            trees,
            threshold_precision: ThresholdPrecision::F64,
        },
        output: OutputSpec::Regression,
        metadata: None,
        reference: None,
    };
    let text = serde_json::to_string(&spec).expect("a spec serialises");
    assert!(
        text.len() >= bytes,
        "the forest came out smaller than asked"
    );
    text
}
