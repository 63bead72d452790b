//! Where and how to deploy: `[tool.slimpack.deploy]` (or `[deploy]` in
//! slimpack.toml) with the flags laid over it, checked against Cloud Run's
//! limits so that a mistake names the flag, not an API field path.

use anyhow::{anyhow, bail, Result};
use serde::Serialize;
use std::collections::BTreeMap;

/// The repository `gcloud run deploy --source` creates and uses.
pub const DEFAULT_REPO: &str = "cloud-run-source-deploy";

pub use crate::settings::DeployConfig;

/// An environment variable read from Secret Manager.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretRef {
    pub secret: String,
    pub version: String,
}

impl SecretRef {
    /// `SECRET[:VERSION]` (default `latest`), as `gcloud --set-secrets` takes it.
    pub fn parse(s: &str) -> Result<SecretRef> {
        let (secret, version) = s.split_once(':').unwrap_or((s, "latest"));
        let ok = |x: &str| {
            !x.is_empty()
                && x.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_/".contains(c))
        };
        if !ok(secret) || !ok(version) {
            bail!(
                "secret {s:?}: expected SECRET[:VERSION], e.g. db-password:latest or db-password:3"
            );
        }
        Ok(SecretRef {
            secret: secret.into(),
            version: version.into(),
        })
    }
}

/// How `--allow-unauthenticated` opens the service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PublicAccess {
    /// `invokerIamDisabled` on the service: Google's recommended way, and
    /// the one that works under domain-restricted sharing.
    #[default]
    InvokerIamDisabled,
    /// `roles/run.invoker` for `allUsers`, merged into the service's IAM
    /// policy (read, add, write back with its etag).
    IamBinding,
}

impl PublicAccess {
    pub fn parse(s: &str) -> Result<PublicAccess> {
        match s {
            "invoker-iam-disabled" => Ok(PublicAccess::InvokerIamDisabled),
            "iam-binding" => Ok(PublicAccess::IamBinding),
            _ => bail!("--public-access {s:?}: expected invoker-iam-disabled or iam-binding"),
        }
    }
}

/// Which traffic Direct VPC egress routes through the VPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VpcEgress {
    AllTraffic,
    PrivateRangesOnly,
}

impl VpcEgress {
    pub fn parse(s: &str) -> Result<VpcEgress> {
        match s {
            "all-traffic" => Ok(VpcEgress::AllTraffic),
            "private-ranges-only" => Ok(VpcEgress::PrivateRangesOnly),
            _ => bail!("--vpc-egress {s:?}: expected all-traffic or private-ranges-only"),
        }
    }

    /// The v2 API's enum value.
    pub fn api(self) -> &'static str {
        match self {
            VpcEgress::AllTraffic => "ALL_TRAFFIC",
            VpcEgress::PrivateRangesOnly => "PRIVATE_RANGES_ONLY",
        }
    }

    /// The Knative annotation's value.
    pub fn annotation(self) -> &'static str {
        match self {
            VpcEgress::AllTraffic => "all-traffic",
            VpcEgress::PrivateRangesOnly => "private-ranges-only",
        }
    }
}

/// Where Cloud Run mounts the Cloud SQL sockets (as gcloud's
/// `--add-cloudsql-instances` does): `/cloudsql/PROJECT:REGION:INSTANCE`.
pub const CLOUDSQL_DIR: &str = "/cloudsql";

/// Secret files grouped as Cloud Run mounts them: one secret per
/// directory, each file one of its versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretMount {
    pub dir: String,
    pub secret: String,
    /// (file name, version).
    pub files: Vec<(String, String)>,
}

/// What the user chose, resolved; `None` leaves Cloud Run's default.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DeploySettings {
    pub project: String,
    pub region: String,
    pub service: String,
    pub repo: String,
    pub registry: String,
    pub allow_unauthenticated: bool,
    pub public_access: PublicAccess,
    pub memory: Option<String>,
    pub cpu: Option<String>,
    pub min_instances: Option<u32>,
    pub max_instances: Option<u32>,
    pub concurrency: Option<u32>,
    /// Seconds.
    pub timeout: Option<u32>,
    pub env: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, SecretRef>,
    pub labels: BTreeMap<String, String>,
    pub service_account: Option<String>,
    /// Default on: Cloud Run gives the container more CPU while it starts.
    pub startup_cpu_boost: Option<bool>,
    pub tags: Vec<String>,
    /// `PROJECT:REGION:INSTANCE`, mounted under [`CLOUDSQL_DIR`].
    pub cloudsql: Vec<String>,
    pub network: Option<String>,
    pub subnet: Option<String>,
    pub vpc_egress: Option<VpcEgress>,
    /// Absolute file path → the secret version mounted there.
    pub secret_files: BTreeMap<String, SecretRef>,
    pub liveness_path: Option<String>,
    /// `before`, split as a shell would (no shell runs it).
    pub before: Option<Vec<String>>,
}

/// Where a value missing from flags and config may come from instead.
pub struct Fallbacks {
    /// The project's name, for the service name.
    pub app_name: String,
    /// `CLOUDSDK_CORE_PROJECT`, `GOOGLE_CLOUD_PROJECT`, or gcloud's config.
    pub project: Option<String>,
    /// `CLOUDSDK_RUN_REGION`, or gcloud's `run/region`.
    pub region: Option<String>,
    /// The git commit of the project, as a tag.
    pub commit: Option<String>,
}

impl Fallbacks {
    /// From the environment and, when it is installed, gcloud's config;
    /// only what `cfg` lacks is looked up (gcloud takes a second a call).
    pub fn from_environment(
        cfg: &DeployConfig,
        app_name: &str,
        commit: Option<String>,
    ) -> Fallbacks {
        let env = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
        };
        let gcloud = |key: &str| {
            crate::core::which("gcloud")?;
            let out = std::process::Command::new("gcloud")
                .args(["config", "get-value", key])
                .stderr(std::process::Stdio::null())
                .output()
                .ok()?;
            let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
            (out.status.success() && !v.is_empty() && v != "(unset)").then_some(v)
        };
        Fallbacks {
            app_name: app_name.into(),
            project: cfg
                .project
                .is_none()
                .then(|| {
                    env(&["CLOUDSDK_CORE_PROJECT", "GOOGLE_CLOUD_PROJECT"])
                        .or_else(|| gcloud("project"))
                })
                .flatten(),
            region: cfg
                .region
                .is_none()
                .then(|| env(&["CLOUDSDK_RUN_REGION"]).or_else(|| gcloud("run/region")))
                .flatten(),
            commit,
        }
    }
}

/// A Cloud Run service name from a project name: `my_app` → `my-app`.
fn cloud_run_name(app: &str) -> String {
    let mut s: String = app
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    s = s.trim_matches('-').chars().take(49).collect();
    s.trim_end_matches('-').to_string()
}

impl DeploySettings {
    /// The configuration resolved: fallbacks for what is missing, then the
    /// whole checked against Cloud Run's limits.
    pub fn resolve(cfg: &DeployConfig, fb: &Fallbacks) -> Result<DeploySettings> {
        let project = cfg.project.clone().or_else(|| fb.project.clone()).ok_or_else(|| {
            anyhow!("no Google Cloud project: pass --project PROJECT, set `project` under [tool.slimpack.deploy], or set CLOUDSDK_CORE_PROJECT")
        })?;
        let region = cfg.region.clone().or_else(|| fb.region.clone()).ok_or_else(|| {
            anyhow!("no region: pass --region (e.g. us-central1), set `region` under [tool.slimpack.deploy], or set CLOUDSDK_RUN_REGION")
        })?;
        let service = cfg
            .service
            .clone()
            .unwrap_or_else(|| cloud_run_name(&fb.app_name));
        let secrets = cfg
            .secrets
            .iter()
            .map(|(k, v)| Ok((k.clone(), SecretRef::parse(v)?)))
            .collect::<Result<_>>()?;
        let secret_files = cfg
            .secret_files
            .iter()
            .map(|(k, v)| Ok((k.clone(), SecretRef::parse(v)?)))
            .collect::<Result<_>>()?;
        let mut tags = cfg.tags.clone();
        if tags.is_empty() {
            tags.push("latest".into());
            tags.extend(fb.commit.iter().map(|c| c.chars().take(12).collect()));
        }
        let s = DeploySettings {
            registry: cfg
                .registry
                .clone()
                .unwrap_or_else(|| format!("{region}-docker.pkg.dev")),
            project,
            region,
            service,
            repo: cfg.repo.clone().unwrap_or_else(|| DEFAULT_REPO.into()),
            allow_unauthenticated: cfg.allow_unauthenticated.unwrap_or(false),
            public_access: cfg
                .public_access
                .as_deref()
                .map(PublicAccess::parse)
                .transpose()?
                .unwrap_or_default(),
            memory: cfg.memory.clone(),
            cpu: cfg.cpu.clone(),
            min_instances: cfg.min_instances,
            max_instances: cfg.max_instances,
            concurrency: cfg.concurrency,
            timeout: cfg.timeout,
            env: cfg.env.clone(),
            secrets,
            labels: cfg.labels.clone(),
            service_account: cfg.service_account.clone(),
            startup_cpu_boost: cfg.startup_cpu_boost,
            tags,
            cloudsql: cfg.cloudsql.clone(),
            network: cfg.network.clone(),
            subnet: cfg.subnet.clone(),
            vpc_egress: cfg
                .vpc_egress
                .as_deref()
                .map(VpcEgress::parse)
                .transpose()?,
            secret_files,
            liveness_path: cfg.liveness_probe.clone(),
            before: cfg
                .before
                .as_deref()
                .map(|b| {
                    let argv = shell_words::split(b)
                        .map_err(|e| anyhow!("before = {b:?}: {e}; quote it as a shell would"))?;
                    if argv.is_empty() {
                        bail!("before = \"\": name the command to run before the service is updated, e.g. \"python manage.py migrate\"");
                    }
                    Ok(argv)
                })
                .transpose()?,
        };
        s.check()?;
        Ok(s)
    }

    /// The secret files by directory, in path order.
    pub fn secret_mounts(&self) -> Vec<SecretMount> {
        let mut out: Vec<SecretMount> = Vec::new();
        for (path, r) in &self.secret_files {
            let (dir, file) = path.rsplit_once('/').unwrap_or(("", path));
            let dir = if dir.is_empty() { "/" } else { dir };
            match out.iter_mut().find(|m| m.dir == dir) {
                Some(m) => m.files.push((file.into(), r.version.clone())),
                None => out.push(SecretMount {
                    dir: dir.into(),
                    secret: r.secret.clone(),
                    files: vec![(file.into(), r.version.clone())],
                }),
            }
        }
        out
    }

    /// Where the app finds each Cloud SQL instance's socket.
    pub fn cloudsql_sockets(&self) -> Vec<String> {
        self.cloudsql
            .iter()
            .map(|i| format!("{CLOUDSQL_DIR}/{i}"))
            .collect()
    }

    /// `projects/P/locations/R`.
    pub fn parent(&self) -> String {
        format!("projects/{}/locations/{}", self.project, self.region)
    }

    /// `projects/P/locations/R/services/S`.
    pub fn service_name(&self) -> String {
        format!("{}/services/{}", self.parent(), self.service)
    }

    /// `projects/P/locations/R/repositories/REPO`.
    pub fn repository_name(&self) -> String {
        format!("{}/repositories/{}", self.parent(), self.repo)
    }

    /// `REGISTRY/PROJECT/REPO/SERVICE`: where the image is pushed.
    pub fn image_repository(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.registry, self.project, self.repo, self.service
        )
    }

    /// `REGISTRY/PROJECT/REPO/slimpack-cache`: a build cache (`--cache`)
    /// beside the images, so pushes mount its layers.
    pub fn cache_repository(&self) -> String {
        format!(
            "{}/{}/{}/slimpack-cache",
            self.registry, self.project, self.repo
        )
    }

    /// Cloud Run's limits.
    pub fn check(&self) -> Result<()> {
        let dns_label = |n: &str, max: usize| {
            !n.is_empty()
                && n.len() <= max
                && n.starts_with(|c: char| c.is_ascii_lowercase())
                && !n.ends_with('-')
                && n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        };
        if !dns_label(&self.service, 49) {
            bail!(
                "--service {:?}: Cloud Run service names are 1-49 lowercase letters, digits and hyphens, starting with a letter and not ending with a hyphen",
                self.service
            );
        }
        if !dns_label(&self.repo, 63) {
            bail!(
                "--repo {:?}: Artifact Registry repository names are lowercase letters, digits and hyphens, starting with a letter",
                self.repo
            );
        }
        // Domain-scoped IDs (example.com:my-project) are longer.
        let max = if self.project.contains(':') { 63 } else { 30 };
        let project_ok = self.project.len() >= 6
            && self.project.len() <= max
            && self.project.starts_with(|c: char| c.is_ascii_lowercase())
            && self.project.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == ':' || c == '.'
            });
        if !project_ok {
            bail!(
                "--project {:?}: expected a project ID such as my-project-123 (6-30 lowercase letters, digits, hyphens)",
                self.project
            );
        }
        let region_ok = self.region.split('-').count() == 2
            && self
                .region
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !region_ok {
            bail!(
                "--region {:?}: expected a Cloud Run region such as us-central1 or europe-west1 (`gcloud run regions list`)",
                self.region
            );
        }
        for k in self.env.keys().chain(self.secrets.keys()) {
            if super::RESERVED_ENV.contains(&k.as_str()) {
                bail!("--env {k}: Cloud Run sets {k} itself; it cannot be set");
            }
            if k.is_empty() || k.contains('=') {
                bail!("--env {k:?}: not a variable name");
            }
        }
        if let Some(k) = self.env.keys().find(|k| self.secrets.contains_key(*k)) {
            bail!("{k} is given both as --env and as --secret; keep one");
        }
        if let Some(m) = &self.memory {
            let digits = m.trim_end_matches(|c: char| c.is_ascii_alphabetic());
            let unit = &m[digits.len()..];
            if digits.parse::<u64>().is_err() || !["Mi", "Gi", "M", "G"].contains(&unit) {
                bail!("--memory {m:?}: expected a size like 512Mi or 2Gi");
            }
        }
        if let Some(c) = &self.cpu {
            let valid = c.parse::<f64>().is_ok_and(|v| v > 0.0)
                || c.strip_suffix('m')
                    .is_some_and(|v| v.parse::<u32>().is_ok_and(|v| v > 0));
            if !valid {
                bail!("--cpu {c:?}: expected a number of CPUs (1, 2, 0.5) or millicores (500m)");
            }
        }
        if let (Some(a), Some(b)) = (self.min_instances, self.max_instances) {
            if a > b {
                bail!("--min-instances {a} is above --max-instances {b}");
            }
        }
        if let Some(c) = self.concurrency {
            if !(1..=1000).contains(&c) {
                bail!("--concurrency {c}: Cloud Run allows 1 to 1000 requests per instance");
            }
        }
        if let Some(t) = self.timeout {
            if !(1..=3600).contains(&t) {
                bail!("--timeout {t}: Cloud Run allows 1 to 3600 seconds");
            }
        }
        for (k, v) in &self.labels {
            let ok = |s: &str, max: usize| {
                s.len() <= max
                    && s.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'
                    })
            };
            if k.is_empty()
                || !k.starts_with(|c: char| c.is_ascii_lowercase())
                || !ok(k, 63)
                || !ok(v, 63)
            {
                bail!("--label {k}={v}: Google Cloud labels are lowercase letters, digits, - and _ (keys start with a letter, up to 63 each)");
            }
        }
        for t in &self.tags {
            if !crate::registry::reference::valid_tag(t) {
                bail!("--tag {t:?}: not a valid image tag (letters, digits, _ . -; up to 128)");
            }
        }
        self.check_connections()?;
        self.check_secret_files()
    }

    /// Cloud SQL names, the VPC, the liveness path.
    fn check_connections(&self) -> Result<()> {
        for i in &self.cloudsql {
            let parts: Vec<&str> = i.split(':').collect();
            let ok = (3..=4).contains(&parts.len())
                && parts.iter().all(|p| {
                    !p.is_empty()
                        && p.chars().all(|c| {
                            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'
                        })
                });
            if !ok {
                bail!("--cloudsql {i:?}: expected the instance's connection name PROJECT:REGION:INSTANCE (`gcloud sql instances describe NAME --format='value(connectionName)'`)");
            }
        }
        for (flag, v) in [("--network", &self.network), ("--subnet", &self.subnet)] {
            if let Some(v) = v {
                if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    bail!("{flag} {v:?}: expected a VPC network or subnet name (or its full resource name)");
                }
            }
        }
        if self.vpc_egress.is_some() && self.network.is_none() && self.subnet.is_none() {
            bail!("--vpc-egress needs --network or --subnet: Direct VPC egress goes through one");
        }
        if let Some(p) = &self.liveness_path {
            if !p.starts_with('/') || p.chars().any(|c| c.is_whitespace() || c.is_control()) {
                bail!("--liveness-probe {p:?}: expected an HTTP path such as /health");
            }
        }
        Ok(())
    }

    /// Cloud Run mounts one secret per directory, never at `/` or over the
    /// Cloud SQL sockets or another mount.
    fn check_secret_files(&self) -> Result<()> {
        for path in self.secret_files.keys() {
            let (dir, file) = path.rsplit_once('/').unwrap_or(("", ""));
            if !path.starts_with('/')
                || file.is_empty()
                || path.split('/').any(|p| p == ".." || p == ".")
            {
                bail!("--secret-file {path}: expected an absolute file path such as /etc/secrets/db-password");
            }
            if dir.is_empty()
                || [
                    "/dev",
                    "/proc",
                    "/sys",
                    "/etc",
                    "/usr",
                    "/opt",
                    "/tmp",
                    "/app",
                    "/opt/venv",
                ]
                .contains(&dir)
            {
                bail!("--secret-file {path}: Cloud Run mounts a secret over its whole directory ({}); put it in a directory of its own, e.g. /secrets/{file}", if dir.is_empty() { "/" } else { dir });
            }
            if !self.cloudsql.is_empty()
                && (dir == CLOUDSQL_DIR || dir.starts_with(&format!("{CLOUDSQL_DIR}/")))
            {
                bail!("--secret-file {path}: {CLOUDSQL_DIR} holds the Cloud SQL sockets");
            }
        }
        let mounts = self.secret_mounts();
        for m in &mounts {
            let r = &self.secret_files;
            if let Some((p, other)) = r.iter().find(|(p, o)| {
                p.starts_with(&format!("{}/", m.dir))
                    && !p[m.dir.len() + 1..].contains('/')
                    && o.secret != m.secret
            }) {
                bail!("--secret-file {p}={}: {} already holds secret {}; Cloud Run mounts one secret per directory", other.secret, m.dir, m.secret);
            }
            if let Some(o) = mounts
                .iter()
                .find(|o| o.dir.starts_with(&format!("{}/", m.dir)))
            {
                bail!("--secret-file: {} is inside {}, another secret's mount; use directories side by side", o.dir, m.dir);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fallbacks() -> Fallbacks {
        Fallbacks {
            app_name: "My_App".into(),
            project: None,
            region: None,
            commit: Some("0123456789abcdef0123".into()),
        }
    }

    fn base() -> DeployConfig {
        DeployConfig {
            project: Some("my-project".into()),
            region: Some("us-central1".into()),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_come_from_the_project_and_gclouds_conventions() {
        let s = DeploySettings::resolve(&base(), &fallbacks()).unwrap();
        assert_eq!(s.service, "my-app");
        assert_eq!(s.repo, DEFAULT_REPO);
        assert_eq!(
            s.image_repository(),
            "us-central1-docker.pkg.dev/my-project/cloud-run-source-deploy/my-app"
        );
        assert_eq!(s.tags, vec!["latest", "0123456789ab"]);
        assert_eq!(s.public_access, PublicAccess::InvokerIamDisabled);
        let e = DeploySettings::resolve(&DeployConfig::default(), &fallbacks()).unwrap_err();
        assert!(e.to_string().contains("--project"), "{e}");
        let mut fb = fallbacks();
        fb.project = Some("env-project".into());
        let e = DeploySettings::resolve(&DeployConfig::default(), &fb).unwrap_err();
        assert!(e.to_string().contains("--region"), "{e}");
        fb.region = Some("europe-west1".into());
        let s = DeploySettings::resolve(&DeployConfig::default(), &fb).unwrap();
        assert_eq!(
            s.service_name(),
            "projects/env-project/locations/europe-west1/services/my-app"
        );
    }

    #[test]
    fn flags_lay_over_the_file() {
        let file: DeployConfig = toml::from_str(
            "service = 'api'\nmemory = '1Gi'\nmax-instances = 4\n[env]\nMODE = 'prod'\n[secrets]\nDB = 'db-pass:2'\n",
        )
        .unwrap();
        let flags = DeployConfig {
            memory: Some("512Mi".into()),
            env: [("EXTRA".to_string(), "1".to_string())].into(),
            ..base()
        };
        let s = DeploySettings::resolve(&file.overlay(flags), &fallbacks()).unwrap();
        assert_eq!(s.service, "api");
        assert_eq!(s.memory.as_deref(), Some("512Mi"));
        assert_eq!(s.max_instances, Some(4));
        assert_eq!(s.env.len(), 2);
        assert_eq!(s.secrets["DB"].version, "2");
        let e = toml::from_str::<DeployConfig>("memroy = '1Gi'\n").unwrap_err();
        assert!(e.to_string().contains("memroy"), "{e}");
    }

    #[test]
    fn bad_settings_name_the_flag() {
        let with = |f: &dyn Fn(&mut DeployConfig)| {
            let mut c = base();
            f(&mut c);
            DeploySettings::resolve(&c, &fallbacks())
                .unwrap_err()
                .to_string()
        };
        assert!(with(&|c| c.service = Some("My_App".into())).contains("--service"));
        assert!(with(&|c| c.repo = Some("Backend".into())).contains("--repo"));
        assert!(with(&|c| c.project = Some("x".into())).contains("--project"));
        assert!(with(&|c| c.region = Some("us central".into())).contains("--region"));
        assert!(with(&|c| {
            c.env.insert("PORT".into(), "1".into());
        })
        .contains("Cloud Run sets PORT"));
        assert!(with(&|c| {
            c.env.insert("DB".into(), "1".into());
            c.secrets.insert("DB".into(), "db".into());
        })
        .contains("both"));
        assert!(with(&|c| c.memory = Some("lots".into())).contains("--memory"));
        assert!(with(&|c| c.cpu = Some("-1".into())).contains("--cpu"));
        assert!(with(&|c| {
            c.min_instances = Some(3);
            c.max_instances = Some(1);
        })
        .contains("--min-instances 3"));
        assert!(with(&|c| c.concurrency = Some(0)).contains("--concurrency"));
        assert!(with(&|c| c.timeout = Some(7200)).contains("--timeout"));
        assert!(with(&|c| {
            c.labels.insert("Team".into(), "web".into());
        })
        .contains("--label"));
        assert!(with(&|c| c.tags = vec!["v1:2".into()]).contains("--tag"));
        assert!(with(&|c| c.public_access = Some("open".into())).contains("--public-access"));
        assert!(with(&|c| {
            c.secrets.insert("DB".into(), "db:pass:word".into());
        })
        .contains("SECRET[:VERSION]"));
        assert_eq!(SecretRef::parse("db").unwrap().version, "latest");
        assert!(with(&|c| c.cloudsql = vec!["my-db".into()]).contains("PROJECT:REGION:INSTANCE"));
        assert!(
            with(&|c| c.vpc_egress = Some("all-traffic".into())).contains("--network or --subnet")
        );
        assert!(with(&|c| c.vpc_egress = Some("everything".into())).contains("--vpc-egress"));
        assert!(with(&|c| c.liveness_probe = Some("health".into())).contains("--liveness-probe"));
        let file = |path: &str, secret: &str| (path.to_string(), secret.to_string());
        assert!(with(&|c| c.secret_files = [file("/password", "db")].into())
            .contains("directory of its own"));
        assert!(
            with(&|c| c.secret_files = [file("/etc/password", "db")].into())
                .contains("directory of its own")
        );
        assert!(
            with(&|c| c.secret_files = [file("secrets/password", "db")].into())
                .contains("absolute")
        );
        assert!(
            with(&|c| c.secret_files = [file("/s/a", "one"), file("/s/b", "two")].into())
                .contains("one secret per directory")
        );
        assert!(
            with(&|c| c.secret_files = [file("/s/a", "one"), file("/s/x/b", "two")].into())
                .contains("inside /s")
        );
        assert!(with(&|c| {
            c.cloudsql = vec!["p-123456:us-central1:db".into()];
            c.secret_files = [file("/cloudsql/pw", "db")].into();
        })
        .contains("Cloud SQL sockets"));
        let mut ok = base();
        ok.cloudsql = vec!["example.com:my-project:us-central1:db".into()];
        ok.secret_files = [
            file("/s/a", "one:2"),
            file("/s/b", "one:3"),
            file("/t/c", "two"),
        ]
        .into();
        let s = DeploySettings::resolve(&ok, &fallbacks()).unwrap();
        assert_eq!(s.secret_mounts().len(), 2);
        assert_eq!(
            s.secret_mounts()[0].files,
            vec![
                ("a".to_string(), "2".to_string()),
                ("b".to_string(), "3".to_string())
            ]
        );
        assert_eq!(
            s.cloudsql_sockets(),
            vec!["/cloudsql/example.com:my-project:us-central1:db"]
        );
        assert_eq!(cloud_run_name("--Weird__Name!--"), "weird--name");
    }
}
