//! Registries: push images to and pull them from any OCI registry, with the
//! credentials users already have. Only what is missing moves: blobs the
//! registry holds are skipped, blobs another repository of it holds are
//! mounted, and pulled blobs are cached by digest.

pub mod auth;
pub mod cache_repo;
pub mod client;
pub mod google;
mod pull;
mod push;
pub mod reference;
pub mod referrers;
#[cfg(test)]
pub(crate) mod testing;

pub use pull::{pull, PullReport};
pub use push::{push, BlobAction, PushReport, PushedBlob};
pub use reference::Reference;

use crate::core::cache::{Cache, RecordKind};

/// Blobs moved at once: enough to fill a link, few enough for 2 cores.
const WORKERS: usize = 3;

/// Registries named insecure (`--insecure-registry`, or
/// `SLIMPACK_INSECURE_REGISTRIES=host:port,...`) are spoken to over plain
/// HTTP; loopback ones always are.
pub fn is_insecure(reference: &Reference, flagged: &[String]) -> bool {
    let env = std::env::var("SLIMPACK_INSECURE_REGISTRIES").unwrap_or_default();
    flagged
        .iter()
        .map(String::as_str)
        .chain(env.split(',').map(str::trim))
        .any(|h| !h.is_empty() && h == reference.registry)
}

/// The blobs an image manifest names: its config first, then each layer
/// once, as (digest, size). `what` names the image in errors.
fn manifest_blobs(doc: &serde_json::Value, what: &str) -> anyhow::Result<Vec<(String, u64)>> {
    let mut blobs: Vec<(String, u64)> = Vec::new();
    for d in std::iter::once(&doc["config"]).chain(doc["layers"].as_array().into_iter().flatten()) {
        let digest = d["digest"]
            .as_str()
            .filter(|x| reference::valid_digest(x))
            .ok_or_else(|| anyhow::anyhow!("{what}: a descriptor without a sha256 digest"))?;
        if !blobs.iter().any(|b| b.0 == digest) {
            blobs.push((digest.to_string(), d["size"].as_u64().unwrap_or(0)));
        }
    }
    Ok(blobs)
}

/// The empty config an artifact manifest names, and its media type.
const EMPTY_TYPE: &str = "application/vnd.oci.empty.v1+json";
const EMPTY: &[u8] = b"{}";

/// An OCI artifact manifest (`artifactType`, the empty config) with
/// `layers` and the fields in `extra` (`subject`, `annotations`): the form
/// the build cache's records and the documents attached to images share.
fn artifact_manifest(
    artifact_type: &str,
    layers: Vec<serde_json::Value>,
    extra: serde_json::Value,
) -> Vec<u8> {
    let mut doc = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": slimpack_oci::MEDIA_TYPE_MANIFEST,
        "artifactType": artifact_type,
        "config": {
            "mediaType": EMPTY_TYPE,
            "digest": slimpack_oci::sha256_digest(EMPTY),
            "size": EMPTY.len(),
        },
        "layers": layers,
    });
    if let (Some(d), serde_json::Value::Object(e)) = (doc.as_object_mut(), extra) {
        d.extend(e);
    }
    serde_json::to_vec(&doc).expect("a JSON value serialises")
}

const LOCATIONS: RecordKind = RecordKind::BlobLocations;

/// Repositories (`registry/repo`) known to hold `digest`: where a push can
/// mount it from.
fn known_locations(cache: &Cache, digest: &str) -> Vec<String> {
    cache
        .get::<Vec<String>>(LOCATIONS, digest)
        .unwrap_or_default()
}

fn record_location(cache: &Cache, digest: &str, repo_key: &str) {
    let mut known = known_locations(cache, digest);
    if !known.iter().any(|k| k == repo_key) {
        known.push(repo_key.to_string());
        known.sort();
        // Only a hint for later mounts: losing it costs an upload, not
        // correctness.
        let _ = cache.put(LOCATIONS, digest, &known);
    }
}
