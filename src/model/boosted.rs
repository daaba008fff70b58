//! Boosted tree ensembles (gradient boosting): scikit-learn's `GradientBoosting*` and
//! `HistGradientBoosting*`, XGBoost's `gbtree` and LightGBM models.
//!
//! At build time every tree is checked (arrays of equal length, children in range, no cycle,
//! no node with two parents, split features in range, bitsets well formed, every tree's output
//! below the model's output count) and laid out breadth-first into one packed array shared by
//! all trees, the two children of a split in adjacent slots. A node is a threshold, a feature
//! index whose top bits carry the node's flags (missing goes left, categorical), and a child
//! index: 16 bytes. As in [`super::forest`], a leaf's threshold is a NaN carrying the index of
//! its value and its child index is its own index minus one, so scoring walks four trees in
//! lockstep for their depth without a leaf test or a branch on the comparison.
//!
//! Scoring follows the libraries exactly. A numeric split sends `x` left when `x <= t`; the
//! spec's `less` rule (`x < t`, XGBoost's) is turned at build time into `<=` against the
//! largest threshold below `t` of the model's precision, which sends every value the same way.
//! With `f32` thresholds features are rounded to `f32` once per record before scoring, as
//! XGBoost's `DMatrix` and scikit-learn's trees do. A missing value (NaN) goes the node's default direction. A
//! categorical split reads the integer part of `x` as a category: negative values, and
//! categories outside the feature's known set (when the spec gives one), go the default
//! direction; otherwise the category goes left when its bit is set in the node's bitset.
//!
//! Each output starts at its base score and adds the leaf value of each of its trees, in tree
//! order, in `f64` or (accumulation `f32`) in `f32`. The link then gives the prediction:
//! `identity` the value, `logistic` the probabilities `[1 - p, p]` with `p = 1 / (1 + e^-z)`,
//! `softmax` the normalised exponentials (in `f32` as XGBoost does: the sum of the
//! exponentials is accumulated in `f64` and rounded to `f32` once before dividing; its
//! logistic caps the exponent at 88.7).

use std::collections::VecDeque;

use super::{
    build::{check_finite, invalid},
    forest::{check_shape, f32_floor, next_below},
    score::{classify, expit, softmax_in_place},
    spec::{Accumulation, BoostedTreeSpec, BoostedTreesSpec, SplitRule, ThresholdPrecision},
    Error, Output, Prediction,
};

/// Trees walked together.
const LANES: usize = 4;
/// The most the depths of trees walked together may differ by; beyond it each tree is walked
/// alone until its leaf.
const MAX_DEPTH_SPREAD: u32 = 2;
/// Node flag: a missing value goes left.
const DEFAULT_LEFT: u32 = 1 << 30;
/// Node flag: a categorical split; `threshold` holds the index of its split in `categorical`.
const CATEGORICAL: u32 = 1 << 29;
/// The feature index bits of [`Node::feature`].
const FEATURE: u32 = CATEGORICAL - 1;
/// Leaves a model may have: a leaf's number is the payload of its NaN threshold.
const MAX_LEAVES: usize = 1 << 32;

/// A leaf's threshold: a quiet NaN carrying the leaf's index in `values`.
fn leaf_threshold(n: u32) -> f64 {
    f64::from_bits(0x7ff8_0000_0000_0000 | u64::from(n))
}

/// The index in `values` of a leaf made by [`leaf_threshold`].
fn leaf_number(threshold: f64) -> usize {
    (threshold.to_bits() & 0xffff_ffff) as usize
}
/// The most words a category bitset may have: categories up to 2^20 - 1.
const MAX_BITSET_WORDS: usize = 1 << 15;
/// Categorical splits a model may hold: their index is stored exactly in an `f64` threshold,
/// and a `u32` is plenty.
const MAX_CATEGORICAL_SPLITS: usize = u32::MAX as usize;

/// One packed node.
#[derive(Debug, Clone, Copy)]
struct Node {
    /// Go left when `x <= threshold` (numeric split); the index of the split's bitsets
    /// (categorical split); a NaN carrying the leaf's index in `values` (leaf).
    threshold: f64,
    /// Feature index, with the flags [`DEFAULT_LEFT`] and [`CATEGORICAL`]; 0 at a leaf.
    feature: u32,
    /// A split's left child (its right child is `next + 1`); a leaf's own index minus one
    /// (wrapping), so a step from a leaf, which always goes right, stays there.
    next: u32,
}

/// A categorical split's bitsets, as ranges of [`Boosted::words`].
#[derive(Debug, Clone, Copy)]
struct CategoricalSplit {
    left: (u32, u32),
    /// The known categories of the split's feature; `(0, 0)` when every category is known.
    known: (u32, u32),
}

/// What the summed outputs become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Identity,
    Logistic,
    Softmax,
}

#[derive(Debug, Clone)]
pub(super) struct Boosted {
    nodes: Vec<Node>,
    /// Index in `nodes` of each tree's root, in tree order.
    roots: Vec<u32>,
    /// Per tree: the most splits on a path from its root to a leaf.
    depths: Vec<u32>,
    /// The output each tree adds to, in tree order.
    outputs: Vec<u32>,
    /// Leaf values, in layout order.
    values: Vec<f64>,
    /// Every bitset's words, one after the other.
    words: Vec<u32>,
    categorical: Vec<CategoricalSplit>,
    base: Vec<f64>,
    link: Link,
    precision: ThresholdPrecision,
    accumulation: Accumulation,
    handles_missing: bool,
}

impl Boosted {
    /// Heap bytes held.
    pub(super) fn heap_bytes(&self) -> usize {
        use super::vec_bytes;
        vec_bytes(&self.nodes)
            + vec_bytes(&self.roots)
            + vec_bytes(&self.depths)
            + vec_bytes(&self.outputs)
            + vec_bytes(&self.values)
            + vec_bytes(&self.words)
            + vec_bytes(&self.categorical)
            + vec_bytes(&self.base)
    }

    /// Whether features are rounded to `f32` before scoring.
    pub(super) fn rounds_to_f32(&self) -> bool {
        self.precision == ThresholdPrecision::F32
    }

    /// The number of running sums scoring needs: one per output.
    pub(super) fn outputs(&self) -> usize {
        self.base.len()
    }

    /// Whether every tree has a default direction for missing values, so a record may miss
    /// features.
    pub(super) fn handles_missing(&self) -> bool {
        self.handles_missing
    }

    pub(super) fn build(
        spec: &BoostedTreesSpec,
        n_features: usize,
        output: &Output,
    ) -> Result<Self, Error> {
        let link = match spec.link.as_str() {
            "identity" => Link::Identity,
            "logistic" => Link::Logistic,
            "softmax" => Link::Softmax,
            other => {
                return Err(invalid(format!(
                    "boosted_trees link '{other}' is not supported; use identity, logistic or \
                     softmax"
                )))
            }
        };
        let n_outputs = match (link, output) {
            (Link::Identity, Output::Regression) => 1,
            (Link::Logistic, Output::Classification(c)) if c.len() == 2 => 1,
            (Link::Softmax, Output::Classification(c)) => c.len(),
            (Link::Identity, _) => {
                return Err(invalid(
                    "boosted_trees link identity needs a regression output",
                ))
            }
            (Link::Logistic, Output::Classification(c)) => {
                return Err(invalid(format!(
                    "boosted_trees link logistic scores 2 classes but the output has {}; use \
                     softmax",
                    c.len()
                )))
            }
            (_, Output::Regression) => {
                return Err(invalid(format!(
                    "boosted_trees link {} needs a classification output",
                    spec.link
                )))
            }
        };
        if spec.base_score.len() != n_outputs {
            return Err(invalid(format!(
                "boosted_trees base_score has {} entries but link {} with this output needs \
                 {n_outputs}",
                spec.base_score.len(),
                spec.link
            )));
        }
        let f32_values = spec.accumulation == Accumulation::F32;
        for (i, &b) in spec.base_score.iter().enumerate() {
            check_finite(b, || format!("base_score[{i}]"))?;
            if f32_values && f64::from(b as f32) != b {
                return Err(invalid(format!(
                    "base_score[{i}] {b} is not an f32 value, as an f32 model's must be"
                )));
            }
        }
        let known = check_known(spec.known_categories.as_deref(), n_features)?;
        let mut layout = Layout {
            nodes: Vec::new(),
            roots: Vec::with_capacity(spec.trees.len()),
            depths: Vec::with_capacity(spec.trees.len()),
            values: Vec::new(),
            words: Vec::new(),
            categorical: Vec::new(),
            known: Vec::new(),
        };
        // Each feature's known set, copied once into `words`.
        for k in &known {
            let range = layout.push_words(k)?;
            layout.known.push(range);
        }
        let mut handles_missing = true;
        for (t, tree) in spec.trees.iter().enumerate() {
            check_tree(tree, t, n_features, n_outputs, f32_values)?;
            handles_missing &= tree.default_left.is_some();
            layout.push_tree(tree, spec.threshold_precision, spec.split)?;
        }
        let Layout {
            mut nodes,
            roots,
            depths,
            mut values,
            mut words,
            mut categorical,
            ..
        } = layout;
        nodes.shrink_to_fit();
        values.shrink_to_fit();
        words.shrink_to_fit();
        categorical.shrink_to_fit();
        Ok(Boosted {
            nodes,
            roots,
            depths,
            outputs: spec.trees.iter().map(|t| t.output).collect(),
            values,
            words,
            categorical,
            base: spec.base_score.clone(),
            link,
            precision: spec.threshold_precision,
            accumulation: spec.accumulation,
            handles_missing: handles_missing && !spec.trees.is_empty(),
        })
    }

    /// Whether category `c` is in the bitset at `range` of `words`.
    #[inline]
    fn contains(&self, (start, len): (u32, u32), c: u64) -> bool {
        let word = c / 32;
        word < u64::from(len) && self.words[(u64::from(start) + word) as usize] >> (c % 32) & 1 == 1
    }

    /// Whether a categorical split sends `x` (not NaN) left.
    #[cold]
    fn categorical_goes_left(&self, node: Node, x: f64) -> bool {
        let missing = node.feature & DEFAULT_LEFT != 0;
        if x < 0.0 {
            return missing;
        }
        // Truncates toward zero, saturating: the category's integer part.
        let c = x as u64;
        let split = self.categorical[node.threshold as usize];
        if split.known.1 != 0 && !self.contains(split.known, c) {
            return missing;
        }
        self.contains(split.left, c)
    }

    /// Walks `L` trees together from their roots for `steps` steps (their greatest depth) and
    /// returns the indices in `values` of the leaves `x` reaches. A leaf steps back onto
    /// itself, so trees shallower than `steps` wait at their leaf.
    #[inline(always)]
    fn leaves<const L: usize>(&self, roots: [u32; L], steps: u32, x: &[f64]) -> [usize; L] {
        let mut at = roots;
        for _ in 0..steps {
            for a in &mut at {
                *a = self.step(self.nodes[*a as usize], x);
            }
        }
        at.map(|a| leaf_number(self.nodes[a as usize].threshold))
    }

    /// The index in `values` of the leaf `x` reaches from `root`, walking until a leaf.
    #[inline]
    fn leaf(&self, root: u32, x: &[f64]) -> usize {
        let mut at = root;
        loop {
            let node = self.nodes[at as usize];
            if node.threshold.is_nan() {
                return leaf_number(node.threshold);
            }
            at = self.step(node, x);
        }
    }

    /// The child of split `node` that `x` goes to.
    #[inline(always)]
    fn step(&self, node: Node, x: &[f64]) -> u32 {
        let v = x[(node.feature & FEATURE) as usize];
        let left = if node.feature & CATEGORICAL != 0 {
            if v.is_nan() {
                node.feature & DEFAULT_LEFT != 0
            } else {
                self.categorical_goes_left(node, v)
            }
        } else {
            // Without branches: `x <= NaN` is false, so a leaf goes "right", to itself.
            (v <= node.threshold) | (v.is_nan() & (node.feature & DEFAULT_LEFT != 0))
        };
        node.next.wrapping_add(u32::from(!left))
    }

    /// Calls `f(tree, value index)` for each tree's leaf, in tree order.
    #[inline(always)]
    fn for_each_leaf(&self, x: &[f64], mut f: impl FnMut(usize, usize)) {
        let roots = self.roots.chunks_exact(LANES);
        let depths = self.depths.chunks_exact(LANES);
        let (rest_roots, rest_depths) = (roots.remainder(), depths.remainder());
        let mut t = 0;
        for (r, d) in roots.zip(depths) {
            let steps = d.iter().copied().max().unwrap_or(0);
            let shallowest = d.iter().copied().min().unwrap_or(0);
            if steps - shallowest <= MAX_DEPTH_SPREAD {
                let roots: [u32; LANES] = r.try_into().expect("chunks of LANES");
                for leaf in self.leaves(roots, steps, x) {
                    f(t, leaf);
                    t += 1;
                }
            } else {
                // Unbalanced trees (LightGBM's grow leaf by leaf): walking them together would
                // take the deepest one's steps for all, so each walks until its leaf.
                for &root in r {
                    f(t, self.leaf(root, x));
                    t += 1;
                }
            }
        }
        for (&r, &d) in rest_roots.iter().zip(rest_depths) {
            let [leaf] = self.leaves([r], d, x);
            f(t, leaf);
            t += 1;
        }
    }

    /// Scores features already scaled and, for `f32` models, rounded. `sums` holds one number
    /// per output.
    pub(super) fn predict(&self, x: &[f64], sums: &mut [f64]) -> Result<Prediction, Error> {
        sums.copy_from_slice(&self.base);
        if self.accumulation == Accumulation::F32 {
            return self.predict_f32(x, sums);
        }
        if let [sum] = sums {
            self.for_each_leaf(x, |_, leaf| *sum += self.values[leaf]);
        } else {
            self.for_each_leaf(x, |t, leaf| {
                sums[self.outputs[t] as usize] += self.values[leaf];
            });
        }
        match self.link {
            Link::Identity => value(sums[0]),
            Link::Logistic => {
                let p = expit(sums[0]);
                classify(vec![1.0 - p, p])
            }
            Link::Softmax => {
                softmax_in_place(sums);
                classify(sums.to_vec())
            }
        }
    }

    /// [`Boosted::predict`] with outputs accumulated, and the link computed, in `f32`.
    fn predict_f32(&self, x: &[f64], sums: &mut [f64]) -> Result<Prediction, Error> {
        const SMALL: usize = 16;
        let mut small = [0f32; SMALL];
        let mut large = Vec::new();
        let acc: &mut [f32] = if sums.len() <= SMALL {
            &mut small[..sums.len()]
        } else {
            large.resize(sums.len(), 0f32);
            &mut large
        };
        for (a, &b) in acc.iter_mut().zip(sums.iter()) {
            // Checked at build: the base score is an f32 value.
            *a = b as f32;
        }
        // Checked at build: leaf values are f32 values.
        self.for_each_leaf(x, |t, leaf| {
            acc[self.outputs[t] as usize] += self.values[leaf] as f32;
        });
        match self.link {
            Link::Identity => value(f64::from(acc[0])),
            Link::Logistic => {
                // XGBoost's sigmoid: the exponent capped against overflow, and an epsilon that
                // never changes a sum of at least 1 but is kept for the same rounding.
                let denom = (-acc[0]).min(88.7f32).exp() + 1.0f32 + 1e-16f32;
                let p = 1.0f32 / denom;
                classify(vec![f64::from(1.0f32 - p), f64::from(p)])
            }
            Link::Softmax => {
                let max = acc.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0f64;
                for a in acc.iter_mut() {
                    *a = (*a - max).exp();
                    sum += f64::from(*a);
                }
                let sum = sum as f32;
                classify(acc.iter().map(|&a| f64::from(a / sum)).collect())
            }
        }
    }
}

fn value(y: f64) -> Result<Prediction, Error> {
    if y.is_finite() {
        Ok(Prediction::Value(y))
    } else {
        Err(Error::NonFiniteOutput)
    }
}

/// Checks `known_categories`: one (possibly empty) bitset per feature.
fn check_known(known: Option<&[Vec<u32>]>, n_features: usize) -> Result<Vec<Vec<u32>>, Error> {
    let Some(known) = known else {
        return Ok(Vec::new());
    };
    if known.len() != n_features {
        return Err(invalid(format!(
            "boosted_trees known_categories has {} entries but the model has {n_features} \
             features",
            known.len()
        )));
    }
    for (f, bits) in known.iter().enumerate() {
        if bits.len() > MAX_BITSET_WORDS {
            return Err(invalid(format!(
                "known_categories[{f}] has {} words, more than the limit of {MAX_BITSET_WORDS}",
                bits.len()
            )));
        }
    }
    Ok(known.to_vec())
}

/// Checks one tree's arrays and shape; `t` is its index for messages.
fn check_tree(
    tree: &BoostedTreeSpec,
    t: usize,
    n_features: usize,
    n_outputs: usize,
    f32_values: bool,
) -> Result<(), Error> {
    if tree.output as usize >= n_outputs {
        return Err(invalid(format!(
            "tree {t} adds to output {} but the model has {n_outputs} output{} (one per class \
             with softmax, one otherwise)",
            tree.output,
            if n_outputs == 1 { "" } else { "s" }
        )));
    }
    let n = tree.feature.len();
    if n == 0 {
        return Err(invalid(format!("tree {t} has no nodes")));
    }
    let optional = [
        ("default_left", tree.default_left.as_ref().map(Vec::len)),
        ("categories", tree.categories.as_ref().map(Vec::len)),
    ];
    for (name, len) in [
        ("threshold", Some(tree.threshold.len())),
        ("left", Some(tree.left.len())),
        ("right", Some(tree.right.len())),
        ("value", Some(tree.value.len())),
    ]
    .into_iter()
    .chain(optional)
    {
        if let Some(len) = len.filter(|&len| len != n) {
            return Err(invalid(format!(
                "tree {t}: {name} has {len} entries but feature has {n}"
            )));
        }
    }
    for i in 0..n {
        let (left, right) = (tree.left[i], tree.right[i]);
        let bits = tree.categories.as_ref().map_or(&[][..], |c| &c[i][..]);
        match (left == -1, right == -1) {
            (true, true) => {
                let v = tree.value[i];
                check_finite(v, || format!("tree {t} node {i}: value"))?;
                if f32_values && f64::from(v as f32) != v {
                    return Err(invalid(format!(
                        "tree {t} node {i}: value {v} is not an f32 value, as an f32 model's \
                         must be"
                    )));
                }
                if !bits.is_empty() {
                    return Err(invalid(format!(
                        "tree {t} node {i}: a leaf has a category bitset"
                    )));
                }
            }
            (true, false) | (false, true) => {
                return Err(invalid(format!(
                    "tree {t} node {i}: left child is {left} but right child is {right}; a leaf \
                     has both children -1 and a split neither"
                )));
            }
            (false, false) => {
                for (side, c) in [("left", left), ("right", right)] {
                    if c < 0 || c as u64 >= n as u64 {
                        return Err(invalid(format!(
                            "tree {t} node {i}: {side} child {c} is out of range (the tree has \
                             {n} nodes)"
                        )));
                    }
                }
                let f = tree.feature[i];
                if f < 0 || f as u64 >= n_features as u64 {
                    return Err(invalid(format!(
                        "tree {t} node {i}: split feature {f} is out of range (the model has \
                         {n_features} features)"
                    )));
                }
                if bits.is_empty() {
                    check_finite(tree.threshold[i], || {
                        format!("tree {t} node {i}: threshold")
                    })?;
                } else if bits.len() > MAX_BITSET_WORDS {
                    return Err(invalid(format!(
                        "tree {t} node {i}: category bitset has {} words, more than the limit \
                         of {MAX_BITSET_WORDS}",
                        bits.len()
                    )));
                }
            }
        }
    }
    check_shape(&tree.left, &tree.right, t)
}

/// The `f64` threshold `t'` with `x <= t'` exactly when the spec's rule holds, for every
/// feature value `x` of the model's precision.
fn node_threshold(t: f64, precision: ThresholdPrecision, rule: SplitRule) -> f64 {
    match (precision, rule) {
        (ThresholdPrecision::F64, SplitRule::LessOrEqual) => t,
        // The largest double below `t` (`f64::next_down` needs a newer Rust).
        (ThresholdPrecision::F64, SplitRule::Less) => {
            if t == 0.0 {
                -f64::from_bits(1)
            } else if t > 0.0 {
                f64::from_bits(t.to_bits() - 1)
            } else {
                f64::from_bits(t.to_bits() + 1)
            }
        }
        (ThresholdPrecision::F32, SplitRule::LessOrEqual) => f64::from(f32_floor(t)),
        (ThresholdPrecision::F32, SplitRule::Less) => {
            let floor = f32_floor(t);
            if f64::from(floor) == t {
                f64::from(next_below(floor))
            } else {
                f64::from(floor)
            }
        }
    }
}

/// A model being laid out.
struct Layout {
    nodes: Vec<Node>,
    roots: Vec<u32>,
    depths: Vec<u32>,
    values: Vec<f64>,
    words: Vec<u32>,
    categorical: Vec<CategoricalSplit>,
    /// Per feature, its known categories in `words` (empty when the spec gives none).
    known: Vec<(u32, u32)>,
}

fn too_big() -> Error {
    invalid("boosted_trees has more than 4294967295 nodes, leaves or bitset words")
}

fn slot(n: usize) -> Result<u32, Error> {
    u32::try_from(n).map_err(|_| too_big())
}

impl Layout {
    fn push_words(&mut self, bits: &[u32]) -> Result<(u32, u32), Error> {
        let start = slot(self.words.len())?;
        slot(self.words.len() + bits.len())?;
        self.words.extend_from_slice(bits);
        Ok((start, bits.len() as u32))
    }

    /// Appends a checked tree breadth-first; unreachable nodes are dropped.
    fn push_tree(
        &mut self,
        tree: &BoostedTreeSpec,
        precision: ThresholdPrecision,
        rule: SplitRule,
    ) -> Result<(), Error> {
        let root = slot(self.nodes.len())?;
        self.roots.push(root);
        let placeholder = Node {
            threshold: 0.0,
            feature: 0,
            next: 0,
        };
        self.nodes.push(placeholder);
        let mut depth = 0;
        // (node id in the spec, slot in `nodes`, splits above it)
        let mut queue = VecDeque::from([(0usize, root as usize, 0u32)]);
        while let Some((id, at, above)) = queue.pop_front() {
            let (left, right) = (tree.left[id], tree.right[id]);
            self.nodes[at] = if left == -1 {
                depth = depth.max(above);
                if self.values.len() >= MAX_LEAVES {
                    return Err(too_big());
                }
                let number = self.values.len() as u32;
                self.values.push(tree.value[id]);
                Node {
                    threshold: leaf_threshold(number),
                    feature: 0,
                    next: (at as u32).wrapping_sub(1),
                }
            } else {
                let next = self.nodes.len();
                slot(next + 1)?;
                self.nodes.extend([placeholder, placeholder]);
                // Checked: in range and non-negative.
                queue.push_back((left as usize, next, above + 1));
                queue.push_back((right as usize, next + 1, above + 1));
                let feature = tree.feature[id] as u32;
                let mut flags = feature;
                if tree.default_left.as_ref().is_some_and(|d| d[id]) {
                    flags |= DEFAULT_LEFT;
                }
                let bits = tree.categories.as_ref().map_or(&[][..], |c| &c[id][..]);
                let threshold = if bits.is_empty() {
                    node_threshold(tree.threshold[id], precision, rule)
                } else {
                    flags |= CATEGORICAL;
                    let index = self.categorical.len();
                    if index >= MAX_CATEGORICAL_SPLITS {
                        return Err(too_big());
                    }
                    let left = self.push_words(bits)?;
                    let known = self.known.get(feature as usize).copied().unwrap_or((0, 0));
                    self.categorical.push(CategoricalSplit { left, known });
                    index as f64
                };
                Node {
                    threshold,
                    feature: flags,
                    next: next as u32,
                }
            };
        }
        self.depths.push(depth);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::model::{spec::*, testing::*, Error, Prediction};

    /// A boosted tree from `(feature, threshold, left, right, value)` nodes.
    fn btree(nodes: &[(i64, f64, i64, i64, f64)]) -> BoostedTreeSpec {
        BoostedTreeSpec {
            output: 0,
            feature: nodes.iter().map(|n| n.0).collect(),
            threshold: nodes.iter().map(|n| n.1).collect(),
            left: nodes.iter().map(|n| n.2).collect(),
            right: nodes.iter().map(|n| n.3).collect(),
            value: nodes.iter().map(|n| n.4).collect(),
            default_left: None,
            categories: None,
        }
    }

    fn bsplit(f: i64, t: f64, l: i64, r: i64) -> (i64, f64, i64, i64, f64) {
        (f, t, l, r, 0.0)
    }

    fn bleaf(v: f64) -> (i64, f64, i64, i64, f64) {
        (-2, -2.0, -1, -1, v)
    }

    fn params(trees: Vec<BoostedTreeSpec>, base: &[f64], link: &str) -> ParamsSpec {
        ParamsSpec::BoostedTrees(BoostedTreesSpec {
            trees,
            base_score: base.to_vec(),
            link: link.into(),
            threshold_precision: ThresholdPrecision::F64,
            accumulation: Accumulation::F64,
            split: SplitRule::LessOrEqual,
            known_categories: None,
        })
    }

    fn boosted(s: &mut crate::model::ModelSpec) -> &mut BoostedTreesSpec {
        match &mut s.model {
            ParamsSpec::BoostedTrees(b) => b,
            _ => unreachable!(),
        }
    }

    fn stump(f: i64, t: f64, l: f64, r: f64) -> BoostedTreeSpec {
        btree(&[bsplit(f, t, 1, 2), bleaf(l), bleaf(r)])
    }

    #[test]
    fn regression_adds_leaves_to_the_base_in_tree_order() {
        let trees = vec![stump(0, 1.0, 0.1, 0.2), stump(1, 0.0, 0.3, 0.4)];
        let m = spec(2, params(trees, &[0.5], "identity"), OutputSpec::Regression)
            .build()
            .unwrap();
        assert_eq!(m.kind_name(), "boosted_trees");
        assert_eq!(
            m.predict(&[1.0, 0.0]).unwrap(),
            Prediction::Value(0.5 + 0.1 + 0.3)
        );
        assert_eq!(
            m.predict(&[1.5, 2.0]).unwrap(),
            Prediction::Value(0.5 + 0.2 + 0.4)
        );
        // Without default directions, a missing value is refused.
        assert!(!m.handles_missing());
        assert!(matches!(
            m.predict(&[f64::NAN, 0.0]),
            Err(Error::NonFiniteFeature(_))
        ));
    }

    #[test]
    fn the_split_rule_decides_values_equal_to_the_threshold() {
        for precision in [ThresholdPrecision::F64, ThresholdPrecision::F32] {
            let mut s = spec(
                1,
                params(vec![stump(0, 0.5, -1.0, 1.0)], &[0.0], "identity"),
                OutputSpec::Regression,
            );
            boosted(&mut s).threshold_precision = precision;
            let m = s.clone().build().unwrap();
            assert_eq!(m.predict(&[0.5]).unwrap(), Prediction::Value(-1.0));
            boosted(&mut s).split = SplitRule::Less;
            let m = s.build().unwrap();
            assert_eq!(m.predict(&[0.5]).unwrap(), Prediction::Value(1.0));
            assert_eq!(
                m.predict(&[0.499_999_9]).unwrap(),
                Prediction::Value(-1.0),
                "{precision:?}"
            );
        }
    }

    #[test]
    fn missing_values_take_the_default_direction() {
        let mut t = stump(0, 1.0, 10.0, 20.0);
        let mut u = stump(1, 1.0, 1.0, 2.0);
        t.default_left = Some(vec![true, false, false]);
        u.default_left = Some(vec![false, false, false]);
        let m = spec(
            2,
            params(vec![t, u], &[0.0], "identity"),
            OutputSpec::Regression,
        )
        .build()
        .unwrap();
        assert!(m.handles_missing());
        assert_eq!(
            m.predict(&[f64::NAN, f64::NAN]).unwrap(),
            Prediction::Value(12.0)
        );
        assert_eq!(
            m.predict(&[5.0, f64::NAN]).unwrap(),
            Prediction::Value(22.0)
        );
        // Infinities are still refused.
        assert!(matches!(
            m.predict(&[f64::INFINITY, 0.0]),
            Err(Error::NonFiniteFeature(_))
        ));
    }

    #[test]
    fn categorical_splits_read_the_category_bitset() {
        // Categories 1 and 33 go left; 0..40 known, except 5; missing goes right.
        let mut t = btree(&[bsplit(0, 0.0, 1, 2), bleaf(-1.0), bleaf(1.0)]);
        t.categories = Some(vec![vec![0b10, 0b10], vec![], vec![]]);
        t.default_left = Some(vec![false; 3]);
        let mut s = spec(
            1,
            params(vec![t], &[0.0], "identity"),
            OutputSpec::Regression,
        );
        let m = s.clone().build().unwrap();
        for (x, want) in [
            (1.0, -1.0),
            (1.7, -1.0),
            (33.0, -1.0),
            (0.0, 1.0),
            (2.0, 1.0),
            (64.0, 1.0),
            (1e300, 1.0),
            (-1.0, 1.0),
            (f64::NAN, 1.0),
        ] {
            assert_eq!(m.predict(&[x]).unwrap(), Prediction::Value(want), "{x}");
        }
        // Unknown categories and negative values take the default direction, here left.
        boosted(&mut s).trees[0].default_left = Some(vec![true, false, false]);
        boosted(&mut s).known_categories = Some(vec![vec![!(1 << 5), 0xff]]);
        let m = s.build().unwrap();
        for (x, want) in [
            (5.0, -1.0),
            (2.0, 1.0),
            (39.0, 1.0),
            (40.0, -1.0),
            (-0.5, -1.0),
            (f64::NAN, -1.0),
        ] {
            assert_eq!(m.predict(&[x]).unwrap(), Prediction::Value(want), "{x}");
        }
    }

    #[test]
    fn a_categorical_split_may_send_only_missing_values_left() {
        // scikit-learn learns such splits: no category goes left, missing and unknown ones do.
        let mut t = btree(&[bsplit(0, 0.0, 1, 2), bleaf(-1.0), bleaf(1.0)]);
        t.categories = Some(vec![vec![0], vec![], vec![]]);
        t.default_left = Some(vec![true, false, false]);
        let mut s = spec(
            1,
            params(vec![t], &[0.0], "identity"),
            OutputSpec::Regression,
        );
        boosted(&mut s).known_categories = Some(vec![vec![0b111]]);
        let m = s.build().unwrap();
        for (x, want) in [(0.0, 1.0), (2.0, 1.0), (3.0, -1.0), (f64::NAN, -1.0)] {
            assert_eq!(m.predict(&[x]).unwrap(), Prediction::Value(want), "{x}");
        }
    }

    #[test]
    fn logistic_and_softmax_links() {
        let m = spec(
            1,
            params(vec![stump(0, 0.0, -0.5, 0.75)], &[0.25], "logistic"),
            classes(&["no", "yes"]),
        )
        .build()
        .unwrap();
        let p = super::expit(0.25 + 0.75);
        assert_eq!(
            m.predict(&[1.0]).unwrap(),
            Prediction::Class {
                index: 1,
                probabilities: vec![1.0 - p, p]
            }
        );
        let mut trees = vec![
            stump(0, 0.0, 1.0, -1.0),
            stump(0, 0.0, -1.0, 1.0),
            stump(0, 0.0, 0.5, 0.5),
        ];
        for (k, t) in trees.iter_mut().enumerate() {
            t.output = k as u32;
        }
        let m = spec(
            1,
            params(trees, &[0.0, 0.1, 0.2], "softmax"),
            classes(&["a", "b", "c"]),
        )
        .build()
        .unwrap();
        let mut z = [1.0, -0.9, 0.7];
        super::softmax_in_place(&mut z);
        assert_eq!(
            m.predict(&[-1.0]).unwrap(),
            Prediction::Class {
                index: 0,
                probabilities: z.to_vec()
            }
        );
    }

    #[test]
    fn trees_of_any_depths_are_summed_in_tree_order() {
        // Chains of depth k (split x <= i, left leaf i, right to the next split) next to
        // stumps, so groups of four trees have both close and far-apart depths.
        let chain = |k: i64| {
            let mut nodes = Vec::new();
            for i in 0..k {
                nodes.push(bsplit(0, i as f64, 2 * i + 1, 2 * i + 2));
                nodes.push(bleaf(i as f64));
            }
            nodes.push(bleaf(100.0));
            btree(&nodes)
        };
        let trees: Vec<_> = [0, 1, 9, 2, 1, 1, 2, 3, 12]
            .into_iter()
            .map(chain)
            .collect();
        let m = spec(1, params(trees, &[0.5], "identity"), OutputSpec::Regression)
            .build()
            .unwrap();
        for x in [-1.0, 0.5, 1.5, 5.5, 50.0] {
            let want = [0, 1, 9, 2, 1, 1, 2, 3, 12].iter().fold(0.5, |sum, &k| {
                // The first i >= x with i < k, else the right-most leaf.
                sum + (0..k).map(f64::from).find(|&i| x <= i).unwrap_or(100.0)
            });
            assert_eq!(m.predict(&[x]).unwrap(), Prediction::Value(want), "{x}");
        }
    }

    #[test]
    fn f32_models_accumulate_in_f32() {
        // 0.1f32 + 0.2f32 + 0.3f32 in f32 differs from the same sum in f64.
        let vals = [0.1f32, 0.2f32, 0.3f32];
        let trees: Vec<_> = vals
            .iter()
            .map(|&v| btree(&[bleaf(f64::from(v))]))
            .collect();
        let mut s = spec(1, params(trees, &[0.0], "identity"), OutputSpec::Regression);
        boosted(&mut s).accumulation = Accumulation::F32;
        let m = s.build().unwrap();
        let want = f64::from(0.0f32 + vals[0] + vals[1] + vals[2]);
        assert_ne!(
            want,
            0.0 + f64::from(vals[0]) + f64::from(vals[1]) + f64::from(vals[2])
        );
        assert_eq!(m.predict(&[0.0]).unwrap(), Prediction::Value(want));
    }

    #[test]
    fn rejects_inconsistent_models() {
        let ok = || {
            spec(
                2,
                params(vec![stump(0, 1.0, 0.0, 1.0)], &[0.0], "identity"),
                OutputSpec::Regression,
            )
        };
        let mut s = ok();
        boosted(&mut s).link = "log".into();
        assert_eq!(
            invalid_msg(&s),
            "boosted_trees link 'log' is not supported; use identity, logistic or softmax"
        );
        let mut s = ok();
        boosted(&mut s).base_score = vec![0.0, 1.0];
        assert!(invalid_msg(&s).starts_with("boosted_trees base_score has 2 entries"));
        let mut s = ok();
        s.output = classes(&["a", "b", "c"]);
        boosted(&mut s).link = "logistic".into();
        assert!(invalid_msg(&s).contains("logistic scores 2 classes but the output has 3"));
        boosted(&mut s).link = "softmax".into();
        boosted(&mut s).base_score = vec![0.0; 3];
        boosted(&mut s).trees[0].output = 3;
        assert!(invalid_msg(&s).starts_with("tree 0 adds to output 3 but the model has 3 outputs"));
        let mut s = ok();
        boosted(&mut s).trees[0].left[0] = 7;
        assert_eq!(
            invalid_msg(&s),
            "tree 0 node 0: left child 7 is out of range (the tree has 3 nodes)"
        );
        let mut s = ok();
        boosted(&mut s).trees[0].right[0] = 0;
        assert_eq!(invalid_msg(&s), "tree 0 has a cycle through node 0");
        let mut s = ok();
        boosted(&mut s).trees[0].categories = Some(vec![vec![0; 1 << 15 | 1], vec![], vec![]]);
        assert_eq!(
            invalid_msg(&s),
            "tree 0 node 0: category bitset has 32769 words, more than the limit of 32768"
        );
        boosted(&mut s).trees[0].categories = Some(vec![vec![1], vec![1], vec![]]);
        assert_eq!(
            invalid_msg(&s),
            "tree 0 node 1: a leaf has a category bitset"
        );
        boosted(&mut s).trees[0].categories = Some(vec![vec![1], vec![]]);
        assert_eq!(
            invalid_msg(&s),
            "tree 0: categories has 2 entries but feature has 3"
        );
        let mut s = ok();
        boosted(&mut s).known_categories = Some(vec![vec![1]]);
        assert!(invalid_msg(&s).contains("known_categories has 1 entries"));
        let mut s = ok();
        boosted(&mut s).accumulation = Accumulation::F32;
        boosted(&mut s).trees[0].value[1] = 0.1;
        assert!(invalid_msg(&s).contains("value 0.1 is not an f32 value"));
        let mut s = ok();
        boosted(&mut s).trees[0].value[2] = f64::NAN;
        assert_eq!(invalid_msg(&s), "tree 0 node 2: value is NaN");
    }
}
