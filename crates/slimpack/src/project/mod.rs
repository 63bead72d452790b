//! Detecting the app: where its dependencies are declared, which Python it
//! asks for, how it starts, and which files are its source.

pub mod entrypoint;
pub mod ignore;
pub mod pyproject;
pub mod requirements;

use crate::settings::Config;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Where the dependencies come from.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum DepSource {
    /// `requirements.txt` and the files it includes.
    Requirements {
        files: Vec<PathBuf>,
        #[serde(skip)]
        parsed: Vec<requirements::Requirement>,
    },
    /// `uv.lock` beside `pyproject.toml`: exported as locked requirements.
    UvLock { pyproject: PathBuf, lock: PathBuf },
    /// `poetry.lock`: the pyproject's dependencies resolved with every
    /// version pinned to the lock.
    PoetryLock { pyproject: PathBuf, lock: PathBuf },
    /// Dependencies declared in `pyproject.toml` without a lock.
    Pyproject { pyproject: PathBuf },
}

#[derive(Debug, Clone)]
pub struct Project {
    pub dir: PathBuf,
    pub name: String,
    /// The name came from pyproject.toml, not from the directory's name
    /// (which is no part of the source and must not reach the image).
    pub name_declared: bool,
    pub deps: DepSource,
    pub pyproject: Option<pyproject::PyProject>,
    /// What the project says about its Python, and where it says it.
    pub python_request: Option<(String, String)>,
    pub config: Config,
    pub config_origin: Option<String>,
}

/// PEP 503 normalised name.
pub fn normalize_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut dash = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            dash = true;
        } else {
            if dash && !out.is_empty() {
                out.push('-');
            }
            dash = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

impl Project {
    pub fn detect(dir: &Path) -> Result<Project> {
        if !dir.is_dir() {
            bail!("{} is not a directory", dir.display());
        }
        let dir = dir
            .canonicalize()
            .with_context(|| format!("resolving {}", dir.display()))?;
        let pp_path = dir.join("pyproject.toml");
        let pyproject = if pp_path.is_file() {
            Some(pyproject::read(&pp_path)?)
        } else {
            None
        };
        let (config, config_origin) =
            Config::load(&dir, pyproject.as_ref().and_then(|p| p.slimpack.as_ref()))?;

        let req_path = dir.join("requirements.txt");
        let has_pp_deps = pyproject
            .as_ref()
            .is_some_and(|p| p.style != pyproject::Style::None);
        let deps = if dir.join("uv.lock").is_file() && pp_path.is_file() {
            DepSource::UvLock {
                pyproject: pp_path.clone(),
                lock: dir.join("uv.lock"),
            }
        } else if dir.join("poetry.lock").is_file() && has_pp_deps {
            DepSource::PoetryLock {
                pyproject: pp_path.clone(),
                lock: dir.join("poetry.lock"),
            }
        } else if req_path.is_file() {
            let r = requirements::read(&req_path)?;
            DepSource::Requirements {
                files: r.files,
                parsed: r.requirements,
            }
        } else if has_pp_deps {
            DepSource::Pyproject {
                pyproject: pp_path.clone(),
            }
        } else {
            bail!(
                "{}: no Python project found: expected requirements.txt, or pyproject.toml with [project].dependencies or [tool.poetry.dependencies] (optionally with uv.lock or poetry.lock)",
                dir.display()
            );
        };

        let python_request = if let Some(v) = std::fs::read_to_string(dir.join(".python-version"))
            .ok()
            .and_then(|t| {
                t.lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_string)
            }) {
            Some((v, dir.join(".python-version").display().to_string()))
        } else {
            pyproject
                .as_ref()
                .and_then(|p| p.requires_python.clone())
                .map(|s| (s, format!("{} requires-python", pp_path.display())))
        };

        let declared = pyproject.as_ref().and_then(|p| p.name.clone());
        let name_declared = declared.is_some();
        let name = declared
            .or_else(|| dir.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "app".into());
        Ok(Project {
            name: normalize_name(&name),
            name_declared,
            dir,
            deps,
            pyproject,
            python_request,
            config,
            config_origin,
        })
    }

    /// True when the dependency set is fixed by the project itself, so a
    /// build next year installs the same versions.
    pub fn is_locked(&self) -> bool {
        match &self.deps {
            DepSource::UvLock { .. } | DepSource::PoetryLock { .. } => true,
            DepSource::Requirements { parsed, .. } => {
                !parsed.is_empty() && parsed.iter().all(|r| r.is_pinned() && !r.hashes.is_empty())
            }
            DepSource::Pyproject { .. } => false,
        }
    }

    /// Every file whose content shapes the dependency resolution.
    pub fn dependency_inputs(&self) -> Vec<PathBuf> {
        match &self.deps {
            DepSource::Requirements { files, .. } => files.clone(),
            DepSource::UvLock { pyproject, lock } | DepSource::PoetryLock { pyproject, lock } => {
                vec![pyproject.clone(), lock.clone()]
            }
            DepSource::Pyproject { pyproject } => vec![pyproject.clone()],
        }
    }

    pub fn describe_deps(&self) -> String {
        let rel = |p: &Path| p.strip_prefix(&self.dir).unwrap_or(p).display().to_string();
        match &self.deps {
            DepSource::Requirements { files, .. } => rel(&files[0]),
            DepSource::UvLock { lock, .. } => rel(lock),
            DepSource::PoetryLock { lock, .. } => rel(lock),
            DepSource::Pyproject { pyproject } => rel(pyproject),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised() {
        assert_eq!(normalize_name("Flask_SQLAlchemy"), "flask-sqlalchemy");
        assert_eq!(normalize_name("zope.interface"), "zope-interface");
        assert_eq!(normalize_name("a--b"), "a-b");
    }

    #[test]
    fn detection_order_and_empty_dir() {
        let d = tempfile::tempdir().unwrap();
        let e = Project::detect(d.path()).unwrap_err().to_string();
        assert!(e.contains("no Python project found"), "{e}");
        std::fs::write(d.path().join("requirements.txt"), "flask==3.0.0\n").unwrap();
        std::fs::write(d.path().join(".python-version"), "3.11\n").unwrap();
        let p = Project::detect(d.path()).unwrap();
        assert!(matches!(p.deps, DepSource::Requirements { .. }));
        assert_eq!(p.python_request.as_ref().unwrap().0, "3.11");
        assert!(
            !p.is_locked(),
            "pinned without hashes does not fix transitive deps"
        );
        std::fs::write(
            d.path().join("pyproject.toml"),
            "[project]\nname='My_App'\ndependencies=['flask']\n",
        )
        .unwrap();
        std::fs::write(d.path().join("uv.lock"), "version = 1\n").unwrap();
        let p = Project::detect(d.path()).unwrap();
        assert!(matches!(p.deps, DepSource::UvLock { .. }));
        assert!(p.is_locked());
        assert_eq!(p.name, "my-app");
    }
}
