//! The build cache in a registry (`--cache REGISTRY/REPO`): the records a
//! build used (resolutions, and the layers made from them) as OCI artifacts
//! tagged by their key, each holding the layers it names, so a runner with
//! an empty cache finds them, and a push mounts those layers from here
//! instead of anyone downloading them.
//!
//! A record is a manifest of `artifactType` [`ARTIFACT_TYPE`]: the empty
//! config, the record's JSON as its first layer, then the image layers the
//! record names (which keeps them in the repository for as long as the
//! record is). Keys are the local cache's own, so a hit cannot change a
//! digest; what comes back is checked (its kind and key, every blob's
//! digest, the layers it names present) and anything else is a miss, with
//! a warning, and the build makes it again.

use super::client::Client;
use super::reference::Reference;
use crate::core::cache::{Cache, Origin, RecordKind, Shared};
use crate::core::progress::Progress;
use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};
use slimpack_oci::Layer;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// The artifact type of a record, and the media type of its JSON.
pub const ARTIFACT_TYPE: &str = "application/vnd.slimpack.cache.record.v1+json";
const KIND: &str = "dev.slimpack.cache.kind";
const KEY: &str = "dev.slimpack.cache.key";
/// Records are small JSON documents; a larger one is not ours.
const MAX_RECORD: u64 = 4 << 20;

/// The tag a record lives under: its kind and key (hex), both already
/// what a tag may hold.
pub fn tag(kind: RecordKind, key: &str) -> String {
    format!("{}-{key}", kind.as_str())
}

/// The image layers a record names (any object of the record that is a
/// layer descriptor).
pub fn layers_in(record: &Value) -> Vec<Layer> {
    let mut out: Vec<Layer> = Vec::new();
    let mut stack = vec![record];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(m) => {
                if m.contains_key("diff_id") {
                    if let Ok(l) = serde_json::from_value::<Layer>(v.clone()) {
                        if !out.iter().any(|o| o.digest == l.digest) {
                            out.push(l);
                        }
                        continue;
                    }
                }
                stack.extend(m.values());
            }
            Value::Array(a) => stack.extend(a),
            _ => {}
        }
    }
    out.sort_by(|a, b| a.digest.cmp(&b.digest));
    out
}

/// The manifest that holds a record whose JSON is the blob `record`.
pub fn manifest(kind: RecordKind, key: &str, record: (&str, u64), layers: &[Layer]) -> Vec<u8> {
    let mut descriptors = vec![json!({
        "mediaType": ARTIFACT_TYPE,
        "digest": record.0,
        "size": record.1,
    })];
    descriptors.extend(layers.iter().map(|l| {
        json!({
            "mediaType": l.media_type,
            "digest": l.digest,
            "size": l.size,
        })
    }));
    super::artifact_manifest(
        ARTIFACT_TYPE,
        descriptors,
        json!({"annotations": { KIND: kind.as_str(), KEY: key }}),
    )
}

/// Why a manifest found under a record's tag is not that record: None when
/// it is, with the record's descriptor and the layers it holds.
fn check_manifest(
    doc: &Value,
    kind: RecordKind,
    key: &str,
) -> std::result::Result<(String, u64, Vec<String>), String> {
    if doc["artifactType"] != ARTIFACT_TYPE {
        return Err(format!("not a slimpack record ({})", doc["artifactType"]));
    }
    if doc["annotations"][KIND] != kind.as_str() || doc["annotations"][KEY] != key {
        return Err(format!(
            "it says it is {} {}, not the record under its tag",
            doc["annotations"][KIND], doc["annotations"][KEY]
        ));
    }
    let layers = doc["layers"].as_array().cloned().unwrap_or_default();
    let first = layers.first().ok_or("it holds no record")?;
    let digest = first["digest"]
        .as_str()
        .filter(|d| super::reference::valid_digest(d) && first["mediaType"] == ARTIFACT_TYPE)
        .ok_or("its first layer is not a record")?;
    let size = first["size"].as_u64().unwrap_or(u64::MAX);
    if size > MAX_RECORD {
        return Err(format!("its record is {size} bytes"));
    }
    let held = layers[1..]
        .iter()
        .filter_map(|l| l["digest"].as_str().map(str::to_string))
        .collect();
    Ok((digest.to_string(), size, held))
}

/// The layers a record names, when the manifest that carries it holds
/// every one (else a layer could be named that the repository lets go).
fn held_layers(record: &Value, held: &[String]) -> std::result::Result<Vec<Layer>, String> {
    let layers = layers_in(record);
    match layers.iter().find(|l| !held.contains(&l.digest)) {
        Some(l) => Err(format!("it names layer {} but does not hold it", l.digest)),
        None => Ok(layers),
    }
}

/// The cache repository, as the local cache's shared tier.
pub struct RegistryCache {
    repo: Reference,
    insecure: bool,
    /// Connected on first use; None when the registry could not be reached
    /// (warned once: the build goes on without it).
    client: OnceLock<Option<Client>>,
    warnings: Mutex<Vec<String>>,
    downloaded: AtomicU64,
    /// Layers named by the records found here.
    found_layers: Mutex<Vec<String>>,
}

/// What publishing the build's records did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Published {
    /// Records pushed now.
    pub records: usize,
    /// Records the repository already had.
    pub present: usize,
    pub uploaded_bytes: u64,
    pub mounted_bytes: u64,
}

impl RegistryCache {
    pub fn new(repo: &str, insecure: &[String]) -> Result<RegistryCache> {
        let repo = Reference::parse(repo)
            .map_err(|e| anyhow!("--cache {repo:?}: {e:#} (a repository: REGISTRY/REPO)"))?;
        if repo.tag.is_some() || repo.digest.is_some() {
            bail!(
                "--cache {repo}: name a repository without a tag or digest; records are tagged by their keys"
            );
        }
        let insecure = super::is_insecure(&repo, insecure);
        Ok(RegistryCache {
            repo,
            insecure,
            client: OnceLock::new(),
            warnings: Mutex::default(),
            downloaded: AtomicU64::new(0),
            found_layers: Mutex::default(),
        })
    }

    pub fn repository(&self) -> String {
        self.repo.repo_key()
    }

    /// Bytes fetched from the cache repository (records and layers).
    pub fn downloaded(&self) -> u64 {
        self.downloaded.load(Ordering::SeqCst)
    }

    /// Whether a record found here named this layer.
    pub fn found(&self, digest: &str) -> bool {
        self.found_layers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|d| d == digest)
    }

    /// What went wrong with it, for the report: each said once.
    pub fn warnings(&self) -> Vec<String> {
        self.warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn warn(&self, w: String) {
        let w = crate::core::text::escape_controls(&w);
        let mut ws = self.warnings.lock().unwrap_or_else(|e| e.into_inner());
        if !ws.contains(&w) {
            eprintln!("warning: {w}");
            ws.push(w);
        }
    }

    fn client(&self) -> Option<&Client> {
        self.client
            .get_or_init(
                || match Client::connect(&self.repo, "pull", &[], self.insecure) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        self.warn(format!(
                            "the build cache {} cannot be read ({e:#}); building without it",
                            self.repository()
                        ));
                        None
                    }
                },
            )
            .as_ref()
    }

    fn fetch(&self, cache: &Cache, kind: RecordKind, key: &str) -> Result<Option<Vec<u8>>> {
        let Some(client) = self.client() else {
            return Ok(None);
        };
        let tag = tag(kind, key);
        let Some((bytes, _)) = client.find_manifest(&tag)? else {
            return Ok(None);
        };
        self.downloaded
            .fetch_add(bytes.len() as u64, Ordering::SeqCst);
        let doc: Value =
            serde_json::from_slice(&bytes).map_err(|_| anyhow!("{tag} is not JSON"))?;
        let (digest, size, held) = check_manifest(&doc, kind, key)
            .map_err(|why| anyhow!("{}:{tag} was ignored: {why}", self.repository()))?;
        client.fetch_blob(&digest, &cache.blobs, None)?;
        self.downloaded.fetch_add(size, Ordering::SeqCst);
        let record = cache.blobs.read(&digest)?;
        let value: Value = serde_json::from_slice(&record)
            .map_err(|_| anyhow!("{}:{tag}: its record is not JSON", self.repository()))?;
        let repo_key = self.repository();
        let layers = held_layers(&value, &held)
            .map_err(|why| anyhow!("{repo_key}:{tag} was ignored: {why}"))?;
        let mut found = self.found_layers.lock().unwrap_or_else(|e| e.into_inner());
        for l in layers {
            // Where a push mounts it from.
            super::record_location(cache, &l.digest, &repo_key);
            found.push(l.digest);
        }
        Ok(Some(record))
    }

    /// Pushes every record this build used that the repository lacks, with
    /// the layers it names (mounted where the registry has them already).
    /// A record's manifest is made here, so its digest is known without
    /// asking: once this machine saw the repository hold it, it is not
    /// asked again.
    pub fn publish(&self, cache: &Cache, progress: &Progress) -> Result<Published> {
        let mut done = Published::default();
        let repo_key = self.repository();
        for u in cache.used() {
            if u.origin == Origin::Shared {
                continue;
            }
            let Some(bytes) = cache.record_bytes(u.kind, &u.key) else {
                continue;
            };
            let layers = serde_json::from_slice::<Value>(&bytes)
                .map(|v| layers_in(&v))
                .unwrap_or_default();
            let record = slimpack_oci::sha256_digest(&bytes);
            let m = manifest(u.kind, &u.key, (&record, bytes.len() as u64), &layers);
            let m_digest = slimpack_oci::sha256_digest(&m);
            if super::known_locations(cache, &m_digest).contains(&repo_key) {
                done.present += 1;
                continue;
            }
            let client = self
                .client()
                .ok_or_else(|| anyhow!("the build cache {repo_key} cannot be reached"))?;
            let tag = tag(u.kind, &u.key);
            // Present and sound: kept. Anything else under the tag (a
            // foreign or poisoned manifest) is replaced.
            let sound = client.find_manifest(&tag)?.is_some_and(|(bytes, _)| {
                serde_json::from_slice::<Value>(&bytes)
                    .is_ok_and(|d| check_manifest(&d, u.kind, &u.key).is_ok())
            });
            if sound {
                super::record_location(cache, &m_digest, &repo_key);
                done.present += 1;
                continue;
            }
            if let Some(l) = layers.iter().find(|l| !cache.blobs.contains(&l.digest)) {
                // Made from a layer this machine never had: whoever
                // built it shares it.
                self.warn(format!(
                    "{} record {} not shared: its layer {} is not in this cache",
                    u.kind.as_str(),
                    u.key,
                    l.digest
                ));
                continue;
            }
            cache.blobs.put_bytes(&bytes)?;
            cache.blobs.put_bytes(super::EMPTY)?;
            cache.blobs.put_bytes(&m)?;
            let target = Reference {
                tag: Some(tag),
                ..self.repo.clone()
            };
            let r = super::push::push(
                &cache.blobs,
                &m_digest,
                &target,
                &[],
                self.insecure,
                cache,
                progress,
            )?;
            super::record_location(cache, &m_digest, &repo_key);
            done.records += 1;
            done.uploaded_bytes += r.uploaded_bytes + r.manifest_bytes;
            done.mounted_bytes += r.mounted_bytes;
        }
        Ok(done)
    }
}

/// Shared by the cache (which asks it) and the build (which publishes).
impl Shared for std::sync::Arc<RegistryCache> {
    fn record(&self, cache: &Cache, kind: RecordKind, key: &str) -> Option<Vec<u8>> {
        match self.fetch(cache, kind, key) {
            Ok(r) => r,
            Err(e) => {
                self.warn(format!(
                    "build cache: {} {key}: {e:#}; building it instead",
                    kind.as_str()
                ));
                None
            }
        }
    }

    fn blob(&self, cache: &Cache, digest: &str) -> Result<()> {
        let client = self.client().ok_or_else(|| {
            anyhow!(
                "blob {digest} is in the build cache {}, which cannot be read",
                self.repository()
            )
        })?;
        client.fetch_blob(digest, &cache.blobs, None)?;
        let size = std::fs::metadata(cache.blobs.path(digest)?)
            .map(|m| m.len())
            .unwrap_or(0);
        self.downloaded.fetch_add(size, Ordering::SeqCst);
        Ok(())
    }

    fn holds(&self, digest: &str) -> bool {
        self.found(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(d: char) -> Layer {
        Layer {
            digest: format!("sha256:{}", d.to_string().repeat(64)),
            diff_id: format!("sha256:{}", "f".repeat(64)),
            size: 10,
            uncompressed_size: 20,
            media_type: slimpack_oci::MEDIA_TYPE_LAYER_GZIP.into(),
        }
    }

    #[test]
    fn a_record_names_its_layers_wherever_they_are() {
        let venv = json!({"layer": layer('a'), "builder": null, "modules": ["x"]});
        assert_eq!(layers_in(&venv), [layer('a')]);
        let runtime = serde_json::to_value(layer('b')).unwrap();
        assert_eq!(layers_in(&runtime), [layer('b')]);
        assert!(layers_in(&json!({"text": "a", "packages": []})).is_empty());
    }

    #[test]
    fn a_manifest_is_checked_against_the_kind_and_key_it_was_asked_for() {
        let rec = format!("sha256:{}", "c".repeat(64));
        let m = manifest(RecordKind::VenvLayer, "k1", (&rec, 42), &[layer('a')]);
        let doc: Value = serde_json::from_slice(&m).unwrap();
        assert_eq!(doc["config"]["digest"], slimpack_oci::sha256_digest(b"{}"));
        let (d, size, held) = check_manifest(&doc, RecordKind::VenvLayer, "k1").unwrap();
        assert_eq!((d.as_str(), size), (rec.as_str(), 42));
        assert_eq!(held, [layer('a').digest]);
        // Under another key's tag, or another kind's: refused.
        assert!(check_manifest(&doc, RecordKind::VenvLayer, "k2").is_err());
        assert!(check_manifest(&doc, RecordKind::RuntimeLayer, "k1").is_err());
        let mut foreign = doc.clone();
        foreign["artifactType"] = json!("application/vnd.other");
        assert!(check_manifest(&foreign, RecordKind::VenvLayer, "k1").is_err());
        let mut huge = doc.clone();
        huge["layers"][0]["size"] = json!(MAX_RECORD + 1);
        assert!(check_manifest(&huge, RecordKind::VenvLayer, "k1").is_err());
        assert_eq!(tag(RecordKind::VenvLayer, "k1"), "venv-layer-k1");
        // A record naming a layer its manifest does not hold: refused.
        let record = json!({"layer": layer('a')});
        assert_eq!(held_layers(&record, &held).unwrap(), [layer('a')]);
        let e = held_layers(&record, &[layer('b').digest]).unwrap_err();
        assert!(e.contains("does not hold"), "{e}");
        assert!(super::super::reference::valid_tag(&tag(
            RecordKind::NamedBytecodeLayer,
            &"e".repeat(64)
        )));
    }
}
