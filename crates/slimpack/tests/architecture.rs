//! The house rules of the `slimpack` crate, checked on its source:
//! top-level modules import only modules of a lower layer (so there is no
//! cycle), and no function outside tests is longer than [`MAX_FN_LINES`].
//! ARCHITECTURE.md explains the layers; change both together.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use syn::visit::Visit;

/// Lowest first. A module may use modules of lower layers only; modules of
/// one layer are independent of each other.
const LAYERS: &[&[&str]] = &[
    &["core"],
    &["settings"],
    &["project"],
    &["sandbox"],
    &["registry"],
    &["image"],
    &["python", "inspect"],
    &["base"],
    &["builder"],
    &["build"],
    &["run", "dockerfile", "deploy"],
    &["cli"],
];

const MAX_FN_LINES: usize = 150;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// `#[test]` or `#[cfg(test)]`.
fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| match &a.meta {
        syn::Meta::Path(p) => p.is_ident("test"),
        syn::Meta::List(l) => l.path.is_ident("cfg") && l.tokens.to_string() == "test",
        syn::Meta::NameValue(_) => false,
    })
}

/// What one file uses of the crate, and its long functions.
#[derive(Default)]
struct Scan {
    /// (top-level module used, line)
    uses: Vec<(String, usize)>,
    /// (function, lines, first line)
    long_fns: Vec<(String, usize, usize)>,
}

impl Scan {
    fn crate_path<'a>(&mut self, mut segs: impl Iterator<Item = &'a syn::Ident>, line: usize) {
        if segs.next().is_some_and(|s| s == "crate") {
            if let Some(m) = segs.next() {
                self.uses.push((m.to_string(), line));
            }
        }
    }

    fn use_tree(&mut self, prefix: &[String], tree: &syn::UseTree, line: usize) {
        match tree {
            syn::UseTree::Path(p) => {
                let mut v = prefix.to_vec();
                v.push(p.ident.to_string());
                self.use_tree(&v, &p.tree, line);
            }
            syn::UseTree::Name(n) => self.use_leaf(prefix, &n.ident.to_string(), line),
            syn::UseTree::Rename(r) => self.use_leaf(prefix, &r.ident.to_string(), line),
            syn::UseTree::Glob(_) => self.use_leaf(prefix, "*", line),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t, line);
                }
            }
        }
    }

    fn use_leaf(&mut self, prefix: &[String], leaf: &str, line: usize) {
        if prefix.first().map(String::as_str) != Some("crate") {
            return;
        }
        let m = prefix.get(1).map(String::as_str).unwrap_or(leaf);
        self.uses.push((m.to_string(), line));
    }

    fn function(&mut self, name: &syn::Ident, span: proc_macro2::Span) {
        let lines = span.end().line - span.start().line + 1;
        if lines > MAX_FN_LINES {
            self.long_fns
                .push((name.to_string(), lines, span.start().line));
        }
    }
}

impl<'ast> Visit<'ast> for Scan {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if !is_cfg_test(&m.attrs) {
            syn::visit::visit_item_mod(self, m);
        }
    }
    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        if is_cfg_test(&f.attrs) {
            return;
        }
        self.function(&f.sig.ident, syn::spanned::Spanned::span(f));
        syn::visit::visit_item_fn(self, f);
    }
    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        if is_cfg_test(&f.attrs) {
            return;
        }
        self.function(&f.sig.ident, syn::spanned::Spanned::span(f));
        syn::visit::visit_impl_item_fn(self, f);
    }
    fn visit_item_impl(&mut self, i: &'ast syn::ItemImpl) {
        if !is_cfg_test(&i.attrs) {
            syn::visit::visit_item_impl(self, i);
        }
    }
    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        let line = syn::spanned::Spanned::span(u).start().line;
        self.use_tree(&[], &u.tree, line);
    }
    fn visit_path(&mut self, p: &'ast syn::Path) {
        let line = syn::spanned::Spanned::span(p).start().line;
        self.crate_path(p.segments.iter().map(|s| &s.ident), line);
        syn::visit::visit_path(self, p);
    }
    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        // Paths inside macro arguments (format!, matches!, bail!) are
        // tokens to syn: find `crate :: name` in them.
        let toks: Vec<String> = m
            .tokens
            .clone()
            .into_iter()
            .map(|t| t.to_string())
            .collect();
        let line = syn::spanned::Spanned::span(m).start().line;
        for w in toks.windows(4) {
            if w[0] == "crate" && w[1] == ":" && w[2] == ":" {
                self.uses.push((w[3].clone(), line));
            }
        }
        syn::visit::visit_macro(self, m);
    }
}

fn scan(text: &str) -> Scan {
    let file = syn::parse_file(text).expect("the crate's source parses");
    let mut s = Scan::default();
    s.visit_file(&file);
    s
}

/// Every .rs file under src/ with its top-level module.
fn files() -> Vec<(String, PathBuf)> {
    let root = src();
    walkdir::WalkDir::new(&root)
        .sort_by_file_name()
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.path().extension().is_some_and(|x| x == "rs"))
        .map(|e| {
            let rel = e.path().strip_prefix(&root).unwrap();
            let first = rel.components().next().unwrap().as_os_str();
            let top = first.to_string_lossy().trim_end_matches(".rs").to_string();
            (top, e.path().to_path_buf())
        })
        .collect()
}

/// Imports against the direction, as messages.
fn violations(module: &str, file: &str, uses: &[(String, usize)]) -> Vec<String> {
    let mut out = Vec::new();
    if matches!(module, "lib" | "main") {
        return out;
    }
    let Some(mine) = layer_of(module) else {
        out.push(format!(
            "{file}: top-level module `{module}` is in no layer of tests/architecture.rs"
        ));
        return out;
    };
    for (used, line) in uses {
        if used == module {
            continue;
        }
        match layer_of(used) {
            Some(l) if l < mine => {}
            Some(l) if l == mine => out.push(format!(
                "{file}:{line}: `{module}` uses `{used}`, a module of its own layer"
            )),
            Some(_) => out.push(format!(
                "{file}:{line}: `{module}` uses `{used}`, which is above it"
            )),
            None => out.push(format!(
                "{file}:{line}: `{module}` uses `crate::{used}`, in no layer"
            )),
        }
    }
    out
}

#[test]
fn imports_follow_the_layers() {
    let mut bad = Vec::new();
    for (module, path) in files() {
        let text = std::fs::read_to_string(&path).unwrap();
        let rel = path.strip_prefix(src()).unwrap().display().to_string();
        bad.extend(violations(&module, &rel, &scan(&text).uses));
    }
    assert!(
        bad.is_empty(),
        "imports against the direction:\n{}",
        bad.join("\n")
    );
}

#[test]
fn no_cycle_among_top_level_modules() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, path) in files() {
        let text = std::fs::read_to_string(&path).unwrap();
        let edges = graph.entry(module.clone()).or_default();
        for (used, _) in scan(&text).uses {
            if used != module {
                edges.insert(used);
            }
        }
    }
    // Depth-first search for a back edge.
    fn visit<'a>(
        n: &'a str,
        g: &'a BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| *s == n) {
            let mut cycle: Vec<String> = stack[i..].iter().map(|s| s.to_string()).collect();
            cycle.push(n.to_string());
            return Some(cycle);
        }
        if !done.insert(n) {
            return None;
        }
        stack.push(n);
        for m in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, g, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        None
    }
    let mut done = BTreeSet::new();
    for n in graph.keys() {
        if let Some(c) = visit(n, &graph, &mut Vec::new(), &mut done) {
            panic!("import cycle: {}", c.join(" → "));
        }
    }
}

#[test]
fn no_long_functions() {
    let mut long = Vec::new();
    for (_, path) in files() {
        let text = std::fs::read_to_string(&path).unwrap();
        let rel = path.strip_prefix(src()).unwrap().display().to_string();
        for (name, lines, at) in scan(&text).long_fns {
            long.push(format!("{rel}:{at}: fn {name} is {lines} lines"));
        }
    }
    assert!(
        long.is_empty(),
        "functions over {MAX_FN_LINES} lines (split them into named steps):\n{}",
        long.join("\n")
    );
}

/// The checker itself: it must see every way a module is named.
#[test]
fn the_checker_sees_imports_and_long_functions() {
    let body = "    let x = 1;\n".repeat(MAX_FN_LINES);
    let text = format!(
        "use crate::build::Plan;\nuse crate::{{cli, core::cache}};\n\
         fn f() {{ let _ = crate::run::go(); bail!(\"{{}}\", crate::deploy::X); }}\n\
         fn long() {{\n{body}}}\n\
         #[cfg(test)]\nmod tests {{ use crate::cli::Cli; }}\n"
    );
    let s = scan(&text);
    let used: BTreeSet<&str> = s.uses.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(
        used,
        BTreeSet::from(["build", "cli", "core", "run", "deploy"])
    );
    assert_eq!(s.long_fns.len(), 1, "{:?}", s.long_fns);
    let bad = violations("python", "python/x.rs", &s.uses);
    assert_eq!(bad.len(), 4, "{bad:#?}"); // build, cli, run, deploy are above python
    assert!(violations("cli", "cli.rs", &s.uses).is_empty());
    let bad = violations("run", "run.rs", &s.uses);
    assert!(
        bad.iter()
            .any(|v| v.contains("`deploy`, a module of its own layer")),
        "{bad:#?}"
    );
}
