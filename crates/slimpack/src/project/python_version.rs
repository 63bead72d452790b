//! Where projects say which Python they want, strongest first:
//! `.python-version` (pyenv, uv), `runtime.txt` (Heroku), `.tool-versions`
//! (asdf), `mise.toml`, Pipfile's `[requires]`, then `requires-python`.

use std::path::Path;

/// A request and the file (and key) it came from.
pub type Request = (String, String);

/// The first hint found in `dir`; `pipfile` and `requires_python` are what
/// the Pipfile and pyproject.toml already said.
pub fn find(
    dir: &Path,
    pipfile: Option<&str>,
    requires_python: Option<(&str, &Path)>,
) -> Option<Request> {
    let file = |name: &str| -> Option<(String, String)> {
        let p = dir.join(name);
        let text = crate::core::fs::read_project_file(dir, &p).ok()?;
        Some((text, p.display().to_string()))
    };
    if let Some((t, origin)) = file(".python-version") {
        if let Some(v) = first_line(&t) {
            return Some((normalize(v), origin));
        }
    }
    if let Some((t, origin)) = file("runtime.txt") {
        if let Some(v) = first_line(&t).and_then(|l| l.strip_prefix("python-")) {
            return Some((v.to_string(), origin));
        }
    }
    if let Some((t, origin)) = file(".tool-versions") {
        let v = t.lines().find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("python")).then(|| w.next()).flatten()
        });
        if let Some(v) = v {
            return Some((normalize(v), origin));
        }
    }
    for name in ["mise.toml", ".mise.toml"] {
        if let Some((t, origin)) = file(name) {
            if let Some(v) = mise_python(&t) {
                return Some((normalize(&v), format!("{origin} [tools] python")));
            }
        }
    }
    if let Some(v) = pipfile {
        return Some((
            v.to_string(),
            format!("{} [requires]", dir.join("Pipfile").display()),
        ));
    }
    requires_python.map(|(r, pp)| (r.to_string(), format!("{} requires-python", pp.display())))
}

fn first_line(text: &str) -> Option<&str> {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
}

/// `3` and `latest` mean "the newest there is"; `cpython-3.12.1` and
/// `python3.12` mean 3.12.1 and 3.12.
fn normalize(v: &str) -> String {
    let v = v
        .trim()
        .trim_start_matches("cpython-")
        .trim_start_matches("python");
    match v {
        "latest" | "3" | "system" => ">=3".into(),
        v => v.to_string(),
    }
}

fn mise_python(text: &str) -> Option<String> {
    let doc: toml::Table = text.parse().ok()?;
    match doc.get("tools")?.get("python")? {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Array(a) => a.first()?.as_str().map(str::to_string),
        toml::Value::Table(t) => t.get("version")?.as_str().map(str::to_string),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hint(files: &[(&str, &str)]) -> Option<String> {
        let d = tempfile::tempdir().unwrap();
        for (n, t) in files {
            std::fs::write(d.path().join(n), t).unwrap();
        }
        find(d.path(), None, None).map(|(v, origin)| {
            assert!(origin.contains(d.path().to_str().unwrap()), "{origin}");
            v
        })
    }

    #[test]
    fn every_kind_of_hint() {
        assert_eq!(
            hint(&[(".python-version", "# pinned\n3.11\n")]).unwrap(),
            "3.11"
        );
        assert_eq!(hint(&[(".python-version", "3\n")]).unwrap(), ">=3");
        assert_eq!(hint(&[(".python-version", "latest\n")]).unwrap(), ">=3");
        assert_eq!(hint(&[(".python-version", "3.13.5\n")]).unwrap(), "3.13.5");
        assert_eq!(
            hint(&[("runtime.txt", "python-3.11.9\n")]).unwrap(),
            "3.11.9"
        );
        assert_eq!(
            hint(&[(".tool-versions", "nodejs 20.1.0\npython 3.11.9 3.10.1\n")]).unwrap(),
            "3.11.9"
        );
        assert_eq!(
            hint(&[("mise.toml", "[tools]\npython = '3.13'\n")]).unwrap(),
            "3.13"
        );
        assert_eq!(
            hint(&[("mise.toml", "[tools]\npython = ['3.11', '3.13']\n")]).unwrap(),
            "3.11"
        );
        // .python-version is the strongest.
        assert_eq!(
            hint(&[
                (".python-version", "3.13\n"),
                ("runtime.txt", "python-3.11.9\n")
            ])
            .unwrap(),
            "3.13"
        );
        assert!(hint(&[("runtime.txt", "node-20\n")]).is_none());
        assert!(hint(&[]).is_none());
    }
}
