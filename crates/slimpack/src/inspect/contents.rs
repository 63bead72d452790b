//! What the final tree holds, by owner: the Debian packages of the dpkg
//! database the image carries, the Python distributions of every
//! `*.dist-info`, the interpreter and its origin; and every file put in
//! one category, leftovers first (what slimpack would not ship).

use super::license::{self, Extracted};
use super::walk::{Kind, Node};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A package of the image's dpkg database.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DebPackage {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// The source package and its version, when they differ from the
    /// binary's (dpkg's `Source: name (version)`).
    pub source: String,
    pub source_version: String,
    /// The SPDX expression of its copyright file's `Files: *` license,
    /// when the image holds that file in DEP-5's format.
    pub license: Option<String>,
    /// Paths (in the tree, `/`-less) of its `.list`, when the image has one.
    #[serde(skip)]
    pub files: Vec<String>,
}

/// A Python distribution installed somewhere in the image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dist {
    pub name: String,
    pub version: String,
    /// The site-packages directory holding it.
    pub location: String,
    /// PEP 639 `License-Expression`, as written.
    pub license_expression: Option<String>,
    /// The older free-text `License` field's first line.
    pub license_field: Option<String>,
    /// `License ::` classifiers.
    pub license_classifiers: Vec<String>,
    /// Names (normalized) of the distributions it requires, extras left out.
    pub requires: Vec<String>,
    #[serde(skip)]
    pub dist_info: String,
    #[serde(skip)]
    pub files: Vec<String>,
}

/// Where the image's Python came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Interpreter {
    /// `3.11`, or the full version where the image tells it.
    pub version: String,
    pub path: String,
    /// `debian`, `python-build-standalone`, `source` (built into
    /// /usr/local, as Docker's python images are).
    pub origin: String,
    /// The Debian package holding it, for `debian`.
    pub package: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Contents {
    pub os: Option<String>,
    pub os_id: Option<String>,
    pub os_version: Option<String>,
    pub debs: Vec<DebPackage>,
    pub dists: Vec<Dist>,
    pub interpreter: Option<Interpreter>,
    /// The text of every `LicenseRef-` a package's license names.
    #[serde(skip)]
    pub license_refs: BTreeMap<String, Extracted>,
}

/// The dpkg database and os-release: kept whole in [`Facts`].
fn is_database(path: &str) -> bool {
    path == "var/lib/dpkg/status"
        || path.starts_with("var/lib/dpkg/status.d/")
        || path == "etc/os-release"
        || path == "usr/lib/os-release"
}

/// Files whose bytes [`Contents::read`] and [`Contents::attribute`] need,
/// and the doc directories that may be links to another package's.
pub fn wanted(path: &str) -> bool {
    is_database(path)
        || (path.starts_with("var/lib/dpkg/info/") && path.ends_with(".list"))
        || (path.starts_with("usr/share/doc/") && path.ends_with("/copyright"))
        || path
            .strip_prefix("usr/share/doc/")
            .is_some_and(|d| !d.contains('/'))
        || path.ends_with(".dist-info/METADATA")
        || path.ends_with(".dist-info/RECORD")
}

/// What an SBOM needs of a set of layers, small enough to cache per
/// layer: the package databases' and metadata files' texts (a METADATA
/// file's headers only), each Debian package's declared license, the
/// interpreters' paths.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Facts {
    pub texts: BTreeMap<String, String>,
    /// By doc directory (`usr/share/doc/PKG`).
    pub licenses: BTreeMap<String, license::Declared>,
    pub pythons: Vec<String>,
    /// What the layer's whiteouts remove from the layers below it.
    #[serde(default)]
    pub removed: Vec<String>,
}

impl Facts {
    pub fn from_walk(w: &super::walk::Walk) -> Facts {
        let (kept, tree) = (&w.kept, &w.tree);
        let mut f = Facts::default();
        for (path, bytes) in kept {
            let text = String::from_utf8_lossy(bytes);
            if let Some(pkg) = path
                .strip_prefix("usr/share/doc/")
                .and_then(|r| r.strip_suffix("/copyright"))
                .filter(|p| !p.contains('/'))
            {
                if let Some(d) = license::debian(&text, pkg) {
                    f.licenses.insert(format!("usr/share/doc/{pkg}"), d);
                }
            } else if path.ends_with(".dist-info/METADATA") {
                let head = text.split("\n\n").next().unwrap_or("");
                f.texts.insert(path.clone(), head.to_string());
            } else if is_database(path) {
                f.texts.insert(path.clone(), text.into_owned());
            }
        }
        // A package whose doc directory links to another's (dh_installdocs
        // --link-doc) is under that one's copyright.
        for (path, target) in &w.links {
            let Some(other) = target.trim_end_matches('/').rsplit('/').next() else {
                continue;
            };
            if let Some(d) = f.licenses.get(&format!("usr/share/doc/{other}")).cloned() {
                f.licenses.insert(path.clone(), d);
            }
        }
        f.pythons = tree
            .iter()
            .filter(|(p, n)| n.kind != Kind::Dir && is_python_binary(p))
            .map(|(p, _)| p.clone())
            .collect();
        f.removed = w.whiteouts.clone();
        f
    }

    /// Layers' facts, lowest first, as one image's: each layer's
    /// whiteouts remove what the layers below said first.
    pub fn stack(layers: impl IntoIterator<Item = Facts>) -> Facts {
        let mut out = Facts::default();
        for l in layers {
            for r in &l.removed {
                let gone = |p: &String| match r.strip_suffix('/') {
                    Some(dir) => dir.is_empty() || p.starts_with(r.as_str()),
                    None => p == r || p.starts_with(&format!("{r}/")),
                };
                out.texts.retain(|p, _| !gone(p));
                out.licenses.retain(|p, _| !gone(p));
                out.pythons.retain(|p| !gone(p));
            }
            out.texts.extend(l.texts);
            out.licenses.extend(l.licenses);
            out.pythons.extend(l.pythons);
        }
        out.pythons.sort();
        out.pythons.dedup();
        out
    }
}

/// `usr/bin/python3.11`, `opt/python/bin/python3.13t`.
fn is_python_binary(p: &str) -> bool {
    let Some((dir, file)) = p.rsplit_once('/') else {
        return false;
    };
    dir.ends_with("bin")
        && file.strip_prefix("python3.").is_some_and(|v| {
            !v.is_empty() && v.trim_end_matches('t').bytes().all(|b| b.is_ascii_digit())
        })
}

impl Contents {
    /// What `facts` say the image holds; `env` is the image's (Docker's
    /// python images name their version there).
    pub fn read(facts: &Facts, env: &[String]) -> Contents {
        let text = |p: &str| facts.texts.get(p).cloned();
        let mut c = Contents::default();
        if let Some(os) = text("etc/os-release").or_else(|| text("usr/lib/os-release")) {
            let field = |k: &str| {
                os.lines()
                    .find_map(|l| l.strip_prefix(&format!("{k}=")))
                    .map(|v| v.trim_matches('"').to_string())
            };
            c.os = field("PRETTY_NAME");
            c.os_id = field("ID");
            c.os_version = field("VERSION_ID");
        }
        let mut debs: Vec<DebPackage> = facts
            .texts
            .iter()
            .filter(|(p, _)| *p == "var/lib/dpkg/status" || p.starts_with("var/lib/dpkg/status.d/"))
            .flat_map(|(_, s)| parse_status(s))
            .collect();
        debs.sort_by(|a, b| (&a.name, &a.architecture).cmp(&(&b.name, &b.architecture)));
        debs.dedup_by(|a, b| a.name == b.name && a.architecture == b.architecture);
        for mut d in debs {
            if let Some(declared) = facts.licenses.get(&format!("usr/share/doc/{}", d.name)) {
                d.license = Some(c.add_refs(declared.clone(), &d.name));
            }
            c.debs.push(d);
        }
        for (path, head) in &facts.texts {
            if let Some(dir) = path
                .strip_suffix("/METADATA")
                .filter(|d| d.ends_with(".dist-info"))
            {
                if let Some(d) = parse_dist(dir, head) {
                    c.dists.push(d);
                }
            }
        }
        c.dists
            .sort_by(|a, b| (&a.location, &a.name).cmp(&(&b.location, &b.name)));
        c.interpreter = interpreter(&facts.pythons, &c.debs, env);
        c
    }

    /// Gives each package the files of the tree it owns: a Debian
    /// package's `.list`, a distribution's RECORD.
    pub fn attribute(&mut self, kept: &BTreeMap<String, Vec<u8>>, tree: &BTreeMap<String, Node>) {
        let text = |p: &str| kept.get(p).map(|b| String::from_utf8_lossy(b).into_owned());
        for d in self.debs.iter_mut() {
            let list = [
                format!("var/lib/dpkg/info/{}:{}.list", d.name, d.architecture),
                format!("var/lib/dpkg/info/{}.list", d.name),
            ]
            .into_iter()
            .find_map(|p| text(&p));
            if let Some(list) = list {
                d.files = list.lines().filter_map(|l| in_tree(l, tree)).collect();
            }
        }
        for d in self.dists.iter_mut() {
            if let Some(record) = text(&format!("{}/RECORD", d.dist_info)) {
                d.files = record
                    .lines()
                    .filter_map(record_path)
                    .filter_map(|p| in_tree(&format!("{}/{p}", d.location), tree))
                    .collect();
            }
        }
    }

    /// Keeps the texts a license names; a `LicenseRef-` another package
    /// already defined with a different text gets the package's name.
    fn add_refs(&mut self, declared: license::Declared, package: &str) -> String {
        let mut expression = declared.expression;
        for (id, extracted) in declared.refs {
            let id = match self.license_refs.get(&id) {
                Some(e) if *e != extracted => {
                    let own = format!("{id}-{}", license::idstring(package));
                    expression = expression
                        .split(' ')
                        .map(|t| if t == id { own.as_str() } else { t })
                        .collect::<Vec<_>>()
                        .join(" ");
                    own
                }
                _ => id,
            };
            self.license_refs.insert(id, extracted);
        }
        expression
    }
}

/// A path as a `.list` or RECORD names it, as the tree holds it: a
/// merged-/usr image keeps `/lib/x` at `usr/lib/x`.
fn in_tree(line: &str, tree: &BTreeMap<String, Node>) -> Option<String> {
    let p = normalize(line.trim())?;
    if tree.contains_key(&p) {
        return Some(p);
    }
    slimpack_debian::merged_usr(&p).filter(|u| tree.contains_key(u))
}

/// Joins `..` away; `None` when it leaves the root.
fn normalize(p: &str) -> Option<String> {
    let mut out: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            x => out.push(x),
        }
    }
    (!out.is_empty()).then(|| out.join("/"))
}

fn parse_status(s: &str) -> Vec<DebPackage> {
    let mut out = Vec::new();
    for stanza in s.split("\n\n") {
        let field = |k: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix(':')))
                .map(|v| v.trim().to_string())
        };
        let (Some(name), Some(version)) = (field("Package"), field("Version")) else {
            continue;
        };
        if field("Status").is_some_and(|s| !s.ends_with(" installed")) {
            continue;
        }
        let architecture = field("Architecture").unwrap_or_default();
        let (source, source_version) = match field("Source") {
            Some(src) => match src.split_once(' ') {
                Some((n, v)) => (
                    n.to_string(),
                    v.trim_matches(|c| c == '(' || c == ')' || c == ' ')
                        .to_string(),
                ),
                None => (src, version.clone()),
            },
            None => (name.clone(), version.clone()),
        };
        out.push(DebPackage {
            name,
            version,
            architecture,
            source,
            source_version,
            license: None,
            files: Vec::new(),
        });
    }
    out
}

/// PEP 503's normalized name.
pub fn normalize_name(n: &str) -> String {
    let mut out = String::new();
    for c in n.chars() {
        let c = c.to_ascii_lowercase();
        if matches!(c, '-' | '_' | '.') {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn parse_dist(dist_info: &str, head: &str) -> Option<Dist> {
    let values = |k: &str| -> Vec<String> {
        head.lines()
            .filter_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix(':')))
            .map(|v| v.trim().to_string())
            .collect()
    };
    let name = values("Name").into_iter().next()?;
    let version = values("Version").into_iter().next()?;
    let location = dist_info
        .rsplit_once('/')
        .map(|(d, _)| d.to_string())
        .unwrap_or_default();
    let requires: BTreeSet<String> = values("Requires-Dist")
        .iter()
        .filter(|r| !r.contains("extra =="))
        .filter_map(|r| {
            let end =
                r.find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')));
            let n = &r[..end.unwrap_or(r.len())];
            (!n.is_empty()).then(|| normalize_name(n))
        })
        .collect();
    Some(Dist {
        name,
        version,
        location,
        dist_info: dist_info.to_string(),
        license_expression: values("License-Expression").into_iter().next(),
        license_field: values("License").into_iter().next(),
        license_classifiers: values("Classifier")
            .into_iter()
            .filter(|c| c.starts_with("License ::"))
            .collect(),
        requires: requires.into_iter().collect(),
        files: Vec::new(),
    })
}

/// The path of a RECORD line (a CSV row whose first field may be quoted).
fn record_path(line: &str) -> Option<String> {
    let line = line.trim_end();
    if let Some(rest) = line.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = rest.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    out.push('"');
                } else {
                    return Some(out);
                }
            } else {
                out.push(c);
            }
        }
        return None;
    }
    let p = line.split(',').next()?;
    (!p.is_empty()).then(|| p.to_string())
}

fn interpreter(pythons: &[String], debs: &[DebPackage], env: &[String]) -> Option<Interpreter> {
    let minor = |dir: &str| -> Option<String> {
        pythons
            .iter()
            .filter_map(|p| p.strip_prefix(dir))
            .filter_map(|f| f.strip_prefix("python"))
            .next()
            .map(str::to_string)
    };
    if let Some(v) = minor("opt/python/bin/") {
        return Some(Interpreter {
            path: format!("/opt/python/bin/python{v}"),
            version: v,
            origin: "python-build-standalone".into(),
            package: None,
        });
    }
    if let Some(v) = minor("usr/local/bin/") {
        let full = env
            .iter()
            .find_map(|e| e.strip_prefix("PYTHON_VERSION="))
            .filter(|f| f.starts_with(v.trim_end_matches('t')))
            .map(str::to_string);
        return Some(Interpreter {
            path: format!("/usr/local/bin/python{v}"),
            version: full.unwrap_or(v),
            origin: "source".into(),
            package: None,
        });
    }
    let v = minor("usr/bin/")?;
    let package = debs
        .iter()
        .find(|d| d.name == format!("python{v}-minimal"))
        .or_else(|| {
            debs.iter()
                .find(|d| d.name == format!("libpython{v}-minimal"))
        });
    Some(Interpreter {
        path: format!("/usr/bin/python{v}"),
        version: package.map(|p| upstream_version(&p.version)).unwrap_or(v),
        origin: "debian".into(),
        package: package.map(|p| p.name.clone()),
    })
}

/// `3.11.2` of Debian's `3.11.2-6+deb12u6` (epoch and revision dropped).
fn upstream_version(v: &str) -> String {
    let v = v.split_once(':').map(|(_, r)| r).unwrap_or(v);
    v.rsplit_once('-').map(|(u, _)| u).unwrap_or(v).to_string()
}

/// The one category of a file of the final tree.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Category {
    /// What slimpack would not ship, with its kind.
    Leftover(&'static str),
    Bytecode,
    Python(String),
    Interpreter,
    System(String),
    App,
    Other,
}

impl Category {
    pub fn group(&self) -> &'static str {
        match self {
            Category::Leftover(_) => "leftovers",
            Category::Bytecode => "bytecode",
            Category::Python(_) => "python packages",
            Category::Interpreter => "interpreter and stdlib",
            Category::System(_) => "system packages",
            Category::App => "app",
            Category::Other => "other",
        }
    }

    /// The distribution, Debian package or kind of leftover.
    pub fn item(&self) -> Option<&str> {
        match self {
            Category::Leftover(k) => Some(k),
            Category::Python(d) | Category::System(d) => Some(d),
            _ => None,
        }
    }
}

/// Which leftover a path is, if any: caches, indexes, build tools and
/// files no Python app reads, that the seeds' recipe and slimpack leave
/// out.
pub fn leftover(path: &str) -> Option<&'static str> {
    let file = path.rsplit('/').next().unwrap_or(path);
    let in_site = path.contains("/site-packages/") || path.contains("/dist-packages/");
    if path.contains("/.cache/pip/") || path.starts_with("root/.cache/") {
        return Some("pip and tool caches");
    }
    if path.starts_with("var/lib/apt/lists/")
        || path.starts_with("var/cache/apt/")
        || path.starts_with("var/cache/debconf/")
    {
        return Some("apt indexes and caches");
    }
    if path.starts_with("var/log/") {
        return Some("logs");
    }
    if path.starts_with("usr/lib/gcc/")
        || path.starts_with("usr/libexec/gcc/")
        || (path.starts_with("usr/bin/") && is_toolchain(file))
    {
        return Some("compilers");
    }
    if path.starts_with("usr/include/") || (path.contains("/include/") && file.ends_with(".h")) {
        return Some("C headers");
    }
    if file.ends_with(".a") && !in_site {
        return Some("static libraries");
    }
    if (path.starts_with("usr/share/doc/") && file != "copyright")
        || path.starts_with("usr/share/man/")
        || path.starts_with("usr/share/info/")
    {
        return Some("docs");
    }
    if path.starts_with("usr/share/locale/") {
        return Some("locales");
    }
    if in_site {
        let rel = path
            .split_once("-packages/")
            .map(|(_, r)| r)
            .unwrap_or(path);
        let top = rel.split('/').next().unwrap_or("");
        let top_name = normalize_name(top.split('-').next().unwrap_or(top));
        if matches!(
            top_name.as_str(),
            "pip" | "setuptools" | "wheel" | "pkg-resources" | "distutils-precedence.pth"
        ) || top == "_distutils_hack"
            || top == "distutils-precedence.pth"
        {
            return Some("pip and setuptools");
        }
        if rel
            .split('/')
            .any(|p| matches!(p, "tests" | "test" | "testing"))
        {
            return Some("test suites");
        }
        if file.ends_with(".pyi") {
            return Some("type stubs");
        }
    }
    None
}

fn is_toolchain(file: &str) -> bool {
    let f = file.strip_prefix("x86_64-linux-gnu-").unwrap_or(file);
    let base = f.split_once('-').map(|(b, _)| b).unwrap_or(f);
    matches!(
        base,
        "gcc" | "g++" | "cc" | "c++" | "cpp" | "as" | "ld" | "ld.bfd" | "ld.gold" | "cc1" | "make"
    )
}

fn is_interpreter(path: &str) -> bool {
    if path.starts_with("opt/python/") {
        return !path.contains("/site-packages/");
    }
    for prefix in ["usr/lib/", "usr/local/lib/"] {
        if let Some(rest) = path.strip_prefix(prefix) {
            if rest.starts_with("python3.")
                && !rest.contains("/site-packages/")
                && !rest.contains("/dist-packages/")
            {
                return true;
            }
            if rest.starts_with("libpython3") || rest.starts_with("x86_64-linux-gnu/libpython3") {
                return true;
            }
        }
    }
    for prefix in ["usr/bin/", "usr/local/bin/"] {
        if let Some(f) = path.strip_prefix(prefix) {
            if f.starts_with("python3") && !f.contains('/') {
                return true;
            }
        }
    }
    false
}

/// Puts each regular file of the tree in its category. `workdir`: the
/// image's working directory (the app), `/`-less.
pub fn categorize(
    tree: &BTreeMap<String, Node>,
    contents: &Contents,
    workdir: &str,
) -> BTreeMap<String, Category> {
    let mut owner: BTreeMap<&str, Category> = BTreeMap::new();
    for d in &contents.debs {
        for f in &d.files {
            owner
                .entry(f)
                .or_insert_with(|| Category::System(d.name.clone()));
        }
    }
    // A distribution's own files win over a Debian package's (a
    // dist-packages module is both).
    for d in &contents.dists {
        for f in &d.files {
            owner.insert(f, Category::Python(d.name.clone()));
        }
    }
    let app = if workdir.is_empty() || workdir == "/" {
        None
    } else {
        Some(format!("{}/", workdir.trim_matches('/')))
    };
    tree.iter()
        .filter(|(_, n)| n.kind == Kind::File)
        .map(|(p, _)| {
            let c = if let Some(k) = leftover(p) {
                Category::Leftover(k)
            } else if p.ends_with(".pyc") {
                Category::Bytecode
            } else if let Some(c @ Category::Python(_)) = owner.get(p.as_str()) {
                c.clone()
            } else if is_interpreter(p) {
                Category::Interpreter
            } else if app.as_deref().is_some_and(|a| p.starts_with(a)) {
                Category::App
            } else if let Some(c) = owner.get(p.as_str()) {
                c.clone()
            } else {
                Category::Other
            };
            (p.clone(), c)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftovers_are_named_by_kind() {
        assert_eq!(
            leftover("root/.cache/pip/http/x"),
            Some("pip and tool caches")
        );
        assert_eq!(
            leftover("var/lib/apt/lists/deb.debian.org_InRelease"),
            Some("apt indexes and caches")
        );
        assert_eq!(
            leftover("usr/bin/x86_64-linux-gnu-gcc-12"),
            Some("compilers")
        );
        assert_eq!(
            leftover("usr/include/postgresql/libpq-fe.h"),
            Some("C headers")
        );
        assert_eq!(leftover("usr/share/doc/libpq5/copyright"), None);
        assert_eq!(leftover("usr/share/doc/libpq5/changelog.gz"), Some("docs"));
        assert_eq!(
            leftover("opt/venv/lib/python3.11/site-packages/pip/__init__.py"),
            Some("pip and setuptools")
        );
        assert_eq!(
            leftover("opt/venv/lib/python3.11/site-packages/pip-24.0.dist-info/RECORD"),
            Some("pip and setuptools")
        );
        assert_eq!(
            leftover("opt/venv/lib/python3.11/site-packages/flask/app.py"),
            None
        );
        assert_eq!(
            leftover("opt/venv/lib/python3.11/site-packages/greenlet/tests/t.py"),
            Some("test suites")
        );
        assert_eq!(leftover("usr/bin/python3.11"), None);
        assert_eq!(leftover("usr/bin/asdf"), None);
    }

    #[test]
    fn dpkg_status_and_source_fields() {
        let s = "Package: libpq5\nStatus: install ok installed\nArchitecture: amd64\nSource: postgresql-15\nVersion: 15.8-0+deb12u1\n\nPackage: libssl3\nStatus: install ok installed\nArchitecture: amd64\nSource: openssl (3.0.15-1~deb12u1)\nVersion: 3.0.15-1~deb12u1+b1\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1\n";
        let p = parse_status(s);
        assert_eq!(p.len(), 2);
        assert_eq!(
            (p[0].source.as_str(), p[0].source_version.as_str()),
            ("postgresql-15", "15.8-0+deb12u1")
        );
        assert_eq!(
            (p[1].source.as_str(), p[1].source_version.as_str()),
            ("openssl", "3.0.15-1~deb12u1")
        );
    }

    /// dh_installdocs --link-doc: libpython3.11-minimal's doc directory is
    /// a link to python3.11-minimal's, whose copyright covers both.
    #[test]
    fn a_linked_doc_directory_takes_the_license_it_links_to() {
        let mut w = super::super::walk::Walk::default();
        let dep5 = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\nCopyright: x\nLicense: Expat\n";
        w.kept.insert(
            "usr/share/doc/python3.11-minimal/copyright".into(),
            dep5.into(),
        );
        w.links.insert(
            "usr/share/doc/libpython3.11-minimal".into(),
            "python3.11-minimal".into(),
        );
        w.kept
            .insert("usr/share/doc/README".into(), b"not a database".to_vec());
        let f = Facts::from_walk(&w);
        assert_eq!(
            f.licenses["usr/share/doc/libpython3.11-minimal"].expression,
            "MIT"
        );
        assert!(f.texts.is_empty(), "{:?}", f.texts);
        let status = "Package: libpython3.11-minimal\nStatus: install ok installed\nVersion: 3.11.2-6\nArchitecture: amd64\n";
        let mut f = f;
        f.texts.insert("var/lib/dpkg/status".into(), status.into());
        assert_eq!(
            Contents::read(&f, &[]).debs[0].license.as_deref(),
            Some("MIT")
        );
    }

    #[test]
    fn a_later_layers_whiteouts_remove_what_lower_ones_said() {
        let mut low = Facts::default();
        low.texts.insert(
            "venv/site/pip-24.dist-info/METADATA".into(),
            "Name: pip".into(),
        );
        low.texts.insert(
            "venv/site/flask-3.dist-info/METADATA".into(),
            "Name: flask".into(),
        );
        low.texts.insert("opt/x/a".into(), String::new());
        low.pythons.push("usr/bin/python3.11".into());
        let high = Facts {
            removed: vec![
                "venv/site/pip-24.dist-info".into(),
                "opt/x/".into(),
                "usr/bin/python3.11".into(),
            ],
            ..Default::default()
        };
        let s = Facts::stack([low, high]);
        assert_eq!(
            s.texts.keys().collect::<Vec<_>>(),
            vec!["venv/site/flask-3.dist-info/METADATA"]
        );
        assert!(s.pythons.is_empty());
    }

    #[test]
    fn record_lines_and_paths() {
        assert_eq!(
            record_path("flask/app.py,sha256=x,12").as_deref(),
            Some("flask/app.py")
        );
        assert_eq!(
            record_path("\"a,\"\"b\"\".py\",,").as_deref(),
            Some("a,\"b\".py")
        );
        assert_eq!(
            normalize("opt/venv/lib/python3.11/site-packages/../../../bin/flask").as_deref(),
            Some("opt/venv/bin/flask")
        );
        assert_eq!(normalize("../../etc/passwd"), None);
        assert_eq!(upstream_version("3.11.2-6+deb12u6"), "3.11.2");
        assert_eq!(upstream_version("1:2.3-1"), "2.3");
        assert_eq!(normalize_name("Flask_SQLAlchemy"), "flask-sqlalchemy");
    }
}
