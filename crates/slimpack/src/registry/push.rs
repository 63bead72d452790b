//! Pushing an image: every blob the registry lacks, then the manifest.

use super::client::Client;
use super::{known_locations, record_location, Reference};
use crate::core::cache::Cache;
use crate::core::progress::{human, Progress};
use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use slimpack_oci::BlobStore;
use std::time::Instant;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum BlobAction {
    /// The registry already had it.
    Skipped,
    /// Mounted from another repository of the same registry.
    Mounted {
        from: String,
    },
    Uploaded,
}

#[derive(Debug, Clone, Serialize)]
pub struct PushedBlob {
    pub digest: String,
    pub kind: &'static str,
    pub size: u64,
    #[serde(flatten)]
    pub action: BlobAction,
}

#[derive(Debug, Clone, Serialize)]
pub struct PushReport {
    /// `registry/repo@sha256:...`: what to deploy.
    pub reference: String,
    pub tags: Vec<String>,
    pub digest: String,
    pub blobs: Vec<PushedBlob>,
    pub uploaded_bytes: u64,
    pub mounted_bytes: u64,
    pub skipped_bytes: u64,
    pub manifest_bytes: u64,
    pub seconds: f64,
    /// The SBOM attached to the image, when the caller attached one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sbom: Option<super::referrers::Attached>,
}

impl PushReport {
    pub fn summary(&self) -> String {
        let count = |f: fn(&BlobAction) -> bool| self.blobs.iter().filter(|b| f(&b.action)).count();
        format!(
            "uploaded {} in {} blob(s), mounted {} ({}), skipped {} ({} already there), manifest {} B",
            human(self.uploaded_bytes),
            count(|a| *a == BlobAction::Uploaded),
            human(self.mounted_bytes),
            count(|a| matches!(a, BlobAction::Mounted { .. })),
            human(self.skipped_bytes),
            count(|a| *a == BlobAction::Skipped),
            self.manifest_bytes
        )
    }
}

/// Upload attempts per blob: a session broken by a dropped connection is
/// abandoned and a fresh one opened.
const BLOB_ATTEMPTS: u32 = 3;

/// Pushes the image whose manifest is `manifest_digest` in `store` to
/// `target` (by its tag, else by digest) and to any `extra_tags`.
pub fn push(
    store: &BlobStore,
    manifest_digest: &str,
    target: &Reference,
    extra_tags: &[String],
    insecure: bool,
    cache: &Cache,
    progress: &Progress,
) -> Result<PushReport> {
    let started = Instant::now();
    let manifest = store.read(manifest_digest)?;
    if slimpack_oci::sha256_digest(&manifest) != manifest_digest {
        bail!(
            "manifest {manifest_digest} in {} does not match its digest",
            store.root().display()
        );
    }
    let doc: serde_json::Value = serde_json::from_slice(&manifest)
        .with_context(|| format!("manifest {manifest_digest} is not JSON"))?;
    if slimpack_oci::is_index(&doc) {
        bail!("{manifest_digest} is an image index; pushing indexes is not supported yet (push one image of it)");
    }
    if let Some(d) = &target.digest {
        if d != manifest_digest {
            bail!("{target} names digest {d}, but the image is {manifest_digest}");
        }
    }
    let media_type = doc["mediaType"]
        .as_str()
        .unwrap_or(slimpack_oci::MEDIA_TYPE_MANIFEST)
        .to_string();
    let blobs: Vec<(String, u64, &'static str)> =
        super::manifest_blobs(&doc, &format!("manifest {manifest_digest}"))?
            .into_iter()
            .enumerate()
            .map(|(i, (d, s))| (d, s, if i == 0 { "config" } else { "layer" }))
            .collect();
    let repo_key = target.repo_key();
    let same_registry = format!("{}/", target.registry);
    let sources: Vec<Vec<String>> = blobs
        .iter()
        .map(|(d, _, _)| {
            known_locations(cache, d)
                .into_iter()
                .filter(|k| *k != repo_key)
                .filter_map(|k| k.strip_prefix(&same_registry).map(str::to_string))
                .collect()
        })
        .collect();
    // A layer of the build cache (`--cache`) may be here only as a record:
    // mounted from the cache repository when it is on this registry,
    // fetched (and checked) otherwise.
    for ((d, _, _), from) in blobs.iter().zip(&sources) {
        if !store.contains(d) && from.is_empty() {
            cache.ensure_blob(d).map_err(|e| {
                anyhow!(
                    "blob {d} of {manifest_digest} is not in {} ({e:#}); the image is incomplete (rebuild it, or pull it first)",
                    store.root().display()
                )
            })?;
        }
    }
    let mut mount_repos: Vec<String> = sources.iter().flatten().cloned().collect();
    mount_repos.sort();
    mount_repos.dedup();
    let client = Client::connect(target, "pull,push", &mount_repos, insecure)?;

    let bars = indicatif::MultiProgress::new();
    let pushed = crate::core::parallel::map(super::WORKERS, &blobs, |i, (digest, size, kind)| {
        let bar = bars.add(progress.bytes(format!("{kind} {}", &digest[7..19]), *size));
        match push_blob(&client, (store, cache), digest, *size, &sources[i], &bar) {
            Ok(action) => {
                bar.finish_and_clear();
                record_location(cache, digest, &repo_key);
                Ok(PushedBlob {
                    digest: digest.clone(),
                    kind,
                    size: *size,
                    action,
                })
            }
            Err(e) => {
                bar.abandon();
                Err(e.context(format!("pushing {kind} {digest} to {repo_key}")))
            }
        }
    })?;

    // The manifest last: a registry never shows an image whose blobs are
    // missing. Tags first named, then extra ones; by digest when none.
    let mut tags: Vec<String> = target.tag.iter().cloned().collect();
    for t in extra_tags {
        if !tags.contains(t) {
            tags.push(t.clone());
        }
    }
    let refs: Vec<String> = if tags.is_empty() {
        vec![manifest_digest.to_string()]
    } else {
        tags.clone()
    };
    for r in &refs {
        let said = client.put_manifest(r, &manifest, &media_type)?;
        if let Some(d) = said {
            if d != manifest_digest {
                bail!("{repo_key}:{r}: the registry stored the manifest as {d}, not {manifest_digest}; it changed the bytes we sent");
            }
        }
    }
    let sum = |f: fn(&BlobAction) -> bool| -> u64 {
        pushed.iter().filter(|b| f(&b.action)).map(|b| b.size).sum()
    };
    Ok(PushReport {
        reference: target.with_digest(manifest_digest).to_string(),
        tags,
        digest: manifest_digest.to_string(),
        uploaded_bytes: sum(|a| *a == BlobAction::Uploaded),
        mounted_bytes: sum(|a| matches!(a, BlobAction::Mounted { .. })),
        skipped_bytes: sum(|a| *a == BlobAction::Skipped),
        manifest_bytes: manifest.len() as u64,
        blobs: pushed,
        seconds: started.elapsed().as_secs_f64(),
        sbom: None,
    })
}

/// `stores`: where the image is, and the cache whose shared tier has what
/// the image only names.
fn push_blob(
    client: &Client,
    (store, cache): (&BlobStore, &Cache),
    digest: &str,
    size: u64,
    sources: &[String],
    bar: &indicatif::ProgressBar,
) -> Result<BlobAction> {
    if client.has_blob(digest)? {
        return Ok(BlobAction::Skipped);
    }
    let mut last = None;
    for attempt in 0..BLOB_ATTEMPTS {
        let mut location = None;
        if attempt == 0 {
            if let Some(from) = sources.first() {
                match client.mount(digest, from)? {
                    None => return Ok(BlobAction::Mounted { from: from.clone() }),
                    // The registry opened an upload instead (it does so
                    // when the source lacks the blob or we lack access).
                    Some(l) => location = Some(l),
                }
            }
        }
        let location = match location {
            Some(l) => l,
            None => client.start_upload()?,
        };
        // Not mounted: its bytes are needed here.
        let path = if store.contains(digest) {
            store.path(digest)?
        } else {
            cache.ensure_blob(digest)?;
            cache.blobs.path(digest)?
        };
        match client.upload(&location, digest, &path, size, Some(bar)) {
            Ok(()) => return Ok(BlobAction::Uploaded),
            Err(e) => {
                // Someone (or our interrupted attempt) may have finished it.
                if client.has_blob(digest).unwrap_or(false) {
                    return Ok(BlobAction::Uploaded);
                }
                last = Some(e)
            }
        }
    }
    Err(last.unwrap_or_else(|| anyhow!("upload failed")))
}
