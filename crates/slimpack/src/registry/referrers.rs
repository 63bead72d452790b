//! Artifacts attached to an image (OCI distribution 1.1 referrers): a
//! manifest whose `subject` is the image, listed by the referrers API,
//! or, on registries without it, in the image index under the fallback
//! tag `sha256-<hex>` that the spec defines for them.

use super::client::{Body, Client};
use super::reference::Reference;
use crate::core::cache::Cache;
use crate::core::progress::Progress;
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

const INDEX_TYPE: &str = slimpack_oci::MEDIA_TYPE_INDEX;
/// An attached document is read whole: an SBOM this large is not one.
const MAX_ARTIFACT: u64 = 64 << 20;

/// An image a manifest refers to: its digest, size and media type.
pub struct Subject<'a> {
    pub digest: &'a str,
    pub size: u64,
    pub media_type: &'a str,
}

/// What attaching did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Attached {
    pub digest: String,
    pub artifact_type: String,
    /// The fallback tag updated, when the registry has no referrers API.
    pub fallback_tag: Option<String>,
}

/// The manifest of an artifact of one blob, referring to `subject`.
pub fn manifest(artifact_type: &str, blob: (&str, u64), subject: &Subject) -> Vec<u8> {
    super::artifact_manifest(
        artifact_type,
        vec![json!({ "mediaType": artifact_type, "digest": blob.0, "size": blob.1 })],
        json!({"subject": { "mediaType": subject.media_type, "digest": subject.digest, "size": subject.size }}),
    )
}

/// The fallback tag of a subject digest.
pub fn fallback_tag(subject: &str) -> String {
    subject.replacen(':', "-", 1)
}

/// Attaches `bytes` (of `artifact_type`) to the image `subject` in
/// `target`'s repository; the image must be there already.
pub fn attach(
    cache: &Cache,
    target: &Reference,
    subject: &Subject,
    artifact_type: &str,
    bytes: &[u8],
    insecure: bool,
    progress: &Progress,
) -> Result<Attached> {
    let blob = cache.blobs.put_bytes(bytes)?;
    cache.blobs.put_bytes(super::EMPTY)?;
    let m = manifest(artifact_type, (&blob, bytes.len() as u64), subject);
    let digest = cache.blobs.put_bytes(&m)?;
    let repo = Reference {
        tag: None,
        digest: None,
        ..target.clone()
    };
    super::push::push(&cache.blobs, &digest, &repo, &[], insecure, cache, progress).with_context(
        || {
            format!(
                "attaching the {artifact_type} document to {}",
                subject.digest
            )
        },
    )?;
    let client = Client::connect(&repo, "pull,push", &[], insecure)?;
    let fallback_tag = if api(&client, subject.digest)?.is_some() {
        None
    } else {
        let tag = fallback_tag(subject.digest);
        let mut index = match client.find_manifest(&tag)? {
            Some((b, _)) => serde_json::from_slice::<Value>(&b)
                .ok()
                .filter(|v| v["manifests"].is_array())
                .unwrap_or_else(empty_index),
            None => empty_index(),
        };
        let list = index["manifests"].as_array_mut().expect("checked above");
        if !list.iter().any(|d| d["digest"] == digest.as_str()) {
            list.push(json!({
                "mediaType": slimpack_oci::MEDIA_TYPE_MANIFEST,
                "digest": digest,
                "size": m.len(),
                "artifactType": artifact_type,
            }));
            client.put_manifest(&tag, &serde_json::to_vec(&index)?, INDEX_TYPE)?;
        }
        Some(tag)
    };
    Ok(Attached {
        digest,
        artifact_type: artifact_type.into(),
        fallback_tag,
    })
}

fn empty_index() -> Value {
    json!({ "schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": [] })
}

/// The referrers API's index for `subject`; `None` when the registry has
/// no such API (it answers 404 or 405 for the path).
fn api(client: &Client, subject: &str) -> Result<Option<Value>> {
    let url = client.url(&format!("referrers/{subject}"));
    let r = client.request("GET", &url, &[("Accept", INDEX_TYPE)], Body::Empty)?;
    if r.status != 200 {
        return Ok(None);
    }
    let v: Value =
        serde_json::from_slice(&r.body).map_err(|e| anyhow!("{url}: not an image index: {e}"))?;
    Ok(v["manifests"].is_array().then_some(v))
}

/// The descriptors of the artifacts of `artifact_type` attached to
/// `subject`: by the API where there is one, else by the fallback tag.
pub fn list(client: &Client, subject: &str, artifact_type: &str) -> Result<Vec<Value>> {
    let index = match api(client, subject)? {
        Some(i) => Some(i),
        None => client
            .find_manifest(&fallback_tag(subject))?
            .and_then(|(b, _)| serde_json::from_slice::<Value>(&b).ok()),
    };
    Ok(index
        .and_then(|i| i["manifests"].as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter(|d| d["artifactType"] == artifact_type)
        .collect())
}

/// The first attached document of `artifact_type` for the image
/// `reference` names: (its manifest's digest, its bytes), every blob
/// checked against its digest and the manifest against its subject.
pub fn fetch(
    cache: &Cache,
    reference: &Reference,
    subject: &str,
    artifact_type: &str,
    insecure: bool,
) -> Result<Option<(String, Vec<u8>)>> {
    let client = Client::connect(reference, "pull", &[], insecure)?;
    for d in list(&client, subject, artifact_type)? {
        let Some(digest) = d["digest"]
            .as_str()
            .filter(|x| super::reference::valid_digest(x))
        else {
            continue;
        };
        let (bytes, _) = client.get_manifest(digest)?;
        if slimpack_oci::sha256_digest(&bytes) != digest {
            bail!(
                "the referrer manifest {digest} from {} does not match its digest",
                reference.repo_key()
            );
        }
        let m: Value = serde_json::from_slice(&bytes)?;
        if m["subject"]["digest"] != subject {
            continue;
        }
        let Some(layer) = m["layers"].as_array().and_then(|l| l.first()) else {
            continue;
        };
        let (Some(blob), size) = (
            layer["digest"].as_str(),
            layer["size"].as_u64().unwrap_or(0),
        ) else {
            continue;
        };
        if size > MAX_ARTIFACT {
            bail!("the {artifact_type} document {blob} attached to {subject} is {size} bytes; not read");
        }
        if !cache.blobs.contains(blob) {
            client.fetch_blob(blob, &cache.blobs, None)?;
        }
        return Ok(Some((digest.to_string(), cache.blobs.read(blob)?)));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::cache::Cache;

    #[test]
    fn an_artifact_names_its_subject_and_type() {
        let s = Subject {
            digest: "sha256:ab",
            size: 9,
            media_type: slimpack_oci::MEDIA_TYPE_MANIFEST,
        };
        let m: Value =
            serde_json::from_slice(&manifest("application/spdx+json", ("sha256:cd", 3), &s))
                .unwrap();
        assert_eq!(m["artifactType"], "application/spdx+json");
        assert_eq!(m["subject"]["digest"], "sha256:ab");
        assert_eq!(m["layers"][0]["digest"], "sha256:cd");
        assert_eq!(m["config"]["mediaType"], super::super::EMPTY_TYPE);
        assert_eq!(fallback_tag("sha256:ab"), "sha256-ab");
    }

    /// A registry that lists a referrer and then serves other bytes for
    /// it, or a referrer of another image: refused, and skipped.
    #[test]
    fn a_hostile_registrys_referrers_are_refused_or_skipped() {
        let subject = format!("sha256:{}", "1".repeat(64));
        let serve = |manifest: String, listed: String| {
            let index = json!({"schemaVersion": 2, "manifests": [
                {"digest": listed, "artifactType": "application/spdx+json"}]})
            .to_string();
            super::super::testing::serve(8, move |line| {
                let (status, body) = if line.contains("/referrers/") {
                    ("404 Not Found", "{}".to_string())
                } else if line.contains("/manifests/sha256-") {
                    ("200 OK", index.clone())
                } else if line.contains("/manifests/") {
                    ("200 OK", manifest.clone())
                } else {
                    ("200 OK", "{}".to_string())
                };
                format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/vnd.oci.image.index.v1+json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes()
            })
        };
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::open(d.path()).unwrap();
        let fetch_from = |port: u16| {
            let r = Reference::parse(&format!("127.0.0.1:{port}/app:v1")).unwrap();
            fetch(&cache, &r, &subject, "application/spdx+json", true)
        };
        // Listed under one digest, served as other bytes.
        let other = Subject {
            digest: &subject,
            size: 1,
            media_type: slimpack_oci::MEDIA_TYPE_MANIFEST,
        };
        let real =
            String::from_utf8(manifest("application/spdx+json", ("sha256:cd", 3), &other)).unwrap();
        let lie = format!("sha256:{}", "2".repeat(64));
        let e = format!("{:#}", fetch_from(serve(real.clone(), lie)).unwrap_err());
        assert!(e.contains("does not match its digest"), "{e}");
        // A referrer of another image: not this one's document.
        let elsewhere = Subject {
            digest: &format!("sha256:{}", "3".repeat(64)),
            size: 1,
            media_type: slimpack_oci::MEDIA_TYPE_MANIFEST,
        };
        let m = String::from_utf8(manifest(
            "application/spdx+json",
            ("sha256:cd", 3),
            &elsewhere,
        ))
        .unwrap();
        let listed = slimpack_oci::sha256_digest(m.as_bytes());
        assert_eq!(fetch_from(serve(m, listed)).unwrap(), None);
    }
}
