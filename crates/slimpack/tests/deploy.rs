//! `slimpack deploy` end to end, against a local server that plays Cloud
//! Run Admin API v2 and Artifact Registry v1 as Google documents them (a
//! 404 for a missing service or repository, operations returned not done
//! and done on a later poll, Google's error bodies) and a real
//! `docker-registry` for the push. The server checks every request against
//! the discovery documents. Nothing here talks to Google Cloud.

mod common;
use common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

const TOKEN: &str = "ya29.fake-token";

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    /// Path and query.
    url: String,
    body: Value,
}

#[derive(Default)]
struct State {
    seen: Vec<Seen>,
    /// Requests that broke the discovery documents, or came unauthenticated.
    problems: Vec<String>,
    repos: BTreeSet<String>,
    services: BTreeMap<String, Value>,
    /// Operation name → (polls left before done, the outcome when done).
    operations: BTreeMap<String, (u32, Value)>,
    policy: Value,
    counter: u32,
    jobs: BTreeMap<String, Value>,
    /// Execution name → (the execution, its tasks).
    executions: BTreeMap<String, (Value, Value)>,
}

struct FakeGoogle {
    base: String,
    state: Arc<Mutex<State>>,
}

fn google_error(code: u16, status: &str, message: &str, details: Value) -> (u16, Value) {
    (
        code,
        json!({"error": {"code": code, "status": status, "message": message, "details": details}}),
    )
}

fn handle(
    st: &mut State,
    method: &str,
    url: &str,
    auth: Option<&str>,
    body: Value,
) -> (u16, Value) {
    if url == "/token" {
        return (200, json!({"access_token": TOKEN, "expires_in": 3600}));
    }
    st.seen.push(Seen {
        method: method.into(),
        url: url.into(),
        body: body.clone(),
    });
    if auth != Some(&format!("Bearer {TOKEN}")) {
        st.problems.push(format!("{method} {url}: no bearer token"));
        return google_error(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
            json!([]),
        );
    }
    let rel = url.trim_start_matches('/');
    let doc = if rel.starts_with("v1/") {
        schemas::load("artifactregistry-v1-discovery.json")
    } else {
        schemas::load("run-v2-discovery.json")
    };
    let (_, problems) = schemas::check_request(&doc, method, rel, &body);
    st.problems
        .extend(problems.into_iter().map(|p| format!("{method} {url}: {p}")));
    let path = rel.split('?').next().unwrap_or(rel);
    let parts: Vec<&str> = path.split('/').collect();
    // v1|v2 / projects / P / locations / R / KIND / ...
    let (kind, name) = (
        parts.get(5).copied().unwrap_or(""),
        parts.get(6).copied().unwrap_or(""),
    );
    let parent = parts.get(1..5).map(|p| p.join("/")).unwrap_or_default();
    let not_found = |what: &str| {
        google_error(
            404,
            "NOT_FOUND",
            &format!("Resource '{what}' was not found"),
            json!([]),
        )
    };
    match (method, kind) {
        ("GET", "repositories") => match st.repos.contains(name) {
            true => (
                200,
                json!({"name": path.trim_start_matches("v1/"), "format": "DOCKER"}),
            ),
            false => not_found(path),
        },
        ("POST", "repositories") => {
            let id = url.split("repositoryId=").nth(1).unwrap_or("").to_string();
            st.repos.insert(id.clone());
            st.counter += 1;
            let op = format!("{parent}/operations/repo-{}", st.counter);
            st.operations.insert(
                op.clone(),
                (
                    1,
                    json!({"response": {"name": format!("{parent}/repositories/{id}")}}),
                ),
            );
            (200, json!({"name": op, "done": false}))
        }
        ("GET", "operations") => {
            let op = format!("{parent}/operations/{name}");
            let Some((left, outcome)) = st.operations.get_mut(&op) else {
                return not_found(&op);
            };
            if *left > 0 {
                *left -= 1;
                return (
                    200,
                    json!({"name": op, "done": false, "metadata": {"terminalCondition": {"type": "Ready", "state": "CONDITION_PENDING", "message": "Deploying revision."}}}),
                );
            }
            let mut reply = json!({"name": op, "done": true});
            for (k, v) in outcome.as_object().unwrap() {
                reply[k] = v.clone();
            }
            (200, reply)
        }
        ("GET", "services") if path.ends_with(":getIamPolicy") => (200, st.policy.clone()),
        ("POST", "services") if path.ends_with(":setIamPolicy") => {
            if body["policy"]["etag"] != st.policy["etag"] {
                return google_error(
                    409,
                    "ABORTED",
                    "There were concurrent policy changes.",
                    json!([]),
                );
            }
            st.policy = body["policy"].clone();
            st.policy["etag"] = json!("BwE2");
            (200, st.policy.clone())
        }
        ("GET", "services") => match st.services.get(name) {
            Some(s) => (200, s.clone()),
            None => not_found(path),
        },
        ("PATCH", "services") => {
            if name == "locked" {
                return google_error(
                    403,
                    "PERMISSION_DENIED",
                    &format!("Permission 'run.services.create' denied on resource '{}' (or resource may not exist).", path.trim_start_matches("v2/")),
                    json!([{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "IAM_PERMISSION_DENIED",
                            "domain": "run.googleapis.com", "metadata": {"permission": "run.services.create"}}]),
                );
            }
            if name == "disabled" {
                return google_error(
                    403,
                    "PERMISSION_DENIED",
                    "Cloud Run Admin API has not been used in project 123456 before or it is disabled. Enable it by visiting https://console.developers.google.com/apis/api/run.googleapis.com/overview?project=123456 then retry.",
                    json!([{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "SERVICE_DISABLED",
                            "domain": "googleapis.com", "metadata": {"service": "run.googleapis.com", "consumer": "projects/123456"}}]),
                );
            }
            let generation = st.services.get(name).map_or(1, |s| {
                s["generation"]
                    .as_str()
                    .unwrap_or("1")
                    .parse::<u32>()
                    .unwrap()
                    + 1
            });
            let full = path.trim_start_matches("v2/");
            let revision = format!("{full}/revisions/{name}-{generation:05}-abc");
            let mut svc = body.clone();
            svc["name"] = json!(full);
            svc["generation"] = json!(generation.to_string());
            svc["uri"] = json!(format!("https://{name}-x7y2z-uc.a.run.app"));
            let outcome = if name == "broken" {
                svc["terminalCondition"] = json!({"type": "Ready", "state": "CONDITION_FAILED",
                    "message": "Revision 'broken-00001-abc' is not ready and cannot serve traffic. The user-provided container failed to start and listen on the port defined provided by the PORT=8080 environment variable."});
                json!({"error": {"code": 9, "message": "Revision 'broken-00001-abc' is not ready and cannot serve traffic. The user-provided container failed to start and listen on the port defined provided by the PORT=8080 environment variable."}})
            } else {
                svc["terminalCondition"] = json!({"type": "Ready", "state": "CONDITION_SUCCEEDED"});
                svc["latestReadyRevision"] = json!(revision);
                json!({"response": svc})
            };
            st.services.insert(name.into(), svc);
            st.counter += 1;
            let op = format!("{parent}/operations/run-{}", st.counter);
            // "slow" never finishes: the wait must be bounded.
            let polls = if name == "slow" { u32::MAX } else { 1 };
            st.operations.insert(op.clone(), (polls, outcome));
            (200, json!({"name": op, "done": false}))
        }
        ("GET" | "PATCH" | "POST", "jobs") => jobs(st, method, path, &parent, body),
        _ => {
            st.problems
                .push(format!("{method} {url}: not played by the fake"));
            not_found(path)
        }
    }
}

/// Cloud Run jobs as the fake plays them. An execution's tasks follow the
/// job's command: `always-fail` fails every task, `fail-second` task 1
/// only (exit 1); any other succeeds. A failed execution fails its
/// operation, as Cloud Run's does.
fn jobs(st: &mut State, method: &str, path: &str, parent: &str, body: Value) -> (u16, Value) {
    let full = path.trim_start_matches("v2/").to_string();
    let parts: Vec<&str> = full.split('/').collect();
    let not_found = |what: &str| {
        google_error(
            404,
            "NOT_FOUND",
            &format!("Resource '{what}' was not found"),
            json!([]),
        )
    };
    match (method, parts.len()) {
        // …/jobs/J/executions/E/tasks
        ("GET", 9) => match st.executions.get(&parts[..8].join("/")) {
            Some((_, tasks)) => (200, tasks.clone()),
            None => not_found(&full),
        },
        ("GET", 8) => match st.executions.get(&full) {
            Some((e, _)) => (200, e.clone()),
            None => not_found(&full),
        },
        ("GET", 6) => match st.jobs.get(&full) {
            Some(j) => (200, j.clone()),
            None => not_found(&full),
        },
        ("PATCH", 6) => {
            let mut job = body;
            job["name"] = json!(full);
            st.jobs.insert(full, job.clone());
            st.counter += 1;
            let op = format!("{parent}/operations/job-{}", st.counter);
            st.operations
                .insert(op.clone(), (1, json!({"response": job})));
            (200, json!({"name": op, "done": false}))
        }
        ("POST", 6) if full.ends_with(":run") => {
            let name = full.trim_end_matches(":run");
            let Some(job) = st.jobs.get(name).cloned() else {
                return not_found(name);
            };
            st.counter += 1;
            let exec = format!("{name}/executions/run-{}", st.counter);
            let command = job["template"]["template"]["containers"][0]["command"].to_string();
            let count = job["template"]["taskCount"].as_u64().unwrap_or(1);
            let fails = |i: u64| {
                command.contains("always-fail") || (command.contains("fail-second") && i == 1)
            };
            let tasks: Vec<Value> = (0..count)
                .map(|i| {
                    let mut t = json!({"name": format!("{exec}/tasks/t{i}"), "index": i, "retried": 0});
                    if fails(i) {
                        t["lastAttemptResult"] = json!({"exitCode": 1, "status": {"code": 2, "message": "The container exited with an error."}});
                    } else {
                        t["completionTime"] = json!("2026-12-02T00:00:00Z");
                        t["lastAttemptResult"] = json!({"exitCode": 0, "status": {"code": 0}});
                    }
                    t
                })
                .collect();
            let failed = (0..count).filter(|i| fails(*i)).count() as u64;
            let execution = json!({"name": exec, "taskCount": count, "succeededCount": count - failed,
                "failedCount": failed, "logUri": format!("https://console.cloud.google.com/logs?exec={exec}")});
            st.executions
                .insert(exec.clone(), (execution.clone(), json!({"tasks": tasks})));
            let outcome = if failed > 0 {
                json!({"error": {"code": 9, "message": format!("Task {exec}/tasks/t1 failed with exit code 1.")}})
            } else {
                json!({"response": execution})
            };
            let op = format!("{parent}/operations/exec-{}", st.counter);
            st.operations.insert(op.clone(), (1, outcome));
            (
                200,
                json!({"name": op, "done": false, "metadata": {"name": exec}}),
            )
        }
        _ => {
            st.problems
                .push(format!("{method} {path}: not played by the fake"));
            not_found(path)
        }
    }
}

impl FakeGoogle {
    fn start() -> FakeGoogle {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State {
            policy: json!({"version": 1, "etag": "BwE1",
                "bindings": [{"role": "roles/run.admin", "members": ["user:ops@example.com"]}]}),
            ..Default::default()
        }));
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || serve(conn, &st));
            }
        });
        FakeGoogle { base, state }
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    fn take_seen(&self) -> Vec<Seen> {
        std::mem::take(&mut self.state.lock().unwrap().seen)
    }

    fn problems(&self) -> Vec<String> {
        self.state.lock().unwrap().problems.clone()
    }
}

/// One HTTP/1.1 exchange per connection.
fn serve(conn: std::net::TcpStream, st: &Mutex<State>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let Some(Request {
        method,
        url,
        authorization: auth,
        body,
    }) = read_request(&mut reader)
    else {
        return;
    };
    let body: Value = if body.is_empty() {
        Value::Null
    } else if url == "/token" {
        Value::String(String::from_utf8_lossy(&body).into())
    } else {
        serde_json::from_slice(&body).unwrap()
    };
    let (status, reply) = handle(
        &mut st.lock().unwrap(),
        &method,
        &url,
        auth.as_deref(),
        body,
    );
    let text = reply.to_string();
    let mut conn = conn;
    let _ = write!(
        conn,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
}

struct Setup {
    google: FakeGoogle,
    registry: Registry,
    project: tempfile::TempDir,
    creds: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let google = FakeGoogle::start();
        let creds = tempfile::tempdir().unwrap();
        std::fs::write(
            creds.path().join("adc.json"),
            json!({"type": "authorized_user", "client_id": "c", "client_secret": "s",
                   "refresh_token": "r", "token_uri": format!("{}/token", google.base)})
            .to_string(),
        )
        .unwrap();
        Setup {
            google,
            registry: Registry::start(None),
            project: copy_example("flask"),
            creds,
        }
    }

    fn deploy(&self, service: &str, extra: &[&str]) -> Output {
        self.deploy_with(&shared_cache(), service, extra)
    }

    /// A deploy from the machine whose cache is `cache`.
    fn deploy_with(&self, cache: &Path, service: &str, extra: &[&str]) -> Output {
        let host = self.registry.host();
        let mut c = Command::new(env!("CARGO_BIN_EXE_slimpack"));
        c.arg("deploy");
        if !extra.contains(&"--repo") {
            c.args(["--repo", "backend"]);
        }
        c.arg(self.project.path())
            .args(["--project", "my-project", "--region", "us-central1"])
            .args(["--service", service, "--registry", &host])
            .args(extra)
            .current_dir(self.project.path())
            .env("SLIMPACK_CACHE", cache)
            .env("SLIMPACK_RUN_API", &self.google.base)
            .env("SLIMPACK_ARTIFACT_REGISTRY_API", &self.google.base)
            .env(
                "GOOGLE_APPLICATION_CREDENTIALS",
                self.creds.path().join("adc.json"),
            )
            .env("DOCKER_CONFIG", "/nonexistent")
            .env_remove("CLOUDSDK_CORE_PROJECT")
            .env_remove("SOURCE_DATE_EPOCH");
        c.output().unwrap()
    }
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "deploy failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn failed(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "deploy should fail:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn manifest_status(registry: &str, repo: &str, reference: &str) -> u16 {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
        .arg("Accept: application/vnd.oci.image.manifest.v1+json")
        .arg(format!("http://{registry}/v2/{repo}/manifests/{reference}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0)
}

#[test]
fn deploy_creates_the_repository_pushes_by_digest_and_rolls_out() {
    let s = Setup::new();
    let flags = [
        "--create-repo",
        "--allow-unauthenticated",
        "--memory",
        "512Mi",
        "--cpu",
        "1",
        "--max-instances",
        "10",
        "--env",
        "ENVIRONMENT=production",
        "--secret",
        "DB_PASSWORD=db-password:2",
        "--cloudsql",
        "my-project:us-central1:main-db",
        "--network",
        "default",
        "--subnet",
        "run-egress",
        "--vpc-egress",
        "private-ranges-only",
        "--secret-file",
        "/secrets/api/key=api-key:4",
        "--liveness-probe",
        "/health",
    ];

    // --dry-run: builds, sends nothing (not even for a token), prints the
    // requests that change something.
    let mut dry = flags.to_vec();
    dry.push("--dry-run");
    let printed = ok(&s.deploy("my-app", &dry));
    assert!(
        s.google.seen().is_empty(),
        "dry run sent {:?}",
        s.google.seen()
    );
    let planned: Vec<Value> = printed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(planned.len(), 2, "{printed}");
    assert_eq!(
        ok(&s.deploy("my-app", &dry)),
        printed,
        "--dry-run is stable"
    );

    // The real run: repository missing (404) → created (operation polled),
    // image pushed, service missing (404) → PATCH allowMissing → operation
    // polled to done → service read.
    let out = ok(&s.deploy("my-app", &flags));
    assert!(out.contains("Created projects/my-project/locations/us-central1/services/my-app (revision my-app-00001-abc)"), "{out}");
    assert!(
        out.contains("url     https://my-app-x7y2z-uc.a.run.app"),
        "{out}"
    );
    assert!(out.contains("public (invoker IAM check disabled)"), "{out}");
    assert!(
        out.contains("cloudsql /cloudsql/my-project:us-central1:main-db"),
        "{out}"
    );
    let seen = s.google.take_seen();
    let calls: Vec<String> = seen
        .iter()
        .map(|r| format!("{} {}", r.method, r.url.split('?').next().unwrap()))
        .collect();
    let p = "projects/my-project/locations/us-central1";
    assert_eq!(
        calls,
        [
            format!("GET /v1/{p}/repositories/backend"),
            format!("POST /v1/{p}/repositories"),
            format!("GET /v1/{p}/operations/repo-1"),
            format!("GET /v1/{p}/operations/repo-1"),
            format!("GET /v2/{p}/services/my-app"),
            format!("PATCH /v2/{p}/services/my-app"),
            format!("GET /v2/{p}/operations/run-2"),
            format!("GET /v2/{p}/operations/run-2"),
            format!("GET /v2/{p}/services/my-app"),
        ]
    );
    assert_eq!(s.google.problems(), Vec::<String>::new());

    // What the dry run printed is what was sent.
    let sent: Vec<Value> = seen
        .iter()
        .filter(|r| r.method != "GET")
        .map(|r| json!({"method": r.method, "url": format!("{}{}", s.google.base, r.url), "body": r.body}))
        .collect();
    assert_eq!(sent, planned);

    // The image the service runs is in the registry by that digest, and tagged.
    let image = seen[5].body["template"]["containers"][0]["image"]
        .as_str()
        .unwrap()
        .to_string();
    let (repo, digest) = image.split_once('@').unwrap();
    let repo = repo
        .strip_prefix(&format!("{}/", s.registry.host()))
        .unwrap();
    assert_eq!(repo, "my-project/backend/my-app");
    assert_eq!(manifest_status(&s.registry.host(), repo, digest), 200);
    assert_eq!(manifest_status(&s.registry.host(), repo, "latest"), 200);
    // Its SBOM went along, listed under the referrers fallback tag.
    let index = Command::new("curl")
        .args([
            "-sf",
            "-H",
            "Accept: application/vnd.oci.image.index.v1+json",
        ])
        .arg(format!(
            "http://{}/v2/{repo}/manifests/{}",
            s.registry.host(),
            digest.replacen(':', "-", 1)
        ))
        .output()
        .unwrap();
    let index: Value = serde_json::from_slice(&index.stdout).unwrap_or_default();
    assert_eq!(
        index["manifests"][0]["artifactType"], "application/spdx+json",
        "{index}"
    );
    let body = &seen[5].body;
    assert_eq!(body["invokerIamDisabled"], true);
    // Cloud SQL, Direct VPC egress, a secret file and liveness: the fields
    // Cloud Run documents, checked against the discovery document by the
    // server (problems() above is empty).
    let t = &body["template"];
    assert_eq!(
        t["volumes"],
        json!([
            {"name": "cloudsql", "cloudSqlInstance": {"instances": ["my-project:us-central1:main-db"]}},
            {"name": "secret-1", "secret": {"secret": "api-key", "items": [{"path": "key", "version": "4"}]}},
        ])
    );
    assert_eq!(
        t["containers"][0]["volumeMounts"],
        json!([
            {"name": "cloudsql", "mountPath": "/cloudsql"},
            {"name": "secret-1", "mountPath": "/secrets/api"},
        ])
    );
    assert_eq!(
        t["vpcAccess"],
        json!({"networkInterfaces": [{"network": "default", "subnetwork": "run-egress"}], "egress": "PRIVATE_RANGES_ONLY"})
    );
    assert_eq!(
        t["containers"][0]["livenessProbe"]["httpGet"]["path"],
        "/health"
    );
    assert_eq!(
        body["template"]["containers"][0]["startupProbe"]["httpGet"]["path"],
        "/health"
    );

    // A second deploy updates; public through IAM merges allUsers into the
    // policy it read, keeping the other binding and sending the etag.
    let out = ok(&s.deploy(
        "my-app",
        &[
            "--allow-unauthenticated",
            "--public-access",
            "iam-binding",
            "--json",
        ],
    ));
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["created"], false);
    assert_eq!(report["revision"], "my-app-00002-abc");
    assert_eq!(
        report["push"]["uploaded_bytes"], 0,
        "nothing new to push: {report:#}"
    );
    let seen = s.google.take_seen();
    let set = seen
        .iter()
        .find(|r| r.url.ends_with(":setIamPolicy"))
        .expect("setIamPolicy sent");
    assert_eq!(
        set.body["policy"],
        json!({"version": 1, "etag": "BwE1", "bindings": [
            {"role": "roles/run.admin", "members": ["user:ops@example.com"]},
            {"role": "roles/run.invoker", "members": ["allUsers"]}]})
    );
    let patch = seen.iter().find(|r| r.method == "PATCH").unwrap();
    assert!(patch.body.get("invokerIamDisabled").is_none());
    // Already public: read, nothing written.
    ok(&s.deploy(
        "my-app",
        &["--allow-unauthenticated", "--public-access", "iam-binding"],
    ));
    let seen = s.google.take_seen();
    assert!(seen.iter().any(|r| r.url.contains(":getIamPolicy")));
    assert!(!seen.iter().any(|r| r.url.contains(":setIamPolicy")));
    assert_eq!(s.google.problems(), Vec::<String>::new());
}

/// `deploy --cache`: what a machine built goes to the cache repository,
/// and a runner with an empty cache deploys the same image by mounting it.
#[test]
fn a_fresh_runner_deploys_from_the_registry_cache() {
    let s = Setup::new();
    let cache_repo = format!("{}/backend-cache", s.registry.host());
    let first: Value = serde_json::from_str(&ok(&s.deploy(
        "cached-app",
        &["--create-repo", "--cache", &cache_repo, "--json"],
    )))
    .unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let out = ok(&s.deploy_with(
        fresh.path(),
        "cached-app",
        &["--cache", &cache_repo, "--json"],
    ));
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["image"], first["image"], "the same image, by digest");
    let mounted_or_there = report["push"]["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["kind"] == "layer" && b["action"] != "uploaded")
        .count();
    assert_eq!(mounted_or_there, 4, "{report:#}");
    // Nothing built: no .deb, no unpacked root, no layout written.
    for dir in ["debs", "rootfs"] {
        let n = std::fs::read_dir(fresh.path().join(dir))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(n, 0, "{dir}");
    }
    // Going to a registry with a registry cache, no local layout is written
    // (it would need every layer the cache only named).
    assert!(!s.project.path().join("target/slimpack").exists());
    assert_eq!(s.google.problems(), Vec::<String>::new());
}

#[test]
fn api_errors_come_with_the_apis_message_and_a_hint() {
    let s = Setup::new();
    s.google
        .state
        .lock()
        .unwrap()
        .repos
        .insert("backend".into());

    // Missing repository, no --create-repo: said so, nothing pushed.
    let e = failed(&s.deploy("my-app", &["--repo", "absent"]));
    assert!(
        e.contains("repositories/absent does not exist") && e.contains("--create-repo"),
        "{e}"
    );
    assert!(e.contains("gcloud artifacts repositories create absent --repository-format=docker --location=us-central1"), "{e}");
    assert_eq!(
        manifest_status(&s.registry.host(), "my-project/absent/my-app", "latest"),
        404
    );

    // 403 on the PATCH: the API's message, and the role to grant.
    let e = failed(&s.deploy("locked", &[]));
    assert!(
        e.contains("HTTP 403 PERMISSION_DENIED: Permission 'run.services.create' denied"),
        "{e}"
    );
    assert!(
        e.contains(
            "hint: run.services.create is missing; grant the deploying account roles/run.developer"
        ),
        "{e}"
    );
    assert!(e.contains("--role=roles/run.developer"), "{e}");

    // The API not enabled: the command that enables it.
    let e = failed(&s.deploy("disabled", &[]));
    assert!(e.contains("has not been used in project 123456"), "{e}");
    assert!(
        e.contains("gcloud services enable run.googleapis.com --project my-project"),
        "{e}"
    );

    // The revision fails to start: the operation's error, and where to look.
    let e = failed(&s.deploy("broken", &[]));
    assert!(e.contains("failed to start and listen on the port"), "{e}");
    assert!(e.contains("slimpack run --check"), "{e}");
    assert!(
        e.contains(
            "console.cloud.google.com/run/detail/us-central1/broken/logs?project=my-project"
        ),
        "{e}"
    );

    // An operation that does not finish: bounded by --wait, and said so.
    let e = failed(&s.deploy("slow", &["--wait", "2"]));
    assert!(
        e.contains("still running after 2s") && e.contains("--wait"),
        "{e}"
    );

    // Bad settings fail before anything is built or sent.
    s.google.take_seen();
    let e = failed(&s.deploy("Bad_Name", &[]));
    assert!(e.contains("--service \"Bad_Name\""), "{e}");
    assert!(s.google.seen().is_empty());
    assert_eq!(s.google.problems(), Vec::<String>::new());
}

#[test]
fn emitted_manifests_name_the_same_image_and_settings() {
    let s = Setup::new();
    // Outside the project: a file in it would be part of the app layer.
    let out_file = s.creds.path().join("service.yaml");
    ok(&s.deploy(
        "my-app",
        &[
            "--emit",
            "service.yaml",
            "--out",
            out_file.to_str().unwrap(),
            "--max-instances",
            "3",
        ],
    ));
    let yaml: Value = serde_saphyr::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    let mut problems = Vec::new();
    schemas::validate_openapi(
        &yaml,
        &schemas::knative_service_schema(),
        "Service",
        &mut problems,
    );
    assert_eq!(problems, Vec::<String>::new());
    let dry = ok(&s.deploy("my-app", &["--dry-run", "--max-instances", "3"]));
    let patch: Value = serde_json::from_str(dry.lines().next().unwrap()).unwrap();
    let c = &yaml["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        c["image"],
        patch["body"]["template"]["containers"][0]["image"]
    );
    assert_eq!(
        yaml["spec"]["template"]["metadata"]["annotations"]["autoscaling.knative.dev/maxScale"],
        "3"
    );
    let tf = ok(&s.deploy("my-app", &["--emit", "terraform", "--max-instances", "3"]));
    assert!(tf.contains(&format!("image = {}", c["image"])), "{tf}");
    assert!(s.google.seen().is_empty(), "--emit sends nothing");
}

/// A job made from the service's spec: created, updated, executed with one
/// failed and one succeeded task (the command fails); every request checked
/// against the discovery document, and `--dry-run` prints what a run sends.
#[test]
fn a_job_is_created_updated_and_executed() {
    let s = Setup::new();
    let job = |extra: &[&str]| {
        let mut args = vec![
            "--create-repo",
            "--job",
            "my-app-batch",
            "--tasks",
            "2",
            "--cloudsql",
            "my-project:us-central1:main-db",
        ];
        args.extend_from_slice(extra);
        s.deploy("my-app", &args)
    };
    let created = ok(&job(&["--job-command", "python batch.py"]));
    assert!(
        created.contains("Created projects/my-project/locations/us-central1/jobs/my-app-batch"),
        "{created}"
    );
    let p = "projects/my-project/locations/us-central1";
    let patched = s
        .google
        .take_seen()
        .into_iter()
        .find(|r| r.method == "PATCH")
        .unwrap();
    assert_eq!(
        patched.url,
        format!("/v2/{p}/jobs/my-app-batch?allowMissing=true")
    );
    let task = &patched.body["template"]["template"];
    assert_eq!(
        task["containers"][0]["command"],
        json!(["python", "batch.py"])
    );
    assert_eq!(
        task["volumes"][0]["cloudSqlInstance"]["instances"][0],
        "my-project:us-central1:main-db"
    );
    assert_eq!(patched.body["template"]["taskCount"], 2);

    let flags = ["--job-command", "python batch.py fail-second", "--execute"];
    let dry: Vec<&str> = flags.iter().copied().chain(["--dry-run"]).collect();
    let planned: Vec<Value> = ok(&job(&dry))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let out = job(&flags);
    let err = failed(&out);
    assert!(err.contains("the execution failed"), "{err}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Updated projects/my-project/locations/us-central1/jobs/my-app-batch"),
        "{text}"
    );
    assert!(text.contains("(1 succeeded, 1 failed)"), "{text}");
    assert!(text.contains("task 0   succeeded"), "{text}");
    assert!(
        text.contains("task 1   failed (exit 1): The container exited with an error."),
        "{text}"
    );
    assert!(
        text.contains("logs    https://console.cloud.google.com/logs"),
        "{text}"
    );
    let sent: Vec<Value> = s
        .google
        .take_seen()
        .iter()
        .filter(|r| r.method != "GET")
        .map(|r| json!({"method": r.method, "url": format!("{}{}", s.google.base, r.url), "body": r.body}))
        .collect();
    // The dry run plans the repository's creation; the real run found it.
    assert_eq!(sent[..], planned[1..], "--dry-run is what a run sends");
    assert_eq!(s.google.problems(), Vec::<String>::new());
}

/// `before` runs as a job with the new image ahead of the service: when it
/// fails the service is not touched; when it succeeds the service follows.
#[test]
fn a_failed_before_command_leaves_the_service_untouched() {
    let s = Setup::new();
    let out = s.deploy(
        "my-app",
        &[
            "--create-repo",
            "--before",
            "python manage.py migrate always-fail",
        ],
    );
    let err = failed(&out);
    assert!(
        err.contains(
            "before = \"python manage.py migrate always-fail\" failed in job my-app-before"
        ),
        "{err}"
    );
    assert!(err.contains("the service was not updated"), "{err}");
    let seen = s.google.take_seen();
    assert!(
        !seen.iter().any(|r| r.url.contains("/services/")),
        "the service was asked about: {:?}",
        seen.iter().map(|r| &r.url).collect::<Vec<_>>()
    );
    let run = seen.iter().find(|r| r.method == "PATCH").unwrap();
    assert_eq!(
        run.body["template"]["template"]["containers"][0]["command"],
        json!(["python", "manage.py", "migrate", "always-fail"])
    );
    assert_eq!(run.body["template"]["template"]["maxRetries"], 0);

    let good = ["--before", "python manage.py migrate"];
    let dry: Vec<&str> = good.iter().copied().chain(["--dry-run"]).collect();
    let planned: Vec<Value> = ok(&s.deploy("my-app", &dry))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let out = ok(&s.deploy("my-app", &good));
    assert!(
        out.contains("Created projects/my-project/locations/us-central1/services/my-app"),
        "{out}"
    );
    assert!(out.contains("before  ran first"), "{out}");
    let sent: Vec<(String, String)> = s
        .google
        .take_seen()
        .iter()
        .filter(|r| r.method != "GET")
        .map(|r| {
            (
                r.method.clone(),
                r.url.split('?').next().unwrap().to_string(),
            )
        })
        .collect();
    let p = "/v2/projects/my-project/locations/us-central1";
    assert_eq!(
        sent,
        [
            ("PATCH".to_string(), format!("{p}/jobs/my-app-before")),
            ("POST".to_string(), format!("{p}/jobs/my-app-before:run")),
            ("PATCH".to_string(), format!("{p}/services/my-app")),
        ]
    );
    let planned: Vec<(String, String)> = planned
        .iter()
        .map(|r| {
            (
                r["method"].as_str().unwrap().to_string(),
                r["url"]
                    .as_str()
                    .unwrap()
                    .split('?')
                    .next()
                    .unwrap()
                    .trim_start_matches(&s.google.base)
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(planned, sent);
    assert_eq!(s.google.problems(), Vec::<String>::new());
}
