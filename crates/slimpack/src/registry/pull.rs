//! Pulling an image into the cache's blob store, each blob checked against
//! its digest before it is kept.

use super::client::Client;
use super::{record_location, Reference};
use crate::core::cache::Cache;
use crate::core::progress::Progress;
use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use slimpack_oci::LoadedImage;
use std::time::Instant;

#[derive(Debug, Clone, Serialize)]
pub struct PullReport {
    /// `registry/repo@sha256:...` of the platform image pulled.
    pub reference: String,
    pub digest: String,
    pub downloaded_bytes: u64,
    pub cached_bytes: u64,
    pub seconds: f64,
}

fn checked(bytes: &[u8], digest: &str, what: &str) -> Result<()> {
    let actual = slimpack_oci::sha256_digest(bytes);
    if actual != digest {
        bail!("{what}: the registry sent content with digest {actual}, not {digest}; nothing was stored");
    }
    Ok(())
}

/// Pulls `reference` (linux/amd64 from an index) into `cache.blobs`.
pub fn pull(
    reference: &Reference,
    insecure: bool,
    cache: &Cache,
    progress: &Progress,
) -> Result<(LoadedImage, PullReport)> {
    let started = Instant::now();
    let client = Client::connect(reference, "pull", &[], insecure)?;
    let store = &cache.blobs;
    let (bytes, _media) = client.get_manifest(reference.manifest_ref())?;
    if let Some(d) = &reference.digest {
        checked(&bytes, d, &reference.to_string())?;
    }
    let mut digest = store.put_bytes(&bytes)?;
    let mut doc: serde_json::Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{reference}: the manifest is not JSON"))?;
    for _ in 0..4 {
        if !slimpack_oci::is_index(&doc) {
            break;
        }
        let m = slimpack_oci::pick_platform(&doc).ok_or_else(|| {
            let platforms: Vec<String> = doc["manifests"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| {
                    format!(
                        "{}/{}",
                        m["platform"]["os"].as_str().unwrap_or("?"),
                        m["platform"]["architecture"].as_str().unwrap_or("?")
                    )
                })
                .collect();
            anyhow!(
                "{reference} has no linux/amd64 image (it has {})",
                platforms.join(", ")
            )
        })?;
        digest = m["digest"]
            .as_str()
            .ok_or_else(|| anyhow!("{reference}: an index entry without a digest"))?
            .to_string();
        let (b, _) = client.get_manifest(&digest)?;
        checked(&b, &digest, &format!("{reference} (linux/amd64)"))?;
        store.put_bytes(&b)?;
        doc = serde_json::from_slice(&b)?;
    }
    let blobs = super::manifest_blobs(&doc, &reference.to_string())?;
    // The config is read into memory: a descriptor announcing more than any
    // config holds is refused before a byte of it is fetched.
    if let Some(size) = doc["config"]["size"].as_u64() {
        if size > slimpack_oci::JSON_BLOB_LIMIT {
            bail!(
                "{reference}: its config is {} MiB, more than any image config holds (at most {} MiB are read); the image is malformed or hostile",
                size >> 20,
                slimpack_oci::JSON_BLOB_LIMIT >> 20
            );
        }
    }
    let (have, missing): (Vec<_>, Vec<_>) = blobs.iter().partition(|(d, _)| store.contains(d));
    let bars = indicatif::MultiProgress::new();
    crate::core::parallel::for_each(super::WORKERS, &missing, |_, (d, size)| {
        let bar = bars.add(progress.bytes(format!("pull {}", &d[7..19]), *size));
        let r = client.fetch_blob(d, store, Some(&bar));
        match &r {
            Ok(()) => bar.finish_and_clear(),
            Err(_) => bar.abandon(),
        }
        r
    })
    .with_context(|| format!("pulling {reference}"))?;
    let repo_key = reference.repo_key();
    for (d, _) in &blobs {
        record_location(cache, d, &repo_key);
    }
    let image = slimpack_oci::load_manifest(store, &digest)
        .with_context(|| format!("reading the image pulled from {reference}"))?;
    Ok((
        image,
        PullReport {
            reference: reference.with_digest(&digest).to_string(),
            digest,
            downloaded_bytes: missing.iter().map(|b| b.1).sum(),
            cached_bytes: have.iter().map(|b| b.1).sum(),
            seconds: started.elapsed().as_secs_f64(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn a_config_larger_than_any_config_is_refused_before_it_is_fetched() {
        let blob_asks = Arc::new(AtomicUsize::new(0));
        let asks = blob_asks.clone();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": format!("sha256:{}", "a".repeat(64)), "size": 300_000_000u64},
            "layers": []
        })
        .to_string();
        let port = super::super::testing::serve(8, move |line| {
            if line.contains("/blobs/") {
                asks.fetch_add(1, Ordering::SeqCst);
            }
            let body = if line.contains("/manifests/") {
                manifest.as_str()
            } else {
                "{}"
            };
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        });
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::open(d.path()).unwrap();
        let r = Reference::parse(&format!("127.0.0.1:{port}/app:v1")).unwrap();
        let e = pull(&r, true, &cache, &Progress::new(false)).unwrap_err();
        let e = format!("{e:#}");
        assert!(e.contains("config is 286 MiB"), "{e}");
        assert_eq!(blob_asks.load(Ordering::SeqCst), 0, "nothing fetched");
    }
}
