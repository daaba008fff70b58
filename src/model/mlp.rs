//! Multi-layer perceptrons of dense layers.
//!
//! Each layer computes `a = act(a · W + b)` with `W` given as in scikit-learn's `coefs_`
//! (`inputs x outputs`). At build time `W` is packed into one contiguous array of panels of
//! [`BLOCK`] outputs, so scoring accumulates a block of outputs in registers while reading
//! weights strictly in order, which the compiler vectorises. Each output is summed over the
//! inputs in order and the bias added after the product, as scikit-learn does. Activations live
//! in caller-provided scratch.

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
    /// Packed by [`Layer::pack`].
    weights: Vec<f64>,
    biases: Vec<f64>,
}

/// Outputs accumulated together in registers.
const BLOCK: usize = 16;

impl Layer {
    /// Packs `inputs x outputs` rows for [`Layer::forward`]: for each block of [`BLOCK`]
    /// outputs, an `inputs x BLOCK` panel, row-major; then each remaining output's column.
    fn pack(rows: &[Vec<f64>], outputs: usize) -> Vec<f64> {
        let blocks = outputs / BLOCK;
        let mut w = Vec::with_capacity(rows.len() * outputs);
        for b in 0..blocks {
            for row in rows {
                w.extend_from_slice(&row[b * BLOCK..(b + 1) * BLOCK]);
            }
        }
        for j in blocks * BLOCK..outputs {
            w.extend(rows.iter().map(|row| row[j]));
        }
        w
    }

    /// `out = input · weights + biases`, each output summed over the inputs in order, then the
    /// bias added. Outputs are accumulated [`BLOCK`] at a time in registers.
    #[inline]
    fn forward(&self, input: &[f64], out: &mut [f64]) {
        let blocks = self.outputs / BLOCK;
        let (panels, columns) = self.weights.split_at(blocks * BLOCK * self.inputs);
        let (out_blocks, out_rest) = out.split_at_mut(blocks * BLOCK);
        let (bias_blocks, bias_rest) = self.biases.split_at(blocks * BLOCK);
        for ((panel, out), bias) in panels
            .chunks_exact(BLOCK * self.inputs)
            .zip(out_blocks.chunks_exact_mut(BLOCK))
            .zip(bias_blocks.chunks_exact(BLOCK))
        {
            let mut acc = [0.0; BLOCK];
            for (a, w) in input.iter().zip(panel.chunks_exact(BLOCK)) {
                for (acc, w) in acc.iter_mut().zip(w) {
                    *acc += a * w;
                }
            }
            for ((out, acc), bias) in out.iter_mut().zip(acc).zip(bias) {
                *out = acc + bias;
            }
        }
        for ((out, column), bias) in out_rest
            .iter_mut()
            .zip(columns.chunks_exact(self.inputs))
            .zip(bias_rest)
        {
            let acc = input
                .iter()
                .zip(column)
                .fold(0.0, |acc, (a, w)| acc + a * w);
            *out = acc + bias;
        }
    }
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
    /// Heap bytes held.
    pub(super) fn heap_bytes(&self) -> usize {
        super::vec_bytes(&self.layers)
            + self
                .layers
                .iter()
                .map(|l| super::vec_bytes(&l.weights) + super::vec_bytes(&l.biases))
                .sum::<usize>()
    }

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
            for (r, row) in layer.weights.iter().enumerate() {
                if row.len() != outputs {
                    return Err(invalid(format!(
                        "layer {l} weights are not rectangular: row {r} has {} columns but row \
                         0 has {outputs}",
                        row.len()
                    )));
                }
                check_all_finite(row, &format!("layer {l} weights[{r}]"))?;
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
                weights: Layer::pack(&layer.weights, outputs),
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
            layer.forward(input, out);
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

#[cfg(test)]
mod tests {
    use approx::assert_relative_eq;

    use crate::model::{spec::*, testing::*, Error, Prediction};

    fn two_layer(hidden: Activation, output: Activation, out: LayerSpec) -> ParamsSpec {
        mlp(
            vec![layer(&[&[1.0, -1.0], &[2.0, 1.0]], &[0.0, -10.0]), out],
            hidden,
            output,
        )
    }

    #[test]
    fn relu_regression_by_hand() {
        let out = layer(&[&[2.0], &[3.0]], &[1.0]);
        let m = spec(
            2,
            two_layer(Activation::Relu, Activation::Identity, out),
            OutputSpec::Regression,
        )
        .build()
        .unwrap();
        assert_eq!(m.kind_name(), "mlp");
        // x·W1 = [1 + 4, -1 + 2] = [5, 1]; + b1 = [5, -9]; relu = [5, 0]; 5*2 + 0*3 + 1 = 11.
        assert_eq!(m.predict(&[1.0, 2.0]).unwrap(), Prediction::Value(11.0));
    }

    #[test]
    fn tanh_and_identity_hidden_layers() {
        let out = layer(&[&[2.0], &[3.0]], &[1.0]);
        let m = spec(
            2,
            two_layer(Activation::Tanh, Activation::Identity, out.clone()),
            OutputSpec::Regression,
        )
        .build()
        .unwrap();
        let expected = 5.0f64.tanh() * 2.0 + (-9.0f64).tanh() * 3.0 + 1.0;
        let Prediction::Value(y) = m.predict(&[1.0, 2.0]).unwrap() else {
            panic!("expected a value")
        };
        assert_relative_eq!(y, expected, max_relative = 1e-15);
        let m = spec(
            2,
            two_layer(Activation::Identity, Activation::Identity, out),
            OutputSpec::Regression,
        )
        .build()
        .unwrap();
        // 5*2 - 9*3 + 1
        assert_eq!(m.predict(&[1.0, 2.0]).unwrap(), Prediction::Value(-16.0));
    }

    #[test]
    fn binary_classifier_with_one_logistic_unit() {
        let out = layer(&[&[0.5], &[1.0]], &[-2.0]);
        let m = spec(
            2,
            two_layer(Activation::Logistic, Activation::Logistic, out),
            classes(&["no", "yes"]),
        )
        .build()
        .unwrap();
        // hidden = expit([5, -9]); z = 0.5 h0 + h1 - 2
        let h = [1.0 / (1.0 + (-5.0f64).exp()), 1.0 / (1.0 + 9.0f64.exp())];
        let z = 0.5 * h[0] + h[1] - 2.0;
        let p = 1.0 / (1.0 + (-z).exp());
        let (index, probabilities) = class(m.predict(&[1.0, 2.0]).unwrap());
        assert_relative_eq!(probabilities[1], p, max_relative = 1e-14);
        assert_relative_eq!(probabilities[0], 1.0 - p, max_relative = 1e-14);
        assert_eq!(index, 0);
    }

    #[test]
    fn softmax_classifier() {
        let out = layer(&[&[1.0, 0.0, 0.0], &[0.0, 1.0, -1.0]], &[0.0, 0.0, 0.0]);
        let m = spec(
            2,
            two_layer(Activation::Relu, Activation::Softmax, out),
            classes(&["a", "b", "c"]),
        )
        .build()
        .unwrap();
        // x = [2, 1]: x·W1 = [2 + 2, -2 + 1] = [4, -1]; + b1 = [4, -11]; relu = [4, 0];
        // logits = [4, 0, 0].
        let (index, p) = class(m.predict(&[2.0, 1.0]).unwrap());
        let s = 1.0 + 2.0 * (-4.0f64).exp();
        assert_relative_eq!(p[0], 1.0 / s, max_relative = 1e-15);
        assert_relative_eq!(p[1], (-4.0f64).exp() / s, max_relative = 1e-15);
        assert_eq!(p[1], p[2]);
        assert_eq!(index, 0);
        // Two softmax units are also a valid binary head.
        let out = layer(&[&[1.0, 0.0], &[0.0, 1.0]], &[0.0, 0.0]);
        let m = spec(
            2,
            two_layer(Activation::Relu, Activation::Softmax, out),
            classes(&["a", "b"]),
        )
        .build()
        .unwrap();
        // logits [4, 0], tie-free
        let (index, p) = class(m.predict(&[2.0, 1.0]).unwrap());
        assert_relative_eq!(p[1], 1.0 / (1.0 + 4.0f64.exp()), max_relative = 1e-15);
        assert_eq!(index, 0);
    }

    #[test]
    fn a_single_layer_uses_the_output_activation() {
        let s = spec(
            2,
            mlp(
                vec![layer(&[&[1.0], &[1.0]], &[0.0])],
                Activation::Relu,
                Activation::Identity,
            ),
            OutputSpec::Regression,
        );
        // relu would give 0.
        assert_eq!(
            s.build().unwrap().predict(&[-1.0, -2.0]).unwrap(),
            Prediction::Value(-3.0)
        );
    }

    #[test]
    fn wide_layers_use_heap_scratch() {
        let width = 300;
        let w1 = vec![vec![1.0; width]];
        let w2 = vec![vec![0.5]; width];
        let s = spec(
            1,
            mlp(
                vec![
                    LayerSpec {
                        weights: w1,
                        biases: vec![0.0; width],
                    },
                    LayerSpec {
                        weights: w2,
                        biases: vec![1.0],
                    },
                ],
                Activation::Relu,
                Activation::Identity,
            ),
            OutputSpec::Regression,
        );
        // 300 units of 2, each times 0.5, plus 1.
        assert_eq!(
            s.build().unwrap().predict(&[2.0]).unwrap(),
            Prediction::Value(301.0)
        );
    }

    #[test]
    fn overflow_inside_the_network_is_a_non_finite_output() {
        let s = spec(
            1,
            mlp(
                vec![
                    layer(&[&[1e308, 1e308]], &[0.0, 0.0]),
                    layer(&[&[1.0], &[-1.0]], &[0.0]),
                ],
                Activation::Relu,
                Activation::Identity,
            ),
            OutputSpec::Regression,
        );
        // Hidden units are both +inf; inf - inf is NaN, which relu must not turn into 0.
        assert!(matches!(
            s.build().unwrap().predict(&[10.0]),
            Err(Error::NonFiniteOutput)
        ));
    }

    fn regression(layers: Vec<LayerSpec>) -> crate::model::ModelSpec {
        spec(
            2,
            mlp(layers, Activation::Relu, Activation::Identity),
            OutputSpec::Regression,
        )
    }

    #[test]
    fn rejects_layer_shape_problems() {
        assert_eq!(invalid_msg(&regression(vec![])), "mlp has no layers");
        let s = regression(vec![layer(&[&[1.0], &[1.0], &[1.0]], &[0.0])]);
        assert_eq!(
            invalid_msg(&s),
            "layer 0 weights have 3 rows but the model has 2 features"
        );
        let s = regression(vec![
            layer(&[&[1.0, 2.0], &[1.0, 2.0]], &[0.0, 0.0]),
            layer(&[&[1.0], &[1.0], &[1.0]], &[0.0]),
        ]);
        assert_eq!(
            invalid_msg(&s),
            "layer 1 weights have 3 rows but layer 0 outputs 2"
        );
        let s = regression(vec![layer(&[&[1.0], &[1.0, 2.0]], &[0.0])]);
        assert_eq!(
            invalid_msg(&s),
            "layer 0 weights are not rectangular: row 1 has 2 columns but row 0 has 1"
        );
        let s = regression(vec![layer(&[&[], &[]], &[])]);
        assert_eq!(invalid_msg(&s), "layer 0 weights have rows of 0 columns");
        let s = regression(vec![layer(&[&[1.0], &[1.0]], &[0.0, 1.0])]);
        assert_eq!(
            invalid_msg(&s),
            "layer 0 biases has 2 entries but its weights have 1 columns"
        );
    }

    #[test]
    fn rejects_non_finite_weights_and_biases() {
        let s = regression(vec![layer(&[&[1.0], &[f64::NAN]], &[0.0])]);
        assert_eq!(invalid_msg(&s), "layer 0 weights[1][0] is NaN");
        let s = regression(vec![layer(&[&[1.0], &[1.0]], &[f64::NEG_INFINITY])]);
        assert_eq!(invalid_msg(&s), "layer 0 biases[0] is negative infinite");
    }

    #[test]
    fn rejects_softmax_as_a_hidden_activation() {
        let s = spec(
            2,
            mlp(
                vec![layer(&[&[1.0], &[1.0]], &[0.0])],
                Activation::Softmax,
                Activation::Identity,
            ),
            OutputSpec::Regression,
        );
        assert!(invalid_msg(&s).starts_with("mlp hidden_activation is softmax"));
    }

    #[test]
    fn rejects_output_heads_that_do_not_match_the_output() {
        let one = || vec![layer(&[&[1.0], &[1.0]], &[0.0])];
        let two = || vec![layer(&[&[1.0, 1.0], &[1.0, 1.0]], &[0.0, 0.0])];
        let s = spec(
            2,
            mlp(two(), Activation::Relu, Activation::Identity),
            OutputSpec::Regression,
        );
        assert_eq!(
            invalid_msg(&s),
            "a regression mlp needs 1 output unit with identity output_activation, found 2 \
             units with identity"
        );
        let s = spec(
            2,
            mlp(one(), Activation::Relu, Activation::Logistic),
            OutputSpec::Regression,
        );
        assert!(invalid_msg(&s).ends_with("found 1 units with logistic"));
        let s = spec(
            2,
            mlp(one(), Activation::Relu, Activation::Softmax),
            classes(&["a", "b"]),
        );
        assert_eq!(
            invalid_msg(&s),
            "a 2-class mlp needs 1 output unit with logistic output_activation or 2 with \
             softmax, found 1 units with softmax"
        );
        let s = spec(
            2,
            mlp(two(), Activation::Relu, Activation::Logistic),
            classes(&["a", "b"]),
        );
        assert!(invalid_msg(&s).ends_with("found 2 units with logistic"));
        let s = spec(
            2,
            mlp(two(), Activation::Relu, Activation::Softmax),
            classes(&["a", "b", "c"]),
        );
        assert_eq!(
            invalid_msg(&s),
            "a 3-class mlp needs 3 output units with softmax output_activation, found 2 units \
             with softmax"
        );
    }
}
