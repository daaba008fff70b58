//! Linear and logistic regression.
//!
//! Scoring follows scikit-learn: a decision value is the dot product summed in feature order,
//! then the intercept is added; binary probabilities use `expit` (`1 / (1 + e^-z)`, as SciPy
//! computes it) and multinomial ones a softmax with the maximum subtracted first.

use super::{
    build::{check_all_finite, check_finite, invalid},
    score::{classify, expit, softmax_in_place},
    Error, Output, Prediction,
};

/// Linear regression: `y = coefficients · x + intercept`.
#[derive(Debug, Clone)]
pub(super) struct Linear {
    coefficients: Vec<f64>,
    intercept: f64,
}

/// Logistic regression: one row of coefficients (binary) or one row per class (multinomial),
/// stored row after row in one contiguous array.
#[derive(Debug, Clone)]
pub(super) struct Logistic {
    /// `rows x n_features`, row-major.
    coefficients: Vec<f64>,
    intercepts: Vec<f64>,
    n_features: usize,
}

/// `w · x` summed in index order.
#[inline]
fn dot(w: &[f64], x: &[f64]) -> f64 {
    w.iter().zip(x).fold(0.0, |acc, (w, x)| acc + w * x)
}

impl Linear {
    /// Heap bytes held.
    pub(super) fn heap_bytes(&self) -> usize {
        super::vec_bytes(&self.coefficients)
    }

    pub(super) fn build(
        coefficients: &[f64],
        intercept: f64,
        n_features: usize,
        output: &Output,
    ) -> Result<Self, Error> {
        if !matches!(output, Output::Regression) {
            return Err(invalid(
                "a linear model predicts a value: its output must be regression",
            ));
        }
        if coefficients.len() != n_features {
            return Err(invalid(format!(
                "coefficients has {} entries but the model has {n_features} features",
                coefficients.len()
            )));
        }
        check_all_finite(coefficients, "linear coefficients")?;
        check_finite(intercept, || "linear intercept".into())?;
        Ok(Self {
            coefficients: coefficients.to_vec(),
            intercept,
        })
    }

    pub(super) fn predict(&self, x: &[f64]) -> Result<Prediction, Error> {
        let y = dot(&self.coefficients, x) + self.intercept;
        if y.is_finite() {
            Ok(Prediction::Value(y))
        } else {
            Err(Error::NonFiniteOutput)
        }
    }
}

impl Logistic {
    /// Heap bytes held.
    pub(super) fn heap_bytes(&self) -> usize {
        super::vec_bytes(&self.coefficients) + super::vec_bytes(&self.intercepts)
    }

    pub(super) fn build(
        coefficients: &[Vec<f64>],
        intercepts: &[f64],
        n_features: usize,
        output: &Output,
    ) -> Result<Self, Error> {
        let Output::Classification(classes) = output else {
            return Err(invalid(
                "a logistic model predicts a class: its output must be classification",
            ));
        };
        let rows = coefficients.len();
        match rows {
            0 => return Err(invalid("logistic coefficients has no rows")),
            1 if classes.len() != 2 => {
                return Err(invalid(format!(
                    "logistic coefficients has 1 row (a binary model) but the output has {} \
                     classes; a binary model has exactly 2",
                    classes.len()
                )))
            }
            2 => {
                return Err(invalid(
                    "logistic coefficients has 2 rows; a binary model has 1 row and a \
                     multinomial one has one row per class (3 or more)",
                ))
            }
            k if k >= 3 && k != classes.len() => {
                return Err(invalid(format!(
                    "logistic coefficients has {k} rows but the output has {} classes",
                    classes.len()
                )))
            }
            _ => {}
        }
        if intercepts.len() != rows {
            return Err(invalid(format!(
                "logistic intercepts has {} entries but coefficients has {rows} rows",
                intercepts.len()
            )));
        }
        let mut flat = Vec::with_capacity(rows * n_features);
        for (r, row) in coefficients.iter().enumerate() {
            if row.len() != n_features {
                return Err(invalid(format!(
                    "logistic coefficients[{r}] has {} entries but the model has {n_features} \
                     features",
                    row.len()
                )));
            }
            check_all_finite(row, &format!("logistic coefficients[{r}]"))?;
            flat.extend_from_slice(row);
        }
        check_all_finite(intercepts, "logistic intercepts")?;
        Ok(Self {
            coefficients: flat,
            intercepts: intercepts.to_vec(),
            n_features,
        })
    }

    pub(super) fn predict(&self, x: &[f64]) -> Result<Prediction, Error> {
        if let [b] = self.intercepts[..] {
            let p = expit(dot(&self.coefficients, x) + b);
            return classify(vec![1.0 - p, p]);
        }
        let mut z: Vec<f64> = self
            .coefficients
            .chunks_exact(self.n_features)
            .zip(&self.intercepts)
            .map(|(row, b)| dot(row, x) + b)
            .collect();
        softmax_in_place(&mut z);
        classify(z)
    }
}

#[cfg(test)]
mod tests {
    use approx::assert_relative_eq;

    use crate::model::{spec::*, Error, ModelSpec, Prediction};

    fn linear(coefficients: Vec<f64>, intercept: f64, scaler: Option<ScalerSpec>) -> ModelSpec {
        ModelSpec {
            format_version: 1,
            features: (0..coefficients.len()).map(|i| format!("f{i}")).collect(),
            scaler,
            preprocess: None,
            model: ParamsSpec::Linear {
                coefficients,
                intercept,
            },
            output: OutputSpec::Regression,
            metadata: None,
            reference: None,
        }
    }

    fn logistic(coefficients: Vec<Vec<f64>>, intercepts: Vec<f64>, classes: &[&str]) -> ModelSpec {
        ModelSpec {
            format_version: 1,
            features: (0..coefficients[0].len())
                .map(|i| format!("f{i}"))
                .collect(),
            scaler: None,
            preprocess: None,
            model: ParamsSpec::Logistic {
                coefficients,
                intercepts,
            },
            output: OutputSpec::Classification {
                classes: classes.iter().map(|c| c.to_string()).collect(),
            },
            metadata: None,
            reference: None,
        }
    }

    fn invalid_msg(spec: &ModelSpec) -> String {
        match spec.build() {
            Err(Error::Invalid(m)) => m,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    fn class(p: Prediction) -> (usize, Vec<f64>) {
        match p {
            Prediction::Class {
                index,
                probabilities,
            } => (index, probabilities),
            other => panic!("expected a class, got {other:?}"),
        }
    }

    #[test]
    fn linear_is_dot_plus_intercept() {
        let m = linear(vec![2.0, -1.0], 0.5, None).build().unwrap();
        // 2*3 - 1*4 + 0.5
        assert_eq!(m.predict(&[3.0, 4.0]).unwrap(), Prediction::Value(2.5));
        assert_eq!(m.kind_name(), "linear");
    }

    #[test]
    fn linear_applies_scaler_first() {
        let scaler = ScalerSpec {
            mean: vec![1.0, 2.0],
            scale: vec![2.0, 4.0],
        };
        let m = linear(vec![2.0, -1.0], 0.5, Some(scaler)).build().unwrap();
        // x' = [(3-1)/2, (4-2)/4] = [1, 0.5]; 2*1 - 0.5 + 0.5
        assert_eq!(m.predict(&[3.0, 4.0]).unwrap(), Prediction::Value(2.0));
    }

    #[test]
    fn binary_logistic_is_sigmoid_of_decision() {
        let m = logistic(vec![vec![1.0, -2.0]], vec![0.5], &["no", "yes"])
            .build()
            .unwrap();
        // z = 1*1.5 - 2*0.5 + 0.5 = 1
        let (index, p) = class(m.predict(&[1.5, 0.5]).unwrap());
        let yes = 1.0 / (1.0 + (-1.0f64).exp());
        assert_relative_eq!(p[1], yes, max_relative = 1e-15);
        assert_relative_eq!(p[0], 1.0 - yes, max_relative = 1e-15);
        assert_eq!(index, 1);
        // z = -1 -> "no" is more likely
        let (index, _) = class(m.predict(&[0.0, 0.75]).unwrap());
        assert_eq!(index, 0);
    }

    #[test]
    fn binary_logistic_saturates_without_nan() {
        let m = logistic(vec![vec![1.0]], vec![0.0], &["no", "yes"])
            .build()
            .unwrap();
        let (_, p) = class(m.predict(&[-1000.0]).unwrap());
        assert_eq!(p, vec![1.0, 0.0]);
        let (_, p) = class(m.predict(&[1000.0]).unwrap());
        assert_eq!(p, vec![0.0, 1.0]);
    }

    #[test]
    fn multinomial_logistic_is_softmax() {
        let m = logistic(
            vec![vec![1.0, 0.0], vec![0.0, 1.0], vec![0.0, 0.0]],
            vec![0.0, 0.0, 1.0],
            &["a", "b", "c"],
        )
        .build()
        .unwrap();
        // z = [2, 3, 1]
        let (index, p) = class(m.predict(&[2.0, 3.0]).unwrap());
        let e = [2.0f64.exp(), 3.0f64.exp(), 1.0f64.exp()];
        let s: f64 = e.iter().sum();
        for k in 0..3 {
            assert_relative_eq!(p[k], e[k] / s, max_relative = 1e-14);
        }
        assert_eq!(index, 1);
    }

    #[test]
    fn multinomial_softmax_survives_large_decisions() {
        let m = logistic(
            vec![vec![1000.0], vec![999.0], vec![0.0]],
            vec![0.0, 0.0, 0.0],
            &["a", "b", "c"],
        )
        .build()
        .unwrap();
        // z = [1000, 999, 0]: exp(1000) overflows unless the max is subtracted.
        let (index, p) = class(m.predict(&[1.0]).unwrap());
        let s = 1.0 + (-1.0f64).exp() + (-1000.0f64).exp();
        assert_relative_eq!(p[0], 1.0 / s, max_relative = 1e-14);
        assert_relative_eq!(p[1], (-1.0f64).exp() / s, max_relative = 1e-14);
        assert_eq!(index, 0);
    }

    #[test]
    fn ties_take_the_first_class() {
        let m = logistic(
            vec![vec![1.0], vec![1.0], vec![1.0]],
            vec![0.0, 2.0, 2.0],
            &["a", "b", "c"],
        )
        .build()
        .unwrap();
        let (index, p) = class(m.predict(&[1.0]).unwrap());
        assert_eq!(p[1], p[2]);
        assert_eq!(index, 1);
        // Binary: z = 0 gives [0.5, 0.5] and the first class.
        let m = logistic(vec![vec![1.0]], vec![0.0], &["no", "yes"])
            .build()
            .unwrap();
        assert_eq!(
            m.predict(&[0.0]).unwrap(),
            Prediction::Class {
                index: 0,
                probabilities: vec![0.5, 0.5]
            }
        );
    }

    #[test]
    fn linear_overflow_is_a_non_finite_output() {
        let m = linear(vec![1e308, 1e308], 0.0, None).build().unwrap();
        assert!(matches!(
            m.predict(&[10.0, 10.0]),
            Err(Error::NonFiniteOutput)
        ));
    }

    #[test]
    fn rejects_coefficient_count_mismatch() {
        let mut s = linear(vec![1.0, 2.0, 3.0], 0.0, None);
        s.features.push("f3".into());
        assert_eq!(
            invalid_msg(&s),
            "coefficients has 3 entries but the model has 4 features"
        );
    }

    #[test]
    fn rejects_linear_non_finite_numbers() {
        let s = linear(vec![1.0, f64::NAN], 0.0, None);
        assert_eq!(invalid_msg(&s), "linear coefficients[1] is NaN");
        let s = linear(vec![1.0, 2.0], f64::INFINITY, None);
        assert_eq!(invalid_msg(&s), "linear intercept is infinite");
    }

    #[test]
    fn rejects_linear_classification() {
        let mut s = linear(vec![1.0], 0.0, None);
        s.output = OutputSpec::Classification {
            classes: vec!["a".into(), "b".into()],
        };
        assert!(invalid_msg(&s).contains("output must be regression"));
    }

    #[test]
    fn rejects_logistic_shape_problems() {
        let s = logistic(vec![vec![1.0]], vec![0.0], &["a", "b", "c"]);
        assert!(invalid_msg(&s).contains("1 row (a binary model) but the output has 3 classes"));
        let s = logistic(vec![vec![1.0], vec![2.0]], vec![0.0, 0.0], &["a", "b"]);
        assert!(invalid_msg(&s).contains("has 2 rows"));
        let s = logistic(
            vec![vec![1.0], vec![2.0], vec![3.0]],
            vec![0.0; 3],
            &["a", "b", "c", "d"],
        );
        assert_eq!(
            invalid_msg(&s),
            "logistic coefficients has 3 rows but the output has 4 classes"
        );
        let s = logistic(vec![vec![1.0, 2.0]], vec![0.0, 1.0], &["a", "b"]);
        assert_eq!(
            invalid_msg(&s),
            "logistic intercepts has 2 entries but coefficients has 1 rows"
        );
        let s = logistic(
            vec![vec![1.0, 2.0], vec![1.0], vec![1.0, 2.0]],
            vec![0.0; 3],
            &["a", "b", "c"],
        );
        assert_eq!(
            invalid_msg(&s),
            "logistic coefficients[1] has 1 entries but the model has 2 features"
        );
        let mut s = logistic(vec![vec![1.0]], vec![0.0], &["a", "b"]);
        s.output = OutputSpec::Regression;
        assert!(invalid_msg(&s).contains("output must be classification"));
    }

    #[test]
    fn rejects_logistic_non_finite_numbers() {
        let s = logistic(
            vec![vec![1.0], vec![2.0], vec![3.0]],
            vec![0.0, f64::NAN, 0.0],
            &["a", "b", "c"],
        );
        assert_eq!(invalid_msg(&s), "logistic intercepts[1] is NaN");
        let s = logistic(vec![vec![1.0, f64::NEG_INFINITY]], vec![0.0], &["a", "b"]);
        assert_eq!(
            invalid_msg(&s),
            "logistic coefficients[0][1] is negative infinite"
        );
    }
}
