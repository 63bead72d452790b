//! The project's own packages that its lock names by path: uv workspace
//! members, path dependencies (`./libs/x`, `-e ./libs/x`, Poetry's and
//! uv's `path` sources). They are not on any index: each is built into a
//! wheel by its own build backend and installed into the venv, not
//! editable, with nothing in it that names the build machine.

use super::{site_dir, Target};
use crate::core::cache::KeyHasher;
use crate::python::uv::Uv;
use anyhow::{bail, Context, Result};
use std::path::{Component, Path, PathBuf};

/// Splits the local and git entries out of a lock: the lock without them,
/// the local packages' paths relative to `project` (the project itself,
/// `.`, is left out: its code is the app's), and the git requirements.
pub fn split(text: &str, project: &Path) -> Result<Split> {
    let mut kept = String::new();
    let mut local = Vec::new();
    let mut vcs = Vec::new();
    let mut skipping = false;
    for line in text.lines() {
        if line.starts_with(' ') || line.trim().is_empty() {
            if !skipping {
                kept.push_str(line);
                kept.push('\n');
            }
            continue;
        }
        skipping = false;
        if line.contains(" @ git+") {
            // Pinned to a commit by the resolver; no hash can be had.
            skipping = true;
            vcs.push(line.trim_end_matches('\\').trim().to_string());
            continue;
        }
        if let Some(path) = local_path(line) {
            skipping = true;
            let rel = relative(&path, project)?;
            if rel != "." && !local.contains(&rel) {
                local.push(rel);
            }
            continue;
        }
        kept.push_str(line);
        kept.push('\n');
    }
    local.sort();
    vcs.sort();
    Ok(Split {
        text: kept,
        local,
        vcs,
    })
}

/// A lock with the entries that are not hash-pinned downloads taken out.
#[derive(Debug)]
pub struct Split {
    pub text: String,
    /// Paths of the project's own packages, relative to it.
    pub local: Vec<String>,
    /// `name @ git+URL@COMMIT` lines.
    pub vcs: Vec<String>,
}

/// The path a requirement line installs from, when it is a local one:
/// `-e ./x`, `./x`, `file:///x`, `name @ file:///x`.
fn local_path(line: &str) -> Option<String> {
    let line = line.trim().trim_end_matches('\\').trim();
    let line = line
        .strip_prefix("-e ")
        .or_else(|| line.strip_prefix("--editable "))
        .unwrap_or(line)
        .trim();
    let target = match line.split_once(" @ ") {
        Some((_, url)) => url.trim(),
        None => line,
    };
    let target = target.split([';', ' ']).next().unwrap_or(target);
    if let Some(p) = target.strip_prefix("file://") {
        return Some(p.to_string());
    }
    (target.starts_with("./")
        || target.starts_with("../")
        || target.starts_with('/')
        || target == ".")
        .then(|| target.to_string())
}

/// `path` (absolute, or relative to `project`) as a path inside the
/// project; a path that leaves it is refused.
fn relative(path: &str, project: &Path) -> Result<String> {
    let joined = project.join(path);
    let mut parts: Vec<String> = Vec::new();
    let root: Vec<String> = project
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    for c in joined.components() {
        match c {
            Component::Normal(n) => parts.push(n.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    if parts.len() < root.len() || parts[..root.len()] != root[..] {
        bail!(
            "the dependency at {path} is outside the project {}: slimpack builds only what is in the project's directory; move it in, or publish it to an index",
            project.display()
        );
    }
    let rel = parts[root.len()..].join("/");
    Ok(if rel.is_empty() { ".".into() } else { rel })
}

/// A local package and the hash of its sources (part of the venv's key:
/// an edit in it rebuilds the venv).
#[derive(Debug, Clone, serde::Serialize)]
pub struct LocalPackage {
    pub path: String,
    pub digest: String,
}

/// Hashes every source file under each local package.
pub fn digests(project: &Path, local: &[String]) -> Result<Vec<LocalPackage>> {
    local
        .iter()
        .map(|rel| {
            let dir = project.join(rel);
            if !dir.is_dir() {
                bail!(
                    "the lock names the local package {rel}, but {} is not a directory",
                    dir.display()
                );
            }
            let mut h = KeyHasher::new("local-package");
            for e in walkdir::WalkDir::new(&dir)
                .sort_by_file_name()
                .into_iter()
                .filter_entry(|e| !skipped(e.file_name().to_string_lossy().as_ref()))
            {
                let e = e?;
                if e.file_type().is_file() {
                    let p = e.path().strip_prefix(&dir).unwrap_or(e.path());
                    h.part("file", p.to_string_lossy().as_bytes())
                        .part("content", std::fs::read(e.path())?);
                }
            }
            Ok(LocalPackage {
                path: rel.clone(),
                digest: h.finish(),
            })
        })
        .collect()
}

/// What a build leaves in a package's tree, never its source.
fn skipped(name: &str) -> bool {
    matches!(
        name,
        "__pycache__" | ".git" | "build" | "dist" | ".venv" | ".pytest_cache" | ".mypy_cache"
    ) || name.ends_with(".egg-info")
}

/// Builds each local package into a wheel (its own build backend, in a
/// copy: nothing is written into the project) and installs them, without
/// their dependencies (the lock has those), into `venv`.
/// Installs the git requirements (each pinned to a commit by the lock):
/// uv clones and builds them with the host's git and its credentials from
/// the environment, never stored; no dependencies (the lock has those).
pub fn install_vcs(vcs: &[String], target: &Target, uv: &Uv, venv: &Path) -> Result<()> {
    if vcs.is_empty() {
        return Ok(());
    }
    install_no_deps(uv, target, venv, vcs, "installing the git dependencies")
}

pub fn install(
    project: &Path,
    local: &[LocalPackage],
    target: &Target,
    uv: &Uv,
    venv: &Path,
) -> Result<()> {
    if local.is_empty() {
        return Ok(());
    }
    let work = tempfile::tempdir()?;
    let wheels = work.path().join("wheels");
    let mut built: Vec<PathBuf> = Vec::new();
    for p in local {
        let src = work.path().join("src").join(&p.path);
        copy_tree(&project.join(&p.path), &src)?;
        let before: Vec<PathBuf> = list(&wheels);
        let mut c = uv.command()?;
        c.args(["build", "--wheel", "--quiet", "--out-dir"])
            .arg(&wheels)
            .arg(&src);
        // Its build backend may come from the project's indexes too.
        uv.indexes().apply(&mut c, super::index::Purpose::Resolve)?;
        uv.run(c, &format!("building the local package {}", p.path))?;
        let new: Vec<PathBuf> = list(&wheels)
            .into_iter()
            .filter(|w| !before.contains(w))
            .collect();
        if new.is_empty() {
            bail!("building {} made no wheel", p.path);
        }
        built.extend(new);
    }
    install_no_deps(
        uv,
        target,
        venv,
        &built,
        "installing the project's local packages",
    )
}

/// The wheels in `dir` (uv also leaves a `.gitignore` there).
/// `uv pip install --no-deps` of `what` (wheels, or requirements uv builds)
/// into the venv's site-packages for the target, then without the paths of
/// this build.
fn install_no_deps<S: AsRef<std::ffi::OsStr>>(
    uv: &Uv,
    target: &Target,
    venv: &Path,
    what: &[S],
    doing: &str,
) -> Result<()> {
    let site = site_dir(venv, target);
    std::fs::create_dir_all(&site)?;
    let mut c = super::pip_install_into(uv, target, &site)?;
    c.args(what);
    uv.run(c, doing)?;
    forget_build_paths(&site)
}

fn list(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "whl"))
        .collect();
    v.sort();
    v
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    for e in walkdir::WalkDir::new(from)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| !skipped(e.file_name().to_string_lossy().as_ref()))
    {
        let e = e?;
        let rel = e.path().strip_prefix(from).unwrap_or(e.path());
        let dest = to.join(rel);
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&dest)?;
        } else if e.file_type().is_file() {
            std::fs::copy(e.path(), &dest)
                .with_context(|| format!("copying {}", e.path().display()))?;
        }
    }
    Ok(())
}

/// A wheel installed from a file records that file's URL (a temporary
/// path of this build) in `direct_url.json`, and uv adds `uv_cache.json`
/// with the time of the build: both dropped, with their RECORD lines, so
/// the venv is the same on every machine and every run.
fn forget_build_paths(site: &Path) -> Result<()> {
    for e in std::fs::read_dir(site)?.flatten() {
        let info = e.path();
        if !info.to_string_lossy().ends_with(".dist-info") {
            continue;
        }
        let mut dropped = Vec::new();
        let direct = info.join("direct_url.json");
        if std::fs::read_to_string(&direct).is_ok_and(|u| u.contains("file://")) {
            dropped.push("direct_url.json");
        }
        if info.join("uv_cache.json").is_file() {
            dropped.push("uv_cache.json");
        }
        if dropped.is_empty() {
            continue;
        }
        for f in &dropped {
            std::fs::remove_file(info.join(f))?;
        }
        let record = info.join("RECORD");
        if let Ok(text) = std::fs::read_to_string(&record) {
            let kept: String = text
                .lines()
                .filter(|l| !dropped.iter().any(|f| l.contains(&format!("/{f},"))))
                .map(|l| format!("{l}\n"))
                .collect();
            std::fs::write(&record, kept)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_entries_leave_the_lock() {
        let project = Path::new("/work/app");
        let text = "-e ./packages/greet\n    # via -r req.txt\nclick==8.5.1 \\\n    --hash=sha256:aa\n./libs/util\n    # via x\nlib2 @ file:///work/app/libs/two\n-e .\nitsdangerous==2.2.0 \\\n    --hash=sha256:bb\n";
        let Split {
            text: kept,
            local,
            vcs,
        } = split(text, project).unwrap();
        assert!(vcs.is_empty());
        assert_eq!(local, vec!["libs/two", "libs/util", "packages/greet"]);
        assert_eq!(
            kept,
            "click==8.5.1 \\\n    --hash=sha256:aa\nitsdangerous==2.2.0 \\\n    --hash=sha256:bb\n"
        );
        let s = split("colors @ git+https://example.com/c.git@78dd599378ed255ba6b93251b597a1393b56741c\n    # via -r x\nflask==3 \\\n    --hash=sha256:cc\n", project).unwrap();
        assert_eq!(
            s.vcs,
            vec!["colors @ git+https://example.com/c.git@78dd599378ed255ba6b93251b597a1393b56741c"]
        );
        assert_eq!(s.text, "flask==3 \\\n    --hash=sha256:cc\n");
        let e = split("../elsewhere\n", project).unwrap_err().to_string();
        assert!(e.contains("outside the project"), "{e}");
        let e = split("x @ file:///etc\n", project).unwrap_err().to_string();
        assert!(e.contains("outside the project"), "{e}");
    }
}
