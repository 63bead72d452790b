//! `slimpack deploy --emit`: the service as a file for teams that deploy
//! another way. Each is made from the same [`ServiceSpec`] as the API
//! request, so each describes the same service: Knative YAML for
//! `gcloud run services replace`, a Terraform `google_cloud_run_v2_service`
//! (as in seed 000), or a Cloud Build config that applies that YAML.

use super::job::JobSpec;
use super::settings::PublicAccess;
use super::spec::ServiceSpec;
use anyhow::Result;
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Knative YAML for `gcloud run services replace`.
    #[value(name = "service.yaml", alias = "yaml", alias = "knative")]
    ServiceYaml,
    /// A `google_cloud_run_v2_service` resource.
    #[value(alias = "tf")]
    Terraform,
    /// A Cloud Build step that applies the YAML.
    #[value(alias = "cloudbuild.yaml")]
    Cloudbuild,
    /// With --job: the job as YAML for `gcloud run jobs replace`.
    #[value(name = "job.yaml")]
    JobYaml,
}

pub fn emit(spec: &ServiceSpec, format: Format) -> Result<String> {
    match format {
        Format::ServiceYaml => service_yaml(spec),
        Format::Terraform => Ok(terraform(spec)),
        Format::Cloudbuild => cloudbuild(spec),
        Format::JobYaml => anyhow::bail!("--emit job.yaml is for jobs: add --job [NAME]"),
    }
}

/// `--job --emit`: the job as YAML for `gcloud run jobs replace`, or a
/// `google_cloud_run_v2_job`.
pub fn emit_job(j: &JobSpec, format: Format) -> Result<String> {
    match format {
        Format::JobYaml | Format::ServiceYaml => job_yaml(j),
        Format::Terraform => Ok(job_terraform(j)),
        Format::Cloudbuild => anyhow::bail!("--emit cloudbuild writes a service's deploy step; for a job use --emit job.yaml or terraform"),
    }
}

/// The job as the Cloud Run Admin API v1 `Job` that `gcloud run jobs
/// replace` reads: the service's Knative container, volumes and
/// connection annotations, the job's command and task settings.
pub fn job_yaml(j: &JobSpec) -> Result<String> {
    let s = &j.service.settings;
    let k = j.service.to_knative();
    let rev = &k["spec"]["template"]["spec"];
    let mut container = rev["containers"][0].clone();
    if let Some(c) = container.as_object_mut() {
        for f in ["ports", "startupProbe", "livenessProbe"] {
            c.remove(f);
        }
    }
    if !j.job.command.is_empty() {
        container["command"] = json!(j.job.command);
    }
    let mut task = json!({"containers": [container]});
    for f in ["volumes", "serviceAccountName"] {
        if !rev[f].is_null() {
            task[f] = rev[f].clone();
        }
    }
    if let Some(r) = j.job.max_retries {
        task["maxRetries"] = json!(r);
    }
    if let Some(t) = j.job.task_timeout {
        task["timeoutSeconds"] = json!(t);
    }
    let mut exec = json!({"template": {"spec": task}});
    if let Some(n) = j.job.tasks {
        exec["taskCount"] = json!(n);
    }
    if let Some(n) = j.job.parallelism {
        exec["parallelism"] = json!(n);
    }
    let connections: serde_json::Map<String, Value> = k["spec"]["template"]["metadata"]
        ["annotations"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(a, _)| {
            [
                "cloudsql-instances",
                "network-interfaces",
                "vpc-access-egress",
            ]
            .iter()
            .any(|x| a.ends_with(x))
        })
        .map(|(a, v)| (a.clone(), v.clone()))
        .collect();
    let mut template = json!({"spec": exec});
    if !connections.is_empty() {
        template["metadata"] = json!({"annotations": connections});
    }
    let doc = json!({
        "apiVersion": "run.googleapis.com/v1",
        "kind": "Job",
        "metadata": {"name": j.job.name, "labels": k["metadata"]["labels"]},
        "spec": {"template": template},
    });
    let head = format!(
        "# Written by slimpack deploy: Cloud Run job {} in {}/{}, image by digest.\n# Apply: gcloud run jobs replace job.yaml --project {} --region {}\n",
        j.job.name, s.project, s.region, s.project, s.region
    );
    Ok(head + &yaml(&doc)?)
}

/// `google_cloud_run_v2_job`: the v2 `Job` body in snake_case, as the
/// service's resource is.
pub fn job_terraform(j: &JobSpec) -> String {
    let s = &j.service.settings;
    let local = j.job.name.replace('-', "_");
    let mut out = format!(
        "# Written by slimpack deploy: Cloud Run job {} in {}/{}, image by digest.\n# Apply: terraform init && terraform apply\n",
        j.job.name, s.project, s.region
    );
    out.push_str(&format!(
        "\nresource \"google_cloud_run_v2_job\" \"{local}\" {{\n  project  = {}\n  name     = {}\n  location = {}\n\n",
        hcl_string(&s.project),
        hcl_string(&j.job.name),
        hcl_string(&s.region)
    ));
    if let Value::Object(body) = j.to_v2() {
        hcl_body(&body, 2, &mut out);
    }
    out.push_str("}\n");
    out
}

/// YAML with long single-line values (image references) on one line, not
/// folded: a reader greps for the digest. Multi-line strings stay literal.
fn yaml(v: &Value) -> Result<String> {
    let mut o = serde_saphyr::SerializerOptions::default();
    o.folded_wrap_chars = usize::MAX;
    Ok(serde_saphyr::to_string_with_options(v, o)?)
}

fn header(spec: &ServiceSpec, apply: &str) -> String {
    format!(
        "# Written by slimpack deploy: Cloud Run service {} in {}/{}, image by digest.\n# {apply}\n",
        spec.settings.service, spec.settings.project, spec.settings.region
    )
}

pub fn service_yaml(spec: &ServiceSpec) -> Result<String> {
    let s = &spec.settings;
    let mut apply = format!(
        "Apply: gcloud run services replace service.yaml --project {} --region {}",
        s.project, s.region
    );
    if let Some(iam) = iam_binding_command(spec) {
        apply.push_str(&format!("\n# then: {iam}"));
    }
    Ok(header(spec, &apply) + &yaml(&spec.to_knative())?)
}

/// The additive IAM change `--public-access iam-binding` makes, as gcloud.
fn iam_binding_command(spec: &ServiceSpec) -> Option<String> {
    let s = &spec.settings;
    (s.allow_unauthenticated && s.public_access == PublicAccess::IamBinding).then(|| {
        format!(
            "gcloud run services add-iam-policy-binding {} --project {} --region {} --member=allUsers --role=roles/run.invoker",
            s.service, s.project, s.region
        )
    })
}

pub fn cloudbuild(spec: &ServiceSpec) -> Result<String> {
    let s = &spec.settings;
    let service = yaml(&spec.to_knative())?;
    // A quoted heredoc: nothing in the YAML is expanded by the shell.
    let mut script = format!(
        "cat > /workspace/service.yaml <<'SLIMPACK_EOF'\n{service}SLIMPACK_EOF\ngcloud run services replace /workspace/service.yaml --project {} --region {}\n",
        s.project, s.region
    );
    if let Some(iam) = iam_binding_command(spec) {
        script.push_str(&iam);
        script.push('\n');
    }
    let doc = json!({
        "steps": [{
            "id": "deploy",
            "name": "gcr.io/google.com/cloudsdktool/cloud-sdk:slim",
            "script": script,
        }],
    });
    let build_there = format!(
        "To build on Cloud Build too, replace the step with one that runs the slimpack\n\
         # binary on the source (a runner starts with an empty cache; --cache makes it\n\
         # reuse what earlier builds pushed, mounting those layers, and push only the app):\n\
         #   - id: build-and-deploy\n\
         #     name: debian:bookworm-slim\n\
         #     script: ./slimpack deploy . --cache {} --project {} --region {}",
        s.cache_repository(),
        s.project,
        s.region
    );
    Ok(header(
        spec,
        &format!("The image is built and pushed by slimpack; this build only deploys it.\n# Run: gcloud builds submit --no-source --config cloudbuild.yaml\n# {build_there}"),
    ) + &yaml(&doc)?)
}

/// Objects that are Terraform map attributes (`x = {...}`), not blocks.
const MAP_ATTRIBUTES: &[&str] = &["labels", "limits"];

fn snake(camel: &str) -> String {
    let mut out = String::new();
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// An HCL string literal: `${` and `%{` would start a template.
fn hcl_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out.replace("${", "$${").replace("%{", "%%{")
}

fn hcl_scalar(v: &Value) -> String {
    match v {
        Value::String(s) => hcl_string(s),
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(hcl_scalar).collect::<Vec<_>>().join(", ")
        ),
        v => v.to_string(),
    }
}

/// The body of a block: attributes first (aligned as `terraform fmt`
/// would), then nested blocks.
fn hcl_body(obj: &serde_json::Map<String, Value>, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    let is_block = |k: &str, v: &Value| {
        (v.is_object() && !MAP_ATTRIBUTES.contains(&k))
            || v.as_array()
                .is_some_and(|a| a.iter().all(Value::is_object) && !a.is_empty())
    };
    let attrs: Vec<(String, &Value)> = obj
        .iter()
        .filter(|(k, v)| !is_block(k, v))
        .map(|(k, v)| (snake(k), v))
        .collect();
    let width = attrs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in &attrs {
        match v.as_object() {
            Some(m) => {
                out.push_str(&format!("{pad}{k:<width$} = {{\n"));
                let w = m.keys().map(|k| k.len() + 2).max().unwrap_or(0);
                for (mk, mv) in m {
                    out.push_str(&format!(
                        "{pad}  {:<w$} = {}\n",
                        hcl_string(mk),
                        hcl_scalar(mv)
                    ));
                }
                out.push_str(&format!("{pad}}}\n"));
            }
            None => out.push_str(&format!("{pad}{k:<width$} = {}\n", hcl_scalar(v))),
        }
    }
    for (k, v) in obj.iter().filter(|(k, v)| is_block(k, v)) {
        let items: Vec<&Value> = match v {
            Value::Array(a) => a.iter().collect(),
            v => vec![v],
        };
        for item in items {
            if !out.ends_with("{\n") {
                out.push('\n');
            }
            out.push_str(&format!("{pad}{} {{\n", snake(k)));
            if let Some(m) = item.as_object() {
                hcl_body(m, indent + 2, out);
            }
            out.push_str(&format!("{pad}}}\n"));
        }
    }
}

/// `google_cloud_run_v2_service`: the provider's arguments are the v2 API's
/// fields in snake_case, so the resource is the API body translated
/// mechanically (and cannot say something the request does not).
pub fn terraform(spec: &ServiceSpec) -> String {
    let s = &spec.settings;
    let local = s.service.replace('-', "_");
    let mut out = header(spec, "Apply: terraform init && terraform apply");
    out.push_str(&format!(
        "\nresource \"google_cloud_run_v2_service\" \"{local}\" {{\n  project  = {}\n  name     = {}\n  location = {}\n\n",
        hcl_string(&s.project),
        hcl_string(&s.service),
        hcl_string(&s.region)
    ));
    if let Value::Object(body) = spec.to_v2() {
        hcl_body(&body, 2, &mut out);
    }
    out.push_str("}\n");
    if iam_binding_command(spec).is_some() {
        // iam_member adds one member; it never replaces the policy.
        out.push_str(&format!(
            "\nresource \"google_cloud_run_v2_service_iam_member\" \"{local}_public\" {{\n  project  = google_cloud_run_v2_service.{local}.project\n  location = google_cloud_run_v2_service.{local}.location\n  name     = google_cloud_run_v2_service.{local}.name\n  role     = \"roles/run.invoker\"\n  member   = \"allUsers\"\n}}\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::schemas;
    use crate::deploy::spec::tests::{full, settings, IMAGE};

    #[test]
    fn service_yaml_parses_back_to_the_knative_service() {
        let spec = full();
        let text = service_yaml(&spec).unwrap();
        assert!(text.starts_with("# Written by slimpack deploy"));
        let back: Value = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(back, spec.to_knative());
        let mut out = Vec::new();
        schemas::validate_openapi(
            &back,
            &schemas::knative_service_schema(),
            "Service",
            &mut out,
        );
        assert_eq!(out, Vec::<String>::new());
        // Annotation values are strings in Knative: "true" and "10" quoted.
        assert!(
            text.contains("run.googleapis.com/invoker-iam-disabled: \"true\""),
            "{text}"
        );
        assert!(
            text.contains("autoscaling.knative.dev/maxScale: \"10\""),
            "{text}"
        );
        // The digest on one line, where grep finds it.
        assert!(text.contains(&format!("image: {IMAGE}\n")), "{text}");
    }

    /// Only annotations Cloud Run documents for service YAML.
    #[test]
    fn only_documented_annotations() {
        const DOCUMENTED: &[&str] = &[
            "run.googleapis.com/ingress",
            "run.googleapis.com/invoker-iam-disabled",
            "run.googleapis.com/startup-cpu-boost",
            "autoscaling.knative.dev/minScale",
            "autoscaling.knative.dev/maxScale",
            "run.googleapis.com/cloudsql-instances",
            "run.googleapis.com/network-interfaces",
            "run.googleapis.com/vpc-access-egress",
        ];
        let k = full().to_knative();
        for a in [
            &k["metadata"]["annotations"],
            &k["spec"]["template"]["metadata"]["annotations"],
        ] {
            for key in a.as_object().unwrap().keys() {
                assert!(DOCUMENTED.contains(&key.as_str()), "{key}");
            }
        }
    }

    #[test]
    fn a_job_is_emitted_from_the_same_spec() {
        let j = JobSpec::new(
            full(),
            crate::deploy::job::JobOptions {
                name: "my-app-migrate".into(),
                command: vec!["python".into(), "manage.py".into(), "migrate".into()],
                tasks: Some(1),
                max_retries: Some(0),
                ..Default::default()
            },
        )
        .unwrap();
        let text = job_yaml(&j).unwrap();
        let v: Value = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(v["kind"], "Job");
        assert_eq!(v["apiVersion"], "run.googleapis.com/v1");
        let task = &v["spec"]["template"]["spec"]["template"]["spec"];
        assert_eq!(task["containers"][0]["image"], IMAGE);
        assert_eq!(task["containers"][0]["command"][2], "migrate");
        assert!(task["containers"][0].get("ports").is_none());
        assert_eq!(task["maxRetries"], 0);
        assert_eq!(
            v["spec"]["template"]["metadata"]["annotations"]
                ["run.googleapis.com/cloudsql-instances"],
            "my-project:us-central1:db"
        );
        assert_eq!(
            v["metadata"]["labels"]["cloud.googleapis.com/location"],
            "us-central1"
        );
        let tf = job_terraform(&j);
        for needle in [
            "resource \"google_cloud_run_v2_job\" \"my_app_migrate\" {",
            "cloud_sql_instance {",
            "command = [\"python\", \"manage.py\", \"migrate\"]",
        ] {
            assert!(tf.contains(needle), "{needle} not in\n{tf}");
        }
        for (attr, value) in [("task_count", "1"), ("max_retries", "0")] {
            assert!(
                tf.lines().any(
                    |l| l.trim().starts_with(attr) && l.trim().ends_with(&format!("= {value}"))
                ),
                "{attr} = {value} not in\n{tf}"
            );
        }
        assert!(emit(&full(), Format::JobYaml).is_err());
        assert!(emit_job(&j, Format::Cloudbuild).is_err());
    }

    #[test]
    fn terraform_is_the_api_body_in_snake_case() {
        let tf = terraform(&full());
        for needle in [
            "resource \"google_cloud_run_v2_service\" \"my_app\" {",
            "  invoker_iam_disabled = true\n",
            "  ingress              = \"INGRESS_TRAFFIC_ALL\"\n",
            "    max_instance_request_concurrency = 80\n",
            "    timeout                          = \"300s\"\n",
            "      min_instance_count = 0\n",
            "        container_port = 8080\n",
            "        startup_cpu_boost = true\n",
            "          \"memory\" = \"512Mi\"\n",
            "        value_source {\n          secret_key_ref {\n",
            "  project  = \"my-project\"\n  name     = \"my-app\"\n",
            "        http_get {\n          path = \"/health\"\n",
            "  labels               = {\n    \"team\" = \"web\"\n  }\n",
        ] {
            assert!(tf.contains(needle), "{needle:?} not in\n{tf}");
        }
        assert!(!tf.contains("iam_member"));
        // Strings are HCL literals: quotes, newlines and ${ escaped.
        assert_eq!(hcl_string("a\"b\n${x}%{y}"), "\"a\\\"b\\n$${x}%%{y}\"");
        assert!(tf.contains("yes: no # \\\"quoted\\\"\\nline"), "{tf}");
        let opens = tf.matches('{').count() - tf.matches("${").count();
        assert_eq!(opens, tf.matches('}').count());

        let mut s = full().settings;
        s.public_access = PublicAccess::IamBinding;
        let tf = terraform(&ServiceSpec::new(&s, IMAGE, 8080, None).unwrap());
        assert!(
            tf.contains("google_cloud_run_v2_service_iam_member"),
            "{tf}"
        );
        assert!(tf.contains("member   = \"allUsers\""));
        assert!(!tf.contains("invoker_iam_disabled"));
    }

    #[test]
    fn cloudbuild_applies_the_same_yaml() {
        let spec = ServiceSpec::new(&settings(), IMAGE, 8080, None).unwrap();
        let text = cloudbuild(&spec).unwrap();
        let doc: Value = serde_saphyr::from_str(&text).unwrap();
        let script = doc["steps"][0]["script"].as_str().unwrap();
        let yaml = script
            .split_once("<<'SLIMPACK_EOF'\n")
            .unwrap()
            .1
            .split_once("SLIMPACK_EOF\n")
            .unwrap()
            .0;
        let k: Value = serde_saphyr::from_str(yaml).unwrap();
        assert_eq!(k, spec.to_knative());
        assert!(script.contains(
            "gcloud run services replace /workspace/service.yaml --project my-project --region us-central1"
        ));
        // How a pipeline builds with the registry cache, beside the images.
        let cache = format!("--cache {}", spec.settings.cache_repository());
        assert!(text.contains(&cache), "{text}");
        assert!(cache.ends_with("/slimpack-cache"));
        use clap::ValueEnum;
        assert_eq!(Format::from_str("tf", false).unwrap(), Format::Terraform);
        assert_eq!(
            Format::from_str("service.yaml", false).unwrap(),
            Format::ServiceYaml
        );
        assert!(Format::from_str("helm", false).is_err());
    }
}
