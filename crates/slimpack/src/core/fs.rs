//! Files read and written whole: records and outputs through a temporary
//! sibling and a rename (a crash leaves no half file), TOML with the line
//! of a syntax error.

use anyhow::{anyhow, Context, Result};
use std::path::Path;
use toml::Value;

/// Writes a file through a temporary sibling and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    std::io::Write::write_all(&mut tmp, bytes)?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Parses TOML, turning a syntax error into `file:line:col: message`.
/// A TOML value that must be a list of strings (absent: empty); the error
/// names it as `what`.
pub fn toml_strings(v: Option<&Value>, what: &str) -> Result<Vec<String>> {
    let bad = || anyhow::anyhow!("{what} must be a list of strings");
    match v {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string).ok_or_else(bad))
            .collect(),
        Some(_) => Err(bad()),
    }
}

pub fn parse_toml(path: &Path, text: &str) -> Result<Value> {
    text.parse::<toml::Table>().map(Value::Table).map_err(|e| {
        let (line, col) = e
            .span()
            .map(|s| {
                let before = &text[..s.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                (line, col)
            })
            .unwrap_or((1, 1));
        anyhow!(
            "{}:{line}:{col}: TOML syntax error: {}",
            path.display(),
            e.message()
        )
    })
}

/// Reads a file of the project in `root` (a dependency file, a config
/// file, a version hint) as text. A file that is a link to somewhere
/// outside the project is refused before a byte of it is read: the host's
/// files are no input of a build, and an error quoting one would leak it.
pub fn read_project_file(root: &Path, path: &Path) -> Result<String> {
    let real = path
        .canonicalize()
        .with_context(|| format!("reading {}", path.display()))?;
    let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    if !real.starts_with(&root) {
        anyhow::bail!(
            "{} leads to {}, outside the project {}: slimpack reads only the project's own files; copy it into the project",
            path.display(),
            real.display(),
            root.display()
        );
    }
    std::fs::read_to_string(&real).with_context(|| format!("reading {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_files_that_lead_outside_are_refused_unread() {
        let d = tempfile::tempdir().unwrap();
        let project = d.path().join("app");
        std::fs::create_dir(&project).unwrap();
        std::fs::write(d.path().join("host-secret"), "root:$6$hash").unwrap();
        std::os::unix::fs::symlink("../host-secret", project.join("requirements.txt")).unwrap();
        let e = read_project_file(&project, &project.join("requirements.txt")).unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.contains("outside the project") && !e.contains("$6$"),
            "{e}"
        );
        std::fs::write(project.join("real.txt"), "flask\n").unwrap();
        std::os::unix::fs::symlink("real.txt", project.join("linked.txt")).unwrap();
        assert_eq!(
            read_project_file(&project, &project.join("linked.txt")).unwrap(),
            "flask\n"
        );
    }
}
