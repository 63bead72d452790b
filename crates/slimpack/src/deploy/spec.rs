//! The service spec: what the plan knows (port, health path, name), laid
//! under the deploy settings (flags and `[tool.slimpack.deploy]`), turned into
//! the body of `PATCH v2/projects/P/locations/R/services/S?allowMissing=true`.

use anyhow::{bail, Result};
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

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

/// What the user chose; `None` leaves Cloud Run's default.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DeploySettings {
    pub project: String,
    pub region: String,
    pub service: String,
    pub allow_unauthenticated: bool,
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
}

/// The service to deploy: the settings, and what the build decided.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceSpec {
    pub settings: DeploySettings,
    /// By digest: `REGION-docker.pkg.dev/P/REPO/IMAGE@sha256:...`.
    pub image: String,
    pub port: u16,
    pub health_path: Option<String>,
}

/// One API call, as `--dry-run` prints it (one JSON object per line).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiRequest {
    pub method: String,
    pub url: String,
    pub body: Value,
}

/// Names Cloud Run reserves for itself in the container's environment.
const RESERVED_ENV: &[&str] = &["PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION"];

/// Cloud Run's limits, checked before a request is sent so that the error
/// names the flag rather than a field path.
fn check(s: &DeploySettings) -> Result<()> {
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.len() <= 49
            && n.starts_with(|c: char| c.is_ascii_lowercase())
            && !n.ends_with('-')
            && n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    if !name_ok(&s.service) {
        bail!(
            "--service {:?}: Cloud Run service names are 1-49 lowercase letters, digits and hyphens, starting with a letter and not ending with a hyphen",
            s.service
        );
    }
    for k in s.env.keys().chain(s.secrets.keys()) {
        if RESERVED_ENV.contains(&k.as_str()) {
            bail!("--env {k}: Cloud Run sets {k} itself; it cannot be set");
        }
        if k.is_empty() || k.contains('=') {
            bail!("--env {k:?}: not a variable name");
        }
    }
    if let Some(k) = s.env.keys().find(|k| s.secrets.contains_key(*k)) {
        bail!("{k} is given both as --env and as --secret; keep one");
    }
    if let Some(m) = &s.memory {
        let digits = m.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        let unit = &m[digits.len()..];
        if digits.parse::<u64>().is_err() || !["Mi", "Gi", "M", "G"].contains(&unit) {
            bail!("--memory {m:?}: expected a size like 512Mi or 2Gi");
        }
    }
    if let Some(c) = &s.cpu {
        let valid = c.parse::<f64>().is_ok_and(|v| v > 0.0)
            || c.strip_suffix('m')
                .is_some_and(|v| v.parse::<u32>().is_ok_and(|v| v > 0));
        if !valid {
            bail!("--cpu {c:?}: expected a number of CPUs (1, 2, 0.5) or millicores (500m)");
        }
    }
    if let (Some(a), Some(b)) = (s.min_instances, s.max_instances) {
        if a > b {
            bail!("--min-instances {a} is above --max-instances {b}");
        }
    }
    if let Some(c) = s.concurrency {
        if !(1..=1000).contains(&c) {
            bail!("--concurrency {c}: Cloud Run allows 1 to 1000 requests per instance");
        }
    }
    if let Some(t) = s.timeout {
        if !(1..=3600).contains(&t) {
            bail!("--timeout {t}: Cloud Run allows 1 to 3600 seconds");
        }
    }
    Ok(())
}

impl ServiceSpec {
    /// The spec for `image` (by digest) from the plan's port and health
    /// path, under `settings`.
    pub fn new(
        settings: &DeploySettings,
        image: &str,
        port: u16,
        health_path: Option<&str>,
    ) -> Result<ServiceSpec> {
        check(settings)?;
        if !image.contains("@sha256:") {
            bail!("{image}: Cloud Run is deployed by digest (IMAGE@sha256:...), never by a tag that can move");
        }
        Ok(ServiceSpec {
            settings: settings.clone(),
            image: image.into(),
            port,
            health_path: health_path.map(str::to_string),
        })
    }

    /// The `Service` body of the Admin API v2 (only fields a client may
    /// set; the name travels in the URL).
    pub fn to_v2(&self) -> Value {
        let s = &self.settings;
        let mut env: Vec<Value> = s
            .env
            .iter()
            .map(|(k, v)| json!({"name": k, "value": v}))
            .collect();
        env.extend(s.secrets.iter().map(|(k, r)| {
            json!({"name": k, "valueSource": {"secretKeyRef": {"secret": r.secret, "version": r.version}}})
        }));
        let mut limits = Map::new();
        if let Some(c) = &s.cpu {
            limits.insert("cpu".into(), json!(c));
        }
        if let Some(m) = &s.memory {
            limits.insert("memory".into(), json!(m));
        }
        let mut resources = json!({"startupCpuBoost": s.startup_cpu_boost.unwrap_or(true)});
        if !limits.is_empty() {
            resources["limits"] = Value::Object(limits);
        }
        // A startup probe on the health path the source serves, else on the
        // port: traffic only once the app answers.
        let mut startup = match &self.health_path {
            Some(p) => json!({"httpGet": {"path": p, "port": self.port}}),
            None => json!({"tcpSocket": {"port": self.port}}),
        };
        startup["periodSeconds"] = json!(2);
        startup["timeoutSeconds"] = json!(1);
        startup["failureThreshold"] = json!(30);
        let mut container = json!({
            "image": self.image,
            "ports": [{"name": "http1", "containerPort": self.port}],
            "resources": resources,
            "startupProbe": startup,
        });
        if !env.is_empty() {
            container["env"] = Value::Array(env);
        }
        let mut template = json!({"containers": [container]});
        let mut scaling = Map::new();
        if let Some(n) = s.min_instances {
            scaling.insert("minInstanceCount".into(), json!(n));
        }
        if let Some(n) = s.max_instances {
            scaling.insert("maxInstanceCount".into(), json!(n));
        }
        if !scaling.is_empty() {
            template["scaling"] = Value::Object(scaling);
        }
        if let Some(c) = s.concurrency {
            template["maxInstanceRequestConcurrency"] = json!(c);
        }
        if let Some(t) = s.timeout {
            template["timeout"] = json!(format!("{t}s"));
        }
        if let Some(sa) = &s.service_account {
            template["serviceAccount"] = json!(sa);
        }
        let mut body = json!({
            "ingress": "INGRESS_TRAFFIC_ALL",
            "template": template,
        });
        if s.allow_unauthenticated {
            body["invokerIamDisabled"] = json!(true);
        }
        if !s.labels.is_empty() {
            body["labels"] = json!(s.labels);
        }
        body
    }

    /// Create or update in one call: `allowMissing=true` creates the service
    /// when it does not exist.
    pub fn patch_request(&self, api_base: &str) -> ApiRequest {
        let s = &self.settings;
        ApiRequest {
            method: "PATCH".into(),
            url: format!(
                "{}/v2/projects/{}/locations/{}/services/{}?allowMissing=true",
                api_base.trim_end_matches('/'),
                s.project,
                s.region,
                s.service
            ),
            body: self.to_v2(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> DeploySettings {
        DeploySettings {
            project: "my-project".into(),
            region: "us-central1".into(),
            service: "my-app".into(),
            ..Default::default()
        }
    }

    const IMAGE: &str = "us-central1-docker.pkg.dev/my-project/backend/my-app@sha256:0000000000000000000000000000000000000000000000000000000000000000";

    /// The discovery document's schemas, for checking bodies.
    fn discovery() -> Value {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/cloudrun/run-v2-discovery.json"
        );
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    /// Problems of `v` against the discovery schema `schema`: unknown
    /// fields, output-only fields, wrong JSON types, values outside an enum.
    fn validate(doc: &Value, v: &Value, schema: &Value, at: &str, out: &mut Vec<String>) {
        let schema = match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => &doc["schemas"][r],
            None => schema,
        };
        if schema.get("readOnly") == Some(&Value::Bool(true))
            || schema["description"]
                .as_str()
                .is_some_and(|d| d.starts_with("Output only."))
        {
            out.push(format!("{at}: output only"));
        }
        let ty = schema["type"].as_str().unwrap_or("object");
        match (ty, v) {
            ("object", Value::Object(m)) => {
                if let Some(props) = schema["properties"].as_object() {
                    for (k, x) in m {
                        match props.get(k) {
                            Some(p) => validate(doc, x, p, &format!("{at}.{k}"), out),
                            None => out.push(format!("{at}.{k}: no such field")),
                        }
                    }
                } else if let Some(ap) = schema.get("additionalProperties") {
                    for (k, x) in m {
                        validate(doc, x, ap, &format!("{at}.{k}"), out);
                    }
                }
            }
            ("array", Value::Array(items)) => {
                for (i, x) in items.iter().enumerate() {
                    validate(doc, x, &schema["items"], &format!("{at}[{i}]"), out);
                }
            }
            ("string", Value::String(s)) => {
                if let Some(e) = schema["enum"].as_array() {
                    if !e.iter().any(|x| x == s) {
                        out.push(format!("{at}: {s:?} is not one of {e:?}"));
                    }
                }
                if schema["format"] == "google-duration"
                    && !(s.ends_with('s') && s[..s.len() - 1].parse::<f64>().is_ok())
                {
                    out.push(format!("{at}: {s:?} is not a duration"));
                }
            }
            // int64 travels as a string in Google's JSON; int32 as a number.
            ("integer", Value::Number(n)) if schema["format"] != "int64" => {
                if !n.is_i64() {
                    out.push(format!("{at}: {n} is not an integer"));
                }
            }
            ("number", Value::Number(_)) | ("boolean", Value::Bool(_)) | ("any", _) => {}
            _ => out.push(format!("{at}: {v} is not of type {ty}")),
        }
    }

    fn problems(body: &Value) -> Vec<String> {
        let doc = discovery();
        let mut out = Vec::new();
        let schema = json!({"$ref": "GoogleCloudRunV2Service"});
        validate(&doc, body, &schema, "Service", &mut out);
        out
    }

    #[test]
    fn the_validator_catches_what_the_api_would_reject() {
        let bad = json!({
            "uri": "https://x",
            "ingress": "EVERYONE",
            "template": {"timeout": "5 minutes", "containers": [{"image": 1, "colour": "red"}],
                         "scaling": {"maxInstanceCount": "ten"}},
        });
        let p = problems(&bad);
        for needle in [
            "Service.uri: output only",
            "Service.ingress: \"EVERYONE\"",
            "Service.template.timeout: \"5 minutes\" is not a duration",
            "Service.template.containers[0].image: 1 is not of type string",
            "Service.template.containers[0].colour: no such field",
            "Service.template.scaling.maxInstanceCount: \"ten\" is not of type integer",
        ] {
            assert!(
                p.iter().any(|x| x.starts_with(needle)),
                "{needle} not in {p:#?}"
            );
        }
    }

    #[test]
    fn the_smallest_and_the_fullest_requests_match_the_discovery_document() {
        let small = ServiceSpec::new(&settings(), IMAGE, 8080, None).unwrap();
        let body = small.to_v2();
        assert_eq!(problems(&body), Vec::<String>::new());
        assert_eq!(
            body["template"]["containers"][0]["startupProbe"]["tcpSocket"]["port"],
            8080
        );
        assert!(body.get("invokerIamDisabled").is_none());

        let mut s = settings();
        s.allow_unauthenticated = true;
        s.memory = Some("512Mi".into());
        s.cpu = Some("1".into());
        s.min_instances = Some(0);
        s.max_instances = Some(10);
        s.concurrency = Some(80);
        s.timeout = Some(300);
        s.env.insert("APP_MODE".into(), "production".into());
        s.secrets.insert(
            "DB_PASSWORD".into(),
            SecretRef::parse("db-password:3").unwrap(),
        );
        s.labels.insert("team".into(), "web".into());
        s.service_account = Some("app@my-project.iam.gserviceaccount.com".into());
        let full = ServiceSpec::new(&s, IMAGE, 8080, Some("/health")).unwrap();
        let body = full.to_v2();
        assert_eq!(problems(&body), Vec::<String>::new(), "{body:#}");
        let c = &body["template"]["containers"][0];
        assert_eq!(c["image"], IMAGE);
        assert_eq!(c["startupProbe"]["httpGet"]["path"], "/health");
        assert_eq!(c["resources"]["limits"]["memory"], "512Mi");
        assert_eq!(c["env"][1]["valueSource"]["secretKeyRef"]["version"], "3");
        assert_eq!(body["template"]["timeout"], "300s");
        assert_eq!(body["invokerIamDisabled"], true);

        let r = full.patch_request("https://run.googleapis.com/");
        assert_eq!(r.method, "PATCH");
        assert_eq!(
            r.url,
            "https://run.googleapis.com/v2/projects/my-project/locations/us-central1/services/my-app?allowMissing=true"
        );
        // The URL's path is the discovery document's patch path.
        let doc = discovery();
        let patch = &doc["resources"]["projects"]["resources"]["locations"]["resources"]
            ["services"]["methods"]["patch"];
        assert_eq!(patch["httpMethod"], "PATCH");
        assert_eq!(patch["path"], "v2/{+name}");
        assert!(patch["parameters"]["allowMissing"].is_object());
        // Stable: the same spec, the same bytes (what --dry-run prints).
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            serde_json::to_string(&full.patch_request("https://run.googleapis.com")).unwrap()
        );
    }

    #[test]
    fn bad_settings_name_the_flag() {
        let with = |f: &dyn Fn(&mut DeploySettings)| {
            let mut s = settings();
            f(&mut s);
            ServiceSpec::new(&s, IMAGE, 8080, None)
                .unwrap_err()
                .to_string()
        };
        assert!(with(&|s| s.service = "My_App".into()).contains("--service"));
        assert!(with(&|s| {
            s.env.insert("PORT".into(), "1".into());
        })
        .contains("Cloud Run sets PORT"));
        assert!(with(&|s| s.memory = Some("lots".into())).contains("--memory"));
        assert!(with(&|s| s.cpu = Some("-1".into())).contains("--cpu"));
        assert!(with(&|s| {
            s.min_instances = Some(3);
            s.max_instances = Some(1);
        })
        .contains("--min-instances 3"));
        assert!(with(&|s| s.timeout = Some(7200)).contains("--timeout"));
        let tag = ServiceSpec::new(&settings(), "r/p/i:latest", 8080, None).unwrap_err();
        assert!(tag.to_string().contains("by digest"), "{tag}");
        assert!(SecretRef::parse("db:pass:word").is_err());
        assert_eq!(SecretRef::parse("db").unwrap().version, "latest");
    }
}
