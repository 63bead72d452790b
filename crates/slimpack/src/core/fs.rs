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
