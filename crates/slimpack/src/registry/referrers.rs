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

const EMPTY_TYPE: &str = "application/vnd.oci.empty.v1+json";
const EMPTY: &[u8] = b"{}";
const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";
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
    let doc = json!({
        "schemaVersion": 2,
        "mediaType": slimpack_oci::MEDIA_TYPE_MANIFEST,
        "artifactType": artifact_type,
        "config": {
            "mediaType": EMPTY_TYPE,
            "digest": slimpack_oci::sha256_digest(EMPTY),
            "size": EMPTY.len(),
        },
        "layers": [{ "mediaType": artifact_type, "digest": blob.0, "size": blob.1 }],
        "subject": { "mediaType": subject.media_type, "digest": subject.digest, "size": subject.size },
    });
    serde_json::to_vec(&doc).expect("a JSON value serialises")
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
    cache.blobs.put_bytes(EMPTY)?;
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
        assert_eq!(m["config"]["mediaType"], EMPTY_TYPE);
        assert_eq!(fallback_tag("sha256:ab"), "sha256-ab");
    }
}
