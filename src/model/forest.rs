//! Random forests of flat-array decision trees.
//!
//! At build time every tree is checked (children in range, no cycle, no node with two parents;
//! all iteratively, so depth is unbounded) and re-laid out breadth-first into one packed array
//! shared by all trees, with the two children of a split in adjacent slots. A node is 16 bytes,
//! four to a cache line; leaf values live in a separate flat array.
//!
//! Scoring follows scikit-learn exactly: a record goes left when `x[feature] <= threshold`
//! (with the feature first rounded to `f32` for `f32` forests, done once per record before
//! scoring); the forest's output is the sum of the trees' leaf values in tree order, divided
//! by the number of trees.

use std::collections::VecDeque;

use super::{
    build::{check_finite, invalid},
    score::classify,
    spec::{ThresholdPrecision, TreeSpec},
    Error, Output, Prediction,
};

/// `Node::feature` of a leaf.
const LEAF: u32 = u32::MAX;

/// One packed node.
#[derive(Debug, Clone, Copy)]
struct Node {
    /// Go left when `x[feature] <= threshold`.
    threshold: f64,
    /// Feature index of a split, or [`LEAF`].
    feature: u32,
    /// A split's left child (its right child is `next + 1`), or a leaf's offset into
    /// [`Forest::values`].
    next: u32,
}

#[derive(Debug, Clone)]
pub(super) struct Forest {
    nodes: Vec<Node>,
    /// Index in `nodes` of each tree's root, in tree order.
    roots: Vec<u32>,
    /// Leaf values, `width` per leaf.
    values: Vec<f64>,
    /// 1 for regression, the class count for classification.
    width: usize,
    classification: bool,
    precision: ThresholdPrecision,
}

impl Forest {
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
        let mut forest = Forest {
            nodes: Vec::new(),
            roots: Vec::with_capacity(trees.len()),
            values: Vec::new(),
            width,
            classification: matches!(output, Output::Classification(_)),
            precision,
        };
        for (t, tree) in trees.iter().enumerate() {
            check_tree(tree, t, n_features, width)?;
            forest.push_tree(tree)?;
        }
        Ok(forest)
    }

    pub(super) fn rounds_to_f32(&self) -> bool {
        self.precision == ThresholdPrecision::F32
    }

    /// Appends a checked tree breadth-first; unreachable nodes are dropped.
    fn push_tree(&mut self, tree: &TreeSpec) -> Result<(), Error> {
        let too_big = || invalid("random_forest has more than 4294967294 nodes or leaf values");
        let slot = |n: usize| {
            u32::try_from(n)
                .ok()
                .filter(|&n| n != LEAF)
                .ok_or_else(too_big)
        };
        let root = slot(self.nodes.len())?;
        self.roots.push(root);
        let placeholder = Node {
            threshold: 0.0,
            feature: LEAF,
            next: 0,
        };
        self.nodes.push(placeholder);
        // (node id in the spec, slot in `nodes`)
        let mut queue = VecDeque::from([(0usize, root as usize)]);
        while let Some((id, at)) = queue.pop_front() {
            let (left, right) = (tree.left[id], tree.right[id]);
            self.nodes[at] = if left == -1 {
                let offset = slot(self.values.len())?;
                self.values.extend_from_slice(&tree.value[id]);
                Node {
                    threshold: tree.threshold[id],
                    feature: LEAF,
                    next: offset,
                }
            } else {
                let next = self.nodes.len();
                slot(next + 1)?;
                self.nodes.extend([placeholder, placeholder]);
                // Checked: in range and non-negative.
                queue.push_back((left as usize, next));
                queue.push_back((right as usize, next + 1));
                Node {
                    threshold: tree.threshold[id],
                    feature: tree.feature[id] as u32,
                    next: next as u32,
                }
            };
        }
        Ok(())
    }

    /// Offset in `values` of the leaf `x` reaches from `root`.
    #[inline]
    fn leaf(&self, root: u32, x: &[f64]) -> usize {
        let mut node = self.nodes[root as usize];
        while node.feature != LEAF {
            let right = !(x[node.feature as usize] <= node.threshold);
            node = self.nodes[(node.next + u32::from(right)) as usize];
        }
        node.next as usize
    }

    /// Scores features already scaled and, for `f32` forests, rounded.
    pub(super) fn predict(&self, x: &[f64]) -> Result<Prediction, Error> {
        let n_trees = self.roots.len() as f64;
        if !self.classification {
            let mut sum = 0.0;
            for &root in &self.roots {
                sum += self.values[self.leaf(root, x)];
            }
            let y = sum / n_trees;
            return if y.is_finite() {
                Ok(Prediction::Value(y))
            } else {
                Err(Error::NonFiniteOutput)
            };
        }
        let mut p = vec![0.0; self.width];
        for &root in &self.roots {
            let at = self.leaf(root, x);
            for (p, v) in p.iter_mut().zip(&self.values[at..at + self.width]) {
                *p += v;
            }
        }
        for p in &mut p {
            *p /= n_trees;
        }
        classify(p)
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
    check_shape(tree, t)
}

/// Walks the tree from its root without recursion: every reachable node must be reached
/// exactly once (no cycle, no shared child). Children are already known to be in range.
fn check_shape(tree: &TreeSpec, t: usize) -> Result<(), Error> {
    const NONE: usize = usize::MAX;
    let n = tree.left.len();
    let mut parent = vec![NONE; n];
    let mut seen = vec![false; n];
    seen[0] = true;
    let mut stack = vec![0usize];
    while let Some(i) = stack.pop() {
        if tree.left[i] == -1 {
            continue;
        }
        for c in [tree.left[i] as usize, tree.right[i] as usize] {
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
