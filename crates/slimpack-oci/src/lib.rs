//! Deterministic OCI images: layers, config, manifest, and the places an image
//! lives on disk (an OCI image layout, a docker-archive tarball).
//!
//! Modeled on go-containerregistry's `pkg/v1`: an [`Image`] is a config plus
//! layers; a [`Layer`] knows its digest, diff_id and sizes and can be opened.
//! Every byte we hash is the byte we write, so the same inputs give the same
//! digest on any machine.

mod archive;
mod blobs;
mod gzip;
mod image;
mod layer;
mod layout;
mod read;

pub use archive::write_docker_archive;
pub use blobs::BlobStore;
pub use image::{Image, ImageSpec};
pub use layer::{add_tree, Entry, EntryKind, Layer, LayerBuilder};
pub use layout::{parse_layout_ref, write_layout};
pub use read::{
    import_docker_archive, is_index, load_manifest, open_layer, open_layer_checked, pick_platform,
    read_layout, CheckedLayer, LoadedImage, JSON_BLOB_LIMIT,
};

use sha2::{Digest as _, Sha256};
use std::io::{self, Write};

pub const MEDIA_TYPE_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// How [`LayerBuilder::write`] encodes a layer: a cache that keeps layers
/// by their inputs must key them by this too, or a layer written before a
/// change would give another digest than the same inputs written after.
pub const LAYER_ENCODING: &str = "tar-gzip6-parallel-1MiB";
pub const MEDIA_TYPE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_TYPE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_TYPE_INDEX: &str = "application/vnd.oci.image.index.v1+json";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("invalid layer entry {path:?}: {reason}")]
    BadEntry { path: String, reason: String },
    #[error("OCI spec: {0}")]
    Spec(String),
    #[error("blob {digest} is missing from {store}")]
    MissingBlob { digest: String, store: String },
    #[error("blob {path} does not match its digest: expected {expected}, found {actual}")]
    DigestMismatch {
        path: String,
        expected: String,
        actual: String,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) trait IoContext<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: what(),
            source,
        })
    }
}

/// `sha256:<hex>` of some bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Serialises with object keys sorted and no whitespace. oci-spec keeps maps
/// in `HashMap`s whose order changes between runs; going through
/// `serde_json::Value` (a BTreeMap without `preserve_order`) fixes the order,
/// so the digest of a config or manifest depends only on its content.
pub fn canonical_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    let v = serde_json::to_value(value).map_err(|e| Error::Spec(e.to_string()))?;
    serde_json::to_vec(&v).map_err(|e| Error::Spec(e.to_string()))
}

/// A writer that hashes and counts what passes through it.
pub(crate) struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
    pub(crate) fn finish(self) -> (W, String, u64) {
        (
            self.inner,
            format!("sha256:{}", hex::encode(self.hasher.finalize())),
            self.count,
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The hex part of `sha256:<hex>`, checked so that it can be used as a file name.
pub fn digest_hex(digest: &str) -> Result<&str> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| Error::Spec(format!("unsupported digest algorithm in {digest:?}")))?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::Spec(format!("malformed digest {digest:?}")));
    }
    Ok(hex)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn canonical_json_sorts_keys_whatever_the_map_order() {
        let mut a = HashMap::new();
        for k in ["zeta", "alpha", "mid", "beta", "omega"] {
            a.insert(k.to_string(), 1);
        }
        let bytes = canonical_json(&a).unwrap();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            r#"{"alpha":1,"beta":1,"mid":1,"omega":1,"zeta":1}"#
        );
    }

    #[test]
    fn digest_hex_rejects_path_tricks() {
        assert!(digest_hex("sha256:../../etc/passwd").is_err());
        assert!(digest_hex("md5:abc").is_err());
        let ok = format!("sha256:{}", "a".repeat(64));
        assert_eq!(digest_hex(&ok).unwrap().len(), 64);
    }
}
