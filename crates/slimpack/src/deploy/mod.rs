//! `slimpack deploy`: build, push by digest to Artifact Registry, and create
//! or update the Cloud Run service through the Admin API v2, waiting for
//! the rollout; or print the requests (`--dry-run`), or write the service
//! as YAML, Terraform or Cloud Build config (`--emit`).
//!
//! [`settings`] resolves flags and `[tool.slimpack.deploy]`, [`spec`] turns
//! them and the build into the service, [`api`] holds every request and
//! the client, [`emit`] writes the manifests.

pub mod api;
pub mod emit;
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
    pub seconds: f64,
}

pub enum DeployOutcome {
    /// `--dry-run`: the requests that change something, in order.
    DryRun(Vec<ApiRequest>),
    /// `--emit`: the file's text.
    Emitted(String),
    Deployed(Box<DeployReport>),
}

/// The built image and the service it makes.
struct Prepared {
    settings: DeploySettings,
    spec: ServiceSpec,
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
    Ok(Prepared {
        settings,
        spec,
        digest: report.digest.clone(),
        sbom: report.sbom.as_ref().map(|s| s.digest.clone()),
    })
}

/// What a deploy sends that changes something, in order, for a project
/// where the repository is missing (with `--create-repo`) and the
/// service's IAM policy is empty: what `--dry-run` prints. A real run
/// skips the repository when it exists and merges the invoker binding
/// into the policy it reads.
pub fn planned_requests(
    spec: &ServiceSpec,
    endpoints: &Endpoints,
    create_repo: bool,
) -> Vec<ApiRequest> {
    let s = &spec.settings;
    let mut out = Vec::new();
    if create_repo {
        out.push(endpoints.create_repository(s));
    }
    out.push(spec.patch_request(&endpoints.run));
    if s.allow_unauthenticated && s.public_access == PublicAccess::IamBinding {
        if let Some(p) = api::with_public_invoker(&Value::Null) {
            out.push(endpoints.set_iam_policy(s, p));
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
        return Ok(DeployOutcome::Emitted(emit::emit(&p.spec, f)?));
    }
    if opts.dry_run {
        return Ok(DeployOutcome::DryRun(planned_requests(
            &p.spec,
            &opts.endpoints,
            opts.create_repo,
        )));
    }
    let s = &p.settings;
    let (token, _) = crate::registry::google::access_token()?;
    let api = Client::new(token, opts.endpoints.clone());
    let e = &opts.endpoints;
    let wrap = |e: anyhow::Error| explained(e, s);

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

    let public = open_to_public(&api, e, s).map_err(wrap)?;
    Ok(DeployOutcome::Deployed(Box::new(DeployReport {
        service: s.service.clone(),
        name: s.service_name(),
        url: svc["uri"].as_str().map(str::to_string),
        revision: svc["latestReadyRevision"]
            .as_str()
            .map(|r| r.rsplit('/').next().unwrap_or(r).to_string()),
        image: p.spec.image.clone(),
        created: existing.is_none(),
        repository_created,
        public,
        push,
        cloudsql_sockets: s.cloudsql_sockets(),
        seconds: started.elapsed().as_secs_f64(),
    })))
}
