//! `slimpack build`: project → plan → runtime, venv and app layers → image
//! → outputs. Each layer is keyed by the hash of its inputs and reused from
//! the cache when they did not change.

pub mod plan;

use crate::base::{self, debian};
use crate::builder;
use crate::core::cache::{Cache, KeyHasher};
use crate::core::git::{git, public_url};
use crate::core::progress::Progress;
use crate::core::time::{epoch, rfc3339};
use crate::project::{entrypoint, ignore, normalize_name, Project};
use crate::python::{self, bytecode, native, uv::Uv, Target};
use crate::settings::{Command as CfgCommand, Config};
use anyhow::{bail, Context, Result};
use plan::*;
use serde::Serialize;
use slimpack_oci::{add_tree, Entry, Image, ImageSpec, Layer, LayerBuilder};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

const VENV_POLICY: &str = "venv-v4";
const APP_POLICY: &str = "app-v1";
const OPAQUE_APP: &str = "app/.wh..wh..opq";
const OPAQUE_VENV: &str = "opt/venv/.wh..wh..opq";

#[derive(Debug, Clone)]
pub enum Output {
    Oci { path: PathBuf, tag: String },
    DockerArchive { path: PathBuf },
}

impl Output {
    pub fn parse(s: &str) -> Result<Output> {
        if let Some(p) = s.strip_prefix("docker-archive:") {
            let p = p.split(':').next().unwrap_or(p);
            if p.is_empty() {
                bail!("--output docker-archive: needs a file name");
            }
            return Ok(Output::DockerArchive { path: p.into() });
        }
        let rest = s.strip_prefix("oci:").unwrap_or(s);
        let (path, tag) = slimpack_oci::parse_layout_ref(rest);
        if path.as_os_str().is_empty() {
            bail!("--output {s:?} names no path");
        }
        Ok(Output::Oci {
            path,
            tag: tag.unwrap_or_else(|| "latest".into()),
        })
    }

    pub fn describe(&self) -> String {
        match self {
            Output::Oci { path, tag } => format!("oci:{}:{tag}", path.display()),
            Output::DockerArchive { path } => format!("docker-archive:{}", path.display()),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    pub dir: PathBuf,
    /// Flags, laid over the project's configuration.
    pub overrides: Config,
    pub outputs: Vec<Output>,
    pub plan_only: bool,
    /// With `plan_only`: build the venv (or reuse it from the cache) so the
    /// plan names the system libraries its compiled code needs and the
    /// build packages finally used.
    pub plan_with_venv: bool,
    pub locked: bool,
    pub refresh: bool,
    pub cache_dir: Option<PathBuf>,
    pub progress: bool,
    /// Push the image here after writing the outputs.
    pub push: Option<String>,
    /// Registries spoken to over plain HTTP (loopback ones always are).
    pub insecure_registries: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LayerReport {
    pub name: String,
    pub digest: String,
    pub diff_id: String,
    pub size: u64,
    pub uncompressed_size: u64,
    /// Reused from the cache rather than built.
    pub cached: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    pub name: String,
    pub digest: String,
    pub outputs: Vec<String>,
    pub layers: Vec<LayerReport>,
    pub size: u64,
    pub uncompressed_size: u64,
    pub python: String,
    pub base: String,
    pub os_packages: usize,
    pub python_packages: usize,
    pub bytecode: Option<bytecode::Compiled>,
    /// What the builder stage did, when dependencies were compiled.
    pub builder: Option<builder::Built>,
    /// Debian packages added to the runtime for the venv's compiled code.
    pub runtime_additions: Vec<native::Addition>,
    /// Set when the dependencies were resolved by this build (not reused).
    pub resolved: Option<Vec<String>>,
    pub cmd: Vec<String>,
    /// The port the app listens on ($PORT).
    pub port: u16,
    /// A health endpoint seen in the source, for startup probes.
    pub health_path: Option<String>,
    /// What `--push` sent, when asked.
    pub push: Option<crate::registry::PushReport>,
    pub warnings: Vec<String>,
    pub seconds: f64,
}

/// Either a plan (with `--plan`) or a finished build.
pub enum Outcome {
    Plan(Box<Plan>),
    Built(Box<BuildReport>),
}

struct AppLayerInput {
    files: Vec<ignore::AppFile>,
    key: String,
    opaque: bool,
}

/// `opaque`: the base image has an /app of its own, which ours replaces
/// (an OCI opaque whiteout) instead of merging with.
fn app_input(files: Vec<ignore::AppFile>, mtime: u64, opaque: bool) -> Result<AppLayerInput> {
    let mut h = KeyHasher::new("app-layer");
    h.part("policy", APP_POLICY)
        .part("mtime", mtime.to_string());
    if opaque {
        h.part("opaque", "app");
    }
    for f in &files {
        h.part("path", &f.rel);
        match &f.symlink {
            Some(t) => {
                h.part("symlink", t);
            }
            None => {
                let bytes = std::fs::read(&f.path)
                    .with_context(|| format!("reading {}", f.path.display()))?;
                h.part("mode", if f.executable { "755" } else { "644" })
                    .part("content", bytes);
            }
        }
    }
    Ok(AppLayerInput {
        files,
        key: h.finish(),
        opaque,
    })
}

fn app_layer(
    cache: &Cache,
    input: &AppLayerInput,
    mtime: u64,
    warnings: &mut Vec<String>,
) -> Result<(Layer, bool)> {
    if let Some(l) = cache.get::<Layer>("app-layer", &input.key) {
        if cache.blobs.contains(&l.digest) {
            return Ok((l, true));
        }
    }
    let mut b = LayerBuilder::new();
    b.add("app", Entry::dir(0o755))?;
    if input.opaque {
        b.add(OPAQUE_APP, Entry::bytes(0o644, Vec::new()))?;
    }
    for f in &input.files {
        let dest = format!("app/{}", f.rel);
        match &f.symlink {
            Some(t) => {
                // Only links that stay inside /app make sense in the image.
                let depth = f.rel.matches('/').count();
                let ups = t.split('/').filter(|c| *c == "..").count();
                if t.starts_with('/') || ups > depth {
                    warnings.push(format!(
                        "left out symlink {} → {t}: it points outside the app",
                        f.rel
                    ));
                    continue;
                }
                b.add(&dest, Entry::symlink(t.clone()))?;
            }
            None => b.add(
                &dest,
                Entry::file(if f.executable { 0o755 } else { 0o644 }, f.path.clone()),
            )?,
        }
    }
    let layer = b.write(&cache.blobs, mtime)?;
    cache.put("app-layer", &input.key, &layer)?;
    Ok((layer, false))
}

/// The venv layer and what building it decided about the rest.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
struct VenvRecord {
    layer: Layer,
    runtime_additions: Vec<native::Addition>,
    builder: Option<builder::Built>,
    bytecode: Option<bytecode::Compiled>,
}

/// Where the image's runtime (Python and the system below it) comes from.
enum RuntimeBase {
    /// Signed Debian packages, resolved.
    Debian(debian::Resolved),
    /// A registry image, pulled and unpacked.
    Registry(Box<base::registry::RegistryBase>),
}

/// The runtime layer for the base packages plus `additions`.
fn runtime_with(
    req: &builder::Request,
    resolved: &debian::Resolved,
    additions: &[native::Addition],
) -> Result<(debian::Runtime, bool)> {
    let (cache, progress) = (req.cache, req.progress);
    if additions.is_empty() {
        return debian::build(req.spec, resolved.clone(), cache, req.mtime, progress);
    }
    let spec = req.spec.with_packages(&native::package_names(additions));
    let resolved = debian::resolve(&spec, cache, req.refresh, progress)?;
    debian::build(&spec, resolved, cache, req.mtime, progress)
}

/// Builds the venv layer: installs the lock (from wheels, or in the builder),
/// adds to the runtime the libraries its compiled code links, and compiles
/// bytecode with that runtime's interpreter. Returns the record to cache and
/// the runtime it goes with.
fn build_venv(
    req: &builder::Request,
    runtime_base: &RuntimeBase,
    mode: bytecode::Mode,
) -> Result<VenvRecord> {
    let (cache, progress, lock, target) = (req.cache, req.progress, req.lock, req.target);
    let work = tempfile::tempdir_in(cache.dir("work")?)?;
    let venv_dir = work.path().join("venv");
    let site = python::site_dir(&venv_dir, target);
    let compile_in_builder = |names: &[String]| -> Result<builder::Built> {
        if let RuntimeBase::Registry(b) = runtime_base {
            bail!(
                "{} must be compiled from source (no wheel for {}), and compiling on a registry base ({}) is not supported yet; use a Debian base (debian:trixie, debian:bookworm) or a version with wheels",
                names.join(", "),
                req.target.platform,
                b.reference
            );
        }
        builder::install(req, &site, names)
    };
    let built = if lock.source_builds.is_empty() {
        let sp = progress.spinner(format!(
            "Installing {} Python packages",
            lock.packages.len()
        ));
        let r = python::install_wheels(lock, target, req.uv, &site);
        sp.finish_and_clear();
        match r {
            Ok(()) => None,
            // A lock exported from uv.lock can name a package with no
            // wheel: the builder compiles it.
            Err(e) if python::lacks_wheels(&e) => {
                let names = python::wheels_required(&format!("{e:#}"));
                Some(compile_in_builder(&names)?)
            }
            Err(e) => return Err(e),
        }
    } else {
        Some(compile_in_builder(&lock.source_builds)?)
    };
    python::finish_venv(&venv_dir, target)?;

    let (root, additions) = match runtime_base {
        RuntimeBase::Debian(resolved) => native_additions(req, resolved, &site)?,
        RuntimeBase::Registry(b) => {
            let missing: Vec<String> = native::unbundled(&site)?
                .into_iter()
                .filter(|n| !native::in_root(&b.root, &n.soname))
                .map(|n| format!("{} (needed by {})", n.soname, n.needed_by))
                .collect();
            if !missing.is_empty() {
                bail!(
                    "the base image {} lacks {}; slimpack adds system libraries only to Debian bases: use debian:{} or a base image that has them",
                    b.reference,
                    missing.join(", "),
                    req.spec.suite.codename()
                );
            }
            (b.root.clone(), Vec::new())
        }
    };

    let pyc_dir = work.path().join("pyc");
    let compiled = if mode == bytecode::Mode::None {
        None
    } else {
        let sp = progress.spinner("Compiling bytecode with the image's interpreter".into());
        let c = bytecode::compile(&root, &venv_dir, &pyc_dir, target, mode)?;
        sp.finish_and_clear();
        Some(c)
    };
    let mut b = LayerBuilder::new();
    add_tree(&mut b, &venv_dir, "opt/venv")?;
    if root.join("opt/venv").exists() {
        // The base's own venv must not show through ours.
        b.add(OPAQUE_VENV, Entry::bytes(0o644, Vec::new()))?;
    }
    if pyc_dir.join("usr").is_dir() {
        add_tree(&mut b, &pyc_dir.join("usr"), "usr")?;
    }
    Ok(VenvRecord {
        layer: b.write(&cache.blobs, req.mtime)?,
        runtime_additions: additions,
        builder: built,
        bytecode: compiled,
    })
}

/// The Debian packages the venv's compiled code needs beyond the runtime,
/// and the root of the runtime with them.
fn native_additions(
    req: &builder::Request,
    resolved: &debian::Resolved,
    site: &Path,
) -> Result<(PathBuf, Vec<native::Addition>)> {
    let (cache, progress) = (req.cache, req.progress);
    let (base_runtime, _) = runtime_with(req, resolved, &[])?;
    let base_root = base_runtime.rootfs(cache)?;
    let needs: Vec<native::Needed> = native::unbundled(site)?
        .into_iter()
        .filter(|n| !native::in_root(&base_root, &n.soname))
        .collect();
    if needs.is_empty() {
        return Ok((base_root, Vec::new()));
    }
    let contents = debian::contents(req.spec, cache, progress)?;
    let additions = native::packages_for(&needs, &contents, req.spec.suite.codename())?;
    let (runtime, _) = runtime_with(req, resolved, &additions)?;
    let root = runtime.rootfs(cache)?;
    let still: Vec<String> = needs
        .iter()
        .filter(|n| !native::in_root(&root, &n.soname))
        .map(|n| format!("{} (needed by {})", n.soname, n.needed_by))
        .collect();
    if !still.is_empty() {
        bail!(
            "the runtime still lacks {} after adding {}; add the package that provides it under `packages`",
            still.join(", "),
            native::package_names(&additions).join(", ")
        );
    }
    Ok((root, additions))
}

pub fn build(opts: &BuildOptions) -> Result<Outcome> {
    let started = Instant::now();
    let progress = Progress::new(opts.progress);
    // A bad push reference fails before the build, not after it.
    let push_to = opts
        .push
        .as_deref()
        .map(crate::registry::Reference::parse)
        .transpose()?;
    let project = Project::detect(&opts.dir)?;
    let cfg = project.config.clone().overlay(opts.overrides.clone());
    let mut warnings = Vec::new();

    let cache = Cache::open_or_default(opts.cache_dir.as_deref())?;
    let registry_base = match base::registry_base(cfg.base.as_deref())? {
        Some(r) => {
            let insecure = crate::registry::is_insecure(&r, &opts.insecure_registries);
            Some(base::registry::prepare(&r, insecure, &cache, &progress)?)
        }
        None => None,
    };
    let (suite, why) = match &registry_base {
        Some(b) => {
            if let Some(p) = cfg.python.as_deref() {
                if base::minor_of(p).as_deref() != Some(b.target.minor.as_str()) {
                    bail!(
                        "Python {p} was asked for, but the base image {} has Python {}",
                        b.reference,
                        b.target.version
                    );
                }
            }
            (
                base::suite_for_python(&b.target.minor),
                format!(
                    "Python {} of the base image {}",
                    b.target.version, b.reference
                ),
            )
        }
        None => base::choose_suite(
            cfg.base.as_deref(),
            cfg.python.as_deref(),
            project.python_request.as_ref(),
        )?,
    };
    let locked = project.is_locked();
    if opts.locked && !locked {
        bail!(
            "--locked: {} does not fix every dependency; add a lock (uv lock, poetry lock, or `uv pip compile --generate-hashes requirements.in -o requirements.txt`)",
            project.describe_deps()
        );
    }
    if !locked {
        warnings.push(format!(
            "{} does not pin every dependency with hashes: its resolution is recorded in the plan (--plan) and cached here, but a build elsewhere or later may resolve differently. Commit a lock for builds reproducible over time.",
            project.describe_deps()
        ));
    }
    let mode = bytecode::Mode::parse(cfg.bytecode.as_deref().unwrap_or("imports"))?;
    let mtime = epoch()?;
    let spec = debian::BaseSpec {
        suite,
        mirror: cfg
            .mirror
            .clone()
            .unwrap_or_else(|| debian::DEFAULT_MIRROR.into())
            .trim_end_matches('/')
            .to_string(),
        security_mirror: cfg
            .security_mirror
            .clone()
            .unwrap_or_else(|| debian::DEFAULT_SECURITY_MIRROR.into())
            .trim_end_matches('/')
            .to_string(),
        extra_packages: cfg.packages.clone(),
        purpose: debian::Purpose::Runtime,
    };

    // The runtime first: the venv is built for its exact interpreter and glibc.
    let (runtime_base, target, base_name) = match registry_base {
        Some(b) => {
            let t = b.target.clone();
            let name = b.reference.to_string();
            (RuntimeBase::Registry(Box::new(b)), t, name)
        }
        None => {
            let resolved = debian::resolve(&spec, &cache, opts.refresh, &progress)?;
            let t = Target::debian(
                suite.python(),
                &resolved.python_version,
                &resolved.glibc_version,
            );
            (
                RuntimeBase::Debian(resolved),
                t,
                format!("debian:{}", suite.codename()),
            )
        }
    };
    if let Some((req, origin)) = &project.python_request {
        let exact = req.trim().starts_with(|c: char| c.is_ascii_digit());
        let ok = if exact {
            // Exact minors were matched to a Debian suite already; a
            // registry base has the Python it has.
            !matches!(runtime_base, RuntimeBase::Registry(_))
                || base::minor_of(req).as_deref() == Some(target.minor.as_str())
        } else {
            crate::project::pyproject::python_satisfies(req, &target.version)
        };
        if !ok {
            bail!(
                "{origin} asks for Python {req:?}, but the {base_name} base gives {}",
                target.version
            );
        }
    }
    let uv = Uv::locate(&cache)?;
    let groups: Vec<String> = cfg.with.clone();
    let sp = progress.spinner("Resolving Python dependencies".into());
    let no_binary: Vec<String> = cfg.no_binary.iter().map(|n| normalize_name(n)).collect();
    let (lock, lock_cached) = python::resolve(
        &project,
        &groups,
        &target,
        &uv,
        &no_binary,
        &cache,
        opts.refresh,
    )?;
    sp.finish_and_clear();

    for tool in ["setuptools", "wheel"] {
        if lock.packages.iter().any(|p| p.name == tool) {
            warnings.push(format!(
                "{tool} is in the runtime venv because a dependency requires it (see the lock in --plan); slimpack keeps it rather than break that package"
            ));
        }
    }
    let rules = ignore::IgnoreRules::for_project(&project.dir)?;
    let (app_files, secrets) = ignore::collect(&project.dir, &rules)?;
    for s in &secrets {
        warnings.push(format!("left out {s}: it looks like a secret (.env files and private keys never go into an image)"));
    }
    let rels: Vec<String> = app_files.iter().map(|f| f.rel.clone()).collect();
    let dep_names: BTreeSet<String> = lock
        .packages
        .iter()
        .map(|p| normalize_name(&p.name))
        .collect();
    let start = match &cfg.command {
        Some(c) => {
            let origin = project
                .config_origin
                .clone()
                .unwrap_or_else(|| "--command".into());
            let argv = match c {
                CfgCommand::Line(l) => entrypoint::split_command(l, &origin)?,
                CfgCommand::Argv(v) if v.is_empty() => bail!("{origin}: command is empty"),
                CfgCommand::Argv(v) => v.clone(),
            };
            entrypoint::StartCommand {
                argv: entrypoint::exec_form(argv),
                source: format!("configured in {origin}"),
                health_path: entrypoint::infer(&project.dir, &rels, &dep_names)
                    .ok()
                    .and_then(|i| i.health_path),
            }
        }
        None => entrypoint::infer(&project.dir, &rels, &dep_names)?,
    };

    let port = cfg.port.unwrap_or(8080);
    let mut env = vec![
        "PATH=/opt/venv/bin:/usr/local/bin:/usr/bin:/bin".to_string(),
        "VIRTUAL_ENV=/opt/venv".into(),
        "PYTHONUNBUFFERED=1".into(),
        "PYTHONDONTWRITEBYTECODE=1".into(),
        "LANG=C.UTF-8".into(),
        format!("PORT={port}"),
    ];
    for (k, v) in &cfg.env {
        env.retain(|e| !e.starts_with(&format!("{k}=")));
        env.push(format!("{k}={v}"));
    }
    let created = rfc3339(mtime);
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    if project.name_declared {
        labels.insert(
            "org.opencontainers.image.title".into(),
            project.name.clone(),
        );
    }
    labels.insert("org.opencontainers.image.created".into(), created.clone());
    labels.insert(
        "org.opencontainers.image.base.name".into(),
        base_name.clone(),
    );
    if let RuntimeBase::Registry(b) = &runtime_base {
        labels.insert(
            "org.opencontainers.image.base.digest".into(),
            b.pinned.digest.clone().unwrap_or_default(),
        );
        // The base's own environment stays, under ours.
        let ours: Vec<String> = env
            .iter()
            .filter_map(|e| e.split_once('=').map(|(k, _)| format!("{k}=")))
            .collect();
        let mut merged: Vec<String> = b
            .env
            .iter()
            .filter(|e| !ours.iter().any(|k| e.starts_with(k.as_str())))
            .cloned()
            .collect();
        merged.append(&mut env);
        env = merged;
    }
    if let Some(url) = git(&project.dir, &["config", "--get", "remote.origin.url"]) {
        labels.insert("org.opencontainers.image.source".into(), public_url(&url));
    }
    if let Some(rev) = git(&project.dir, &["rev-parse", "HEAD"]) {
        labels.insert("org.opencontainers.image.revision".into(), rev);
    }
    labels.extend(cfg.labels.clone());
    let user = cfg
        .user
        .clone()
        .unwrap_or_else(|| format!("{0}:{0}", debian::NONROOT_UID));
    if user == "0" || user == "root" || user.starts_with("0:") || user.starts_with("root:") {
        warnings.push("the image runs as root (configured `user`); Cloud Run and the seeds recommend a non-root user".into());
    }

    let base_has_app = match &runtime_base {
        RuntimeBase::Registry(b) => b.root.join("app").exists(),
        RuntimeBase::Debian(_) => false,
    };
    let app = app_input(app_files, mtime, base_has_app)?;
    let venv_key = {
        let mut h = KeyHasher::new("venv-layer");
        h.part("policy", VENV_POLICY)
            .part("lock", &lock.text)
            .part("python", &target.version)
            .part("platform", &target.platform)
            .part("bytecode", mode.as_str())
            .part("uv", &uv.version)
            .part("mtime", mtime.to_string());
        for p in &no_binary {
            h.part("no-binary", p);
        }
        for p in &cfg.build_packages {
            h.part("build-package", p);
        }
        // Stdlib bytecode is unchecked-hash: it must be rebuilt whenever the
        // runtime's sources could have changed.
        match &runtime_base {
            RuntimeBase::Debian(resolved) => h.part(
                "runtime",
                resolved
                    .packages
                    .iter()
                    .map(|p| format!("{}={}\n", p.name, p.sha256))
                    .collect::<String>(),
            ),
            RuntimeBase::Registry(b) => h
                .part("base-image", b.pinned.to_string())
                .part("interpreter", &b.target.interpreter),
        };
        h.finish()
    };
    let cached_venv = cache
        .get::<VenvRecord>("venv-layer", &venv_key)
        .filter(|r| cache.blobs.contains(&r.layer.digest));
    let plan = Plan {
        project: ProjectPlan {
            dir: project.dir.display().to_string(),
            name: project.name.clone(),
            dependencies_from: project.describe_deps(),
            locked,
            config: project.config_origin.clone(),
            app_files: app.files.len(),
            left_out_secrets: secrets.clone(),
        },
        python: PythonPlan {
            target: target.clone(),
            chosen_because: why,
            interpreter: target.interpreter.clone(),
            bytecode: mode.as_str().into(),
        },
        base: match &runtime_base {
            RuntimeBase::Debian(resolved) => BasePlan {
                name: base_name.clone(),
                release: resolved.release_version.clone(),
                mirror: spec.mirror.clone(),
                security_mirror: spec.security_mirror.clone(),
                roots: spec.roots(),
                packages: resolved
                    .packages
                    .iter()
                    .map(|p| OsPackage {
                        name: p.name.clone(),
                        version: p.version.clone(),
                        archive: p.origin.clone(),
                        sha256: p.sha256.clone(),
                    })
                    .collect(),
                skipped: resolved.skipped.clone(),
            },
            RuntimeBase::Registry(b) => BasePlan {
                name: b.pinned.to_string(),
                release: String::new(),
                mirror: String::new(),
                security_mirror: String::new(),
                roots: Vec::new(),
                packages: Vec::new(),
                skipped: Vec::new(),
            },
        },
        dependencies: DependencyPlan {
            how: lock.how.clone(),
            uv: uv.version.clone(),
            groups: groups.clone(),
            packages: lock.packages.clone(),
            lock: lock.text.clone(),
            source_builds: lock.source_builds.clone(),
            build_packages: if lock.source_builds.is_empty() {
                Vec::new()
            } else {
                builder::initial_build_packages(&lock, &cfg.build_packages)
            },
            runtime_libraries: cached_venv.as_ref().map(|r| r.runtime_additions.clone()),
        },
        start: start.clone(),
        image: ImagePlan {
            user: user.clone(),
            workdir: "/app".into(),
            env: env.clone(),
            port,
            cmd: start.argv.clone(),
            labels: labels.clone(),
            created: created.clone(),
        },
        layers: vec![
            LayerPlan {
                name: "runtime".into(),
                contents: match &runtime_base {
                    RuntimeBase::Debian(resolved) => format!(
                        "Python {} and {} Debian {} packages",
                        target.version,
                        resolved.packages.len(),
                        suite.codename()
                    ),
                    RuntimeBase::Registry(b) => format!(
                        "the {} layers of {} (Python {} at {})",
                        b.image.layers.len(),
                        b.pinned,
                        target.version,
                        target.interpreter
                    ),
                },
                key: String::new(),
            },
            LayerPlan {
                name: "venv".into(),
                contents: format!(
                    "/opt/venv with {} packages, bytecode: {}",
                    lock.packages.len(),
                    mode.as_str()
                ),
                key: venv_key.clone(),
            },
            LayerPlan {
                name: "app".into(),
                contents: format!("/app: {} files", app.files.len()),
                key: app.key.clone(),
            },
        ],
        warnings: warnings.clone(),
    };
    if opts.plan_only && !opts.plan_with_venv {
        return Ok(Outcome::Plan(Box::new(plan)));
    }
    let venv_req = builder::Request {
        spec: &spec,
        lock: &lock,
        target: &target,
        uv: &uv,
        no_binary: &no_binary,
        build_packages: &cfg.build_packages,
        cache: &cache,
        progress: &progress,
        refresh: opts.refresh,
        mtime,
    };

    // Layers. The venv comes first: the libraries its compiled code links
    // decide what the runtime holds beyond Python.
    let venv_cached = cached_venv.is_some();
    let record = match cached_venv {
        Some(r) => r,
        None => {
            let built = build_venv(&venv_req, &runtime_base, mode)?;
            cache.put("venv-layer", &venv_key, &built)?;
            built
        }
    };
    if opts.plan_only {
        let mut plan = plan;
        plan.dependencies.runtime_libraries = Some(record.runtime_additions.clone());
        if let Some(b) = &record.builder {
            plan.dependencies.build_packages = b.build_packages.clone();
        }
        return Ok(Outcome::Plan(Box::new(plan)));
    }
    // (name, layer, cached) of each runtime layer, and how to describe it.
    let (runtime_layers, base_desc, os_packages): (Vec<(String, Layer, bool)>, String, usize) =
        match &runtime_base {
            RuntimeBase::Debian(resolved) => {
                let (runtime, cached) =
                    runtime_with(&venv_req, resolved, &record.runtime_additions)?;
                (
                    vec![("runtime".into(), runtime.layer.clone(), cached)],
                    format!(
                        "Debian {} ({})",
                        runtime.resolved.release_version,
                        suite.codename()
                    ),
                    runtime.resolved.packages.len(),
                )
            }
            RuntimeBase::Registry(b) => (
                b.image
                    .layers
                    .iter()
                    .map(|l| ("base".to_string(), l.clone(), true))
                    .collect(),
                b.pinned.to_string(),
                0,
            ),
        };
    let venv_layer = record.layer.clone();
    let (app_layer, app_cached) = app_layer(&cache, &app, mtime, &mut warnings)?;

    let image_spec = ImageSpec {
        user: Some(user),
        workdir: Some("/app".into()),
        env,
        entrypoint: Vec::new(),
        cmd: start.argv.clone(),
        exposed_ports: vec![format!("{port}/tcp")],
        labels: labels.clone(),
        annotations: labels
            .iter()
            .filter(|(k, _)| k.starts_with("org.opencontainers.image."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        created: Some(created),
        history: runtime_layers
            .iter()
            .enumerate()
            .map(|(i, _)| match &runtime_base {
                RuntimeBase::Debian(_) => format!(
                    "slimpack: runtime, Debian {} Python {}",
                    suite.codename(),
                    target.version
                ),
                RuntimeBase::Registry(b) => format!("base image {} layer {}", b.pinned, i + 1),
            })
            .chain([
                format!("slimpack: /opt/venv ({})", project.describe_deps()),
                "slimpack: /app".into(),
            ])
            .collect(),
    };
    let layers: Vec<Layer> = runtime_layers
        .iter()
        .map(|(_, l, _)| l.clone())
        .chain([venv_layer.clone(), app_layer.clone()])
        .collect();
    let image = Image::assemble(&cache.blobs, &image_spec, layers)?;

    let mut outputs = opts.outputs.clone();
    if outputs.is_empty() {
        outputs.push(Output::Oci {
            path: PathBuf::from("target/slimpack").join(format!("{}.oci", project.name)),
            tag: "latest".into(),
        });
    }
    for o in &outputs {
        match o {
            Output::Oci { path, tag } => {
                slimpack_oci::write_layout(&cache.blobs, &image, path, tag)?
            }
            Output::DockerArchive { path } => slimpack_oci::write_docker_archive(
                &cache.blobs,
                &image,
                path,
                &format!("{}:latest", project.name),
            )?,
        }
    }
    let push = match &push_to {
        Some(r) => Some(crate::registry::push(
            &cache.blobs,
            &image.manifest_digest,
            r,
            &[],
            crate::registry::is_insecure(r, &opts.insecure_registries),
            &cache,
            &progress,
        )?),
        None => None,
    };
    let report_layer = |name: &str, l: &Layer, cached: bool| LayerReport {
        name: name.into(),
        digest: l.digest.clone(),
        diff_id: l.diff_id.clone(),
        size: l.size,
        uncompressed_size: l.uncompressed_size,
        cached,
    };
    Ok(Outcome::Built(Box::new(BuildReport {
        name: project.name.clone(),
        digest: image.manifest_digest.clone(),
        outputs: outputs.iter().map(Output::describe).collect(),
        layers: runtime_layers
            .iter()
            .map(|(name, l, cached)| report_layer(name, l, *cached))
            .chain([
                report_layer("venv", &venv_layer, venv_cached),
                report_layer("app", &app_layer, app_cached),
            ])
            .collect(),
        size: image.compressed_size(),
        uncompressed_size: image.uncompressed_size(),
        python: target.version.clone(),
        base: base_desc,
        os_packages,
        python_packages: lock.packages.len(),
        bytecode: record.bytecode.clone(),
        builder: record.builder.clone(),
        runtime_additions: record.runtime_additions.clone(),
        resolved: (!lock_cached).then(|| {
            lock.packages
                .iter()
                .map(|p| format!("{}=={}", p.name, p.version))
                .collect()
        }),
        cmd: start.argv.clone(),
        port,
        health_path: start.health_path.clone(),
        push,
        warnings,
        seconds: started.elapsed().as_secs_f64(),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_parse() {
        assert!(matches!(
            Output::parse("docker-archive:app.tar").unwrap(),
            Output::DockerArchive { .. }
        ));
        match Output::parse("oci:out/flask:v1").unwrap() {
            Output::Oci { path, tag } => {
                assert_eq!(path, PathBuf::from("out/flask"));
                assert_eq!(tag, "v1");
            }
            _ => panic!(),
        }
        match Output::parse("out/flask").unwrap() {
            Output::Oci { tag, .. } => assert_eq!(tag, "latest"),
            _ => panic!(),
        }
        assert!(Output::parse("docker-archive:").is_err());
    }
}
