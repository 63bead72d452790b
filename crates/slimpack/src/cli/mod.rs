//! The command line: parses flags, calls the library, prints the result.

use crate::build::{self, BuildOptions, Outcome, Output};
use crate::core::progress::human;
use crate::settings::{Command as CfgCommand, Config};
use anyhow::{anyhow, Result};
use clap::{Parser, Subcommand};
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
    Build(BuildArgs),
    /// Run an image locally the way Cloud Run would (`--check`: test the contract).
    Run(RunArgs),
    /// Push an image to a registry; only what the registry lacks is sent.
    Push(PushArgs),
    /// Pull an image from a registry into the cache (and an OCI layout).
    Pull(PullArgs),
    /// Lint a Dockerfile: hadolint's core rules, Docker's build checks, and
    /// Python/Cloud Run rules, each with a fix.
    Lint(LintArgs),
    /// Write a multi-stage Dockerfile, .dockerignore and cloudbuild.yaml for
    /// the project in DIR (for teams that keep Docker or Cloud Build).
    Dockerfile(DockerfileArgs),
    /// Build, push by digest to Artifact Registry, and create or update the
    /// Cloud Run service (or print the requests, or write the manifests).
    Deploy(Box<DeployArgs>),
}

#[derive(clap::Args)]
struct LintArgs {
    /// The Dockerfile (its directory's .dockerignore is read too).
    #[arg(default_value = "Dockerfile")]
    file: PathBuf,
    /// human, json, or sarif (SARIF 2.1.0, for code scanning).
    #[arg(long, default_value = "human")]
    format: String,
    /// Exit non-zero when a finding at or above this level exists:
    /// error, warning, info, or none.
    #[arg(long, default_value = "warning")]
    fail_level: String,
}

#[derive(clap::Args)]
struct PushArgs {
    /// `oci:DIR[:TAG]`, an OCI layout directory, or a project directory
    /// (built first).
    image: String,
    /// Where to: `REGISTRY/REPO[:TAG]`, e.g.
    /// us-central1-docker.pkg.dev/my-project/backend/my-app:v1.
    reference: String,
    /// Also tag the pushed image with this tag. Repeatable.
    #[arg(long = "tag")]
    tags: Vec<String>,
    #[command(flatten)]
    common: RegistryFlags,
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

#[derive(clap::Args)]
struct PullArgs {
    /// `REGISTRY/REPO[:TAG][@DIGEST]`.
    reference: String,
    /// Also write the image as an OCI layout: `oci:DIR[:TAG]`.
    #[arg(long, short)]
    output: Option<String>,
    #[command(flatten)]
    common: RegistryFlags,
}

#[derive(clap::Args)]
struct RunArgs {
    /// `oci:DIR[:TAG]`, an OCI layout directory, `docker-archive:FILE`, a
    /// registry reference (`docker://REF` or `HOST/REPO:TAG`), or a project
    /// directory (built first).
    image: String,
    /// Keep setuid/setgid bits when unpacking (cleared by default; they
    /// never grant privileges in the sandbox either way).
    #[arg(long)]
    keep_setuid: bool,
    /// Start, probe, send a request, send SIGTERM; report and exit (non-zero
    /// if any check fails).
    #[arg(long)]
    check: bool,
    /// HTTP startup probe path (default: a TCP probe, as on Cloud Run).
    #[arg(long)]
    probe: Option<String>,
    /// Host port: the container's $PORT is published on 127.0.0.1:PORT
    /// (on the host network, $PORT itself). Default 8080; a command after
    /// `--` publishes nothing unless --port is given.
    #[arg(long)]
    port: Option<u16>,
    /// $PORT inside the container (isolated network), as Cloud Run's
    /// containerPort.
    #[arg(long, default_value_t = 8080)]
    container_port: u16,
    /// auto (isolated when root and slirp4netns allow, else host),
    /// isolated, or host.
    #[arg(long, default_value = "auto")]
    network: String,
    /// Path of the request made by --check (default: the probe path, else /).
    #[arg(long)]
    request: Option<String>,
    /// Seconds between SIGTERM and SIGKILL.
    #[arg(long, default_value_t = 10.0)]
    grace: f64,
    /// Startup probe: seconds before the first probe.
    #[arg(long)]
    probe_initial_delay: Option<f64>,
    /// Startup probe: seconds between probes.
    #[arg(long)]
    probe_period: Option<f64>,
    /// Startup probe: seconds a probe may take.
    #[arg(long)]
    probe_timeout: Option<f64>,
    /// Startup probe: failed probes before giving up.
    #[arg(long)]
    probe_failure_threshold: Option<u32>,
    /// Give up on startup after this many seconds (overrides the probe's period × threshold).
    #[arg(long)]
    startup_timeout: Option<f64>,
    /// K_SERVICE (and K_CONFIGURATION) for the app.
    #[arg(long, default_value = "local")]
    service: String,
    /// KEY=VALUE environment for the app. Repeatable.
    #[arg(long = "env")]
    env: Vec<String>,
    #[command(flatten)]
    common: RegistryFlags,
    /// Run this command in the image instead of its own (after `--`), and
    /// exit with its exit code.
    #[arg(last = true)]
    command: Vec<String>,
}

#[derive(clap::Args)]
struct BuildArgs {
    /// The project directory.
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// Where to write the image: `oci:DIR[:TAG]` (default
    /// target/slimpack/NAME.oci) or `docker-archive:FILE`. Repeatable.
    #[arg(long, short)]
    output: Vec<String>,
    /// Print the build plan as JSON and build nothing.
    #[arg(long)]
    plan: bool,
    /// Machine-readable report on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    project: ProjectFlags,
    #[command(flatten)]
    image: ImageFlags,
    /// Refuse to build unless the dependencies are locked.
    #[arg(long)]
    locked: bool,
    /// Push the image to this registry reference after building
    /// (`REGISTRY/REPO[:TAG]`); the outputs are written too.
    #[arg(long)]
    push: Option<String>,
    /// Speak plain HTTP to this registry (loopback ones always are). Repeatable.
    #[arg(long = "insecure-registry")]
    insecure: Vec<String>,
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
    /// Python version (3.13 → Debian trixie, 3.11 → Debian bookworm).
    #[arg(long)]
    python: Option<String>,
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
    /// Bytecode: imports (default), all, none.
    #[arg(long)]
    bytecode: Option<String>,
    /// Debian mirror for the runtime packages.
    #[arg(long)]
    mirror: Option<String>,
    /// Ask the Debian archive and PyPI again instead of reusing cached resolutions.
    #[arg(long)]
    refresh: bool,
    /// Cache directory (default $SLIMPACK_CACHE or ~/.cache/slimpack).
    #[arg(long, env = "SLIMPACK_CACHE")]
    cache_dir: Option<PathBuf>,
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
            bytecode: self.bytecode.clone(),
            mirror: self.mirror.clone(),
            security_mirror: None,
            deploy: Default::default(),
        })
    }
}

#[derive(clap::Args)]
struct DockerfileArgs {
    /// The project directory; the files are written into it.
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// Runtime stage: slim (the builder's python image) or distroless.
    #[arg(long, default_value = "slim")]
    runtime: String,
    /// The Python image for the stages (default python:X.Y-slim-RELEASE from
    /// the plan); a digest-pinned reference is best.
    #[arg(long)]
    python_image: Option<String>,
    /// The uv image the builder copies uv from (default
    /// ghcr.io/astral-sh/uv:VERSION, the uv slimpack uses).
    #[arg(long)]
    uv_image: Option<String>,
    /// Overwrite existing files without asking.
    #[arg(long)]
    force: bool,
    /// Print the Dockerfile on stdout and write nothing.
    #[arg(long)]
    stdout: bool,
    #[command(flatten)]
    project: ProjectFlags,
    #[command(flatten)]
    image: ImageFlags,
}

#[derive(clap::Args)]
struct DeployArgs {
    /// The project directory.
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// Google Cloud project ID (default: CLOUDSDK_CORE_PROJECT, then gcloud's).
    #[arg(long)]
    project: Option<String>,
    /// Cloud Run region, e.g. us-central1 (default: CLOUDSDK_RUN_REGION, then gcloud's run/region).
    #[arg(long)]
    region: Option<String>,
    /// Service name (default: the project's name).
    #[arg(long)]
    service: Option<String>,
    /// Artifact Registry repository (default cloud-run-source-deploy, as gcloud).
    #[arg(long)]
    repo: Option<String>,
    /// Registry host to push to (default REGION-docker.pkg.dev).
    #[arg(long)]
    registry: Option<String>,
    /// Create the Artifact Registry repository (format DOCKER) if it is missing.
    #[arg(long)]
    create_repo: bool,
    /// Let anyone call the service (`=false` to turn a configured `true` off).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    allow_unauthenticated: Option<bool>,
    /// How --allow-unauthenticated opens the service: invoker-iam-disabled
    /// (default, Google's recommendation) or iam-binding (roles/run.invoker
    /// for allUsers merged into the service's IAM policy).
    #[arg(long)]
    public_access: Option<String>,
    /// Memory per instance, e.g. 512Mi or 2Gi.
    #[arg(long)]
    memory: Option<String>,
    /// CPUs per instance, e.g. 1, 2 or 500m.
    #[arg(long)]
    cpu: Option<String>,
    /// Instances kept warm (0: scale to zero).
    #[arg(long)]
    min_instances: Option<u32>,
    /// Most instances at once.
    #[arg(long)]
    max_instances: Option<u32>,
    /// Requests per instance at once (1-1000).
    #[arg(long)]
    concurrency: Option<u32>,
    /// Request timeout: seconds, or 90s, 5m, 1h.
    #[arg(long, value_parser = parse_timeout)]
    timeout: Option<u32>,
    /// KEY=VALUE environment for the service. Repeatable.
    #[arg(long = "env")]
    env: Vec<String>,
    /// NAME=SECRET[:VERSION] from Secret Manager, as an environment
    /// variable. Repeatable.
    #[arg(long = "secret")]
    secrets: Vec<String>,
    /// KEY=VALUE label on the service. Repeatable.
    #[arg(long = "label")]
    labels: Vec<String>,
    /// The service's runtime service account (email).
    #[arg(long)]
    service_account: Option<String>,
    /// Startup CPU boost (default on; `=false` turns it off).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    startup_cpu_boost: Option<bool>,
    /// Tag to push besides the digest (default: latest and the git commit). Repeatable.
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Build, send nothing, print the API requests that change something,
    /// one JSON object per line: {"method", "url", "body"}.
    #[arg(long)]
    dry_run: bool,
    /// Instead of deploying, write the service as service.yaml (Knative, for
    /// `gcloud run services replace`), terraform, or cloudbuild.
    #[arg(long, conflicts_with = "dry_run")]
    emit: Option<String>,
    /// With --emit: write to this file instead of stdout.
    #[arg(long, requires = "emit")]
    out: Option<PathBuf>,
    /// Seconds to wait for each long-running operation.
    #[arg(long, default_value_t = 600)]
    wait: u64,
    /// Cloud Run Admin API base URL (private endpoints, tests).
    #[arg(long, env = "SLIMPACK_RUN_API", default_value = crate::deploy::api::RUN_API)]
    run_api: String,
    /// Artifact Registry API base URL.
    #[arg(long, env = "SLIMPACK_ARTIFACT_REGISTRY_API", default_value = crate::deploy::api::ARTIFACT_REGISTRY_API)]
    artifact_registry_api: String,
    /// Speak plain HTTP to this registry (loopback ones always are). Repeatable.
    #[arg(long = "insecure-registry")]
    insecure: Vec<String>,
    /// Machine-readable report on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    project_flags: ProjectFlags,
}

/// `300`, `300s`, `5m`, `1h` as seconds.
fn parse_timeout(s: &str) -> Result<u32, String> {
    let (n, mult) = match s.chars().last() {
        Some('s') => (&s[..s.len() - 1], 1),
        Some('m') => (&s[..s.len() - 1], 60),
        Some('h') => (&s[..s.len() - 1], 3600),
        _ => (s, 1),
    };
    n.parse::<u32>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("{s:?}: expected seconds, or a duration like 90s, 5m, 1h"))
}

impl DeployArgs {
    fn config(&self) -> Result<crate::deploy::DeployConfig> {
        Ok(crate::deploy::DeployConfig {
            project: self.project.clone(),
            region: self.region.clone(),
            service: self.service.clone(),
            repo: self.repo.clone(),
            registry: self.registry.clone(),
            allow_unauthenticated: self.allow_unauthenticated,
            public_access: self.public_access.clone(),
            memory: self.memory.clone(),
            cpu: self.cpu.clone(),
            min_instances: self.min_instances,
            max_instances: self.max_instances,
            concurrency: self.concurrency,
            timeout: self.timeout,
            env: pairs(&self.env, "--env")?,
            secrets: pairs(&self.secrets, "--secret")?,
            labels: pairs(&self.labels, "--label")?,
            service_account: self.service_account.clone(),
            startup_cpu_boost: self.startup_cpu_boost,
            tags: self.tags.clone(),
        })
    }
}

fn pairs(items: &[String], flag: &str) -> Result<std::collections::BTreeMap<String, String>> {
    items
        .iter()
        .map(|i| {
            i.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| anyhow!("{flag} {i:?}: expected KEY=VALUE"))
        })
        .collect()
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Build(a) => build_cmd(a),
        Cmd::Run(a) => run_cmd(a),
        Cmd::Push(a) => push_cmd(a),
        Cmd::Pull(a) => pull_cmd(a),
        Cmd::Lint(a) => lint_cmd(a),
        Cmd::Dockerfile(a) => dockerfile_cmd(a),
        Cmd::Deploy(a) => deploy_cmd(*a),
    }
}

fn build_cmd(a: BuildArgs) -> Result<()> {
    let overrides = a.project.overrides(Some(&a.image))?;
    let outputs = a
        .output
        .iter()
        .map(|o| Output::parse(o))
        .collect::<Result<Vec<_>>>()?;
    let opts = BuildOptions {
        dir: a.dir,
        overrides,
        outputs,
        plan_only: a.plan,
        plan_with_venv: false,
        locked: a.locked,
        refresh: a.project.refresh,
        cache_dir: a.project.cache_dir,
        progress: !a.json && !a.plan,
        push: a.push,
        insecure_registries: a.insecure,
    };
    match build::build(&opts)? {
        Outcome::Plan(plan) => {
            println!("{}", serde_json::to_string_pretty(&plan)?);
            for w in &plan.warnings {
                eprintln!("warning: {w}");
            }
        }
        Outcome::Built(r) if a.json => println!("{}", serde_json::to_string_pretty(&r)?),
        Outcome::Built(r) => {
            for w in &r.warnings {
                eprintln!("warning: {w}");
            }
            println!("Built {} in {:.2}s", r.name, r.seconds);
            for o in &r.outputs {
                println!("  output  {o}");
            }
            println!("  digest  {}", r.digest);
            println!(
                "  python  {} on {}, {} OS packages, {} Python packages",
                r.python, r.base, r.os_packages, r.python_packages
            );
            if let Some(res) = &r.resolved {
                println!("  resolved {}", res.join(" "));
            }
            if let Some(b) = &r.builder {
                if !b.compiled.is_empty() {
                    println!("  compiled {} in the builder", b.compiled.join(" "));
                }
                if !b.build_packages.is_empty() {
                    println!("  builder  + {}", b.build_packages.join(" "));
                }
            }
            for a in &r.runtime_additions {
                println!("  library  {a}");
            }
            println!("  cmd     {}", serde_json::to_string(&r.cmd)?);
            println!(
                "  {:<8} {:>12} {:>13}  {:<8} digest",
                "layer", "compressed", "uncompressed", ""
            );
            for l in &r.layers {
                println!(
                    "  {:<8} {:>12} {:>13}  {:<8} {}",
                    l.name,
                    human(l.size),
                    human(l.uncompressed_size),
                    if l.cached { "cached" } else { "built" },
                    &l.digest[..19]
                );
            }
            println!(
                "  {:<8} {:>12} {:>13}",
                "total",
                human(r.size),
                human(r.uncompressed_size)
            );
            if let Some(p) = &r.push {
                print_push(p);
            }
        }
    }
    Ok(())
}

fn secs(s: f64, flag: &str) -> Result<std::time::Duration> {
    std::time::Duration::try_from_secs_f64(s)
        .map_err(|_| anyhow!("{flag} {s}: not a number of seconds"))
}

fn run_cmd(a: RunArgs) -> Result<()> {
    use crate::run::{self, Probe, RunOptions};
    let cache = crate::core::cache::Cache::open_or_default(a.common.cache_dir.as_deref())?;
    let mut reference = a.image.clone();
    if let Some(r) = build_if_project(&a.image, a.common.cache_dir.clone(), a.common.json)? {
        reference = r.outputs[0].clone();
    }
    let mut probe = Probe::cloud_run_default(a.probe.clone());
    if let Some(s) = a.probe_initial_delay {
        probe.initial_delay = secs(s, "--probe-initial-delay")?;
    }
    if let Some(s) = a.probe_period {
        probe.period = secs(s, "--probe-period")?;
    }
    if let Some(s) = a.probe_timeout {
        probe.timeout = secs(s, "--probe-timeout")?;
    }
    if let Some(n) = a.probe_failure_threshold {
        probe.failure_threshold = n.max(1);
    }
    if let Some(s) = a.startup_timeout {
        probe.period = secs(s, "--startup-timeout")?;
        probe.failure_threshold = 1;
    }
    let opts = RunOptions {
        port: a.port.unwrap_or(8080),
        publish: a.port.is_some() || a.command.is_empty(),
        container_port: a.container_port,
        network: run::Network::parse(&a.network)?,
        probe,
        request_path: a.request.clone(),
        grace: secs(a.grace, "--grace")?,
        service: a.service.clone(),
        env: pairs(&a.env, "--env")?.into_iter().collect(),
        check: a.check,
        command: (!a.command.is_empty()).then(|| a.command.clone()),
    };
    if a.check && opts.command.is_some() {
        anyhow::bail!(
            "--check runs the image's own command; drop the command after `--` or --check"
        );
    }
    let preparing = std::time::Instant::now();
    let (store, image) = run::load(
        &reference,
        &cache,
        &a.common.insecure,
        &crate::core::progress::Progress::new(!a.common.json),
    )?;
    let root = run::rootfs(&store, &image, &cache, a.keep_setuid)?;
    let prepare_ms = preparing.elapsed().as_millis() as u64;
    let json = a.common.json;
    let port = opts.port;
    let check = a.check;
    let on_ready = move |ms: u64| {
        if !json && !check {
            eprintln!("serving {reference} on http://127.0.0.1:{port} (ready after {ms} ms); Ctrl-C stops it");
        }
    };
    let mut report = run::run(&a.image, &image, &root, &opts, &on_ready)?;
    report.prepare_ms = Some(prepare_ms);
    if opts.command.is_some() {
        std::process::exit(report.exit_code.unwrap_or(1));
    }
    if a.common.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if a.check {
        println!("Checked {}", report.image);
        for c in &report.checks {
            println!(
                "  {} {:<26} {}",
                if c.pass { "pass" } else { "FAIL" },
                c.name,
                c.detail
            );
        }
        println!("  network: {}", report.network);
        match report.time_to_ready_ms {
            Some(ms) => println!("  time to ready: {ms} ms"),
            None => println!("  time to ready: never"),
        }
        if !report.passed() {
            println!("  last output of the app:");
            for l in &report.output_tail {
                println!("    {l}");
            }
        }
    }
    let failed: Vec<&str> = report
        .checks
        .iter()
        .filter(|c| !c.pass)
        .map(|c| c.name.as_str())
        .collect();
    if !failed.is_empty() {
        anyhow::bail!("{} check(s) failed: {}", failed.len(), failed.join(", "));
    }
    if let Some(code) = report.exit_code.filter(|c| *c != 0 && !a.check) {
        anyhow::bail!("the app exited with code {code}");
    }
    Ok(())
}

fn print_push(p: &crate::registry::PushReport) {
    println!("Pushed {}", p.reference);
    for t in &p.tags {
        println!("  tag     {t}");
    }
    for b in &p.blobs {
        let what = match &b.action {
            crate::registry::BlobAction::Skipped => "exists".to_string(),
            crate::registry::BlobAction::Mounted { from } => format!("mounted from {from}"),
            crate::registry::BlobAction::Uploaded => "uploaded".into(),
        };
        println!(
            "  {:<7} {} {:>10}  {what}",
            b.kind,
            &b.digest[..19],
            human(b.size)
        );
    }
    println!("  {} in {:.2}s", p.summary(), p.seconds);
}

/// A project directory given where an image is expected is built first.
fn build_if_project(
    image: &str,
    cache_dir: Option<PathBuf>,
    quiet: bool,
) -> Result<Option<Box<build::BuildReport>>> {
    let as_dir = std::path::Path::new(image);
    if !(as_dir.is_dir()
        && !as_dir.join("index.json").exists()
        && (as_dir.join("requirements.txt").exists() || as_dir.join("pyproject.toml").exists()))
    {
        return Ok(None);
    }
    let opts = BuildOptions {
        dir: as_dir.to_path_buf(),
        cache_dir,
        progress: !quiet,
        ..Default::default()
    };
    match build::build(&opts)? {
        Outcome::Built(r) => {
            if !quiet {
                eprintln!("built {} ({})", r.name, r.digest);
            }
            Ok(Some(r))
        }
        Outcome::Plan(_) => unreachable!("plan_only is false"),
    }
}

/// The image to push: a project directory (built first) or an OCI layout.
fn local_image(
    image: &str,
    cache_dir: Option<PathBuf>,
    quiet: bool,
) -> Result<(crate::core::cache::Cache, slimpack_oci::BlobStore, String)> {
    let cache = crate::core::cache::Cache::open_or_default(cache_dir.as_deref())?;
    if let Some(r) = build_if_project(image, cache_dir, quiet)? {
        let store = cache.blobs.clone();
        return Ok((cache, store, r.digest));
    }
    if image.starts_with("docker-archive:") {
        anyhow::bail!("{image}: push an OCI layout (`slimpack build -o oci:DIR`); a docker-archive holds no manifest to push");
    }
    let (dir, tag) = crate::run::layout_ref(image).ok_or_else(|| {
        anyhow!("{image}: not an OCI image layout (no index.json) or a project directory")
    })?;
    let (store, img) = slimpack_oci::read_layout(&dir, tag.as_deref())?;
    Ok((cache, store, img.manifest_digest))
}

fn push_cmd(a: PushArgs) -> Result<()> {
    let target = crate::registry::Reference::parse(&a.reference)?;
    let (cache, store, digest) = local_image(&a.image, a.common.cache_dir.clone(), a.common.json)?;
    let report = crate::registry::push(
        &store,
        &digest,
        &target,
        &a.tags,
        crate::registry::is_insecure(&target, &a.common.insecure),
        &cache,
        &crate::core::progress::Progress::new(!a.common.json),
    )?;
    if a.common.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_push(&report);
    }
    Ok(())
}

fn pull_cmd(a: PullArgs) -> Result<()> {
    let r = crate::registry::Reference::parse(&a.reference)?;
    let cache = crate::core::cache::Cache::open_or_default(a.common.cache_dir.as_deref())?;
    let (image, report) = crate::registry::pull(
        &r,
        crate::registry::is_insecure(&r, &a.common.insecure),
        &cache,
        &crate::core::progress::Progress::new(!a.common.json),
    )?;
    if let Some(o) = &a.output {
        match Output::parse(o)? {
            Output::Oci { path, tag } => slimpack_oci::write_layout(
                &cache.blobs,
                &image.to_image(&cache.blobs)?,
                &path,
                &tag,
            )?,
            Output::DockerArchive { .. } => {
                anyhow::bail!("--output {o}: pull writes OCI layouts only (oci:DIR[:TAG])")
            }
        }
    }
    if a.common.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("Pulled {}", report.reference);
        println!(
            "  downloaded {}, {} from the cache, in {:.2}s",
            human(report.downloaded_bytes),
            human(report.cached_bytes),
            report.seconds
        );
        if let Some(o) = &a.output {
            println!("  output  {o}");
        }
    }
    Ok(())
}

fn lint_cmd(a: LintArgs) -> Result<()> {
    use crate::dockerfile::{self, lint};
    let fail = lint::Severity::parse_level(&a.fail_level).ok_or_else(|| {
        anyhow!(
            "--fail-level {:?}: expected error, warning, info or none",
            a.fail_level
        )
    })?;
    if !matches!(a.format.as_str(), "human" | "json" | "sarif") {
        anyhow::bail!("--format {:?}: expected human, json or sarif", a.format);
    }
    let shown = a.file.display().to_string();
    let text = std::fs::read_to_string(&a.file).map_err(|e| anyhow!("{shown}: {e}"))?;
    let df = dockerfile::parse(&text).map_err(|e| anyhow!("{shown}:{}: {}", e.line, e.message))?;
    let ignore = a
        .file
        .parent()
        .map(|d| {
            if d.as_os_str().is_empty() {
                std::path::Path::new(".")
            } else {
                d
            }
        })
        .map(|d| d.join(".dockerignore"));
    let dockerignore = ignore
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok());
    let context_secrets = match ignore.as_ref().and_then(|p| p.parent()) {
        Some(dir) => lint::context_secrets(dir, dockerignore.as_deref()),
        None => Vec::new(),
    };
    let ctx = lint::Context {
        dockerignore,
        context_secrets,
    };
    let findings = lint::lint(&df, &ctx);
    match a.format.as_str() {
        "json" => println!(
            "{}",
            serde_json::to_string_pretty(&lint::to_json(&findings))?
        ),
        "sarif" => println!(
            "{}",
            serde_json::to_string_pretty(&lint::to_sarif(&findings, &shown))?
        ),
        _ => {
            use std::io::IsTerminal;
            print!(
                "{}",
                lint::to_human(&findings, &shown, std::io::stdout().is_terminal())
            );
        }
    }
    if let Some(level) = fail {
        let n = findings.iter().filter(|f| f.severity >= level).count();
        if n > 0 {
            anyhow::bail!("{n} finding(s) at or above {} in {shown}", level.as_str());
        }
    }
    Ok(())
}

fn dockerfile_cmd(a: DockerfileArgs) -> Result<()> {
    use crate::dockerfile::emit;
    use std::io::{BufRead, IsTerminal, Write};
    let opts = emit::GenerateOptions {
        build: BuildOptions {
            dir: a.dir.clone(),
            overrides: a.project.overrides(Some(&a.image))?,
            refresh: a.project.refresh,
            cache_dir: a.project.cache_dir.clone(),
            progress: !a.stdout || std::io::stderr().is_terminal(),
            ..Default::default()
        },
        runtime: emit::Runtime::parse(&a.runtime)?,
        python_image: a.python_image.clone(),
        uv_image: a.uv_image.clone(),
    };
    let (_, files) = emit::generate(&opts)?;
    if a.stdout {
        print!("{}", files.dockerfile);
        return Ok(());
    }
    let interactive = std::io::stdin().is_terminal();
    let written = emit::write(&a.dir, &files, |path| {
        if a.force {
            return Ok(true);
        }
        if !interactive {
            return Ok(false);
        }
        eprint!(
            "{} exists and would change. Overwrite? [y/N] ",
            path.display()
        );
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
    })?;
    for (name, what) in written {
        let verb = match what {
            emit::Written::Created => "wrote",
            emit::Written::Replaced => "replaced",
            emit::Written::Unchanged => "unchanged",
        };
        println!("{verb:>9}  {}", a.dir.join(name).display());
    }
    Ok(())
}

fn deploy_cmd(a: DeployArgs) -> Result<()> {
    use crate::deploy::{self, emit, DeployOutcome};
    let mut overrides = a.project_flags.overrides(None)?;
    overrides.deploy = a.config()?;
    let quiet = a.json || a.dry_run || (a.emit.is_some() && a.out.is_none());
    let opts = deploy::DeployOptions {
        build: BuildOptions {
            dir: a.dir.clone(),
            overrides,
            refresh: a.project_flags.refresh,
            cache_dir: a.project_flags.cache_dir.clone(),
            progress: !quiet,
            insecure_registries: a.insecure.clone(),
            ..Default::default()
        },
        endpoints: deploy::Endpoints {
            run: a.run_api.clone(),
            artifact_registry: a.artifact_registry_api.clone(),
        },
        create_repo: a.create_repo,
        dry_run: a.dry_run,
        emit: a.emit.as_deref().map(emit::Format::parse).transpose()?,
        wait: std::time::Duration::from_secs(a.wait),
    };
    match deploy::deploy(&opts)? {
        DeployOutcome::DryRun(requests) => {
            for r in &requests {
                println!("{}", serde_json::to_string(r)?);
            }
        }
        DeployOutcome::Emitted(text) => match &a.out {
            Some(path) => {
                crate::core::fs::write_atomic(path, text.as_bytes())
                    .map_err(|e| anyhow!("writing {}: {e}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
            None => print!("{text}"),
        },
        DeployOutcome::Deployed(r) if a.json => println!("{}", serde_json::to_string_pretty(&r)?),
        DeployOutcome::Deployed(r) => {
            println!(
                "{} {} (revision {}) in {:.1}s",
                if r.created { "Created" } else { "Updated" },
                r.name,
                r.revision.as_deref().unwrap_or("?"),
                r.seconds
            );
            println!("  image   {}", r.image);
            println!("  push    {}", r.push.summary());
            if r.repository_created {
                println!("  repo    created");
            }
            println!(
                "  access  {}",
                match r.public {
                    Some(deploy::PublicAccess::InvokerIamDisabled) =>
                        "public (invoker IAM check disabled)",
                    Some(deploy::PublicAccess::IamBinding) =>
                        "public (roles/run.invoker for allUsers)",
                    None => "authenticated callers only",
                }
            );
            println!(
                "  url     {}",
                r.url.as_deref().unwrap_or("(none reported)")
            );
        }
    }
    Ok(())
}
