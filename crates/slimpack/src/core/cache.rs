//! The content-addressed cache: blobs by digest, and small JSON records by
//! the hash of everything that went into them. A record is only ever
//! written whole (temp file + rename), so a crash leaves no half entry.

use anyhow::{Context, Result};
use serde::{de::DeserializeOwned, Serialize};
use sha2::{Digest, Sha256};
use slimpack_oci::BlobStore;
use std::path::{Path, PathBuf};

/// The kinds of small JSON record, each in `records/KIND/`. The names are
/// part of every existing cache: never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// A Debian resolution, by mirror, suite and packages asked for.
    DebianResolution,
    /// uv's resolution, by the content of the dependency files.
    Resolution,
    RuntimeLayer,
    VenvLayer,
    AppLayer,
    /// A registry base's Python, by image digest.
    BasePython,
    /// A compressed layer's uncompressed size, by digest.
    LayerSize,
    /// Repositories of a registry known to hold a blob (for mounts).
    BlobLocations,
}

impl RecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::DebianResolution => "debian-resolution",
            RecordKind::Resolution => "resolution",
            RecordKind::RuntimeLayer => "runtime-layer",
            RecordKind::VenvLayer => "venv-layer",
            RecordKind::AppLayer => "app-layer",
            RecordKind::BasePython => "base-python",
            RecordKind::LayerSize => "layer-size",
            RecordKind::BlobLocations => "blob-locations",
        }
    }
}

/// The cache's directories besides records and blobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheDir {
    /// Unpacked root file systems (builders, images for `run`).
    Rootfs,
    /// `.deb` files by SHA-256.
    Debs,
    /// Debian indexes by SHA-256.
    Indexes,
    /// Reduced `Contents` indexes.
    Contents,
    /// uv's own cache.
    UvCache,
    /// Tools slimpack fetched (uv).
    Tools,
    /// Scratch space of one build, removed after it.
    Work,
}

impl CacheDir {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheDir::Rootfs => "rootfs",
            CacheDir::Debs => "debs",
            CacheDir::Indexes => "indexes",
            CacheDir::Contents => "contents",
            CacheDir::UvCache => "uv-cache",
            CacheDir::Tools => "tools",
            CacheDir::Work => "work",
        }
    }
}

pub struct Cache {
    root: PathBuf,
    pub blobs: BlobStore,
}

impl Cache {
    /// `$SLIMPACK_CACHE`, else `$XDG_CACHE_HOME/slimpack`, else `~/.cache/slimpack`.
    pub fn default_dir() -> PathBuf {
        if let Some(p) = std::env::var_os("SLIMPACK_CACHE") {
            return p.into();
        }
        if let Some(p) = std::env::var_os("XDG_CACHE_HOME") {
            return PathBuf::from(p).join("slimpack");
        }
        let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
        PathBuf::from(home).join(".cache/slimpack")
    }

    /// The cache at `dir`, else at [`Cache::default_dir`].
    pub fn open_or_default(dir: Option<&Path>) -> Result<Self> {
        match dir {
            Some(d) => Self::open(d),
            None => Self::open(&Self::default_dir()),
        }
    }

    pub fn open(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root)
            .with_context(|| format!("creating cache directory {}", root.display()))?;
        let blobs = BlobStore::open(root.join("oci"))?;
        Ok(Self {
            root: root.to_path_buf(),
            blobs,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory for one kind of thing.
    pub fn dir(&self, kind: CacheDir) -> Result<PathBuf> {
        let d = self.root.join(kind.as_str());
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        Ok(d)
    }

    fn record_path(&self, kind: RecordKind, key: &str) -> PathBuf {
        self.root
            .join("records")
            .join(kind.as_str())
            .join(format!("{key}.json"))
    }

    pub fn get<T: DeserializeOwned>(&self, kind: RecordKind, key: &str) -> Option<T> {
        let bytes = std::fs::read(self.record_path(kind, key)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub fn put<T: Serialize>(&self, kind: RecordKind, key: &str, value: &T) -> Result<()> {
        let path = self.record_path(kind, key);
        crate::core::fs::write_atomic(&path, &serde_json::to_vec_pretty(value)?)
    }
}

/// Hashes labelled parts into a cache key; labels keep `("a","bc")` and
/// `("ab","c")` apart.
#[derive(Default)]
pub struct KeyHasher(Sha256);

impl KeyHasher {
    pub fn new(kind: &str) -> Self {
        let mut h = Self(Sha256::new());
        h.part("kind", kind.as_bytes());
        h
    }
    pub fn part(&mut self, label: &str, value: impl AsRef<[u8]>) -> &mut Self {
        let v = value.as_ref();
        self.0.update((label.len() as u64).to_le_bytes());
        self.0.update(label.as_bytes());
        self.0.update((v.len() as u64).to_le_bytes());
        self.0.update(v);
        self
    }
    pub fn finish(self) -> String {
        hex::encode(self.0.finalize())
    }
}
