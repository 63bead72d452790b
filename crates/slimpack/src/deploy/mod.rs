//! `slimpack deploy`: build, push by digest to Artifact Registry, and create
//! or update the Cloud Run service through the Admin API v2, waiting for
//! the rollout (after a `before` command ran as a job and succeeded), or a
//! Cloud Run job (`--job`, run with `--execute`); or print the requests
//! (`--dry-run`), or write them as YAML, Terraform or Cloud Build config
//! (`--emit`).
//!
//! [`settings`] resolves flags and `[tool.slimpack.deploy]`, [`spec`] turns
//! them and the build into the service, [`job`] the service's spec into a
//! job, [`api`] holds every request and the client, [`emit`] writes the
//! manifests.

pub mod api;
pub mod emit;
pub mod job;
pub mod settings;
pub mod spec;

#[cfg(test)]
#[path = "../../tests/common/schemas.rs"]
mod schemas;

pub use api::{Client, Endpoints, GoogleError};
pub use settings::{DeployConfig, DeploySettings, PublicAccess, SecretRef};
pub use spec::{ApiRequest, ServiceSpec};

use crate::build::{self, Context};
use crate::core::errors::hinted;
use anyhow::Result;
use serde::Serialize;
use serde_json::Value;
use std::time::{Duration, Instant};

/// Names Cloud Run reserves for itself in the container's environment.
pub const RESERVED_ENV: &[&str] = &["PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION"];

pub struct DeployOptions {
    /// The project and how to build it; `overrides.deploy` holds the
    /// deploy flags.
    pub build: build::Request,
    pub endpoints: Endpoints,
    /// Create the Artifact Registry repository when it is missing.
    pub create_repo: bool,
    pub dry_run: bool,
    pub emit: Option<emit::Format>,
    /// How long to wait for each long-running operation.
    pub wait: Duration,
    /// Deploy a Cloud Run job with these options instead of the service.
    pub job: Option<job::JobOptions>,
    /// With `job`: run it and wait for the execution.
    pub execute: bool,
}

/// What a job deploy did.
#[derive(Debug, Serialize)]
pub struct JobReport {
    pub job: String,
    /// `projects/P/locations/R/jobs/J`.
    pub name: String,
    pub image: String,
    pub created: bool,
    pub repository_created: bool,
    pub push: crate::registry::PushReport,
    /// With `--execute`: how the execution went.
    pub execution: Option<job::ExecutionReport>,
    pub cloudsql_sockets: Vec<String>,
    pub seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct DeployReport {
    pub service: String,
    /// `projects/P/locations/R/services/S`.
    pub name: String,
    pub url: Option<String>,
    pub revision: Option<String>,
    /// What runs: the image by digest.
    pub image: String,
    /// The service did not exist before.
    pub created: bool,
    pub repository_created: bool,
    /// How the service was made public, if it was.
    pub public: Option<PublicAccess>,
    pub push: crate::registry::PushReport,
    /// Where the app finds each Cloud SQL instance's Unix socket (the
    /// `host` of its DATABASE_URL).
    pub cloudsql_sockets: Vec<String>,
    /// The `before` command's execution, when one ran.
    pub before: Option<job::ExecutionReport>,
    pub seconds: f64,
}

pub enum DeployOutcome {
    /// `--dry-run`: the requests that change something, in order.
    DryRun(Vec<ApiRequest>),
    /// `--emit`: the file's text.
    Emitted(String),
    Deployed(Box<DeployReport>),
    /// `--job`: the job made, and its execution with `--execute`.
    Job(Box<JobReport>),
}

/// The built image and the service it makes.
struct Prepared {
    settings: DeploySettings,
    spec: ServiceSpec,
    /// `--job`, or the job that runs `before` ahead of the service.
    job: Option<job::JobSpec>,
    digest: String,
    /// The SBOM's digest in the cache's blobs, attached after the push.
    sbom: Option<String>,
}

fn prepare(ctx: &Context, opts: &DeployOptions) -> Result<Prepared> {
    let inputs = build::Inputs::read(&opts.build)?;
    let (project, cfg) = (&inputs.project, &inputs.cfg);
    let fallbacks = settings::Fallbacks::from_environment(
        &cfg.deploy,
        &project.name,
        crate::core::git::git(&project.dir, &["rev-parse", "HEAD"]),
    );
    // Settings first: a missing --project fails before a build, not after.
    let settings = DeploySettings::resolve(&cfg.deploy, &fallbacks)?;
    // `--job` without a name takes the service's.
    let job_options = opts.job.clone().map(|mut o| {
        if o.name.is_empty() {
            o.name = settings.service.clone();
        }
        o
    });
    if let Some(o) = &job_options {
        o.check()?;
    }
    let planned = build::plan(ctx, inputs)?;
    let built = build::build(ctx, &planned)?;
    let report = build::deliver(ctx, &planned, built, &[], true, None)?;
    let image = format!("{}@{}", settings.image_repository(), report.digest);
    let spec = ServiceSpec::new(
        &settings,
        &image,
        report.port,
        report.health_path.as_deref(),
    )?;
    let job = match (&job_options, &settings.before) {
        (Some(o), _) => Some(job::JobSpec::new(spec.clone(), o.clone())?),
        (None, Some(before)) => Some(job::JobSpec::new(
            spec.clone(),
            job::JobOptions {
                name: format!("{}-before", settings.service),
                command: before.clone(),
                max_retries: Some(0),
                ..Default::default()
            },
        )?),
        (None, None) => None,
    };
    Ok(Prepared {
        settings,
        spec,
        job,
        digest: report.digest.clone(),
        sbom: report.sbom.as_ref().map(|s| s.digest.clone()),
    })
}

/// What a deploy sends that changes something, in order, for a project
/// where the repository is missing (with `--create-repo`) and the
/// service's IAM policy is empty: what `--dry-run` prints. A `before`
/// command's job is saved and run first; `--job` saves (and with
/// `--execute` runs) the job instead of the service. A real run
/// skips the repository when it exists and merges the invoker binding
/// into the policy it reads.
fn planned_requests(p: &Prepared, opts: &DeployOptions) -> Vec<ApiRequest> {
    let (s, endpoints) = (&p.settings, &opts.endpoints);
    let mut out = Vec::new();
    if opts.create_repo {
        out.push(endpoints.create_repository(s));
    }
    if let Some(j) = &p.job {
        out.push(j.patch_request(&endpoints.run));
        if opts.execute || opts.job.is_none() {
            out.push(j.run_request(&endpoints.run));
        }
        if opts.job.is_some() {
            return out;
        }
    }
    out.push(p.spec.patch_request(&endpoints.run));
    if s.allow_unauthenticated && s.public_access == PublicAccess::IamBinding {
        if let Some(policy) = api::with_public_invoker(&Value::Null) {
            out.push(endpoints.set_iam_policy(s, policy));
        }
    }
    out
}

/// A Google API error with its hint on the next line.
fn explained(e: anyhow::Error, s: &DeploySettings) -> anyhow::Error {
    match e.downcast_ref::<GoogleError>() {
        Some(g) => match g.hint(s) {
            Some(h) => hinted(g, h),
            None => e,
        },
        None => e,
    }
}

fn logs_hint(s: &DeploySettings) -> String {
    format!(
        "the revision did not become ready. Run it locally under Cloud Run's contract with `slimpack run --check DIR`; its logs: https://console.cloud.google.com/run/detail/{}/{}/logs?project={}",
        s.region, s.service, s.project
    )
}

/// Makes sure the Artifact Registry repository exists (creating it with
/// `--create-repo`); whether this deploy created it.
fn ensure_repository(
    api: &Client,
    ctx: &Context,
    opts: &DeployOptions,
    s: &DeploySettings,
    say: &dyn Fn(String),
) -> Result<bool> {
    let e = &opts.endpoints;
    let wrap = |e: anyhow::Error| explained(e, s);
    if api
        .send_optional(&e.get_repository(s))
        .map_err(wrap)?
        .is_none()
    {
        if !opts.create_repo {
            return Err(hinted(
                format!(
                    "Artifact Registry repository {} does not exist.",
                    s.repository_name()
                ),
                format!(
                    "pass --create-repo, or create it: gcloud artifacts repositories create {} --repository-format=docker --location={} --project={}",
                    s.repo, s.region, s.project
                ),
            ));
        }
        say(format!(
            "Creating Artifact Registry repository {}",
            s.repository_name()
        ));
        match api.send(&e.create_repository(s)) {
            Ok(op) => {
                api.wait(
                    op,
                    &e.artifact_registry,
                    "v1",
                    "creating the repository",
                    opts.wait,
                    &ctx.progress,
                )
                .map_err(wrap)?;
                return Ok(true);
            }
            // Made meanwhile by someone else: as good.
            Err(err)
                if err
                    .downcast_ref::<GoogleError>()
                    .is_some_and(|g| g.http == 409) => {}
            Err(err) => return Err(wrap(err)),
        }
    }

    Ok(false)
}

/// `--allow-unauthenticated`: how the service was opened, if it was.
fn open_to_public(api: &Client, e: &Endpoints, s: &DeploySettings) -> Result<Option<PublicAccess>> {
    let mut public = None;
    if s.allow_unauthenticated {
        public = Some(s.public_access);
        if s.public_access == PublicAccess::IamBinding {
            let policy = api.send(&e.get_iam_policy(s))?;
            if let Some(merged) = api::with_public_invoker(&policy) {
                api.send(&e.set_iam_policy(s, merged))?;
            }
        }
    }
    Ok(public)
}

/// `say`: print each step on stderr.
pub fn deploy(ctx: &Context, opts: &DeployOptions, say: bool) -> Result<DeployOutcome> {
    let started = Instant::now();
    let progress = &ctx.progress;
    let say = |m: String| {
        if say {
            eprintln!("{m}");
        }
    };
    let p = prepare(ctx, opts)?;
    if let Some(f) = opts.emit {
        return Ok(DeployOutcome::Emitted(match (&opts.job, &p.job) {
            (Some(_), Some(j)) => emit::emit_job(j, f)?,
            _ => emit::emit(&p.spec, f)?,
        }));
    }
    if opts.dry_run {
        return Ok(DeployOutcome::DryRun(planned_requests(&p, opts)));
    }
    let s = &p.settings;
    let (token, _) = crate::registry::google::access_token()?;
    let api = Client::new(token, opts.endpoints.clone());

    // The repository, before anything is pushed into it.
    let repository_created = ensure_repository(&api, ctx, opts, s, &say)?;

    let mut tags = s.tags.clone();
    let first = tags.remove(0);
    let target = crate::registry::Reference::parse(&format!("{}:{first}", s.image_repository()))?;
    let mut push = crate::registry::push(
        &ctx.cache.blobs,
        &p.digest,
        &target,
        &tags,
        crate::registry::is_insecure(&target, &ctx.insecure_registries),
        &ctx.cache,
        progress,
    )?;
    if let Some(d) = &p.sbom {
        let doc = ctx.cache.blobs.read(d)?;
        push.sbom = Some(build::sbom::attach(ctx, &p.digest, &target, &doc)?);
    }
    let run = Deploying {
        api: &api,
        ctx,
        opts,
        started,
        repository_created,
        push,
    };
    match (&opts.job, &p.job) {
        (Some(_), Some(j)) => run.job(j, &say),
        _ => run.service(&p, &say),
    }
}

/// A deploy past its push: the API client and what the report needs.
struct Deploying<'a> {
    api: &'a Client,
    ctx: &'a Context,
    opts: &'a DeployOptions,
    started: Instant,
    repository_created: bool,
    push: crate::registry::PushReport,
}

impl Deploying<'_> {
    /// Creates or updates the job, and with `--execute` runs it.
    fn job(self, j: &job::JobSpec, say: &dyn Fn(String)) -> Result<DeployOutcome> {
        let s = &j.service.settings;
        let (created, execution) = self.job_made(j, self.opts.execute, say)?;
        Ok(DeployOutcome::Job(Box::new(JobReport {
            job: j.job.name.clone(),
            name: j.name(),
            image: j.service.image.clone(),
            created,
            repository_created: self.repository_created,
            push: self.push,
            execution,
            cloudsql_sockets: s.cloudsql_sockets(),
            seconds: self.started.elapsed().as_secs_f64(),
        })))
    }

    /// PATCH the job (allowMissing), wait; then, when asked, run it and
    /// wait for its execution: whether the job was new, and how it ran.
    fn job_made(
        &self,
        j: &job::JobSpec,
        execute: bool,
        say: &dyn Fn(String),
    ) -> Result<(bool, Option<job::ExecutionReport>)> {
        let (api, e, s) = (self.api, &self.opts.endpoints, &j.service.settings);
        let wrap = |err: anyhow::Error| explained(err, s);
        let get = api::get(format!("{}/v2/{}", e.run.trim_end_matches('/'), j.name()));
        let created = api.send_optional(&get).map_err(wrap)?.is_none();
        say(format!(
            "{} Cloud Run job {} in {}",
            if created { "Creating" } else { "Updating" },
            j.job.name,
            s.region
        ));
        let op = api.send(&j.patch_request(&e.run)).map_err(wrap)?;
        let (progress, limit) = (&self.ctx.progress, self.opts.wait);
        api.wait(op, &e.run, "v2", "saving the job", limit, progress)
            .map_err(wrap)?;
        if !execute {
            return Ok((created, None));
        }
        say(format!("Running job {}", j.job.name));
        let op = api.send(&j.run_request(&e.run)).map_err(wrap)?;
        let execution = op["metadata"]["name"].as_str().unwrap_or("").to_string();
        // A failed execution fails its operation; its tasks still tell why.
        let waited = api.wait(op, &e.run, "v2", "running the job", limit, progress);
        if let Err(err) = waited {
            // Still running past --wait, or the API unreachable: not an outcome.
            let failed_run = err
                .downcast_ref::<GoogleError>()
                .is_some_and(|g| g.method == "operation");
            if !failed_run || execution.is_empty() {
                return Err(wrap(err));
            }
        }
        if execution.is_empty() {
            anyhow::bail!("the run of job {} returned no execution name", j.job.name);
        }
        let url = |path: &str| format!("{}/v2/{path}", e.run.trim_end_matches('/'));
        let exec = api.send(&api::get(url(&execution))).map_err(wrap)?;
        let tasks = api
            .send(&job::JobSpec::tasks_request(&e.run, &execution))
            .map_err(wrap)?;
        Ok((created, Some(job::ExecutionReport::of(&exec, &tasks))))
    }

    /// The `before` command, run as a job execution that must succeed.
    fn before(&self, p: &Prepared, say: &dyn Fn(String)) -> Result<Option<job::ExecutionReport>> {
        let Some(j) = &p.job else {
            return Ok(None);
        };
        let run = self.job_made(j, true, say)?.1.unwrap_or_default();
        if run.ok() {
            return Ok(Some(run));
        }
        let failed = run.tasks.iter().filter(|t| !t.succeeded).count() as u64;
        Err(hinted(
            format!(
                "before = {:?} failed in job {} ({} of {} tasks failed); the service was not updated",
                p.settings.before.as_ref().map(|b| b.join(" ")).unwrap_or_default(),
                j.job.name,
                run.failed.max(failed),
                run.tasks.len().max(1)
            ),
            format!(
                "its logs: {}",
                run.log_uri.as_deref().unwrap_or("the job's Logs tab in the Cloud console")
            ),
        ))
    }

    /// `before` (as a job execution that must succeed), then the service.
    fn service(self, p: &Prepared, say: &dyn Fn(String)) -> Result<DeployOutcome> {
        let before = self.before(p, say)?;
        let (api, e, s) = (self.api, &self.opts.endpoints, &p.settings);
        let (progress, opts) = (&self.ctx.progress, self.opts);
        let wrap = |err: anyhow::Error| explained(err, s);

        let existing = api.send_optional(&e.get_service(s)).map_err(wrap)?;
        say(format!(
            "{} Cloud Run service {} in {}",
            if existing.is_some() {
                "Updating"
            } else {
                "Creating"
            },
            s.service,
            s.region
        ));
        let op = api.send(&p.spec.patch_request(&e.run)).map_err(wrap)?;
        api.wait(
            op,
            &e.run,
            "v2",
            "rolling out the revision",
            opts.wait,
            progress,
        )
        .map_err(|err| match err.downcast_ref::<GoogleError>() {
            Some(g) if g.method == "operation" => hinted(g, logs_hint(s)),
            _ => wrap(err),
        })?;
        let svc = api.send(&e.get_service(s)).map_err(wrap)?;
        let cond = &svc["terminalCondition"];
        if cond["state"] != "CONDITION_SUCCEEDED" {
            return Err(hinted(
                format!(
                    "Cloud Run service {}: {} {}: {}",
                    s.service,
                    cond["type"].as_str().unwrap_or("Ready"),
                    cond["state"].as_str().unwrap_or("unknown"),
                    cond["message"].as_str().unwrap_or("no message"),
                ),
                logs_hint(s),
            ));
        }

        let public = open_to_public(api, e, s).map_err(wrap)?;
        Ok(DeployOutcome::Deployed(Box::new(DeployReport {
            service: s.service.clone(),
            name: s.service_name(),
            url: svc["uri"].as_str().map(str::to_string),
            revision: svc["latestReadyRevision"]
                .as_str()
                .map(|r| r.rsplit('/').next().unwrap_or(r).to_string()),
            image: p.spec.image.clone(),
            created: existing.is_none(),
            repository_created: self.repository_created,
            public,
            push: self.push,
            cloudsql_sockets: s.cloudsql_sockets(),
            before,
            seconds: self.started.elapsed().as_secs_f64(),
        })))
    }
}
