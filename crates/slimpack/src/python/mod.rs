//! Dependencies with uv: resolved once for the image's Python and platform
//! (never the host's), installed from wheels into a real venv at /opt/venv,
//! and compiled to bytecode by the image's own interpreter.

pub mod bytecode;
pub mod index;
pub mod local;
pub mod native;
pub mod strip;
pub mod system;
pub mod uv;

use crate::core::cache::{Cache, KeyHasher, RecordKind};
use crate::core::errors::hinted;
use crate::project::{normalize_name, pipfile, DepSource, Project};
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use uv::Uv;

/// Where the venv lives in the image.
pub const VENV: &str = "/opt/venv";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    /// `3.11`; `3.13t` for a free-threaded build: the name its interpreter,
    /// library directory and bytecode carry.
    pub minor: String,
    /// `3.11.2`, the interpreter's exact version.
    pub version: String,
    /// uv's `--python-platform`, e.g. `x86_64-manylinux_2_36`.
    pub platform: String,
    /// The interpreter's path in the image (`/usr/bin/python3.11` on a
    /// Debian base, `/usr/local/bin/python3.12` on python:3.12-slim).
    #[serde(default)]
    pub interpreter: String,
    /// Its standard library directory in the image.
    #[serde(default)]
    pub stdlib: String,
    /// A free-threaded build (`3.13t`): its wheels carry another ABI
    /// (`cp313t`), which uv takes only from an interpreter it runs, never
    /// from a version.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub freethreaded: bool,
    /// The same interpreter, runnable here, for uv to ask (set for
    /// free-threaded targets only; never part of a key or the plan).
    #[serde(skip)]
    pub host_interpreter: Option<PathBuf>,
}

impl Target {
    /// The interpreter of Debian's python3.X package.
    pub fn debian(minor: &str, version: &str, glibc: &str) -> Target {
        Target {
            minor: minor.to_string(),
            version: version.to_string(),
            platform: platform_for_glibc(glibc),
            interpreter: format!("/usr/bin/python{minor}"),
            stdlib: format!("/usr/lib/python{minor}"),
            freethreaded: false,
            host_interpreter: None,
        }
    }

    /// The tag of its bytecode files (`cpython-313`): the same for a
    /// free-threaded build, whose bytecode is the same.
    pub fn cache_tag(&self) -> String {
        let minor = self.minor.strip_suffix('t').unwrap_or(&self.minor);
        format!("cpython-{}", minor.replace('.', ""))
    }

    /// How uv is told the Python to resolve and install for: the version
    /// alone, or for a free-threaded build the interpreter itself (its ABI
    /// is not part of a version uv accepts); the platform either way.
    pub fn uv_python_args(&self) -> Result<Vec<std::ffi::OsString>> {
        let mut args: Vec<std::ffi::OsString> = Vec::new();
        if self.freethreaded {
            let host = self.host_interpreter.as_ref().ok_or_else(|| {
                anyhow!(
                    "Python {} is free-threaded, and slimpack has no copy of it to ask for its wheel tags (a registry base with a free-threaded Python is not supported)",
                    self.minor
                )
            })?;
            args.extend(["--python".into(), host.into()]);
        } else {
            args.extend(["--python-version".into(), self.minor.clone().into()]);
        }
        args.extend(["--python-platform".into(), self.platform.clone().into()]);
        Ok(args)
    }
}

/// The manylinux level a glibc supports, within what uv knows.
pub fn platform_for_glibc(glibc: &str) -> String {
    let minor: u32 = glibc
        .split('.')
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or(17);
    format!("x86_64-manylinux_2_{}", minor.clamp(17, 40))
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LockedPackage {
    pub name: String,
    pub version: String,
}

/// A complete, hash-pinned resolution for one target.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Lock {
    /// requirements.txt text with `--hash` for every package.
    pub text: String,
    pub packages: Vec<LockedPackage>,
    /// How it was obtained (for the plan).
    pub how: String,
    pub key: String,
    /// Packages with no usable wheel (or named in `no-binary`): they are
    /// compiled in the builder stage.
    #[serde(default)]
    pub source_builds: Vec<String>,
    /// The project's own packages the lock names by path (workspace
    /// members, path dependencies), relative to the project: built into
    /// wheels and installed, not fetched.
    #[serde(default)]
    pub local: Vec<String>,
    /// Git requirements pinned to a commit (`name @ git+URL@SHA`): cloned
    /// and built, as no hash can pin them.
    #[serde(default)]
    pub vcs: Vec<String>,
    /// The index each package was resolved from (normalized name → URL),
    /// when the project declares indexes.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub origins: std::collections::BTreeMap<String, String>,
}

impl Lock {
    /// The requirement `name` takes in the lock text, with its hashes: the
    /// line and its continuation lines.
    pub fn requirement(&self, name: &str) -> Option<String> {
        let name = normalize_name(name);
        requirement_blocks(&self.text)
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, b)| b)
    }

    /// A lock of `packages` (name, version) and nothing else, for tests.
    #[cfg(test)]
    pub fn of(packages: &[(&str, &str)]) -> Lock {
        Lock {
            text: String::new(),
            packages: packages
                .iter()
                .map(|(n, v)| LockedPackage {
                    name: n.to_string(),
                    version: v.to_string(),
                })
                .collect(),
            how: String::new(),
            key: String::new(),
            source_builds: Vec::new(),
            local: Vec::new(),
            vcs: Vec::new(),
            origins: BTreeMap::new(),
        }
    }

    /// This lock without the packages `names`.
    pub fn without(&self, names: &[String]) -> Lock {
        let names: Vec<String> = names.iter().map(|n| normalize_name(n)).collect();
        self.filtered(|n| !names.contains(n))
    }

    /// This lock with only the packages `names`.
    pub fn only(&self, names: &[String]) -> Lock {
        let names: Vec<String> = names.iter().map(|n| normalize_name(n)).collect();
        self.filtered(|n| names.contains(n))
    }

    fn filtered(&self, keep: impl Fn(&String) -> bool) -> Lock {
        let text: String = requirement_blocks(&self.text)
            .into_iter()
            .filter(|(n, _)| keep(n))
            .map(|(_, b)| b)
            .collect();
        Lock {
            packages: self
                .packages
                .iter()
                .filter(|p| keep(&normalize_name(&p.name)))
                .cloned()
                .collect(),
            text,
            source_builds: self
                .source_builds
                .iter()
                .filter(|p| keep(&normalize_name(p)))
                .cloned()
                .collect(),
            ..self.clone()
        }
    }
}

/// The normalized name of the requirement `line` starts, if it starts one
/// (an unindented line that is no comment).
fn requirement_name(line: &str) -> Option<String> {
    if line.is_empty() || line.starts_with([' ', '\t', '#']) {
        return None;
    }
    let name: String = line
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    Some(normalize_name(&name))
}

/// The lock text's requirements as (normalized name, text of the block):
/// a requirement starts at an unindented line; `--hash` continuations and
/// `# via` comments under it belong to it.
fn requirement_blocks(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(name) = requirement_name(line) {
            out.push((name, String::new()));
        }
        if let Some((_, block)) = out.last_mut() {
            block.push_str(line);
            block.push('\n');
        }
    }
    out
}

fn parse_locked(text: &str) -> Vec<LockedPackage> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with([' ', '#', '-']) || line.trim().is_empty() {
            continue;
        }
        if let Some((n, url)) = line.split_once(" @ ") {
            // A direct URL: its version from the wheel's file name.
            let file = url
                .split([' ', ';', '#'])
                .next()
                .unwrap_or("")
                .rsplit('/')
                .next()
                .unwrap_or("");
            let version = file.split('-').nth(1).unwrap_or("url").to_string();
            out.push(LockedPackage {
                name: normalize_name(n.trim()),
                version,
            });
            continue;
        }
        let spec = line.split([';', ' ', '\\']).next().unwrap_or("");
        if let Some((n, v)) = spec.split_once("==") {
            out.push(LockedPackage {
                name: normalize_name(n.split('[').next().unwrap_or(n)),
                version: v.trim().to_string(),
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Extra requirement files for `--with GROUP` in a requirements.txt project.
pub(crate) fn group_requirements(dir: &Path, group: &str) -> Result<PathBuf> {
    for cand in [
        format!("requirements-{group}.txt"),
        format!("requirements_{group}.txt"),
        format!("{group}-requirements.txt"),
        format!("requirements/{group}.txt"),
    ] {
        let p = dir.join(&cand);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "--with {group}: no requirements-{group}.txt (or requirements/{group}.txt) in {}",
        dir.display()
    )
}

fn wheel_hint(stderr: &str, target: &Target) -> Option<String> {
    if uv::says_no_wheels(stderr) {
        Some(format!(
            "the package above has neither a wheel for CPython {} on {} nor a source distribution slimpack could build. Pin another version, or choose another --python.",
            target.minor, target.platform
        ))
    } else if stderr.contains("not found in the package registry")
        || stderr.contains("was not found")
    {
        Some("check the package name (is it spelled as on PyPI?).".into())
    } else {
        None
    }
}

/// Distributions that publish no wheel for Linux (only an sdist, or
/// Windows and macOS wheels): always compiled in the builder. (psycopg2's
/// last Linux wheels, 2.7.x, are for Pythons no build targets.)
pub const SDIST_ONLY: &[&str] = &["psycopg2", "psycopg-c", "mysqlclient", "python-ldap"];

/// The [`SDIST_ONLY`] distributions the project's dependency files name,
/// read as words before anything is resolved: a guess, used only to start
/// the builder early (a name in a comment costs a download, nothing more).
pub fn sdist_only_named(project: &Project) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    for f in project.dependency_inputs() {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || "._-".contains(c))) {
            let name = normalize_name(word);
            if SDIST_ONLY.contains(&name.as_str()) && !found.contains(&name) {
                found.push(name);
            }
        }
    }
    found.sort();
    found
}

/// Resolves the project's dependencies for `target`, or reuses the
/// resolution recorded for exactly these inputs.
pub fn resolve(
    project: &Project,
    groups: &[String],
    target: &Target,
    uv: &Uv,
    no_binary: &[String],
    cache: &Cache,
    refresh: bool,
) -> Result<(Lock, bool)> {
    let key = resolution_key(project, groups, target, uv, no_binary)?;
    if !refresh {
        if let Some(lock) = cache.get::<Lock>(RecordKind::Resolution, &key) {
            return Ok((lock, true));
        }
    }
    let work = tempfile::tempdir()?;
    let mut compiler = Compiler {
        uv,
        dir: &project.dir,
        target,
        out: work.path().join("lock.txt"),
        // Known at once, instead of from a first resolution that fails on
        // them: `--no-binary` for a package not in the tree changes nothing.
        source_builds: no_binary
            .iter()
            .cloned()
            .chain(SDIST_ONLY.iter().map(|s| s.to_string()))
            .collect(),
        refresh,
    };
    let how = write_lock(project, groups, uv, &mut compiler, work.path())?;
    let text = std::fs::read_to_string(&compiler.out).context("reading uv's resolution")?;
    let (text, origins) = origins_of(project, text)?;
    let local::Split { text, local, vcs } = local::split(&text, &project.dir)?;
    let packages = parse_locked(&text);
    let mut source_builds: Vec<String> = compiler
        .source_builds
        .into_iter()
        .filter(|s| {
            packages
                .iter()
                .any(|p| normalize_name(&p.name) == normalize_name(s))
        })
        .collect();
    source_builds.sort();
    source_builds.dedup();
    let lock = Lock {
        packages,
        text,
        how,
        key: key.clone(),
        source_builds,
        local,
        vcs,
        origins,
    };
    cache.put(RecordKind::Resolution, &key, &lock)?;
    Ok((lock, false))
}

/// Writes the hash-pinned lock for the project's dependency source to
/// `compiler.out`; how it was obtained, for the plan.
fn write_lock(
    project: &Project,
    groups: &[String],
    uv: &Uv,
    compiler: &mut Compiler,
    work: &Path,
) -> Result<String> {
    Ok(match &project.deps {
        DepSource::Requirements { files, .. } => {
            let mut args: Vec<&std::ffi::OsStr> = vec![files[0].as_os_str()];
            let extra: Vec<PathBuf> = groups
                .iter()
                .map(|g| group_requirements(&project.dir, g))
                .collect::<Result<_>>()?;
            args.extend(extra.iter().map(|p| p.as_os_str()));
            compiler.compile(&args, &project.describe_deps())?;
            format!(
                "resolved {} with uv {}",
                project.describe_deps(),
                uv.version
            )
        }
        DepSource::Pyproject { .. } => {
            let input = requirements_in(project, groups, work)?;
            compiler.compile(&[input.as_os_str()], "the dependencies in pyproject.toml")?;
            format!(
                "resolved pyproject.toml dependencies with uv {}",
                uv.version
            )
        }
        DepSource::PoetryLock { lock, .. } => {
            let input = requirements_in(project, groups, work)?;
            let constraints = work.join("constraints.txt");
            std::fs::write(&constraints, poetry_pins(lock)?)?;
            compiler.compile(
                &[input.as_os_str(), "-c".as_ref(), constraints.as_os_str()],
                "the dependencies in pyproject.toml pinned by poetry.lock",
            )?;
            format!(
                "pyproject.toml dependencies pinned to poetry.lock, resolved with uv {}",
                uv.version
            )
        }
        DepSource::UvLock { .. } => {
            export_uv_lock(project, groups, uv, &compiler.out)?;
            format!("exported from uv.lock with uv {}", uv.version)
        }
        DepSource::PdmLock { lock, .. } => {
            let input = requirements_in(project, groups, work)?;
            let constraints = work.join("constraints.txt");
            std::fs::write(&constraints, poetry_pins(lock)?)?;
            compiler.compile(
                &[input.as_os_str(), "-c".as_ref(), constraints.as_os_str()],
                "the dependencies in pyproject.toml pinned by pdm.lock",
            )?;
            format!(
                "pyproject.toml dependencies pinned to pdm.lock, resolved with uv {}",
                uv.version
            )
        }
        DepSource::Pipfile {
            lock: Some(lock), ..
        } => {
            let dev = pipenv_dev(groups, lock)?;
            std::fs::write(&compiler.out, pipfile::locked_requirements(lock, dev)?)?;
            "Pipfile.lock, as locked (hashes included)".to_string()
        }
        DepSource::Pipfile {
            pipfile,
            lock: None,
        } => {
            let f = pipfile::read(pipfile)?;
            let mut reqs = f.packages;
            if pipenv_dev(groups, pipfile)? {
                reqs.extend(f.dev_packages);
            }
            let input = write_input(&reqs, project, work)?;
            compiler.compile(&[input.as_os_str()], "the packages in Pipfile")?;
            format!("resolved Pipfile [packages] with uv {}", uv.version)
        }
        DepSource::SetupPy { file } => {
            // Building the project's metadata needs its build backend, which
            // the wheels-only resolution refuses: read install_requires
            // first, then resolve them as any requirements.
            let input = work.join("requirements.in");
            std::fs::write(&input, direct_requirements(project, uv, file)?)?;
            compiler.compile(&[input.as_os_str()], &project.describe_deps())?;
            format!(
                "resolved {}'s install_requires with uv {}",
                project.describe_deps(),
                uv.version
            )
        }
        DepSource::None => {
            if let Some(g) = groups.first() {
                bail!("--with {g}: the project declares no dependencies (no requirements.txt, pyproject.toml or Pipfile)");
            }
            std::fs::write(&compiler.out, "")?;
            "no dependencies: the standard library only".to_string()
        }
    })
}

/// Everything a resolution depends on: the dependency files' content, the
/// target, uv, groups, `no-binary` and the index settings.
fn resolution_key(
    project: &Project,
    groups: &[String],
    target: &Target,
    uv: &Uv,
    no_binary: &[String],
) -> Result<String> {
    let mut inputs: Vec<PathBuf> = project.dependency_inputs();
    if let DepSource::Requirements { .. } = project.deps {
        for g in groups {
            inputs.push(group_requirements(&project.dir, g)?);
        }
    }
    let mut h = KeyHasher::new(RecordKind::Resolution.as_str());
    h.part("policy", "resolve-v2")
        .part("python", &target.minor)
        .part("platform", &target.platform)
        .part("uv", &uv.version);
    for g in groups {
        h.part("group", g);
    }
    for p in no_binary {
        h.part("no-binary", p);
    }
    // The indexes as declared, without credentials (which change nothing
    // a resolution picks, and must not be keyed).
    let indexes = &project.indexes;
    for i in &indexes.indexes {
        h.part("index", &i.name)
            .part("index-url", &i.url)
            .part("index-kind", format!("{:?}", i.kind));
    }
    for (package, index) in &indexes.pins {
        h.part("pin", package).part("pin-index", index);
    }
    for f in &inputs {
        let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
        h.part(
            "file",
            f.strip_prefix(&project.dir)
                .unwrap_or(f)
                .to_string_lossy()
                .as_bytes(),
        )
        .part("content", bytes);
    }
    Ok(h.finish())
}

/// `uv pip compile` for the target, wheels only, except for the packages
/// that have none (found by asking) or that the user wants built: those
/// go to the builder.
struct Compiler<'a> {
    uv: &'a Uv,
    dir: &'a Path,
    target: &'a Target,
    out: PathBuf,
    source_builds: Vec<String>,
    /// uv asks the indexes again too, rather than trusting pages it cached.
    refresh: bool,
}

impl Compiler<'_> {
    fn compile(&mut self, args: &[&std::ffi::OsStr], what: &str) -> Result<()> {
        loop {
            let mut c = self.uv.command()?;
            c.current_dir(self.dir)
                .args([
                    "pip",
                    "compile",
                    "--quiet",
                    "--no-header",
                    "--generate-hashes",
                    "--only-binary",
                    ":all:",
                ])
                .args(self.target.uv_python_args()?);
            let indexes = self.uv.indexes();
            indexes.apply(&mut c, index::Purpose::Resolve)?;
            if !indexes.indexes().is_empty() {
                c.arg("--emit-index-annotation");
            }
            if self.refresh {
                c.arg("--refresh");
            }
            for p in &self.source_builds {
                c.args(["--no-binary", p]);
            }
            c.arg("-o").arg(&self.out).args(args);
            let output = c.output().context("running uv")?;
            if output.status.success() {
                return Ok(());
            }
            let stderr = String::from_utf8_lossy(&output.stderr);
            let new: Vec<String> = uv::wheels_required(&stderr)
                .into_iter()
                .filter(|n| !self.source_builds.contains(n))
                .collect();
            if new.is_empty() {
                let message = format!("resolving {what} failed:\n{}", stderr.trim_end());
                let hint = indexes
                    .explain(&stderr)
                    .or_else(|| wheel_hint(&stderr, self.target));
                return Err(match hint {
                    Some(h) => hinted(message, h),
                    None => anyhow!(message),
                });
            }
            self.source_builds.extend(new);
        }
    }
}

/// A setup.py project's direct requirements, as uv reads them from the
/// built metadata (the host's python3 runs the build backend).
/// The build runs in a copy of the project's files (setuptools writes
/// `*.egg-info` beside setup.py, which must not land in the user's tree).
fn direct_requirements(project: &Project, uv: &Uv, setup: &Path) -> Result<String> {
    let copy = tempfile::tempdir()?;
    let rules = crate::project::ignore::IgnoreRules::for_project(&project.dir)?;
    let (files, _) = crate::project::ignore::collect(&project.dir, &rules)?;
    for f in files.iter().filter(|f| f.symlink.is_none()) {
        let to = copy.path().join(&f.rel);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(&f.path, &to).with_context(|| format!("copying {}", f.path.display()))?;
    }
    let out = copy.path().join(".slimpack-requirements.txt");
    let mut c = uv.command()?;
    c.current_dir(copy.path())
        .args([
            "pip",
            "compile",
            "--quiet",
            "--no-header",
            "--no-deps",
            "--no-annotate",
        ])
        .arg(setup.file_name().unwrap_or(setup.as_os_str()))
        .arg("-o")
        .arg(&out);
    uv.indexes().apply(&mut c, index::Purpose::Resolve)?;
    uv.run(
        c,
        &format!("reading the requirements of {}", setup.display()),
    )?;
    std::fs::read_to_string(&out).context("reading uv's output")
}

/// Whether `--with` asks for Pipenv's dev packages (the only group it has).
fn pipenv_dev(groups: &[String], file: &Path) -> Result<bool> {
    match groups {
        [] => Ok(false),
        [g] if g == "dev" => Ok(true),
        _ => bail!(
            "--with {}: {} has only [packages] and [dev-packages] (--with dev)",
            groups.join(","),
            file.display()
        ),
    }
}

/// pyproject.toml's dependencies and the selected groups, as a
/// requirements.in in `work`.
fn requirements_in(project: &Project, groups: &[String], work: &Path) -> Result<PathBuf> {
    let pp = project.pyproject.clone().unwrap_or_default();
    let mut reqs = pp.dependencies.clone();
    for g in groups {
        let more = pp.groups.get(g).ok_or_else(|| {
            anyhow!("--with {g}: pyproject.toml has no dependency group or extra named {g:?} (it has: {})",
                pp.groups.keys().cloned().collect::<Vec<_>>().join(", "))
        })?;
        reqs.extend(more.iter().cloned());
    }
    write_input(&reqs, project, work)
}

/// `requirements` as what `uv pip compile` reads: a requirements.in, or
/// where packages are pinned to an index a pyproject.toml that says so.
fn write_input(requirements: &[String], project: &Project, work: &Path) -> Result<PathBuf> {
    if project.indexes.pins.is_empty() {
        let input = work.join("requirements.in");
        std::fs::write(&input, requirements.join("\n") + "\n")?;
        return Ok(input);
    }
    let dir = work.join("pinned");
    std::fs::create_dir_all(&dir)?;
    let input = dir.join("pyproject.toml");
    std::fs::write(&input, index::pinned_input(requirements, &project.indexes))?;
    Ok(input)
}

/// The lock text without uv's index annotations, and which index each
/// package came from: from the annotations, or for uv.lock and
/// Pipfile.lock from the lock itself. Pins are checked against them.
fn origins_of(project: &Project, text: String) -> Result<(String, BTreeMap<String, String>)> {
    if project.indexes.is_empty() {
        return Ok((text, BTreeMap::new()));
    }
    let (text, mut origins) = index::take_origins(&text);
    match &project.deps {
        DepSource::UvLock { lock, .. } => origins = uv_lock_origins(&project.dir, lock)?,
        DepSource::Pipfile {
            lock: Some(lock), ..
        } => origins = pipfile::locked_origins(&project.dir, lock, &project.indexes)?,
        _ => {}
    }
    index::check_pins(&project.indexes, &origins)?;
    Ok((text, origins))
}

/// uv.lock's `source = { registry = URL }` of every package.
fn uv_lock_origins(dir: &Path, lock: &Path) -> Result<BTreeMap<String, String>> {
    let text = crate::core::fs::read_project_file(dir, lock)?;
    let doc = crate::core::fs::parse_toml(lock, &text)?;
    let mut out = BTreeMap::new();
    for p in doc
        .get("package")
        .and_then(|p| p.as_array())
        .into_iter()
        .flatten()
    {
        let name = p.get("name").and_then(|n| n.as_str());
        let registry = p
            .get("source")
            .and_then(|s| s.get("registry"))
            .and_then(|r| r.as_str());
        if let (Some(n), Some(r)) = (name, registry) {
            out.insert(normalize_name(n), r.trim_end_matches('/').to_string());
        }
    }
    Ok(out)
}

/// uv.lock as hash-pinned requirements, with the selected groups/extras.
fn export_uv_lock(project: &Project, groups: &[String], uv: &Uv, out: &Path) -> Result<()> {
    let pp = project.pyproject.clone().unwrap_or_default();
    let mut c = uv.command()?;
    c.current_dir(&project.dir)
        .args([
            "export",
            "--frozen",
            "--no-emit-project",
            "--no-header",
            "--format",
            "requirements-txt",
            "--no-default-groups",
            "--quiet",
        ])
        .arg("-o")
        .arg(out);
    for g in groups {
        if pp.extras.contains(g) {
            c.args(["--extra", g]);
        } else {
            c.args(["--group", g]);
        }
    }
    uv.run(c, "exporting uv.lock")?;
    Ok(())
}

/// `name==version` for every package of a poetry.lock.
fn poetry_pins(lock: &Path) -> Result<String> {
    let text = crate::core::fs::read_project_file(lock.parent().unwrap_or(Path::new(".")), lock)?;
    let doc = crate::core::fs::parse_toml(lock, &text)?;
    let mut out = String::new();
    for p in doc
        .get("package")
        .and_then(|p| p.as_array())
        .into_iter()
        .flatten()
    {
        if let (Some(n), Some(v)) = (
            p.get("name").and_then(|x| x.as_str()),
            p.get("version").and_then(|x| x.as_str()),
        ) {
            out.push_str(&format!("{n}=={v}\n"));
        }
    }
    if out.is_empty() {
        bail!("{}: no [[package]] entries", lock.display());
    }
    Ok(out)
}

/// `site-packages` of a venv laid out at `dest`.
pub fn site_dir(dest: &Path, target: &Target) -> PathBuf {
    dest.join(format!("lib/python{}/site-packages", target.minor))
}

/// `uv pip install` into `site` for the target's Python and platform,
/// without dependencies (a lock names them all), copied, no bytecode (the
/// image's interpreter compiles it): what every install into the venv
/// shares. The caller adds what to install.
pub(crate) fn pip_install_into(
    uv: &Uv,
    target: &Target,
    site: &Path,
) -> Result<std::process::Command> {
    let mut c = uv.command()?;
    c.args([
        "pip",
        "install",
        "--quiet",
        "--no-deps",
        "--link-mode",
        "copy",
        "--no-compile",
    ])
    .args(target.uv_python_args()?)
    .arg("--target")
    .arg(site);
    Ok(c)
}

/// Installs `lock` from wheels into `site`, on the host, for the target's
/// Python and platform (no interpreter of the image needed).
pub fn install_wheels(lock: &Lock, target: &Target, uv: &Uv, site: &Path) -> Result<()> {
    std::fs::create_dir_all(site)?;
    if lock.packages.is_empty() {
        return Ok(());
    }
    let work = tempfile::tempdir()?;
    let req = work.path().join("lock.txt");
    std::fs::write(&req, &lock.text)?;
    let mut c = pip_install_into(uv, target, site)?;
    c.args(["--require-hashes", "--only-binary", ":all:", "-r"])
        .arg(&req);
    uv.indexes().apply(&mut c, index::Purpose::Install)?;
    uv.run(c, "installing dependencies")?;
    Ok(())
}

/// Installs the project itself as `pip install -e` would, but pointing at
/// /app: a `.pth` with its import root, its dist-info (so
/// `importlib.metadata` knows it) and its console scripts. Its code stays
/// in the app layer.
pub fn install_app_package(
    dest: &Path,
    target: &Target,
    p: &crate::project::AppPackage,
) -> Result<()> {
    let site = site_dir(dest, target);
    let dist = normalize_name(&p.name).replace('-', "_");
    std::fs::write(
        site.join(format!("_{dist}_app.pth")),
        format!("{}\n", p.path),
    )?;
    let info = site.join(format!("{dist}-{}.dist-info", p.version));
    std::fs::create_dir_all(&info)?;
    std::fs::write(
        info.join("METADATA"),
        format!(
            "Metadata-Version: 2.1\nName: {}\nVersion: {}\n",
            p.name, p.version
        ),
    )?;
    std::fs::write(info.join("INSTALLER"), "slimpack\n")?;
    let mut entry_points = String::new();
    if !p.scripts.is_empty() {
        entry_points.push_str("[console_scripts]\n");
        for (name, target) in &p.scripts {
            entry_points.push_str(&format!("{name} = {target}\n"));
        }
        std::fs::write(info.join("entry_points.txt"), &entry_points)?;
    }
    std::fs::write(
        info.join("direct_url.json"),
        format!(
            "{{\"url\": \"file://{}\", \"dir_info\": {{\"editable\": true}}}}\n",
            p.path
        ),
    )?;
    let bin = dest.join("bin");
    let ident = |s: &str| {
        !s.is_empty()
            && s.split('.').all(|w| {
                w.chars()
                    .next()
                    .is_some_and(|c| c.is_alphabetic() || c == '_')
                    && w.chars().all(|c| c.is_alphanumeric() || c == '_')
            })
    };
    for (name, spec) in &p.scripts {
        let bad = || {
            anyhow!("[project.scripts] {name:?} = {spec:?}: expected a script name and \"module:function\"")
        };
        let (module, func) = spec.split_once(':').ok_or_else(bad)?;
        let (module, func) = (module.trim(), func.split('[').next().unwrap_or(func).trim());
        let name_ok = !name.is_empty()
            && !name.starts_with('.')
            && name
                .chars()
                .all(|c| c.is_alphanumeric() || "._-".contains(c));
        if !name_ok || !ident(module) || !ident(func) {
            return Err(bad());
        }
        let (head, attr) = func.split_once('.').unwrap_or((func, ""));
        let call = if attr.is_empty() {
            head.to_string()
        } else {
            format!("{head}.{attr}")
        };
        let script = format!(
            "#!/opt/venv/bin/python\nimport sys\nfrom {module} import {head}\nif __name__ == \"__main__\":\n    sys.exit({call}())\n"
        );
        let path = bin.join(name);
        std::fs::write(&path, script)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// Turns an installed `site-packages` into the venv at /opt/venv:
/// `pyvenv.cfg`, `bin/python` → the image's interpreter, console scripts
/// with `#!/opt/venv/bin/python`, no pip, no C sources.
pub fn finish_venv(dest: &Path, target: &Target) -> Result<()> {
    let site = site_dir(dest, target);
    let bin = dest.join("bin");
    std::fs::create_dir_all(&bin)?;
    let staged_bin = site.join("bin");
    if staged_bin.is_dir() {
        let mut names: Vec<_> = std::fs::read_dir(&staged_bin)?.flatten().collect();
        names.sort_by_key(|e| e.file_name());
        for e in names {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("pip") || name.starts_with("activate") || name.starts_with("python")
            {
                continue;
            }
            let bytes = std::fs::read(e.path())?;
            let out = rewrite_shebang(&bytes);
            let p = bin.join(&name);
            std::fs::write(&p, out)?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
        }
        std::fs::remove_dir_all(&staged_bin)?;
        fix_script_records(&site, &bin)?;
    }
    let _ = std::fs::remove_file(site.join(uv::TARGET_LOCK));
    // uv leaves no pip in a --target install unless asked; never ship one.
    for e in std::fs::read_dir(&site)?.flatten() {
        let n = e.file_name().to_string_lossy().to_lowercase();
        if n == "pip" || (n.starts_with("pip-") && n.ends_with(".dist-info")) {
            std::fs::remove_dir_all(e.path())?;
        }
    }
    prune_build_inputs(&site)?;
    let interp = &target.interpreter;
    let home = Path::new(interp)
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "/usr/bin".into());
    std::os::unix::fs::symlink(interp, bin.join("python"))?;
    std::os::unix::fs::symlink("python", bin.join("python3"))?;
    std::os::unix::fs::symlink("python", bin.join(format!("python{}", target.minor)))?;
    std::os::unix::fs::symlink("lib", dest.join("lib64"))?;
    std::fs::write(
        dest.join("pyvenv.cfg"),
        format!(
            "home = {home}\ninclude-system-site-packages = false\nversion = {}\nexecutable = {interp}\ncommand = {interp} -m venv {VENV}\n",
            target.version
        ),
    )?;
    Ok(())
}

/// Some wheels ship the C sources and headers they were compiled from;
/// nothing imports them at run time.
fn prune_build_inputs(site: &Path) -> Result<()> {
    for e in walkdir::WalkDir::new(site)
        .into_iter()
        .filter_map(|e| e.ok())
    {
        let p = e.path();
        if e.file_type().is_file()
            && matches!(
                p.extension().and_then(|x| x.to_str()),
                Some("c" | "h" | "cc" | "cpp" | "hpp" | "pyx" | "pxd" | "pxi")
            )
        {
            std::fs::remove_file(p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    Ok(())
}

/// Points a console script at the venv's interpreter (uv wrote the host's).
/// Makes the `RECORD` lines of console scripts say what the venv holds:
/// `../../../bin/NAME` with the hash and size of the script as rewritten
/// (uv recorded it under `bin/` with the shebang of whatever interpreter it
/// was told, which differs between an install here and one in the
/// builder); a script the venv does not keep loses its line.
fn fix_script_records(site: &Path, bin: &Path) -> Result<()> {
    use base64::Engine;
    use sha2::Digest;
    for e in std::fs::read_dir(site)?.flatten() {
        if !e.file_name().to_string_lossy().ends_with(".dist-info") {
            continue;
        }
        let record = e.path().join("RECORD");
        let Ok(text) = std::fs::read_to_string(&record) else {
            continue;
        };
        if !text.lines().any(|l| l.starts_with("bin/")) {
            continue;
        }
        let mut out = String::with_capacity(text.len());
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("bin/") else {
                out.push_str(line);
                out.push('\n');
                continue;
            };
            let name = rest.split(',').next().unwrap_or("");
            let script = bin.join(name);
            if name.contains('/') || !script.is_file() {
                continue;
            }
            let bytes = std::fs::read(&script)?;
            let hash = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(sha2::Sha256::digest(&bytes));
            out.push_str(&format!(
                "../../../bin/{name},sha256={hash},{}\n",
                bytes.len()
            ));
        }
        std::fs::write(&record, out)?;
    }
    Ok(())
}

fn rewrite_shebang(bytes: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(bytes);
    if !text.starts_with("#!") {
        return bytes.to_vec();
    }
    let mut lines = text.lines();
    let first = lines.next().unwrap_or("");
    let rest: Vec<&str> = if first == "#!/bin/sh" && text.contains("'''exec'") {
        // The long-path trampoline: `#!/bin/sh` / `'''exec' PY "$0" "$@"` / `' '''`.
        lines
            .skip_while(|l| !l.starts_with("' '''"))
            .skip(1)
            .collect()
    } else if first.contains("python") {
        lines.collect()
    } else {
        return bytes.to_vec();
    };
    let mut out = format!("#!{VENV}/bin/python\n");
    out.push_str(&rest.join("\n"));
    out.push('\n');
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packages_without_linux_wheels_are_found_by_name_before_resolving() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("requirements.txt"),
            "Django==5.1\npsycopg2-binary==2.9.9\nPsycopg2>=2.9 ; python_version>'3.8'\nmysqlclient==2.2\n",
        )
        .unwrap();
        let project = Project::detect(dir.path()).unwrap();
        assert_eq!(sdist_only_named(&project), vec!["mysqlclient", "psycopg2"]);
        std::fs::write(
            dir.path().join("requirements.txt"),
            "psycopg2-binary\npsycopg[binary]\n",
        )
        .unwrap();
        let project = Project::detect(dir.path()).unwrap();
        assert!(sdist_only_named(&project).is_empty());
    }

    #[test]
    fn a_lock_gives_a_requirement_with_its_hashes_loses_one_and_keeps_one() {
        let text = "psycopg2==2.9.9 \\\n    --hash=sha256:aa \\\n    --hash=sha256:bb\n    # via -r requirements.txt\nsix==1.16.0 \\\n    --hash=sha256:cc\n";
        let lock = Lock {
            text: text.into(),
            packages: parse_locked(text),
            how: String::new(),
            key: String::new(),
            source_builds: vec!["psycopg2".into()],
            local: Vec::new(),
            vcs: Vec::new(),
            origins: BTreeMap::new(),
        };
        assert_eq!(
            lock.requirement("PsycoPG2").unwrap(),
            "psycopg2==2.9.9 \\\n    --hash=sha256:aa \\\n    --hash=sha256:bb\n    # via -r requirements.txt\n"
        );
        let rest = lock.without(&["psycopg2".into()]);
        assert_eq!(rest.text, "six==1.16.0 \\\n    --hash=sha256:cc\n");
        assert_eq!(rest.packages.len(), 1);
        assert!(rest.source_builds.is_empty());
        assert!(lock.requirement("flask").is_none());
        let only = lock.only(&["Psycopg2".into()]);
        assert_eq!(only.text, lock.requirement("psycopg2").unwrap());
        assert_eq!(only.packages.len(), 1);
        assert_eq!(only.source_builds, vec!["psycopg2"]);
    }

    #[test]
    fn uv_is_told_a_free_threaded_python_by_its_interpreter() {
        let mut t = Target::debian("3.13", "3.13.5", "2.41");
        let args = |t: &Target| -> Vec<String> {
            t.uv_python_args()
                .unwrap()
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(
            args(&t),
            [
                "--python-version",
                "3.13",
                "--python-platform",
                "x86_64-manylinux_2_40"
            ]
        );
        assert_eq!(t.cache_tag(), "cpython-313");
        t.minor = "3.13t".into();
        t.freethreaded = true;
        // A version cannot say `t`; without a copy to ask, no guess.
        let e = t.uv_python_args().unwrap_err().to_string();
        assert!(e.contains("free-threaded"), "{e}");
        t.host_interpreter = Some("/cache/python/x.tree/python/bin/python3.13t".into());
        assert_eq!(
            args(&t),
            [
                "--python",
                "/cache/python/x.tree/python/bin/python3.13t",
                "--python-platform",
                "x86_64-manylinux_2_40"
            ]
        );
        // Its bytecode is CPython 3.13's; only its extensions differ.
        assert_eq!(t.cache_tag(), "cpython-313");
    }

    #[test]
    fn console_scripts_of_the_project_are_checked_before_they_are_written() {
        let d = tempfile::tempdir().unwrap();
        let target = Target::debian("3.13", "3.13.5", "2.41");
        std::fs::create_dir_all(site_dir(d.path(), &target)).unwrap();
        std::fs::create_dir_all(d.path().join("bin")).unwrap();
        let package = |name: &str, spec: &str| crate::project::AppPackage {
            name: "app".into(),
            version: "1".into(),
            scripts: [(name.to_string(), spec.to_string())].into(),
            path: "/app".into(),
        };
        for (name, spec) in [
            ("../../etc/cron", "app.cli:main"),
            ("tool", "app.cli:main; import os"),
            ("tool", "os; import x:main"),
            ("tool", "no-colon"),
        ] {
            let e = install_app_package(d.path(), &target, &package(name, spec)).unwrap_err();
            assert!(
                e.to_string().contains("[project.scripts]"),
                "{name} {spec}: {e}"
            );
        }
        assert!(!d.path().join("etc").exists());
        install_app_package(d.path(), &target, &package("tool", "app.cli:main")).unwrap();
        let script = std::fs::read_to_string(d.path().join("bin/tool")).unwrap();
        assert!(script.contains("from app.cli import main"), "{script}");
    }

    #[test]
    fn shebangs() {
        let s = rewrite_shebang(b"#!/root/.pyenv/versions/3.11.7/bin/python\nimport sys\n");
        assert_eq!(
            String::from_utf8(s).unwrap(),
            "#!/opt/venv/bin/python\nimport sys\n"
        );
        let t = rewrite_shebang(
            b"#!/bin/sh\n'''exec' '/very/long/python' \"$0\" \"$@\"\n' '''\nimport sys\n",
        );
        assert_eq!(
            String::from_utf8(t).unwrap(),
            "#!/opt/venv/bin/python\nimport sys\n"
        );
        assert_eq!(
            rewrite_shebang(b"#!/bin/bash\necho\n"),
            b"#!/bin/bash\necho\n"
        );
    }

    #[test]
    fn locked_packages_and_platforms() {
        let text = "blinker==1.9.0 \\\n    --hash=sha256:aa\nFlask==3.0.0 ; python_version >= '3.8' \\\n    --hash=sha256:bb\n    # via x\n";
        let p = parse_locked(text);
        assert_eq!(
            p,
            vec![
                LockedPackage {
                    name: "blinker".into(),
                    version: "1.9.0".into()
                },
                LockedPackage {
                    name: "flask".into(),
                    version: "3.0.0".into()
                },
            ]
        );
        assert_eq!(platform_for_glibc("2.36"), "x86_64-manylinux_2_36");
        assert_eq!(platform_for_glibc("2.41"), "x86_64-manylinux_2_40");
    }
}
