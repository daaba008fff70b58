//! Multi-layer perceptrons of dense layers.
//!
//! Each layer computes `a = act(a · W + b)` with `W` stored as in the spec (and scikit-learn's
//! `coefs_`): `inputs x outputs`, row-major, in one contiguous array. The product is
//! accumulated row by row (`out += a[i] * W[i, ..]`), so the inner loop runs over contiguous
//! weights and independent outputs, which the compiler vectorises; the bias is added after
//! the product, as scikit-learn does. Activations live in caller-provided scratch.

use super::{
    build::{check_all_finite, invalid},
    score::{classify, expit, softmax_in_place},
    spec::{Activation, LayerSpec},
    Error, Output, Prediction,
};

#[derive(Debug, Clone)]
struct Layer {
    inputs: usize,
    outputs: usize,
    /// `inputs x outputs`, row-major.
    weights: Vec<f64>,
    biases: Vec<f64>,
}

#[derive(Debug, Clone)]
pub(super) struct Mlp {
    layers: Vec<Layer>,
    hidden: Activation,
    output: Activation,
    /// How the output layer reads as a prediction.
    head: Head,
    /// The widest layer's output count.
    max_width: usize,
}

/// How the output units become a [`Prediction`].
#[derive(Debug, Clone, Copy)]
enum Head {
    /// One unit, the value.
    Value,
    /// One logistic unit, the probability of the second of two classes.
    Binary,
    /// One softmax unit per class.
    Classes,
}

fn activation_name(a: Activation) -> &'static str {
    match a {
        Activation::Identity => "identity",
        Activation::Relu => "relu",
        Activation::Tanh => "tanh",
        Activation::Logistic => "logistic",
        Activation::Softmax => "softmax",
    }
}

impl Mlp {
    pub(super) fn build(
        layers: &[LayerSpec],
        hidden: Activation,
        output_activation: Activation,
        n_features: usize,
        output: &Output,
    ) -> Result<Self, Error> {
        if layers.is_empty() {
            return Err(invalid("mlp has no layers"));
        }
        if hidden == Activation::Softmax {
            return Err(invalid(
                "mlp hidden_activation is softmax; softmax is only allowed as the \
                 output_activation",
            ));
        }
        let mut built = Vec::with_capacity(layers.len());
        let mut inputs = n_features;
        for (l, layer) in layers.iter().enumerate() {
            let rows = layer.weights.len();
            if rows != inputs {
                return Err(invalid(if l == 0 {
                    format!("layer 0 weights have {rows} rows but the model has {inputs} features")
                } else {
                    format!(
                        "layer {l} weights have {rows} rows but layer {} outputs {inputs}",
                        l - 1
                    )
                }));
            }
            let outputs = layer.weights[0].len();
            if outputs == 0 {
                return Err(invalid(format!("layer {l} weights have rows of 0 columns")));
            }
            let mut weights = Vec::with_capacity(rows * outputs);
            for (r, row) in layer.weights.iter().enumerate() {
                if row.len() != outputs {
                    return Err(invalid(format!(
                        "layer {l} weights are not rectangular: row {r} has {} columns but row \
                         0 has {outputs}",
                        row.len()
                    )));
                }
                check_all_finite(row, &format!("layer {l} weights[{r}]"))?;
                weights.extend_from_slice(row);
            }
            if layer.biases.len() != outputs {
                return Err(invalid(format!(
                    "layer {l} biases has {} entries but its weights have {outputs} columns",
                    layer.biases.len()
                )));
            }
            check_all_finite(&layer.biases, &format!("layer {l} biases"))?;
            built.push(Layer {
                inputs,
                outputs,
                weights,
                biases: layer.biases.clone(),
            });
            inputs = outputs;
        }
        let units = inputs;
        let head = match output {
            Output::Regression => {
                if units != 1 || output_activation != Activation::Identity {
                    return Err(invalid(format!(
                        "a regression mlp needs 1 output unit with identity output_activation, \
                         found {units} units with {}",
                        activation_name(output_activation)
                    )));
                }
                Head::Value
            }
            Output::Classification(classes) => {
                let k = classes.len();
                match (units, output_activation) {
                    (1, Activation::Logistic) if k == 2 => Head::Binary,
                    (u, Activation::Softmax) if u == k => Head::Classes,
                    _ => {
                        let needs = if k == 2 {
                            "1 output unit with logistic output_activation or 2 with softmax"
                                .to_string()
                        } else {
                            format!("{k} output units with softmax output_activation")
                        };
                        return Err(invalid(format!(
                            "a {k}-class mlp needs {needs}, found {units} units with {}",
                            activation_name(output_activation)
                        )));
                    }
                }
            }
        };
        let max_width = built.iter().map(|l| l.outputs).max().unwrap_or(0);
        Ok(Self {
            layers: built,
            hidden,
            output: output_activation,
            head,
            max_width,
        })
    }

    /// Scratch numbers [`Mlp::predict`] needs.
    pub(super) fn scratch_len(&self) -> usize {
        2 * self.max_width
    }

    /// Scores `x` using `scratch` (at least [`Mlp::scratch_len`] numbers) for activations.
    pub(super) fn predict(&self, x: &[f64], scratch: &mut [f64]) -> Result<Prediction, Error> {
        let (mut cur, mut next) = scratch[..self.scratch_len()].split_at_mut(self.max_width);
        let last = self.layers.len() - 1;
        for (l, layer) in self.layers.iter().enumerate() {
            let input = if l == 0 { x } else { &cur[..layer.inputs] };
            let out = &mut next[..layer.outputs];
            out.fill(0.0);
            for (a, row) in input.iter().zip(layer.weights.chunks_exact(layer.outputs)) {
                for (o, w) in out.iter_mut().zip(row) {
                    *o += a * w;
                }
            }
            for (o, b) in out.iter_mut().zip(&layer.biases) {
                *o += b;
            }
            activate(out, if l == last { self.output } else { self.hidden });
            std::mem::swap(&mut cur, &mut next);
        }
        let out = &cur[..self.layers[last].outputs];
        match self.head {
            Head::Value if out[0].is_finite() => Ok(Prediction::Value(out[0])),
            Head::Value => Err(Error::NonFiniteOutput),
            Head::Binary => classify(vec![1.0 - out[0], out[0]]),
            Head::Classes => classify(out.to_vec()),
        }
    }
}

fn activate(v: &mut [f64], a: Activation) {
    match a {
        Activation::Identity => {}
        // NaN stays NaN (as numpy's `maximum`), so an overflow is reported, not hidden.
        Activation::Relu => v.iter_mut().for_each(|x| {
            if *x < 0.0 {
                *x = 0.0
            }
        }),
        Activation::Tanh => v.iter_mut().for_each(|x| *x = x.tanh()),
        Activation::Logistic => v.iter_mut().for_each(|x| *x = expit(*x)),
        Activation::Softmax => softmax_in_place(v),
    }
}
