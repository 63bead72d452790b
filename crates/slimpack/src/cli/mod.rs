//! The command line, thin: one file per command (its flags, its call into
//! the library, its rendering); the flag groups commands share are
//! declared here once and flattened. Handlers return the exit code;
//! [`main`] renders an error the one way errors are shown.

mod build;
mod deploy;
mod dockerfile;
mod inspect;
mod lint;
mod registry;
mod run;

use crate::build::Context;
use crate::settings::{Command as CfgCommand, Config};
use anyhow::{anyhow, Result};
use clap::{Parser, Subcommand};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "slimpack",
    version,
    about = "Small, reproducible OCI images of Python web apps, without a Docker daemon"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build an OCI image of the Python web app in DIR.
    Build(build::BuildArgs),
    /// Run an image locally the way Cloud Run would (`--check`: test the contract).
    Run(run::RunArgs),
    /// Push an image to a registry; only what the registry lacks is sent.
    Push(registry::PushArgs),
    /// Pull an image from a registry into the cache (and an OCI layout).
    Pull(registry::PullArgs),
    /// What is in an image and where its bytes go: layers, waste,
    /// categories, largest files; `--diff` another image; `--sbom`.
    Inspect(inspect::InspectArgs),
    /// Lint a Dockerfile: hadolint's core rules, Docker's build checks, and
    /// Python/Cloud Run rules, each with a fix.
    Lint(lint::LintArgs),
    /// Write a multi-stage Dockerfile, .dockerignore and cloudbuild.yaml for
    /// the project in DIR (for teams that keep Docker or Cloud Build).
    Dockerfile(dockerfile::DockerfileArgs),
    /// Build, push by digest to Artifact Registry, and create or update the
    /// Cloud Run service (or print the requests, or write the manifests).
    Deploy(Box<deploy::DeployArgs>),
}

/// Runs the command; its exit code. An error is printed as `error: ...`
/// with its causes (and hints) on one line each, control characters
/// escaped, and exits 1.
pub fn main(cli: Cli) -> i32 {
    let result = match cli.command {
        Cmd::Build(a) => build::run(a),
        Cmd::Run(a) => run::run(a),
        Cmd::Push(a) => registry::push(a),
        Cmd::Pull(a) => registry::pull(a),
        Cmd::Inspect(a) => inspect::run(a),
        Cmd::Lint(a) => lint::run(a),
        Cmd::Dockerfile(a) => dockerfile::run(a),
        Cmd::Deploy(a) => deploy::run(*a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // Names in errors come from images, registries and projects.
            eprintln!(
                "error: {}",
                crate::core::text::escape_controls(&format!("{e:#}"))
            );
            1
        }
    }
}

/// What push, pull and run share.
#[derive(clap::Args)]
struct RegistryFlags {
    /// Speak plain HTTP to this registry (loopback ones always are). Repeatable.
    #[arg(long = "insecure-registry")]
    insecure: Vec<String>,
    /// Machine-readable report on stdout.
    #[arg(long)]
    json: bool,
    /// Cache directory (default $SLIMPACK_CACHE or ~/.cache/slimpack).
    #[arg(long, env = "SLIMPACK_CACHE")]
    cache_dir: Option<PathBuf>,
}

impl RegistryFlags {
    /// The context of a build these commands make of a project directory.
    fn context(&self) -> Result<Context> {
        let mut ctx = Context::open(self.cache_dir.as_deref(), !self.json)?;
        ctx.insecure_registries = self.insecure.clone();
        Ok(ctx)
    }
}

/// The image's own environment and labels (`deploy` has its own --env
/// and --label, for the service).
#[derive(clap::Args)]
struct ImageFlags {
    /// KEY=VALUE environment for the image. Repeatable.
    #[arg(long = "env")]
    env: Vec<String>,
    /// KEY=VALUE label. Repeatable.
    #[arg(long = "label")]
    labels: Vec<String>,
}

/// What `build`, `dockerfile` and `deploy` share: how the project is read
/// and planned.
#[derive(clap::Args)]
struct ProjectFlags {
    /// Python version: 3.13 → Debian trixie, 3.11 → bookworm, 3.9 →
    /// bullseye; 3.10, 3.12 or an exact release such as 3.12.6 →
    /// python-build-standalone.
    #[arg(long)]
    python: Option<String>,
    /// Where CPython comes from: auto, debian, standalone.
    #[arg(long, value_enum, hide_possible_values = true)]
    python_source: Option<crate::settings::PythonSource>,
    /// A mirror of python-build-standalone's releases (same layout; also
    /// $SLIMPACK_PYTHON_INSTALL_MIRROR).
    #[arg(long)]
    python_mirror: Option<String>,
    /// Runtime base: debian:trixie or debian:bookworm.
    #[arg(long)]
    base: Option<String>,
    /// Start command (exec form; $PORT and other variables are expanded).
    #[arg(long)]
    command: Option<String>,
    /// Port the app listens on (sets PORT and EXPOSE).
    #[arg(long)]
    port: Option<u16>,
    /// Extra Debian package for the runtime. Repeatable.
    #[arg(long = "package")]
    packages: Vec<String>,
    /// Extra Debian package for the builder stage (e.g. libpq-dev). Repeatable.
    #[arg(long = "build-package")]
    build_packages: Vec<String>,
    /// Compile this Python package from source in the builder even if a
    /// wheel exists. Repeatable.
    #[arg(long = "no-binary")]
    no_binary: Vec<String>,
    /// User to run as (default 65532:65532).
    #[arg(long)]
    user: Option<String>,
    /// Also install this dependency group or extra (e.g. dev). Repeatable.
    #[arg(long = "with")]
    with: Vec<String>,
    /// KEY=VALUE for build steps only (collectstatic, build-steps): what
    /// the app's settings read at import. Never in the image. Repeatable.
    #[arg(long = "build-env")]
    build_env: Vec<String>,
    /// Do not run Django's collectstatic at build time.
    #[arg(long)]
    no_collectstatic: bool,
    /// Do not add the system packages slimpack knows this Python
    /// distribution needs (e.g. pdf2image → poppler-utils). Repeatable.
    #[arg(long = "no-system-package")]
    no_system_packages: Vec<String>,
    /// Keep what the venv would lose: debug (debug sections of compiled
    /// extensions), tests (packages' test suites), stubs (type stubs). Repeatable.
    #[arg(long = "no-strip", value_enum, hide_possible_values = true)]
    no_strip: Vec<crate::settings::StripRule>,
    /// Bytecode: imports (default), all, none.
    #[arg(long, value_enum, hide_possible_values = true)]
    bytecode: Option<crate::python::bytecode::Mode>,
    /// Debian mirror for the runtime packages.
    #[arg(long)]
    mirror: Option<String>,
    /// Accept the mirror's Releases after their Valid-Until date: for a
    /// snapshot archive such as snapshot.debian.org (signatures and hashes
    /// are still checked).
    #[arg(long)]
    no_check_valid_until: bool,
    /// Ask the Debian archive and PyPI again instead of reusing cached resolutions.
    #[arg(long)]
    refresh: bool,
    /// Cache directory (default $SLIMPACK_CACHE or ~/.cache/slimpack).
    #[arg(long, env = "SLIMPACK_CACHE")]
    cache_dir: Option<PathBuf>,
    /// A registry repository holding the build cache (`REGISTRY/REPO`):
    /// what is cached there is reused, mounted rather than downloaded when
    /// the image goes to the same registry; what this build made is pushed
    /// there.
    #[arg(long = "cache", env = "SLIMPACK_CACHE_REPO")]
    cache_repo: Option<String>,
}

impl ProjectFlags {
    /// The flags as a configuration laid over the project's own.
    fn overrides(&self, image: Option<&ImageFlags>) -> Result<Config> {
        let none = Vec::new();
        let (env, labels) = image.map_or((&none, &none), |i| (&i.env, &i.labels));
        Ok(Config {
            base: self.base.clone(),
            python: self.python.clone(),
            command: self.command.clone().map(CfgCommand::Line),
            port: self.port,
            packages: self.packages.clone(),
            build_packages: self.build_packages.clone(),
            no_binary: self.no_binary.clone(),
            env: pairs(env, "--env")?,
            labels: pairs(labels, "--label")?,
            user: self.user.clone(),
            with: self.with.clone(),
            no_system_packages: self.no_system_packages.clone(),
            no_strip: self.no_strip.clone(),
            bytecode: self.bytecode,
            mirror: self.mirror.clone(),
            security_mirror: None,
            check_valid_until: self.no_check_valid_until.then_some(false),
            python_source: self.python_source,
            python_mirror: self.python_mirror.clone(),
            cache: self.cache_repo.clone(),
            index_auth: Default::default(),
            collectstatic: self.no_collectstatic.then_some(false),
            build_steps: Vec::new(),
            build_env: pairs(&self.build_env, "--build-env")?,
            deploy: Default::default(),
        })
    }

    /// The build context these flags ask for.
    fn context(&self, progress: bool) -> Result<Context> {
        let mut ctx = Context::open(self.cache_dir.as_deref(), progress)?;
        ctx.refresh = self.refresh;
        Ok(ctx)
    }
}

fn pairs(items: &[String], flag: &str) -> Result<BTreeMap<String, String>> {
    items
        .iter()
        .map(|i| {
            i.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| anyhow!("{flag} {i:?}: expected KEY=VALUE"))
        })
        .collect()
}

fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
