//! Checks API requests against Google's published discovery documents: the
//! method exists for that HTTP verb and path, every query parameter is one
//! it takes, and the body has known fields only, no output-only fields, the
//! right JSON types and enum values. Shared by the unit tests (through
//! `#[path]`) and the deploy end-to-end test. Also the Knative Service
//! CRD schema, for the service.yaml slimpack writes.
#![allow(dead_code)]

use serde_json::{json, Value};

pub fn load(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/cloudrun/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Problems of `v` against the discovery schema `schema`.
pub fn validate(doc: &Value, v: &Value, schema: &Value, at: &str, out: &mut Vec<String>) {
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

/// Problems of a body against a named schema.
pub fn problems(doc: &Value, schema: &str, body: &Value) -> Vec<String> {
    let mut out = Vec::new();
    validate(doc, body, &json!({ "$ref": schema }), schema, &mut out);
    out
}

fn methods<'a>(resources: &'a Value, out: &mut Vec<(String, &'a Value)>, at: &str) {
    let Some(map) = resources.as_object() else {
        return;
    };
    for (name, r) in map {
        if let Some(ms) = r["methods"].as_object() {
            for (m, v) in ms {
                out.push((format!("{at}{name}.{m}"), v));
            }
        }
        methods(&r["resources"], out, &format!("{at}{name}."));
    }
}

fn path_matches(flat: &str, path: &str) -> bool {
    let pattern = regex::escape(flat).replace(r"\{", "{").replace(r"\}", "}");
    let pattern = regex::Regex::new(r"\{[A-Za-z0-9]+\}")
        .unwrap()
        .replace_all(&pattern, "[^/:]+");
    regex::Regex::new(&format!("^{pattern}$"))
        .unwrap()
        .is_match(path)
}

/// The method `(id, definition)` of `doc` that `verb path` calls, and the
/// problems of the request (query parameters and body). `url` is relative
/// to the API's root (`v2/projects/...?...`).
pub fn check_request(doc: &Value, verb: &str, url: &str, body: &Value) -> (String, Vec<String>) {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let mut all = Vec::new();
    methods(&doc["resources"], &mut all, "");
    let Some((id, m)) = all.into_iter().find(|(_, m)| {
        m["httpMethod"] == verb && path_matches(m["flatPath"].as_str().unwrap_or(""), path)
    }) else {
        return (
            String::new(),
            vec![format!("{verb} {path}: no such method")],
        );
    };
    let mut out = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let p = &m["parameters"][k];
        if p["location"] != "query" {
            out.push(format!("{id}: no query parameter {k}"));
        } else if p["type"] == "boolean" && !["true", "false"].contains(&v) {
            out.push(format!("{id}: {k}={v} is not a boolean"));
        } else if p["type"] == "integer" && v.parse::<i64>().is_err() {
            out.push(format!("{id}: {k}={v} is not an integer"));
        }
    }
    match (m["request"]["$ref"].as_str(), body) {
        (Some(schema), _) => out.extend(problems(doc, schema, body)),
        (None, Value::Null) => {}
        (None, _) => out.push(format!("{id}: takes no body")),
    }
    (id, out)
}

/// The Knative Serving Service CRD's OpenAPI v3 schema (v1).
pub fn knative_service_schema() -> Value {
    let path = format!(
        "{}/tests/fixtures/cloudrun/knative-serving-service-crd.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let crd: Value = serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let v1 = crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "v1")
        .unwrap();
    v1["schema"]["openAPIV3Schema"].clone()
}

/// Problems of `v` against a Kubernetes structural schema: unknown fields
/// (where unknown fields are not preserved), types, required fields, enums.
pub fn validate_openapi(v: &Value, schema: &Value, at: &str, out: &mut Vec<String>) {
    if schema["x-kubernetes-int-or-string"] == true {
        if !(v.is_string() || v.is_i64()) {
            out.push(format!("{at}: {v} is neither an integer nor a string"));
        }
        return;
    }
    let ty = schema["type"].as_str().unwrap_or("");
    let ok = match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        _ => true,
    };
    if !ok {
        out.push(format!("{at}: {v} is not of type {ty}"));
        return;
    }
    if let Some(e) = schema["enum"].as_array() {
        if !e.contains(v) {
            out.push(format!("{at}: {v} is not one of {e:?}"));
        }
    }
    if let Some(items) = v.as_array() {
        for (i, x) in items.iter().enumerate() {
            validate_openapi(x, &schema["items"], &format!("{at}[{i}]"), out);
        }
    }
    let Some(m) = v.as_object() else { return };
    for r in schema["required"].as_array().into_iter().flatten() {
        if let Some(r) = r.as_str() {
            if !m.contains_key(r) {
                out.push(format!("{at}.{r}: required"));
            }
        }
    }
    let props = schema["properties"].as_object();
    let preserve = schema["x-kubernetes-preserve-unknown-fields"] == true;
    for (k, x) in m {
        match (
            props.and_then(|p| p.get(k)),
            schema.get("additionalProperties"),
        ) {
            (Some(p), _) => validate_openapi(x, p, &format!("{at}.{k}"), out),
            (None, Some(ap)) if ap.is_object() => {
                validate_openapi(x, ap, &format!("{at}.{k}"), out)
            }
            (None, _) if preserve || props.is_none() => {}
            (None, _) => out.push(format!("{at}.{k}: no such field")),
        }
    }
}
