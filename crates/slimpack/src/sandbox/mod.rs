//! Running the image's own programs at build time, without Docker: layers
//! unpacked safely into a root directory, and `bwrap` to run in it; the
//! builder stage that compiles source-only packages is one such run.

mod chroot;
mod command;
pub mod loader;

pub use command::{bwrap_path, mode, wait, Mode, Output, Sandbox, MODE_ENV};

use crate::core::cache::{Cache, CacheDir, KeyHasher};
use anyhow::{anyhow, bail, Context, Result};
use slimpack_oci::{BlobStore, Layer};
use std::collections::HashSet;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Normalises a tar path; `None` for the root itself. Refuses `..`.
fn clean(raw: &str) -> Result<Option<String>> {
    let mut parts = Vec::new();
    for c in raw.split('/') {
        match c {
            "" | "." => {}
            ".." => bail!("entry {raw:?} contains `..`"),
            c => parts.push(c),
        }
    }
    Ok((!parts.is_empty()).then(|| parts.join("/")))
}

struct Unpacker<'a> {
    root: &'a Path,
    /// Directories known to be real directories (not symlinks) on disk.
    real_dirs: HashSet<String>,
    dir_modes: Vec<(PathBuf, u32, std::time::SystemTime)>,
    /// Device nodes and fifos, never created.
    skipped: Vec<String>,
    /// Keep setuid/setgid bits (`run --keep-setuid`); cleared otherwise.
    keep_setuid: bool,
    /// Bytes of file content written so far, and the most allowed.
    written: u64,
    limit: u64,
}

/// Sets the most file content one unpack writes (bytes, or with a K, M, G
/// or T suffix).
pub const UNPACK_LIMIT_ENV: &str = "SLIMPACK_MAX_UNPACK_SIZE";
const DEFAULT_UNPACK_LIMIT: u64 = 20 << 30;

/// `20G` → bytes; None for anything else.
fn parse_size(v: &str) -> Option<u64> {
    let v = v.trim();
    let (num, shift) = match v.char_indices().last()? {
        (i, 'K' | 'k') => (&v[..i], 10),
        (i, 'M' | 'm') => (&v[..i], 20),
        (i, 'G' | 'g') => (&v[..i], 30),
        (i, 'T' | 't') => (&v[..i], 40),
        _ => (v, 0),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(1u64 << shift)
}

fn unpack_limit() -> Result<u64> {
    match std::env::var(UNPACK_LIMIT_ENV) {
        Ok(v) if !v.trim().is_empty() => parse_size(&v).filter(|n| *n > 0).ok_or_else(|| {
            anyhow!("{UNPACK_LIMIT_ENV}={v:?}: expected a size such as 20G or 500M")
        }),
        _ => Ok(DEFAULT_UNPACK_LIMIT),
    }
}

impl Unpacker<'_> {
    /// Makes sure every parent of `rel` is a real directory inside the root,
    /// so that writing `rel` can never go through a symlink.
    fn parents(&mut self, rel: &str) -> Result<PathBuf> {
        let mut acc = String::new();
        let comps: Vec<&str> = rel.split('/').collect();
        for c in &comps[..comps.len() - 1] {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(c);
            if self.real_dirs.contains(&acc) {
                continue;
            }
            let p = self.root.join(&acc);
            match fs::symlink_metadata(&p) {
                Ok(m) if m.file_type().is_symlink() => {
                    bail!("entry {rel:?} would be written through the symlink {acc:?}")
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) => bail!("entry {rel:?} needs {acc:?} to be a directory, but it is a file"),
                Err(_) => {
                    fs::create_dir(&p).with_context(|| format!("creating {}", p.display()))?
                }
            }
            self.real_dirs.insert(acc.clone());
        }
        Ok(self.root.join(rel))
    }

    /// Removes `path` and forgets any directory at or below it, so that a
    /// later entry recreates (and re-checks) its parents.
    fn remove(&mut self, path: &Path) {
        if let Ok(rel) = path.strip_prefix(self.root) {
            let rel = rel.to_string_lossy().into_owned();
            let below = format!("{rel}/");
            self.real_dirs
                .retain(|d| rel.is_empty() || (d != &rel && !d.starts_with(&below)));
        }
        if let Ok(m) = fs::symlink_metadata(path) {
            if m.is_dir() {
                let _ = fs::remove_dir_all(path);
            } else {
                let _ = fs::remove_file(path);
            }
        }
    }

    fn entry<R: Read>(&mut self, e: &mut tar::Entry<R>) -> Result<()> {
        let raw = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let Some(rel) = clean(&raw)? else {
            return Ok(());
        };
        let name = rel.rsplit('/').next().unwrap_or(&rel).to_string();
        // OCI whiteouts: an opaque directory, or one deleted name.
        if name == ".wh..wh..opq" {
            let p = self.parents(&rel)?;
            let dir = p.parent().unwrap_or(self.root).to_path_buf();
            if let Ok(rd) = fs::read_dir(&dir) {
                for c in rd.flatten() {
                    self.remove(&c.path());
                }
            }
            return Ok(());
        }
        if let Some(target) = name.strip_prefix(".wh.") {
            // The whiteout of one name beside it: a single normal path
            // component, never `..` or `.` (the whiteout of `..` once
            // removed the directory above the root).
            if target.is_empty() || target == "." || target == ".." || target.starts_with(".wh.") {
                bail!(
                    "entry {} is not a valid whiteout (it must name one file beside it)",
                    crate::core::text::shown(&raw)
                );
            }
            let p = self.parents(&rel)?;
            self.remove(&p.with_file_name(target));
            return Ok(());
        }
        let path = self.parents(&rel)?;
        let mask = if self.keep_setuid { 0o7777 } else { 0o1777 };
        let mode = e.header().mode().unwrap_or(0o644) & mask;
        let mtime = std::time::UNIX_EPOCH + Duration::from_secs(e.header().mtime().unwrap_or(0));
        match e.header().entry_type() {
            tar::EntryType::Directory => {
                match fs::symlink_metadata(&path) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        self.remove(&path);
                        fs::create_dir(&path)?;
                    }
                    Err(_) => fs::create_dir(&path)
                        .with_context(|| format!("creating {}", path.display()))?,
                }
                self.real_dirs.insert(rel);
                self.dir_modes.push((path, mode, mtime));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                self.written = self.written.saturating_add(e.size());
                if self.written > self.limit {
                    bail!(
                        "the image holds more than {} MiB of files ({} passes it); it was not unpacked. Set {UNPACK_LIMIT_ENV} (e.g. 40G) if the image is really that large",
                        self.limit >> 20,
                        crate::core::text::escape_controls(&rel)
                    );
                }
                self.remove(&path);
                let mut f = fs::File::create(&path)
                    .with_context(|| format!("creating {}", path.display()))?;
                std::io::copy(e, &mut f)?;
                // Timestamp-based .pyc files compare the source's mtime:
                // losing it makes Python recompile everything at start.
                f.set_modified(mtime)?;
                fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
            }
            tar::EntryType::Symlink => {
                let target = e
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .ok_or_else(|| anyhow!("symlink {rel:?} without target"))?;
                self.remove(&path);
                std::os::unix::fs::symlink(&target, &path)?;
            }
            tar::EntryType::Link => {
                let target = e
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .ok_or_else(|| anyhow!("hard link {rel:?} without target"))?;
                let t = clean(&target)?.ok_or_else(|| anyhow!("hard link {rel:?} to the root"))?;
                let tpath = self.parents(&t)?;
                let m = fs::symlink_metadata(&tpath)
                    .map_err(|_| anyhow!("hard link {rel:?} to {t:?}, which does not exist"))?;
                if !m.is_file() {
                    bail!("hard link {rel:?} to {t:?}, which is not a regular file");
                }
                self.remove(&path);
                fs::hard_link(&tpath, &path)?;
            }
            // Device nodes and fifos are never created (a runtime provides
            // /dev); the rest of the image is still usable.
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                self.skipped.push(rel);
            }
            other => bail!("entry {rel:?} has an unsupported type {other:?}"),
        }
        Ok(())
    }
}

/// Unpacks layers, in order, into `dest`, through a temporary sibling and a
/// rename, so a failure leaves nothing behind. `dest` must be named by its
/// content (a cache key): when it already exists it is kept as it is.
/// Returns the device nodes and fifos that were skipped.
/// `keep_setuid` keeps setuid and setgid bits (cleared otherwise).
pub fn unpack(
    store: &BlobStore,
    layers: &[Layer],
    dest: &Path,
    keep_setuid: bool,
) -> Result<Vec<String>> {
    unpack_into(dest, keep_setuid, |u| {
        for layer in layers {
            let reader = slimpack_oci::open_layer_checked(store, layer)?;
            let mut ar = tar::Archive::new(reader);
            for e in ar.entries()? {
                let mut e = e?;
                u.entry(&mut e)
                    .with_context(|| format!("unpacking layer {}", layer.digest))?;
            }
            // What was unpacked must be what the config names (OCI image spec).
            ar.into_inner().finish()?;
        }
        Ok(())
    })
}

/// [`unpack`] for one uncompressed tar stream.
pub fn unpack_stream(tar_stream: impl Read, dest: &Path) -> Result<Vec<String>> {
    unpack_into(dest, false, |u| {
        let mut ar = tar::Archive::new(tar_stream);
        for e in ar.entries()? {
            u.entry(&mut e?)?;
        }
        Ok(())
    })
}

/// Unpacks a tree built in memory into `dest` (as [`unpack_stream`]: the
/// same checks, through a temporary sibling), writing and reading the tar
/// at once, its files dated `mtime`.
pub fn unpack_tree(tree: &mut slimpack_oci::LayerBuilder, dest: &Path, mtime: u64) -> Result<()> {
    let (reader, writer) = std::io::pipe()?;
    std::thread::scope(|s| {
        let w = s.spawn(move || tree.write_tar(writer, mtime).map(drop));
        let unpacked = unpack_stream(reader, dest);
        let written = w
            .join()
            .map_err(|_| anyhow!("writing the tree to unpack panicked"))?;
        unpacked.map(drop).and(written.map_err(anyhow::Error::from))
    })
}

fn unpack_into(
    dest: &Path,
    keep_setuid: bool,
    fill: impl FnOnce(&mut Unpacker) -> Result<()>,
) -> Result<Vec<String>> {
    unpack_limited(dest, keep_setuid, unpack_limit()?, fill)
}

fn unpack_limited(
    dest: &Path,
    keep_setuid: bool,
    limit: u64,
    fill: impl FnOnce(&mut Unpacker) -> Result<()>,
) -> Result<Vec<String>> {
    let parent = dest.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent)?;
    let tmp = tempfile::Builder::new()
        .prefix(".unpack-")
        .tempdir_in(parent)?;
    let mut u = Unpacker {
        root: tmp.path(),
        real_dirs: HashSet::new(),
        dir_modes: Vec::new(),
        skipped: Vec::new(),
        keep_setuid,
        written: 0,
        limit,
    };
    fill(&mut u)?;
    // Directory modes last, so a read-only directory can still be filled.
    for (p, m, t) in u.dir_modes.iter().rev() {
        if let Ok(d) = fs::File::open(p) {
            let _ = d.set_modified(*t);
        }
        let _ = fs::set_permissions(p, fs::Permissions::from_mode(*m | 0o500));
    }
    let skipped = std::mem::take(&mut u.skipped);
    move_into_place(&tmp.keep(), dest)?;
    Ok(skipped)
}

/// Renames the unpacked tree `from` to `dest`, a name given by the
/// content it holds: if another build got there first, its copy is as
/// good as ours, and may be in use; ours goes.
fn move_into_place(from: &Path, dest: &Path) -> Result<()> {
    if let Err(e) = fs::rename(from, dest) {
        let _ = fs::remove_dir_all(from);
        if !dest.is_dir() {
            return Err(e).with_context(|| format!("renaming into {}", dest.display()));
        }
    }
    Ok(())
}

/// The root file system of `layers`, unpacked once into the cache and
/// reused: named by the layer digests (and the unpacker's version, bumped
/// when what it writes changes: v2 keeps file times). Returns the device
/// nodes and fifos that were skipped when it was unpacked now.
/// `keep_setuid` keeps setuid and setgid bits (a separate tree).
pub fn cached_rootfs(
    cache: &Cache,
    store: &BlobStore,
    layers: &[Layer],
    keep_setuid: bool,
) -> Result<(PathBuf, Vec<String>)> {
    let dir = rootfs_dir(cache, layers, keep_setuid)?;
    let skipped = if dir.is_dir() {
        Vec::new()
    } else {
        unpack(store, layers, &dir, keep_setuid).context("unpacking the image")?
    };
    Ok((dir, skipped))
}

/// Where [`cached_rootfs`] keeps `layers` unpacked.
pub fn rootfs_dir(cache: &Cache, layers: &[Layer], keep_setuid: bool) -> Result<PathBuf> {
    let mut h = KeyHasher::new("rootfs");
    h.part("unpacker", "v2");
    if keep_setuid {
        h.part("keep-setuid", "yes");
    }
    for l in layers {
        h.part("layer", &l.digest);
    }
    Ok(cache.dir(CacheDir::Rootfs)?.join(&h.finish()[..32]))
}

/// Makes `unpacked` (a tree in the cache's rootfs directory, unpacked
/// from the very tar stream `layer` was written from) the cache's
/// unpacked copy of `layer`, found by [`cached_rootfs`]; a copy already
/// there is as good and stays.
pub fn keep_unpacked(cache: &Cache, layer: &Layer, unpacked: &Path) -> Result<PathBuf> {
    let dir = rootfs_dir(cache, std::slice::from_ref(layer), false)?;
    if !dir.is_dir() {
        move_into_place(unpacked, &dir)?;
    }
    Ok(dir)
}

/// Whether `rel` is a directory inside `root`, resolved as the image would.
pub fn dir_in_root(root: &Path, rel: &str) -> bool {
    resolve_in_root(root, rel).is_some_and(|p| p.is_dir())
}

/// Whether `rel` is a regular file inside `root`, resolved as the image would.
pub fn file_in_root(root: &Path, rel: &str) -> bool {
    resolve_in_root(root, rel).is_some_and(|p| p.is_file())
}

/// Whether `rel` exists inside `root`, resolved as the image would.
pub fn exists_in_root(root: &Path, rel: &str) -> bool {
    resolve_in_root(root, rel).is_some()
}

/// Where `rel` leads inside the unpacked `root`, following its symlinks as
/// the image would see them: an absolute target starts again at `root`,
/// `..` never climbs above it, and a loop or a chain of more than 40 links
/// ends the walk. The host's own files are never looked at. None when the
/// path does not exist in the root.
pub fn resolve_in_root(root: &Path, rel: &str) -> Option<PathBuf> {
    let mut todo: Vec<String> = rel.split('/').rev().map(str::to_string).collect();
    let mut at: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(c) = todo.pop() {
        match c.as_str() {
            "" | "." => continue,
            ".." => {
                at.pop();
                continue;
            }
            _ => {}
        }
        let here: PathBuf = at
            .iter()
            .chain([&c])
            .fold(root.to_path_buf(), |p, s| p.join(s));
        let meta = std::fs::symlink_metadata(&here).ok()?;
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > 40 {
                return None;
            }
            let target = std::fs::read_link(&here).ok()?;
            let target = target.to_string_lossy().into_owned();
            if target.starts_with('/') {
                at.clear();
            }
            todo.extend(target.split('/').rev().map(str::to_string));
        } else {
            at.push(c);
        }
    }
    Some(at.iter().fold(root.to_path_buf(), |p, s| p.join(s)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_the_unpack_cap() {
        assert_eq!(parse_size("20G"), Some(20 << 30));
        assert_eq!(parse_size("500m"), Some(500 << 20));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size("99999999999T"), None);
        let d = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        for name in ["a", "b"] {
            let mut h = tar::Header::new_gnu();
            h.set_size(600);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, &[0u8; 600][..]).unwrap();
        }
        let tar = b.into_inner().unwrap();
        let fill = |u: &mut Unpacker| -> Result<()> {
            let mut ar = tar::Archive::new(&tar[..]);
            for e in ar.entries()? {
                u.entry(&mut e?)?;
            }
            Ok(())
        };
        let e = unpack_limited(&d.path().join("small"), false, 1000, fill).unwrap_err();
        assert!(format!("{e:#}").contains(UNPACK_LIMIT_ENV), "{e:#}");
        assert!(!d.path().join("small").exists(), "nothing half-written");
        unpack_limited(&d.path().join("fits"), false, 1200, fill).unwrap();
        assert!(d.path().join("fits/b").is_file());
    }

    #[test]
    fn a_layer_must_be_what_the_config_names() {
        let d = tempfile::tempdir().unwrap();
        let store = BlobStore::open(d.path().join("store")).unwrap();
        let good = raw_layer(&store, &[("a", tar::EntryType::Regular, "")]);
        unpack(
            &store,
            std::slice::from_ref(&good),
            &d.path().join("ok"),
            false,
        )
        .unwrap();
        let mut bad = good.clone();
        bad.diff_id = raw_layer(&store, &[("b", tar::EntryType::Regular, "")]).diff_id;
        let e = unpack(&store, &[bad], &d.path().join("bad"), false).unwrap_err();
        assert!(format!("{e:#}").contains("rootfs.diff_ids"), "{e:#}");
        assert!(
            !d.path().join("bad").exists(),
            "nothing half-unpacked is left"
        );
    }

    #[test]
    fn the_whiteout_of_dotdot_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let store = BlobStore::open(d.path().join("store")).unwrap();
        fs::create_dir(d.path().join("rootfs")).unwrap();
        fs::write(d.path().join("rootfs/other-image"), "cached").unwrap();
        for name in [".wh...", "a/.wh...", ".wh.", ".wh..wh.x"] {
            let layer = raw_layer(
                &store,
                &[
                    ("a", tar::EntryType::Directory, ""),
                    (name, tar::EntryType::Regular, ""),
                ],
            );
            let e = unpack(&store, &[layer], &d.path().join("rootfs/r"), false).unwrap_err();
            let e = format!("{e:#}");
            assert!(e.contains("not a valid whiteout"), "{name}: {e}");
            assert_eq!(
                fs::read_to_string(d.path().join("rootfs/other-image")).unwrap(),
                "cached"
            );
        }
    }

    #[test]
    fn links_resolve_inside_the_root_only() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("usr/lib/x86_64-linux-gnu")).unwrap();
        std::fs::write(r.join("usr/lib/x86_64-linux-gnu/libc-2.31.so"), "elf").unwrap();
        std::os::unix::fs::symlink("usr/lib", r.join("lib")).unwrap();
        // Absolute, through the /lib → usr/lib link, as bullseye ships it.
        std::os::unix::fs::symlink(
            "/lib/x86_64-linux-gnu/libc-2.31.so",
            r.join("usr/lib/x86_64-linux-gnu/libc.so.6"),
        )
        .unwrap();
        let p = resolve_in_root(r, "usr/lib/x86_64-linux-gnu/libc.so.6").unwrap();
        assert_eq!(p, r.join("usr/lib/x86_64-linux-gnu/libc-2.31.so"));
        // A link to a host file stays in the root (where there is none yet).
        std::os::unix::fs::symlink("/etc/passwd", r.join("passwd")).unwrap();
        assert!(resolve_in_root(r, "passwd").is_none());
        std::fs::create_dir(r.join("etc")).unwrap();
        std::fs::write(r.join("etc/passwd"), "root's own").unwrap();
        assert_eq!(resolve_in_root(r, "passwd").unwrap(), r.join("etc/passwd"));
        std::os::unix::fs::symlink("../../../../etc/passwd", r.join("up")).unwrap();
        assert_eq!(resolve_in_root(r, "up").unwrap(), r.join("etc/passwd"));
        std::os::unix::fs::symlink("loop", r.join("loop")).unwrap();
        assert!(resolve_in_root(r, "loop").is_none());
    }
    use slimpack_oci::{Entry, LayerBuilder};

    fn raw_layer(store: &BlobStore, entries: &[(&str, tar::EntryType, &str)]) -> Layer {
        // Build a tar by hand so that hostile names survive.
        let mut b = tar::Builder::new(Vec::new());
        for (path, ty, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*ty);
            h.set_mode(0o4755);
            h.set_size(if *ty == tar::EntryType::Regular { 1 } else { 0 });
            let name = h.as_old_mut().name.as_mut();
            name[..path.len()].copy_from_slice(path.as_bytes());
            if !link.is_empty() {
                h.set_link_name(link).unwrap();
            }
            h.set_cksum();
            let data: &[u8] = if *ty == tar::EntryType::Regular {
                b"x"
            } else {
                b""
            };
            b.append(&h, data).unwrap();
        }
        let tar_bytes = b.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar_bytes).unwrap();
        let blob = gz.finish().unwrap();
        let digest = store.put_bytes(&blob).unwrap();
        Layer {
            digest,
            diff_id: slimpack_oci::sha256_digest(&tar_bytes),
            size: blob.len() as u64,
            uncompressed_size: tar_bytes.len() as u64,
            media_type: slimpack_oci::MEDIA_TYPE_LAYER_GZIP.into(),
        }
    }

    #[test]
    fn hostile_layers_write_nothing_outside() {
        let d = tempfile::tempdir().unwrap();
        let store = BlobStore::open(d.path().join("store")).unwrap();
        let outside = d.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let cases: Vec<Vec<(&str, tar::EntryType, &str)>> = vec![
            vec![("../outside/pwned", tar::EntryType::Regular, "")],
            vec![
                ("esc", tar::EntryType::Symlink, "/"),
                ("esc/outside/pwned", tar::EntryType::Regular, ""),
            ],
            vec![
                ("rel", tar::EntryType::Symlink, "../outside"),
                ("rel/pwned", tar::EntryType::Regular, ""),
            ],
            vec![("h", tar::EntryType::Link, "../outside/x")],
        ];
        for (i, c) in cases.iter().enumerate() {
            let layer = raw_layer(&store, c);
            let dest = d.path().join(format!("root{i}"));
            assert!(
                unpack(&store, &[layer], &dest, false).is_err(),
                "case {i} must be refused"
            );
            assert!(!dest.exists(), "case {i} left a partial root");
        }
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    }

    #[test]
    fn device_nodes_are_skipped_not_created() {
        let d = tempfile::tempdir().unwrap();
        let store = BlobStore::open(d.path().join("store")).unwrap();
        let layer = raw_layer(
            &store,
            &[
                ("dev/sda", tar::EntryType::Block, ""),
                ("dev/console", tar::EntryType::Char, ""),
                ("p", tar::EntryType::Fifo, ""),
                ("ok", tar::EntryType::Regular, ""),
            ],
        );
        let dest = d.path().join("root");
        let skipped = unpack(&store, &[layer], &dest, false).unwrap();
        assert_eq!(skipped, vec!["dev/sda", "dev/console", "p"]);
        assert!(!dest.join("dev/sda").exists() && !dest.join("p").exists());
        assert!(dest.join("ok").is_file());
    }

    #[test]
    fn whiteout_of_a_parent_directory_removes_the_tree() {
        let d = tempfile::tempdir().unwrap();
        let store = BlobStore::open(d.path().join("store")).unwrap();
        let mut b = LayerBuilder::new();
        b.add("a/b/c", Entry::bytes(0o644, "c")).unwrap();
        b.add("a2/keep", Entry::bytes(0o644, "k")).unwrap();
        let l1 = b.write(&store, 0).unwrap();
        let l2 = raw_layer(&store, &[(".wh.a", tar::EntryType::Regular, "")]);
        let l3 = raw_layer(&store, &[("a/new", tar::EntryType::Regular, "")]);
        let dest = d.path().join("root");
        unpack(&store, &[l1, l2, l3], &dest, false).unwrap();
        assert!(
            !dest.join("a/b").exists(),
            "the whiteout removed a/ and all below"
        );
        assert!(
            dest.join("a/new").is_file(),
            "a later layer may recreate it"
        );
        assert!(dest.join("a2/keep").is_file());
        assert!(
            !dest.join(".wh.a").exists(),
            "whiteout markers are never materialised"
        );
    }

    #[test]
    fn whiteouts_and_setuid() {
        let d = tempfile::tempdir().unwrap();
        let store = BlobStore::open(d.path().join("store")).unwrap();
        let mut b = LayerBuilder::new();
        b.add("a/keep", Entry::bytes(0o644, "k")).unwrap();
        b.add("a/gone", Entry::bytes(0o644, "g")).unwrap();
        b.add("o/old", Entry::bytes(0o644, "o")).unwrap();
        let l1 = b.write(&store, 0).unwrap();
        let l2 = raw_layer(
            &store,
            &[
                ("a/.wh.gone", tar::EntryType::Regular, ""),
                ("o/.wh..wh..opq", tar::EntryType::Regular, ""),
                ("o/new", tar::EntryType::Regular, ""),
            ],
        );
        let dest = d.path().join("root");
        unpack(&store, &[l1, l2], &dest, false).unwrap();
        assert!(dest.join("a/keep").exists());
        assert!(!dest.join("a/gone").exists());
        assert!(!dest.join("o/old").exists());
        let m = fs::metadata(dest.join("o/new"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(m & 0o7000, 0, "setuid must be cleared");
        let t = fs::metadata(dest.join("a/keep"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(
            t,
            std::time::UNIX_EPOCH,
            "file times come from the layer (here 0)"
        );
        let l3 = raw_layer(&store, &[("o/new", tar::EntryType::Regular, "")]);
        let kept = d.path().join("kept");
        unpack(&store, &[l3], &kept, true).unwrap();
        let m = fs::metadata(kept.join("o/new"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(m & 0o4000, 0o4000, "kept when asked");
    }

    fn entry_strategy() -> impl proptest::strategy::Strategy<Value = (String, u8, String)> {
        use proptest::prelude::*;
        let comp = prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just("..".to_string()),
            Just("outside".to_string()),
            Just(".wh.a".to_string()),
            Just(".wh..".to_string()),
            Just(".wh...".to_string()),
            Just(".wh.".to_string()),
            Just(".wh..wh..opq".to_string()),
            Just(".wh..wh..wh..opq".to_string())
        ];
        let path = prop::collection::vec(comp.clone(), 1..4).prop_map(|v| v.join("/"));
        let target = prop_oneof![
            Just("/".to_string()),
            Just("..".to_string()),
            Just("../outside".to_string()),
            Just("a".to_string()),
            Just("/tmp".to_string()),
            prop::collection::vec(comp, 1..3).prop_map(|v| v.join("/")),
        ];
        (path, 0u8..4, target)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// The class of the passwd → /etc/shadow defect: whatever links an
        /// image holds (absolute, `..` chains, loops, links to links), a
        /// path resolved in its root stays in its root.
        #[test]
        fn a_path_resolved_in_a_root_never_leaves_it(
            links in proptest::collection::vec(
                ("[a-c]{1,2}", proptest::prop_oneof![
                    proptest::strategy::Just("/etc/shadow".to_string()),
                    proptest::strategy::Just("../../../../etc".to_string()),
                    proptest::strategy::Just("..".to_string()),
                    proptest::strategy::Just("/".to_string()),
                    proptest::strategy::Strategy::boxed("[a-c./]{1,8}"),
                ]),
                1..6,
            ),
            ask in "[a-c./]{1,12}",
        ) {
            let d = tempfile::tempdir().unwrap();
            let root = d.path().join("root");
            fs::create_dir_all(root.join("a/b")).unwrap();
            for (name, target) in &links {
                let _ = std::os::unix::fs::symlink(target, root.join("a").join(name));
            }
            let canonical_root = root.canonicalize().unwrap();
            for rel in [ask.as_str(), "a/a", "a/b/../c", "a/bb/x"] {
                if let Some(p) = resolve_in_root(&root, rel) {
                    // Lexically inside, and no link left to follow out of it.
                    proptest::prop_assert!(p.starts_with(&root), "{} → {}", rel, p.display());
                    if let Ok(c) = p.canonicalize() {
                        proptest::prop_assert!(c.starts_with(&canonical_root), "{} → {}", rel, c.display());
                    }
                }
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        #[test]
        fn unpack_never_writes_outside_the_root(entries in proptest::collection::vec(entry_strategy(), 1..8)) {
            let d = tempfile::tempdir().unwrap();
            let store = BlobStore::open(d.path().join("store")).unwrap();
            let outside = d.path().join("outside");
            fs::create_dir(&outside).unwrap();
            fs::write(outside.join("keep"), "original").unwrap();
            fs::create_dir(d.path().join("root")).unwrap();
            fs::write(d.path().join("root").join("sibling"), "beside the root").unwrap();
            let typed: Vec<(&str, tar::EntryType, &str)> = entries
                .iter()
                .map(|(p, t, l)| {
                    let ty = match t {
                        0 => tar::EntryType::Regular,
                        1 => tar::EntryType::Directory,
                        2 => tar::EntryType::Symlink,
                        _ => tar::EntryType::Link,
                    };
                    let link = if matches!(ty, tar::EntryType::Symlink | tar::EntryType::Link) { l.as_str() } else { "" };
                    (p.as_str(), ty, link)
                })
                .collect();
            let layer = raw_layer(&store, &typed);
            let _ = unpack(&store, &[layer], &d.path().join("root").join("r"), false);
            let names: Vec<_> = fs::read_dir(&outside).unwrap().map(|e| e.unwrap().file_name()).collect();
            proptest::prop_assert_eq!(names, vec![std::ffi::OsString::from("keep")]);
            proptest::prop_assert_eq!(fs::read_to_string(outside.join("keep")).unwrap(), "original");
            let top: Vec<_> = fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
            // One level up from the unpack root, only the root itself (if it was made).
            let beside: Vec<_> = fs::read_dir(d.path().join("root")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
            proptest::prop_assert!(beside.iter().all(|n| n == "r" || n == "sibling"), "stray {:?}", beside);
            proptest::prop_assert_eq!(fs::read_to_string(d.path().join("root/sibling")).unwrap(), "beside the root");
            for t in top {
                proptest::prop_assert!(["store", "outside", "root"].contains(&t.as_str()), "stray {}", t);
            }
        }
    }
}
