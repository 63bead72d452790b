use crate::{BlobStore, Error, HashingWriter, IoContext, Result, MEDIA_TYPE_LAYER_GZIP};
use flate2::Compression;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// One file system object in a layer. Owners are always 0:0 unless set;
/// modification times are always the layer's single fixed time.
#[derive(Debug, Clone)]
pub struct Entry {
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub kind: EntryKind,
}

#[derive(Debug, Clone)]
pub enum EntryKind {
    Dir,
    /// File content held in memory.
    Bytes(Vec<u8>),
    /// File content read from disk when the layer is written.
    File(PathBuf),
    Symlink(String),
    /// A hard link to another path of the same layer.
    Hardlink(String),
}

impl Entry {
    pub fn dir(mode: u32) -> Self {
        Self::new(mode, EntryKind::Dir)
    }
    pub fn bytes(mode: u32, data: impl Into<Vec<u8>>) -> Self {
        Self::new(mode, EntryKind::Bytes(data.into()))
    }
    pub fn file(mode: u32, path: impl Into<PathBuf>) -> Self {
        Self::new(mode, EntryKind::File(path.into()))
    }
    pub fn symlink(target: impl Into<String>) -> Self {
        Self::new(0o777, EntryKind::Symlink(target.into()))
    }
    pub fn new(mode: u32, kind: EntryKind) -> Self {
        Self {
            mode: mode & 0o7777,
            uid: 0,
            gid: 0,
            kind,
        }
    }
}

/// A layer blob as it sits in a [`BlobStore`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    /// Digest of the compressed blob.
    pub digest: String,
    /// Digest of the uncompressed tar (what the config's rootfs lists).
    pub diff_id: String,
    /// Compressed size in bytes.
    pub size: u64,
    pub uncompressed_size: u64,
    pub media_type: String,
}

impl Layer {
    /// Opens the tar stream of this layer, whatever the blob's compression
    /// (gzip, zstd or none, told by its first bytes).
    pub fn open(&self, store: &BlobStore) -> Result<Box<dyn Read>> {
        use std::io::BufRead;
        let path = store.path(&self.digest)?;
        let f = File::open(&path).map_err(|_| Error::MissingBlob {
            digest: self.digest.clone(),
            store: store.root().display().to_string(),
        })?;
        let mut f = io::BufReader::new(f);
        let head = f.fill_buf().ctx(|| format!("reading {}", path.display()))?;
        Ok(if head.starts_with(&[0x1f, 0x8b]) {
            Box::new(flate2::read::GzDecoder::new(f))
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Box::new(
                zstd::stream::read::Decoder::with_buffer(f).ctx(|| "opening zstd layer".into())?,
            )
        } else {
            Box::new(f)
        })
    }
}

/// Collects entries by path and writes them as one reproducible tar+gzip:
/// entries sorted by path, parents before children, fixed mtime, numeric
/// owners only, no names or times in the gzip header.
#[derive(Debug, Default, Clone)]
pub struct LayerBuilder {
    entries: BTreeMap<String, Entry>,
}

/// Checks and normalises a path inside a layer: relative, no `..`, no `.`,
/// no empty components, no NUL.
pub(crate) fn clean_path(path: &str) -> Result<String> {
    let trimmed = path.trim_start_matches("./").trim_start_matches('/');
    let mut out = Vec::new();
    for comp in trimmed.split('/') {
        match comp {
            "" | "." => continue,
            ".." => {
                return Err(Error::BadEntry {
                    path: path.to_string(),
                    reason: "contains `..`".into(),
                })
            }
            c if c.contains('\0') => {
                return Err(Error::BadEntry {
                    path: path.to_string(),
                    reason: "contains NUL".into(),
                })
            }
            c => out.push(c),
        }
    }
    if out.is_empty() {
        return Err(Error::BadEntry {
            path: path.to_string(),
            reason: "empty path".into(),
        });
    }
    Ok(out.join("/"))
}

impl LayerBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces the entry at `path` (later additions win, as in a
    /// file system).
    pub fn add(&mut self, path: &str, entry: Entry) -> Result<()> {
        let path = clean_path(path)?;
        if let EntryKind::Hardlink(t) = &entry.kind {
            clean_path(t)?;
        }
        self.entries.insert(path, entry);
        Ok(())
    }

    pub fn remove(&mut self, path: &str) -> Option<Entry> {
        clean_path(path).ok().and_then(|p| self.entries.remove(&p))
    }

    pub fn get(&self, path: &str) -> Option<&Entry> {
        clean_path(path).ok().and_then(|p| self.entries.get(&p))
    }

    pub fn contains(&self, path: &str) -> bool {
        self.get(path).is_some()
    }

    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&str, &Entry) -> bool) {
        self.entries.retain(|k, v| keep(k, v));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds 0755 directories for every parent that has no entry of its own,
    /// because some unpackers refuse (or invent modes for) missing parents.
    fn fill_parents(&mut self) {
        let mut missing = Vec::new();
        for path in self.entries.keys() {
            let mut p = path.as_str();
            while let Some((parent, _)) = p.rsplit_once('/') {
                if !self.entries.contains_key(parent) {
                    missing.push(parent.to_string());
                }
                p = parent;
            }
        }
        for m in missing {
            self.entries.entry(m).or_insert_with(|| Entry::dir(0o755));
        }
    }

    /// Writes the tar (uncompressed) to `out`. The bytes depend only on the
    /// entries and `mtime`.
    pub fn write_tar<W: Write>(&mut self, out: W, mtime: u64) -> Result<W> {
        self.fill_parents();
        let mut tar = tar::Builder::new(out);
        tar.follow_symlinks(false);
        for (path, entry) in &self.entries {
            let mut h = tar::Header::new_gnu();
            h.set_mtime(mtime);
            h.set_uid(entry.uid);
            h.set_gid(entry.gid);
            h.set_mode(entry.mode);
            // Empty user and group names: only the numeric ids count.
            h.set_username("").ok();
            h.set_groupname("").ok();
            let werr = |e: io::Error| Error::Io {
                context: format!("writing layer entry {path}"),
                source: e,
            };
            match &entry.kind {
                EntryKind::Dir => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    tar.append_data(&mut h, format!("{path}/"), io::empty())
                        .map_err(werr)?;
                }
                EntryKind::Bytes(data) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(data.len() as u64);
                    tar.append_data(&mut h, path, data.as_slice())
                        .map_err(werr)?;
                }
                EntryKind::File(src) => {
                    let f = File::open(src).ctx(|| format!("opening {}", src.display()))?;
                    let len = f
                        .metadata()
                        .ctx(|| format!("reading {}", src.display()))?
                        .len();
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(len);
                    // `take` guards against a file that grows while we read it.
                    tar.append_data(&mut h, path, f.take(len)).map_err(werr)?;
                }
                EntryKind::Symlink(target) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    tar.append_link(&mut h, path, target).map_err(werr)?;
                }
                EntryKind::Hardlink(target) => {
                    let target = clean_path(target)?;
                    // A hard link must name an earlier regular file of the
                    // same layer; otherwise the content is written again.
                    match self.entries.get(&target).map(|e| &e.kind) {
                        Some(EntryKind::Bytes(_)) | Some(EntryKind::File(_))
                            if target.as_str() < path.as_str() =>
                        {
                            h.set_entry_type(tar::EntryType::Link);
                            h.set_size(0);
                            tar.append_link(&mut h, path, &target).map_err(werr)?;
                        }
                        Some(EntryKind::Bytes(data)) => {
                            h.set_entry_type(tar::EntryType::Regular);
                            h.set_size(data.len() as u64);
                            tar.append_data(&mut h, path, data.as_slice())
                                .map_err(werr)?;
                        }
                        Some(EntryKind::File(src)) => {
                            let data =
                                std::fs::read(src).ctx(|| format!("reading {}", src.display()))?;
                            h.set_entry_type(tar::EntryType::Regular);
                            h.set_size(data.len() as u64);
                            tar.append_data(&mut h, path, data.as_slice())
                                .map_err(werr)?;
                        }
                        _ => {
                            return Err(Error::BadEntry {
                                path: path.clone(),
                                reason: format!(
                                    "hard link to {target}, which is not a file of this layer"
                                ),
                            })
                        }
                    }
                }
            }
        }
        tar.into_inner().ctx(|| "finishing layer tar".into())
    }

    /// Writes the layer as gzip into `store` and returns its description.
    pub fn write(mut self, store: &BlobStore, mtime: u64) -> Result<Layer> {
        let tmp = store.temp_file()?;
        let file = tmp.reopen().ctx(|| "reopening temporary blob".into())?;
        let compressed = HashingWriter::new(BufWriter::with_capacity(1 << 20, file));
        let gz = crate::gzip::ParGzWriter::new(compressed, Compression::new(6))
            .ctx(|| "starting gzip stream".into())?;
        let uncompressed = HashingWriter::new(gz);
        let uncompressed = self.write_tar(uncompressed, mtime)?;
        let (gz, diff_id, uncompressed_size) = uncompressed.finish();
        let compressed = gz.finish().ctx(|| "finishing gzip stream".into())?;
        let (mut buf, digest, size) = compressed.finish();
        buf.flush().ctx(|| "flushing layer blob".into())?;
        drop(buf);
        store.commit(tmp, &digest)?;
        Ok(Layer {
            digest,
            diff_id,
            size,
            uncompressed_size,
            media_type: MEDIA_TYPE_LAYER_GZIP.to_string(),
        })
    }
}

/// Reads a whole directory tree from disk into a builder under `prefix`,
/// keeping the executable bit and symlinks; owners become 0:0.
pub fn add_tree(builder: &mut LayerBuilder, root: &Path, prefix: &str) -> Result<()> {
    fn walk(b: &mut LayerBuilder, dir: &Path, rel: &str) -> Result<()> {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .ctx(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok())
            .collect();
        names.sort_by_key(|e| e.file_name());
        for e in names {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            let rel_path = format!("{rel}/{name}");
            let meta =
                std::fs::symlink_metadata(&path).ctx(|| format!("reading {}", path.display()))?;
            let ft = meta.file_type();
            if ft.is_symlink() {
                let t = std::fs::read_link(&path).ctx(|| format!("reading {}", path.display()))?;
                b.add(&rel_path, Entry::symlink(t.to_string_lossy().into_owned()))?;
            } else if ft.is_dir() {
                b.add(&rel_path, Entry::dir(0o755))?;
                walk(b, &path, &rel_path)?;
            } else if ft.is_file() {
                use std::os::unix::fs::PermissionsExt;
                let mode = if meta.permissions().mode() & 0o111 != 0 {
                    0o755
                } else {
                    0o644
                };
                b.add(&rel_path, Entry::file(mode, path))?;
            }
            // Sockets, fifos and devices never go into a layer.
        }
        Ok(())
    }
    walk(builder, root, prefix.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> LayerBuilder {
        let mut b = LayerBuilder::new();
        b.add("usr/bin/python3", Entry::bytes(0o755, b"#!elf".to_vec()))
            .unwrap();
        b.add("usr/bin/python", Entry::symlink("python3")).unwrap();
        b.add(
            "etc/passwd",
            Entry::bytes(0o644, b"root:x:0:0::/root:/sbin/nologin\n".to_vec()),
        )
        .unwrap();
        b.add(
            &format!("opt/{}/file.txt", "long-name".repeat(20)),
            Entry::bytes(0o644, b"x".to_vec()),
        )
        .unwrap();
        b
    }

    #[test]
    fn same_entries_in_any_order_give_same_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let a = sample().write(&store, 315532800).unwrap();
        let mut rev = LayerBuilder::new();
        let s = sample();
        let items: Vec<_> = s.iter().map(|(p, e)| (p.to_string(), e.clone())).collect();
        for (p, e) in items.into_iter().rev() {
            rev.add(&p, e).unwrap();
        }
        let b = rev.write(&store, 315532800).unwrap();
        assert_eq!(a, b);
        let c = sample().write(&store, 315532801).unwrap();
        assert_ne!(a.digest, c.digest, "mtime must be part of the content");
    }

    #[test]
    fn tar_is_sorted_with_parents_first_and_normalised_headers() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let layer = sample().write(&store, 1000).unwrap();
        let mut ar = tar::Archive::new(layer.open(&store).unwrap());
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            let h = e.header();
            assert_eq!(h.mtime().unwrap(), 1000);
            assert_eq!(h.uid().unwrap(), 0);
            assert_eq!(h.gid().unwrap(), 0);
            assert_eq!(h.username().unwrap(), Some(""));
            seen.push(e.path().unwrap().to_string_lossy().into_owned());
        }
        assert_eq!(seen[0], "etc/");
        let pos = |p: &str| seen.iter().position(|s| s == p).unwrap();
        assert!(pos("usr/") < pos("usr/bin/"));
        assert!(pos("usr/bin/") < pos("usr/bin/python"));
        assert!(seen
            .iter()
            .any(|s| s.ends_with("file.txt") && s.len() > 100));
    }

    #[test]
    fn gzip_header_has_no_name_or_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let layer = sample().write(&store, 1000).unwrap();
        let raw = std::fs::read(store.path(&layer.digest).unwrap()).unwrap();
        assert_eq!(&raw[..3], &[0x1f, 0x8b, 8]);
        assert_eq!(raw[3], 0, "no FNAME/FCOMMENT/FEXTRA flags");
        assert_eq!(&raw[4..8], &[0, 0, 0, 0], "mtime zero");
        assert_eq!(layer.size, raw.len() as u64);
        assert_eq!(layer.digest, crate::sha256_digest(&raw));
    }

    #[test]
    fn rejects_escaping_paths() {
        let mut b = LayerBuilder::new();
        assert!(b.add("../etc/passwd", Entry::dir(0o755)).is_err());
        assert!(b.add("a/../../b", Entry::dir(0o755)).is_err());
        assert!(b.add("/", Entry::dir(0o755)).is_err());
        assert!(b.add("/abs/ok", Entry::dir(0o755)).is_ok());
        assert!(b.contains("abs/ok"));
    }

    #[test]
    fn hardlink_to_later_entry_is_written_as_a_copy() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let mut b = LayerBuilder::new();
        b.add("z/target", Entry::bytes(0o644, b"data".to_vec()))
            .unwrap();
        b.add(
            "a/link",
            Entry::new(0o644, EntryKind::Hardlink("z/target".into())),
        )
        .unwrap();
        b.add(
            "zz/link",
            Entry::new(0o644, EntryKind::Hardlink("z/target".into())),
        )
        .unwrap();
        let layer = b.write(&store, 0).unwrap();
        let mut ar = tar::Archive::new(layer.open(&store).unwrap());
        let kinds: Vec<_> = ar
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.header().entry_type(),
                )
            })
            .collect();
        assert!(kinds.contains(&("a/link".into(), tar::EntryType::Regular)));
        assert!(kinds.contains(&("zz/link".into(), tar::EntryType::Link)));
    }
}
