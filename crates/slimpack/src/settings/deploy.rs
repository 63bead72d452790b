//! `[tool.slimpack.deploy]` as written; `deploy::settings` resolves and
//! checks it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The deploy settings as written: every field optional. Flags arrive in
/// the same shape and are laid over the file's.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DeployConfig {
    pub project: Option<String>,
    pub region: Option<String>,
    pub service: Option<String>,
    /// Artifact Registry repository (default cloud-run-source-deploy).
    pub repo: Option<String>,
    /// Registry host (default REGION-docker.pkg.dev).
    pub registry: Option<String>,
    pub allow_unauthenticated: Option<bool>,
    /// `invoker-iam-disabled` (default) or `iam-binding`.
    pub public_access: Option<String>,
    pub memory: Option<String>,
    pub cpu: Option<String>,
    pub min_instances: Option<u32>,
    pub max_instances: Option<u32>,
    pub concurrency: Option<u32>,
    /// Request timeout in seconds.
    pub timeout: Option<u32>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// NAME = "SECRET[:VERSION]" from Secret Manager.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub service_account: Option<String>,
    pub startup_cpu_boost: Option<bool>,
    /// Tags pushed besides the digest (default: latest and the git commit).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Cloud SQL instances (`PROJECT:REGION:INSTANCE`) whose Unix sockets
    /// are mounted under /cloudsql.
    #[serde(default)]
    pub cloudsql: Vec<String>,
    /// Direct VPC egress: the VPC network and subnet, and which traffic
    /// goes through them (`all-traffic` or `private-ranges-only`).
    pub network: Option<String>,
    pub subnet: Option<String>,
    pub vpc_egress: Option<String>,
    /// "/PATH/FILE" = "SECRET[:VERSION]": a Secret Manager version mounted
    /// as a file.
    #[serde(default)]
    pub secret_files: BTreeMap<String, String>,
    /// An HTTP path Cloud Run probes for liveness, beside the startup probe.
    pub liveness_probe: Option<String>,
    /// A command run as a Cloud Run job with the new image before the
    /// service is updated (`python manage.py migrate`); the deploy stops
    /// when it fails.
    pub before: Option<String>,
}

impl DeployConfig {
    /// `over` on top of `self`: set scalars replace, maps and lists extend.
    pub fn overlay(mut self, over: DeployConfig) -> DeployConfig {
        macro_rules! take {
            ($($f:ident),*) => { $( if over.$f.is_some() { self.$f = over.$f; } )* };
        }
        take!(
            project,
            region,
            service,
            repo,
            registry,
            allow_unauthenticated,
            public_access,
            memory,
            cpu,
            min_instances,
            max_instances,
            concurrency,
            timeout,
            service_account,
            startup_cpu_boost,
            network,
            subnet,
            vpc_egress,
            liveness_probe,
            before
        );
        self.cloudsql.extend(over.cloudsql);
        self.secret_files.extend(over.secret_files);
        self.env.extend(over.env);
        self.secrets.extend(over.secrets);
        self.labels.extend(over.labels);
        self.tags.extend(over.tags);
        self
    }
}
