//! Google's REST APIs as `slimpack deploy` uses them: the requests (built
//! here and nowhere else, so `--dry-run` prints what a real run sends), one
//! client that sends them with a Google access token, long-running
//! operations polled to the end, and Google's error bodies turned into a
//! message with a hint of what to run or grant.

use super::settings::DeploySettings;
use super::spec::ApiRequest;
use crate::core::progress::Progress;
use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

pub const RUN_API: &str = "https://run.googleapis.com";
pub const ARTIFACT_REGISTRY_API: &str = "https://artifactregistry.googleapis.com";

/// Where the APIs are: Google's, a private endpoint, or a test server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub run: String,
    pub artifact_registry: String,
}

impl Default for Endpoints {
    fn default() -> Self {
        Endpoints {
            run: RUN_API.into(),
            artifact_registry: ARTIFACT_REGISTRY_API.into(),
        }
    }
}

impl Endpoints {
    fn url(base: &str, path: &str) -> String {
        format!("{}/{path}", base.trim_end_matches('/'))
    }

    pub fn get_repository(&self, s: &DeploySettings) -> ApiRequest {
        get(Self::url(
            &self.artifact_registry,
            &format!("v1/{}", s.repository_name()),
        ))
    }

    /// `gcloud artifacts repositories create REPO --repository-format=docker`.
    pub fn create_repository(&self, s: &DeploySettings) -> ApiRequest {
        ApiRequest {
            method: "POST".into(),
            url: Self::url(
                &self.artifact_registry,
                &format!("v1/{}/repositories?repositoryId={}", s.parent(), s.repo),
            ),
            body: json!({
                "format": "DOCKER",
                "description": format!("Images of Cloud Run service {} (created by slimpack deploy)", s.service),
            }),
        }
    }

    pub fn get_service(&self, s: &DeploySettings) -> ApiRequest {
        get(Self::url(&self.run, &format!("v2/{}", s.service_name())))
    }

    pub fn get_iam_policy(&self, s: &DeploySettings) -> ApiRequest {
        get(Self::url(
            &self.run,
            &format!(
                "v2/{}:getIamPolicy?options.requestedPolicyVersion=3",
                s.service_name()
            ),
        ))
    }

    pub fn set_iam_policy(&self, s: &DeploySettings, policy: Value) -> ApiRequest {
        ApiRequest {
            method: "POST".into(),
            url: Self::url(&self.run, &format!("v2/{}:setIamPolicy", s.service_name())),
            body: json!({ "policy": policy }),
        }
    }

    /// An operation of either API, by its name (`projects/.../operations/X`).
    fn get_operation(base: &str, version: &str, name: &str) -> ApiRequest {
        get(Self::url(base, &format!("{version}/{name}")))
    }
}

pub fn get(url: String) -> ApiRequest {
    ApiRequest {
        method: "GET".into(),
        url,
        body: Value::Null,
    }
}

pub const INVOKER: &str = "roles/run.invoker";
pub const ALL_USERS: &str = "allUsers";

/// `policy` with `allUsers` in its unconditional `roles/run.invoker`
/// binding; `None` when it is there already. Everything else, etag
/// included, is kept: the write fails rather than overwrite a policy that
/// changed since it was read.
pub fn with_public_invoker(policy: &Value) -> Option<Value> {
    let mut p = policy.clone();
    if !p.is_object() {
        p = json!({});
    }
    let bindings = p["bindings"].as_array().cloned().unwrap_or_default();
    let mut found = false;
    let mut out = Vec::new();
    for mut b in bindings {
        if b["role"] == INVOKER && b.get("condition").is_none() {
            found = true;
            let members = b["members"].as_array().cloned().unwrap_or_default();
            if members.iter().any(|m| m == ALL_USERS) {
                return None;
            }
            let mut members = members;
            members.push(json!(ALL_USERS));
            b["members"] = Value::Array(members);
        }
        out.push(b);
    }
    if !found {
        out.push(json!({"role": INVOKER, "members": [ALL_USERS]}));
    }
    p["bindings"] = Value::Array(out);
    Some(p)
}

/// An error reply of a Google API (`{"error": {...}}`), with what the
/// caller knows of the context.
#[derive(Debug, Clone, PartialEq)]
pub struct GoogleError {
    pub method: String,
    pub url: String,
    pub http: u16,
    /// The canonical code: PERMISSION_DENIED, NOT_FOUND, ...
    pub status: String,
    pub message: String,
    /// ErrorInfo's reason (SERVICE_DISABLED, IAM_PERMISSION_DENIED, ...).
    pub reason: Option<String>,
    /// ErrorInfo's metadata (service, permission, consumer, ...).
    pub metadata: serde_json::Map<String, Value>,
    /// BadRequest's field violations: (field, description).
    pub violations: Vec<(String, String)>,
}

impl std::fmt::Display for GoogleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: ", self.method, self.url)?;
        if self.http > 0 {
            write!(f, "HTTP {} ", self.http)?;
        }
        write!(f, "{}: {}", self.status, self.message)?;
        for (field, d) in &self.violations {
            write!(f, "\n  {field}: {d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for GoogleError {}

/// google.rpc.Code by number, for errors inside operations.
fn code_name(code: i64) -> &'static str {
    match code {
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

impl GoogleError {
    /// From a google.rpc.Status (an error reply's `error`, or an
    /// operation's `error`).
    pub fn from_status(method: &str, url: &str, http: u16, status: &Value) -> GoogleError {
        let mut e = GoogleError {
            method: method.into(),
            url: url.into(),
            http,
            status: status["status"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| code_name(status["code"].as_i64().unwrap_or(2)).into()),
            message: status["message"].as_str().unwrap_or("").trim().to_string(),
            reason: None,
            metadata: Default::default(),
            violations: Vec::new(),
        };
        for d in status["details"].as_array().into_iter().flatten() {
            let ty = d["@type"].as_str().unwrap_or("");
            if ty.ends_with("google.rpc.ErrorInfo") {
                e.reason = d["reason"].as_str().map(str::to_string);
                if let Some(m) = d["metadata"].as_object() {
                    e.metadata = m.clone();
                }
            } else if ty.ends_with("google.rpc.BadRequest") {
                for v in d["fieldViolations"].as_array().into_iter().flatten() {
                    e.violations.push((
                        v["field"].as_str().unwrap_or("").into(),
                        v["description"].as_str().unwrap_or("").into(),
                    ));
                }
            }
        }
        if e.message.is_empty() {
            e.message = format!("HTTP {http} with no message");
        }
        e
    }

    /// From an HTTP error reply; a body that is not Google's JSON keeps
    /// its first line.
    pub fn from_reply(method: &str, url: &str, http: u16, body: &[u8]) -> GoogleError {
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        if v["error"].is_object() {
            return Self::from_status(method, url, http, &v["error"]);
        }
        let text = String::from_utf8_lossy(body);
        let status = match http {
            400 => "INVALID_ARGUMENT",
            401 => "UNAUTHENTICATED",
            403 => "PERMISSION_DENIED",
            404 => "NOT_FOUND",
            409 => "ABORTED",
            429 => "RESOURCE_EXHAUSTED",
            _ => "UNKNOWN",
        };
        Self::from_status(
            method,
            url,
            http,
            &json!({"status": status, "message": text.lines().next().unwrap_or("").chars().take(300).collect::<String>()}),
        )
    }

    fn is_api_disabled(&self) -> bool {
        self.reason.as_deref() == Some("SERVICE_DISABLED")
            || self.message.contains("has not been used in project")
            || self.message.contains("it is disabled")
    }

    /// What to run or grant, for the user reading the error.
    pub fn hint(&self, s: &DeploySettings) -> Option<String> {
        let project = &s.project;
        let api = if self.url.contains("artifactregistry") || self.url.contains("/repositories") {
            "artifactregistry.googleapis.com"
        } else {
            "run.googleapis.com"
        };
        if self.is_api_disabled() {
            let service = self
                .metadata
                .get("service")
                .and_then(Value::as_str)
                .unwrap_or(api);
            return Some(format!(
                "enable the API, wait a minute, and deploy again: gcloud services enable {service} --project {project}"
            ));
        }
        let permission = self
            .metadata
            .get("permission")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| {
                regex::Regex::new(r"[a-z]+\.[a-zA-Z]+\.[a-zA-Z]+")
                    .ok()?
                    .find_iter(&self.message)
                    .map(|m| m.as_str().to_string())
                    .find(|p| {
                        p.starts_with("run.")
                            || p.starts_with("artifactregistry.")
                            || p.starts_with("iam.")
                    })
            });
        match self.status.as_str() {
            "UNAUTHENTICATED" => Some("the access token was refused: run `gcloud auth application-default login` (or check GOOGLE_APPLICATION_CREDENTIALS)".into()),
            "PERMISSION_DENIED" => {
                let role = match permission.as_deref() {
                    Some(p) if p.starts_with("iam.serviceaccounts.actAs") || p.starts_with("iam.serviceAccounts.actAs") => {
                        return Some(format!(
                            "the deploying account must be allowed to act as the service's runtime account: grant it roles/iam.serviceAccountUser on {} (gcloud iam service-accounts add-iam-policy-binding SA --member=user:YOU --role=roles/iam.serviceAccountUser)",
                            s.service_account.as_deref().unwrap_or("the Compute Engine default service account")
                        ))
                    }
                    Some(p) if p.starts_with("artifactregistry.repositories.create") => "roles/artifactregistry.admin",
                    Some(p) if p.starts_with("artifactregistry.") => "roles/artifactregistry.writer",
                    Some(p) if p.ends_with("setIamPolicy") => "roles/run.admin (setting IAM policies needs it; or use --public-access invoker-iam-disabled)",
                    _ if api.starts_with("artifactregistry") => "roles/artifactregistry.writer",
                    // Turning the invoker check off needs setIamPolicy too.
                    _ if s.allow_unauthenticated => "roles/run.admin",
                    _ => "roles/run.developer",
                };
                let what = permission.map(|p| format!("{p} is missing; ")).unwrap_or_default();
                let role_id = role.split(' ').next().unwrap_or(role);
                Some(format!(
                    "{what}grant the deploying account {role}: gcloud projects add-iam-policy-binding {project} --member=user:YOU@example.com --role={role_id}"
                ))
            }
            "RESOURCE_EXHAUSTED" => Some(format!(
                "a quota is exhausted: lower --max-instances, --cpu or --memory, or ask for more at https://console.cloud.google.com/iam-admin/quotas?project={project}"
            )),
            "INVALID_ARGUMENT" => Some(
                "the API refused a field of the request; `slimpack deploy --dry-run` prints the body that was sent".into(),
            ),
            "NOT_FOUND" => Some(format!(
                "check --project {project} and --region {} (`gcloud run regions list`), and that your account can see the project",
                s.region
            )),
            "ABORTED" if self.url.ends_with(":setIamPolicy") => Some(
                "the service's IAM policy changed while slimpack was adding to it; nothing was overwritten. Deploy again.".into(),
            ),
            _ => None,
        }
    }
}

/// The Google API client of a deploy: one token, retries on 429/5xx.
pub struct Client {
    token: String,
    pub endpoints: Endpoints,
}

impl Client {
    pub fn new(token: String, endpoints: Endpoints) -> Client {
        Client { token, endpoints }
    }

    /// Sends `req`; a 2xx reply's JSON, or a [`GoogleError`] (inside the
    /// anyhow error, for `downcast_ref`).
    pub fn send(&self, req: &ApiRequest) -> Result<Value> {
        let agent = crate::core::http::agent_for(&req.url);
        let body = if req.body.is_null() {
            Vec::new()
        } else {
            serde_json::to_vec(&req.body)?
        };
        let mut last = None;
        for attempt in 0..4u32 {
            let mut r = ureq::http::Request::builder()
                .method(req.method.as_str())
                .uri(&req.url)
                .header("Authorization", format!("Bearer {}", self.token))
                .header("Accept", "application/json");
            if !body.is_empty() {
                r = r.header("Content-Type", "application/json");
            }
            let sent = agent.run(r.body(body.clone())?);
            let resp = match sent {
                Ok(r) => r,
                Err(e) => {
                    last = Some(anyhow!("{} {}: {e}", req.method, req.url));
                    std::thread::sleep(crate::core::http::backoff(attempt, None));
                    continue;
                }
            };
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get("Retry-After")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let bytes = resp
                .into_body()
                .into_with_config()
                .limit(16 << 20)
                .read_to_vec()
                .map_err(|e| anyhow!("{} {}: reading the reply: {e}", req.method, req.url))?;
            if (200..300).contains(&status) {
                return if bytes.is_empty() {
                    Ok(Value::Null)
                } else {
                    serde_json::from_slice(&bytes).map_err(|e| {
                        anyhow!("{} {}: the reply is not JSON: {e}", req.method, req.url)
                    })
                };
            }
            let err = GoogleError::from_reply(&req.method, &req.url, status, &bytes);
            // A quota error that is a rate limit passes; one that is a
            // hard limit does not, and is reported after the attempts.
            if crate::core::http::retriable(status) && attempt < 3 {
                std::thread::sleep(crate::core::http::backoff(attempt, retry_after.as_deref()));
                last = Some(anyhow::Error::new(err));
                continue;
            }
            return Err(anyhow::Error::new(err));
        }
        Err(last.unwrap_or_else(|| anyhow!("{} {} failed", req.method, req.url)))
    }

    /// [`Client::send`] where a 404 means "not there" (`None`).
    pub fn send_optional(&self, req: &ApiRequest) -> Result<Option<Value>> {
        match self.send(req) {
            Ok(v) => Ok(Some(v)),
            Err(e)
                if e.downcast_ref::<GoogleError>()
                    .is_some_and(|g| g.http == 404) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Polls the operation `op` (as returned by a create or patch) until it
    /// is done or `limit` passes; its `response`, or its error.
    pub fn wait(
        &self,
        op: Value,
        base: &str,
        version: &str,
        what: &str,
        limit: Duration,
        progress: &Progress,
    ) -> Result<Value> {
        let started = Instant::now();
        let name = op["name"].as_str().unwrap_or("").to_string();
        let pb = progress.spinner(what.to_string());
        let mut op = op;
        let mut interval = Duration::from_millis(500);
        while op["done"] != true {
            if name.is_empty() {
                bail!("{what}: the API returned an operation without a name: {op}");
            }
            if started.elapsed() >= limit {
                pb.finish_and_clear();
                bail!(
                    "{what}: still running after {}s (operation {name}); it goes on without slimpack. Follow it with `gcloud run services describe`, or raise --wait",
                    limit.as_secs()
                );
            }
            std::thread::sleep(interval.min(limit.saturating_sub(started.elapsed())));
            interval = (interval * 2).min(Duration::from_secs(5));
            op = self.send(&Endpoints::get_operation(base, version, &name))?;
            // Cloud Run's operation metadata is the service: its condition
            // says which step the rollout is at.
            if let Some(m) = op["metadata"]["terminalCondition"]["message"].as_str() {
                pb.set_message(format!("{what}: {m}"));
            }
        }
        pb.finish_and_clear();
        if op["error"].is_object() {
            // The operation's URL tells the hint which API failed.
            return Err(anyhow::Error::new(GoogleError::from_status(
                "operation",
                &Endpoints::get_operation(base, version, &name).url,
                0,
                &op["error"],
            )));
        }
        Ok(op["response"].clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::schemas;

    fn settings() -> DeploySettings {
        crate::deploy::spec::tests::settings()
    }

    #[test]
    fn every_request_matches_its_discovery_document() {
        let e = Endpoints::default();
        let s = settings();
        let run = schemas::load("run-v2-discovery.json");
        let ar = schemas::load("artifactregistry-v1-discovery.json");
        let policy = with_public_invoker(&json!({"etag": "BwX1", "version": 1})).unwrap();
        for (req, doc, id) in [
            (
                e.get_repository(&s),
                &ar,
                "projects.locations.repositories.get",
            ),
            (
                e.create_repository(&s),
                &ar,
                "projects.locations.repositories.create",
            ),
            (e.get_service(&s), &run, "projects.locations.services.get"),
            (
                e.get_iam_policy(&s),
                &run,
                "projects.locations.services.getIamPolicy",
            ),
            (
                e.set_iam_policy(&s, policy),
                &run,
                "projects.locations.services.setIamPolicy",
            ),
            (
                Endpoints::get_operation(
                    &e.run,
                    "v2",
                    "projects/my-project/locations/us-central1/operations/op-1",
                ),
                &run,
                "projects.locations.operations.get",
            ),
        ] {
            let root = doc["rootUrl"].as_str().unwrap();
            let rel = req
                .url
                .strip_prefix(root)
                .unwrap_or_else(|| panic!("{} not under {root}", req.url));
            let (found, problems) = schemas::check_request(doc, &req.method, rel, &req.body);
            assert_eq!(found, id, "{}", req.url);
            assert_eq!(problems, Vec::<String>::new(), "{}", req.url);
        }
    }

    #[test]
    fn the_invoker_binding_is_merged_never_replaced() {
        let policy = json!({
            "version": 1, "etag": "BwYAAA==",
            "bindings": [
                {"role": "roles/run.admin", "members": ["user:ops@example.com"]},
                {"role": INVOKER, "members": ["serviceAccount:job@p.iam.gserviceaccount.com"]},
                {"role": INVOKER, "members": ["group:x@example.com"],
                 "condition": {"title": "t", "expression": "request.time < timestamp('2030-01-01T00:00:00Z')"}},
            ],
        });
        let merged = with_public_invoker(&policy).unwrap();
        assert_eq!(merged["etag"], "BwYAAA==");
        assert_eq!(merged["bindings"][0], policy["bindings"][0]);
        assert_eq!(
            merged["bindings"][1]["members"],
            json!(["serviceAccount:job@p.iam.gserviceaccount.com", "allUsers"])
        );
        assert_eq!(merged["bindings"][2], policy["bindings"][2]);
        assert_eq!(
            with_public_invoker(&merged),
            None,
            "already public: nothing to write"
        );
        let fresh = with_public_invoker(&json!({"etag": "ACAB"})).unwrap();
        assert_eq!(
            fresh,
            json!({"etag": "ACAB", "bindings": [{"role": INVOKER, "members": ["allUsers"]}]})
        );
    }

    #[test]
    fn googles_errors_carry_their_message_and_a_hint() {
        let s = settings();
        let disabled = br#"{"error": {"code": 403, "status": "PERMISSION_DENIED",
            "message": "Cloud Run Admin API has not been used in project 123 before or it is disabled.",
            "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "SERVICE_DISABLED",
                         "domain": "googleapis.com", "metadata": {"service": "run.googleapis.com", "consumer": "projects/123"}}]}}"#;
        let e = GoogleError::from_reply("PATCH", "https://run.googleapis.com/v2/x", 403, disabled);
        assert_eq!(e.reason.as_deref(), Some("SERVICE_DISABLED"));
        assert!(e.to_string().contains("has not been used"), "{e}");
        assert!(e
            .hint(&s)
            .unwrap()
            .contains("gcloud services enable run.googleapis.com --project my-project"));

        let denied = br#"{"error": {"code": 403, "status": "PERMISSION_DENIED",
            "message": "Permission 'run.services.create' denied on resource 'projects/my-project/locations/us-central1/services/my-app' (or resource may not exist).",
            "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "IAM_PERMISSION_DENIED",
                         "metadata": {"permission": "run.services.create"}}]}}"#;
        let h = GoogleError::from_reply("PATCH", "https://run.googleapis.com/v2/x", 403, denied)
            .hint(&s)
            .unwrap();
        assert!(
            h.contains("run.services.create is missing")
                && h.contains("--role=roles/run.developer"),
            "{h}"
        );
        let mut public = s.clone();
        public.allow_unauthenticated = true;
        let h = GoogleError::from_reply("PATCH", "https://run.googleapis.com/v2/x", 403, denied)
            .hint(&public)
            .unwrap();
        assert!(h.contains("--role=roles/run.admin"), "{h}");

        let act_as = br#"{"error": {"code": 403, "status": "PERMISSION_DENIED",
            "message": "Permission 'iam.serviceaccounts.actAs' denied on service account app@p.iam.gserviceaccount.com"}}"#;
        let h = GoogleError::from_reply("PATCH", "https://run.googleapis.com/v2/x", 403, act_as)
            .hint(&s)
            .unwrap();
        assert!(h.contains("roles/iam.serviceAccountUser"), "{h}");

        let bad = br#"{"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "Invalid value",
            "details": [{"@type": "type.googleapis.com/google.rpc.BadRequest",
                         "fieldViolations": [{"field": "spec.template.spec.containers[0].resources.limits.memory", "description": "must be at least 128Mi"}]}]}}"#;
        let e = GoogleError::from_reply("PATCH", "u", 400, bad);
        assert!(
            e.to_string()
                .contains("limits.memory: must be at least 128Mi"),
            "{e}"
        );
        assert!(e.hint(&s).unwrap().contains("--dry-run"));

        let quota = GoogleError::from_reply("PATCH", "u", 429, b"Too Many Requests\n<html>");
        assert_eq!(quota.status, "RESOURCE_EXHAUSTED");
        assert_eq!(quota.message, "Too Many Requests");
        assert!(quota
            .hint(&s)
            .unwrap()
            .contains("quotas?project=my-project"));

        let op = GoogleError::from_status(
            "operation",
            "op",
            0,
            &json!({"code": 9, "message": "Revision 'my-app-00001-abc' is not ready"}),
        );
        assert_eq!(op.status, "FAILED_PRECONDITION");
        assert!(op.to_string().contains("is not ready"));
        let ar = GoogleError::from_reply("POST", "https://artifactregistry.googleapis.com/v1/projects/p/locations/r/repositories?repositoryId=x", 403,
            br#"{"error": {"code": 403, "status": "PERMISSION_DENIED", "message": "Permission 'artifactregistry.repositories.create' denied on resource"}}"#);
        assert!(ar
            .hint(&s)
            .unwrap()
            .contains("roles/artifactregistry.admin"));
    }
}
