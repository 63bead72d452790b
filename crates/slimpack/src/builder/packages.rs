//! What the builder compiled, one package at a time: its installed files
//! (as its `RECORD` lists them) kept as a layer blob under a key of what
//! it was compiled from. A later build whose lock changed elsewhere, on
//! this machine or (through `--cache`) on a fresh runner, installs those
//! files instead of compiling the package again.

use super::Request;
use crate::core::cache::{KeyHasher, RecordKind};
use crate::project::normalize_name;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use slimpack_oci::{Entry, Layer, LayerBuilder};
use std::path::{Component, Path};

/// Bumped when what is kept per package changes.
const POLICY: &str = "built-package-v1";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuiltPackage {
    /// `name==version`.
    pub requirement: String,
    /// Its files, relative to site-packages.
    pub layer: Layer,
    pub files: usize,
}

/// Everything the compiled files of `name` depend on: its pinned
/// requirement (hashes included), the interpreter and platform, the
/// builder's Debian packages as asked for, the time builds are told.
pub fn key(req: &Request, name: &str, build_packages: &[String]) -> Option<String> {
    let requirement = req.lock.requirement(name)?;
    let mut h = KeyHasher::new(RecordKind::BuiltPackage.as_str());
    h.part("policy", POLICY)
        .part("requirement", requirement)
        .part("python", &req.target.minor)
        .part("version", &req.target.version)
        .part("platform", &req.target.platform)
        .part("builder", req.spec.builder(build_packages).key())
        .part("uv", &req.uv.version)
        .part("mtime", req.mtime.to_string());
    Some(h.finish())
}

/// The kept build of `name`, when there is one whose files can be had.
pub fn cached(req: &Request, name: &str, build_packages: &[String]) -> Option<BuiltPackage> {
    let key = key(req, name, build_packages)?;
    req.cache
        .get::<BuiltPackage>(RecordKind::BuiltPackage, &key)
        .filter(|b| req.cache.has_blob(&b.layer.digest))
}

/// Keeps the files of `name`, just compiled into `site`.
pub fn keep(req: &Request, site: &Path, name: &str, build_packages: &[String]) -> Result<()> {
    let Some(key) = key(req, name, build_packages) else {
        return Ok(());
    };
    let (dist_info, version) = dist_info(site, name)?;
    let record = std::fs::read_to_string(dist_info.join("RECORD"))
        .with_context(|| format!("reading {}/RECORD", dist_info.display()))?;
    let mut b = LayerBuilder::new();
    let mut files = 0;
    for line in record.lines() {
        let path = line.split(',').next().unwrap_or("");
        // Only what lies inside site-packages: scripts and data elsewhere
        // are left to a full build.
        let rel = Path::new(path);
        if path.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            continue;
        }
        let from = site.join(rel);
        let meta = match std::fs::symlink_metadata(&from) {
            Ok(m) if m.is_file() => m,
            _ => continue,
        };
        for dir in rel.ancestors().skip(1) {
            if !dir.as_os_str().is_empty() {
                b.add(&dir.to_string_lossy(), Entry::dir(0o755))?;
            }
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = if meta.permissions().mode() & 0o111 != 0 {
            0o755
        } else {
            0o644
        };
        b.add(path, Entry::file(mode, from))?;
        files += 1;
    }
    if files == 0 {
        return Ok(());
    }
    let layer = b.write(&req.cache.blobs, req.mtime)?;
    req.cache.put(
        RecordKind::BuiltPackage,
        &key,
        &BuiltPackage {
            requirement: format!("{name}=={version}"),
            layer,
            files,
        },
    )
}

/// Puts a kept build's files into `site`, unpacked as any layer is (no
/// path leaves the directory).
pub fn restore(req: &Request, site: &Path, built: &BuiltPackage) -> Result<()> {
    req.cache.ensure_blob(&built.layer.digest)?;
    let stage = tempfile::tempdir()?;
    let dest = stage.path().join("u");
    crate::sandbox::unpack(
        &req.cache.blobs,
        std::slice::from_ref(&built.layer),
        &dest,
        false,
    )
    .with_context(|| format!("unpacking the kept build of {}", built.requirement))?;
    for e in walkdir::WalkDir::new(&dest).sort_by_file_name() {
        let e = e?;
        let rel = e.path().strip_prefix(&dest)?;
        let to = site.join(rel);
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&to)?;
        } else if e.file_type().is_file() {
            std::fs::copy(e.path(), &to)?;
        }
    }
    Ok(())
}

/// `name`'s `.dist-info` directory in `site`, and its version.
fn dist_info(site: &Path, name: &str) -> Result<(std::path::PathBuf, String)> {
    let want = normalize_name(name);
    for e in std::fs::read_dir(site)?.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let Some(stem) = file.strip_suffix(".dist-info") else {
            continue;
        };
        if let Some((n, v)) = stem.rsplit_once('-') {
            if normalize_name(n) == want {
                return Ok((e.path(), v.to_string()));
            }
        }
    }
    bail!("{name} has no .dist-info in {}", site.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dist_info_is_found_by_its_normalized_name() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("psycopg2_binary-2.9.10.dist-info")).unwrap();
        std::fs::create_dir_all(d.path().join("psycopg2-2.9.9.dist-info")).unwrap();
        let (p, v) = dist_info(d.path(), "psycopg2-binary").unwrap();
        assert!(p.ends_with("psycopg2_binary-2.9.10.dist-info"));
        assert_eq!(v, "2.9.10");
        assert_eq!(dist_info(d.path(), "psycopg2").unwrap().1, "2.9.9");
        assert!(dist_info(d.path(), "lxml").is_err());
    }
}
