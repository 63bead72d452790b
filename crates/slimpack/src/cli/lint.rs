//! `slimpack lint`.

use super::print_json;
use crate::dockerfile::{self, lint};
use anyhow::{anyhow, bail, Result};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub(super) struct LintArgs {
    /// The Dockerfile (its directory's .dockerignore is read too).
    #[arg(default_value = "Dockerfile")]
    file: PathBuf,
    /// human, json, or sarif (SARIF 2.1.0, for code scanning).
    #[arg(long, value_enum, hide_possible_values = true, default_value_t = Format::Human)]
    format: Format,
    /// Exit non-zero when a finding at or above this level exists:
    /// error, warning, info, or none.
    #[arg(long, value_enum, hide_possible_values = true, default_value_t = FailLevel::Warning)]
    fail_level: FailLevel,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Human,
    Json,
    Sarif,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum FailLevel {
    Error,
    Warning,
    Info,
    None,
}

impl FailLevel {
    fn severity(self) -> Option<lint::Severity> {
        match self {
            FailLevel::Error => Some(lint::Severity::Error),
            FailLevel::Warning => Some(lint::Severity::Warning),
            FailLevel::Info => Some(lint::Severity::Info),
            FailLevel::None => None,
        }
    }
}

/// The Dockerfile's build context: what .dockerignore says and which
/// secrets it lets through.
fn context(file: &Path) -> lint::Context {
    let dir = match file.parent() {
        Some(d) if d.as_os_str().is_empty() => Path::new("."),
        Some(d) => d,
        None => return lint::Context::default(),
    };
    let dockerignore = std::fs::read_to_string(dir.join(".dockerignore")).ok();
    let context_secrets = lint::context_secrets(dir, dockerignore.as_deref());
    lint::Context {
        dockerignore,
        context_secrets,
    }
}

pub(super) fn run(a: LintArgs) -> Result<i32> {
    let shown = a.file.display().to_string();
    let text = std::fs::read_to_string(&a.file).map_err(|e| anyhow!("{shown}: {e}"))?;
    let df = dockerfile::parse(&text).map_err(|e| anyhow!("{shown}:{}: {}", e.line, e.message))?;
    let findings = lint::lint(&df, &context(&a.file));
    match a.format {
        Format::Json => print_json(&lint::to_json(&findings))?,
        Format::Sarif => print_json(&lint::to_sarif(&findings, &shown))?,
        Format::Human => {
            use std::io::IsTerminal;
            print!(
                "{}",
                lint::to_human(&findings, &shown, std::io::stdout().is_terminal())
            );
        }
    }
    if let Some(level) = a.fail_level.severity() {
        let n = findings.iter().filter(|f| f.severity >= level).count();
        if n > 0 {
            bail!("{n} finding(s) at or above {} in {shown}", level.as_str());
        }
    }
    Ok(0)
}
