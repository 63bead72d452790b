//! Cloud Run jobs: the same image, environment, secrets, Cloud SQL and VPC
//! as the service (a job is made from the service's spec, so a migration
//! job reaches the same database), a command of its own, and tasks.
//! `jobs.patch?allowMissing=true` creates or updates it; `jobs.run`
//! starts an execution, whose tasks say how it went.

use super::spec::{ApiRequest, ServiceSpec};
use anyhow::{bail, Result};
use serde::Serialize;
use serde_json::{json, Value};

/// What a job adds to the service's spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct JobOptions {
    /// The job's name (Cloud Run's rules for names).
    pub name: String,
    /// What each task runs; empty: the image's own command.
    pub command: Vec<String>,
    pub tasks: Option<u32>,
    pub parallelism: Option<u32>,
    pub max_retries: Option<u32>,
    /// Seconds per task.
    pub task_timeout: Option<u32>,
}

impl JobOptions {
    pub fn check(&self) -> Result<()> {
        let n = &self.name;
        let ok = !n.is_empty()
            && n.len() <= 63
            && n.starts_with(|c: char| c.is_ascii_lowercase())
            && !n.ends_with('-')
            && n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !ok {
            bail!("--job {n:?}: Cloud Run job names are 1-63 lowercase letters, digits and hyphens, starting with a letter and not ending with a hyphen");
        }
        if self.tasks == Some(0) || self.tasks.is_some_and(|t| t > 10_000) {
            bail!("--tasks: Cloud Run runs 1 to 10000 tasks per execution");
        }
        if self
            .parallelism
            .is_some_and(|p| p > self.tasks.unwrap_or(1).max(1))
        {
            bail!("--parallelism is above --tasks: at most every task at once");
        }
        if self.max_retries.is_some_and(|r| r > 10) {
            bail!("--max-retries: Cloud Run retries a task at most 10 times");
        }
        if self
            .task_timeout
            .is_some_and(|t| t == 0 || t > 7 * 24 * 3600)
        {
            bail!("--task-timeout: 1 second to 7 days");
        }
        Ok(())
    }
}

/// A job: the service's spec and the job's own options.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    pub service: ServiceSpec,
    pub job: JobOptions,
}

/// How one execution went.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ExecutionReport {
    pub name: String,
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
    /// One line per task: its index and outcome.
    pub tasks: Vec<TaskOutcome>,
    pub log_uri: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskOutcome {
    pub index: u64,
    pub succeeded: bool,
    pub exit_code: Option<i64>,
    pub message: Option<String>,
    pub retried: u64,
}

impl ExecutionReport {
    /// From the execution the run operation returned and its tasks.
    pub fn of(execution: &Value, tasks: &Value) -> ExecutionReport {
        let n = |k: &str| execution[k].as_u64().unwrap_or(0);
        let mut outcomes: Vec<TaskOutcome> = tasks["tasks"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                let last = &t["lastAttemptResult"];
                let exit_code = last["exitCode"].as_i64();
                let failed_status = last["status"]["code"].as_i64().is_some_and(|c| c != 0);
                TaskOutcome {
                    index: t["index"].as_u64().unwrap_or(0),
                    succeeded: t["completionTime"].is_string()
                        && exit_code.unwrap_or(0) == 0
                        && !failed_status,
                    exit_code,
                    message: last["status"]["message"].as_str().map(str::to_string),
                    retried: t["retried"].as_u64().unwrap_or(0),
                }
            })
            .collect();
        outcomes.sort_by_key(|t| t.index);
        ExecutionReport {
            name: execution["name"].as_str().unwrap_or("").to_string(),
            succeeded: n("succeededCount"),
            failed: n("failedCount"),
            cancelled: n("cancelledCount"),
            tasks: outcomes,
            log_uri: execution["logUri"].as_str().map(str::to_string),
        }
    }

    pub fn ok(&self) -> bool {
        self.failed == 0 && self.cancelled == 0 && self.tasks.iter().all(|t| t.succeeded)
    }
}

impl JobSpec {
    pub fn new(service: ServiceSpec, job: JobOptions) -> Result<JobSpec> {
        job.check()?;
        Ok(JobSpec { service, job })
    }

    /// `projects/P/locations/R/jobs/J`.
    pub fn name(&self) -> String {
        format!("{}/jobs/{}", self.service.settings.parent(), self.job.name)
    }

    /// The `Job` body of the Admin API v2: the service's container without
    /// what only serves requests (port, probes, CPU boost), its volumes,
    /// VPC and service account, and the job's command and task settings.
    pub fn to_v2(&self) -> Value {
        let service = self.service.to_v2();
        let t = &service["template"];
        let mut container = t["containers"][0].clone();
        if let Some(c) = container.as_object_mut() {
            for k in ["ports", "startupProbe", "livenessProbe"] {
                c.remove(k);
            }
            if let Some(r) = c.get_mut("resources").and_then(Value::as_object_mut) {
                r.remove("startupCpuBoost");
                if r.is_empty() {
                    c.remove("resources");
                }
            }
        }
        if !self.job.command.is_empty() {
            container["command"] = json!(self.job.command);
        }
        let mut task = json!({"containers": [container]});
        for k in ["volumes", "vpcAccess", "serviceAccount"] {
            if !t[k].is_null() {
                task[k] = t[k].clone();
            }
        }
        if let Some(r) = self.job.max_retries {
            task["maxRetries"] = json!(r);
        }
        if let Some(s) = self.job.task_timeout {
            task["timeout"] = json!(format!("{s}s"));
        }
        let mut execution = json!({"template": task});
        if let Some(n) = self.job.tasks {
            execution["taskCount"] = json!(n);
        }
        if let Some(n) = self.job.parallelism {
            execution["parallelism"] = json!(n);
        }
        let mut body = json!({"template": execution});
        if !service["labels"].is_null() {
            body["labels"] = service["labels"].clone();
        }
        body
    }

    /// Create or update: `allowMissing=true` creates a missing job.
    pub fn patch_request(&self, api_base: &str) -> ApiRequest {
        ApiRequest {
            method: "PATCH".into(),
            url: format!(
                "{}/v2/{}?allowMissing=true",
                api_base.trim_end_matches('/'),
                self.name()
            ),
            body: self.to_v2(),
        }
    }

    /// Starts an execution.
    pub fn run_request(&self, api_base: &str) -> ApiRequest {
        ApiRequest {
            method: "POST".into(),
            url: format!("{}/v2/{}:run", api_base.trim_end_matches('/'), self.name()),
            body: json!({}),
        }
    }

    /// The tasks of `execution` (`projects/…/executions/E`).
    pub fn tasks_request(api_base: &str, execution: &str) -> ApiRequest {
        ApiRequest {
            method: "GET".into(),
            url: format!("{}/v2/{execution}/tasks", api_base.trim_end_matches('/')),
            body: Value::Null,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::spec::tests::{checked, full, settings, IMAGE};

    fn options() -> JobOptions {
        JobOptions {
            name: "my-app-migrate".into(),
            command: vec!["python".into(), "manage.py".into(), "migrate".into()],
            tasks: Some(2),
            parallelism: Some(1),
            max_retries: Some(0),
            task_timeout: Some(600),
        }
    }

    #[test]
    fn a_job_is_the_services_container_with_a_command_and_matches_the_discovery_document() {
        for spec in [
            JobSpec::new(full(), options()).unwrap(),
            JobSpec::new(
                ServiceSpec::new(&settings(), IMAGE, 8080, None).unwrap(),
                JobOptions {
                    name: "small".into(),
                    ..Default::default()
                },
            )
            .unwrap(),
        ] {
            let r = spec.patch_request("https://run.googleapis.com");
            let (id, p) = checked(&r);
            assert_eq!(id, "projects.locations.jobs.patch");
            assert_eq!(p, Vec::<String>::new(), "{:#}", r.body);
            let (id, p) = checked(&spec.run_request("https://run.googleapis.com"));
            assert_eq!(id, "projects.locations.jobs.run");
            assert_eq!(p, Vec::<String>::new());
        }
        let body = JobSpec::new(full(), options()).unwrap().to_v2();
        let task = &body["template"]["template"];
        let c = &task["containers"][0];
        assert_eq!(c["command"], json!(["python", "manage.py", "migrate"]));
        assert!(c.get("ports").is_none() && c.get("startupProbe").is_none());
        assert_eq!(c["env"], full().to_v2()["template"]["containers"][0]["env"]);
        assert_eq!(
            task["volumes"][0]["cloudSqlInstance"]["instances"][0],
            "my-project:us-central1:db"
        );
        assert_eq!(task["vpcAccess"]["egress"], "PRIVATE_RANGES_ONLY");
        assert_eq!(task["timeout"], "600s");
        assert_eq!(body["template"]["taskCount"], 2);
        let tasks = JobSpec::tasks_request(
            "https://run.googleapis.com",
            "projects/p/locations/r/jobs/j/executions/e",
        );
        assert_eq!(
            checked(&tasks),
            (
                "projects.locations.jobs.executions.tasks.list".to_string(),
                vec![]
            )
        );
    }

    #[test]
    fn bad_job_options_name_the_flag() {
        let with = |f: &dyn Fn(&mut JobOptions)| {
            let mut o = options();
            f(&mut o);
            o.check().unwrap_err().to_string()
        };
        assert!(with(&|o| o.name = "Migrate".into()).contains("--job"));
        assert!(with(&|o| o.tasks = Some(0)).contains("--tasks"));
        assert!(with(&|o| o.parallelism = Some(3)).contains("--parallelism"));
        assert!(with(&|o| o.max_retries = Some(11)).contains("--max-retries"));
        assert!(with(&|o| o.task_timeout = Some(0)).contains("--task-timeout"));
    }

    #[test]
    fn an_execution_reports_each_task() {
        let e = json!({"name": "x/executions/e1", "succeededCount": 1, "failedCount": 1, "logUri": "https://log"});
        let t = json!({"tasks": [
            {"index": 1, "retried": 0, "lastAttemptResult": {"exitCode": 1, "status": {"code": 2, "message": "exit 1"}}},
            {"index": 0, "completionTime": "2026-12-02T00:00:00Z", "lastAttemptResult": {"exitCode": 0}},
        ]});
        let r = ExecutionReport::of(&e, &t);
        assert!(!r.ok());
        assert_eq!((r.tasks[0].index, r.tasks[0].succeeded), (0, true));
        assert_eq!(
            (r.tasks[1].exit_code, r.tasks[1].succeeded),
            (Some(1), false)
        );
        assert_eq!(r.log_uri.as_deref(), Some("https://log"));
    }
}
