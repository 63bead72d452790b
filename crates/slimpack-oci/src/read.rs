//! Reading images that live elsewhere: an OCI image layout (ours or anyone's,
//! with nested indexes and tags) and a `docker save` tarball. Every blob is
//! checked against its digest before it is used.

use crate::{BlobStore, Error, IoContext, Layer, Result};
use serde_json::Value;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

/// An image found in some place: its config and its layers, with the blobs
/// in `store`.
#[derive(Debug, Clone)]
pub struct LoadedImage {
    pub manifest_digest: String,
    pub config_digest: String,
    pub config: Value,
    pub layers: Vec<Layer>,
}

impl LoadedImage {
    /// The image as one to write to another place (a layout, a registry):
    /// its manifest's size read from `store`, where its blobs are.
    pub fn to_image(&self, store: &BlobStore) -> Result<crate::Image> {
        let path = store.path(&self.manifest_digest)?;
        let manifest_size = std::fs::metadata(&path)
            .ctx(|| format!("reading {}", path.display()))?
            .len();
        Ok(crate::Image {
            manifest_digest: self.manifest_digest.clone(),
            manifest_size,
            config_digest: self.config_digest.clone(),
            layers: self.layers.clone(),
        })
    }
}

fn spec(msg: impl Into<String>) -> Error {
    Error::Spec(msg.into())
}

/// The largest manifest, index or config read into memory: the OCI spec
/// keeps manifests under 4 MiB, and configs of real images are far smaller.
pub const JSON_BLOB_LIMIT: u64 = 16 << 20;

fn json_blob(store: &BlobStore, digest: &str) -> Result<Value> {
    let path = store.path(digest)?;
    if let Ok(meta) = std::fs::metadata(&path) {
        if meta.len() > JSON_BLOB_LIMIT {
            return Err(spec(format!(
                "blob {digest} is {} MiB, more than any manifest or config holds (at most {} MiB are read); it was not read",
                meta.len() >> 20,
                JSON_BLOB_LIMIT >> 20
            )));
        }
    }
    let bytes = store.read(digest)?;
    let actual = crate::sha256_digest(&bytes);
    if actual != digest {
        return Err(Error::DigestMismatch {
            path: store.path(digest)?.display().to_string(),
            expected: digest.into(),
            actual,
        });
    }
    serde_json::from_slice(&bytes).map_err(|e| spec(format!("blob {digest}: {e}")))
}

/// Whether a manifest document is an index (or a Docker manifest list).
pub fn is_index(v: &Value) -> bool {
    v.get("manifests").is_some()
}

/// Opens the image in an OCI layout at `dir`: the manifest tagged `tag`, or
/// the only one, or the linux/amd64 one of an index.
pub fn read_layout(dir: &Path, tag: Option<&str>) -> Result<(BlobStore, LoadedImage)> {
    if !dir.join("index.json").is_file() {
        return Err(spec(format!(
            "{} is not an OCI image layout (no index.json)",
            dir.display()
        )));
    }
    let store = BlobStore::open(dir)?;
    let index: Value = serde_json::from_slice(
        &std::fs::read(dir.join("index.json")).ctx(|| "reading index.json".into())?,
    )
    .map_err(|e| spec(format!("{}/index.json: {e}", dir.display())))?;
    let manifests = index["manifests"].as_array().cloned().unwrap_or_default();
    let chosen = match tag {
        Some(t) => manifests
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == t)
            .ok_or_else(|| spec(format!("{} has no image tagged {t:?}", dir.display())))?,
        None if manifests.len() == 1 => &manifests[0],
        None => {
            let tags: Vec<String> = manifests
                .iter()
                .filter_map(|m| {
                    m["annotations"]["org.opencontainers.image.ref.name"]
                        .as_str()
                        .map(str::to_string)
                })
                .collect();
            return Err(spec(format!(
                "{} holds {} images; name one as {}:TAG (tags: {})",
                dir.display(),
                manifests.len(),
                dir.display(),
                tags.join(", ")
            )));
        }
    };
    let digest = chosen["digest"]
        .as_str()
        .ok_or_else(|| spec("descriptor without digest"))?
        .to_string();
    let image = load_manifest(&store, &digest)?;
    Ok((store, image))
}

/// The linux/amd64 entry of an index (OCI or Docker manifest list); never an
/// attestation (`unknown/unknown`).
pub fn pick_platform(index: &Value) -> Option<&Value> {
    index["manifests"].as_array()?.iter().find(|m| {
        m["platform"]["os"] == "linux"
            && m["platform"]["architecture"] == "amd64"
            && m["annotations"]["vnd.docker.reference.type"] != "attestation-manifest"
    })
}

/// The image whose manifest (or index, then its linux/amd64 manifest) is
/// the blob `digest` in `store`; config and manifests are checked against
/// their digests. Docker schema 2 and OCI media types are both read.
pub fn load_manifest(store: &BlobStore, digest: &str) -> Result<LoadedImage> {
    let mut digest = digest.to_string();
    let mut doc = json_blob(store, &digest)?;
    for _ in 0..4 {
        if !is_index(&doc) {
            break;
        }
        let m = pick_platform(&doc)
            .ok_or_else(|| spec(format!("index {digest} has no linux/amd64 image")))?;
        digest = m["digest"]
            .as_str()
            .ok_or_else(|| spec("descriptor without digest"))?
            .to_string();
        doc = json_blob(store, &digest)?;
    }
    let config_digest = doc["config"]["digest"]
        .as_str()
        .ok_or_else(|| spec(format!("manifest {digest} has no config")))?;
    let config = json_blob(store, config_digest)?;
    let diff_ids: Vec<String> = config["rootfs"]["diff_ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let descs = doc["layers"].as_array().cloned().unwrap_or_default();
    if descs.len() != diff_ids.len() {
        return Err(spec(format!(
            "manifest {digest}: {} layers but {} diff_ids in the config",
            descs.len(),
            diff_ids.len()
        )));
    }
    let layers = descs
        .iter()
        .zip(diff_ids)
        .map(|(d, diff_id)| Layer {
            digest: d["digest"].as_str().unwrap_or_default().to_string(),
            diff_id,
            size: d["size"].as_u64().unwrap_or(0),
            uncompressed_size: 0,
            media_type: d["mediaType"].as_str().unwrap_or_default().to_string(),
        })
        .collect();
    Ok(LoadedImage {
        manifest_digest: digest,
        config_digest: config_digest.to_string(),
        config,
        layers,
    })
}

/// Imports a `docker save` tarball into `store`.
pub fn import_docker_archive(file: &Path, store: &BlobStore) -> Result<LoadedImage> {
    let f = File::open(file).ctx(|| format!("opening {}", file.display()))?;
    let mut ar = tar::Archive::new(BufReader::new(f));
    let mut by_name: std::collections::HashMap<String, String> = Default::default();
    let mut manifest: Option<Value> = None;
    for e in ar.entries().ctx(|| format!("reading {}", file.display()))? {
        let mut e = e.ctx(|| format!("reading {}", file.display()))?;
        if e.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let name = String::from_utf8_lossy(&e.path_bytes())
            .trim_start_matches("./")
            .to_string();
        if name == "manifest.json" {
            let mut s = Vec::new();
            e.read_to_end(&mut s)
                .ctx(|| "reading manifest.json".into())?;
            manifest = Some(
                serde_json::from_slice(&s)
                    .map_err(|e| spec(format!("{}: manifest.json: {e}", file.display())))?,
            );
            continue;
        }
        let digest = store.put_reader(&mut e, None)?;
        by_name.insert(name, digest);
    }
    let manifest = manifest.ok_or_else(|| {
        spec(format!(
            "{} has no manifest.json: not a docker-archive",
            file.display()
        ))
    })?;
    let entry = manifest.get(0).ok_or_else(|| spec("empty manifest.json"))?;
    let lookup = |n: &Value| -> Result<String> {
        let n = n.as_str().ok_or_else(|| spec("manifest.json: bad entry"))?;
        by_name.get(n).cloned().ok_or_else(|| {
            spec(format!(
                "manifest.json names {n}, which is not in the archive"
            ))
        })
    };
    let config_digest = lookup(&entry["Config"])?;
    let config = json_blob(store, &config_digest)?;
    let layers = entry["Layers"]
        .as_array()
        .ok_or_else(|| spec("manifest.json: no Layers"))?
        .iter()
        .map(|n| {
            let digest = lookup(n)?;
            Ok(Layer {
                size: std::fs::metadata(store.path(&digest)?)
                    .map(|m| m.len())
                    .unwrap_or(0),
                diff_id: digest.clone(),
                digest,
                uncompressed_size: 0,
                media_type: String::new(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(LoadedImage {
        manifest_digest: config_digest.clone(),
        config_digest,
        config,
        layers,
    })
}

/// Opens a layer's tar stream after checking the blob against its digest.
pub fn open_layer(store: &BlobStore, layer: &Layer) -> Result<Box<dyn Read>> {
    let path = store.path(&layer.digest)?;
    let mut f = File::open(&path).map_err(|_| Error::MissingBlob {
        digest: layer.digest.clone(),
        store: store.root().display().to_string(),
    })?;
    let mut hashing = crate::HashingWriter::new(io::sink());
    io::copy(&mut f, &mut hashing).ctx(|| format!("reading {}", path.display()))?;
    let (_, actual, _) = hashing.finish();
    if actual != layer.digest {
        return Err(Error::DigestMismatch {
            path: path.display().to_string(),
            expected: layer.digest.clone(),
            actual,
        });
    }
    layer.open(store)
}

/// A layer's tar stream, opened by [`open_layer`] (the blob checked
/// against its digest), its content hashed as it is read. [`finish`]
/// reads what is left and checks the content against the config's
/// diff_id: what was read is what the image names.
///
/// [`finish`]: CheckedLayer::finish
pub struct CheckedLayer<'a> {
    inner: Box<dyn Read>,
    hasher: sha2::Sha256,
    count: u64,
    layer: &'a Layer,
}

/// [`open_layer`], with the content checked by [`CheckedLayer::finish`].
pub fn open_layer_checked<'a>(store: &BlobStore, layer: &'a Layer) -> Result<CheckedLayer<'a>> {
    use sha2::Digest;
    Ok(CheckedLayer {
        inner: open_layer(store, layer)?,
        hasher: sha2::Sha256::new(),
        count: 0,
        layer,
    })
}

impl Read for CheckedLayer<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use sha2::Digest;
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

impl CheckedLayer<'_> {
    /// Reads the rest (a tar's trailing blocks are part of what the
    /// diff_id hashes) and checks it; the tar stream's size.
    pub fn finish(mut self) -> Result<u64> {
        use sha2::Digest;
        let what = format!("reading layer {}", self.layer.digest);
        io::copy(&mut self, &mut io::sink()).ctx(|| what)?;
        let got = format!("sha256:{}", hex::encode(self.hasher.finalize()));
        let layer = self.layer;
        if !layer.diff_id.is_empty() && got != layer.diff_id {
            return Err(spec(format!(
                "layer {}: its content has the digest {got}, but the image's config names {} (rootfs.diff_ids); the image is corrupt or was tampered with",
                layer.digest, layer.diff_id
            )));
        }
        Ok(self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oversized_manifest_or_config_is_not_read() {
        let d = tempfile::tempdir().unwrap();
        let store = BlobStore::open(d.path()).unwrap();
        // Valid JSON, just too large: it must be refused by its size.
        let mut big = b"[".to_vec();
        big.resize(JSON_BLOB_LIMIT as usize + 2, b' ');
        big.push(b']');
        let digest = store.put_bytes(&big).unwrap();
        let e = load_manifest(&store, &digest).unwrap_err().to_string();
        assert!(e.contains("MiB") && e.contains("not read"), "{e}");
    }
}
