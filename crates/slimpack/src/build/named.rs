//! The bytecode stage: every module of each venv package the app's code
//! names, compiled into a layer between the venv and the app.
//!
//! The venv layer holds bytecode only for what the dependencies import when
//! imported themselves (see `python::bytecode`); an app that uses
//! `sqlalchemy.orm`, or names a backend in a string (Django's
//! `INSTALLED_APPS`, SQLAlchemy's URL schemes, `import_module`), would
//! compile those modules at every start. A name here is any word of the
//! app's Python files that is a top-level module of the venv: imports,
//! dotted paths in strings, even a comment: a false match costs bytes,
//! never start-up time. What importing those packages loads from the
//! stdlib and the rest of the venv gets bytecode there too. The layer is
//! keyed by the venv's key and the names,
//! so an edit that names no new package reuses it, and it is left out when
//! there is nothing to add.

use super::venv::VenvRecord;
use crate::builder;
use crate::core::cache::{CacheDir, KeyHasher, RecordKind};
use crate::python::bytecode;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use slimpack_oci::{Layer, LayerBuilder};
use std::collections::BTreeSet;
use std::path::PathBuf;

// v2: with what importing the named packages loads (stdlib and venv).
const NAMED_POLICY: &str = "named-bytecode-v2";

/// The layer, when there was bytecode to add, and what it holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NamedRecord {
    pub layer: Option<Layer>,
    /// The venv's packages the app names.
    pub packages: Vec<String>,
    /// Modules compiled into the layer.
    pub files: usize,
}

/// The venv's top-level modules that are words of the app's Python files.
pub fn names(words: &BTreeSet<String>, modules: &[String]) -> Vec<String> {
    modules
        .iter()
        .filter(|m| words.contains(m.as_str()))
        .cloned()
        .collect()
}

/// The record for `key`, if its layer's blob is still there.
pub fn cached(cache: &crate::core::cache::Cache, key: &str) -> Option<NamedRecord> {
    cache
        .get::<NamedRecord>(RecordKind::NamedBytecodeLayer, key)
        .filter(|r| r.layer.as_ref().is_none_or(|l| cache.has_blob(&l.digest)))
}

pub fn key(venv_key: &str, names: &[String]) -> String {
    let mut h = KeyHasher::new(RecordKind::NamedBytecodeLayer.as_str());
    h.part("policy", NAMED_POLICY).part("venv", venv_key);
    for n in names {
        h.part("name", n);
    }
    h.finish()
}

/// The record for `names` from the cache, or built and cached; the flag
/// says it came from the cache. `root` (the runtime's unpacked root, which
/// may need unpacking) is asked for only to build.
pub fn layer(
    req: &builder::Request,
    root: impl FnOnce() -> Result<PathBuf>,
    venv: &VenvRecord,
    venv_key: &str,
    names: Vec<String>,
    positions: bool,
) -> Result<(NamedRecord, bool)> {
    let key = key(venv_key, &names);
    if let Some(r) = cached(req.cache, &key) {
        return Ok((r, true));
    }
    let root = root()?;
    let sp = req.progress.spinner(format!(
        "Compiling the bytecode of {} (named by the app)",
        names.join(", ")
    ));
    let work = tempfile::tempdir_in(req.cache.dir(CacheDir::Work)?)?;
    // The venv unpacked once per venv layer (by the venv stage, as it
    // wrote the layer), shared with the app's steps, mounted read-only.
    let (unpacked, _) = crate::sandbox::cached_rootfs(
        req.cache,
        &req.cache.blobs,
        std::slice::from_ref(&venv.layer),
        false,
    )?;
    let out = work.path().join("out");
    let tag = req.target.cache_tag();
    let files = bytecode::compile_packages(
        &root,
        &unpacked.join("opt/venv"),
        &out,
        req.target,
        &names,
        |py| {
            let pyc = bytecode::cache_path(py, &tag);
            crate::sandbox::file_in_root(&unpacked, pyc.trim_start_matches('/'))
        },
        positions,
    )?;
    let layer = if files == 0 {
        None
    } else {
        // /opt/venv, and the stdlib wherever the interpreter keeps it.
        let mut b = LayerBuilder::new();
        super::venv::add_mirrored(&mut b, &out)?;
        Some(b.write(&req.cache.blobs, req.mtime)?)
    };
    sp.finish_and_clear();
    let record = NamedRecord {
        layer,
        packages: names,
        files,
    };
    req.cache
        .put(RecordKind::NamedBytecodeLayer, &key, &record)?;
    Ok((record, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_words_of_python_files_that_are_venv_modules() {
        let words: BTreeSet<String> = [
            "from",
            "sqlalchemy",
            "orm",
            "import",
            "Session",
            "fastapi",
            "os",
            "INSTALLED_APPS",
            "rest_framework",
            "django",
            "contrib",
            "yaml_x",
        ]
        .map(String::from)
        .into();
        let modules: Vec<String> = [
            "click",
            "django",
            "fastapi",
            "rest_framework",
            "sqlalchemy",
            "yaml",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            names(&words, &modules),
            ["django", "fastapi", "rest_framework", "sqlalchemy"]
        );
        assert!(names(&words, &[]).is_empty());
    }
}
