//! Pipenv's `Pipfile` (what the project asks for) and `Pipfile.lock` (every
//! package pinned, with its hashes): read into requirement lines uv takes.

use anyhow::{anyhow, bail, Result};
use serde_json::Value as Json;
use std::path::Path;
use toml::Value;

/// The requirements a Pipfile declares: `[packages]`, and with `dev`
/// `[dev-packages]` too. Also its `[requires] python_version`.
#[derive(Debug, Default, Clone)]
pub struct Pipfile {
    pub packages: Vec<String>,
    pub dev_packages: Vec<String>,
    pub python_version: Option<String>,
    /// Its `[[source]]`s, and the packages that name one.
    pub indexes: super::indexes::Indexes,
}

pub fn read(path: &Path) -> Result<Pipfile> {
    let text = crate::core::fs::read_project_file(path.parent().unwrap_or(Path::new(".")), path)?;
    let doc = crate::core::fs::parse_toml(path, &text)?;
    let section = |name: &str| -> Result<Vec<String>> {
        let Some(t) = doc.get(name) else {
            return Ok(Vec::new());
        };
        let Value::Table(t) = t else {
            bail!("{}: [{name}] must be a table", path.display());
        };
        t.iter()
            .map(|(n, spec)| {
                requirement(n, spec).map_err(|e| anyhow!("{}: [{name}] {e}", path.display()))
            })
            .collect()
    };
    Ok(Pipfile {
        indexes: super::indexes::from_pipfile(&doc)?,
        packages: section("packages")?,
        dev_packages: section("dev-packages")?,
        python_version: doc
            .get("requires")
            .and_then(|r| {
                r.get("python_full_version")
                    .or_else(|| r.get("python_version"))
            })
            .and_then(Value::as_str)
            .map(str::to_string),
    })
}

/// Which index each package of Pipfile.lock was locked from (normalized
/// name → URL), by the lock's `index` names of `_meta.sources`.
pub fn locked_origins(
    dir: &Path,
    lock: &Path,
    indexes: &super::indexes::Indexes,
) -> Result<std::collections::BTreeMap<String, String>> {
    let text = crate::core::fs::read_project_file(dir, lock)?;
    let json: Json =
        serde_json::from_str(&text).map_err(|e| anyhow!("{}: not JSON: {e}", lock.display()))?;
    let mut out = std::collections::BTreeMap::new();
    for section in ["default", "develop"] {
        for (name, spec) in json
            .get(section)
            .and_then(Json::as_object)
            .into_iter()
            .flatten()
        {
            let url = match spec.get("index").and_then(Json::as_str) {
                Some(i) if i.eq_ignore_ascii_case("pypi") => Some(super::indexes::PYPI.to_string()),
                Some(i) => indexes.by_name(i).map(|x| x.url.clone()),
                None => None,
            };
            out.insert(
                super::normalize_name(name),
                url.unwrap_or_else(|| indexes.default_url().to_string()),
            );
        }
    }
    Ok(out)
}

/// One `[packages]` entry as PEP 508: `flask = "*"`, `requests = "==2.31"`,
/// `django = {version = ">=4", extras = ["argon2"], markers = "..."}`.
fn requirement(name: &str, spec: &Value) -> Result<String> {
    let (version, extras, markers) = match spec {
        Value::String(v) => (v.clone(), Vec::new(), None),
        Value::Table(t) => {
            for unsupported in ["git", "path", "file", "editable"] {
                if t.contains_key(unsupported) {
                    bail!("{name}: `{unsupported}` dependencies are not supported yet; publish the package to an index, or build from requirements.txt");
                }
            }
            let extras = crate::core::fs::toml_strings(t.get("extras"), &format!("{name}.extras"))?;
            (
                t.get("version")
                    .and_then(Value::as_str)
                    .unwrap_or("*")
                    .to_string(),
                extras,
                t.get("markers").and_then(Value::as_str).map(str::to_string),
            )
        }
        _ => bail!("{name}: expected a version string or a table"),
    };
    Ok(pep508(name, &version, &extras, markers.as_deref()))
}

fn pep508(name: &str, version: &str, extras: &[String], markers: Option<&str>) -> String {
    let mut r = name.to_string();
    if !extras.is_empty() {
        r.push_str(&format!("[{}]", extras.join(",")));
    }
    if version != "*" && !version.is_empty() {
        r.push_str(version);
    }
    if let Some(m) = markers.filter(|m| !m.is_empty()) {
        r.push_str(&format!(" ; {m}"));
    }
    r
}

/// `Pipfile.lock` as hash-pinned requirements: `default`, and with `dev`
/// `develop` too. Every entry must be pinned (`==`) and hashed.
pub fn locked_requirements(path: &Path, dev: bool) -> Result<String> {
    let text = crate::core::fs::read_project_file(path.parent().unwrap_or(Path::new(".")), path)?;
    let doc: Json = serde_json::from_str(text.trim_start_matches('\u{feff}')).map_err(|e| {
        anyhow!(
            "{}:{}: not valid JSON: {e}; run `pipenv lock` again",
            path.display(),
            e.line()
        )
    })?;
    let mut out = String::new();
    let sections: &[&str] = if dev {
        &["default", "develop"]
    } else {
        &["default"]
    };
    let mut seen = std::collections::BTreeSet::new();
    for section in sections {
        let Some(entries) = doc.get(*section).and_then(Json::as_object) else {
            continue;
        };
        for (name, e) in entries {
            if !seen.insert(crate::project::normalize_name(name)) {
                continue;
            }
            out.push_str(
                &locked_line(name, e)
                    .map_err(|m| anyhow!("{}: {section}.{name}: {m}", path.display()))?,
            );
        }
    }
    Ok(out)
}

fn locked_line(name: &str, e: &Json) -> Result<String> {
    for unsupported in ["git", "path", "file", "editable"] {
        if e.get(unsupported).is_some() {
            bail!("`{unsupported}` entries are not supported yet; publish the package to an index");
        }
    }
    let version = e
        .get("version")
        .and_then(Json::as_str)
        .filter(|v| v.starts_with("=="))
        .ok_or_else(|| anyhow!("no pinned version (==); run `pipenv lock` again"))?;
    let hashes: Vec<&str> = e
        .get("hashes")
        .and_then(Json::as_array)
        .map(|a| a.iter().filter_map(Json::as_str).collect())
        .unwrap_or_default();
    if hashes.is_empty() {
        bail!("no hashes; run `pipenv lock` again");
    }
    let extras: Vec<String> = e
        .get("extras")
        .and_then(Json::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Json::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let mut line = pep508(
        name,
        version,
        &extras,
        e.get("markers").and_then(Json::as_str),
    );
    for h in hashes {
        line.push_str(&format!(" \\\n    --hash={h}"));
    }
    line.push('\n');
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipfile_sections_and_python() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("Pipfile");
        std::fs::write(
            &p,
            "[[source]]\nurl = 'https://pypi.org/simple'\nname = 'pypi'\n\n[packages]\nflask = '*'\nrequests = '==2.31.0'\ndjango = {version = '>=4', extras = ['argon2']}\n\n[dev-packages]\npytest = '*'\n\n[requires]\npython_version = '3.11'\n",
        )
        .unwrap();
        let f = read(&p).unwrap();
        assert_eq!(
            f.packages,
            vec!["django[argon2]>=4", "flask", "requests==2.31.0"]
        );
        assert_eq!(f.dev_packages, vec!["pytest"]);
        assert_eq!(f.python_version.as_deref(), Some("3.11"));
        std::fs::write(&p, "[packages]\nmylib = {path = './lib'}\n").unwrap();
        let e = read(&p).unwrap_err().to_string();
        assert!(
            e.contains("Pipfile") && e.contains("mylib") && e.contains("path"),
            "{e}"
        );
    }

    #[test]
    fn lock_to_hashed_requirements() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("Pipfile.lock");
        std::fs::write(
            &p,
            r#"{"_meta": {}, "default": {"flask": {"hashes": ["sha256:aa", "sha256:bb"], "version": "==3.0.0", "markers": "python_version >= '3.8'"}},
               "develop": {"pytest": {"hashes": ["sha256:cc"], "version": "==8.0.0"}}}"#,
        )
        .unwrap();
        let r = locked_requirements(&p, false).unwrap();
        assert_eq!(
            r,
            "flask==3.0.0 ; python_version >= '3.8' \\\n    --hash=sha256:aa \\\n    --hash=sha256:bb\n"
        );
        assert!(locked_requirements(&p, true)
            .unwrap()
            .contains("pytest==8.0.0"));
        std::fs::write(&p, r#"{"default": {"x": {"version": "==1"}}}"#).unwrap();
        let e = locked_requirements(&p, false).unwrap_err().to_string();
        assert!(e.contains("default.x") && e.contains("hashes"), "{e}");
        std::fs::write(&p, "{ nope").unwrap();
        let e = locked_requirements(&p, false).unwrap_err().to_string();
        assert!(e.contains("Pipfile.lock:1") && e.contains("JSON"), "{e}");
    }
}
