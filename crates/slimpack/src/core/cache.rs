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
    /// Bytecode of the venv's packages an app names.
    NamedBytecodeLayer,
    /// A registry base's Python, by image digest.
    BasePython,
    /// A compressed layer's uncompressed size, by digest.
    LayerSize,
    /// Repositories of a registry known to hold a blob (for mounts).
    BlobLocations,
    /// One package the builder compiled: its files as a layer.
    BuiltPackage,
    /// What an SBOM needs of a layer (package databases, licenses,
    /// Python metadata), by the layer's digest.
    LayerFacts,
    /// A standard library's bytecode, by its sources and interpreter.
    StdlibBytecode,
}

impl RecordKind {
    /// Results that are the same on every machine for the same key, worth
    /// sharing through `--cache`: resolutions and the layers built from
    /// them. The app layer (cheap, and made of the project's files) and
    /// this machine's hints are not.
    pub fn is_shared(self) -> bool {
        matches!(
            self,
            RecordKind::DebianResolution
                | RecordKind::Resolution
                | RecordKind::RuntimeLayer
                | RecordKind::VenvLayer
                | RecordKind::NamedBytecodeLayer
                | RecordKind::BuiltPackage
                | RecordKind::LayerFacts
        )
    }

    /// Records of layers slimpack writes itself.
    const WRITTEN_LAYERS: [RecordKind; 5] = [
        RecordKind::RuntimeLayer,
        RecordKind::VenvLayer,
        RecordKind::AppLayer,
        RecordKind::NamedBytecodeLayer,
        RecordKind::BuiltPackage,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::DebianResolution => "debian-resolution",
            RecordKind::Resolution => "resolution",
            RecordKind::RuntimeLayer => "runtime-layer",
            RecordKind::VenvLayer => "venv-layer",
            RecordKind::AppLayer => "app-layer",
            RecordKind::NamedBytecodeLayer => "bytecode-layer",
            RecordKind::BasePython => "base-python",
            RecordKind::LayerSize => "layer-size",
            RecordKind::BlobLocations => "blob-locations",
            RecordKind::BuiltPackage => "built-package",
            RecordKind::LayerFacts => "layer-facts",
            RecordKind::StdlibBytecode => "stdlib-bytecode",
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
    /// python-build-standalone release files by SHA-256.
    Python,
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
            CacheDir::Python => "python",
            CacheDir::Work => "work",
        }
    }
}

/// A temporary untouched for this long was left by a build that died.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(6 * 3600);

pub struct Cache {
    root: PathBuf,
    pub blobs: BlobStore,
    shared: std::sync::OnceLock<Box<dyn Shared>>,
    /// The shared kinds' records this process read or wrote, in order.
    used: std::sync::Mutex<Vec<Used>>,
}

/// A second tier behind the local records and blobs, shared between
/// machines (the registry repository of `--cache`): asked on a local miss.
/// An implementation verifies what it returns; anything suspect is a miss.
pub trait Shared: Send + Sync {
    /// The JSON of a record, when the shared store has a sound one.
    fn record(&self, cache: &Cache, kind: RecordKind, key: &str) -> Option<Vec<u8>>;
    /// Fetches a blob a shared record named into the cache's store,
    /// checked against its digest.
    fn blob(&self, cache: &Cache, digest: &str) -> Result<()>;
    /// Whether a record it gave names this blob (so it can provide it).
    fn holds(&self, digest: &str) -> bool;
}

/// Where a record this process used came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// This machine's cache.
    Local,
    /// The shared tier.
    Shared,
    /// Made by this build.
    Made,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Used {
    pub kind: RecordKind,
    pub key: String,
    pub origin: Origin,
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
        let cache = Self {
            root: root.to_path_buf(),
            blobs,
            shared: std::sync::OnceLock::new(),
            used: Default::default(),
        };
        cache.sweep_now_and_then();
        Ok(cache)
    }

    /// Sweeps at most every [`STALE_AFTER`]: opening the cache is on every
    /// command's path, and listing every record directory each time is not
    /// free. The marker's time says when the last sweep was.
    fn sweep_now_and_then(&self) {
        let marker = self.root.join(".last-sweep");
        let recent = std::fs::metadata(&marker)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
            .is_some_and(|d| d < STALE_AFTER);
        if recent {
            return;
        }
        let _ = std::fs::write(&marker, b"");
        self.sweep_stale_temporaries(STALE_AFTER);
    }

    /// Removes the temporaries a killed build left (`.tmp*` files and
    /// directories, `.unpack-*` roots) once they are older than `age`: a
    /// build that is still running keeps touching its own, and nothing
    /// writes one for hours.
    pub fn sweep_stale_temporaries(&self, age: std::time::Duration) {
        let mut dirs: Vec<PathBuf> = ["oci/blobs", "rootfs", "work", "debs", "indexes", "contents"]
            .iter()
            .map(|d| self.root.join(d))
            .collect();
        if let Ok(rd) = std::fs::read_dir(self.root.join("records")) {
            dirs.extend(rd.flatten().map(|e| e.path()));
        }
        let now = std::time::SystemTime::now();
        for dir in dirs {
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !(name.starts_with(".tmp") || name.starts_with(".unpack-")) {
                    continue;
                }
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| now.duration_since(t).ok())
                    .is_some_and(|d| d > age);
                if old {
                    let p = e.path();
                    let _ = if p.is_dir() {
                        std::fs::remove_dir_all(&p)
                    } else {
                        std::fs::remove_file(&p)
                    };
                }
            }
        }
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

    /// Puts a shared tier behind this cache (once: a second is ignored).
    pub fn share(&self, shared: Box<dyn Shared>) {
        let _ = self.shared.set(shared);
    }

    pub fn get<T: DeserializeOwned>(&self, kind: RecordKind, key: &str) -> Option<T> {
        if let Some(v) = std::fs::read(self.record_path(kind, key))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
        {
            self.note(kind, key, Origin::Local);
            return Some(v);
        }
        let shared = self.shared.get().filter(|_| kind.is_shared())?;
        let bytes = shared.record(self, kind, key)?;
        let v = serde_json::from_slice(&bytes).ok()?;
        // Kept here too: the next build on this machine needs no network.
        let _ = crate::core::fs::write_atomic(&self.record_path(kind, key), &bytes);
        self.note(kind, key, Origin::Shared);
        Some(v)
    }

    pub fn put<T: Serialize>(&self, kind: RecordKind, key: &str, value: &T) -> Result<()> {
        let path = self.record_path(kind, key);
        crate::core::fs::write_atomic(&path, &serde_json::to_vec_pretty(value)?)?;
        self.note(kind, key, Origin::Made);
        Ok(())
    }

    /// A record's bytes as stored here.
    pub fn record_bytes(&self, kind: RecordKind, key: &str) -> Option<Vec<u8>> {
        std::fs::read(self.record_path(kind, key)).ok()
    }

    fn note(&self, kind: RecordKind, key: &str, origin: Origin) {
        if !kind.is_shared() {
            return;
        }
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        if !used.iter().any(|u| u.kind == kind && u.key == key) {
            used.push(Used {
                kind,
                key: key.to_string(),
                origin,
            });
        }
    }

    /// The shared kinds' records this process used, each once, with where
    /// it first came from.
    pub fn used(&self) -> Vec<Used> {
        self.used.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether the blob is here, or the shared tier holds it: a record
    /// whose layer is neither is stale (its blob was swept).
    pub fn has_blob(&self, digest: &str) -> bool {
        self.blobs.contains(digest) || self.shared.get().is_some_and(|s| s.holds(digest))
    }

    /// Makes sure the blob is in the local store: it is, or the shared tier
    /// (which named it in a record) provides it.
    pub fn ensure_blob(&self, digest: &str) -> Result<()> {
        if self.blobs.contains(digest) {
            return Ok(());
        }
        match self.shared.get() {
            Some(s) => s.blob(self, digest),
            None => anyhow::bail!(
                "blob {digest} is not in the cache at {}",
                self.root.display()
            ),
        }
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
        if RecordKind::WRITTEN_LAYERS
            .iter()
            .any(|k| k.as_str() == kind)
        {
            h.part("layer-encoding", slimpack_oci::LAYER_ENCODING);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A shared tier holding one record and counting what it is asked.
    struct OneRecord {
        asked: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Shared for OneRecord {
        fn record(&self, _: &Cache, kind: RecordKind, key: &str) -> Option<Vec<u8>> {
            self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            (kind == RecordKind::Resolution && key == "k").then(|| b"[1,2]".to_vec())
        }
        fn blob(&self, cache: &Cache, digest: &str) -> Result<()> {
            let d = cache.blobs.put_bytes(b"layer")?;
            anyhow::ensure!(d == digest, "not mine");
            Ok(())
        }
        fn holds(&self, digest: &str) -> bool {
            digest == slimpack_oci::sha256_digest(b"layer")
        }
    }

    #[test]
    fn the_shared_tier_answers_local_misses_of_shared_kinds_only() {
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::open(d.path()).unwrap();
        let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        cache.share(Box::new(OneRecord {
            asked: asked.clone(),
        }));
        assert_eq!(
            cache.get::<Vec<u8>>(RecordKind::Resolution, "k"),
            Some(vec![1, 2])
        );
        // Kept locally: asked once.
        assert_eq!(
            cache.get::<Vec<u8>>(RecordKind::Resolution, "k"),
            Some(vec![1, 2])
        );
        assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(cache.get::<Vec<u8>>(RecordKind::Resolution, "other"), None);
        // Machine-local kinds never go to the shared tier.
        assert_eq!(cache.get::<Vec<u8>>(RecordKind::AppLayer, "k"), None);
        assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 2);
        cache.put(RecordKind::VenvLayer, "v", &3).unwrap();
        cache.put(RecordKind::LayerSize, "x", &4).unwrap();
        let used: Vec<(RecordKind, String, Origin)> = cache
            .used()
            .into_iter()
            .map(|u| (u.kind, u.key, u.origin))
            .collect();
        assert_eq!(
            used,
            [
                (RecordKind::Resolution, "k".to_string(), Origin::Shared),
                (RecordKind::VenvLayer, "v".to_string(), Origin::Made),
            ]
        );
        let digest = slimpack_oci::sha256_digest(b"layer");
        assert!(cache.has_blob(&digest) && !cache.blobs.contains(&digest));
        cache.ensure_blob(&digest).unwrap();
        assert!(cache.blobs.contains(&digest));
        assert!(cache
            .ensure_blob(&format!("sha256:{}", "0".repeat(64)))
            .is_err());
    }

    #[test]
    fn a_killed_builds_temporaries_are_swept_and_a_running_ones_kept() {
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::open(d.path()).unwrap();
        let blobs = d.path().join("oci/blobs");
        let old_file = blobs.join(".tmp-killed");
        let new_file = blobs.join(".tmp-running");
        let old_root = d.path().join("rootfs/.unpack-killed");
        for f in [&old_file, &new_file] {
            std::fs::write(f, "partial").unwrap();
        }
        std::fs::create_dir_all(old_root.join("usr")).unwrap();
        let day_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(86_400);
        for p in [&old_file, &old_root] {
            std::fs::File::open(p)
                .unwrap()
                .set_modified(day_ago)
                .unwrap();
        }
        std::fs::write(blobs.join("sha256-not-a-temp"), "kept").unwrap();
        // Opening swept already (nothing was there); the next open does not.
        assert!(d.path().join(".last-sweep").exists());
        Cache::open(d.path()).unwrap();
        assert!(old_file.exists(), "swept at most every six hours");
        cache.sweep_stale_temporaries(STALE_AFTER);
        assert!(!old_file.exists() && !old_root.exists());
        assert!(new_file.exists() && blobs.join("sha256-not-a-temp").exists());
    }
}
