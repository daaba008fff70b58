//! Reference statistics a spec carries with its weights: per feature, the training data's
//! distribution as quantile bins, its share of missing values and its range, and the
//! distribution of the model's own predictions on the same rows. Live traffic is compared
//! with them (population stability) to tell when the data a model sees has drifted from the
//! data it learnt from.
//!
//! The types are both the spec's JSON (`reference` in [`ModelSpec`](crate::model::ModelSpec))
//! and what a built [`Model`](crate::model::Model) keeps: [`check`] refuses what would make
//! them meaningless (bins that do not partition the line, shares that are not a
//! distribution), naming the field.
//!
//! A value is binned as [`Model::predict`](crate::model::Model::predict) takes it: the number
//! read from the record, or for a string feature encoded by the preprocess stage its category
//! code (the index in the encoder's categories, -1 when unknown). The prediction binned is the
//! model's value: the regression value, the probability of the second class of a binary
//! classifier, the predicted class index of a multiclass one.

use serde::{Deserialize, Serialize};

use super::{build::invalid, Error};

/// The most edges (so bins minus one) one [`Bins`] may have.
pub const MAX_BIN_EDGES: usize = 100;

/// How far the shares of a [`Bins`] may sum from 1.
const SHARE_SUM_TOLERANCE: f64 = 1e-6;

/// The reference statistics of a model: its training (or validation) data as seen by the
/// model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    /// The number of rows the statistics were computed on; at least 1.
    pub rows: u64,
    /// One entry per spec feature, in the order of the spec's `features`.
    pub features: Vec<FeatureReference>,
    /// The distribution of the model's value on the reference rows (regression value,
    /// probability of the second class for a binary classifier, class index for a multiclass
    /// one), when exported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction: Option<Bins>,
}

/// The reference distribution of one feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureReference {
    /// The distribution of the non-missing values (`edges` and `shares` in the JSON object).
    #[serde(flatten)]
    pub bins: Bins,
    /// The share of rows where the feature was missing (absent, `null` or NaN), in [0, 1].
    pub missing: f64,
    /// The smallest non-missing value.
    pub min: f64,
    /// The largest non-missing value.
    pub max: f64,
}

/// A histogram over the real line: `edges.len() + 1` bins, bin `i` holding the values `v`
/// with `edges[i - 1] <= v < edges[i]` (the first bin everything below `edges[0]`, the last
/// everything from the last edge up), and the share of the reference values in each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bins {
    /// Finite, strictly increasing bin boundaries; at most [`MAX_BIN_EDGES`].
    pub edges: Vec<f64>,
    /// One share per bin (one more than `edges`), each in [0, 1], summing to 1.
    pub shares: Vec<f64>,
}

impl Bins {
    /// The bin of `v`: the number of edges <= v (v below edges[0] is bin 0, v >= the last
    /// edge is the last bin). NaN is not binned by callers (it lands in bin 0).
    pub fn bin(&self, v: f64) -> usize {
        self.edges.partition_point(|&e| e <= v)
    }

    /// The number of bins (`shares.len()`).
    pub fn len(&self) -> usize {
        self.shares.len()
    }

    /// Whether there are no bins; never true of checked bins, which have at least one.
    pub fn is_empty(&self) -> bool {
        self.shares.is_empty()
    }

    /// Heap bytes of the two vectors.
    fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(self.edges.as_slice()) + std::mem::size_of_val(self.shares.as_slice())
    }

    /// Numbers held, for the spec's size limit.
    fn numbers(&self) -> usize {
        self.edges.len().saturating_add(self.shares.len())
    }
}

impl Reference {
    /// Heap bytes of the statistics, the struct itself included.
    pub(super) fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + std::mem::size_of_val(self.features.as_slice())
            + self
                .features
                .iter()
                .map(|f| f.bins.heap_bytes())
                .sum::<usize>()
            + self.prediction.as_ref().map_or(0, Bins::heap_bytes)
    }

    /// Numbers held, for the spec's size limit; saturating, so a hostile spec cannot
    /// overflow it.
    pub(super) fn numbers(&self) -> usize {
        let features = self.features.iter().fold(0usize, |n, f| {
            n.saturating_add(f.bins.numbers()).saturating_add(3)
        });
        features
            .saturating_add(1)
            .saturating_add(self.prediction.as_ref().map_or(0, Bins::numbers))
    }
}

/// Checks reference statistics for a model of `n_features` features; the error names the
/// field at fault, as `reference.features[3].edges: not strictly increasing`.
pub(super) fn check(reference: &Reference, n_features: usize) -> Result<(), Error> {
    if reference.rows == 0 {
        return Err(invalid(
            "reference.rows: is 0; reference statistics come from at least one row",
        ));
    }
    if reference.features.len() != n_features {
        return Err(invalid(format!(
            "reference.features: has {} entries but the model has {n_features} features; give \
             one per feature, in the order of features",
            reference.features.len()
        )));
    }
    for (i, f) in reference.features.iter().enumerate() {
        let what = format!("reference.features[{i}]");
        check_bins(&f.bins, &what)?;
        check_share(f.missing, &format!("{what}.missing"))?;
        for (name, v) in [("min", f.min), ("max", f.max)] {
            if !v.is_finite() {
                return Err(invalid(format!(
                    "{what}.{name}: is {v}, not a finite number"
                )));
            }
        }
        if f.min > f.max {
            return Err(invalid(format!(
                "{what}: min {} is above max {}",
                f.min, f.max
            )));
        }
    }
    if let Some(p) = &reference.prediction {
        check_bins(p, "reference.prediction")?;
    }
    Ok(())
}

fn check_bins(bins: &Bins, what: &str) -> Result<(), Error> {
    let edges = &bins.edges;
    if edges.len() > MAX_BIN_EDGES {
        return Err(invalid(format!(
            "{what}.edges: has {} edges, more than the limit of {MAX_BIN_EDGES}",
            edges.len()
        )));
    }
    if let Some(j) = edges.iter().position(|e| !e.is_finite()) {
        return Err(invalid(format!(
            "{what}.edges[{j}]: is {}, not a finite number",
            edges[j]
        )));
    }
    if let Some(j) = edges.windows(2).position(|w| w[0] >= w[1]) {
        return Err(invalid(format!(
            "{what}.edges: not strictly increasing (edges[{}] = {} is not above edges[{j}] = {})",
            j + 1,
            edges[j + 1],
            edges[j]
        )));
    }
    if bins.shares.len() != edges.len() + 1 {
        return Err(invalid(format!(
            "{what}.shares: has {} entries but {} edges make {} bins; give one share per bin",
            bins.shares.len(),
            edges.len(),
            edges.len() + 1
        )));
    }
    for (j, &s) in bins.shares.iter().enumerate() {
        check_share(s, &format!("{what}.shares[{j}]"))?;
    }
    let sum: f64 = bins.shares.iter().sum();
    if (sum - 1.0).abs() > SHARE_SUM_TOLERANCE {
        return Err(invalid(format!(
            "{what}.shares: sum to {sum}, not 1 (within {SHARE_SUM_TOLERANCE:e})"
        )));
    }
    Ok(())
}

/// A share is a number in [0, 1].
fn check_share(v: f64, what: &str) -> Result<(), Error> {
    if (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(invalid(format!("{what}: is {v}, not a share in [0, 1]")))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{Bins, FeatureReference, Reference, MAX_BIN_EDGES};
    use crate::model::{spec::*, testing::*, ModelSpec};

    fn bins(edges: &[f64], shares: &[f64]) -> Bins {
        Bins {
            edges: edges.to_vec(),
            shares: shares.to_vec(),
        }
    }

    fn feature(edges: &[f64], shares: &[f64]) -> FeatureReference {
        FeatureReference {
            bins: bins(edges, shares),
            missing: 0.01,
            min: 0.1,
            max: 9.7,
        }
    }

    /// A linear model on 3 features with a valid reference.
    fn with_reference() -> ModelSpec {
        let mut s = spec(
            3,
            ParamsSpec::Linear {
                coefficients: vec![1.0, 2.0, 3.0],
                intercept: 0.5,
            },
            OutputSpec::Regression,
        );
        s.reference = Some(Reference {
            rows: 5000,
            features: vec![
                feature(&[1.2, 2.5, 3.9], &[0.25, 0.25, 0.25, 0.25]),
                feature(&[], &[1.0]),
                feature(&[-0.5, 0.5], &[0.0, 0.7, 0.3]),
            ],
            prediction: Some(bins(&[0.2, 0.5], &[0.3, 0.4, 0.3])),
        });
        s
    }

    fn reference(s: &mut ModelSpec) -> &mut Reference {
        s.reference.as_mut().unwrap()
    }

    #[test]
    fn a_valid_reference_builds_and_is_kept() {
        let s = with_reference();
        let m = s.build().unwrap();
        assert_eq!(m.reference(), s.reference.as_ref());
        // Clones share the statistics.
        let c = m.clone();
        assert!(std::ptr::eq(c.reference().unwrap(), m.reference().unwrap()));
        let mut without = s.clone();
        without.reference = None;
        assert_eq!(without.build().unwrap().reference(), None);
        assert!(m.heap_bytes() > without.build().unwrap().heap_bytes());
    }

    #[test]
    fn the_json_is_the_documented_one() {
        let text = r#"{
          "format_version": 1,
          "features": ["a", "b"],
          "model": {"kind": "linear", "coefficients": [1.0, 2.0], "intercept": 0.0},
          "output": {"type": "regression"},
          "reference": {
            "rows": 5000,
            "features": [
              {"edges": [1.2, 2.5, 3.9], "shares": [0.25, 0.25, 0.25, 0.25], "missing": 0.01, "min": 0.1, "max": 9.7},
              {"edges": [], "shares": [1], "missing": 0, "min": 3, "max": 3}
            ],
            "prediction": {"edges": [0.2, 0.5], "shares": [0.3, 0.4, 0.3]}
          }
        }"#;
        let s = ModelSpec::from_json(text.as_bytes()).unwrap();
        let r = s.reference.as_ref().unwrap();
        assert_eq!(r.rows, 5000);
        assert_eq!(r.features[0], feature(&[1.2, 2.5, 3.9], &[0.25; 4]));
        assert_eq!(r.features[1].bins, bins(&[], &[1.0]));
        assert_eq!((r.features[1].min, r.features[1].max), (3.0, 3.0));
        assert_eq!(r.prediction, Some(bins(&[0.2, 0.5], &[0.3, 0.4, 0.3])));
        s.build().unwrap();
        // Written back with edges and shares inline in each feature's object.
        let back: serde_json::Value = serde_json::from_str(&s.to_json()).unwrap();
        assert_eq!(
            back["reference"]["features"][0],
            serde_json::json!({"edges": [1.2, 2.5, 3.9], "shares": [0.25, 0.25, 0.25, 0.25],
                               "missing": 0.01, "min": 0.1, "max": 9.7})
        );
        assert_eq!(ModelSpec::from_json(s.to_json().as_bytes()).unwrap(), s);
    }

    #[test]
    fn unknown_and_missing_reference_fields_are_json_errors() {
        let s = with_reference().to_json();
        for (from, to) in [
            (r#""missing":0.01"#, r#""missing":0.01,"mean":3"#),
            (r#""rows":5000"#, r#""rows":5000,"seed":1"#),
            (r#""edges":[0.2,0.5]"#, r#""edges":[0.2,0.5],"kind":"x""#),
            (r#","missing":0.01"#, ""),
            (r#""rows":5000,"#, ""),
            (r#""rows":5000"#, r#""rows":-1"#),
        ] {
            assert!(s.contains(from), "{from}");
            let text = s.replacen(from, to, 1);
            assert!(
                matches!(
                    ModelSpec::from_json(text.as_bytes()),
                    Err(crate::model::Error::Json(_))
                ),
                "{text}"
            );
        }
    }

    #[test]
    fn refuses_a_reference_without_rows() {
        let mut s = with_reference();
        reference(&mut s).rows = 0;
        assert_eq!(
            invalid_msg(&s),
            "reference.rows: is 0; reference statistics come from at least one row"
        );
    }

    #[test]
    fn refuses_a_reference_without_one_entry_per_feature() {
        let mut s = with_reference();
        reference(&mut s).features.pop();
        assert_eq!(
            invalid_msg(&s),
            "reference.features: has 2 entries but the model has 3 features; give one per \
             feature, in the order of features"
        );
        reference(&mut s)
            .features
            .extend([feature(&[], &[1.0]), feature(&[], &[1.0])]);
        assert!(invalid_msg(&s).starts_with("reference.features: has 4 entries"));
    }

    #[test]
    fn refuses_bad_edges() {
        let mut s = with_reference();
        reference(&mut s).features[0].bins.edges = vec![1.2, 2.5, 2.5];
        assert_eq!(
            invalid_msg(&s),
            "reference.features[0].edges: not strictly increasing (edges[2] = 2.5 is not above \
             edges[1] = 2.5)"
        );
        reference(&mut s).features[0].bins.edges = vec![3.0, 2.5, 4.0];
        assert!(invalid_msg(&s).starts_with("reference.features[0].edges: not strictly increasing"));
        reference(&mut s).features[0].bins.edges = vec![1.0, f64::NAN, 4.0];
        assert_eq!(
            invalid_msg(&s),
            "reference.features[0].edges[1]: is NaN, not a finite number"
        );
        reference(&mut s).features[0].bins.edges = vec![1.0, 2.0, f64::INFINITY];
        assert_eq!(
            invalid_msg(&s),
            "reference.features[0].edges[2]: is inf, not a finite number"
        );
        reference(&mut s).features[0].bins.edges = vec![1.2, 2.5, 3.9];
        let edges: Vec<f64> = (0..=MAX_BIN_EDGES).map(|i| i as f64).collect();
        let shares = vec![1.0 / (edges.len() + 1) as f64; edges.len() + 1];
        reference(&mut s).features[2].bins = bins(&edges, &shares);
        assert_eq!(
            invalid_msg(&s),
            "reference.features[2].edges: has 101 edges, more than the limit of 100"
        );
        // The limit itself is fine.
        reference(&mut s).features[2].bins = bins(&edges[1..], &shares[1..]);
        let sum: f64 = shares[1..].iter().sum();
        reference(&mut s).features[2].bins.shares[0] += 1.0 - sum;
        s.build().unwrap();
    }

    #[test]
    fn refuses_shares_that_are_not_a_distribution() {
        let mut s = with_reference();
        reference(&mut s).features[1].bins.shares = vec![0.5, 0.5];
        assert_eq!(
            invalid_msg(&s),
            "reference.features[1].shares: has 2 entries but 0 edges make 1 bins; give one share \
             per bin"
        );
        reference(&mut s).features[1].bins.shares = vec![];
        assert!(invalid_msg(&s).starts_with("reference.features[1].shares: has 0 entries"));
        reference(&mut s).features[1].bins.shares = vec![1.0];
        reference(&mut s).features[0].bins.shares = vec![0.5, 0.5, -0.25, 0.25];
        assert_eq!(
            invalid_msg(&s),
            "reference.features[0].shares[2]: is -0.25, not a share in [0, 1]"
        );
        reference(&mut s).features[0].bins.shares = vec![1.5, 0.0, 0.0, 0.0];
        assert_eq!(
            invalid_msg(&s),
            "reference.features[0].shares[0]: is 1.5, not a share in [0, 1]"
        );
        reference(&mut s).features[0].bins.shares = vec![0.25, f64::NAN, 0.25, 0.25];
        assert_eq!(
            invalid_msg(&s),
            "reference.features[0].shares[1]: is NaN, not a share in [0, 1]"
        );
        reference(&mut s).features[0].bins.shares = vec![0.25, 0.25, 0.25, 0.2];
        assert_eq!(
            invalid_msg(&s),
            "reference.features[0].shares: sum to 0.95, not 1 (within 1e-6)"
        );
        // Rounding in the exporter's divisions is within the tolerance.
        reference(&mut s).features[0].bins.shares = vec![0.25, 0.25, 0.25, 0.25 + 5e-7];
        s.build().unwrap();
    }

    #[test]
    fn refuses_bad_missing_shares_and_ranges() {
        let mut s = with_reference();
        reference(&mut s).features[2].missing = 1.25;
        assert_eq!(
            invalid_msg(&s),
            "reference.features[2].missing: is 1.25, not a share in [0, 1]"
        );
        reference(&mut s).features[2].missing = -0.0;
        s.build().unwrap();
        reference(&mut s).features[2].min = 10.0;
        assert_eq!(
            invalid_msg(&s),
            "reference.features[2]: min 10 is above max 9.7"
        );
        reference(&mut s).features[2].min = f64::NEG_INFINITY;
        assert_eq!(
            invalid_msg(&s),
            "reference.features[2].min: is -inf, not a finite number"
        );
        reference(&mut s).features[2].min = 0.0;
        reference(&mut s).features[2].max = f64::NAN;
        assert_eq!(
            invalid_msg(&s),
            "reference.features[2].max: is NaN, not a finite number"
        );
        // A constant feature: min == max.
        reference(&mut s).features[2].max = 0.0;
        s.build().unwrap();
    }

    #[test]
    fn refuses_bad_prediction_bins() {
        let mut s = with_reference();
        reference(&mut s).prediction = Some(bins(&[0.5, 0.2], &[0.3, 0.4, 0.3]));
        assert_eq!(
            invalid_msg(&s),
            "reference.prediction.edges: not strictly increasing (edges[1] = 0.2 is not above \
             edges[0] = 0.5)"
        );
        reference(&mut s).prediction = Some(bins(&[0.2, 0.5], &[0.3, 0.4]));
        assert!(invalid_msg(&s).starts_with("reference.prediction.shares: has 2 entries"));
        reference(&mut s).prediction = Some(bins(&[0.2, 0.5], &[0.3, 0.4, 0.4]));
        assert!(invalid_msg(&s).starts_with("reference.prediction.shares: sum to 1.1"));
        reference(&mut s).prediction = None;
        s.build().unwrap();
    }

    #[test]
    fn reference_numbers_count_towards_the_size_limit() {
        let s = with_reference();
        // 3 features: (3 + 4 + 3), (0 + 1 + 3), (2 + 3 + 3); rows; prediction 2 + 3.
        assert_eq!(s.reference.as_ref().unwrap().numbers(), 10 + 4 + 8 + 1 + 5);
    }

    #[test]
    fn bin_counts_the_edges_at_or_below_a_value() {
        let b = bins(&[1.2, 2.5, 3.9], &[0.25; 4]);
        assert_eq!(b.len(), 4);
        assert!(!b.is_empty());
        for (v, bin) in [
            (f64::NEG_INFINITY, 0),
            (-1e300, 0),
            (1.1999, 0),
            (1.2, 1),
            (2.0, 1),
            (2.5, 2),
            (3.8999, 2),
            (3.9, 3),
            (1e300, 3),
            (f64::INFINITY, 3),
        ] {
            assert_eq!(b.bin(v), bin, "{v}");
        }
        // No edges: one bin.
        let one = bins(&[], &[1.0]);
        assert_eq!((one.bin(-5.0), one.bin(5.0), one.len()), (0, 0, 1));
        // Category codes, each its own bin, unknown (-1) first.
        let codes = bins(&[-0.5, 0.5, 1.5], &[0.0, 0.5, 0.25, 0.25]);
        assert_eq!([-1.0, 0.0, 1.0, 2.0].map(|c| codes.bin(c)), [0, 1, 2, 3]);
        // NaN is not binned by callers, but does not panic.
        assert!(b.bin(f64::NAN) < b.len());
    }

    proptest! {
        #[test]
        fn bin_is_the_count_of_edges_at_or_below(
            mut edges in prop::collection::vec(-1e3f64..1e3, 0..20),
            v in prop_oneof![-2e3f64..2e3, prop::sample::select(vec![-1e3, 0.0, 1e3])],
        ) {
            edges.sort_by(f64::total_cmp);
            edges.dedup();
            let b = bins(&edges, &vec![0.0; edges.len() + 1]);
            let bin = b.bin(v);
            prop_assert_eq!(bin, edges.iter().filter(|&&e| e <= v).count());
            prop_assert!(bin < b.len());
            // Monotone, and every edge opens its own bin.
            prop_assert!(b.bin(v + 1.0) >= bin);
            for (i, &e) in edges.iter().enumerate() {
                prop_assert_eq!(b.bin(e), i + 1);
            }
        }
    }
}
