//! `slimpack build` as named stages, as ko splits build from publish:
//!
//! ```text
//! Inputs::read ─► plan ─► Planned ─► build ─► Built ─► deliver (sinks)
//!   project,       runtime,           venv, runtime, app layers,
//!   settings       dependencies,      image assembled
//!                  app files, start,
//!                  image config
//! ```
//!
//! `--plan` stops after [`plan`]; `slimpack dockerfile` runs [`plan`] and
//! the [`venv`] stage; where the image goes is the caller's choice
//! ([`deliver`] writes it to [`Sink`]s). Each layer is keyed by the hash
//! of its inputs and reused from the cache when they did not change.

mod app;
mod named;
pub mod plan;
mod report;
mod runtime;
pub mod sbom;
pub mod steps;
mod venv;

pub use report::{BuildReport, LayerReport};
pub use venv::VenvRecord;

use crate::builder;
use crate::core::cache::Cache;
use crate::core::git::{git, public_url};
use crate::core::progress::Progress;
use crate::core::time::{epoch, rfc3339};
use crate::image::{Sink, SinkContext, Written};
use crate::project::{entrypoint, ignore, normalize_name, Project};
use crate::python::{self, bytecode, uv::Uv, Lock};
use crate::registry::cache_repo::RegistryCache;
use crate::settings::{Command as CfgCommand, Config};
use anyhow::{bail, Result};
use plan::*;
use slimpack_oci::{Image, Layer};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The image's working directory, where the app's files go.
pub const WORKDIR: &str = "/app";
/// The user the image runs as unless configured: distroless's `nonroot`.
const DEFAULT_USER: u64 = crate::base::debian::NONROOT_UID;

/// What every stage shares: the cache, progress, and how to reach
/// registries and archives.
pub struct Context {
    pub cache: Cache,
    pub progress: Progress,
    /// Ask the Debian archive and PyPI again instead of reusing cached
    /// resolutions.
    pub refresh: bool,
    /// Registries spoken to over plain HTTP (loopback ones always are).
    pub insecure_registries: Vec<String>,
    /// The image will be built after planning: the runtime starts building
    /// as soon as it is resolved (false for `build --plan`).
    pub will_build: bool,
    /// The build cache in a registry (`--cache`, `cache`), once the
    /// project's configuration has been read.
    build_cache: std::sync::OnceLock<std::sync::Arc<RegistryCache>>,
}

impl Context {
    pub fn open(cache_dir: Option<&Path>, progress: bool) -> Result<Context> {
        Ok(Context {
            cache: Cache::open_or_default(cache_dir)?,
            progress: Progress::new(progress),
            refresh: false,
            insecure_registries: Vec::new(),
            will_build: true,
            build_cache: std::sync::OnceLock::new(),
        })
    }

    /// Puts the registry repository `repo` behind the local cache.
    fn use_build_cache(&self, repo: &str) -> Result<()> {
        if self.build_cache.get().is_some() {
            return Ok(());
        }
        let shared = std::sync::Arc::new(RegistryCache::new(repo, &self.insecure_registries)?);
        self.cache.share(Box::new(shared.clone()));
        let _ = self.build_cache.set(shared);
        Ok(())
    }

    pub fn build_cache(&self) -> Option<&RegistryCache> {
        self.build_cache.get().map(|b| b.as_ref())
    }
}

/// What the user asked to build.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub dir: PathBuf,
    /// Flags, laid over the project's configuration.
    pub overrides: Config,
    /// Refuse to build unless the dependencies are locked.
    pub locked: bool,
}

/// The project as read, with its configuration and the flags laid over it.
/// Cheap and local: callers read it before anything touches the network.
pub struct Inputs {
    pub project: Project,
    pub cfg: Config,
    require_lock: bool,
}

impl Inputs {
    pub fn read(req: &Request) -> Result<Inputs> {
        let project = Project::detect(&req.dir)?;
        let cfg = project.config.clone().overlay(req.overrides.clone());
        Ok(Inputs {
            project,
            cfg,
            require_lock: req.locked,
        })
    }
}

/// Every decision made, nothing built yet but what deciding needed (the
/// runtime's resolution, the dependencies' lock).
pub struct Planned {
    pub project: Project,
    pub cfg: Config,
    runtime: runtime::Selected,
    uv: Uv,
    pub lock: Lock,
    /// Debian packages a dependency calls or loads (slimpack's table).
    system: Vec<python::system::SystemNeed>,
    /// The project's own packages the lock names by path, hashed.
    local: Vec<python::local::LocalPackage>,
    /// The lock was reused, not resolved by this build.
    lock_cached: bool,
    locked: bool,
    no_binary: Vec<String>,
    app: app::AppInput,
    /// Commands run at build time whose output joins the app layer.
    steps: Vec<steps::Step>,
    /// The app layer's key: the app's files', or with steps theirs too.
    app_key: String,
    secrets: Vec<String>,
    start: entrypoint::StartCommand,
    pub image: ImageConfig,
    venv_opts: venv::Options,
    mtime: u64,
    venv_key: String,
    pub warnings: Vec<String>,
    started: Instant,
}

/// The image, assembled in the cache's blob store, and its report.
pub struct Built {
    pub image: Image,
    pub report: BuildReport,
}

/// Decides everything: the runtime, the dependencies, the app's files, the
/// start command, the image's configuration and the layers' keys.
pub fn plan(ctx: &Context, inputs: Inputs) -> Result<Planned> {
    let started = Instant::now();
    let Inputs {
        project,
        cfg,
        require_lock,
    } = inputs;
    let mut warnings = project.indexes.notes.clone();
    let locked = check_lock(&project, require_lock, &mut warnings)?;
    let venv_opts = venv::Options::new(
        cfg.bytecode.unwrap_or(bytecode::Mode::Imports),
        &cfg.no_strip,
    );
    let mtime = epoch()?;
    if let Some(repo) = cfg.cache.as_deref().filter(|r| !r.is_empty()) {
        ctx.use_build_cache(repo)?;
    }
    let uv = Uv::locate(&ctx.cache)?.with_indexes(python::index::Access::new(
        project.indexes.clone(),
        &cfg.google_indexes(),
    ));
    // What a cold build will need is fetched from the start; with a build
    // cache, the resolution and what was compiled usually come from it, and
    // a fresh runner must not fetch uv or a builder for nothing.
    let fetch_early = ctx.will_build && ctx.build_cache().is_none();
    if fetch_early {
        uv.prefetch();
    }
    let mut runtime = runtime::select(ctx, &cfg, &project)?;
    if let (runtime::RuntimeBase::Debian(resolved), true) = (&runtime.base, ctx.will_build) {
        let compiled = if fetch_early {
            python::sdist_only_named(&project)
        } else {
            Vec::new()
        };
        // What is compiled from source links libraries the runtime lacks
        // (psycopg2: libpq5), so the image will ship the runtime with them:
        // this one's layer would be compressed for nothing. Its root is what
        // the venv's libraries are checked against. A wrong guess writes
        // the layer when the image needs it.
        let what = match compiled.is_empty() {
            true => crate::base::debian::Prepare::RootAndLayer,
            false => crate::base::debian::Prepare::Root,
        };
        crate::base::debian::prepare(&runtime.spec, resolved, &ctx.cache, mtime, what);
        if !compiled.is_empty() {
            let packages = builder::build_packages_for(&cfg.build_packages, &compiled);
            crate::base::debian::prepare_builder(&runtime.spec.builder(&packages), &ctx.cache);
        }
    }
    if matches!(runtime.base, runtime::RuntimeBase::Debian(_)) {
        warnings.extend(crate::base::suite_warning(runtime.spec.suite));
        if !runtime.spec.check_valid_until {
            warnings.push(format!(
                "check-valid-until = false: {}'s Releases are accepted after their Valid-Until date (still signature- and hash-checked), so a mirror replaying old, unpatched packages would go unnoticed; use it only for a snapshot archive",
                runtime.spec.mirror
            ));
        }
    }
    let no_binary: Vec<String> = cfg.no_binary.iter().map(|n| normalize_name(n)).collect();
    let sp = ctx.progress.spinner("Resolving Python dependencies".into());
    let (lock, lock_cached) = python::resolve(
        &project,
        &cfg.with,
        &runtime.target,
        &uv,
        &no_binary,
        &ctx.cache,
        ctx.refresh,
    )?;
    sp.finish_and_clear();
    let system = python::system::needs(&lock, runtime.spec.suite, &cfg.no_system_packages);
    runtime.add_tools(ctx, &system, &mut warnings)?;
    let local = python::local::digests(&project.dir, &lock.local)?;
    warn_build_tools(&lock, &mut warnings);
    let (files, secrets) = app_files(&project, &mut warnings)?;
    let start = start_command(&project, &cfg, &files, &lock)?;
    warnings.extend(start.warning.clone());
    let image = image_config(&project, &cfg, &runtime, &start, mtime, &mut warnings);
    let app = app::input(files, mtime, runtime.base.has_app())?;
    let steps = steps::plan(&project, &cfg, &app, &lock)?;
    warnings.extend(app.left_out.iter().cloned());
    let mut planned = Planned {
        project,
        cfg,
        runtime,
        uv,
        lock,
        system,
        local,
        lock_cached,
        locked,
        no_binary,
        app,
        steps,
        app_key: String::new(),
        secrets,
        start,
        image,
        venv_opts,
        mtime,
        venv_key: String::new(),
        warnings,
        started,
    };
    planned.venv_key = venv::key(
        &planned.request(ctx),
        &planned.runtime.base,
        &planned.venv_opts,
    );
    planned.app_key = if planned.steps.is_empty() {
        planned.app.key.clone()
    } else {
        steps::key(
            &planned.app.key,
            &planned.venv_key,
            &planned.steps,
            &planned.cfg.build_env,
        )
    };
    Ok(planned)
}

/// Whether the dependencies are locked; an error if they must be and are
/// not, a warning if they are not.
fn check_lock(project: &Project, required: bool, warnings: &mut Vec<String>) -> Result<bool> {
    let locked = project.is_locked();
    if required && !locked {
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
    Ok(locked)
}

fn warn_build_tools(lock: &Lock, warnings: &mut Vec<String>) {
    for tool in ["setuptools", "wheel"] {
        if lock.packages.iter().any(|p| p.name == tool) {
            warnings.push(format!(
                "{tool} is in the runtime venv because a dependency requires it (see the lock in --plan); slimpack keeps it rather than break that package"
            ));
        }
    }
}

/// The files that go into /app, and the secrets left out (with a warning).
fn app_files(
    project: &Project,
    warnings: &mut Vec<String>,
) -> Result<(Vec<ignore::AppFile>, Vec<String>)> {
    let rules = ignore::IgnoreRules::for_project(&project.dir)?;
    let (files, secrets) = ignore::collect(&project.dir, &rules)?;
    for s in &secrets {
        warnings.push(format!("left out {s}: it looks like a secret (credential files, .env files and private keys never go into an image)"));
    }
    Ok((files, secrets))
}

/// The configured command, else what the source shows.
fn start_command(
    project: &Project,
    cfg: &Config,
    files: &[ignore::AppFile],
    lock: &Lock,
) -> Result<entrypoint::StartCommand> {
    let rels: Vec<String> = files.iter().map(|f| f.rel.clone()).collect();
    let dep_names: BTreeSet<String> = lock
        .packages
        .iter()
        .map(|p| normalize_name(&p.name))
        .collect();
    let no_scripts = BTreeMap::new();
    let declared = entrypoint::Declared {
        name: &project.name,
        scripts: project.package.as_ref().map_or(&no_scripts, |p| &p.scripts),
    };
    let Some(c) = &cfg.command else {
        return entrypoint::infer(&project.dir, &rels, &dep_names, declared);
    };
    let origin = project
        .config_origin
        .clone()
        .unwrap_or_else(|| "--command".into());
    let argv = match c {
        CfgCommand::Line(l) => entrypoint::split_command(l, &origin)?,
        CfgCommand::Argv(v) if v.is_empty() => bail!("{origin}: command is empty"),
        CfgCommand::Argv(v) => v.clone(),
    };
    Ok(entrypoint::StartCommand {
        argv: entrypoint::exec_form(argv),
        source: format!("configured in {origin}"),
        health_path: entrypoint::infer(&project.dir, &rels, &dep_names, declared)
            .ok()
            .and_then(|i| i.health_path),
        warning: None,
    })
}

/// User, environment, labels and command of the image.
fn image_config(
    project: &Project,
    cfg: &Config,
    runtime: &runtime::Selected,
    start: &entrypoint::StartCommand,
    mtime: u64,
    warnings: &mut Vec<String>,
) -> ImageConfig {
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
    let user = cfg
        .user
        .clone()
        .unwrap_or_else(|| format!("{DEFAULT_USER}:{DEFAULT_USER}"));
    if user == "0" || user == "root" || user.starts_with("0:") || user.starts_with("root:") {
        warnings.push("the image runs as root (configured `user`); Cloud Run and the seeds recommend a non-root user".into());
    }
    ImageConfig {
        user,
        workdir: WORKDIR.into(),
        env: runtime.base.merge_env(env),
        port,
        cmd: start.argv.clone(),
        labels: labels(project, cfg, runtime, &created),
        created,
    }
}

fn labels(
    project: &Project,
    cfg: &Config,
    runtime: &runtime::Selected,
    created: &str,
) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    if project.name_declared {
        labels.insert(
            "org.opencontainers.image.title".into(),
            project.name.clone(),
        );
    }
    labels.insert("org.opencontainers.image.created".into(), created.into());
    labels.insert("org.opencontainers.image.base.name".into(), runtime.name());
    if let Some(digest) = runtime.base.digest_label() {
        labels.insert("org.opencontainers.image.base.digest".into(), digest);
    }
    if let Some(url) = git(&project.dir, &["config", "--get", "remote.origin.url"]) {
        labels.insert("org.opencontainers.image.source".into(), public_url(&url));
    }
    if let Some(rev) = git(&project.dir, &["rev-parse", "HEAD"]) {
        labels.insert("org.opencontainers.image.revision".into(), rev);
    }
    labels.extend(cfg.labels.clone());
    labels
}

impl Planned {
    /// What the app layer holds, for the plan.
    fn app_contents(&self) -> String {
        let mut s = format!("{WORKDIR}: {} files", self.app.files.len());
        for step in &self.steps {
            s.push_str(&format!(
                ", and what `{}` writes ({})",
                step.argv.join(" "),
                step.why
            ));
        }
        s
    }

    /// The environment of build steps: the image's, the build's own over
    /// it, and a home, a hash seed and the image's time.
    fn step_env(&self) -> Vec<(String, String)> {
        let mut env: BTreeMap<String, String> = self
            .image
            .env
            .iter()
            .filter_map(|e| e.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.insert("HOME".into(), "/tmp".into());
        env.insert("PYTHONHASHSEED".into(), "0".into());
        env.insert("PYTHONDONTWRITEBYTECODE".into(), "1".into());
        env.insert("SOURCE_DATE_EPOCH".into(), self.mtime.to_string());
        env.extend(self.cfg.build_env.clone());
        env.into_iter().collect()
    }

    /// What the venv and builder stages work from.
    fn request<'a>(&'a self, ctx: &'a Context) -> builder::Request<'a> {
        builder::Request {
            spec: &self.runtime.spec,
            lock: &self.lock,
            target: &self.runtime.target,
            uv: &self.uv,
            no_binary: &self.no_binary,
            build_packages: &self.cfg.build_packages,
            app_package: self.project.package.as_ref(),
            local: &self.local,
            project_dir: &self.project.dir,
            cache: &ctx.cache,
            progress: &ctx.progress,
            refresh: ctx.refresh,
            mtime: self.mtime,
        }
    }

    /// The plan as `--plan` prints it: the system libraries are named when
    /// the venv was built before (they are known only then).
    pub fn plan(&self, ctx: &Context) -> Plan {
        let mut plan = self.plan_without_venv();
        let record = venv::cached(&self.request(ctx), &self.venv_key);
        if let Some(r) = &record {
            self.add_named_layer(ctx, &mut plan, r);
        }
        plan.dependencies.runtime_libraries = record.map(|r| r.runtime_additions);
        plan
    }

    /// The venv's packages the app names, whose bytecode the bytecode stage
    /// adds ([`named`]); none unless bytecode is by imports.
    fn named_packages(&self, venv: &VenvRecord) -> Vec<String> {
        if self.venv_opts.bytecode != bytecode::Mode::Imports {
            return Vec::new();
        }
        named::names(&self.app.words, &venv.modules)
    }

    /// The bytecode layer, before the app's, when the app names packages of
    /// the venv (known once the venv was built), unless a build already
    /// found nothing to add.
    fn add_named_layer(&self, ctx: &Context, plan: &mut Plan, venv: &VenvRecord) {
        let names = self.named_packages(venv);
        if names.is_empty() {
            return;
        }
        let key = named::key(&self.venv_key, &names);
        if named::cached(&ctx.cache, &key).is_some_and(|r| r.layer.is_none()) {
            return;
        }
        let at = plan.layers.len().saturating_sub(1);
        plan.layers.insert(
            at,
            LayerPlan {
                name: "bytecode".into(),
                contents: format!(
                    "bytecode of {} and what they load (named by the app), where the venv has none",
                    names.join(", ")
                ),
                key,
            },
        );
    }

    /// The plan completed with what building the venv decided.
    pub fn plan_with_venv(&self, venv: &VenvRecord) -> Plan {
        let mut plan = self.plan_without_venv();
        plan.dependencies.runtime_libraries = Some(venv.runtime_additions.clone());
        if let Some(b) = &venv.builder {
            plan.dependencies.build_packages = b.build_packages.clone();
        }
        plan
    }

    fn plan_without_venv(&self) -> Plan {
        let (project, lock, target) = (&self.project, &self.lock, &self.runtime.target);
        let suite = self.runtime.spec.suite;
        Plan {
            project: ProjectPlan {
                dir: project.dir.display().to_string(),
                name: project.name.clone(),
                dependencies_from: project.describe_deps(),
                locked: self.locked,
                config: project.config_origin.clone(),
                app_files: self.app.files.len(),
                left_out_secrets: self.secrets.clone(),
            },
            python: PythonPlan {
                target: target.clone(),
                chosen_because: self.runtime.why.clone(),
                interpreter: target.interpreter.clone(),
                bytecode: self.venv_opts.bytecode.as_str().into(),
                strip: self
                    .venv_opts
                    .strip
                    .iter()
                    .map(|r| format!("{}: {}", r.as_str(), r.describe()))
                    .collect(),
            },
            base: self
                .runtime
                .base
                .plan(&self.runtime.name(), &self.runtime.spec),
            dependencies: DependencyPlan {
                how: lock.how.clone(),
                uv: self.uv.version.clone(),
                groups: self.cfg.with.clone(),
                packages: lock.packages.clone(),
                lock: lock.text.clone(),
                source_builds: lock.source_builds.clone(),
                build_packages: if lock.source_builds.is_empty() {
                    Vec::new()
                } else {
                    builder::initial_build_packages(lock, &self.cfg.build_packages)
                },
                runtime_libraries: None,
                system_packages: self.system.clone(),
                local_packages: lock.local.clone(),
                git: lock.vcs.clone(),
                indexes: IndexPlan::all(self.uv.indexes(), &lock.origins),
            },
            start: self.start.clone(),
            image: self.image.clone(),
            layers: vec![
                LayerPlan {
                    name: "runtime".into(),
                    contents: self.runtime.base.contents(target, suite),
                    key: String::new(),
                },
                LayerPlan {
                    name: "venv".into(),
                    contents: format!(
                        "/opt/venv with {} packages, bytecode: {}",
                        lock.packages.len(),
                        self.venv_opts.bytecode.as_str()
                    ),
                    key: self.venv_key.clone(),
                },
                LayerPlan {
                    name: "app".into(),
                    contents: self.app_contents(),
                    key: self.app_key.clone(),
                },
            ],
            build_steps: self.steps.clone(),
            sandbox: match crate::sandbox::mode() {
                Ok(m) => m.as_str().to_string(),
                Err(e) => format!("unavailable: {e}"),
            },
            warnings: self.warnings.clone(),
        }
    }
}

/// The venv stage: its record from the cache, or built and cached. The
/// flag says it came from the cache.
pub fn venv(ctx: &Context, planned: &Planned) -> Result<(VenvRecord, bool)> {
    let req = planned.request(ctx);
    if let Some(r) = venv::cached(&req, &planned.venv_key) {
        return Ok((r, true));
    }
    let built = venv::build(&req, &planned.runtime.base, &planned.venv_opts)?;
    ctx.cache.put(
        crate::core::cache::RecordKind::VenvLayer,
        &planned.venv_key,
        &built,
    )?;
    Ok((built, false))
}

/// Builds the layers (venv first: the libraries its compiled code links
/// decide what the runtime holds beyond Python) and assembles the image.
pub fn build(ctx: &Context, planned: &Planned) -> Result<Built> {
    let (record, venv_cached) = venv(ctx, planned)?;
    let runtime = planned
        .runtime
        .base
        .layers(&planned.request(ctx), &record.runtime_additions)?;
    let named = named_bytecode(ctx, planned, &record)?;
    let (app_layer, app_cached) = app_layer(ctx, planned, &record, &runtime.layers)?;
    let mut layers: Vec<(String, Layer, bool)> = runtime.layers.clone();
    let mut history = history(planned, runtime.layers.len());
    layers.push(("venv".to_string(), record.layer.clone(), venv_cached));
    history.push(format!(
        "slimpack: /opt/venv ({})",
        planned.project.describe_deps()
    ));
    if let Some((n, cached)) = &named {
        if let Some(l) = &n.layer {
            layers.push(("bytecode".to_string(), l.clone(), *cached));
            history.push(format!(
                "slimpack: bytecode of {} (named by the app)",
                n.packages.join(", ")
            ));
        }
    }
    layers.push(("app".to_string(), app_layer, app_cached));
    history.push(format!("slimpack: {WORKDIR}"));
    let image = Image::assemble(
        &ctx.cache.blobs,
        &planned.image.spec(history),
        layers.iter().map(|(_, l, _)| l.clone()).collect(),
    )?;
    let mut report = report::new(
        planned,
        &image,
        &layers,
        &runtime,
        &record,
        named.map(|(n, _)| n),
    );
    if let Some(bc) = ctx.build_cache() {
        for l in report.layers.iter_mut() {
            l.from_build_cache = bc.found(&l.digest);
        }
    }
    Ok(Built { image, report })
}

/// The app layer: its files, and what the build steps write (run with the
/// runtime's root and the venv, only when not cached).
fn app_layer(
    ctx: &Context,
    planned: &Planned,
    record: &VenvRecord,
    runtime: &[(String, Layer, bool)],
) -> Result<(Layer, bool)> {
    let (key, mtime) = (&planned.app_key, planned.mtime);
    if planned.steps.is_empty() {
        return app::layer(&ctx.cache, &planned.app, key, mtime, None);
    }
    if let Some(l) = app::cached(&ctx.cache, key) {
        return Ok((l, true));
    }
    let req = planned.request(ctx);
    let mut root = planned.runtime.base.root(&req, &record.runtime_additions)?;
    if !crate::sandbox::dir_in_root(&root, "app") {
        // A registry base without /app: the steps' /app needs a mount point.
        let layers: Vec<Layer> = runtime.iter().map(|(_, l, _)| l.clone()).collect();
        root = steps::root_with_app(&ctx.cache, &layers, planned.mtime)?;
    }
    let env = planned.step_env();
    let outputs = steps::run(
        &req,
        &root,
        &record.layer,
        &planned.app.files,
        &planned.steps,
        &env,
    )?;
    app::layer(&ctx.cache, &planned.app, key, mtime, Some(&outputs))
}

/// The bytecode stage ([`named`]), when the app names a package of the
/// venv and bytecode is by imports.
fn named_bytecode(
    ctx: &Context,
    planned: &Planned,
    record: &VenvRecord,
) -> Result<Option<(named::NamedRecord, bool)>> {
    let names = planned.named_packages(record);
    if names.is_empty() {
        return Ok(None);
    }
    let req = planned.request(ctx);
    let root = || planned.runtime.base.root(&req, &record.runtime_additions);
    let positions = !planned
        .venv_opts
        .strips(crate::python::strip::Rule::Positions);
    named::layer(&req, root, record, &planned.venv_key, names, positions).map(Some)
}

fn history(planned: &Planned, runtime_layers: usize) -> Vec<String> {
    let (base, target) = (&planned.runtime.base, &planned.runtime.target);
    (0..runtime_layers)
        .map(|i| base.history(i, target, planned.runtime.spec.suite))
        .collect()
}

/// Writes the built image to each sink (`sinks` without a file sink: the
/// default `target/slimpack/NAME.oci` too, unless the image goes to a
/// registry and the build cache is one: a file would need every layer the
/// cache only named), publishes what the build made to the build cache,
/// and finishes the report. `to_registry`: the caller pushes the image
/// itself (deploy).
pub fn deliver(
    ctx: &Context,
    planned: &Planned,
    built: Built,
    sinks: &[Sink],
    to_registry: bool,
    sbom_file: Option<&PathBuf>,
) -> Result<BuildReport> {
    let Built { image, mut report } = built;
    // Made before anything is written: a layer it cannot read fails the
    // build, not a push half done.
    let document = (sbom_file.is_some()
        || to_registry
        || sinks.iter().any(|s| matches!(s, Sink::Registry(_))))
    .then(|| sbom::document(ctx, planned, &image))
    .transpose()?;
    let mut sinks = sinks.to_vec();
    let registry_bound = to_registry || sinks.iter().any(|s| matches!(s, Sink::Registry(_)));
    let no_file = !sinks.iter().any(|s| !matches!(s, Sink::Registry(_)));
    if no_file && !(registry_bound && ctx.build_cache().is_some()) {
        sinks.insert(0, Sink::default_for(&planned.project.name));
    }
    let sink_ctx = SinkContext {
        cache: &ctx.cache,
        progress: &ctx.progress,
        insecure: &ctx.insecure_registries,
        name: &planned.project.name,
    };
    for s in &sinks {
        match s.write(&image, &sink_ctx)? {
            Written::File(f) => report.outputs.push(f),
            Written::Pushed(p) => report.push = Some(p),
        }
    }
    if let Some(d) = document {
        report.sbom = Some(sbom::deliver(ctx, &image, d, sbom_file, &sinks)?);
    }
    if let Some(bc) = ctx.build_cache() {
        report.build_cache = Some(publish(ctx, bc));
    }
    report.seconds = planned.started.elapsed().as_secs_f64();
    Ok(report)
}

/// Pushes what this build made to the build cache. The image is delivered
/// already: a failure here is reported, not fatal.
fn publish(ctx: &Context, bc: &RegistryCache) -> report::BuildCacheReport {
    let published = bc.publish(&ctx.cache, &ctx.progress);
    let mut warnings = bc.warnings();
    let published = match published {
        Ok(p) => p,
        Err(e) => {
            let w = format!("the build cache {} was not updated: {e:#}", bc.repository());
            eprintln!("warning: {}", crate::core::text::escape_controls(&w));
            warnings.push(w);
            Default::default()
        }
    };
    report::BuildCacheReport {
        repository: bc.repository(),
        downloaded_bytes: bc.downloaded(),
        published,
        warnings,
    }
}
