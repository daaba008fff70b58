//! Checks an untrusted [`ModelSpec`] and builds a [`Model`].
//!
//! Every check names the first problem it finds precisely enough to fix the spec: which field,
//! which index (indices are 0-based, as in the JSON arrays), what was found and what was
//! expected. The per-kind checks live next to each kind's scoring code; this file holds the
//! checks every kind shares and assembles the [`Model`].

use std::{collections::HashSet, sync::Arc};

use super::{
    preprocess::Preprocess,
    reference,
    spec::ColumnSpec,
    spec::{OutputSpec, ParamsSpec, ScalerSpec},
    Boosted, Error, Forest, Kind, Linear, Logistic, Mlp, Model, ModelSpec, Output, Scaler,
    MAX_PARAMETERS,
};

pub(super) fn build(spec: &ModelSpec) -> Result<Model, Error> {
    check_size(spec, MAX_PARAMETERS)?;
    check_features(&spec.features)?;
    let n_raw = spec.features.len();
    // With preprocessing the model reads the columns it writes, not the features.
    let n_features = match &spec.preprocess {
        None => n_raw,
        Some(p) => {
            if spec.scaler.is_some() {
                return Err(invalid(
                    "scaler and preprocess are both given; put the scaling in preprocess \
                     columns",
                ));
            }
            if p.columns.is_empty() {
                return Err(invalid("preprocess.columns is empty"));
            }
            p.columns.iter().fold(0usize, |n, c| {
                n.saturating_add(match c {
                    ColumnSpec::OneHot {
                        categories,
                        missing_is_category,
                        ..
                    } => categories
                        .len()
                        .saturating_add(usize::from(*missing_is_category)),
                    _ => 1,
                })
            })
        }
    };
    let scaler = spec
        .scaler
        .as_ref()
        .map(|s| check_scaler(s, n_features))
        .transpose()?;
    let output = check_output(&spec.output)?;
    let mut round_to_f32 = false;
    let mut mlp_scratch = 0;
    let mut handles_missing = false;
    let kind = (|| -> Result<Kind, Error> {
        Ok(match &spec.model {
            ParamsSpec::Linear {
                coefficients,
                intercept,
            } => Kind::Linear(Linear::build(
                coefficients,
                *intercept,
                n_features,
                &output,
            )?),
            ParamsSpec::Logistic {
                coefficients,
                intercepts,
            } => Kind::Logistic(Logistic::build(
                coefficients,
                intercepts,
                n_features,
                &output,
            )?),
            ParamsSpec::RandomForest {
                trees,
                threshold_precision,
            } => {
                let forest = Forest::build(trees, *threshold_precision, n_features, &output)?;
                round_to_f32 = forest.rounds_to_f32();
                Kind::Forest(forest)
            }
            ParamsSpec::BoostedTrees(boosted) => {
                let boosted = Boosted::build(boosted, n_features, &output)?;
                round_to_f32 = boosted.rounds_to_f32();
                handles_missing = boosted.handles_missing();
                // One running sum per output.
                mlp_scratch = boosted.outputs();
                Kind::Boosted(boosted)
            }
            ParamsSpec::Mlp {
                layers,
                hidden_activation,
                output_activation,
            } => {
                let mlp = Mlp::build(
                    layers,
                    *hidden_activation,
                    *output_activation,
                    n_features,
                    &output,
                )?;
                mlp_scratch = mlp.scratch_len();
                Kind::Mlp(mlp)
            }
        })
    })();
    let kind = match (kind, &spec.preprocess) {
        (Err(Error::Invalid(m)), Some(_)) => {
            return Err(invalid(format!(
                "{m} (the preprocess columns write {n_features} model inputs)"
            )))
        }
        (kind, _) => kind?,
    };
    let preprocess = spec
        .preprocess
        .as_ref()
        .map(|p| Preprocess::build(p, &spec.features, handles_missing))
        .transpose()?;
    // The model's own problems are named first; the statistics only describe its data.
    let reference = spec
        .reference
        .as_ref()
        .map(|r| reference::check(r, n_raw).map(|()| Arc::new(r.clone())))
        .transpose()?;
    let preprocess_scratch = if preprocess.is_some() { n_features } else { 0 };
    let input_scratch = if scaler.is_some() || round_to_f32 {
        n_features
    } else {
        0
    };
    Ok(Model {
        features: super::intern_features(&spec.features),
        scaler,
        preprocess,
        kind,
        output,
        round_to_f32,
        handles_missing,
        scratch_len: preprocess_scratch + input_scratch + mlp_scratch,
        reference,
    })
}

/// Shorthand for an [`Error::Invalid`].
pub(super) fn invalid(msg: impl Into<String>) -> Error {
    Error::Invalid(msg.into())
}

/// How a non-finite number reads in a message.
fn describe(v: f64) -> &'static str {
    if v.is_nan() {
        "NaN"
    } else if v > 0.0 {
        "infinite"
    } else {
        "negative infinite"
    }
}

/// Checks one number: `"{what} is NaN"` otherwise.
pub(super) fn check_finite(v: f64, what: impl FnOnce() -> String) -> Result<(), Error> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(invalid(format!("{} is {}", what(), describe(v))))
    }
}

/// Checks every number of a slice: `"{name}[{i}] is NaN"` otherwise.
pub(super) fn check_all_finite(values: &[f64], name: &str) -> Result<(), Error> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(invalid(format!("{name}[{i}] is {}", describe(values[i])))),
    }
}

/// Refuses specs holding more than `limit` numbers (see [`count_numbers`]).
fn check_size(spec: &ModelSpec, limit: usize) -> Result<(), Error> {
    let n = count_numbers(spec);
    if n > limit {
        return Err(invalid(format!(
            "the spec holds {n} numbers, more than the limit of {limit}; use a smaller model"
        )));
    }
    Ok(())
}

/// Every number in the spec and every feature and class name, counted with saturation so a
/// hostile spec cannot overflow the count.
fn count_numbers(spec: &ModelSpec) -> usize {
    let mut n = spec.features.len();
    if let Some(s) = &spec.scaler {
        n = n.saturating_add(s.mean.len()).saturating_add(s.scale.len());
    }
    if let OutputSpec::Classification { classes } = &spec.output {
        n = n.saturating_add(classes.len());
    }
    for c in spec.preprocess.iter().flat_map(|p| &p.columns) {
        n = n.saturating_add(match c {
            ColumnSpec::Numeric { .. } => 4,
            ColumnSpec::OneHot { categories, .. } | ColumnSpec::Ordinal { categories, .. } => {
                categories.len().saturating_add(3)
            }
        });
    }
    if let Some(r) = &spec.reference {
        n = n.saturating_add(r.numbers());
    }
    n = n.saturating_add(match &spec.model {
        ParamsSpec::Linear { coefficients, .. } => coefficients.len().saturating_add(1),
        ParamsSpec::Logistic {
            coefficients,
            intercepts,
        } => coefficients
            .iter()
            .fold(intercepts.len(), |n, row| n.saturating_add(row.len())),
        ParamsSpec::RandomForest { trees, .. } => trees.iter().fold(0usize, |n, t| {
            let links = t
                .feature
                .len()
                .saturating_add(t.threshold.len())
                .saturating_add(t.left.len())
                .saturating_add(t.right.len());
            t.value
                .iter()
                .fold(n.saturating_add(links), |n, v| n.saturating_add(v.len()))
        }),
        ParamsSpec::BoostedTrees(b) => {
            let known = b
                .known_categories
                .iter()
                .flatten()
                .fold(0usize, |n, k| n.saturating_add(k.len()));
            b.trees
                .iter()
                .fold(known.saturating_add(b.base_score.len()), |n, t| {
                    let arrays = t
                        .feature
                        .len()
                        .saturating_add(t.threshold.len())
                        .saturating_add(t.left.len())
                        .saturating_add(t.right.len())
                        .saturating_add(t.value.len())
                        .saturating_add(t.default_left.as_ref().map_or(0, Vec::len));
                    t.categories
                        .iter()
                        .flatten()
                        .fold(n.saturating_add(arrays), |n, c| n.saturating_add(c.len()))
                })
        }
        ParamsSpec::Mlp { layers, .. } => layers.iter().fold(0usize, |n, l| {
            l.weights
                .iter()
                .fold(n.saturating_add(l.biases.len()), |n, row| {
                    n.saturating_add(row.len())
                })
        }),
    });
    n
}

fn check_features(features: &[String]) -> Result<(), Error> {
    if features.is_empty() {
        return Err(invalid(
            "features is empty; a model needs at least one feature",
        ));
    }
    let mut seen = HashSet::with_capacity(features.len());
    for (i, name) in features.iter().enumerate() {
        if name.is_empty() {
            return Err(invalid(format!("feature {i} has an empty name")));
        }
        if !seen.insert(name.as_str()) {
            return Err(invalid(format!("feature '{name}' appears twice")));
        }
    }
    Ok(())
}

fn check_scaler(s: &ScalerSpec, n_features: usize) -> Result<Scaler, Error> {
    for (name, v) in [("mean", &s.mean), ("scale", &s.scale)] {
        if v.len() != n_features {
            return Err(invalid(format!(
                "scaler.{name} has {} entries but the model has {n_features} features",
                v.len()
            )));
        }
        check_all_finite(v, &format!("scaler.{name}"))?;
    }
    if let Some(i) = s.scale.iter().position(|&v| v == 0.0) {
        return Err(invalid(format!("scaler.scale[{i}] is 0")));
    }
    Ok(Scaler {
        mean: s.mean.clone(),
        scale: s.scale.clone(),
    })
}

fn check_output(o: &OutputSpec) -> Result<Output, Error> {
    match o {
        OutputSpec::Regression => Ok(Output::Regression),
        OutputSpec::Classification { classes } => {
            if classes.len() < 2 {
                return Err(invalid(format!(
                    "output has {} classes; a classifier needs at least 2",
                    classes.len()
                )));
            }
            let mut seen = HashSet::with_capacity(classes.len());
            for (i, c) in classes.iter().enumerate() {
                if c.is_empty() {
                    return Err(invalid(format!("class {i} has an empty label")));
                }
                if !seen.insert(c.as_str()) {
                    return Err(invalid(format!("class '{c}' appears twice")));
                }
            }
            Ok(Output::Classification(classes.clone()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{check_size, count_numbers};
    use crate::model::{spec::*, testing::*, Error, Output};

    fn linear(n: usize) -> crate::model::ModelSpec {
        spec(
            n,
            ParamsSpec::Linear {
                coefficients: vec![1.0; n],
                intercept: 0.0,
            },
            OutputSpec::Regression,
        )
    }

    #[test]
    fn rejects_missing_empty_and_duplicate_features() {
        let mut s = linear(0);
        assert_eq!(
            invalid_msg(&s),
            "features is empty; a model needs at least one feature"
        );
        s = linear(3);
        s.features[1] = String::new();
        assert_eq!(invalid_msg(&s), "feature 1 has an empty name");
        s.features = vec!["distance_km".into(), "items".into(), "distance_km".into()];
        assert_eq!(invalid_msg(&s), "feature 'distance_km' appears twice");
    }

    #[test]
    fn rejects_bad_scalers() {
        let mut s = linear(3);
        s.scaler = Some(ScalerSpec {
            mean: vec![0.0; 2],
            scale: vec![1.0; 3],
        });
        assert_eq!(
            invalid_msg(&s),
            "scaler.mean has 2 entries but the model has 3 features"
        );
        s.scaler = Some(ScalerSpec {
            mean: vec![0.0; 3],
            scale: vec![1.0; 4],
        });
        assert_eq!(
            invalid_msg(&s),
            "scaler.scale has 4 entries but the model has 3 features"
        );
        s.scaler = Some(ScalerSpec {
            mean: vec![0.0; 3],
            scale: vec![1.0, 2.0, 0.0],
        });
        assert_eq!(invalid_msg(&s), "scaler.scale[2] is 0");
        s.scaler = Some(ScalerSpec {
            mean: vec![0.0, f64::NAN, 0.0],
            scale: vec![1.0; 3],
        });
        assert_eq!(invalid_msg(&s), "scaler.mean[1] is NaN");
        s.scaler = Some(ScalerSpec {
            mean: vec![0.0; 3],
            scale: vec![f64::INFINITY, 1.0, 1.0],
        });
        assert_eq!(invalid_msg(&s), "scaler.scale[0] is infinite");
    }

    fn classifier(labels: &[&str]) -> crate::model::ModelSpec {
        spec(
            1,
            forest(vec![tree(&[leaf(&vec![
                1.0 / labels.len() as f64;
                labels.len()
            ])])]),
            classes(labels),
        )
    }

    #[test]
    fn rejects_bad_class_labels() {
        assert_eq!(
            invalid_msg(&classifier(&[])),
            "output has 0 classes; a classifier needs at least 2"
        );
        assert_eq!(
            invalid_msg(&classifier(&["only"])),
            "output has 1 classes; a classifier needs at least 2"
        );
        assert_eq!(
            invalid_msg(&classifier(&["a", ""])),
            "class 1 has an empty label"
        );
        assert_eq!(
            invalid_msg(&classifier(&["a", "b", "a"])),
            "class 'a' appears twice"
        );
        let m = classifier(&["a", "b", "c"]).build().unwrap();
        assert_eq!(
            m.output(),
            &Output::Classification(vec!["a".into(), "b".into(), "c".into()])
        );
    }

    #[test]
    fn counts_every_number_of_a_spec() {
        let mut s = linear(3);
        // 3 names, 3 coefficients, 1 intercept
        assert_eq!(count_numbers(&s), 7);
        s.scaler = Some(ScalerSpec {
            mean: vec![0.0; 3],
            scale: vec![1.0; 3],
        });
        assert_eq!(count_numbers(&s), 13);
        // 1 name + 2 labels + 3 nodes * 4 links + values 0 + 2 + 2
        assert_eq!(count_numbers(&classifier_tree()), 1 + 2 + 12 + 4);
        let s = spec(
            2,
            mlp(
                vec![
                    layer(&[&[1.0, 1.0, 1.0], &[1.0, 1.0, 1.0]], &[0.0; 3]),
                    layer(&[&[1.0], &[1.0], &[1.0]], &[0.0]),
                ],
                Activation::Relu,
                Activation::Identity,
            ),
            OutputSpec::Regression,
        );
        assert_eq!(count_numbers(&s), 2 + 9 + 4);
        // 3 names + 2 labels + 5 weights; columns: 2 categories + 3, 4, 3 categories + 3.
        assert_eq!(count_numbers(&preprocessed()), 3 + 2 + 5 + 5 + 4 + 6);
    }

    #[test]
    fn counts_every_number_of_a_boosted_spec() {
        let mut s = one_of_each_kind()
            .into_iter()
            .find(|s| matches!(&s.model, ParamsSpec::BoostedTrees(b) if b.link == "softmax"))
            .unwrap();
        // 3 names + 3 labels + 3 base scores + 4 trees of 3 nodes * 5 arrays + 1 bitset word.
        assert_eq!(count_numbers(&s), 3 + 3 + 3 + 4 * 15 + 1);
        let ParamsSpec::BoostedTrees(b) = &mut s.model else {
            unreachable!()
        };
        b.known_categories = Some(vec![vec![1, 2], vec![], vec![3]]);
        b.trees[0].default_left = Some(vec![false; 3]);
        assert_eq!(count_numbers(&s), 3 + 3 + 3 + 4 * 15 + 1 + 3 + 3);
    }

    fn classifier_tree() -> crate::model::ModelSpec {
        spec(
            1,
            forest(vec![tree(&[
                split(0, 0.0, 1, 2),
                leaf(&[1.0, 0.0]),
                leaf(&[0.0, 1.0]),
            ])]),
            classes(&["a", "b"]),
        )
    }

    #[test]
    fn rejects_specs_beyond_the_size_limit() {
        let s = linear(3);
        assert!(check_size(&s, 7).is_ok());
        match check_size(&s, 6) {
            Err(Error::Invalid(m)) => assert_eq!(
                m,
                "the spec holds 7 numbers, more than the limit of 6; use a smaller model"
            ),
            other => panic!("expected an invalid-model error, got {other:?}"),
        }
    }
}
