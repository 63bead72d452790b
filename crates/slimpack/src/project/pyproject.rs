//! `pyproject.toml`: PEP 621 `[project]`, PEP 735 `[dependency-groups]`,
//! Poetry's `[tool.poetry]`, and our own `[tool.slimpack]`.

use anyhow::{anyhow, bail, Result};
use std::collections::BTreeMap;
use std::path::Path;
use toml::Value;

#[derive(Debug, Default, Clone)]
pub struct PyProject {
    pub name: Option<String>,
    pub requires_python: Option<String>,
    /// PEP 508 strings of the main dependencies.
    pub dependencies: Vec<String>,
    /// Optional dependency sets, by name: PEP 621 extras, PEP 735 groups,
    /// Poetry groups. A `--with NAME` selects one.
    pub groups: BTreeMap<String, Vec<String>>,
    /// Which of `groups` are PEP 621 extras (the rest are groups).
    pub extras: Vec<String>,
    /// Which tool declared the dependencies.
    pub style: Style,
    pub version: Option<String>,
    /// `[project.scripts]`: console script name → `module:function`.
    pub scripts: BTreeMap<String, String>,
    /// A `[build-system]` table: the project is a package to install.
    pub build_system: bool,
    pub slimpack: Option<Value>,
    /// The package indexes and pins it declares (uv, Poetry, PDM).
    pub indexes: super::indexes::Indexes,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    #[default]
    None,
    Pep621,
    Poetry,
}

pub use crate::core::fs::parse_toml;

fn strings(v: Option<&Value>, what: &str, path: &Path) -> Result<Vec<String>> {
    crate::core::fs::toml_strings(v, &format!("{}: {what}", path.display()))
}

pub fn read(path: &Path) -> Result<PyProject> {
    let text = crate::core::fs::read_project_file(path.parent().unwrap_or(Path::new(".")), path)?;
    let doc = parse_toml(path, &text)?;
    // Poetry's `package-mode = false` and PDM's `distribution = false` say
    // the project is an app, not a package to install.
    let not_a_package = |tool: &str, key: &str| {
        doc.get("tool")
            .and_then(|t| t.get(tool))
            .and_then(|t| t.get(key))
            .and_then(Value::as_bool)
            == Some(false)
    };
    let mut out = PyProject {
        slimpack: doc.get("tool").and_then(|t| t.get("slimpack")).cloned(),
        indexes: super::indexes::from_pyproject(&doc)?,
        build_system: doc.get("build-system").is_some()
            && !not_a_package("poetry", "package-mode")
            && !not_a_package("pdm", "distribution"),
        ..Default::default()
    };
    if let Some(project) = doc.get("project") {
        out.style = Style::Pep621;
        out.name = project
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_string);
        out.version = project
            .get("version")
            .and_then(Value::as_str)
            .map(str::to_string);
        if let Some(Value::Table(scripts)) = project.get("scripts") {
            for (k, v) in scripts {
                let target = v.as_str().ok_or_else(|| {
                    anyhow!(
                        "{}: [project.scripts].{k} must be \"module:function\"",
                        path.display()
                    )
                })?;
                out.scripts.insert(k.clone(), target.to_string());
            }
        }
        out.requires_python = project
            .get("requires-python")
            .and_then(Value::as_str)
            .map(str::to_string);
        out.dependencies = strings(project.get("dependencies"), "[project].dependencies", path)?;
        if let Some(Value::Table(extras)) = project.get("optional-dependencies") {
            for (k, v) in extras {
                out.extras.push(k.clone());
                out.groups.insert(
                    k.clone(),
                    strings(
                        Some(v),
                        &format!("[project.optional-dependencies].{k}"),
                        path,
                    )?,
                );
            }
        }
    }
    if let Some(Value::Table(groups)) = doc.get("dependency-groups") {
        read_dependency_groups(groups, path, &mut out)?;
    }
    if let Some(poetry) = doc.get("tool").and_then(|t| t.get("poetry")) {
        read_poetry(poetry, path, &mut out)?;
    }
    if out.style == Style::Pep621 {
        apply_uv_sources(&doc, path, &mut out.dependencies)?;
    }
    Ok(out)
}

/// `name @ file:///abs` for a dependency at `rel` from the project `dir`,
/// as a resolver takes it from a requirements file anywhere. The lock
/// later names it by path and it is built, not fetched.
fn path_requirement(name: &str, dir: &Path, rel: &str) -> Result<String> {
    let abs = dir.join(rel);
    let abs = abs.canonicalize().map_err(|e| {
        anyhow!(
            "{}: the path dependency {name} = {rel:?}: {}: {e}",
            dir.join("pyproject.toml").display(),
            abs.display()
        )
    })?;
    Ok(format!("{name} @ file://{}", abs.display()))
}

/// uv's `[tool.uv.sources]`: a dependency from a `path`, or a workspace
/// member (`workspace = true`), becomes `name @ file:///…` so that any
/// resolver finds it where the project keeps it.
fn apply_uv_sources(doc: &Value, path: &Path, deps: &mut [String]) -> Result<()> {
    let Some(Value::Table(sources)) = doc
        .get("tool")
        .and_then(|t| t.get("uv"))
        .and_then(|u| u.get("sources"))
    else {
        return Ok(());
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let members = workspace_members(doc, dir, path)?;
    for dep in deps.iter_mut() {
        let name = dep
            .split(|c: char| !(c.is_alphanumeric() || "-_.".contains(c)))
            .next()
            .unwrap_or("")
            .to_string();
        let norm = crate::project::normalize_name(&name);
        let Some((_, source)) = sources
            .iter()
            .find(|(k, _)| crate::project::normalize_name(k) == norm)
        else {
            continue;
        };
        let rel = if let Some(p) = source.get("path").and_then(Value::as_str) {
            p.to_string()
        } else if source.get("workspace").and_then(Value::as_bool) == Some(true) {
            members
                .iter()
                .find(|(n, _)| *n == norm)
                .map(|(_, rel)| rel.clone())
                .ok_or_else(|| anyhow!("{}: [tool.uv.sources] {name} is a workspace member, but no member of [tool.uv.workspace] is named {name}", path.display()))?
        } else {
            continue;
        };
        *dep = path_requirement(&name, dir, &rel)?;
    }
    Ok(())
}

/// `[tool.uv.workspace] members` (globs of one `*` level) with their names.
fn workspace_members(doc: &Value, dir: &Path, path: &Path) -> Result<Vec<(String, String)>> {
    let globs = strings(
        doc.get("tool")
            .and_then(|t| t.get("uv"))
            .and_then(|u| u.get("workspace"))
            .and_then(|w| w.get("members")),
        "[tool.uv.workspace].members",
        path,
    )?;
    let mut out = Vec::new();
    for g in globs {
        let dirs: Vec<String> = match g.strip_suffix("/*") {
            Some(parent) => std::fs::read_dir(dir.join(parent))
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| format!("{parent}/{}", e.file_name().to_string_lossy()))
                .collect(),
            None => vec![g.clone()],
        };
        for d in dirs {
            // A member is project input: read inside the project only.
            let name =
                crate::core::fs::read_project_file(dir, &dir.join(&d).join("pyproject.toml"))
                    .ok()
                    .and_then(|t| t.parse::<toml::Table>().ok())
                    .and_then(|t| t.get("project")?.get("name")?.as_str().map(str::to_string));
            if let Some(n) = name {
                out.push((crate::project::normalize_name(&n), d));
            }
        }
    }
    Ok(out)
}

/// PEP 735 `[dependency-groups]`, with `{include-group = "x"}`.
fn read_dependency_groups(groups: &toml::Table, path: &Path, out: &mut PyProject) -> Result<()> {
    for (k, v) in groups {
        let Value::Array(items) = v else {
            bail!("{}: [dependency-groups].{k} must be a list", path.display());
        };
        let mut reqs = Vec::new();
        for i in items {
            match i {
                Value::String(s) => reqs.push(s.clone()),
                // `{include-group = "x"}`
                Value::Table(t) => {
                    if let Some(g) = t.get("include-group").and_then(Value::as_str) {
                        if let Some(Value::Array(inc)) = groups.get(g) {
                            reqs.extend(inc.iter().filter_map(Value::as_str).map(str::to_string));
                        }
                    }
                }
                _ => bail!(
                    "{}: [dependency-groups].{k} has an invalid entry",
                    path.display()
                ),
            }
        }
        out.groups.insert(k.clone(), reqs);
    }
    Ok(())
}

/// Poetry's `[tool.poetry]`: dependencies, groups, scripts, version.
fn read_poetry(poetry: &Value, path: &Path, out: &mut PyProject) -> Result<()> {
    if out.style == Style::None || out.dependencies.is_empty() {
        if out.name.is_none() {
            out.name = poetry
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_string);
        }
        if let Some(Value::Table(deps)) = poetry.get("dependencies") {
            out.style = Style::Poetry;
            for (name, spec) in deps {
                if name == "python" {
                    if let Some(s) = spec.as_str() {
                        out.requires_python = Some(poetry_constraint(s, path, name)?);
                    }
                    continue;
                }
                if let Some(r) = poetry_dep(name, spec, path)? {
                    out.dependencies.push(r);
                }
            }
        }
        let mut add_group = |g: &str, deps: &Value| -> Result<()> {
            if let Value::Table(deps) = deps {
                let mut reqs = Vec::new();
                for (name, spec) in deps {
                    if let Some(r) = poetry_dep(name, spec, path)? {
                        reqs.push(r);
                    }
                }
                out.groups.entry(g.to_string()).or_default().extend(reqs);
            }
            Ok(())
        };
        if let Some(d) = poetry.get("dev-dependencies") {
            add_group("dev", d)?;
        }
        if let Some(Value::Table(scripts)) = poetry.get("scripts") {
            for (k, v) in scripts {
                if let Some(t) = v.as_str() {
                    out.scripts
                        .entry(k.clone())
                        .or_insert_with(|| t.to_string());
                }
            }
        }
        if out.version.is_none() {
            out.version = poetry
                .get("version")
                .and_then(Value::as_str)
                .map(str::to_string);
        }
        if let Some(Value::Table(groups)) = poetry.get("group") {
            for (g, t) in groups {
                if let Some(d) = t.get("dependencies") {
                    add_group(g, d)?;
                }
            }
        }
    }
    Ok(())
}

/// Converts one Poetry dependency to PEP 508, or `None` for optional ones
/// (they are only installed through extras).
fn poetry_dep(name: &str, spec: &Value, path: &Path) -> Result<Option<String>> {
    let (constraint, extras, markers) = match spec {
        Value::String(s) => (s.clone(), Vec::new(), None),
        Value::Table(t) => {
            if t.get("optional").and_then(Value::as_bool) == Some(true) {
                return Ok(None);
            }
            if let Some(rel) = t.get("path").and_then(Value::as_str) {
                // A package of the project's own: built and installed.
                let dir = path.parent().unwrap_or(Path::new("."));
                return path_requirement(name, dir, rel).map(Some);
            }
            for unsupported in ["git", "url", "file"] {
                if t.contains_key(unsupported) {
                    bail!(
                        "{}: dependency {name} comes from a {unsupported} source, which slimpack cannot install yet; publish it to an index",
                        path.display()
                    );
                }
            }
            let v = t.get("version").and_then(Value::as_str).unwrap_or("*").to_string();
            let extras = strings(t.get("extras"), &format!("{name}.extras"), path)?;
            let mut markers = t.get("markers").and_then(Value::as_str).map(str::to_string);
            if let Some(py) = t.get("python").and_then(Value::as_str) {
                let m = python_marker(&poetry_constraint(py, path, name)?);
                markers = Some(match markers {
                    Some(x) => format!("({x}) and ({m})"),
                    None => m,
                });
            }
            (v, extras, markers)
        }
        Value::Array(_) => bail!(
            "{}: dependency {name} has several constraints by environment; slimpack cannot translate that yet",
            path.display()
        ),
        _ => bail!("{}: dependency {name} has an invalid specification", path.display()),
    };
    let mut out = name.to_string();
    if !extras.is_empty() {
        out.push_str(&format!("[{}]", extras.join(",")));
    }
    out.push_str(&poetry_constraint(&constraint, path, name)?);
    if let Some(m) = markers {
        out.push_str(&format!("; {m}"));
    }
    Ok(Some(out))
}

fn python_marker(spec: &str) -> String {
    spec.split(',')
        .filter(|c| !c.is_empty())
        .map(|c| {
            let op_end = c.find(|ch: char| ch.is_ascii_digit()).unwrap_or(0);
            format!("python_version {} '{}'", &c[..op_end], &c[op_end..])
        })
        .collect::<Vec<_>>()
        .join(" and ")
}

/// Poetry's `^1.2`, `~1.2`, `1.2.*`, `>=1,<2`, `1.2.3` → a PEP 440 specifier.
pub fn poetry_constraint(s: &str, path: &Path, name: &str) -> Result<String> {
    let s = s.trim();
    if s == "*" || s.is_empty() {
        return Ok(String::new());
    }
    if s.contains("||") || s.contains(" or ") {
        bail!(
            "{}: constraint {s:?} of {name} uses `||`, which has no PEP 440 equivalent; write it as one range",
            path.display()
        );
    }
    let mut parts = Vec::new();
    for clause in s.split([',', ' ']).filter(|c| !c.is_empty()) {
        let bump = |v: &str, caret: bool| -> Result<String> {
            let nums: Vec<u64> = v
                .split('.')
                .map(|p| p.parse::<u64>())
                .collect::<std::result::Result<_, _>>()
                .map_err(|_| anyhow!("{}: cannot read version {v:?} of {name}", path.display()))?;
            let upper: Vec<u64> = if caret {
                let i = nums
                    .iter()
                    .position(|&n| n != 0)
                    .unwrap_or(nums.len().saturating_sub(1));
                let mut u: Vec<u64> = nums[..=i].to_vec();
                u[i] += 1;
                u
            } else if nums.len() >= 2 {
                vec![nums[0], nums[1] + 1]
            } else {
                vec![nums[0] + 1]
            };
            let upper = upper
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(".");
            Ok(format!(">={v},<{upper}"))
        };
        if let Some(v) = clause.strip_prefix('^') {
            parts.push(bump(v, true)?);
        } else if let Some(v) = clause.strip_prefix("~=") {
            parts.push(format!("~={v}"));
        } else if let Some(v) = clause.strip_prefix('~') {
            parts.push(bump(v, false)?);
        } else if clause.starts_with(['<', '>', '=', '!']) {
            let c = if clause.starts_with('=') && !clause.starts_with("==") {
                format!("={clause}")
            } else {
                clause.to_string()
            };
            parts.push(c);
        } else {
            parts.push(format!("=={clause}"));
        }
    }
    Ok(parts.join(","))
}

/// Does Python `version` (`3.11` or `3.11.2`) satisfy a PEP 440 specifier set
/// such as `>=3.9,<3.13` or `~=3.11`?
pub fn python_satisfies(spec: &str, version: &str) -> bool {
    let parse = |v: &str| -> Vec<u64> {
        v.trim()
            .trim_end_matches(".*")
            .split('.')
            .map(|p| p.parse().unwrap_or(0))
            .collect()
    };
    let cmp = |a: &[u64], b: &[u64]| {
        let n = a.len().max(b.len());
        let get = |v: &[u64], i: usize| v.get(i).copied().unwrap_or(0);
        (0..n)
            .map(|i| get(a, i).cmp(&get(b, i)))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    };
    let have = parse(version);
    spec.split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .all(|c| {
            let op_end = c.find(|ch: char| ch.is_ascii_digit()).unwrap_or(c.len());
            let (op, v) = (c[..op_end].trim(), &c[op_end..]);
            let want = parse(v);
            use std::cmp::Ordering::*;
            match op {
                ">=" => cmp(&have, &want) != Less,
                ">" => cmp(&have, &want) == Greater,
                "<=" => cmp(&have, &want) != Greater,
                "<" => cmp(&have, &want) == Less,
                "==" | "===" | "" if v.ends_with(".*") => have.starts_with(&want),
                "==" | "===" | "" => cmp(&have[..want.len().min(have.len())], &want) == Equal,
                "!=" if v.ends_with(".*") => !have.starts_with(&want),
                "!=" => cmp(&have, &want) != Equal,
                "~=" => {
                    let mut prefix = want.clone();
                    prefix.pop();
                    cmp(&have, &want) != Less && have.starts_with(&prefix)
                }
                _ => false,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poetry_constraints() {
        let p = Path::new("pyproject.toml");
        assert_eq!(poetry_constraint("^3.0", p, "x").unwrap(), ">=3.0,<4");
        assert_eq!(poetry_constraint("^0.2.3", p, "x").unwrap(), ">=0.2.3,<0.3");
        assert_eq!(poetry_constraint("~4.2", p, "x").unwrap(), ">=4.2,<4.3");
        assert_eq!(poetry_constraint("5.0.1", p, "x").unwrap(), "==5.0.1");
        assert_eq!(
            poetry_constraint(">=1.0,<2.0", p, "x").unwrap(),
            ">=1.0,<2.0"
        );
        assert_eq!(poetry_constraint("*", p, "x").unwrap(), "");
        assert!(poetry_constraint("^1 || ^2", p, "x").is_err());
    }

    #[test]
    fn workspace_members_are_strings_read_inside_the_project() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("ws");
        std::fs::create_dir_all(root.join("packages/lib")).unwrap();
        std::fs::write(
            root.join("packages/lib/pyproject.toml"),
            "[project]\nname = \"My_Lib\"\n",
        )
        .unwrap();
        // A member that is a link to a project outside is not read.
        std::fs::create_dir_all(d.path().join("outside")).unwrap();
        std::fs::write(
            d.path().join("outside/pyproject.toml"),
            "[project]\nname = \"secret\"\n",
        )
        .unwrap();
        std::os::unix::fs::symlink(d.path().join("outside"), root.join("packages/evil")).unwrap();
        let path = root.join("pyproject.toml");
        let doc = parse_toml(&path, "[tool.uv.workspace]\nmembers = [\"packages/*\"]\n").unwrap();
        let got = workspace_members(&doc, &root, &path).unwrap();
        assert_eq!(got, [("my-lib".to_string(), "packages/lib".to_string())]);
        let bad = parse_toml(&path, "[tool.uv.workspace]\nmembers = [\"a\", 3]\n").unwrap();
        let e = workspace_members(&bad, &root, &path)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("[tool.uv.workspace].members must be a list of strings"),
            "{e}"
        );
    }

    #[test]
    fn python_specifiers() {
        assert!(python_satisfies(">=3.9", "3.13"));
        assert!(!python_satisfies(">=3.9,<3.12", "3.13"));
        assert!(python_satisfies(">=3.9,<3.12", "3.11"));
        assert!(python_satisfies("~=3.11", "3.13"));
        assert!(!python_satisfies("~=3.11.0", "3.13"));
        assert!(python_satisfies("==3.11.*", "3.11.2"));
        assert!(!python_satisfies("==3.11.*", "3.13.5"));
        assert!(python_satisfies("!=3.12.*", "3.13"));
        assert!(python_satisfies(">=3.11,<4.0", "3.11"));
    }

    #[test]
    fn reads_pep621_groups_and_poetry() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pyproject.toml");
        std::fs::write(&p, "[project]\nname='a'\nrequires-python='>=3.11'\ndependencies=['fastapi>=0.110']\n[project.optional-dependencies]\npg=['psycopg2-binary']\n[dependency-groups]\ndev=['pytest', {include-group='lint'}]\nlint=['ruff']\n[tool.slimpack]\nport=9000\n").unwrap();
        let pp = read(&p).unwrap();
        assert_eq!(pp.style, Style::Pep621);
        assert_eq!(pp.groups["dev"], vec!["pytest", "ruff"]);
        assert_eq!(pp.groups["pg"], vec!["psycopg2-binary"]);
        assert!(pp.slimpack.is_some());

        std::fs::write(&p, "[tool.poetry]\nname='blog'\n[tool.poetry.dependencies]\npython='^3.11'\ndjango='~4.2'\ngunicorn={version='^21.2', extras=['gthread']}\n[tool.poetry.group.dev.dependencies]\npytest='^8.0'\n").unwrap();
        let pp = read(&p).unwrap();
        assert_eq!(pp.style, Style::Poetry);
        assert_eq!(pp.requires_python.as_deref(), Some(">=3.11,<4"));
        assert_eq!(
            pp.dependencies,
            vec!["django>=4.2,<4.3", "gunicorn[gthread]>=21.2,<22"]
        );
        assert_eq!(pp.groups["dev"], vec!["pytest>=8.0,<9"]);
    }

    #[test]
    fn syntax_errors_have_line_and_column() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pyproject.toml");
        std::fs::write(
            &p,
            "[project]\nname = 'a'\ndependencies = [\n  'flask'\n  'x'\n",
        )
        .unwrap();
        let e = read(&p).unwrap_err().to_string();
        assert!(e.contains("pyproject.toml:"), "{e}");
        assert!(e.contains("TOML syntax error"), "{e}");
    }
}
