//! The service spec: what the plan knows (port, health path, name), laid
//! under the deploy settings, in the two shapes Cloud Run takes: the Admin
//! API v2 `Service` (what `slimpack deploy` sends) and the Knative
//! `serving.knative.dev/v1` Service (what `gcloud run services replace`
//! reads). Both come from the same fields here, so they cannot drift.

use super::settings::{DeploySettings, PublicAccess, SecretMount, CLOUDSQL_DIR};
use anyhow::{bail, Result};
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

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

/// Startup probe timing: every 2 s for up to a minute, so a slow first
/// import does not fail the revision while a broken one fails in time.
const PROBE_PERIOD: u32 = 2;
const PROBE_TIMEOUT: u32 = 1;
const PROBE_FAILURES: u32 = 30;

impl ServiceSpec {
    /// The spec for `image` (by digest) from the plan's port and health
    /// path, under `settings`.
    pub fn new(
        settings: &DeploySettings,
        image: &str,
        port: u16,
        health_path: Option<&str>,
    ) -> Result<ServiceSpec> {
        settings.check()?;
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

    /// Public through the service's own flag (not an IAM binding).
    pub fn invoker_iam_disabled(&self) -> bool {
        self.settings.allow_unauthenticated
            && self.settings.public_access == PublicAccess::InvokerIamDisabled
    }

    /// A startup probe on the health path the source serves, else on the
    /// port: traffic only once the app answers. Same fields in both APIs.
    fn startup_probe(&self) -> Value {
        let mut probe = match &self.health_path {
            Some(p) => json!({"httpGet": {"path": p, "port": self.port}}),
            None => json!({"tcpSocket": {"port": self.port}}),
        };
        probe["periodSeconds"] = json!(PROBE_PERIOD);
        probe["timeoutSeconds"] = json!(PROBE_TIMEOUT);
        probe["failureThreshold"] = json!(PROBE_FAILURES);
        probe
    }

    /// A liveness probe on `--liveness-probe PATH`, at Cloud Run's default
    /// timing for HTTP probes (every 10 s, 1 s timeout, 3 failures).
    fn liveness_probe(&self) -> Option<Value> {
        self.settings.liveness_path.as_ref().map(|p| {
            json!({"httpGet": {"path": p, "port": self.port},
                   "periodSeconds": 10, "timeoutSeconds": 1, "failureThreshold": 3})
        })
    }

    /// The secret files' volumes (each made by `source` in its API's
    /// shape) and their mounts, one per directory.
    fn secret_volumes(&self, source: impl Fn(&SecretMount) -> Value) -> (Vec<Value>, Vec<Value>) {
        self.settings
            .secret_mounts()
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let name = format!("secret-{}", i + 1);
                (
                    json!({"name": name, "secret": source(m)}),
                    json!({"name": name, "mountPath": m.dir}),
                )
            })
            .unzip()
    }

    /// Direct VPC egress's interface, in the same shape in both APIs (the
    /// Knative annotation holds it as JSON).
    fn network_interface(&self) -> Option<Value> {
        let s = &self.settings;
        if s.network.is_none() && s.subnet.is_none() {
            return None;
        }
        let mut interface = Map::new();
        if let Some(n) = &s.network {
            interface.insert("network".into(), json!(n));
        }
        if let Some(n) = &s.subnet {
            interface.insert("subnetwork".into(), json!(n));
        }
        Some(Value::Object(interface))
    }

    fn limits(&self) -> Option<Value> {
        let s = &self.settings;
        let mut limits = Map::new();
        if let Some(c) = &s.cpu {
            limits.insert("cpu".into(), json!(c));
        }
        if let Some(m) = &s.memory {
            limits.insert("memory".into(), json!(m));
        }
        (!limits.is_empty()).then_some(Value::Object(limits))
    }

    /// Plain variables, then Secret Manager references, each as `secret`
    /// makes it from (name, secret, version).
    fn env(&self, secret: impl Fn(&str, &str, &str) -> Value) -> Vec<Value> {
        let s = &self.settings;
        s.env
            .iter()
            .map(|(k, v)| json!({"name": k, "value": v}))
            .chain(
                s.secrets
                    .iter()
                    .map(|(k, r)| secret(k, &r.secret, &r.version)),
            )
            .collect()
    }

    /// The `Service` body of the Admin API v2 (only fields a client may
    /// set; the name travels in the URL).
    pub fn to_v2(&self) -> Value {
        let s = &self.settings;
        let mut resources = json!({"startupCpuBoost": s.startup_cpu_boost.unwrap_or(true)});
        if let Some(l) = self.limits() {
            resources["limits"] = l;
        }
        let mut container = json!({
            "image": self.image,
            "ports": [{"name": "http1", "containerPort": self.port}],
            "resources": resources,
            "startupProbe": self.startup_probe(),
        });
        let env = self.env(|name, secret, version| {
            json!({"name": name, "valueSource": {"secretKeyRef": {"secret": secret, "version": version}}})
        });
        if !env.is_empty() {
            container["env"] = Value::Array(env);
        }
        if let Some(p) = self.liveness_probe() {
            container["livenessProbe"] = p;
        }
        let (mut volumes, mut mounts) = self.secret_volumes(|m| {
            let items: Vec<Value> = m
                .files
                .iter()
                .map(|(f, v)| json!({"path": f, "version": v}))
                .collect();
            json!({"secret": m.secret, "items": items})
        });
        if !s.cloudsql.is_empty() {
            volumes.insert(
                0,
                json!({"name": "cloudsql", "cloudSqlInstance": {"instances": s.cloudsql}}),
            );
            mounts.insert(0, json!({"name": "cloudsql", "mountPath": CLOUDSQL_DIR}));
        }
        if !mounts.is_empty() {
            container["volumeMounts"] = Value::Array(mounts);
        }
        let mut template = json!({"containers": [container]});
        if !volumes.is_empty() {
            template["volumes"] = Value::Array(volumes);
        }
        if let Some(interface) = self.network_interface() {
            let mut vpc = json!({"networkInterfaces": [interface]});
            if let Some(e) = s.vpc_egress {
                vpc["egress"] = json!(e.api());
            }
            template["vpcAccess"] = vpc;
        }
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
        if self.invoker_iam_disabled() {
            body["invokerIamDisabled"] = json!(true);
        }
        if !s.labels.is_empty() {
            body["labels"] = json!(s.labels);
        }
        body
    }

    /// The same service as a Knative `serving.knative.dev/v1` Service, with
    /// only the annotations Cloud Run documents for its YAML.
    pub fn to_knative(&self) -> Value {
        let s = &self.settings;
        let mut labels = s.labels.clone();
        labels.insert("cloud.googleapis.com/location".into(), s.region.clone());
        let mut annotations =
            BTreeMap::from([("run.googleapis.com/ingress".to_string(), "all".to_string())]);
        if self.invoker_iam_disabled() {
            annotations.insert(
                "run.googleapis.com/invoker-iam-disabled".into(),
                "true".into(),
            );
        }
        let mut revision = BTreeMap::from([(
            "run.googleapis.com/startup-cpu-boost".to_string(),
            s.startup_cpu_boost.unwrap_or(true).to_string(),
        )]);
        if let Some(n) = s.min_instances {
            revision.insert("autoscaling.knative.dev/minScale".into(), n.to_string());
        }
        if let Some(n) = s.max_instances {
            revision.insert("autoscaling.knative.dev/maxScale".into(), n.to_string());
        }
        if !s.cloudsql.is_empty() {
            revision.insert(
                "run.googleapis.com/cloudsql-instances".into(),
                s.cloudsql.join(","),
            );
        }
        if let Some(interface) = self.network_interface() {
            revision.insert(
                "run.googleapis.com/network-interfaces".into(),
                Value::Array(vec![interface]).to_string(),
            );
            if let Some(e) = s.vpc_egress {
                revision.insert(
                    "run.googleapis.com/vpc-access-egress".into(),
                    e.annotation().into(),
                );
            }
        }
        let mut container = json!({
            "image": self.image,
            "ports": [{"name": "http1", "containerPort": self.port}],
            "startupProbe": self.startup_probe(),
        });
        if let Some(l) = self.limits() {
            container["resources"] = json!({"limits": l});
        }
        let env = self.env(|name, secret, version| {
            json!({"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": version}}})
        });
        if !env.is_empty() {
            container["env"] = Value::Array(env);
        }
        if let Some(p) = self.liveness_probe() {
            container["livenessProbe"] = p;
        }
        let (volumes, mounts) = self.secret_volumes(|m| {
            let items: Vec<Value> = m
                .files
                .iter()
                .map(|(f, v)| json!({"key": v, "path": f}))
                .collect();
            json!({"secretName": m.secret, "items": items})
        });
        if !mounts.is_empty() {
            container["volumeMounts"] = Value::Array(mounts);
        }
        let mut spec = json!({"containers": [container]});
        if !volumes.is_empty() {
            spec["volumes"] = Value::Array(volumes);
        }
        if let Some(c) = s.concurrency {
            spec["containerConcurrency"] = json!(c);
        }
        if let Some(t) = s.timeout {
            spec["timeoutSeconds"] = json!(t);
        }
        if let Some(sa) = &s.service_account {
            spec["serviceAccountName"] = json!(sa);
        }
        json!({
            "apiVersion": "serving.knative.dev/v1",
            "kind": "Service",
            "metadata": {"name": s.service, "labels": labels, "annotations": annotations},
            "spec": {"template": {"metadata": {"annotations": revision}, "spec": spec}},
        })
    }

    /// Create or update in one call: `allowMissing=true` creates the service
    /// when it does not exist.
    pub fn patch_request(&self, api_base: &str) -> ApiRequest {
        ApiRequest {
            method: "PATCH".into(),
            url: format!(
                "{}/v2/{}?allowMissing=true",
                api_base.trim_end_matches('/'),
                self.settings.service_name()
            ),
            body: self.to_v2(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::deploy::schemas;
    use crate::deploy::settings::SecretRef;

    pub(crate) fn settings() -> DeploySettings {
        DeploySettings {
            project: "my-project".into(),
            region: "us-central1".into(),
            service: "my-app".into(),
            repo: "backend".into(),
            registry: "us-central1-docker.pkg.dev".into(),
            ..Default::default()
        }
    }

    pub(crate) const IMAGE: &str = "us-central1-docker.pkg.dev/my-project/backend/my-app@sha256:0000000000000000000000000000000000000000000000000000000000000000";

    /// Everything set that can be set.
    pub(crate) fn full() -> ServiceSpec {
        let mut s = settings();
        s.allow_unauthenticated = true;
        s.memory = Some("512Mi".into());
        s.cpu = Some("1".into());
        s.min_instances = Some(0);
        s.max_instances = Some(10);
        s.concurrency = Some(80);
        s.timeout = Some(300);
        s.env.insert("APP_MODE".into(), "production".into());
        s.env
            .insert("GREETING".into(), "yes: no # \"quoted\"\nline".into());
        s.secrets.insert(
            "DB_PASSWORD".into(),
            SecretRef::parse("db-password:3").unwrap(),
        );
        s.labels.insert("team".into(), "web".into());
        s.service_account = Some("app@my-project.iam.gserviceaccount.com".into());
        s.cloudsql = vec!["my-project:us-central1:db".into()];
        s.network = Some("default".into());
        s.subnet = Some("run-subnet".into());
        s.vpc_egress = Some(crate::deploy::settings::VpcEgress::PrivateRangesOnly);
        s.secret_files.insert(
            "/secrets/db/password".into(),
            SecretRef::parse("db-password:3").unwrap(),
        );
        s.secret_files.insert(
            "/secrets/db/password-old".into(),
            SecretRef::parse("db-password:2").unwrap(),
        );
        s.secret_files.insert(
            "/secrets/api/key".into(),
            SecretRef::parse("api-key").unwrap(),
        );
        s.liveness_path = Some("/health".into());
        ServiceSpec::new(&s, IMAGE, 8080, Some("/health")).unwrap()
    }

    /// A request checked against the discovery document: the method it
    /// calls, and what is wrong with it.
    pub(crate) fn checked(r: &ApiRequest) -> (String, Vec<String>) {
        let doc = schemas::load("run-v2-discovery.json");
        let path = r.url.strip_prefix("https://run.googleapis.com/").unwrap();
        schemas::check_request(&doc, &r.method, path, &r.body)
    }

    fn problems(body: &Value) -> Vec<String> {
        let doc = schemas::load("run-v2-discovery.json");
        schemas::problems(&doc, "GoogleCloudRunV2Service", body)
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
            "GoogleCloudRunV2Service.uri: output only",
            "GoogleCloudRunV2Service.ingress: \"EVERYONE\"",
            "GoogleCloudRunV2Service.template.timeout: \"5 minutes\" is not a duration",
            "GoogleCloudRunV2Service.template.containers[0].image: 1 is not of type string",
            "GoogleCloudRunV2Service.template.containers[0].colour: no such field",
            "GoogleCloudRunV2Service.template.scaling.maxInstanceCount: \"ten\" is not of type integer",
        ] {
            assert!(
                p.iter().any(|x| x.starts_with(needle)),
                "{needle} not in {p:#?}"
            );
        }
        let doc = schemas::load("run-v2-discovery.json");
        let (_, p) = schemas::check_request(
            &doc,
            "PATCH",
            "v2/projects/p/locations/r/services/s?allowMisssing=true",
            &json!({}),
        );
        assert!(
            p.iter()
                .any(|x| x.contains("no query parameter allowMisssing")),
            "{p:?}"
        );
        let (_, p) = schemas::check_request(
            &doc,
            "PUT",
            "v2/projects/p/locations/r/services/s",
            &json!({}),
        );
        assert!(p[0].contains("no such method"), "{p:?}");
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

        let full = full();
        let body = full.to_v2();
        assert_eq!(problems(&body), Vec::<String>::new(), "{body:#}");
        let c = &body["template"]["containers"][0];
        assert_eq!(c["image"], IMAGE);
        assert_eq!(c["startupProbe"]["httpGet"]["path"], "/health");
        assert_eq!(c["resources"]["limits"]["memory"], "512Mi");
        assert_eq!(c["env"][2]["valueSource"]["secretKeyRef"]["version"], "3");
        assert_eq!(body["template"]["timeout"], "300s");
        assert_eq!(body["invokerIamDisabled"], true);
        // Cloud SQL first, then one secret volume per directory.
        let t = &body["template"];
        assert_eq!(
            t["volumes"][0]["cloudSqlInstance"]["instances"][0],
            "my-project:us-central1:db"
        );
        assert_eq!(
            c["volumeMounts"][0],
            json!({"name": "cloudsql", "mountPath": "/cloudsql"})
        );
        assert_eq!(t["volumes"][1]["secret"]["secret"], "api-key");
        assert_eq!(c["volumeMounts"][1]["mountPath"], "/secrets/api");
        assert_eq!(
            t["volumes"][2]["secret"]["items"],
            json!([{"path": "password", "version": "3"}, {"path": "password-old", "version": "2"}])
        );
        assert_eq!(
            t["vpcAccess"],
            json!({"networkInterfaces": [{"network": "default", "subnetwork": "run-subnet"}], "egress": "PRIVATE_RANGES_ONLY"})
        );
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/health");

        // Public through IAM instead: the service itself keeps the check.
        let mut s = full.settings.clone();
        s.public_access = PublicAccess::IamBinding;
        let iam = ServiceSpec::new(&s, IMAGE, 8080, None).unwrap();
        assert!(iam.to_v2().get("invokerIamDisabled").is_none());

        let r = full.patch_request("https://run.googleapis.com/");
        assert_eq!(r.method, "PATCH");
        assert_eq!(
            r.url,
            "https://run.googleapis.com/v2/projects/my-project/locations/us-central1/services/my-app?allowMissing=true"
        );
        let (id, p) = checked(&r);
        assert_eq!(id, "projects.locations.services.patch");
        assert_eq!(p, Vec::<String>::new());
        // Stable: the same spec, the same bytes (what --dry-run prints).
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            serde_json::to_string(&full.patch_request("https://run.googleapis.com")).unwrap()
        );
    }

    #[test]
    fn the_knative_service_matches_the_crd_and_the_api_request() {
        let schema = schemas::knative_service_schema();
        for spec in [
            full(),
            ServiceSpec::new(&settings(), IMAGE, 8080, None).unwrap(),
        ] {
            let k = spec.to_knative();
            let mut out = Vec::new();
            schemas::validate_openapi(&k, &schema, "Service", &mut out);
            assert_eq!(out, Vec::<String>::new(), "{k:#}");
            // The same container as the API request, field by field where
            // the two APIs name them alike.
            let (kc, vc) = (
                &k["spec"]["template"]["spec"]["containers"][0],
                &spec.to_v2()["template"]["containers"][0],
            );
            for f in ["image", "ports", "startupProbe"] {
                assert_eq!(kc[f], vc[f], "{f}");
            }
            assert_eq!(kc["resources"]["limits"], vc["resources"]["limits"]);
        }
        let k = full().to_knative();
        let t = &k["spec"]["template"];
        assert_eq!(
            t["metadata"]["annotations"]["autoscaling.knative.dev/maxScale"],
            "10"
        );
        assert_eq!(t["spec"]["containerConcurrency"], 80);
        assert_eq!(t["spec"]["timeoutSeconds"], 300);
        assert_eq!(
            t["spec"]["containers"][0]["env"][2]["valueFrom"]["secretKeyRef"]["key"],
            "3"
        );
        assert_eq!(
            k["metadata"]["annotations"]["run.googleapis.com/invoker-iam-disabled"],
            "true"
        );
        let a = &t["metadata"]["annotations"];
        assert_eq!(
            a["run.googleapis.com/cloudsql-instances"],
            "my-project:us-central1:db"
        );
        assert_eq!(
            a["run.googleapis.com/network-interfaces"],
            r#"[{"network":"default","subnetwork":"run-subnet"}]"#
        );
        assert_eq!(
            a["run.googleapis.com/vpc-access-egress"],
            "private-ranges-only"
        );
        let spec = &t["spec"];
        assert_eq!(spec["volumes"][1]["secret"]["secretName"], "db-password");
        assert_eq!(
            spec["volumes"][1]["secret"]["items"][0],
            json!({"key": "3", "path": "password"})
        );
        assert_eq!(
            spec["containers"][0]["volumeMounts"][1]["mountPath"],
            "/secrets/db"
        );
        assert_eq!(
            spec["containers"][0]["livenessProbe"]["httpGet"]["path"],
            "/health"
        );
    }

    #[test]
    fn a_tag_is_refused() {
        let tag = ServiceSpec::new(&settings(), "r/p/i:latest", 8080, None).unwrap_err();
        assert!(tag.to_string().contains("by digest"), "{tag}");
    }
}
