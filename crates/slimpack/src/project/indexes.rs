//! Package indexes: where the project (and the environment) says packages
//! come from. uv's `[[tool.uv.index]]` and `[tool.uv.sources]`, Poetry's
//! `[[tool.poetry.source]]`, Pipfile's `[[source]]`, `--index-url` lines
//! of requirements files, and uv's and pip's environment variables, read
//! into one list in the order uv searches them.
//!
//! Only what may be printed and keyed is kept here: URLs without their
//! credentials. A password written into a project file would be copied into
//! the image with the file, so it is refused; a `${VAR}` in a URL's user
//! part is kept as written and filled in from the environment when uv runs.

use crate::project::normalize_name;
use anyhow::{anyhow, bail, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use toml::Value;

/// PyPI's simple index, which uv searches last unless another default is
/// declared.
pub const PYPI: &str = "https://pypi.org/simple";

/// How uv uses an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Searched before the default, in order; the first index that has a
    /// package is the only one asked for it.
    Index,
    /// Replaces PyPI as the index searched last.
    Default,
    /// Used only for the packages pinned to it, and those never come from
    /// another index.
    Explicit,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Index {
    /// The name uv knows it by (declared, or made from the host): the
    /// `UV_INDEX_<NAME>_USERNAME` / `_PASSWORD` variables use it.
    pub name: String,
    /// Without credentials (a `${VAR}` user part is not part of it) and
    /// without a trailing `/`: compared as it is with uv's and locks' URLs.
    pub url: String,
    pub kind: Kind,
    /// Where it was declared (`pyproject.toml [[tool.uv.index]] corp`).
    pub origin: String,
    /// A user part as written (`${USER}:${TOKEN}`), filled in from the
    /// environment when uv runs; never printed or keyed.
    #[serde(skip)]
    pub userinfo: Option<String>,
}

impl Index {
    /// uv's environment variable prefix for this index's credentials.
    pub fn env_prefix(&self) -> String {
        let upper: String = self
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        format!("UV_INDEX_{upper}")
    }

    /// The host, without port.
    pub fn host(&self) -> &str {
        host_of(&self.url)
    }
}

/// The indexes in uv's order of search, and the packages pinned to one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Indexes {
    pub indexes: Vec<Index>,
    /// Normalized package name → the name of the index it must come from.
    pub pins: BTreeMap<String, String>,
    /// What was declared but cannot be enforced (for the plan's warnings).
    #[serde(skip)]
    pub notes: Vec<String>,
}

impl Indexes {
    /// Nothing declared: PyPI only, as before.
    pub fn is_empty(&self) -> bool {
        self.indexes.is_empty() && self.pins.is_empty()
    }

    pub fn by_name(&self, name: &str) -> Option<&Index> {
        self.indexes.iter().find(|i| i.name == name)
    }

    /// The index a resolution that did not say otherwise took from: the
    /// declared default, else PyPI.
    pub fn default_url(&self) -> &str {
        self.indexes
            .iter()
            .find(|i| i.kind == Kind::Default)
            .map_or(PYPI, |i| i.url.as_str())
    }

    fn push(&mut self, mut index: Index) {
        if let Some(same) = self.indexes.iter().find(|i| i.url == index.url) {
            // Declared twice (a requirements file and the environment):
            // one index, the first declaration's.
            if index.kind == Kind::Default && same.kind != Kind::Explicit {
                let name = same.name.clone();
                self.indexes.retain(|i| i.name != name);
                index.name = name;
                self.indexes.push(index);
            }
            return;
        }
        // The first default wins (the environment is read first, as uv
        // lets its flags and variables override a project); a later one is
        // still searched, before it.
        if index.kind == Kind::Default && self.indexes.iter().any(|i| i.kind == Kind::Default) {
            index.kind = Kind::Index;
        }
        let base = index.name.clone();
        let mut n = 2;
        while self.by_name(&index.name).is_some() {
            index.name = format!("{base}-{n}");
            n += 1;
        }
        self.indexes.push(index);
    }

    fn pin(&mut self, package: &str, index: &str, origin: &str) -> Result<()> {
        let package = normalize_name(package);
        if let Some(other) = self.pins.get(&package).filter(|o| *o != index) {
            bail!(
                "{origin}: {package} is pinned to index {other:?} and to {index:?}; pin it to one"
            );
        }
        self.pins.insert(package, index.to_string());
        Ok(())
    }

    /// `other`'s indexes after these (as if declared after them), its pins
    /// and notes.
    fn merge(&mut self, other: &Indexes) -> Result<()> {
        for i in &other.indexes {
            self.push(i.clone());
        }
        for (package, index) in &other.pins {
            self.pin(package, index, &format!("the pin of {package}"))?;
        }
        self.notes.extend(other.notes.iter().cloned());
        Ok(())
    }

    /// Every pin names a declared index.
    fn check_pins(&self, origin: &str) -> Result<()> {
        for (package, index) in &self.pins {
            if self.by_name(index).is_none() {
                let known: Vec<&str> = self.indexes.iter().map(|i| i.name.as_str()).collect();
                bail!(
                    "{origin}: {package} is pinned to the index {index:?}, which is not declared (declared: {})",
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                );
            }
        }
        Ok(())
    }
}

/// The indexes of the environment (`env` looks a variable up), then those
/// the project's files declared (read with them: `pyproject`'s and the
/// Pipfile's), then the index lines of requirements files.
pub fn read(
    declared: &[&Indexes],
    requirements: &[super::requirements::IndexLine],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Indexes> {
    let mut out = Indexes::default();
    from_env(env, &mut out)?;
    for d in declared {
        out.merge(d)?;
    }
    for line in requirements {
        let kind = if line.extra {
            Kind::Index
        } else {
            Kind::Default
        };
        out.push(Index::declared(None, &line.url, kind, &line.origin, false)?);
    }
    out.check_pins("the project's index pins")?;
    Ok(out)
}

impl Index {
    /// An index as a project or the environment declares it: the URL split
    /// from its user part ([`split_url`]), named `name` or after its host.
    fn declared(
        name: Option<&str>,
        url: &str,
        kind: Kind,
        origin: &str,
        from_env: bool,
    ) -> Result<Index> {
        if let Some(n) = name.filter(|n| !valid_name(n)) {
            bail!("{origin}: the name {n:?} may hold only letters, digits, '-', '_' and '.'");
        }
        let (url, userinfo) = split_url(url, origin, from_env)?;
        Ok(Index {
            name: name.map_or_else(|| name_from_url(&url), str::to_string),
            url,
            kind,
            origin: origin.to_string(),
            userinfo,
        })
    }

    /// A named source table of a project file (`name`, `url`).
    fn source(table: &Value, name: &str, kind: Kind, at: &str) -> Result<Index> {
        Index::declared(Some(name), required(table, "url", at)?, kind, at, false)
    }
}

/// `key` of a source table, which it must have.
fn required<'a>(table: &'a Value, key: &str, at: &str) -> Result<&'a str> {
    table
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("{at}: needs a {key}"))
}

/// The array of tables at `path` in `doc` (none when absent).
fn tables<'a>(doc: &'a Value, path: &[&str]) -> &'a [Value] {
    path.iter()
        .try_fold(doc, |v, k| v.get(k))
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// uv's and pip's variables, as uv reads them: one default index each, or
/// a space-separated list of extra ones.
fn from_env(env: &dyn Fn(&str) -> Option<String>, out: &mut Indexes) -> Result<()> {
    const VARS: [(&str, Kind); 6] = [
        ("UV_DEFAULT_INDEX", Kind::Default),
        ("UV_INDEX_URL", Kind::Default),
        ("PIP_INDEX_URL", Kind::Default),
        ("UV_INDEX", Kind::Index),
        ("UV_EXTRA_INDEX_URL", Kind::Index),
        ("PIP_EXTRA_INDEX_URL", Kind::Index),
    ];
    for (var, kind) in VARS {
        let value = env(var).unwrap_or_default();
        let values: Vec<&str> = match kind {
            Kind::Default => Some(value.trim())
                .filter(|v| !v.is_empty())
                .into_iter()
                .collect(),
            _ => value.split_whitespace().collect(),
        };
        for v in values {
            let (name, url) = named(v);
            out.push(Index::declared(
                name,
                url,
                kind,
                &format!("environment {var}"),
                true,
            )?);
        }
    }
    Ok(())
}

/// `name=URL` as uv's `--index` takes it, or a bare URL.
fn named(v: &str) -> (Option<&str>, &str) {
    match v.split_once('=') {
        Some((n, url)) if !n.contains(':') && !n.contains('/') && valid_name(n) => (Some(n), url),
        _ => (None, v),
    }
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// What a pyproject.toml declares: uv's, Poetry's and PDM's indexes and
/// pins (the caller has the document parsed already).
pub fn from_pyproject(doc: &Value) -> Result<Indexes> {
    let mut out = Indexes::default();
    from_uv(doc, &mut out)?;
    from_poetry(doc, &mut out)?;
    from_pdm(doc, &mut out)?;
    Ok(out)
}

/// `[[tool.uv.index]]` and the `index = "…"` sources of `[tool.uv.sources]`.
fn from_uv(doc: &Value, out: &mut Indexes) -> Result<()> {
    let uv = doc.get("tool").and_then(|t| t.get("uv"));
    if uv
        .and_then(|u| u.get("index"))
        .is_some_and(|i| !i.is_array())
    {
        bail!("pyproject.toml: [[tool.uv.index]] must be an array of tables");
    }
    for (n, item) in tables(doc, &["tool", "uv", "index"]).iter().enumerate() {
        let name = item.get("name").and_then(Value::as_str);
        let at = format!(
            "pyproject.toml [[tool.uv.index]] {}",
            name.map_or_else(|| format!("#{}", n + 1), str::to_string)
        );
        let flag = |k: &str| item.get(k).and_then(Value::as_bool) == Some(true);
        let kind = if flag("explicit") {
            if name.is_none() {
                bail!(
                    "{at}: an explicit index needs a name for [tool.uv.sources] to pin packages to"
                );
            }
            Kind::Explicit
        } else if flag("default") {
            Kind::Default
        } else {
            Kind::Index
        };
        out.push(Index::declared(
            name,
            required(item, "url", &at)?,
            kind,
            &at,
            false,
        )?);
    }
    let Some(Value::Table(sources)) = uv.and_then(|u| u.get("sources")) else {
        return Ok(());
    };
    for (package, source) in sources {
        // A list of sources by marker: each names its index.
        let all: Vec<&Value> = match source {
            Value::Array(a) => a.iter().collect(),
            v => vec![v],
        };
        for s in all {
            if let Some(index) = s.get("index").and_then(Value::as_str) {
                out.pin(package, index, "pyproject.toml [tool.uv.sources]")?;
            }
        }
    }
    Ok(())
}

/// `[[tool.poetry.source]]` with its `priority`, and `source = "…"` on
/// Poetry dependencies. Poetry searches primary sources in order and
/// leaves PyPI out once one is declared (unless a source is named PyPI);
/// supplemental sources are searched before PyPI here, as uv cannot search
/// after its default.
fn from_poetry(doc: &Value, out: &mut Indexes) -> Result<()> {
    let Some(poetry) = doc.get("tool").and_then(|t| t.get("poetry")) else {
        return Ok(());
    };
    let mut declared_pypi = false;
    let mut last_primary = None;
    for (n, s) in tables(poetry, &["source"]).iter().enumerate() {
        let name = required(
            s,
            "name",
            &format!("pyproject.toml [[tool.poetry.source]] #{}", n + 1),
        )?;
        if name.eq_ignore_ascii_case("pypi") {
            declared_pypi = true;
            continue;
        }
        let at = format!("pyproject.toml [[tool.poetry.source]] {name}");
        let legacy_secondary = s.get("secondary").and_then(Value::as_bool) == Some(true);
        let priority = s
            .get("priority")
            .and_then(Value::as_str)
            .unwrap_or(if legacy_secondary {
                "supplemental"
            } else {
                "primary"
            });
        let kind = match priority {
            "primary" | "default" => {
                last_primary = Some(name);
                Kind::Index
            }
            "supplemental" | "secondary" => Kind::Index,
            "explicit" => Kind::Explicit,
            other => {
                bail!("{at}: unknown priority {other:?} (primary, supplemental or explicit)")
            }
        };
        out.push(Index::source(s, name, kind, &at)?);
    }
    // PyPI is left out: the last primary source takes its place.
    if !declared_pypi && !out.indexes.iter().any(|i| i.kind == Kind::Default) {
        if let Some(i) = out
            .indexes
            .iter_mut()
            .find(|i| Some(i.name.as_str()) == last_primary)
        {
            i.kind = Kind::Default;
        }
    }
    let groups = poetry.get("group").and_then(Value::as_table);
    let dependency_tables = poetry
        .get("dependencies")
        .into_iter()
        .chain(
            groups
                .into_iter()
                .flat_map(|g| g.values().filter_map(|g| g.get("dependencies"))),
        )
        .filter_map(Value::as_table);
    for t in dependency_tables {
        for (package, spec) in t {
            if let Some(source) = spec.get("source").and_then(Value::as_str) {
                if !source.eq_ignore_ascii_case("pypi") {
                    out.pin(package, source, "pyproject.toml [tool.poetry.dependencies]")?;
                }
            }
        }
    }
    Ok(())
}

/// PDM's `[[tool.pdm.source]]`: one named `pypi` replaces PyPI, the others
/// are searched before it; `include_packages` names pin packages to a
/// source (patterns cannot be pinned: said in the plan's warnings).
fn from_pdm(doc: &Value, out: &mut Indexes) -> Result<()> {
    for (n, s) in tables(doc, &["tool", "pdm", "source"]).iter().enumerate() {
        if s.get("type").and_then(Value::as_str).unwrap_or("index") != "index" {
            continue;
        }
        let name = required(
            s,
            "name",
            &format!("pyproject.toml [[tool.pdm.source]] #{}", n + 1),
        )?;
        let at = format!("pyproject.toml [[tool.pdm.source]] {name}");
        let kind = if name.eq_ignore_ascii_case("pypi") {
            Kind::Default
        } else {
            Kind::Index
        };
        out.push(Index::source(s, name, kind, &at)?);
        let include = crate::core::fs::toml_strings(
            s.get("include_packages"),
            &format!("{at}: include_packages"),
        )?;
        for p in include {
            if p.contains(['*', '?', '[']) {
                out.notes.push(format!("{at}: include_packages {p:?} is a pattern; slimpack pins only exact names, so packages matching it may come from another index"));
            } else {
                out.pin(&p, name, &at)?;
            }
        }
    }
    Ok(())
}

/// What a Pipfile declares (`doc`, parsed by the caller): its
/// `[[source]]`s, the first being where packages come from and the others
/// serving only packages that name them (`index = "…"`), as Pipenv
/// installs them; and those pins.
pub fn from_pipfile(doc: &Value) -> Result<Indexes> {
    let mut out = Indexes::default();
    for (n, s) in tables(doc, &["source"]).iter().enumerate() {
        let at = format!("Pipfile [[source]] #{}", n + 1);
        let url = required(s, "url", &at)?;
        let name = s.get("name").and_then(Value::as_str);
        let at = name.map_or(at, |n| format!("Pipfile [[source]] {n}"));
        let index = Index::declared(
            name,
            url,
            if n == 0 {
                Kind::Default
            } else {
                Kind::Explicit
            },
            &at,
            false,
        )?;
        // PyPI first is uv's default anyway; PyPI later serves only the
        // packages that name it, as any other source.
        if n == 0 && index.url == PYPI {
            continue;
        }
        out.push(index);
    }
    for section in ["packages", "dev-packages"] {
        for (package, spec) in doc
            .get(section)
            .and_then(Value::as_table)
            .into_iter()
            .flatten()
        {
            if let Some(index) = spec.get("index").and_then(Value::as_str) {
                if out.by_name(index).is_some() {
                    out.pin(package, index, &format!("Pipfile [{section}]"))?;
                }
            }
        }
    }
    Ok(out)
}

/// The URL without its user part, and the user part when it is only
/// `${VAR}` references (filled in from the environment when uv runs).
/// Literal credentials are refused in project files (they would ship in
/// the image with the file) and taken out of URLs from the environment.
pub fn split_url(url: &str, origin: &str, from_env: bool) -> Result<(String, Option<String>)> {
    let url = url.trim();
    let Some((scheme, rest)) = url.split_once("://") else {
        bail!(
            "{origin}: {:?} is not an index URL (expected https://HOST/PATH)",
            crate::core::text::escape_controls(url)
        );
    };
    if !matches!(scheme, "http" | "https") {
        bail!("{origin}: {scheme}:// index URLs are not supported (http or https)");
    }
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return Ok((url.trim_end_matches('/').to_string(), None));
    };
    let bare = format!("{scheme}://{host}{path}")
        .trim_end_matches('/')
        .to_string();
    // A user name may be written (`__token__`, `oauth2accesstoken`); what
    // authenticates must be a variable: the password, or the user part
    // alone when there is no password (a token as user name).
    let var = |part: &str| {
        part.is_empty()
            || (part.starts_with("${")
                && part.ends_with('}')
                && !part[2..part.len() - 1].contains(['$', '{', '}']))
    };
    let only_vars = match userinfo.split_once(':') {
        Some((_, password)) => var(password),
        None => var(userinfo),
    };
    if only_vars || from_env {
        return Ok((bare, Some(userinfo.to_string())));
    }
    Err(crate::core::errors::hinted(
        format!("{origin}: the index URL for {bare} has credentials written in it; the file is copied into the image"),
        "take them out and set them in the environment instead: ${USER}:${TOKEN} in the URL (filled in when uv runs), UV_INDEX_<NAME>_USERNAME and _PASSWORD, or ~/.netrc",
    ))
}

fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let host = authority.rsplit('@').next().unwrap_or(authority);
    host.rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map_or(host, |(h, _)| h)
}

/// A name for an index declared without one: its host (and for Artifact
/// Registry its project and repository), as uv's variables can name it.
fn name_from_url(url: &str) -> String {
    let host = host_of(url);
    let mut name = host.replace('.', "-");
    if host.ends_with("-python.pkg.dev") {
        let path: Vec<&str> = url
            .split_once("://")
            .map_or("", |(_, r)| r)
            .split('/')
            .skip(1)
            .take(2)
            .collect();
        for p in path {
            name.push('-');
            name.push_str(p);
        }
    }
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::project::requirements::IndexLine;
    use std::path::Path;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn doc(text: &str) -> Value {
        crate::core::fs::parse_toml(Path::new("pyproject.toml"), text).unwrap()
    }

    fn read_pp(text: &str) -> Result<Indexes> {
        read(&[&from_pyproject(&doc(text))?], &[], &no_env)
    }

    #[test]
    fn uv_indexes_and_sources() {
        let i = read_pp(
            "[project]\nname='x'\n[tool.uv.sources]\ncorp-lib = { index = 'corp' }\n\n[[tool.uv.index]]\nname = 'corp'\nurl = 'https://us-python.pkg.dev/p/r/simple/'\nexplicit = true\n\n[[tool.uv.index]]\nname = 'mirror'\nurl = 'https://mirror.example/simple'\ndefault = true\n",
        )
        .unwrap();
        assert_eq!(i.indexes.len(), 2);
        assert_eq!(i.indexes[0].kind, Kind::Explicit);
        assert_eq!(i.indexes[0].url, "https://us-python.pkg.dev/p/r/simple");
        assert_eq!(i.indexes[1].kind, Kind::Default);
        assert_eq!(i.default_url(), "https://mirror.example/simple");
        assert_eq!(i.pins["corp-lib"], "corp");
        assert_eq!(i.indexes[0].env_prefix(), "UV_INDEX_CORP");
        let e = read_pp("[tool.uv.sources]\nx = { index = 'nope' }\n").unwrap_err();
        assert!(
            e.to_string().contains("\"nope\", which is not declared"),
            "{e}"
        );
        let e =
            read_pp("[[tool.uv.index]]\nurl = 'https://a/simple'\nexplicit = true\n").unwrap_err();
        assert!(e.to_string().contains("needs a name"), "{e}");
        // Names that could not be uv's variable names, URLs that are not
        // http(s), a control character, one package pinned twice.
        let e = read_pp("[[tool.uv.index]]\nname = 'a b'\nurl = 'https://a/simple'\n").unwrap_err();
        assert!(e.to_string().contains("may hold only letters"), "{e}");
        let e = read_pp("[[tool.uv.index]]\nname = 'a'\nurl = 'file:///etc/simple'\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("file:// index URLs are not supported"),
            "{e}"
        );
        let e =
            read_pp("[[tool.uv.index]]\nname = 'a'\nurl = \"\\u001b[31mnot a url\"\n").unwrap_err();
        assert!(!e.to_string().contains('\u{1b}'), "{e}");
        let e = read_pp("[tool.uv]\nindex = 'https://a/simple'\n").unwrap_err();
        assert!(e.to_string().contains("must be an array of tables"), "{e}");
        let e = read_pp("[tool.poetry.dependencies]\nx = { version = '*', source = 'a' }\n[tool.poetry.group.dev.dependencies]\nx = { version = '*', source = 'b' }\n[[tool.poetry.source]]\nname = 'a'\nurl = 'https://a/simple'\n[[tool.poetry.source]]\nname = 'b'\nurl = 'https://b/simple'\n").unwrap_err();
        assert!(e.to_string().contains("pinned to index"), "{e}");
    }

    #[test]
    fn a_password_in_a_project_file_is_refused_and_variables_are_kept() {
        let e = read_pp(
            "[[tool.uv.index]]\nname='c'\nurl = 'https://bob:hunter2@corp.example/simple'\n",
        )
        .unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("credentials written in it") && msg.contains("UV_INDEX_"),
            "{msg}"
        );
        assert!(!msg.contains("hunter2"), "{msg}");
        let e = read_pp(
            "[[tool.uv.index]]\nname='c'\nurl = 'https://tok3n-literal@corp.example/simple'\n",
        )
        .unwrap_err();
        assert!(!format!("{e:#}").contains("tok3n"), "{e:#}");
        let i = read_pp("[[tool.uv.index]]\nname='c'\nurl = 'https://__token__:${CORP_TOKEN}@corp.example/simple'\n").unwrap();
        assert_eq!(
            i.indexes[0].userinfo.as_deref(),
            Some("__token__:${CORP_TOKEN}")
        );
        let i = read_pp("[[tool.uv.index]]\nname='c'\nurl = 'https://${CORP_USER}:${CORP_TOKEN}@corp.example/simple'\n").unwrap();
        assert_eq!(i.indexes[0].url, "https://corp.example/simple");
        assert_eq!(
            i.indexes[0].userinfo.as_deref(),
            Some("${CORP_USER}:${CORP_TOKEN}")
        );
        // From the environment, credentials are taken out of the URL.
        let env = |k: &str| {
            (k == "PIP_INDEX_URL").then(|| "https://u:tok@pkgs.corp.example/simple/".to_string())
        };
        let i = read(&[], &[], &env).unwrap();
        assert_eq!(i.indexes[0].url, "https://pkgs.corp.example/simple");
        assert_eq!(i.indexes[0].name, "pkgs-corp-example");
        assert_eq!(i.indexes[0].kind, Kind::Default);
        assert_eq!(i.indexes[0].userinfo.as_deref(), Some("u:tok"));
        assert!(!serde_json::to_string(&i).unwrap().contains("tok"));
    }

    #[test]
    fn poetry_sources_and_priorities() {
        let i = read_pp(
            "[tool.poetry]\nname='x'\n[tool.poetry.dependencies]\npython='^3.11'\ncorp-lib = { version = '^1', source = 'corp' }\n\n[[tool.poetry.source]]\nname = 'corp'\nurl = 'https://corp.example/simple/'\npriority = 'explicit'\n\n[[tool.poetry.source]]\nname = 'internal'\nurl = 'https://internal.example/simple/'\n",
        )
        .unwrap();
        assert_eq!(i.by_name("corp").unwrap().kind, Kind::Explicit);
        // A primary source without PyPI declared takes PyPI's place.
        assert_eq!(i.by_name("internal").unwrap().kind, Kind::Default);
        assert_eq!(i.pins["corp-lib"], "corp");
        let i = read_pp("[tool.poetry]\nname='x'\n[[tool.poetry.source]]\nname='PyPI'\n[[tool.poetry.source]]\nname='internal'\nurl='https://i.example/simple'\npriority='supplemental'\n").unwrap();
        assert_eq!(i.indexes.len(), 1);
        assert_eq!(i.indexes[0].kind, Kind::Index);
        let e =
            read_pp("[[tool.poetry.source]]\nname='a'\nurl='https://a/s'\npriority='sometimes'\n")
                .unwrap_err();
        assert!(e.to_string().contains("unknown priority"), "{e}");
    }

    #[test]
    fn pipfile_sources_requirements_lines_and_the_environment_in_order() {
        let pipfile = from_pipfile(&doc(
            "[[source]]\nname='pypi'\nurl='https://pypi.org/simple'\n\n[[source]]\nname='corp'\nurl='https://corp.example/simple'\n\n[packages]\nflask='*'\ncorp-lib = { version = '*', index = 'corp' }\n",
        ))
        .unwrap();
        let env =
            |k: &str| (k == "UV_INDEX").then(|| "mirror=https://m.example/simple".to_string());
        let req = vec![IndexLine {
            extra: true,
            url: "https://extra.example/simple".to_string(),
            origin: "requirements.txt:1".to_string(),
        }];
        let i = read(&[&pipfile], &req, &env).unwrap();
        let names: Vec<(&str, Kind)> = i
            .indexes
            .iter()
            .map(|i| (i.name.as_str(), i.kind))
            .collect();
        assert_eq!(
            names,
            [
                ("mirror", Kind::Index),
                ("corp", Kind::Explicit),
                ("extra-example", Kind::Index)
            ]
        );
        assert_eq!(i.pins["corp-lib"], "corp");
        assert_eq!(i.indexes[2].origin, "requirements.txt:1");
        // A private source first: PyPI, second, serves only what names it.
        let pipfile = from_pipfile(&doc(
            "[[source]]\nname='corp'\nurl='https://corp.example/simple'\n\n[[source]]\nname='pypi'\nurl='https://pypi.org/simple'\n\n[packages]\ncorp-lib='*'\nsix = { version = '*', index = 'pypi' }\n",
        ))
        .unwrap();
        let i = read(&[&pipfile], &[], &no_env).unwrap();
        let kinds: Vec<(&str, Kind)> = i
            .indexes
            .iter()
            .map(|i| (i.name.as_str(), i.kind))
            .collect();
        assert_eq!(kinds, [("corp", Kind::Default), ("pypi", Kind::Explicit)]);
        assert_eq!(i.pins["six"], "pypi");
    }

    #[test]
    fn pdm_sources_and_their_included_packages() {
        let i = read_pp(
            "[project]\nname='x'\n\n[[tool.pdm.source]]\nname='corp'\nurl='https://corp.example/simple'\ninclude_packages=['corp-lib', 'corp-*']\n\n[[tool.pdm.source]]\nname='pypi'\nurl='https://mirror.example/simple'\n\n[[tool.pdm.source]]\nname='links'\nurl='https://x.example/links'\ntype='find_links'\n",
        )
        .unwrap();
        let kinds: Vec<(&str, Kind)> = i
            .indexes
            .iter()
            .map(|i| (i.name.as_str(), i.kind))
            .collect();
        assert_eq!(kinds, [("corp", Kind::Index), ("pypi", Kind::Default)]);
        assert_eq!(i.pins["corp-lib"], "corp");
        assert_eq!(i.notes.len(), 1);
        assert!(
            i.notes[0].contains("\"corp-*\" is a pattern"),
            "{:?}",
            i.notes
        );
    }

    #[test]
    fn artifact_registry_names_and_hosts() {
        assert_eq!(
            name_from_url("https://europe-west1-python.pkg.dev/my-proj/py/simple"),
            "europe-west1-python-pkg-dev-my-proj-py"
        );
        assert_eq!(host_of("http://127.0.0.1:8080/simple"), "127.0.0.1");
        let e = split_url("ftp://x/simple", "here", false).unwrap_err();
        assert!(e.to_string().contains("ftp://"), "{e}");
    }
}
