//! The layering of `src/`: which top-level module may import which.
//!
//! Every `.rs` file under `src/` belongs to a top-level module (`src/<name>.rs` or
//! `src/<name>/...`; `lib.rs` and `main.rs` belong to none). Its references to other top-level
//! modules are the `crate::<name>` paths it contains: `use crate::...` lines, grouped
//! `use crate::{a, b::c}` included, and inline `crate::name::f()` paths. Comments, string
//! literals and inline `#[cfg(test)] mod tests { ... }` blocks are left out: a unit test may
//! reach anywhere.
//!
//! Two rules hold over the resulting graph: no cycle between top-level modules, and no module
//! imports one that [`LAYERS`] does not list for it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Which top-level modules each top-level module may import, from the top layer down. A module
/// imports only modules of lower layers, and a peer only where the peer is listed here. Every
/// top-level module of `src/` must have a row: a new module gets one, with the modules it may
/// import.
const LAYERS: &[(&str, &[&str])] = &[
    // The binary's level: subcommands wire everything together.
    (
        "cli",
        &[
            "config",
            "stream",
            "quality",
            "ops",
            "registry",
            "rollout",
            "store",
            "model",
            "telemetry",
            "synth",
        ],
    ),
    // The aggregate configuration: it imports each component's section from below.
    (
        "config",
        &[
            "stream",
            "quality",
            "ops",
            "registry",
            "rollout",
            "store",
            "model",
            "telemetry",
            "synth",
        ],
    ),
    // Peers: ops renders the stream's counters, so it may import stream; stream never imports
    // ops.
    (
        "ops",
        &[
            "stream",
            "quality",
            "registry",
            "rollout",
            "store",
            "model",
            "telemetry",
            "synth",
        ],
    ),
    (
        "stream",
        &[
            "quality",
            "registry",
            "rollout",
            "store",
            "model",
            "telemetry",
            "synth",
        ],
    ),
    // Live quality: labels joined to predictions, drift, canary verdicts. The stream reports
    // to it; it reads models and writes rows and verdicts to the store.
    (
        "quality",
        &["registry", "rollout", "store", "model", "telemetry"],
    ),
    (
        "registry",
        &["rollout", "store", "model", "telemetry", "synth"],
    ),
    // Pure canary split functions: nothing of the crate.
    ("rollout", &[]),
    ("store", &["model", "telemetry"]),
    ("model", &["telemetry"]),
    // The base, importable by every layer above store. Synthetic data is built from models and
    // written through the store, so synth may import those two and nothing else.
    ("telemetry", &[]),
    ("synth", &["model", "store"]),
];

/// Top-level module -> imported top-level module -> files with the reference.
type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

/// The top-level module a file under `src/` belongs to, from its path relative to `src/`.
fn module_of(relative: &str) -> Option<String> {
    let relative = relative.replace('\\', "/");
    match relative.split_once('/') {
        Some((dir, _)) => Some(dir.to_string()),
        None => {
            let name = relative.strip_suffix(".rs")?;
            (name != "lib" && name != "main").then(|| name.to_string())
        }
    }
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `src` with comments removed and every string and character literal emptied, so that what
/// remains is code: braces balance and `crate::` appears only in paths.
fn strip_comments_and_literals(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let at = |i: usize| c.get(i).copied();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < c.len() {
        // Line comment (doc comments included).
        if c[i] == '/' && at(i + 1) == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
            continue;
        }
        // Block comment, possibly nested.
        if c[i] == '/' && at(i + 1) == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && at(i + 1) == Some('*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == Some('/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
            continue;
        }
        let starts_token = i == 0 || !is_ident(c[i - 1]);
        // Raw string: r"..", r#".."#, br#".."#.
        if starts_token && (c[i] == 'r' || (c[i] == 'b' && at(i + 1) == Some('r'))) {
            let mut j = i + if c[i] == 'b' { 2 } else { 1 };
            let mut hashes = 0;
            while at(j) == Some('#') {
                hashes += 1;
                j += 1;
            }
            if at(j) == Some('"') {
                j += 1;
                while j < c.len() {
                    if c[j] == '"' && (0..hashes).all(|k| at(j + 1 + k) == Some('#')) {
                        j += 1 + hashes;
                        break;
                    }
                    j += 1;
                }
                out.push_str("\"\"");
                i = j;
                continue;
            }
        }
        // String (a `b` prefix stays in the output as an identifier character).
        if c[i] == '"' {
            let mut j = i + 1;
            while j < c.len() && c[j] != '"' {
                if c[j] == '\\' {
                    j += 1;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j + 1;
            continue;
        }
        // Character literal; a lifetime or label is left alone.
        if c[i] == '\'' {
            if at(i + 1) == Some('\\') {
                let mut j = i + 3;
                while j < c.len() && c[j] != '\'' {
                    j += 1;
                }
                out.push_str("' '");
                i = j + 1;
                continue;
            }
            if at(i + 2) == Some('\'') {
                out.push_str("' '");
                i += 3;
                continue;
            }
        }
        out.push(c[i]);
        i += 1;
    }
    out
}

/// The index just past the `}` matching the `{` at `open`, or the end of `code`.
fn block_end(code: &str, open: usize) -> usize {
    let mut depth = 0;
    for (i, b) in code.bytes().enumerate().skip(open) {
        match b {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
    }
    code.len()
}

/// `code` (already stripped of comments and literals) without its inline
/// `#[cfg(test)] mod name { ... }` blocks.
fn strip_test_modules(code: &str) -> String {
    const CFG_TEST: &str = "#[cfg(test)]";
    let mut out = String::with_capacity(code.len());
    let mut pos = 0;
    while let Some(found) = code[pos..].find(CFG_TEST) {
        let attr = pos + found;
        let after = attr + CFG_TEST.len();
        // Further attributes may follow before the item.
        let mut rest = code[after..].trim_start();
        while rest.starts_with("#[") {
            match rest.find(']') {
                Some(end) => rest = rest[end + 1..].trim_start(),
                None => break,
            }
        }
        let block = rest
            .strip_prefix("mod")
            .filter(|r| r.starts_with(char::is_whitespace))
            .map(str::trim_start)
            .map(|r| r.trim_start_matches(is_ident).trim_start())
            .filter(|r| r.starts_with('{'))
            .map(|r| code.len() - r.len());
        match block {
            Some(open) => {
                out.push_str(&code[pos..attr]);
                pos = block_end(code, open);
            }
            None => {
                out.push_str(&code[pos..after]);
                pos = after;
            }
        }
    }
    out.push_str(&code[pos..]);
    out
}

/// The first path segments after every `crate::` in `code` (already stripped of comments and
/// literals): `use crate::model::X` and `crate::model::f()` give `model`, and the group in
/// `use crate::{a::X, b};` gives `a` and `b`.
fn crate_references(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let first_ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| is_ident(*c))
            .collect()
    };
    let mut pos = 0;
    while let Some(i) = code[pos..].find("crate") {
        let start = pos + i;
        pos = start + "crate".len();
        let before = code[..start].chars().next_back();
        if before.is_some_and(is_ident) {
            continue;
        }
        let Some(path) = code[pos..].trim_start().strip_prefix("::") else {
            continue;
        };
        let path = path.trim_start();
        if path.starts_with('{') {
            let open = code.len() - path.len();
            let inner = &code[open + 1..block_end(code, open) - 1];
            // The group's items, split at its top-level commas.
            let mut depth = 0;
            let mut item = 0;
            for (k, ch) in inner.char_indices().chain([(inner.len(), ',')]) {
                match ch {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.insert(first_ident(&inner[item..k]));
                        item = k + 1;
                    }
                    _ => {}
                }
            }
        } else {
            found.insert(first_ident(path));
        }
    }
    found.remove("");
    found.remove("self");
    found
}

/// The graph of `files` (path relative to `src/`, text): edges between the top-level modules
/// the files belong to. References to names that are not top-level modules (items of the
/// crate root) and to a file's own module are left out.
fn dependency_graph(files: &[(String, String)]) -> Graph {
    let modules: BTreeSet<String> = files.iter().filter_map(|(p, _)| module_of(p)).collect();
    let mut graph = Graph::new();
    for (path, text) in files {
        let Some(from) = module_of(path) else {
            continue;
        };
        let edges = graph.entry(from.clone()).or_default();
        let code = strip_test_modules(&strip_comments_and_literals(text));
        for to in crate_references(&code) {
            if to != from && modules.contains(&to) {
                edges.entry(to).or_default().insert(path.clone());
            }
        }
    }
    graph
}

/// The strongly connected components of more than one module (Tarjan), each sorted.
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct Tarjan<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        found: Vec<Vec<String>>,
    }
    impl<'g> Tarjan<'g> {
        fn visit(&mut self, v: &'g str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            let graph = self.graph;
            for w in graph.get(v).into_iter().flat_map(|e| e.keys()) {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                loop {
                    let w = self.stack.pop().expect("v is on the stack");
                    self.on_stack.remove(w);
                    component.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut t = Tarjan {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.found.sort();
    t.found
}

/// `from -> to (files)`.
fn edge(from: &str, to: &str, files: &BTreeSet<String>) -> String {
    let files: Vec<&str> = files.iter().map(String::as_str).collect();
    format!("{from} -> {to} ({})", files.join(", "))
}

/// One line per cycle, naming every edge inside it with its files; empty when there is none.
fn cycle_report(graph: &Graph) -> Vec<String> {
    cycles(graph)
        .into_iter()
        .map(|component| {
            let members: BTreeSet<&str> = component.iter().map(String::as_str).collect();
            let edges: Vec<String> = component
                .iter()
                .flat_map(|from| {
                    graph[from]
                        .iter()
                        .filter(|(to, _)| members.contains(to.as_str()))
                        .map(move |(to, files)| edge(from, to, files))
                })
                .collect();
            format!(
                "cycle between {}: {}",
                component.join(", "),
                edges.join("; ")
            )
        })
        .collect()
}

/// Every edge `layers` does not allow, and every module missing from `layers`; empty when the
/// graph keeps to the layers.
fn layer_violations(graph: &Graph, layers: &[(&str, &[&str])]) -> Vec<String> {
    let allowed: BTreeMap<&str, &[&str]> = layers.iter().copied().collect();
    let mut problems = Vec::new();
    for (from, edges) in graph {
        let Some(may) = allowed.get(from.as_str()) else {
            let files: BTreeSet<String> = edges.values().flatten().cloned().collect();
            problems.push(format!(
                "module `{from}` is not in LAYERS: add it, with the modules it may import \
                 (imports now: {})",
                if edges.is_empty() {
                    "none".to_string()
                } else {
                    format!(
                        "{}; in {}",
                        edges.keys().cloned().collect::<Vec<_>>().join(", "),
                        files.into_iter().collect::<Vec<_>>().join(", ")
                    )
                }
            ));
            continue;
        };
        for (to, files) in edges {
            if !may.contains(&to.as_str()) {
                problems.push(format!("not allowed by LAYERS: {}", edge(from, to, files)));
            }
        }
    }
    problems
}

/// Every `.rs` file under `dir`, as (path relative to `root`, text).
fn rust_files(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            let relative = path
                .strip_prefix(root)
                .expect("under src/")
                .to_string_lossy()
                .into_owned();
            out.push((relative, text));
        }
    }
}

fn src_graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &src, &mut files);
    assert!(!files.is_empty(), "no Rust files under {}", src.display());
    dependency_graph(&files)
}

#[test]
fn src_has_no_cycle_between_top_level_modules() {
    let report = cycle_report(&src_graph());
    assert!(
        report.is_empty(),
        "top-level modules of src/ import each other:\n  {}",
        report.join("\n  ")
    );
}

#[test]
fn src_modules_import_only_what_their_layer_allows() {
    let problems = layer_violations(&src_graph(), LAYERS);
    assert!(
        problems.is_empty(),
        "src/ breaks the layering in tests/architecture.rs (LAYERS):\n  {}",
        problems.join("\n  ")
    );
}

/// A graph from `(module, [(imported module, file)])`.
fn graph(edges: &[(&str, &[(&str, &str)])]) -> Graph {
    edges
        .iter()
        .map(|(from, to)| {
            let mut e: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for (to, file) in *to {
                e.entry(to.to_string())
                    .or_default()
                    .insert(file.to_string());
            }
            (from.to_string(), e)
        })
        .collect()
}

#[test]
fn grouped_uses_and_inline_paths_are_references() {
    let code = strip_comments_and_literals(
        "use crate::{a::X, b};\n\
         use crate::{\n    d::{self, Y},\n    e,\n};\n\
         pub(crate) use crate::g as h;\n\
         fn f() { crate::c::f(); let _ = $crate::i::J; }\n",
    );
    let found: Vec<String> = crate_references(&code).into_iter().collect();
    assert_eq!(found, ["a", "b", "c", "d", "e", "g", "i"]);
}

#[test]
fn comments_literals_and_test_modules_are_not_references() {
    let code = strip_comments_and_literals(
        "//! See [`crate::doc`].\n\
         use crate::kept;\n\
         /* crate::block /* nested */ crate::block2 */\n\
         const S: &str = \"crate::string\";\n\
         const R: &str = r#\"crate::raw \"quoted\" \"#;\n\
         const C: char = '\"'; const Q: char = '\\''; fn l<'a>(x: &'a str) -> &'a str { x }\n\
         fn after() { crate::after::f(); }\n\
         #[cfg(test)]\n\
         #[allow(unused)]\n\
         mod tests {\n    use crate::in_tests;\n    fn t() { if true { crate::nested::f(); } }\n}\n",
    );
    let found: Vec<String> = crate_references(&strip_test_modules(&code))
        .into_iter()
        .collect();
    assert_eq!(found, ["after", "kept"]);
}

#[test]
fn files_belong_to_their_top_level_module() {
    assert_eq!(module_of("registry.rs").as_deref(), Some("registry"));
    assert_eq!(module_of("store/cql/mod.rs").as_deref(), Some("store"));
    assert_eq!(module_of("lib.rs"), None);
    assert_eq!(module_of("main.rs"), None);
    let g = dependency_graph(&[
        ("lib.rs".into(), "pub mod a; pub mod b;".into()),
        (
            "a/mod.rs".into(),
            "use crate::{b::X, Root}; use crate::a::y;".into(),
        ),
        ("a/y.rs".into(), "fn f() { crate::b::g() }".into()),
        ("b.rs".into(), "".into()),
    ]);
    assert_eq!(
        g,
        graph(&[("a", &[("b", "a/mod.rs"), ("b", "a/y.rs")]), ("b", &[])])
    );
}

#[test]
fn a_cycle_is_found_and_named() {
    let g = graph(&[
        ("a", &[("b", "a.rs")]),
        ("b", &[("c", "b/mod.rs")]),
        ("c", &[("a", "c.rs"), ("d", "c.rs")]),
        ("d", &[]),
        ("e", &[("f", "e.rs")]),
        ("f", &[("e", "f.rs")]),
    ]);
    assert_eq!(
        cycles(&g),
        [vec!["a", "b", "c"], vec!["e", "f"]]
            .map(|c| c.into_iter().map(String::from).collect::<Vec<_>>())
    );
    assert_eq!(
        cycle_report(&g),
        [
            "cycle between a, b, c: a -> b (a.rs); b -> c (b/mod.rs); c -> a (c.rs)",
            "cycle between e, f: e -> f (e.rs); f -> e (f.rs)",
        ]
    );
}

#[test]
fn an_acyclic_graph_has_no_cycle() {
    let g = graph(&[
        ("a", &[("b", "a.rs"), ("c", "a.rs")]),
        ("b", &[("c", "b.rs")]),
        ("c", &[]),
    ]);
    assert!(cycles(&g).is_empty());
    assert!(cycle_report(&g).is_empty());
}

#[test]
fn an_upward_arrow_and_an_unlisted_module_are_reported() {
    const TABLE: &[(&str, &[&str])] = &[("top", &["mid", "low"]), ("mid", &["low"]), ("low", &[])];
    let fine = graph(&[
        ("top", &[("mid", "top.rs")]),
        ("mid", &[("low", "mid.rs")]),
        ("low", &[]),
    ]);
    assert!(layer_violations(&fine, TABLE).is_empty());
    let upward = graph(&[
        ("top", &[("mid", "top.rs")]),
        ("mid", &[("low", "mid.rs")]),
        ("low", &[("top", "low/a.rs"), ("top", "low/b.rs")]),
        ("new", &[("low", "new.rs")]),
    ]);
    assert_eq!(
        layer_violations(&upward, TABLE),
        [
            "not allowed by LAYERS: low -> top (low/a.rs, low/b.rs)",
            "module `new` is not in LAYERS: add it, with the modules it may import \
             (imports now: low; in new.rs)",
        ]
    );
}

#[test]
fn a_tree_importing_everything_its_layer_allows_passes() {
    // One file per module of LAYERS, importing every module its row allows: the table itself
    // is acyclic, and a tree that keeps to it passes both checks.
    let files: Vec<(String, String)> = LAYERS
        .iter()
        .map(|(module, may)| {
            (
                format!("{module}.rs"),
                format!("use crate::{{{}}};", may.join(", ")),
            )
        })
        .collect();
    let g = dependency_graph(&files);
    assert_eq!(
        g.values().map(BTreeMap::len).sum::<usize>(),
        LAYERS.iter().map(|(_, may)| may.len()).sum::<usize>()
    );
    assert_eq!(cycle_report(&g), Vec::<String>::new());
    assert_eq!(layer_violations(&g, LAYERS), Vec::<String>::new());
}
