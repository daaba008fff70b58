//! The preprocessing stage: checks a [`PreprocessSpec`] and turns a record's features (numbers,
//! and category codes for string features) into the model's inputs, as a scikit-learn
//! `ColumnTransformer` of `OneHotEncoder`, `OrdinalEncoder`, `SimpleImputer`,
//! `StandardScaler` and passthrough columns does.
//!
//! A string feature reaches [`Preprocess::transform`] as its category code: the index of the
//! string in the encoder's `categories` ([`Categories::code`] resolves it without allocating),
//! NaN when missing, any other number (conventionally -1) when unknown.

use super::{
    build::{check_finite, invalid},
    spec::{ColumnSpec, PreprocessSpec},
    Error,
};

/// The most categories one encoder may list.
const MAX_CATEGORIES: usize = 1 << 20;

/// A checked preprocessing stage.
#[derive(Debug, Clone)]
pub(super) struct Preprocess {
    columns: Box<[Column]>,
    /// The model inputs the columns write.
    width: usize,
    /// Per feature: its categories when an encoder reads it as a string.
    categories: Box<[Option<Categories>]>,
    /// Per feature: a missing value is scored (imputed, encoded, or left to the model).
    accepts_missing: Box<[bool]>,
}

#[derive(Debug, Clone)]
enum Column {
    Numeric {
        feature: usize,
        impute: Option<f64>,
        mean: f64,
        scale: f64,
    },
    OneHot {
        feature: usize,
        n: usize,
        refuse_unknown: bool,
        /// A missing value sets one more input, after the categories'.
        missing_is_category: bool,
    },
    Ordinal {
        feature: usize,
        n: usize,
        unknown_value: Option<f64>,
        /// The code of a missing value, when it is a category; otherwise it is unknown.
        missing_value: Option<f64>,
    },
}

/// The known categories of a string feature, resolved by binary search over the sorted
/// strings.
#[derive(Debug, Clone)]
pub struct Categories {
    /// The categories sorted by byte order.
    sorted: Box<[Box<str>]>,
    /// The code (index in the spec's list) of each sorted category.
    codes: Box<[u32]>,
    /// Whether an unknown value is refused (`handle_unknown = "error"`).
    refuse_unknown: bool,
}

impl Categories {
    fn new(list: &[String], refuse_unknown: bool, what: &str) -> Result<Self, Error> {
        if list.is_empty() {
            return Err(invalid(format!("{what}.categories is empty")));
        }
        if list.len() > MAX_CATEGORIES {
            return Err(invalid(format!(
                "{what}.categories has {} entries, more than the limit of {MAX_CATEGORIES}",
                list.len()
            )));
        }
        let mut order: Vec<u32> = (0..list.len() as u32).collect();
        order.sort_by(|&a, &b| list[a as usize].cmp(&list[b as usize]));
        if let Some(w) = order
            .windows(2)
            .find(|w| list[w[0] as usize] == list[w[1] as usize])
        {
            return Err(invalid(format!(
                "{what}.categories lists '{}' twice",
                list[w[0] as usize]
            )));
        }
        Ok(Self {
            sorted: order
                .iter()
                .map(|&i| list[i as usize].as_str().into())
                .collect(),
            codes: order.into(),
            refuse_unknown,
        })
    }

    /// The code of `value`: its index in the encoder's categories, if known.
    pub fn code(&self, value: &str) -> Option<usize> {
        self.sorted
            .binary_search_by(|c| c.as_ref().cmp(value))
            .ok()
            .map(|i| self.codes[i] as usize)
    }

    /// Whether an unknown value is refused rather than encoded.
    pub fn refuses_unknown(&self) -> bool {
        self.refuse_unknown
    }

    fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.sorted)
            + self.sorted.iter().map(|s| s.len()).sum::<usize>()
            + std::mem::size_of_val(&*self.codes)
    }
}

impl Preprocess {
    /// Checks `spec` against the feature names; `model_handles_missing` says whether the model
    /// after it scores NaN inputs.
    pub(super) fn build(
        spec: &PreprocessSpec,
        features: &[String],
        model_handles_missing: bool,
    ) -> Result<Self, Error> {
        let n_features = features.len();
        if spec.columns.is_empty() {
            return Err(invalid("preprocess.columns is empty"));
        }
        let mut categories: Vec<Option<Categories>> = vec![None; n_features];
        let mut used = vec![false; n_features];
        let mut numeric = vec![false; n_features];
        let mut accepts_missing = vec![false; n_features];
        let mut columns = Vec::with_capacity(spec.columns.len());
        let mut width = 0usize;
        for (i, c) in spec.columns.iter().enumerate() {
            let what = format!("preprocess.columns[{i}]");
            let feature = match c {
                ColumnSpec::Numeric { feature, .. }
                | ColumnSpec::OneHot { feature, .. }
                | ColumnSpec::Ordinal { feature, .. } => *feature as usize,
            };
            if feature >= n_features {
                return Err(invalid(format!(
                    "{what}.feature is {feature} but the model has {n_features} features"
                )));
            }
            let name = &features[feature];
            let encoded = !matches!(c, ColumnSpec::Numeric { .. });
            if used[feature] && (encoded || categories[feature].is_some()) {
                return Err(invalid(format!(
                    "{what}: feature '{name}' is already read by another column; an encoded \
                     feature is read by one column only"
                )));
            }
            used[feature] = true;
            match c {
                ColumnSpec::Numeric {
                    impute,
                    mean,
                    scale,
                    ..
                } => {
                    numeric[feature] = true;
                    if let Some(v) = impute {
                        check_finite(*v, || format!("{what}.impute"))?;
                    }
                    let mean = mean.unwrap_or(0.0);
                    let scale = scale.unwrap_or(1.0);
                    check_finite(mean, || format!("{what}.mean"))?;
                    check_finite(scale, || format!("{what}.scale"))?;
                    if scale == 0.0 {
                        return Err(invalid(format!("{what}.scale is 0")));
                    }
                    accepts_missing[feature] |= impute.is_some() || model_handles_missing;
                    columns.push(Column::Numeric {
                        feature,
                        impute: *impute,
                        mean,
                        scale,
                    });
                    width += 1;
                }
                ColumnSpec::OneHot {
                    categories: list,
                    handle_unknown,
                    missing_is_category,
                    ..
                } => {
                    let refuse_unknown = match handle_unknown.as_str() {
                        "error" => true,
                        "ignore" => false,
                        other => {
                            return Err(invalid(format!(
                                "{what}.handle_unknown '{other}' is not supported; use 'error' \
                                 or 'ignore'"
                            )))
                        }
                    };
                    categories[feature] = Some(Categories::new(list, refuse_unknown, &what)?);
                    // Unless it is a category, a missing value is an unknown one: all zeros
                    // with `ignore`.
                    accepts_missing[feature] = *missing_is_category || !refuse_unknown;
                    columns.push(Column::OneHot {
                        feature,
                        n: list.len(),
                        refuse_unknown,
                        missing_is_category: *missing_is_category,
                    });
                    width = width
                        .saturating_add(list.len())
                        .saturating_add(usize::from(*missing_is_category));
                }
                ColumnSpec::Ordinal {
                    categories: list,
                    handle_unknown,
                    unknown_value,
                    missing_is_category,
                    encoded_missing_value,
                    ..
                } => {
                    let refuse_unknown = match handle_unknown.as_str() {
                        "error" => {
                            if unknown_value.is_some() {
                                return Err(invalid(format!(
                                    "{what}.unknown_value is set but handle_unknown is 'error'"
                                )));
                            }
                            true
                        }
                        "use_encoded_value" => false,
                        other => {
                            return Err(invalid(format!(
                                "{what}.handle_unknown '{other}' is not supported; use 'error' \
                                 or 'use_encoded_value'"
                            )))
                        }
                    };
                    for (field, v) in [
                        ("unknown_value", unknown_value),
                        ("encoded_missing_value", encoded_missing_value),
                    ] {
                        if let Some(v) = v {
                            check_finite(*v, || format!("{what}.{field}"))?;
                        }
                    }
                    if encoded_missing_value.is_some() && !missing_is_category {
                        return Err(invalid(format!(
                            "{what}.encoded_missing_value is set but missing_is_category is \
                             false"
                        )));
                    }
                    let produces_nan = (*missing_is_category && encoded_missing_value.is_none())
                        || (!refuse_unknown && unknown_value.is_none());
                    if produces_nan && !model_handles_missing {
                        return Err(invalid(format!(
                            "{what} encodes missing or unknown values as missing (NaN) but the \
                             model does not score missing values; set encoded_missing_value \
                             and unknown_value"
                        )));
                    }
                    categories[feature] = Some(Categories::new(list, refuse_unknown, &what)?);
                    accepts_missing[feature] = *missing_is_category || !refuse_unknown;
                    columns.push(Column::Ordinal {
                        feature,
                        n: list.len(),
                        unknown_value: *unknown_value,
                        missing_value: missing_is_category
                            .then(|| encoded_missing_value.unwrap_or(f64::NAN)),
                    });
                    width += 1;
                }
            }
            if numeric[feature] && categories[feature].is_some() {
                return Err(invalid(format!(
                    "{what}: feature '{name}' is both encoded and numeric"
                )));
            }
        }
        if let Some(f) = used.iter().position(|u| !u) {
            return Err(invalid(format!(
                "feature '{}' is read by no preprocess column; remove it from features",
                features[f]
            )));
        }
        Ok(Self {
            columns: columns.into(),
            width,
            categories: categories.into(),
            accepts_missing: accepts_missing.into(),
        })
    }

    /// The number of model inputs the stage writes.
    pub(super) fn width(&self) -> usize {
        self.width
    }

    /// The categories of feature `i`, when an encoder reads it as a string.
    pub(super) fn categories(&self, i: usize) -> Option<&Categories> {
        self.categories.get(i).and_then(Option::as_ref)
    }

    /// Whether a missing value of feature `i` is scored.
    pub(super) fn accepts_missing(&self, i: usize) -> bool {
        self.accepts_missing.get(i).copied().unwrap_or(false)
    }

    pub(super) fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.columns)
            + std::mem::size_of_val(&*self.categories)
            + self
                .categories
                .iter()
                .flatten()
                .map(Categories::heap_bytes)
                .sum::<usize>()
            + self.accepts_missing.len()
    }

    /// Writes the model inputs of the features `x` into `out` (`width` numbers). `x` holds
    /// numbers, NaN for missing values (already checked against [`Self::accepts_missing`]) and
    /// category codes for encoded features. `names` names the features in errors.
    pub(super) fn transform(
        &self,
        x: &[f64],
        out: &mut [f64],
        names: &[String],
    ) -> Result<(), Error> {
        let mut o = 0;
        for c in self.columns.iter() {
            match *c {
                Column::Numeric {
                    feature,
                    impute,
                    mean,
                    scale,
                } => {
                    let v = match (x[feature], impute) {
                        (v, Some(s)) if v.is_nan() => s,
                        (v, _) => v,
                    };
                    out[o] = (v - mean) / scale;
                    o += 1;
                }
                Column::OneHot {
                    feature,
                    n,
                    refuse_unknown,
                    missing_is_category,
                } => {
                    let w = n + usize::from(missing_is_category);
                    let slots = &mut out[o..o + w];
                    slots.fill(0.0);
                    let v = x[feature];
                    match code(v, n) {
                        Some(k) => slots[k] = 1.0,
                        None if missing_is_category && v.is_nan() => slots[n] = 1.0,
                        None if refuse_unknown => {
                            return Err(Error::UnknownCategory(names[feature].clone()))
                        }
                        None => {}
                    }
                    o += w;
                }
                Column::Ordinal {
                    feature,
                    n,
                    unknown_value,
                    missing_value,
                } => {
                    let v = x[feature];
                    out[o] = match missing_value {
                        Some(m) if v.is_nan() => m,
                        _ => match code(v, n) {
                            Some(k) => k as f64,
                            None => match unknown_value {
                                Some(u) => u,
                                None if self.categories[feature]
                                    .as_ref()
                                    .is_some_and(Categories::refuses_unknown) =>
                                {
                                    return Err(Error::UnknownCategory(names[feature].clone()))
                                }
                                None => f64::NAN,
                            },
                        },
                    };
                    o += 1;
                }
            }
        }
        Ok(())
    }
}

/// The category a code names, if it is one of `n`.
fn code(v: f64, n: usize) -> Option<usize> {
    (v >= 0.0 && v < n as f64 && v.fract() == 0.0).then_some(v as usize)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use crate::model::{spec::*, testing::*, Error, ModelSpec, Prediction};

    fn columns(s: &mut ModelSpec) -> &mut Vec<ColumnSpec> {
        &mut s.preprocess.as_mut().unwrap().columns
    }

    fn p_yes(s: &ModelSpec, x: &[f64]) -> f64 {
        match s.build().unwrap().predict(x).unwrap() {
            Prediction::Class { probabilities, .. } => probabilities[1],
            other => panic!("expected a class, got {other:?}"),
        }
    }

    fn sigmoid(z: f64) -> f64 {
        1.0 / (1.0 + (-z).exp())
    }

    #[test]
    fn columns_write_the_model_inputs_in_order() {
        let s = preprocessed();
        let m = s.build().unwrap();
        assert_eq!(m.features(), ["f0", "f1", "f2"]);
        // b, f1 = 5 -> (5 - 1) / 2 = 2, z -> 2: inputs [0, 1, 2, 2].
        let z = 0.125 - 1.0 + 0.5 * 2.0 + 0.25 * 2.0;
        assert_eq!(p_yes(&s, &[1.0, 5.0, 2.0]), sigmoid(z));
        // Unknown f0 (all zeros), missing f1 (imputed 2 -> 0.5), missing f2 (-2).
        let z = 0.125 + 0.5 * 0.5 + 0.25 * -2.0;
        assert_eq!(p_yes(&s, &[-1.0, f64::NAN, f64::NAN]), sigmoid(z));
        // Unknown f2 -> -1.
        let z = 0.125 + 1.0 + 0.5 * 0.5 - 0.25;
        assert_eq!(p_yes(&s, &[0.0, 2.0, -1.0]), sigmoid(z));
    }

    #[test]
    fn every_feature_accepts_missing_values_it_encodes_or_imputes() {
        let mut s = preprocessed();
        let m = s.build().unwrap();
        assert!((0..3).all(|i| m.accepts_missing(i)));
        assert_eq!(m.categories(0).unwrap().code("b"), Some(1));
        assert_eq!(m.categories(0).unwrap().code("c"), None);
        assert!(m.categories(1).is_none());
        // Without an imputer a missing number is refused: the logistic model needs it.
        let ColumnSpec::Numeric { impute, .. } = &mut columns(&mut s)[1] else {
            unreachable!()
        };
        *impute = None;
        let m = s.build().unwrap();
        assert!(!m.accepts_missing(1));
        assert!(matches!(
            m.predict(&[0.0, f64::NAN, 0.0]),
            Err(Error::NonFiniteFeature(f)) if f == "f1"
        ));
    }

    #[test]
    fn an_encoder_refusing_unknown_values_refuses_them() {
        let mut s = preprocessed();
        let ColumnSpec::OneHot { handle_unknown, .. } = &mut columns(&mut s)[0] else {
            unreachable!()
        };
        *handle_unknown = "error".into();
        let m = s.build().unwrap();
        assert!(m.categories(0).unwrap().refuses_unknown());
        assert!(!m.accepts_missing(0));
        assert!(matches!(
            m.predict(&[-1.0, 0.0, 0.0]),
            Err(Error::UnknownCategory(f)) if f == "f0"
        ));
        assert!(m.predict(&[1.0, 0.0, 0.0]).is_ok());
    }

    #[test]
    fn a_missing_category_sets_its_own_input() {
        let mut s = preprocessed();
        let ColumnSpec::OneHot {
            missing_is_category,
            ..
        } = &mut columns(&mut s)[0]
        else {
            unreachable!()
        };
        *missing_is_category = true;
        // One more input: the model must read 5.
        assert_eq!(
            invalid_msg(&s),
            "logistic coefficients[0] has 4 entries but the model has 5 features (the \
             preprocess columns write 5 model inputs)"
        );
        let ParamsSpec::Logistic { coefficients, .. } = &mut s.model else {
            unreachable!()
        };
        coefficients[0] = vec![1.0, -1.0, 4.0, 0.5, 0.25];
        let z = 0.125 + 4.0 + 0.5 * 0.5;
        assert_eq!(p_yes(&s, &[f64::NAN, 2.0, 0.0]), sigmoid(z));
    }

    /// An edit of a spec.
    type Edit = fn(&mut ModelSpec);

    #[test]
    fn inconsistent_preprocessing_is_refused_naming_the_problem() {
        let cases: Vec<(Edit, &str)> = vec![
            (
                |s| {
                    let ColumnSpec::OneHot { categories, .. } = &mut columns(s)[0] else {
                        unreachable!()
                    };
                    categories.push("c".into());
                },
                "logistic coefficients[0] has 4 entries but the model has 5 features (the \
                 preprocess columns write 5 model inputs)",
            ),
            (
                |s| {
                    let ColumnSpec::OneHot { categories, .. } = &mut columns(s)[0] else {
                        unreachable!()
                    };
                    categories[1] = "a".into();
                },
                "preprocess.columns[0].categories lists 'a' twice",
            ),
            (
                |s| {
                    let ColumnSpec::Ordinal { categories, .. } = &mut columns(s)[2] else {
                        unreachable!()
                    };
                    categories.clear();
                },
                "preprocess.columns[2].categories is empty",
            ),
            (
                |s| {
                    let ColumnSpec::OneHot { handle_unknown, .. } = &mut columns(s)[0] else {
                        unreachable!()
                    };
                    *handle_unknown = "infrequent_if_exist".into();
                },
                "preprocess.columns[0].handle_unknown 'infrequent_if_exist' is not supported; \
                 use 'error' or 'ignore'",
            ),
            (
                |s| {
                    let ColumnSpec::Numeric { feature, .. } = &mut columns(s)[1] else {
                        unreachable!()
                    };
                    *feature = 3;
                },
                "preprocess.columns[1].feature is 3 but the model has 3 features",
            ),
            (
                |s| {
                    let ColumnSpec::Numeric { feature, .. } = &mut columns(s)[1] else {
                        unreachable!()
                    };
                    *feature = 0;
                },
                "preprocess.columns[1]: feature 'f0' is already read by another column; an \
                 encoded feature is read by one column only",
            ),
            (
                |s| {
                    let ColumnSpec::Numeric { feature, .. } = &mut columns(s)[1] else {
                        unreachable!()
                    };
                    *feature = 2;
                },
                "preprocess.columns[2]: feature 'f2' is already read by another column; an \
                 encoded feature is read by one column only",
            ),
            (
                |s| s.features.push("f3".into()),
                "feature 'f3' is read by no preprocess column; remove it from features",
            ),
            (
                |s| {
                    let ColumnSpec::Numeric { impute, .. } = &mut columns(s)[1] else {
                        unreachable!()
                    };
                    *impute = Some(f64::NAN);
                },
                "preprocess.columns[1].impute is NaN",
            ),
            (
                |s| {
                    let ColumnSpec::Numeric { scale, .. } = &mut columns(s)[1] else {
                        unreachable!()
                    };
                    *scale = Some(0.0);
                },
                "preprocess.columns[1].scale is 0",
            ),
            (
                |s| {
                    let ColumnSpec::Ordinal { unknown_value, .. } = &mut columns(s)[2] else {
                        unreachable!()
                    };
                    *unknown_value = None;
                },
                "preprocess.columns[2] encodes missing or unknown values as missing (NaN) but \
                 the model does not score missing values; set encoded_missing_value and \
                 unknown_value",
            ),
            (
                |s| {
                    let ColumnSpec::Ordinal {
                        missing_is_category,
                        ..
                    } = &mut columns(s)[2]
                    else {
                        unreachable!()
                    };
                    *missing_is_category = false;
                },
                "preprocess.columns[2].encoded_missing_value is set but missing_is_category is \
                 false",
            ),
            (|s| columns(s).clear(), "preprocess.columns is empty"),
            (
                |s| {
                    s.scaler = Some(ScalerSpec {
                        mean: vec![0.0; 3],
                        scale: vec![1.0; 3],
                    })
                },
                "scaler and preprocess are both given; put the scaling in preprocess columns",
            ),
        ];
        for (edit, message) in cases {
            let mut s = preprocessed();
            edit(&mut s);
            assert_eq!(invalid_msg(&s), message);
        }
    }

    #[test]
    fn the_preprocess_stage_round_trips_through_json() {
        let s = preprocessed();
        let text = s.to_json();
        assert!(text.contains(r#""op":"one_hot""#), "{text}");
        assert_eq!(ModelSpec::from_json(text.as_bytes()).unwrap(), s);
        // NaN cannot be written: null and absence both mean "missing".
        let text = text.replace(
            r#""encoded_missing_value":-2.0"#,
            r#""encoded_missing_value":null"#,
        );
        let back = ModelSpec::from_json(text.as_bytes()).unwrap();
        let ColumnSpec::Ordinal {
            encoded_missing_value,
            ..
        } = &back.preprocess.unwrap().columns[2]
        else {
            unreachable!()
        };
        assert_eq!(*encoded_missing_value, None);
    }

    proptest! {
        #[test]
        fn build_and_predict_never_panic_on_arbitrary_preprocessing(
            cols in prop::collection::vec(
                (
                    0u8..3,
                    0u32..5,
                    prop::collection::vec(prop::sample::select(vec!["a", "b", "c", ""]), 0..4),
                    prop::sample::select(vec!["error", "ignore", "use_encoded_value", "x"]),
                    prop::option::of(prop_oneof![-2.0f64..2.0, Just(f64::NAN), Just(0.0)]),
                    any::<bool>(),
                ),
                0..5,
            ),
            width in 0usize..8,
            boosted in any::<bool>(),
            x in prop::collection::vec(
                prop_oneof![-2.0f64..4.0, Just(f64::NAN), Just(1.0), Just(f64::INFINITY)],
                3,
            ),
        ) {
            let columns = cols
                .iter()
                .map(|(op, feature, cats, unknown, v, flag)| {
                    let categories = cats.iter().map(|c| c.to_string()).collect();
                    match op {
                        0 => ColumnSpec::Numeric {
                            feature: *feature,
                            impute: *v,
                            mean: v.map(|v| v * 2.0),
                            scale: *v,
                        },
                        1 => ColumnSpec::OneHot {
                            feature: *feature,
                            categories,
                            handle_unknown: unknown.to_string(),
                            missing_is_category: *flag,
                        },
                        _ => ColumnSpec::Ordinal {
                            feature: *feature,
                            categories,
                            handle_unknown: unknown.to_string(),
                            unknown_value: *v,
                            missing_is_category: *flag,
                            encoded_missing_value: v.map(|v| -v),
                        },
                    }
                })
                .collect();
            let model = if boosted {
                ParamsSpec::BoostedTrees(BoostedTreesSpec {
                    trees: vec![BoostedTreeSpec {
                        output: 0,
                        feature: vec![(width as i64) - 1, -2, -2],
                        threshold: vec![0.5, 0.0, 0.0],
                        left: vec![1, -1, -1],
                        right: vec![2, -1, -1],
                        value: vec![0.0, -1.0, 1.0],
                        default_left: Some(vec![true, false, false]),
                        categories: None,
                    }],
                    base_score: vec![0.0],
                    link: "identity".into(),
                    threshold_precision: ThresholdPrecision::F64,
                    accumulation: Accumulation::F64,
                    split: SplitRule::LessOrEqual,
                    known_categories: None,
                })
            } else {
                ParamsSpec::Linear { coefficients: vec![1.0; width], intercept: 0.0 }
            };
            let mut s = spec(3, model, OutputSpec::Regression);
            s.preprocess = Some(PreprocessSpec { columns });
            if let Ok(m) = s.build() {
                match m.predict(&x) {
                    Ok(Prediction::Value(v)) => prop_assert!(v.is_finite()),
                    Ok(other) => prop_assert!(false, "unexpected {:?}", other),
                    Err(_) => {}
                }
            }
        }
    }
}
