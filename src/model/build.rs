//! Checks an untrusted [`ModelSpec`] and builds a [`Model`].
//!
//! Every check names the first problem it finds precisely enough to fix the spec: which field,
//! which index (indices are 0-based, as in the JSON arrays), what was found and what was
//! expected. The per-kind checks live next to each kind's scoring code; this file holds the
//! checks every kind shares and assembles the [`Model`].

use std::collections::HashSet;

use super::{
    spec::{OutputSpec, ParamsSpec, ScalerSpec},
    Error, Forest, Kind, Linear, Logistic, Mlp, Model, ModelSpec, Output, Scaler, MAX_PARAMETERS,
};

pub(super) fn build(spec: &ModelSpec) -> Result<Model, Error> {
    check_size(spec)?;
    check_features(&spec.features)?;
    let n_features = spec.features.len();
    let scaler = spec
        .scaler
        .as_ref()
        .map(|s| check_scaler(s, n_features))
        .transpose()?;
    let output = check_output(&spec.output)?;
    let mut round_to_f32 = false;
    let mut mlp_scratch = 0;
    let kind = match &spec.model {
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
    };
    let input_scratch = if scaler.is_some() || round_to_f32 {
        n_features
    } else {
        0
    };
    Ok(Model {
        features: spec.features.clone(),
        scaler,
        kind,
        output,
        round_to_f32,
        scratch_len: input_scratch + mlp_scratch,
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

/// Refuses specs beyond [`MAX_PARAMETERS`] before any other work, counting with saturation so
/// a hostile spec cannot overflow the count.
fn check_size(spec: &ModelSpec) -> Result<(), Error> {
    let mut n = spec.features.len();
    if let Some(s) = &spec.scaler {
        n = n.saturating_add(s.mean.len()).saturating_add(s.scale.len());
    }
    if let OutputSpec::Classification { classes } = &spec.output {
        n = n.saturating_add(classes.len());
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
        ParamsSpec::Mlp { layers, .. } => layers.iter().fold(0usize, |n, l| {
            l.weights
                .iter()
                .fold(n.saturating_add(l.biases.len()), |n, row| {
                    n.saturating_add(row.len())
                })
        }),
    });
    if n > MAX_PARAMETERS {
        return Err(invalid(format!(
            "the spec holds {n} numbers, more than the limit of {MAX_PARAMETERS}; \
             use a smaller model"
        )));
    }
    Ok(())
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
