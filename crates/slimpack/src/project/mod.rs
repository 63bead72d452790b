//! Detecting the app: where its dependencies are declared, which Python it
//! asks for, how it starts, and which files are its source.

pub mod entrypoint;
pub mod ignore;
pub mod indexes;
pub mod pipfile;
pub mod pyproject;
pub mod python_version;
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
        /// Its `--index-url` lines.
        #[serde(skip)]
        index_lines: Vec<requirements::IndexLine>,
    },
    /// `uv.lock` beside `pyproject.toml`: exported as locked requirements.
    UvLock { pyproject: PathBuf, lock: PathBuf },
    /// `poetry.lock`: the pyproject's dependencies resolved with every
    /// version pinned to the lock.
    PoetryLock { pyproject: PathBuf, lock: PathBuf },
    /// Dependencies declared in `pyproject.toml` without a lock.
    Pyproject { pyproject: PathBuf },
    /// `pdm.lock`: the pyproject's dependencies pinned to the lock, as
    /// `poetry.lock`.
    PdmLock { pyproject: PathBuf, lock: PathBuf },
    /// Pipenv: `Pipfile`, and `Pipfile.lock` when there is one (then used
    /// exactly, with its hashes).
    Pipfile {
        pipfile: PathBuf,
        lock: Option<PathBuf>,
    },
    /// `setup.py` (and the `setup.cfg` it reads): its `install_requires`,
    /// resolved by uv.
    SetupPy { file: PathBuf },
    /// No dependency file: the standard library only.
    None,
}

/// The project as a package installed into the venv: its metadata and
/// console scripts there, its code left in /app (a `.pth` file points
/// there), so an edit still rebuilds only the app layer.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AppPackage {
    pub name: String,
    pub version: String,
    /// Console script name → `module:function`.
    pub scripts: std::collections::BTreeMap<String, String>,
    /// Where its import root is in the image: `/app`, or `/app/src` for a
    /// src layout.
    pub path: String,
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
    /// Set when the project is itself a package (a `[build-system]` or
    /// console scripts): installed into the venv as [`AppPackage`] says.
    pub package: Option<AppPackage>,
    pub config: Config,
    pub config_origin: Option<String>,
    /// Where packages come from, when not (only) PyPI.
    pub indexes: indexes::Indexes,
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

/// Where the dependencies are declared, first match wins: uv.lock,
/// poetry.lock, pdm.lock, Pipfile(.lock), requirements.txt, pyproject.toml,
/// setup.py; with none of them, Python files alone are a standard-library
/// app.
fn dependency_source(dir: &Path, pyproject: Option<&pyproject::PyProject>) -> Result<DepSource> {
    let pp_path = dir.join("pyproject.toml");
    let has_pp_deps = pyproject.is_some_and(|p| p.style != pyproject::Style::None);
    let file = |name: &str| Some(dir.join(name)).filter(|p| p.is_file());
    if let (Some(lock), Some(_)) = (file("uv.lock"), pyproject) {
        return Ok(DepSource::UvLock {
            pyproject: pp_path,
            lock,
        });
    }
    if let Some(lock) = file("poetry.lock").filter(|_| has_pp_deps) {
        return Ok(DepSource::PoetryLock {
            pyproject: pp_path,
            lock,
        });
    }
    if let Some(lock) = file("pdm.lock").filter(|_| has_pp_deps) {
        return Ok(DepSource::PdmLock {
            pyproject: pp_path,
            lock,
        });
    }
    if let Some(pipfile) = file("Pipfile") {
        return Ok(DepSource::Pipfile {
            pipfile,
            lock: file("Pipfile.lock"),
        });
    }
    if let Some(req) = file("requirements.txt") {
        let r = requirements::read(&req)?;
        return Ok(DepSource::Requirements {
            files: r.files,
            parsed: r.requirements,
            index_lines: r.indexes,
        });
    }
    if has_pp_deps {
        return Ok(DepSource::Pyproject { pyproject: pp_path });
    }
    // setup.cfg alone is no project to build tools (PEP 517 needs
    // setup.py or pyproject.toml); it is read through setup.py.
    if let Some(file) = file("setup.py") {
        return Ok(DepSource::SetupPy { file });
    }
    if file("setup.cfg").is_some() {
        bail!(
            "{}: setup.cfg without setup.py or pyproject.toml: build tools need one of them to read it; add a setup.py holding `from setuptools import setup; setup()`",
            dir.join("setup.cfg").display()
        );
    }
    if has_python_files(dir) {
        return Ok(DepSource::None);
    }
    bail!(
        "{}: no Python project found: expected requirements.txt, pyproject.toml (with uv.lock, poetry.lock or pdm.lock), Pipfile, setup.py, or at least one .py file",
        dir.display()
    )
}

/// The project as a package, when it declares itself one.
fn app_package(dir: &Path, pp: &pyproject::PyProject) -> Option<AppPackage> {
    let name = pp.name.clone()?;
    if !pp.build_system && pp.scripts.is_empty() {
        return None;
    }
    let src = dir.join("src");
    let src_layout = src.is_dir()
        && std::fs::read_dir(&src)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                e.path().join("__init__.py").is_file()
                    || e.path().extension().is_some_and(|x| x == "py")
            });
    Some(AppPackage {
        name,
        version: pp.version.clone().unwrap_or_else(|| "0".into()),
        scripts: pp.scripts.clone(),
        path: if src_layout { "/app/src" } else { "/app" }.into(),
    })
}

/// A `.py` file at the top or one directory down.
fn has_python_files(dir: &Path) -> bool {
    let py = |d: &Path| {
        std::fs::read_dir(d)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.path().extension().is_some_and(|x| x == "py") && e.path().is_file())
    };
    py(dir)
        || std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_dir() && !e.file_name().to_string_lossy().starts_with('.'))
            .any(|e| py(&e.path()))
}

impl Project {
    pub fn detect(dir: &Path) -> Result<Project> {
        if !dir.is_dir() {
            bail!("{} is not a directory", dir.display());
        }
        let dir = dir
            .canonicalize()
            .with_context(|| format!("resolving {}", dir.display()))?;
        // An unreadable directory says so, not "no Python project found".
        std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?;
        let pp_path = dir.join("pyproject.toml");
        let pyproject = if pp_path.is_file() {
            Some(pyproject::read(&pp_path)?)
        } else {
            None
        };
        let (config, config_origin) =
            Config::load(&dir, pyproject.as_ref().and_then(|p| p.slimpack.as_ref()))?;

        let deps = dependency_source(&dir, pyproject.as_ref())?;
        let pipfile = match &deps {
            DepSource::Pipfile { pipfile, .. } => Some(pipfile::read(pipfile)?),
            _ => None,
        };
        let pipfile_python = pipfile.as_ref().and_then(|p| p.python_version.clone());
        let python_request = python_version::find(
            &dir,
            pipfile_python.as_deref(),
            pyproject
                .as_ref()
                .and_then(|p| p.requires_python.as_deref())
                .map(|r| (r, pp_path.as_path())),
        );

        let declared = pyproject.as_ref().and_then(|p| p.name.clone());
        let name_declared = declared.is_some();
        let name = declared
            .or_else(|| dir.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "app".into());
        let package = pyproject.as_ref().and_then(|p| app_package(&dir, p));
        let index_lines = match &deps {
            DepSource::Requirements { index_lines, .. } => index_lines.as_slice(),
            _ => &[],
        };
        let declared: Vec<&indexes::Indexes> = pyproject
            .iter()
            .map(|p| &p.indexes)
            .chain(pipfile.iter().map(|p| &p.indexes))
            .collect();
        let indexes = indexes::read(&declared, index_lines, &|k| std::env::var(k).ok())?;
        Ok(Project {
            indexes,
            name: normalize_name(&name),
            name_declared,
            package,
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
            DepSource::UvLock { .. } | DepSource::PoetryLock { .. } | DepSource::PdmLock { .. } => {
                true
            }
            DepSource::Pipfile { lock, .. } => lock.is_some(),
            DepSource::None => true,
            DepSource::SetupPy { .. } => false,
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
            DepSource::UvLock { pyproject, lock }
            | DepSource::PoetryLock { pyproject, lock }
            | DepSource::PdmLock { pyproject, lock } => {
                vec![pyproject.clone(), lock.clone()]
            }
            DepSource::Pyproject { pyproject } => vec![pyproject.clone()],
            DepSource::Pipfile { pipfile, lock } => std::iter::once(pipfile.clone())
                .chain(lock.clone())
                .collect(),
            DepSource::SetupPy { file } => std::iter::once(file.clone())
                .chain(Some(self.dir.join("setup.cfg")).filter(|p| p.is_file()))
                .collect(),
            DepSource::None => Vec::new(),
        }
    }

    pub fn describe_deps(&self) -> String {
        let rel = |p: &Path| p.strip_prefix(&self.dir).unwrap_or(p).display().to_string();
        match &self.deps {
            DepSource::Requirements { files, .. } => rel(&files[0]),
            DepSource::UvLock { lock, .. } => rel(lock),
            DepSource::PoetryLock { lock, .. } | DepSource::PdmLock { lock, .. } => rel(lock),
            DepSource::Pyproject { pyproject } => rel(pyproject),
            DepSource::Pipfile { pipfile, lock } => rel(lock.as_ref().unwrap_or(pipfile)),
            DepSource::SetupPy { file } => rel(file),
            DepSource::None => "no dependency file (standard library only)".into(),
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

    #[test]
    fn scripts_alone_and_setup_cfg_alone() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("bot.py"), "print('hi')\n").unwrap();
        let p = Project::detect(d.path()).unwrap();
        assert!(matches!(p.deps, DepSource::None));
        assert!(p.is_locked() && p.dependency_inputs().is_empty());
        std::fs::write(
            d.path().join("setup.cfg"),
            "[options]\ninstall_requires = flask\n",
        )
        .unwrap();
        let e = Project::detect(d.path()).unwrap_err().to_string();
        assert!(e.contains("setup.cfg") && e.contains("setup.py"), "{e}");
        std::fs::write(
            d.path().join("setup.py"),
            "from setuptools import setup; setup()\n",
        )
        .unwrap();
        assert!(matches!(
            Project::detect(d.path()).unwrap().deps,
            DepSource::SetupPy { .. }
        ));
        std::fs::write(d.path().join("Pipfile"), "[packages]\nflask = '*'\n").unwrap();
        let p = Project::detect(d.path()).unwrap();
        assert!(matches!(p.deps, DepSource::Pipfile { lock: None, .. }));
        assert!(!p.is_locked());
    }
}
