//! Random forests of flat-array decision trees.
//!
//! At build time every tree is checked (children in range, no cycle, no node with two parents;
//! all iteratively, so depth is unbounded) and re-laid out breadth-first into one packed array
//! shared by all trees, with the two children of a split in adjacent slots. A node is a
//! threshold, a feature index and a child index: 16 bytes with `f64` thresholds, 12 with `f32`
//! ones (forests whose features are rounded to `f32`, as scikit-learn's are).
//!
//! A leaf's threshold is a NaN whose payload is the leaf's number (its values are at
//! `number * width` in a separate flat array), and its child index is its own index minus one:
//! no feature is ever `<=` a NaN, so a step from a leaf goes "right", back to the leaf itself.
//! That lets scoring walk [`LANES`] trees in lockstep for each tree's depth, overlapping their
//! memory latencies, without a leaf test in the loop and without a per-node side array.
//!
//! Scoring follows scikit-learn exactly: a record goes left when `x[feature] <= threshold`
//! (with the feature first rounded to `f32` for `f32` forests, done once per record before
//! scoring); the forest's output is the sum of the trees' leaf values in tree order, divided
//! by the number of trees. An `f32` node keeps the largest `f32` not above the spec's `f64`
//! threshold: for a feature that is itself an `f32` value, `x <= t` and `x <= that` always
//! agree, so the smaller node changes no prediction.

use std::collections::VecDeque;

use super::{
    build::{check_finite, invalid},
    score::classify,
    spec::{ThresholdPrecision, TreeSpec},
    Error, Output, Prediction,
};

/// Trees walked together.
const LANES: usize = 4;

/// A node's threshold type: `f64`, or `f32` for forests whose features are rounded to `f32`.
trait Threshold: Copy + std::fmt::Debug {
    /// The largest leaf number a NaN of this type can carry, plus one.
    const LEAVES: u64;
    /// A leaf numbered `n` (less than [`Threshold::LEAVES`]).
    fn leaf(n: u64) -> Self;
    /// The number of a leaf made by [`Threshold::leaf`].
    fn leaf_number(self) -> usize;
    /// Whether `x` goes left: `x <= threshold`; never at a leaf.
    fn goes_left(x: f64, threshold: Self) -> bool;
}

impl Threshold for f64 {
    const LEAVES: u64 = 1 << 32;
    fn leaf(n: u64) -> Self {
        f64::from_bits(0x7ff8_0000_0000_0000 | n)
    }
    fn leaf_number(self) -> usize {
        (self.to_bits() & 0xffff_ffff) as usize
    }
    #[inline(always)]
    fn goes_left(x: f64, threshold: Self) -> bool {
        x <= threshold
    }
}

impl Threshold for f32 {
    /// A quiet `f32` NaN has 22 payload bits.
    const LEAVES: u64 = 1 << 22;
    fn leaf(n: u64) -> Self {
        f32::from_bits(0x7fc0_0000 | n as u32)
    }
    fn leaf_number(self) -> usize {
        (self.to_bits() & 0x003f_ffff) as usize
    }
    #[inline(always)]
    fn goes_left(x: f64, threshold: Self) -> bool {
        x <= f64::from(threshold)
    }
}

/// The largest `f32` not above `t`: for every `f32` value `x`, `x <= t` exactly when
/// `x <= f32_floor(t)`.
pub(super) fn f32_floor(t: f64) -> f32 {
    let near = t as f32;
    if f64::from(near) > t {
        next_below(near)
    } else {
        near
    }
}

/// The next `f32` below `x`, for `x` above `-inf` and not NaN (`f32::next_down` needs a newer
/// Rust than the crate's minimum).
pub(super) fn next_below(x: f32) -> f32 {
    if x == 0.0 {
        -f32::from_bits(1)
    } else if x > 0.0 {
        f32::from_bits(x.to_bits() - 1)
    } else {
        f32::from_bits(x.to_bits() + 1)
    }
}

/// One packed node.
#[derive(Debug, Clone, Copy)]
struct Node<T> {
    /// Go left when `x[feature] <= threshold`; a NaN carrying the leaf number at a leaf.
    threshold: T,
    /// Feature index of a split; 0 at a leaf (every model has a feature 0).
    feature: u32,
    /// A split's left child (its right child is `next + 1`); a leaf's own index minus one
    /// (wrapping).
    next: u32,
}

/// The nodes of every tree, with thresholds of one type.
#[derive(Debug, Clone)]
enum Nodes {
    F64(Vec<Node<f64>>),
    F32(Vec<Node<f32>>),
}

#[derive(Debug, Clone)]
pub(super) struct Forest {
    nodes: Nodes,
    /// Index in `nodes` of each tree's root, in tree order.
    roots: Vec<u32>,
    /// Per tree: the most splits on a path from its root to a leaf.
    depths: Vec<u32>,
    /// Leaf values, `width` per leaf, leaves numbered in layout order.
    values: Vec<f64>,
    /// 1 for regression, the class count for classification.
    width: usize,
    classification: bool,
    precision: ThresholdPrecision,
}

impl Forest {
    /// Heap bytes held.
    pub(super) fn heap_bytes(&self) -> usize {
        use super::vec_bytes;
        let nodes = match &self.nodes {
            Nodes::F64(n) => vec_bytes(n),
            Nodes::F32(n) => vec_bytes(n),
        };
        nodes + vec_bytes(&self.roots) + vec_bytes(&self.depths) + vec_bytes(&self.values)
    }

    pub(super) fn build(
        trees: &[TreeSpec],
        precision: ThresholdPrecision,
        n_features: usize,
        output: &Output,
    ) -> Result<Self, Error> {
        if trees.is_empty() {
            return Err(invalid("random_forest has no trees"));
        }
        let width = match output {
            Output::Regression => 1,
            Output::Classification(classes) => classes.len(),
        };
        let mut layout = Layout {
            nodes: Vec::new(),
            roots: Vec::with_capacity(trees.len()),
            depths: Vec::with_capacity(trees.len()),
            values: Vec::new(),
            leaves: 0,
        };
        for (t, tree) in trees.iter().enumerate() {
            check_tree(tree, t, n_features, width)?;
            layout.push_tree(tree)?;
        }
        let Layout {
            mut nodes,
            roots,
            depths,
            mut values,
            leaves,
        } = layout;
        values.shrink_to_fit();
        let nodes = if precision == ThresholdPrecision::F32 && leaves < f32::LEAVES {
            Nodes::F32(
                nodes
                    .iter()
                    .map(|n| Node {
                        threshold: if n.threshold.is_nan() {
                            f32::leaf(n.threshold.leaf_number() as u64)
                        } else {
                            f32_floor(n.threshold)
                        },
                        feature: n.feature,
                        next: n.next,
                    })
                    .collect(),
            )
        } else {
            nodes.shrink_to_fit();
            Nodes::F64(nodes)
        };
        Ok(Forest {
            nodes,
            roots,
            depths,
            values,
            width,
            classification: matches!(output, Output::Classification(_)),
            precision,
        })
    }

    pub(super) fn rounds_to_f32(&self) -> bool {
        self.precision == ThresholdPrecision::F32
    }

    /// Calls `f` with the offset in `values` of each tree's leaf, in tree order.
    #[inline]
    fn for_each_leaf(&self, x: &[f64], f: impl FnMut(usize)) {
        match &self.nodes {
            Nodes::F64(nodes) => self.walk(nodes, x, f),
            Nodes::F32(nodes) => self.walk(nodes, x, f),
        }
    }

    #[inline]
    fn walk<T: Threshold>(&self, nodes: &[Node<T>], x: &[f64], mut f: impl FnMut(usize)) {
        let width = self.width;
        let roots = self.roots.chunks_exact(LANES);
        let depths = self.depths.chunks_exact(LANES);
        let (rest_roots, rest_depths) = (roots.remainder(), depths.remainder());
        for (r, d) in roots.zip(depths) {
            let steps = d.iter().copied().max().unwrap_or(0);
            let roots: [u32; LANES] = r.try_into().expect("chunks of LANES");
            leaves(nodes, roots, steps, x)
                .into_iter()
                .for_each(|leaf| f(leaf * width));
        }
        for (&r, &d) in rest_roots.iter().zip(rest_depths) {
            let [leaf] = leaves(nodes, [r], d, x);
            f(leaf * width);
        }
    }

    /// Scores features already scaled and, for `f32` forests, rounded.
    pub(super) fn predict(&self, x: &[f64]) -> Result<Prediction, Error> {
        let n_trees = self.roots.len() as f64;
        if !self.classification {
            let mut sum = 0.0;
            self.for_each_leaf(x, |at| sum += self.values[at]);
            let y = sum / n_trees;
            return if y.is_finite() {
                Ok(Prediction::Value(y))
            } else {
                Err(Error::NonFiniteOutput)
            };
        }
        let mut p = vec![0.0; self.width];
        self.for_each_leaf(x, |at| {
            for (p, v) in p.iter_mut().zip(&self.values[at..at + self.width]) {
                *p += v;
            }
        });
        for p in &mut p {
            *p /= n_trees;
        }
        classify(p)
    }
}

/// Walks `L` trees together from their roots for `steps` steps (their greatest depth) and
/// returns the numbers of the leaves `x` reaches.
#[inline]
fn leaves<T: Threshold, const L: usize>(
    nodes: &[Node<T>],
    roots: [u32; L],
    steps: u32,
    x: &[f64],
) -> [usize; L] {
    let mut at = roots;
    for _ in 0..steps {
        for a in &mut at {
            let node = nodes[*a as usize];
            let left = T::goes_left(x[node.feature as usize], node.threshold);
            *a = node.next.wrapping_add(u32::from(!left));
        }
    }
    at.map(|a| nodes[a as usize].threshold.leaf_number())
}

/// A forest being laid out, with `f64` thresholds.
struct Layout {
    nodes: Vec<Node<f64>>,
    roots: Vec<u32>,
    depths: Vec<u32>,
    values: Vec<f64>,
    /// Leaves laid out so far.
    leaves: u64,
}

impl Layout {
    /// Appends a checked tree breadth-first; unreachable nodes are dropped.
    fn push_tree(&mut self, tree: &TreeSpec) -> Result<(), Error> {
        let too_big = || invalid("random_forest has more than 4294967295 nodes or leaves");
        let slot = |n: usize| u32::try_from(n).map_err(|_| too_big());
        let root = slot(self.nodes.len())?;
        self.roots.push(root);
        let placeholder = Node {
            threshold: f64::INFINITY,
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
                if self.leaves >= f64::LEAVES {
                    return Err(too_big());
                }
                let number = self.leaves;
                self.leaves += 1;
                self.values.extend_from_slice(&tree.value[id]);
                Node {
                    threshold: f64::leaf(number),
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
                Node {
                    threshold: tree.threshold[id],
                    feature: tree.feature[id] as u32,
                    next: next as u32,
                }
            };
        }
        self.depths.push(depth);
        Ok(())
    }
}

/// Checks one tree's arrays and shape; `t` is its index for messages.
fn check_tree(tree: &TreeSpec, t: usize, n_features: usize, width: usize) -> Result<(), Error> {
    let n = tree.feature.len();
    if n == 0 {
        return Err(invalid(format!("tree {t} has no nodes")));
    }
    for (name, len) in [
        ("threshold", tree.threshold.len()),
        ("left", tree.left.len()),
        ("right", tree.right.len()),
        ("value", tree.value.len()),
    ] {
        if len != n {
            return Err(invalid(format!(
                "tree {t}: {name} has {len} entries but feature has {n}"
            )));
        }
    }
    for i in 0..n {
        let (left, right) = (tree.left[i], tree.right[i]);
        check_finite(tree.threshold[i], || {
            format!("tree {t} node {i}: threshold")
        })?;
        for (j, &v) in tree.value[i].iter().enumerate() {
            check_finite(v, || format!("tree {t} node {i}: value[{j}]"))?;
        }
        match (left == -1, right == -1) {
            (true, true) => {
                let got = tree.value[i].len();
                if got != width {
                    let expected = if width == 1 {
                        "a regression leaf has 1".to_string()
                    } else {
                        format!("the model has {width} classes")
                    };
                    return Err(invalid(format!(
                        "tree {t} node {i}: leaf value has {got} entries but {expected}"
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
            }
        }
    }
    check_shape(&tree.left, &tree.right, t)
}

/// Walks the tree of child arrays `left` and `right` (a leaf has `left == -1`) from its root
/// without recursion: every reachable node must be reached exactly once (no cycle, no shared
/// child). Children are already known to be in range.
pub(super) fn check_shape(left: &[i64], right: &[i64], t: usize) -> Result<(), Error> {
    const NONE: usize = usize::MAX;
    let n = left.len();
    let mut parent = vec![NONE; n];
    let mut seen = vec![false; n];
    seen[0] = true;
    let mut stack = vec![0usize];
    while let Some(i) = stack.pop() {
        if left[i] == -1 {
            continue;
        }
        for c in [left[i] as usize, right[i] as usize] {
            if !seen[c] {
                seen[c] = true;
                parent[c] = i;
                stack.push(c);
                continue;
            }
            // Reached again: a cycle if `c` is on the path from the root to `i`. Nodes seen so
            // far form a tree, so walking up the parents ends at the root.
            let mut up = i;
            while up != NONE && up != c {
                up = parent[up];
            }
            return Err(invalid(if up == c {
                format!("tree {t} has a cycle through node {c}")
            } else {
                format!(
                    "tree {t} node {c} is reached twice (from node {} and node {i}); each \
                     node needs exactly one parent",
                    parent[c]
                )
            }));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::model::{spec::*, testing::*, Error, Prediction};

    /// Tree 0 splits on f0 at 1; tree 1's nodes are deliberately not in breadth-first order.
    fn regression() -> crate::model::ModelSpec {
        let t0 = tree(&[split(0, 1.0, 1, 2), leaf(&[10.0]), leaf(&[20.0])]);
        let t1 = tree(&[
            split(1, 0.5, 3, 1),
            split(0, 3.0, 4, 2),
            leaf(&[4.0]),
            leaf(&[1.0]),
            leaf(&[2.0]),
        ]);
        spec(2, forest(vec![t0, t1]), OutputSpec::Regression)
    }

    #[test]
    fn regression_forest_averages_the_leaves() {
        let m = regression().build().unwrap();
        assert_eq!(m.kind_name(), "random_forest");
        // Tree 0: 1 <= 1 goes left (10). Tree 1: 2 > 0.5 right, 1 <= 3 left (2).
        assert_eq!(m.predict(&[1.0, 2.0]).unwrap(), Prediction::Value(6.0));
        // Tree 0: right (20). Tree 1: right, 3.5 > 3 right (4).
        assert_eq!(m.predict(&[3.5, 2.0]).unwrap(), Prediction::Value(12.0));
        // Tree 0: left (10). Tree 1: 0.5 <= 0.5 left (1).
        assert_eq!(m.predict(&[0.0, 0.5]).unwrap(), Prediction::Value(5.5));
    }

    #[test]
    fn regression_forest_sums_in_tree_order_then_divides() {
        // 0.1 + 0.2 + 0.3 in that order, then / 3, differs in the last bit from other orders.
        let trees = [0.1, 0.2, 0.3]
            .iter()
            .map(|&v| tree(&[leaf(&[v])]))
            .collect();
        let m = spec(1, forest(trees), OutputSpec::Regression)
            .build()
            .unwrap();
        let expected = (0.1 + 0.2 + 0.3) / 3.0;
        assert_ne!(expected, (0.3 + 0.2 + 0.1) / 3.0);
        assert_ne!(expected, 0.1 / 3.0 + 0.2 / 3.0 + 0.3 / 3.0);
        assert_eq!(m.predict(&[0.0]).unwrap(), Prediction::Value(expected));
    }

    #[test]
    fn trees_of_mixed_depths_walked_together() {
        // Trees k = 0..5 split f0 at k: left leaf k, right leaf 10k.
        let mut trees: Vec<_> = (0..5)
            .map(|k| {
                let k = k as f64;
                tree(&[split(0, k, 1, 2), leaf(&[k]), leaf(&[10.0 * k])])
            })
            .collect();
        trees.push(tree(&[leaf(&[5.0])]));
        trees.push(tree(&[
            split(0, 1.0, 1, 2),
            leaf(&[100.0]),
            split(0, 3.0, 3, 4),
            leaf(&[7.0]),
            leaf(&[8.0]),
        ]));
        trees.push(tree(&[leaf(&[1.0])]));
        trees.push(tree(&[leaf(&[4.0])]));
        let m = spec(1, forest(trees), OutputSpec::Regression)
            .build()
            .unwrap();
        // x = 2.5: 0 + 10 + 20 + 3 + 4, then 5, 7 (right then left), 1, 4: 54 over 9 trees.
        assert_eq!(m.predict(&[2.5]).unwrap(), Prediction::Value(6.0));
        // x = 9: 0 + 10 + 20 + 30 + 40 + 5 + 8 + 1 + 4 = 118.
        assert_eq!(m.predict(&[9.0]).unwrap(), Prediction::Value(118.0 / 9.0));
    }

    #[test]
    fn classifier_forest_averages_probabilities_and_ties_take_the_first() {
        let t0 = tree(&[
            split(0, 0.0, 1, 2),
            leaf(&[0.5, 0.5, 0.0]),
            leaf(&[1.0, 0.0, 0.0]),
        ]);
        let t1 = tree(&[leaf(&[0.0, 0.25, 0.75])]);
        let m = spec(1, forest(vec![t0, t1]), classes(&["a", "b", "c"]))
            .build()
            .unwrap();
        // [0.5, 0.5, 0] + [0, 0.25, 0.75] = [0.5, 0.75, 0.75], / 2: b and c tie, b wins.
        assert_eq!(
            m.predict(&[-1.0]).unwrap(),
            Prediction::Class {
                index: 1,
                probabilities: vec![0.25, 0.375, 0.375]
            }
        );
        // [1, 0, 0] + [0, 0.25, 0.75] = [1, 0.25, 0.75], / 2.
        assert_eq!(
            m.predict(&[1.0]).unwrap(),
            Prediction::Class {
                index: 0,
                probabilities: vec![0.5, 0.125, 0.375]
            }
        );
    }

    #[test]
    fn f32_precision_rounds_the_feature_before_comparing() {
        // 0.1 rounded to f32 is 0.100000001490116..., above the f64 threshold 0.1.
        assert!(f64::from(0.1f32) > 0.1);
        let t = tree(&[split(0, 0.1, 1, 2), leaf(&[-1.0]), leaf(&[1.0])]);
        let mut s = spec(1, forest(vec![t]), OutputSpec::Regression);
        assert_eq!(
            s.build().unwrap().predict(&[0.1]).unwrap(),
            Prediction::Value(-1.0)
        );
        let ParamsSpec::RandomForest {
            threshold_precision,
            ..
        } = &mut s.model
        else {
            unreachable!()
        };
        *threshold_precision = ThresholdPrecision::F32;
        assert_eq!(
            s.build().unwrap().predict(&[0.1]).unwrap(),
            Prediction::Value(1.0)
        );
    }

    #[test]
    fn f32_precision_rounds_after_scaling() {
        // Scaled: (0.3 - 0.2) / 1 = 0.09999999999999998, which rounds to f32 0.1 > 0.1 in f64.
        let scaled = (0.3f64 - 0.2) / 1.0;
        assert!(scaled <= 0.1 && f64::from(scaled as f32) > 0.1);
        let t = tree(&[split(0, 0.1, 1, 2), leaf(&[-1.0]), leaf(&[1.0])]);
        let mut s = spec(
            1,
            ParamsSpec::RandomForest {
                trees: vec![t],
                threshold_precision: ThresholdPrecision::F32,
            },
            OutputSpec::Regression,
        );
        s.scaler = Some(ScalerSpec {
            mean: vec![0.2],
            scale: vec![1.0],
        });
        assert_eq!(
            s.build().unwrap().predict(&[0.3]).unwrap(),
            Prediction::Value(1.0)
        );
    }

    #[test]
    fn f32_nodes_keep_every_comparison_of_an_f32_feature() {
        use super::{f32_floor, next_below, Threshold};
        let next_above = |x: f32| -next_below(-x);
        // Thresholds as scikit-learn makes them (midpoints of two f32 values, in f64), others
        // anywhere, and the f32 values around each: `x <= t` never changes.
        let mut rng = crate::synth::Xoshiro256StarStar::new(7);
        for i in 0..200_000 {
            let a = (rng.uniform() - 0.5) * 10f64.powi((i % 40) - 20);
            let a32 = a as f32;
            let t = if i % 2 == 0 {
                (f64::from(a32) + f64::from(next_above(a32))) / 2.0
            } else {
                a
            };
            let t32 = f32_floor(t);
            for x in [
                next_below(a32),
                a32,
                next_above(a32),
                next_above(next_above(a32)),
            ] {
                let x = f64::from(x);
                assert_eq!(x <= t, f32::goes_left(x, t32), "x {x:e} t {t:e}");
            }
        }
        for t in [f64::MAX, -f64::MAX, 1e39, -1e39] {
            let t32 = f32_floor(t);
            for x in [f32::MAX, -f32::MAX, 0.0, f32::INFINITY, f32::NEG_INFINITY] {
                let x = f64::from(x);
                assert_eq!(x <= t, f32::goes_left(x, t32), "x {x:e} t {t:e}");
            }
        }
        assert_eq!(std::mem::size_of::<super::Node<f32>>(), 12);
        assert_eq!(std::mem::size_of::<super::Node<f64>>(), 16);
        for n in [0, 1, (1 << 22) - 1] {
            assert_eq!(f32::leaf(n).leaf_number() as u64, n);
            assert!(!f32::goes_left(0.0, f32::leaf(n)));
        }
        for n in [0, 1, u64::from(u32::MAX)] {
            assert_eq!(f64::leaf(n).leaf_number() as u64, n);
        }
    }

    #[test]
    fn f32_forests_are_smaller_and_score_the_same() {
        let mut rng = crate::synth::Xoshiro256StarStar::new(11);
        // Full trees of depth 6 over 4 features, thresholds in f64 anywhere in [-2, 2).
        let trees = (0..20)
            .map(|_| {
                let splits = (1 << 6) - 1;
                let nodes: Vec<_> = (0..2 * splits + 1)
                    .map(|i| {
                        if i < splits {
                            let (f, t) = (rng.below(4) as i64, rng.range(-2.0, 2.0));
                            split(f, t, 2 * i + 1, 2 * i + 2)
                        } else {
                            leaf(&[rng.normal()])
                        }
                    })
                    .collect();
                tree(&nodes)
            })
            .collect::<Vec<_>>();
        let f64_spec = spec(4, forest(trees.clone()), OutputSpec::Regression);
        let mut f32_spec = f64_spec.clone();
        let ParamsSpec::RandomForest {
            threshold_precision,
            ..
        } = &mut f32_spec.model
        else {
            unreachable!()
        };
        *threshold_precision = ThresholdPrecision::F32;
        let (wide, narrow) = (f64_spec.build().unwrap(), f32_spec.build().unwrap());
        assert!(narrow.heap_bytes() < wide.heap_bytes() * 9 / 10);
        for _ in 0..5_000 {
            // Features already f32 values: the f64 forest then compares as scikit-learn does.
            let x: Vec<f64> = (0..4)
                .map(|_| f64::from((rng.uniform() * 4.0 - 2.0) as f32))
                .collect();
            assert_eq!(wide.predict(&x).unwrap(), narrow.predict(&x).unwrap());
        }
    }

    #[test]
    fn a_very_deep_tree_builds_and_scores_without_recursion() {
        // A chain: node 2i splits on f0 at i, left to a leaf of value i, right to node 2i+2.
        let depth = 100_000;
        let mut nodes = Vec::with_capacity(2 * depth + 1);
        for i in 0..depth as i64 {
            nodes.push(split(0, i as f64, 2 * i + 1, 2 * i + 2));
            nodes.push(leaf(&[i as f64]));
        }
        nodes.push(leaf(&[-1.0]));
        let m = spec(1, forest(vec![tree(&nodes)]), OutputSpec::Regression)
            .build()
            .unwrap();
        assert_eq!(m.predict(&[99_998.5]).unwrap(), Prediction::Value(99_999.0));
        assert_eq!(m.predict(&[1e9]).unwrap(), Prediction::Value(-1.0));
    }

    fn one_tree(nodes: &[(i64, f64, i64, i64, Vec<f64>)]) -> crate::model::ModelSpec {
        spec(2, forest(vec![tree(nodes)]), OutputSpec::Regression)
    }

    #[test]
    fn rejects_a_forest_without_trees() {
        let s = spec(2, forest(vec![]), OutputSpec::Regression);
        assert_eq!(invalid_msg(&s), "random_forest has no trees");
    }

    #[test]
    fn rejects_empty_and_ragged_node_arrays() {
        assert_eq!(invalid_msg(&one_tree(&[])), "tree 0 has no nodes");
        let mut s = one_tree(&[split(0, 1.0, 1, 2), leaf(&[1.0]), leaf(&[2.0])]);
        let ParamsSpec::RandomForest { trees, .. } = &mut s.model else {
            unreachable!()
        };
        trees[0].right.pop();
        assert_eq!(
            invalid_msg(&s),
            "tree 0: right has 2 entries but feature has 3"
        );
    }

    #[test]
    fn rejects_children_out_of_range() {
        let s = one_tree(&[split(0, 1.0, 900, 2), leaf(&[1.0]), leaf(&[2.0])]);
        assert_eq!(
            invalid_msg(&s),
            "tree 0 node 0: left child 900 is out of range (the tree has 3 nodes)"
        );
        let s = one_tree(&[split(0, 1.0, 1, -5), leaf(&[1.0]), leaf(&[2.0])]);
        assert_eq!(
            invalid_msg(&s),
            "tree 0 node 0: right child -5 is out of range (the tree has 3 nodes)"
        );
    }

    #[test]
    fn rejects_half_leaves() {
        let s = one_tree(&[
            split(0, 1.0, 1, 2),
            (-2, -2.0, -1, 2, vec![1.0]),
            leaf(&[2.0]),
        ]);
        let msg = invalid_msg(&s);
        assert!(
            msg.starts_with("tree 0 node 1: left child is -1 but right child is 2"),
            "{msg}"
        );
    }

    #[test]
    fn rejects_split_feature_out_of_range() {
        let s = one_tree(&[split(2, 1.0, 1, 2), leaf(&[1.0]), leaf(&[2.0])]);
        assert_eq!(
            invalid_msg(&s),
            "tree 0 node 0: split feature 2 is out of range (the model has 2 features)"
        );
        let s = one_tree(&[split(-2, 1.0, 1, 2), leaf(&[1.0]), leaf(&[2.0])]);
        assert!(invalid_msg(&s).contains("split feature -2 is out of range"));
    }

    #[test]
    fn rejects_cycles() {
        // 0 -> 1 -> 2 -> 1
        let s = one_tree(&[
            split(0, 1.0, 1, 3),
            split(0, 1.0, 2, 4),
            split(0, 1.0, 1, 5),
            leaf(&[1.0]),
            leaf(&[1.0]),
            leaf(&[1.0]),
        ]);
        assert_eq!(invalid_msg(&s), "tree 0 has a cycle through node 1");
        let s = spec(
            2,
            forest(vec![
                tree(&[leaf(&[0.0])]),
                tree(&[
                    split(0, 1.0, 1, 2),
                    leaf(&[1.0]),
                    split(0, 1.0, 3, 4),
                    leaf(&[1.0]),
                    split(1, 1.0, 2, 5),
                    leaf(&[1.0]),
                ]),
            ]),
            OutputSpec::Regression,
        );
        assert_eq!(invalid_msg(&s), "tree 1 has a cycle through node 2");
        // A child pointing at the root, and a node that is its own child.
        let s = one_tree(&[split(0, 1.0, 1, 0), leaf(&[1.0])]);
        assert_eq!(invalid_msg(&s), "tree 0 has a cycle through node 0");
        let s = one_tree(&[split(0, 1.0, 1, 2), leaf(&[1.0]), split(0, 1.0, 2, 1)]);
        assert_eq!(invalid_msg(&s), "tree 0 has a cycle through node 2");
    }

    #[test]
    fn rejects_a_node_with_two_parents() {
        // Nodes 1 and 2 both point at leaf 3 (a DAG, not a tree).
        let s = one_tree(&[
            split(0, 1.0, 1, 2),
            split(1, 1.0, 3, 4),
            split(1, 2.0, 5, 3),
            leaf(&[1.0]),
            leaf(&[2.0]),
            leaf(&[3.0]),
        ]);
        let msg = invalid_msg(&s);
        assert!(msg.starts_with("tree 0 node 3 is reached twice"), "{msg}");
        let s = one_tree(&[split(0, 1.0, 1, 1), leaf(&[1.0])]);
        assert!(invalid_msg(&s).starts_with("tree 0 node 1 is reached twice"));
    }

    #[test]
    fn rejects_leaf_values_of_the_wrong_width() {
        let s = one_tree(&[split(0, 1.0, 1, 2), leaf(&[1.0]), leaf(&[2.0, 3.0])]);
        assert_eq!(
            invalid_msg(&s),
            "tree 0 node 2: leaf value has 2 entries but a regression leaf has 1"
        );
        let t = tree(&[split(0, 1.0, 1, 2), leaf(&[0.5, 0.5]), leaf(&[1.0])]);
        let s = spec(2, forest(vec![t]), classes(&["a", "b"]));
        assert_eq!(
            invalid_msg(&s),
            "tree 0 node 2: leaf value has 1 entries but the model has 2 classes"
        );
    }

    #[test]
    fn rejects_non_finite_thresholds_and_values() {
        let s = one_tree(&[split(0, f64::NAN, 1, 2), leaf(&[1.0]), leaf(&[2.0])]);
        assert_eq!(invalid_msg(&s), "tree 0 node 0: threshold is NaN");
        let s = one_tree(&[split(0, 1.0, 1, 2), leaf(&[1.0]), leaf(&[f64::INFINITY])]);
        assert_eq!(invalid_msg(&s), "tree 0 node 2: value[0] is infinite");
    }

    #[test]
    fn unreachable_nodes_are_allowed_and_ignored() {
        let s = one_tree(&[
            split(0, 1.0, 1, 2),
            leaf(&[1.0]),
            leaf(&[2.0]),
            leaf(&[9.0]),
        ]);
        let m = s.build().unwrap();
        assert_eq!(m.predict(&[5.0, 0.0]).unwrap(), Prediction::Value(2.0));
        assert!(matches!(m.predict(&[5.0]), Err(Error::FeatureCount { .. })));
    }
}
