//! `slimpack deploy`.

use super::{pairs, print_json, ProjectFlags};
use crate::build;
use crate::deploy::{self, api, emit, DeployConfig, DeployOutcome};
use anyhow::{anyhow, Result};
use std::path::PathBuf;

#[derive(clap::Args)]
pub(super) struct DeployArgs {
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
    /// Connect a Cloud SQL instance (PROJECT:REGION:INSTANCE): its Unix
    /// socket appears at /cloudsql/PROJECT:REGION:INSTANCE. Repeatable.
    #[arg(long = "cloudsql", value_name = "CONNECTION_NAME")]
    cloudsql: Vec<String>,
    /// Direct VPC egress through this VPC network.
    #[arg(long)]
    network: Option<String>,
    /// Direct VPC egress through this subnet.
    #[arg(long)]
    subnet: Option<String>,
    /// Which traffic leaves through the VPC: all-traffic or private-ranges-only.
    #[arg(long)]
    vpc_egress: Option<String>,
    /// /PATH/FILE=SECRET[:VERSION]: a Secret Manager version mounted as a
    /// file (one secret per directory). Repeatable.
    #[arg(long = "secret-file")]
    secret_files: Vec<String>,
    /// An HTTP path to probe for liveness (a failing instance is restarted).
    #[arg(long, value_name = "PATH")]
    liveness_probe: Option<String>,
    /// Run this command as a Cloud Run job with the new image before the
    /// service is updated (e.g. "python manage.py migrate"); the deploy
    /// stops if it fails.
    #[arg(long, value_name = "COMMAND")]
    before: Option<String>,
    /// Deploy a Cloud Run job instead of the service (NAME defaults to the
    /// service's): the same image, env, secrets, Cloud SQL and VPC.
    #[arg(long, value_name = "NAME", num_args = 0..=1, default_missing_value = "")]
    job: Option<String>,
    /// With --job: what each task runs (default: the image's command).
    #[arg(long = "job-command", value_name = "COMMAND", requires = "job")]
    job_command: Option<String>,
    /// With --job: tasks per execution.
    #[arg(long, requires = "job")]
    tasks: Option<u32>,
    /// With --job: tasks running at once.
    #[arg(long, requires = "job")]
    parallelism: Option<u32>,
    /// With --job: retries of a failed task (0-10).
    #[arg(long, requires = "job")]
    max_retries: Option<u32>,
    /// With --job: the time a task may take (seconds, or 90s, 5m, 1h).
    #[arg(long, value_parser = parse_timeout, requires = "job")]
    task_timeout: Option<u32>,
    /// With --job: run it and wait for the execution; each task's outcome
    /// is printed, and a failed task fails the command.
    #[arg(long, requires = "job")]
    execute: bool,
    /// Build, send nothing, print the API requests that change something,
    /// one JSON object per line: {"method", "url", "body"}.
    #[arg(long)]
    dry_run: bool,
    /// Instead of deploying, write the service as service.yaml (Knative, for
    /// `gcloud run services replace`), terraform, or cloudbuild.
    #[arg(
        long,
        value_enum,
        hide_possible_values = true,
        conflicts_with = "dry_run"
    )]
    emit: Option<emit::Format>,
    /// With --emit: write to this file instead of stdout.
    #[arg(long, requires = "emit")]
    out: Option<PathBuf>,
    /// Seconds to wait for each long-running operation.
    #[arg(long, default_value_t = 600)]
    wait: u64,
    /// Cloud Run Admin API base URL (private endpoints, tests).
    #[arg(long, env = "SLIMPACK_RUN_API", default_value = api::RUN_API)]
    run_api: String,
    /// Artifact Registry API base URL.
    #[arg(long, env = "SLIMPACK_ARTIFACT_REGISTRY_API", default_value = api::ARTIFACT_REGISTRY_API)]
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
    fn config(&self) -> Result<DeployConfig> {
        Ok(DeployConfig {
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
            cloudsql: self.cloudsql.clone(),
            network: self.network.clone(),
            subnet: self.subnet.clone(),
            vpc_egress: self.vpc_egress.clone(),
            secret_files: pairs(&self.secret_files, "--secret-file")?,
            liveness_probe: self.liveness_probe.clone(),
            before: self.before.clone(),
        })
    }

    /// `--job` and its options; the name defaults to the service's, known
    /// only once settings are resolved (`""` until then).
    fn job(&self) -> Result<Option<deploy::job::JobOptions>> {
        let Some(name) = &self.job else {
            return Ok(None);
        };
        let command = match &self.job_command {
            Some(c) => shell_words::split(c)
                .map_err(|e| anyhow!("--job-command {c:?}: {e}; quote it as a shell would"))?,
            None => Vec::new(),
        };
        Ok(Some(deploy::job::JobOptions {
            name: name.clone(),
            command,
            tasks: self.tasks,
            parallelism: self.parallelism,
            max_retries: self.max_retries,
            task_timeout: self.task_timeout,
        }))
    }
}

pub(super) fn run(a: DeployArgs) -> Result<i32> {
    let mut overrides = a.project_flags.overrides(None)?;
    overrides.deploy = a.config()?;
    let quiet = a.json || a.dry_run || (a.emit.is_some() && a.out.is_none());
    let mut ctx = a.project_flags.context(!quiet)?;
    ctx.insecure_registries = a.insecure.clone();
    let opts = deploy::DeployOptions {
        build: build::Request {
            dir: a.dir.clone(),
            overrides,
            locked: false,
        },
        endpoints: deploy::Endpoints {
            run: a.run_api.clone(),
            artifact_registry: a.artifact_registry_api.clone(),
        },
        create_repo: a.create_repo,
        dry_run: a.dry_run,
        emit: a.emit,
        wait: std::time::Duration::from_secs(a.wait),
        job: a.job()?,
        execute: a.execute,
    };
    match deploy::deploy(&ctx, &opts, !quiet)? {
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
        DeployOutcome::Deployed(r) if a.json => print_json(&r)?,
        DeployOutcome::Deployed(r) => print_report(&r),
        DeployOutcome::Job(r) => {
            if a.json {
                print_json(&r)?;
            } else {
                print_job(&r);
            }
            if r.execution.as_ref().is_some_and(|e| !e.ok()) {
                anyhow::bail!("job {}: the execution failed", r.job);
            }
        }
    }
    Ok(0)
}

fn print_execution(e: &deploy::job::ExecutionReport) {
    println!(
        "  run     {} ({} succeeded, {} failed)",
        e.name.rsplit('/').next().unwrap_or(&e.name),
        e.succeeded,
        e.failed
    );
    for t in &e.tasks {
        let how = if t.succeeded {
            "succeeded".to_string()
        } else {
            format!(
                "failed{}{}",
                t.exit_code
                    .map(|c| format!(" (exit {c})"))
                    .unwrap_or_default(),
                t.message
                    .as_deref()
                    .map(|m| format!(": {}", crate::core::text::escape_controls(m)))
                    .unwrap_or_default()
            )
        };
        println!("  task {:<3} {how}", t.index);
    }
    if let Some(l) = &e.log_uri {
        println!("  logs    {l}");
    }
}

fn print_job(r: &deploy::JobReport) {
    println!(
        "{} {} in {:.1}s",
        if r.created { "Created" } else { "Updated" },
        r.name,
        r.seconds
    );
    println!("  image   {}", r.image);
    println!("  push    {}", r.push.summary());
    if let Some(e) = &r.execution {
        print_execution(e);
    }
    for socket in &r.cloudsql_sockets {
        println!("  cloudsql {socket}");
    }
}

fn print_report(r: &deploy::DeployReport) {
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
            Some(deploy::PublicAccess::InvokerIamDisabled) => "public (invoker IAM check disabled)",
            Some(deploy::PublicAccess::IamBinding) => "public (roles/run.invoker for allUsers)",
            None => "authenticated callers only",
        }
    );
    println!(
        "  url     {}",
        r.url.as_deref().unwrap_or("(none reported)")
    );
    for socket in &r.cloudsql_sockets {
        println!("  cloudsql {socket} (e.g. postgresql://USER:PASS@/DB?host={socket})");
    }
    if let Some(b) = &r.before {
        println!("  before  ran first:");
        print_execution(b);
    }
}
